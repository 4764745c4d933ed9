"""Distributed tests (seconds): 3 gloo ranks started with fork, each compared with the
in-process run of the same config and seed (DESIGN section 2, layout invariance).

One launch per algorithm; each launch checks losses, accuracies, byte counts and the
uneven client layout (5 clients over 2 client ranks: blocks of 3 and 2).
"""

from __future__ import annotations

import math

import pytest

from lightning_gapsl.train import run
from tests.conftest import load_summary

pytestmark = pytest.mark.slow

CASES = {
    "psl": ["algorithm=psl"],
    "gapsl_cut": ["algorithm=gapsl", "algorithm.reading=cut"],
    "gapsl_client": ["algorithm=gapsl", "algorithm.reading=client"],
    "sglr": ["algorithm=sglr", "algorithm.avg_phase=0.5"],
    "sfl_v1": ["algorithm=sfl_v1", "algorithm.round_steps=5"],
    "sfl_v2": ["algorithm=sfl_v2", "algorithm.round_steps=5"],
    "fedavg": ["algorithm=fedavg", "algorithm.round_steps=5"],
    "locfedmix": ["algorithm=locfedmix", "algorithm.round_steps=5", "algorithm.fedavg_interval=2"],
    "cse_fsl": ["algorithm=cse_fsl", "algorithm.round_steps=5", "algorithm.server_interval=3"],
    "fsl_sage": ["algorithm=fsl_sage", "algorithm.round_steps=5", "algorithm.align_interval=2"],
    "sl": ["algorithm=sl"],
}


def _close(a, b, tol=1e-5) -> bool:
    return a is None and b is None or math.isclose(a, b, rel_tol=0, abs_tol=tol)


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_process_equals_three(compose_cfg, case):
    # Same threads per process on both sides: conv backward sums in thread-sized chunks.
    common = [*CASES[case], "data.num_clients=5", "trainer.max_epochs=2", "trainer.threads=1",
              "data.steps_per_epoch=15"]
    single = load_summary(run(compose_cfg(*common, "trainer.devices=1", name="one")))
    multi = load_summary(run(compose_cfg(*common, "trainer.devices=3", name="three")))

    assert multi["devices"] == 3 and single["devices"] == 1
    assert len(single["history"]) == len(multi["history"]) == 2
    for h1, h3 in zip(single["history"], multi["history"]):
        for key in ("train_loss", "test_acc_mean", "test_acc_min"):
            assert _close(h1[key], h3[key]), (case, key, h1[key], h3[key])
        for a1, a3 in zip(h1["client_acc"], h3["client_acc"]):
            assert _close(a1, a3)
        # Bytes are counted per client, so they do not depend on the layout either.
        assert h1["bytes_up"] == h3["bytes_up"] > 0
        assert h1["bytes_down"] == h3["bytes_down"] > 0
    # Training did something: the loss fell and accuracy beats chance (10 classes).
    assert single["history"][-1]["train_loss"] < single["history"][0]["train_loss"]
    assert single["test_acc_mean"] > 0.2
