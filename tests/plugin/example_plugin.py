"""A user's plugin, as a researcher would write it outside this repository: a PSL
variant, a data set of (n, 64) features, an MLP cut by a child's name, and a metric.
`tests/plugin/test_plugins.py` copies this file into a temporary folder (not importable
from the repository) and runs it with ``plugins=[my_plugin]``."""

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from lightning_gapsl.data import DatasetSplit
from lightning_gapsl.methods.base import Method, split_state
from lightning_gapsl.methods.configs import SplitConfig
from lightning_gapsl.methods.exchange import Hooks, split_exchange
from lightning_gapsl.registry import Metric, register_dataset, register_method, register_metric

FEATURES, CLASSES = 64, 4


@dataclass(frozen=True)
class HalfPslConfig(SplitConfig):
    name: str = "half_psl"
    scale: float = 0.5  # what each cut-layer gradient is multiplied by


def _half(state, grads, step):
    return grads * state.cfg.algorithm.scale


register_method(
    Method(
        "half_psl",
        HalfPslConfig,
        split_state,
        lambda state, transport, step, x, y: split_exchange(
            state, transport, step, x, y, Hooks(transform=_half)
        ),
        participation="step",
    )
)


@register_dataset("blobs64")
def load_blobs(data_cfg, seed):
    """Four gaussian blobs in 64 dimensions, from the run seed."""
    gen = torch.Generator().manual_seed(1000 + seed)
    centers = 2 * torch.randn(CLASSES, FEATURES, generator=gen)

    def draw(n):
        y = torch.arange(n) % CLASSES
        return centers[y] + torch.randn(n, FEATURES, generator=gen), y

    train_x, train_y = draw(480)
    test_x, test_y = draw(160)
    return DatasetSplit.from_tensors(train_x, train_y, test_x, test_y, name="blobs64")


def mlp(input_shape, num_classes):
    (features,) = input_shape
    return nn.Sequential(
        OrderedDict(fc1=nn.Linear(features, 32), act=nn.ReLU(), fc2=nn.Linear(32, num_classes))
    )


def _top2_batch(logits, labels):
    hit = (logits.topk(2, dim=1).indices == labels[:, None]).any(dim=1)
    return torch.stack([hit.sum(), torch.tensor(labels.numel())]).double()


register_metric(
    Metric(
        "top2",
        width=lambda num_classes: 2,
        batch=_top2_batch,
        finish=lambda sums: sums[:, 0] / sums[:, 1],
    )
)
