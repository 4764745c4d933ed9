"""Steps of the methods whose clients learn from a local auxiliary model, not from the
server's gradient: CSE-FSL and FSL-SAGE. Same shape as `split_step`: every rank runs
the roles it has, the transport carries what crosses between them.

- CSE-FSL: each client trains its segment and a small auxiliary head on its own loss,
  CE(head(z), y); every q steps its activations go to the server, which steps on them.
  Nothing comes down.
- FSL-SAGE: each client's auxiliary model estimates the server's cut-layer gradient,
  d CE(aux(z), y) / dz, and the client back-propagates that estimate; every q steps the
  activations go up, the server steps on them and keeps the last `buffer_size` samples
  per client; every l rounds it fits each client's auxiliary model so its
  input-gradient matches the current server's true cut-layer gradients on that buffer
  (MSE), and sends the fitted model down.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils import parameters_to_vector

from lightning_gapsl.algorithms.fsl_sage import (
    ActivationBuffer,
    align_aux_,
    server_cut_grads,
    server_step_due,
)
from lightning_gapsl.algorithms.psl import weighted_client_loss
from lightning_gapsl.config import AlgorithmConfig
from lightning_gapsl.models.stacked import StackedSegments
from lightning_gapsl.seeding import generator
from lightning_gapsl.split_step import Parties, StepOutput


@dataclass
class AuxState:
    """Auxiliary models: the hosted clients' (stacked) and, for FSL-SAGE, the server's."""

    client_aux: StackedSegments | None  # (K, ...) hosted clients' heads / estimators
    server_aux: list[nn.Module] = field(default_factory=list)  # FSL-SAGE: one per client
    buffers: list[ActivationBuffer] = field(default_factory=list)  # FSL-SAGE: per client


def aux_train_step(parties: Parties, aux: AuxState, transport, algo: AlgorithmConfig,
                   step: int, x: torch.Tensor, y: torch.Tensor) -> StepOutput:
    """One CSE-FSL / FSL-SAGE step. x (K, B, C, H, W), y (K, B) for the hosted clients."""
    acts, local_losses = None, None
    if parties.clients is not None:
        acts = parties.clients(x)  # (K, B, *F)
        parties.client_opt.zero_grad(set_to_none=True)
        if algo.name == "cse_fsl":
            local_losses = _client_losses(aux.client_aux(acts), y)  # (K,)
            local_losses.sum().backward()  # segment + head, each client its own loss
        else:
            # FSL-SAGE: the estimator's input-gradient of each client's own mean loss
            # stands in for the server's cut-layer gradient.
            leaf = acts.detach().requires_grad_(True)  # (K, B, *F)
            local_losses = _client_losses(aux.client_aux(leaf), y)
            (estimate,) = torch.autograd.grad(local_losses.sum(), leaf)  # (K, B, *F)
            acts.backward(estimate)
        parties.client_opt.step()
        local_losses = local_losses.detach()

    if server_step_due(step, algo.server_interval):
        sent = [acts.detach(), y] if acts is not None else []
        received = transport.gather(step, "activations", sent)
        if parties.layout.is_server:
            _server_update(parties, aux, algo, *received)

    # Telemetry, not communication: per-client local losses for the logged train loss.
    rows = [local_losses.view(-1, 1)] if local_losses is not None else []
    got = transport.gather(step, "losses", rows, count=False)
    if not parties.layout.is_server:
        return StepOutput(None, None)
    losses = got[0].view(-1)  # (N,)
    return StepOutput(float((losses * parties.loss_weights).sum()), losses)


def _client_losses(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-client mean cross-entropy: logits (K, B, C), y (K, B) -> (K,)."""
    return nn.functional.cross_entropy(
        logits.flatten(0, 1), y.flatten(), reduction="none").view(y.shape).mean(1)


def _server_update(parties: Parties, aux: AuxState, algo: AlgorithmConfig,
                   acts: torch.Tensor, labels: torch.Tensor) -> None:
    """Server steps on the activations it received (N, B, *F); FSL-SAGE buffers them."""
    n, b = labels.shape
    logits = parties.server(acts.flatten(0, 1)).unflatten(0, (n, b))
    loss, _ = weighted_client_loss(logits, labels, parties.loss_weights)
    parties.server_opt.zero_grad(set_to_none=True)
    loss.backward()
    parties.server_opt.step()
    for c, buffer in enumerate(aux.buffers):
        buffer.add(acts[c], labels[c])


def align_auxiliaries(parties: Parties, aux: AuxState, transport, algo: AlgorithmConfig,
                      step: int) -> None:
    """FSL-SAGE: fit every client's estimator to the server's true gradients; send it down."""
    rows = None
    if parties.layout.is_server:
        for c, (model, buffer) in enumerate(zip(aux.server_aux, aux.buffers)):
            if len(buffer):
                acts, labels = buffer.tensors()
                true = server_cut_grads(parties.server, acts, labels)  # (M, *F)
                align_aux_(model, acts, labels, true, epochs=algo.align_epochs,
                           lr=algo.align_lr, batch_size=128,
                           generator=generator(parties.seed, "fsl_sage", "align", step, c))
        rows = [torch.stack([parameters_to_vector(m.parameters()).detach()
                             for m in aux.server_aux])]  # (N, P_aux)
    mine = transport.scatter(step, "aux_models", rows)
    if aux.client_aux is not None:
        with torch.no_grad():
            for k in range(aux.client_aux.num_segments):
                flat = mine[0][k]
                offset = 0
                for param in aux.client_aux.stacked_params().values():
                    size = param[k].numel()
                    param[k].copy_(flat[offset : offset + size].view_as(param[k]))
                    offset += size
