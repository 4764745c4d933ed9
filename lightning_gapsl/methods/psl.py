"""PSL: parallel split learning, the plain exchange.

Server loss: the size-weighted sum of per-client mean losses; the gradient transform is
the identity; client segments are never averaged.
"""

from __future__ import annotations

from dataclasses import dataclass

from lightning_gapsl.config import OptimConfig
from lightning_gapsl.methods.base import Method, split_state
from lightning_gapsl.methods.configs import SplitConfig
from lightning_gapsl.methods.exchange import Hooks, split_exchange
from lightning_gapsl.privacy.exposure import PSL_FAMILY


@dataclass(frozen=True)
class PslConfig(SplitConfig):
    name: str = "psl"
    """The method's registry name (``algorithm=``)."""


def build(cfg, data, layout):
    return split_state(cfg, data, layout)


def train_step(state, transport, step, x, y):
    return split_exchange(state, transport, step, x, y, Hooks())


# What reaches the server (docs/explanations/privacy.md, exposure flags).
EXPOSURE = {**PSL_FAMILY, "cut_gradient": "own"}
# The optimizer this method runs with unless optim=sgd|adam or optim.* is given:
# chosen by the tuning grid on validation, point adam3e-3 of
# experiments/results/tune_mnist20_dir01/chosen.yaml.
TUNED_OPTIM = OptimConfig("adam", lr=0.003, momentum=0.0, weight_decay=0.0)

METHOD = Method(
    "psl", PslConfig, build, train_step, participation="step", optim=TUNED_OPTIM, exposure=EXPOSURE
)
