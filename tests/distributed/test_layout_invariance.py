"""Distributed tests (seconds): every method in 1 process and in 3 gloo ranks started with
fork (5 clients over 2 client ranks: uneven blocks of 3 and 2). The two layouts must agree
to the last bit with each other (same machine, same kernels), and both must match the
golden numbers (`tests/golden/record.py`) within tolerances that float32 differences
between processors cannot break but a change of behaviour does. EPSL, added after the
recording, is checked 1 process against 3.
"""

from __future__ import annotations

import json
import math

import pytest

from lightning_gapsl.train import run
from tests.conftest import load_summary
from tests.golden.record import CASES, COMMON, GOLDEN, LAYOUTS, exact_fields, golden_mismatches

pytestmark = pytest.mark.slow
GOLDEN_NUMBERS = json.loads(GOLDEN.read_text())


def _run(compose_cfg, overrides: list[str], layout: str) -> dict:
    return load_summary(run(compose_cfg(*COMMON, *overrides, *LAYOUTS[layout], name=layout)))


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_layout_reproduces_the_golden_numbers(compose_cfg, case):
    numbers = {}
    for layout in LAYOUTS:
        summary = _run(compose_cfg, CASES[case], layout)
        assert summary["devices"] == (1 if layout == "one" else 3)
        numbers[layout] = exact_fields(summary)
        mismatches = golden_mismatches(numbers[layout], GOLDEN_NUMBERS[f"{case}/{layout}"], case)
        assert not mismatches, (case, layout, mismatches)
    assert numbers["one"] == numbers["three"], case  # layout invariance: exact
    # Training did something: the loss fell and accuracy beats chance (10 classes).
    history = summary["history"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert summary["test_acc_mean"] > 0.15  # chance is 0.1


def test_epsl_one_process_equals_three(compose_cfg):
    one = _run(compose_cfg, ["algorithm=epsl", "algorithm.phi=0.5"], "one")
    three = _run(compose_cfg, ["algorithm=epsl", "algorithm.phi=0.5"], "three")
    for h1, h3 in zip(one["history"], three["history"], strict=False):
        for key in ("train_loss", "test_acc_mean", "test_acc_min"):
            assert math.isclose(h1[key], h3[key], abs_tol=1e-5), (key, h1[key], h3[key])
        assert h1["bytes_up"] == h3["bytes_up"] > 0
        assert h1["bytes_down"] == h3["bytes_down"] > 0
    assert one["test_acc_mean"] > 0.2
