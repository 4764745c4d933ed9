"""Paired checks of a claim (lightning_gapsl/paired.py), on numbers checked by hand."""

from __future__ import annotations

import pytest

from lightning_gapsl.compare import check_paired
from lightning_gapsl.paired import paired_difference, paired_markdown
from lightning_gapsl.tuning import GridError


def test_a_consistent_drop_is_reproduced():
    # diffs -1, -1.5, -1.5: mean -4/3, std sqrt(1/12) = 0.288675, t(0.975, 2) = 4.302653,
    # half-width 4.302653 * 0.288675 / sqrt(3) = 0.717109
    r = paired_difference([1.0, 2.0, 3.0], [2.0, 3.5, 4.5], "lower")
    assert r["diffs"] == [-1.0, -1.5, -1.5]
    assert r["mean"] == pytest.approx(-4 / 3)
    assert r["std"] == pytest.approx(0.288675, abs=1e-6)
    assert (r["low"], r["high"]) == pytest.approx((-4 / 3 - 0.717109, -4 / 3 + 0.717109), abs=1e-6)
    assert r["one_sign"] and r["excludes_zero"] and r["verdict"] == "reproduced"
    # The same numbers against the opposite prediction.
    assert paired_difference([1.0, 2.0, 3.0], [2.0, 3.5, 4.5], "higher")["verdict"] == (
        "not reproduced"
    )


def test_one_sign_but_an_interval_over_zero_is_not_reproduced():
    # diffs -0.1, -0.1, -3: every seed lower, but mean -1.067 with std 1.674: the interval
    # [-5.226, 3.092] contains 0.
    r = paired_difference([0.9, 0.9, 0.0], [1.0, 1.0, 3.0], "lower")
    assert r["one_sign"] and not r["excludes_zero"]
    assert r["low"] < 0 < r["high"]
    assert r["verdict"] == "not reproduced"


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="choose one of: lower, higher"):
        paired_difference([1.0, 2.0], [1.0, 2.0], "less")
    with pytest.raises(ValueError, match="same seeds"):
        paired_difference([1.0, 2.0], [1.0], "lower")
    exp = {"name": "x", "variants": {"a": [], "b": []}}
    with pytest.raises(
        GridError, match=r"paired\[0\]: b='c' is not a variant; choose one of: a, b"
    ):
        check_paired({**exp, "paired": [{"a": "a", "b": "c", "key": "leakage", "expect": "lower"}]})
    with pytest.raises(GridError, match="lacks expect"):
        check_paired({**exp, "paired": [{"a": "a", "b": "b", "key": "leakage"}]})


def test_the_section_pairs_runs_by_seed_and_reads_privacy_keys():
    summaries = [
        {"seed": 1, "privacy": {"leakage": 0.30}},
        {"seed": 0, "privacy": {"leakage": 0.20}},
        {"seed": 0, "privacy": {"leakage": 0.10}},
        {"seed": 1, "privacy": {"leakage": 0.15}},
    ]
    labels = ["base", "base", "noisy", "noisy"]
    check = {"a": "noisy", "b": "base", "key": "leakage", "expect": "lower", "claim": "noise"}
    text = paired_markdown([check], summaries, labels, [0, 1])
    assert "noise: leakage(noisy) - leakage(base)" in text
    assert "seeds 0, 1: -0.1000, -0.1500" in text  # matched by seed, not by order
    assert "fewer than 2" in paired_markdown([check], summaries[:3], labels[:3], [0, 1])
