"""End to end (seconds): what evaluation reports, through the train entry point.

`trainer.eval_every` takes any number and the last epoch is always evaluated; every
client is evaluated on the validation split and the test set; per-class accuracy is
reported per client; clients holding one averaged model are evaluated once.
"""

from __future__ import annotations

import math

import pytest

from lightning_gapsl.train import run
from tests.conftest import load_summary

pytestmark = pytest.mark.slow
FAST = ["trainer.devices=1", "data.num_clients=4", "data.steps_per_epoch=4", "trainer.threads=1"]


def test_eval_every_any_number_and_the_last_epoch_always(compose_cfg):
    summary = load_summary(
        run(compose_cfg("algorithm=psl", "trainer.max_epochs=3", "trainer.eval_every=2", *FAST))
    )
    evaluated = [h["test_acc_mean"] is not None for h in summary["history"]]
    assert evaluated == [False, True, True]  # epoch 2 (every 2nd) and epoch 3 (the last)
    last = summary["history"][-1]
    assert len(last["client_val_acc"]) == 4 and 0 < summary["val_acc_mean"] <= 1
    assert summary["val_acc_min"] == pytest.approx(min(last["client_val_acc"]), abs=1e-6)
    # Per-class accuracy of every client: 4 clients x 10 classes, consistent with the
    # overall accuracy (which weighs classes by their support).
    per_class = summary["client_class_acc"]
    assert len(per_class) == 4 and all(len(row) == 10 for row in per_class)
    assert all(v is None or 0 <= v <= 1 for row in per_class for v in row)
    for row, acc in zip(per_class, last["client_acc"], strict=False):
        known = [v for v in row if v is not None]
        assert min(known) - 1e-9 <= acc <= max(known) + 1e-9


def test_identical_clients_are_evaluated_once_with_the_same_numbers(compose_cfg):
    """After a FedAvg round every client holds the same model: one evaluation serves all,
    so every client's accuracy and loss are equal and the global accuracy is theirs."""
    summary = load_summary(
        run(
            compose_cfg(
                "algorithm=fedavg", "trainer.max_epochs=1", "algorithm.rounds=lockstep", *FAST
            )
        )
    )
    last = summary["history"][-1]
    assert len(set(last["client_acc"])) == 1 and len(set(last["client_test_loss"])) == 1
    assert math.isclose(summary["test_acc_global"], last["client_acc"][0], abs_tol=1e-6)
