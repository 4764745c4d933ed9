"""bf16-mixed through the real runtime: 1 process and 3 gloo ranks agree (EPSL's
broadcast, the PSL exchange), with LeNet and with an MLP whose cut activations come out of
a Linear layer (bfloat16 under autocast)."""

from __future__ import annotations

import math

import pytest

from lightning_gapsl.train import run
from tests.conftest import load_summary

pytestmark = pytest.mark.slow

TINY = [
    "trainer.max_epochs=1",
    "data.steps_per_epoch=4",
    "data.num_clients=4",
    "trainer.threads=1",
    "trainer.precision=bf16-mixed",
    "data.val_fraction=0",
]
MLP = [
    "plugins=[tests.plugin.example_plugin]",
    "data=blobs64",
    "model=module",
    "model.target=tests.plugin.example_plugin.mlp",
    "model.cut=fc1",
    "data.partition=iid",
]


@pytest.mark.parametrize("method, model", [("epsl", []), ("epsl", MLP), ("psl", MLP)])
def test_bf16_one_process_equals_three(compose_cfg, registries_restored, method, model):
    common = [f"algorithm={method}", *TINY, *model]
    one = load_summary(run(compose_cfg(*common, "trainer.devices=1", name="one")))
    three = load_summary(run(compose_cfg(*common, "trainer.devices=3", name="three")))
    for key in ("train_loss_final", "test_acc_mean"):
        assert math.isclose(one[key], three[key], abs_tol=1e-6), (key, one[key], three[key])
    assert one["bytes_up"] == three["bytes_up"] and one["bytes_down"] == three["bytes_down"]
