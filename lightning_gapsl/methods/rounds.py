"""FedAvg rounds of the averaging methods (SplitFed, FedAvg, LocFedMix, CSE-FSL, FSL-SAGE).

Each rank sums its hosted clients' parameters weighted by data size, one all-reduce
adds the sums of all ranks (the server rank adds zeros when it hosts no client), and
every hosted client gets the average: `lightning_gapsl.methods.shared.fedavg.fedavg_`, the
one FedAvg of the project. Communication is counted by the transport as the method
would spend it between real devices: every client uploads its segment and downloads
the average (N x P float32 parameters each way). Under partial participation only the
clients that delivered this round are averaged (size-weighted) and counted (k x P each
way); every client then holds the average, as if it downloaded the global model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lightning_gapsl.methods.base import RankState, fedavg_weights, model_args
from lightning_gapsl.methods.shared.fedavg import fedavg_
from lightning_gapsl.models.split import build_client_segment
from lightning_gapsl.models.stacked import StackedSegments
from lightning_gapsl.transport import Transport


@dataclass
class Averaged:
    """The state of a method that averages its client segments every round."""

    client_shapes: dict[str, torch.Size]  # per-client parameter shapes (`shapes_of`)


def shapes_of(module: nn.Module) -> dict[str, torch.Size]:
    """Per-client parameter shapes in a fixed order, the same on every rank."""
    return {n: p.shape for n, p in module.named_parameters()}


def segment_shapes(cfg, data) -> dict[str, torch.Size]:
    """Per-client parameter shapes of a client segment (built once, on every rank)."""
    return shapes_of(build_client_segment(*model_args(cfg, data), cfg.seed, 0))


def fedavg_clients_(
    state: RankState,
    stacked: StackedSegments | None,
    shapes: dict[str, torch.Size],
    transport: Transport,
) -> None:
    """Set every hosted client's copy of ``stacked`` to the size-weighted average over the
    clients that delivered this round (all of them without partial participation; a round
    nobody delivered in leaves every copy as it is). ``shapes``: per-client parameter
    shapes (`shapes_of` a template)."""
    weights = fedavg_weights(state)  # (N,), zero for clients that did not deliver
    senders = int((weights > 0).sum()) if state.participants is not None else None
    if senders == 0:
        return
    hosted = weights[state.layout.hosted] if stacked is not None else None  # (K,)
    fedavg_stacked_(stacked, hosted, shapes, transport, senders)


def fedavg_stacked_(
    stacked: StackedSegments | None,
    weights: torch.Tensor | None,
    shapes: dict[str, torch.Size],
    transport: Transport,
    senders: int | None = None,
) -> None:
    """`fedavg_clients_` with the hosted clients' weights (K,) given (data sizes);
    ``senders``: clients counted as uploading and downloading (None: all N)."""
    per_client_bytes = 4 * sum(s.numel() for s in shapes.values())  # float32 parameters

    def all_reduce(flat: torch.Tensor) -> None:
        transport.all_reduce_sum_(flat, per_client_bytes=per_client_bytes, clients=senders)

    params = stacked.stacked_params() if stacked is not None else None
    fedavg_(params, weights, shapes, reduce_=all_reduce, device=transport.device)


def average_copies(stacked: StackedSegments, weights: torch.Tensor, assign: bool) -> torch.Tensor:
    """The size-weighted average of copies held on one rank (SplitFed V1's server copies),
    accumulated in float64 like the clients' average; with ``assign`` every copy becomes
    it. Returns it flat (D,), in the copies' dtype."""
    params = stacked.stacked_params()
    first = next(iter(params.values()))
    return fedavg_(params, weights, {n: p.shape[1:] for n, p in params.items()}, assign=assign).to(
        first.dtype
    )


def fedavg_after_round(state: RankState, transport: Transport, step: int) -> None:
    """``after_step`` of the methods that average their client segments every round."""
    if state.schedule.round_end:
        fedavg_clients_(state, state.clients, state.own.client_shapes, transport)


def every_round_global(state: RankState, epoch: int) -> bool:
    """``global_model`` of methods averaging every round: true when rounds tile the epoch."""
    return state.data.steps_per_epoch % state.round_steps == 0
