"""End-to-end test (seconds): ``model.client_exec`` reaches the clients of a real run,
and a run with grouped client kernels trains like the loop (float32 rounding only)."""

from __future__ import annotations

import math

import pytest

from lightning_gapsl.train import run
from tests.conftest import load_summary

pytestmark = pytest.mark.slow


def test_grouped_run_matches_loop_run(compose_cfg):
    common = [
        "algorithm=gapsl",
        "algorithm.reading=cut",
        "trainer.devices=1",
        "data.num_clients=4",
        "trainer.max_epochs=1",
        "data.steps_per_epoch=8",
        "trainer.threads=1",
    ]
    loop = load_summary(run(compose_cfg(*common, "model.client_exec=loop", name="loop")))
    grouped = load_summary(run(compose_cfg(*common, "model.client_exec=grouped", name="grp")))
    auto = load_summary(run(compose_cfg(*common, "model.client_exec=auto", name="auto")))
    assert math.isclose(loop["train_loss_final"], grouped["train_loss_final"], abs_tol=1e-4)
    assert loop["train_loss_final"] == auto["train_loss_final"]  # auto = loop on CPU, bitwise
