"""End-to-end test (seconds): the serial SplitFed V1 loop the bench compares against
computes what the project's sfl_v1 computes (same data, batches, initialisation and
optimizers), so the bench's time ratio compares equal work.
"""

from __future__ import annotations

import math

import pytest

from lightning_gapsl.serial_loop import serial_splitfed_v1
from lightning_gapsl.train import run
from tests.conftest import load_summary

pytestmark = pytest.mark.slow


def test_serial_loop_equals_project_sfl_v1(compose_cfg):
    cfg = compose_cfg(
        "algorithm=sfl_v1",
        "trainer.devices=1",
        "data.num_clients=4",
        "data.steps_per_epoch=6",
        "algorithm.rounds=lockstep",
        "algorithm.round_steps=3",
        "trainer.max_epochs=2",
        "trainer.threads=1",
    )
    project = load_summary(run(cfg))["history"]
    loop = serial_splitfed_v1(cfg, evaluate_every_round=True)["history"]
    assert len(project) == len(loop) == 2
    for p, s in zip(project, loop, strict=False):
        assert math.isclose(p["train_loss"], s["train_loss"], rel_tol=0, abs_tol=1e-5), (p, s)
        # Every client holds the averaged model after the round: one accuracy for all.
        assert math.isclose(p["test_acc_mean"], s["test_acc"], abs_tol=1e-6), (p, s)
        assert p["test_acc_min"] == p["test_acc_mean"]
    assert loop[-1]["train_loss"] < loop[0]["train_loss"]
