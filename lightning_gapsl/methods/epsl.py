"""EPSL (Lin et al., "Efficient Parallel Split Learning over Resource-constrained
Wireless Edge Networks", IEEE TMC 2024, arXiv 2303.15991; the same group as GAPSL).

EPSL is PSL in which the server aggregates the last-layer gradients of a fraction phi
of the samples before back-propagating, so it back-propagates fewer rows and sends the
aggregated part down once (a broadcast) instead of once per client; phi = 0 is PSL.

Reconstructed here (the paper's body was not available to us; see the README's fidelity
table): in every client's batch the first m = ceil(phi * B) positions are aggregated
(batches are random permutations, so that is a random subset); each aggregated
position j gets the mean over clients of the position-j cut-layer gradients, sent once
as a broadcast; the other B - m positions are scattered per client as in PSL. For a
linear server head this equals back-propagating the client-mean of the last-layer
gradients; the cost model charges the server the backward of N (B - m) + m rows, as
EPSL does, although this implementation computes the full backward before averaging.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lightning_gapsl.config import OptimConfig, check
from lightning_gapsl.latency import TRAIN_FLOPS_PER_FORWARD
from lightning_gapsl.methods.base import (
    Method,
    StepCost,
    cut_shape,
    parallel_cost,
    split_state,
)
from lightning_gapsl.methods.configs import SplitConfig
from lightning_gapsl.methods.exchange import Hooks, scatter_down, split_exchange
from lightning_gapsl.privacy.exposure import PSL_FAMILY

BACKWARD_FLOPS_PER_FORWARD = TRAIN_FLOPS_PER_FORWARD - 1.0  # input and weight gradients


@dataclass(frozen=True)
class EpslConfig(SplitConfig):
    name: str = "epsl"
    """The method's registry name (``algorithm=``)."""
    phi: float = 1.0
    """Fraction of each batch's positions whose gradients are aggregated over clients
    and broadcast once (0: PSL exactly; 1: every position aggregated)."""

    def validate(self, run) -> None:
        super().validate(run)
        check(0 <= self.phi <= 1, f"algorithm.phi={self.phi} must be in [0, 1]")


def aggregated_positions(phi: float, batch_size: int) -> int:
    """m = ceil(phi * B), rounded to 9 decimals first so float noise adds no position."""
    return math.ceil(round(phi * batch_size, 9))


def aggregate_positions(
    cut_grads: torch.Tensor, m: int, active: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, B, *F) -> the client-mean of positions [0, m) (m, *F) and the rest (N, B-m, *F).

    ``active`` (N,) bool (partial participation): the mean over those clients only; an
    idle client's rows are zeros, not gradients, and must not dilute it."""
    head = cut_grads[:, :m]  # (N, m, *F)
    if active is None:
        return head.mean(dim=0), cut_grads[:, m:]
    taking_part = active.to(device=head.device, dtype=torch.bool)
    return head[taking_part].mean(dim=0), cut_grads[:, m:]


def _downlink(state, transport, step, cut_grads):
    """The aggregated positions as one broadcast, the others per client."""
    m = aggregated_positions(state.cfg.algorithm.phi, state.data.batch_size)
    shared, own = (
        aggregate_positions(cut_grads, m, state.active) if cut_grads is not None else (None, None)
    )
    if shared is None:  # a client rank: the buffer the server's copy overwrites
        shape = (m, *state.own.cut_shape)
        shared = torch.zeros(shape, device=transport.device)
    # float32 on every rank: under bf16-mixed the server's gradients may be bfloat16 while
    # the clients' buffer is float32, and a broadcast of unequal dtypes hangs NCCL.
    shared = shared.float()
    transport.broadcast_(shared, count=True)
    mine = transport.scatter(
        step, "cut_grads", [own] if state.layout.is_server else None, active=state.active
    )
    if state.clients is None:
        return []
    k = len(state.layout.hosted)
    return [torch.cat([shared.unsqueeze(0).expand(k, *shared.shape), mine[0]], dim=1)]


@dataclass
class EpslState:
    cut_shape: tuple[int, ...]  # per-sample shape of the cut activations (the broadcast)


def build(cfg, data, layout):
    state = split_state(cfg, data, layout)
    state.own = EpslState(cut_shape(cfg, data))
    return state


def train_step(state, transport, step, x, y):
    m = aggregated_positions(state.cfg.algorithm.phi, state.data.batch_size)
    hooks = Hooks(downlink=_downlink if m > 0 else scatter_down)
    return split_exchange(state, transport, step, x, y, hooks)


def cost(state, client_flops: float, server_flops: float) -> StepCost:
    """The server's forward on N * B rows, its backward on N (B - m) + m rows."""
    n, b = state.data.num_clients, state.data.batch_size
    m = aggregated_positions(state.cfg.algorithm.phi, b)
    if m == 0:
        return parallel_cost(state, client_flops, server_flops)
    rows_back = n * (b - m) + m
    server = server_flops * (n * b + BACKWARD_FLOPS_PER_FORWARD * rows_back)
    return StepCost(TRAIN_FLOPS_PER_FORWARD * client_flops * b, server)


# What reaches the server (docs/explanations/privacy.md, exposure flags).
EXPOSURE = {**PSL_FAMILY, "cut_gradient": "own, a fraction phi aggregated over clients"}
# The optimizer this method runs with unless optim=sgd|adam or optim.* is given:
# chosen by the tuning grid on validation, point adam1e-3_phi1 of
# experiments/results/tune_mnist20_dir01/chosen.yaml.
TUNED_OPTIM = OptimConfig("adam", lr=0.001, momentum=0.0, weight_decay=0.0)

METHOD = Method(
    "epsl",
    EpslConfig,
    build,
    train_step,
    cost=cost,
    participation="step",
    optim=TUNED_OPTIM,
    exposure=EXPOSURE,
)
