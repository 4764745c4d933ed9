"""CSE-FSL (Mu and Shen): each client trains its segment and a small auxiliary head on
its own loss, CE(head(z), y); every q steps its activations go to the server, which
steps on them; nothing comes down. Segments and heads are averaged every round."""

from __future__ import annotations

from dataclasses import dataclass

from lightning_gapsl.algorithms.fsl_sage import aux_model_for
from lightning_gapsl.algorithms.psl import per_client_cross_entropy
from lightning_gapsl.config import OptimConfig
from lightning_gapsl.methods.auxiliary import AuxConfig, aux_exchange
from lightning_gapsl.methods.base import Method, cut_shape, seeded, split_state
from lightning_gapsl.methods.configs import check_round_steps, local_pass_epoch, round_ends
from lightning_gapsl.methods.rounds import (
    every_round_global,
    fedavg_clients_,
    segment_shapes,
    shapes_of,
)
from lightning_gapsl.models.stacked import StackedSegments
from lightning_gapsl.privacy.exposure import AUXILIARY


@dataclass(frozen=True)
class CseFslConfig(AuxConfig):
    name: str = "cse_fsl"
    """The method's registry name (``algorithm=``)."""


def build(cfg, data, layout):
    state = split_state(cfg, data, layout)
    act, classes = cut_shape(cfg, data), data.dataset.num_classes
    if layout.hosted:  # the heads are averaged: one shared initialisation
        state.client_extras["heads"] = StackedSegments([
            seeded(lambda: aux_model_for(act, classes), cfg.seed, "aux", 0)
            for _ in layout.hosted])
    state.extras["client_shapes"] = segment_shapes(cfg, data)
    state.extras["head_shapes"] = shapes_of(seeded(lambda: aux_model_for(act, classes),
                                                  cfg.seed, "aux", 0))
    return state


def _local_backward(state, acts, y):
    losses = per_client_cross_entropy(state.client_extras["heads"](acts), y)  # (K,)
    losses.sum().backward()  # segment + head, each client its own loss
    return losses


def train_step(state, transport, step, x, y):
    return aux_exchange(state, transport, step, x, y, _local_backward)


def after_step(state, transport, step) -> None:
    if round_ends(step, state.round_steps):
        fedavg_clients_(state, state.clients, state.extras["client_shapes"], transport)
        fedavg_clients_(state, state.client_extras.get("heads"), state.extras["head_shapes"],
                        transport)


# What reaches the server (docs/privacy.md, exposure flags).
EXPOSURE = AUXILIARY
# The optimizer this method runs with unless optim=sgd|adam or optim.* is given:
# chosen by the tuning grid on validation, point adam1e-3_q1 of
# results/tune_mnist20_dir01/chosen.yaml.
# The best point of the reference regime; the grid chose adam1e-3_q1_every_step,
# which changes the regime (README, tuned comparison).
TUNED_OPTIM = OptimConfig("adam", lr=0.001, momentum=0.0, weight_decay=0.0)

METHOD = Method("cse_fsl", CseFslConfig, build, train_step, after_step=after_step,
                global_model=every_round_global,
                epoch_steps=local_pass_epoch, participation="round",
                optim=TUNED_OPTIM, exposure=EXPOSURE, check_data=check_round_steps)
