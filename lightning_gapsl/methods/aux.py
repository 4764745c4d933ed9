"""The step of the methods whose clients learn from a local auxiliary model instead of
the server's gradient (CSE-FSL, FSL-SAGE): the client update is the method's hook;
every q steps the activations go up and the server steps on them. Nothing comes down
in a step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from lightning_gapsl.algorithms.fsl_sage import server_step_due
from lightning_gapsl.algorithms.psl import weighted_client_loss
from lightning_gapsl.methods.base import RankState, StepOutput, report_client_losses
from lightning_gapsl.transport import Transport

# (state, acts (K, B, *F), y (K, B)) -> per-client local losses (K,), after the backward.
LocalBackward = Callable[[RankState, torch.Tensor, torch.Tensor], torch.Tensor]
# (state, acts (N, B, *F), labels (N, B)) -> after the server's step (FSL-SAGE buffers).
AfterServerStep = Callable[[RankState, torch.Tensor, torch.Tensor], None]


def aux_exchange(state: RankState, transport: Transport, step: int, x: torch.Tensor,
                 y: torch.Tensor, local_backward: LocalBackward,
                 after_server_step: AfterServerStep | None = None) -> StepOutput:
    """One step. x (K, B, C, H, W), y (K, B) for the hosted clients."""
    acts, local_losses = None, None
    if state.clients is not None:
        acts = state.clients(x)  # (K, B, *F)
        state.client_opt.zero_grad(set_to_none=True)
        local_losses = local_backward(state, acts, y)  # (K,)
        state.client_opt.step()
        local_losses = local_losses.detach()

    if server_step_due(step, state.cfg.algorithm.server_interval):
        sent = [acts.detach(), y] if acts is not None else []
        received = transport.gather(step, "activations", sent)
        if state.layout.is_server:
            _server_update(state, *received)
            if after_server_step is not None:
                after_server_step(state, *received)
    return report_client_losses(state, transport, step, local_losses)


def _server_update(state: RankState, acts: torch.Tensor, labels: torch.Tensor) -> None:
    """The server steps on the activations it received (N, B, *F)."""
    n, b = labels.shape
    logits = state.server(acts.flatten(0, 1)).unflatten(0, (n, b))
    loss, _ = weighted_client_loss(logits, labels, state.loss_weights)
    state.server_opt.zero_grad(set_to_none=True)
    loss.backward()
    state.server_opt.step()
