"""Centralized: the same full model trained in one piece on the pooled data, the accuracy
and speed reference. One "client" holds every sample and draws exactly the batches a
single-client PSL run draws; it runs in one process."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lightning_gapsl.config import OptimConfig, check
from lightning_gapsl.latency import TRAIN_FLOPS_PER_FORWARD
from lightning_gapsl.methods.base import Method, StepCost, StepOutput
from lightning_gapsl.methods.fedavg import full_model_state
from lightning_gapsl.privacy.exposure import NO_CUT


@dataclass(frozen=True)
class CentralizedConfig:
    name: str = "centralized"
    """The method's registry name (``algorithm=``)."""

    def validate(self, run) -> None:
        check(
            run.trainer.devices == 1,
            "algorithm=centralized runs in one process; set trainer.devices=1",
        )


def train_step(state, transport, step, x, y):
    state.client_opt.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(state.clients(x)[0], y[0])  # one client
    loss.backward()
    state.client_opt.step()
    return StepOutput(float(loss.detach()), None)


def cost(state, client_flops: float, server_flops: float) -> StepCost:
    """The whole model on the server, one batch per step."""
    b = state.data.batch_size
    return StepCost(0.0, TRAIN_FLOPS_PER_FORWARD * (client_flops + server_flops) * b)


# What reaches the server (docs/explanations/privacy.md, exposure flags).
EXPOSURE = {
    **NO_CUT,
    "client_weights": "whole model held by the server",
    "labels": "all (the server holds the data)",
}
# The optimizer this method runs with unless optim=sgd|adam or optim.* is given:
# chosen by the tuning grid on validation, point sgd0.1_m0 of
# experiments/results/tune_mnist20_dir01/chosen.yaml.
TUNED_OPTIM = OptimConfig("sgd", lr=0.1, momentum=0.0, weight_decay=0.0)

METHOD = Method(
    "centralized",
    CentralizedConfig,
    full_model_state,
    train_step,
    cost=cost,
    global_model=lambda state, epoch: True,
    pools_data=True,
    optim=TUNED_OPTIM,
    exposure=EXPOSURE,
)
