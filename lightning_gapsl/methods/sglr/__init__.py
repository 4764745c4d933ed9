"""SGLR: PSL with SplitLr (server rate = client rate x N^a) and SplitAvg (a fraction of
clients receive cut-layer gradients averaged slot by slot over those clients).
The math: `lightning_gapsl.methods.sglr.math`.
"""

from __future__ import annotations

from dataclasses import dataclass

from lightning_gapsl.config import OptimConfig, check, choice
from lightning_gapsl.data.participation import participant_count
from lightning_gapsl.methods.base import Method, split_state
from lightning_gapsl.methods.configs import SplitConfig
from lightning_gapsl.methods.exchange import Hooks, split_exchange
from lightning_gapsl.methods.sglr.math import (
    averaged_clients,
    averaged_participants,
    averaging_active,
    server_loss_weights,
    server_lr,
    split_avg,
)
from lightning_gapsl.privacy.exposure import PSL_FAMILY


@dataclass(frozen=True)
class SglrConfig(SplitConfig):
    name: str = "sglr"
    """The method's registry name (``algorithm=``)."""
    lr_exponent: float = 0.5
    """SplitLr: server learning rate = client rate * N ** lr_exponent, in [0, 2]."""
    avg_fraction: float = 0.5
    """SplitAvg: fraction of clients that receive slot-wise averaged cut gradients."""
    avg_phase: float | None = None
    """Average only during an avg_phase share of training (null: always)."""
    avg_phase_where: str = "last"
    """Where that share lies: last (the paper: the final X% of training) | first."""
    server_loss: str = "mean"
    """mean: plain mean over every sample the server received (the paper); weighted:
    size-weighted sum of per-client mean losses (PSL's convention)."""

    def validate(self, run) -> None:
        super().validate(run)
        check(
            0 <= self.lr_exponent <= 2,
            f"algorithm.lr_exponent={self.lr_exponent} must be in [0, 2]",
        )
        check(
            0 <= self.avg_fraction <= 1,
            f"algorithm.avg_fraction={self.avg_fraction} must be in [0, 1]",
        )
        check(
            self.avg_phase is None or 0 <= self.avg_phase <= 1,
            f"algorithm.avg_phase={self.avg_phase} must be in [0, 1] or null",
        )
        choice("algorithm.avg_phase_where", self.avg_phase_where, ("first", "last"))
        choice("algorithm.server_loss", self.server_loss, ("mean", "weighted"))


def _split_avg(state, cut_grads, step):
    algo = state.cfg.algorithm
    if not averaging_active(step, state.total_steps, algo.avg_phase, algo.avg_phase_where):
        return cut_grads
    if state.active is None:
        mask = averaged_clients(state.layout.num_clients, algo.avg_fraction, state.seed, step)
    else:  # partial participation: averaged among this step's participants only
        mask = averaged_participants(state.active, algo.avg_fraction, state.seed, step)
    return split_avg(cut_grads, mask.to(cut_grads.device))


def build(cfg, data, layout):
    return split_state(cfg, data, layout)


def train_step(state, transport, step, x, y):
    return split_exchange(state, transport, step, x, y, Hooks(transform=_split_avg))


def _server_lr(cfg, data) -> float:
    """SplitLr scales by the clients whose batches the server sees in a step: all N, or
    under partial participation the drawn count (before dropouts and deadlines)."""
    p = cfg.participation
    clients = (
        participant_count(data.num_clients, p.fraction, p.clients)
        if p.partial
        else data.num_clients
    )
    return server_lr(cfg.optim.lr, clients, cfg.algorithm.lr_exponent)


def _loss_weights(cfg, data):
    return server_loss_weights(data.client_sizes, cfg.algorithm.server_loss)


# What reaches the server (docs/explanations/privacy.md, exposure flags).
EXPOSURE = {**PSL_FAMILY, "cut_gradient": "averaged over a fraction phi of clients"}
# The optimizer this method runs with unless optim=sgd|adam or optim.* is given:
# chosen by the tuning grid on validation, point adam1e-4_a0.5 of
# experiments/results/tune_mnist20_dir01/chosen.yaml.
TUNED_OPTIM = OptimConfig("adam", lr=0.0001, momentum=0.0, weight_decay=0.0)

METHOD = Method(
    "sglr",
    SglrConfig,
    build,
    train_step,
    server_lr=_server_lr,
    loss_weights=_loss_weights,
    participation="step",
    optim=TUNED_OPTIM,
    exposure=EXPOSURE,
)
