"""CSE-FSL (Mu and Shen): each client trains its segment and a small auxiliary head on
its own loss, CE(head(z), y); every q steps its activations go to the server, which
steps on them; nothing comes down. Segments and heads are averaged every round."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lightning_gapsl.config import OptimConfig
from lightning_gapsl.methods.auxiliary import AuxConfig, aux_exchange
from lightning_gapsl.methods.base import (
    Method,
    client_module,
    cut_shape,
    seeded,
    split_state,
)
from lightning_gapsl.methods.configs import check_round_steps, local_pass_epoch
from lightning_gapsl.methods.exchange import Hooks
from lightning_gapsl.methods.fsl_sage.math import aux_model_for
from lightning_gapsl.methods.rounds import (
    every_round_global,
    fedavg_clients_,
    segment_shapes,
    shapes_of,
)
from lightning_gapsl.methods.shared.losses import per_client_cross_entropy
from lightning_gapsl.models.stacked import StackedSegments
from lightning_gapsl.privacy.exposure import AUXILIARY


@dataclass(frozen=True)
class CseFslConfig(AuxConfig):
    name: str = "cse_fsl"
    """The method's registry name (``algorithm=``)."""


@dataclass
class CseFslState:
    """CSE-FSL's own state: the clients' auxiliary heads, averaged like the segments."""

    client_shapes: dict[str, torch.Size]  # per-client segment parameter shapes
    head_shapes: dict[str, torch.Size]  # per-client head parameter shapes
    heads: StackedSegments | None = client_module()  # hosted clients' heads (K, ...)


def build(cfg, data, layout):
    state = split_state(cfg, data, layout)
    act, classes = cut_shape(cfg, data), data.dataset.num_classes
    heads = None
    if layout.hosted:  # the heads are averaged: one shared initialisation
        heads = StackedSegments(
            [seeded(lambda: aux_model_for(act, classes), cfg.seed, "aux", 0) for _ in layout.hosted]
        )
    head_shapes = shapes_of(seeded(lambda: aux_model_for(act, classes), cfg.seed, "aux", 0))
    state.own = CseFslState(segment_shapes(cfg, data), head_shapes, heads)
    return state


def _local_backward(state, acts, y):
    losses = per_client_cross_entropy(state.own.heads(acts), y)  # (K,)
    losses.sum().backward()  # segment + head, each client its own loss
    return losses


def train_step(state, transport, step, x, y):
    return aux_exchange(state, transport, step, x, y, Hooks(local_backward=_local_backward))


def after_step(state, transport, step) -> None:
    if state.schedule.round_end:
        fedavg_clients_(state, state.clients, state.own.client_shapes, transport)
        fedavg_clients_(state, state.own.heads, state.own.head_shapes, transport)


# What reaches the server (docs/explanations/privacy.md, exposure flags).
EXPOSURE = AUXILIARY
# The optimizer this method runs with unless optim=sgd|adam or optim.* is given:
# chosen by the tuning grid on validation, point adam1e-3_q1 of
# experiments/results/tune_mnist20_dir01/chosen.yaml.
# The best point of the reference regime; the grid chose adam1e-3_q1_every_step,
# which changes the regime (README, tuned comparison).
TUNED_OPTIM = OptimConfig("adam", lr=0.001, momentum=0.0, weight_decay=0.0)

METHOD = Method(
    "cse_fsl",
    CseFslConfig,
    build,
    train_step,
    after_step=after_step,
    global_model=every_round_global,
    epoch_steps=local_pass_epoch,
    participation="round",
    optim=TUNED_OPTIM,
    exposure=EXPOSURE,
    check_data=check_round_steps,
)
