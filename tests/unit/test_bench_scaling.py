"""Unit tests (milliseconds): the scaling bench's arithmetic (memory line, state bytes)."""

from __future__ import annotations

import pytest

from lightning_gapsl.bench_scaling import (
    client_state_bytes,
    cosine_cost,
    memory_fit,
    step_time_ratio,
)


def _row(n: int, rss: dict[str, float]) -> dict:
    return {"clients": n, **{algo: {"peak_rss_mib": v} for algo, v in rss.items()}}


def test_memory_line_through_the_ends_and_the_middle_error():
    rows = [
        _row(10, {"centralized": 110, "psl": 120, "gapsl": 120}),
        _row(100, {"centralized": 200, "psl": 260, "gapsl": 230}),
        _row(1000, {"centralized": 1100, "psl": 2100, "gapsl": 2100}),
    ]
    fit = memory_fit(rows)
    assert fit["centralized"]["mib_per_client"] == pytest.approx(1.0)
    assert fit["centralized"]["intercept_mib"] == pytest.approx(100.0)
    assert fit["psl"]["mib_per_client"] == pytest.approx(2.0)
    assert fit["psl"]["middle_points"] == [{"clients": 100, "measured_mib": 260, "line_mib": 300}]


def test_client_state_is_weights_grads_and_momentum():
    # LeNet cut 1 on MNIST: conv 1->8 5x5 (200 + 8) and GroupNorm(4, 8) (8 + 8) = 224 floats.
    assert client_state_bytes(optimizer_slots=1) == 224 * 4 * 3
    assert client_state_bytes(optimizer_slots=2) == 224 * 4 * 4


def test_cosine_cost_reports_matrix_size():
    out = cosine_cost(50, dim=8, repeats=1)
    assert out["clients"] == 50 and out["matrix_mib"] == round(50 * 50 * 4 / 2**20, 1)
    assert out["seconds"] >= 0


def test_step_time_ratio_is_partial_over_full():
    part = {"step_wall_s": 1.0, "step_cpu_s": 0.5}
    full = {"step_wall_s": 8.0, "step_cpu_s": 4.0}
    assert step_time_ratio(part, full) == {"wall": 0.125, "cpu": 0.125}
