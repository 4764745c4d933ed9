"""GAPSL: PSL + leader gradient identification (LGI) + gradient direction alignment (GDA),
as reconstructed in docs/explanations/gapsl.md (the math: `lightning_gapsl.methods.gapsl.math`).

Reading ``cut``: the server aligns batch-mean cut-layer gradients (no extra traffic).
Reading ``client``: client-segment gradients go up after the backward, aligned ones come
back before the step; routed through the server rather than an all-gather among
clients: 2*N*D floats per step instead of N*(N-1)*D, and the EMA lives in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lightning_gapsl.config import OptimConfig, check, choice
from lightning_gapsl.methods.base import Method, split_state
from lightning_gapsl.methods.configs import SplitConfig
from lightning_gapsl.methods.exchange import Hooks, split_exchange
from lightning_gapsl.methods.gapsl.math import (
    ALIGN_MODES,
    GapslConfig,
    batch_mean_flat,
    cut_layer_shift,
    gapsl_step,
)
from lightning_gapsl.privacy.exposure import PSL_FAMILY

READINGS = ("cut", "client")


@dataclass(frozen=True)
class GapslMethodConfig(SplitConfig):
    name: str = "gapsl"
    """The method's registry name (``algorithm=``)."""
    reading: str = "client"
    """Gradient reading: cut (server side) | client (segment parameter gradients)."""
    rho: float = 0.5
    """Leader fraction: ceil(rho * N) leaders."""
    tau: float | None = None
    """Consistency threshold; replaces rho when set."""
    normalize_leader: bool = False
    """Average unit-normalised leader gradients."""
    beta: float = 0.9
    """EMA factor of the leader gradient."""
    lam: float = 1.0
    """Alignment coefficient lambda (0 = psl; 1.0 measured best, see README)."""
    align_mode: str = "linear"
    """Alignment form: norm | norm_exact | linear | pcgrad."""

    def lgi_gda(self) -> GapslConfig:
        """The hyper-parameters the pure GAPSL step takes."""
        return GapslConfig(
            rho=self.rho,
            tau=self.tau,
            normalize_leader=self.normalize_leader,
            beta=self.beta,
            lam=self.lam,
            mode=self.align_mode,
        )

    def validate(self, run) -> None:
        super().validate(run)
        choice("algorithm.reading", self.reading, READINGS)
        choice("algorithm.align_mode", self.align_mode, ALIGN_MODES)
        check(0 < self.rho <= 1, f"algorithm.rho={self.rho} must be in (0, 1]")
        check(
            self.tau is None or -1 <= self.tau <= 1,
            f"algorithm.tau={self.tau} must be in [-1, 1] or null",
        )
        check(0 <= self.beta < 1, f"algorithm.beta={self.beta} must be in [0, 1)")
        check(0 <= self.lam <= 1, f"algorithm.lam={self.lam} must be in [0, 1]")


def _align(state, g: torch.Tensor) -> torch.Tensor:
    """GAPSL on per-client gradient rows g (N, D): returns the aligned rows (N, D).

    Under partial participation LGI and GDA see only this step's participants (k rows:
    ceil(rho k) leaders); the other rows (zero gradients) come back unchanged."""
    active = state.active
    if active is not None:
        aligned = g.clone()
        aligned[active], diag = _align_rows(state, g[active])  # (k, D)
        mask = torch.zeros(g.shape[0], dtype=torch.bool, device=g.device)
        mask[active] = diag["leader_mask"].to(torch.bool)
        diag = {**diag, "leader_mask": mask}
    else:
        aligned, diag = _align_rows(state, g)
    _record(state, diag)
    return aligned


def _align_rows(state, g: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """`gapsl_step` on rows g (k, D), advancing the leader EMA."""
    aligned, state.own.leader_ema, diag = gapsl_step(
        g, state.own.leader_ema, state.cfg.algorithm.lgi_gda()
    )
    return aligned, diag


def _record(state, diag: dict) -> None:
    state.step_diagnostics = {
        "gapsl/leaders": float(diag["leader_count"]),
        "gapsl/cos_before": float(diag["cos_before_mean"]),
        "gapsl/cos_after": float(diag["cos_after_mean"]),
        # (N,) per step; the record keeps its mean: each client's share of steps as a leader
        "gapsl/leader_freq": diag["leader_mask"].detach().float().cpu(),
    }


def _align_cut(state, cut_grads: torch.Tensor, step: int) -> torch.Tensor:
    g = batch_mean_flat(cut_grads)  # (N, D)
    return cut_layer_shift(cut_grads, g, _align(state, g))


def _align_client(state, transport, step: int) -> None:
    """Segment gradients (K, D) go up; aligned ones come back into ``.grad``."""
    has_clients = state.clients is not None
    rows = [state.clients.flat_grads()] if has_clients else []  # (K, D)
    received = transport.gather(step, "client_grads", rows)
    aligned = [_align(state, received[0])] if state.layout.is_server else None
    mine = transport.scatter(step, "aligned_grads", aligned)
    if has_clients:
        state.clients.set_flat_grads(mine[0])


@dataclass
class GapslState:
    # (D,) EMA of the leaders' gradient direction (leader identification), kept on the
    # server; None before the first step.
    leader_ema: torch.Tensor | None = None


def build(cfg, data, layout):
    state = split_state(cfg, data, layout)
    state.own = GapslState()
    return state


def train_step(state, transport, step, x, y):
    if state.cfg.algorithm.reading == "cut":
        hooks = Hooks(transform=_align_cut)
    else:
        hooks = Hooks(after_backward=_align_client)
    return split_exchange(state, transport, step, x, y, hooks)


def state_dict(state) -> dict:
    return {"leader_ema": state.own.leader_ema}


def load_state_dict(state, saved: dict) -> None:
    state.own.leader_ema = saved["leader_ema"]


# What reaches the server (docs/explanations/privacy.md, exposure flags).
EXPOSURE = {**PSL_FAMILY, "cut_gradient": "aligned to the leaders' direction"}
# The optimizer this method runs with unless optim=sgd|adam or optim.* is given:
# chosen by the tuning grid on validation, point sgd0.05_client_linear_lam1 of
# experiments/results/tune_mnist20_dir01/chosen.yaml.
TUNED_OPTIM = OptimConfig("sgd", lr=0.05, momentum=0.9, weight_decay=0.0)

METHOD = Method(
    "gapsl",
    GapslMethodConfig,
    build,
    train_step,
    state_dict=state_dict,
    load_state_dict=load_state_dict,
    participation="step",
    optim=TUNED_OPTIM,
    exposure=EXPOSURE,
)
