"""Unit tests (a second, matplotlib): the comparison plots from hand-made summaries."""

from __future__ import annotations

from lightning_gapsl.plots import plot_class_acc, plot_tradeoff


def _summary(acc: float, class_acc=None) -> dict:
    s = {"test_acc_mean": acc, "bytes_up": 3e6, "bytes_down": 1e6, "sim_latency_s": 2.0}
    if class_acc is not None:
        s["client_class_acc"] = class_acc
    return s


def test_tradeoff_plots_with_error_bars_over_seeds(tmp_path):
    paths = plot_tradeoff(
        {"psl": [_summary(0.8), _summary(0.9)], "sl": [_summary(0.95)], "crashed": []}, tmp_path
    )
    assert [p.name for p in paths] == ["acc_vs_bytes.png", "acc_vs_latency.png"]
    assert all(p.stat().st_size > 0 for p in paths)


def test_class_heat_map_when_present_nothing_otherwise(tmp_path):
    grid = [[1.0, 0.5, None], [0.0, 0.25, 1.0]]  # 2 clients x 3 classes; null: class unseen
    path = plot_class_acc(
        "gapsl", [_summary(0.5, grid), _summary(0.5, grid), _summary(0.5)], tmp_path
    )
    assert path == tmp_path / "class_acc_gapsl.png" and path.stat().st_size > 0
    assert plot_class_acc("psl", [_summary(0.5)], tmp_path) is None
