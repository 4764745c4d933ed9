"""The step of the methods whose clients learn from a local auxiliary model instead of
the server's gradient (CSE-FSL, FSL-SAGE): the client update is the method's hook;
every q steps the activations go up and the server steps on them. Nothing comes down
in a step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lightning_gapsl.config import check, choice
from lightning_gapsl.methods.base import (
    RankState,
    StepOutput,
    client_step,
    report_client_losses,
    step_weights,
)
from lightning_gapsl.methods.configs import RoundConfig
from lightning_gapsl.methods.exchange import Hooks, smashed
from lightning_gapsl.methods.shared.intervals import server_step_due
from lightning_gapsl.methods.shared.losses import weighted_client_loss
from lightning_gapsl.transport import Transport

SERVER_STEPS = ("per_client", "averaged")


@dataclass(frozen=True)
class AuxConfig(RoundConfig):
    name: str = "cse_fsl"
    """The method's registry name (``algorithm=``)."""
    server_interval: int = 1
    """Activations go to the server every q steps (step 0 included)."""
    server_steps: str = "per_client"
    """per_client: one server step per uploaded client batch, clients in id order (the
    references); averaged: one step on the size-weighted loss of all uploads."""

    def validate(self, run) -> None:
        super().validate(run)
        check(
            self.server_interval >= 1,
            f"algorithm.server_interval={self.server_interval} must be >= 1",
        )
        choice("algorithm.server_steps", self.server_steps, SERVER_STEPS)


def aux_exchange(
    state: RankState,
    transport: Transport,
    step: int,
    x: torch.Tensor,
    y: torch.Tensor,
    hooks: Hooks,
) -> StepOutput:
    """One step. x (K, B, C, H, W), y (K, B) for the hosted clients; ``hooks``: the
    method's ``local_backward`` (required), ``after_server_step``,
    ``before_client_update``.

    Client forward, then the upload and the server's steps, then the clients' update.
    The client update does not depend on the server's, so this order gives the same
    numbers as updating first; it lets FSL-SAGE align after the upload and before the
    client update, as its reference does.
    """
    acts, local_losses = None, None
    if state.clients is not None:
        acts = state.clients(x)  # (K, B, *F)
    if server_step_due(step, state.cfg.algorithm.server_interval):
        sent = (
            [smashed(state, acts.detach(), state.layout.hosted, step), y]
            if acts is not None
            else []
        )
        received = transport.gather(step, "activations", sent, active=state.active)
        if state.layout.is_server:
            _server_update(state, *received)
            if hooks.after_server_step is not None:
                hooks.after_server_step(state, *received)
    if hooks.before_client_update is not None:
        hooks.before_client_update(state, transport, step)
    if state.clients is not None:
        state.client_opt.zero_grad(set_to_none=True)
        local_losses = hooks.local_backward(state, acts, y)  # (K,)
        client_step(state)
        local_losses = local_losses.detach()
    return report_client_losses(state, transport, step, local_losses)


def _server_update(state: RankState, acts: torch.Tensor, labels: torch.Tensor) -> None:
    """The server steps on the activations it received (N, B, *F)."""
    n, b = labels.shape
    if state.cfg.algorithm.server_steps == "per_client":
        for c in range(n):  # one step per uploaded client batch, in client-id order
            if state.active is not None and not bool(state.active[c]):
                continue
            loss = torch.nn.functional.cross_entropy(state.server(acts[c]), labels[c])
            state.server_opt.zero_grad(set_to_none=True)
            loss.backward()
            state.server_opt.step()
        return
    logits = state.server(acts.flatten(0, 1)).unflatten(0, (n, b))
    loss, _ = weighted_client_loss(logits, labels, step_weights(state))
    state.server_opt.zero_grad(set_to_none=True)
    loss.backward()
    state.server_opt.step()
