"""PNG plots of a comparison: accuracy against epochs, bytes and latency; per-class heat maps."""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: runs on headless nodes
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

AXES = {
    "epoch": ("epoch", "epoch"),
    "bytes": ("bytes_total", "MB communicated (up + down)"),
    "latency": ("sim_latency_s", "simulated latency (s)"),
}


def _curve(history: list[dict], x_key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for h in history:
        if h.get("test_acc_mean") is None:
            continue
        x = (h["bytes_up"] + h["bytes_down"]) / 1e6 if x_key == "bytes_total" else h[x_key]
        xs.append(x)
        ys.append(100 * h["test_acc_mean"])
    return xs, ys


def _style(i: int) -> tuple[tuple, str]:
    """Colour and marker of the i-th method: tab20 + a marker cycle keep 11 apart."""
    return plt.cm.tab20(2 * i % 20 + (i >= 10)), "osD^vP*Xh<>"[i % 11]


def _save(fig, ax, name: str, x_label: str, out_dir: Path, suffix: str = "") -> Path:
    """Label, log-scale the cost axes (methods differ by orders of magnitude), write."""
    ax.set_xlabel(x_label)
    if name != "epoch":  # symlog: 0 (centralized's bytes) stays visible
        ax.set_xscale("symlog", linthresh=1.0)
    ax.set_ylabel("mean client test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(out_dir) / f"acc_vs_{name}{suffix}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_comparison(summaries: list[dict], labels: list[str], out_dir: Path) -> list[Path]:
    """One PNG per x-axis; one line per run, coloured by variant (seeds share a colour)."""
    styles = {v: _style(i) for i, v in enumerate(dict.fromkeys(labels))}
    paths = []
    for name, (x_key, x_label) in AXES.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        seen = set()
        for summary, label in zip(summaries, labels, strict=False):
            xs, ys = _curve(summary["history"], x_key)
            colour, marker = styles[label]
            ax.plot(
                xs,
                ys,
                marker=marker,
                color=colour,
                alpha=0.8,
                label=None if label in seen else label,
            )
            seen.add(label)
        paths.append(_save(fig, ax, name, x_label, out_dir))
    return paths


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std (0 for a single value)."""
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def plot_tradeoff(summaries: dict[str, list[dict]], out_dir: Path, suffix: str = "") -> list[Path]:
    """Final mean client test accuracy against MB (up + down) and against simulated latency:
    one point per method, error bars = std over its seeds (both axes)."""
    paths = []
    for name in ("bytes", "latency"):
        x_key, x_label = AXES[name]
        fig, ax = plt.subplots(figsize=(6, 4))
        for i, (method, found) in enumerate(summaries.items()):
            found = [s for s in found if s.get("test_acc_mean") is not None]
            if not found:
                continue  # every seed crashed: the tables say so
            xs = [
                (s["bytes_up"] + s["bytes_down"]) / 1e6 if x_key == "bytes_total" else s[x_key]
                for s in found
            ]
            (x, dx), (y, dy) = _mean_std(xs), _mean_std([100 * s["test_acc_mean"] for s in found])
            colour, marker = _style(i)
            ax.errorbar(x, y, xerr=dx, yerr=dy, fmt=marker, color=colour, capsize=3, label=method)
        paths.append(_save(fig, ax, name, x_label, out_dir, suffix))
    return paths


def plot_class_acc(
    method: str, summaries: list[dict], out_dir: Path, suffix: str = ""
) -> Path | None:
    """Heat map of per-class test accuracy of every client (clients x classes), averaged
    over the runs that have ``client_class_acc``; None when none has it."""
    grids = [
        np.array(s["client_class_acc"], dtype=float)  # (clients, classes); null -> nan
        for s in summaries
        if s.get("client_class_acc")
    ]
    if not grids:
        return None
    with warnings.catch_warnings():  # a class no run saw stays nan (blank), not a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        acc = 100 * np.nanmean(np.stack(grids), axis=0)  # (clients, classes)
    clients, classes = acc.shape
    fig, ax = plt.subplots(figsize=(1.2 + 0.45 * classes, 1.5 + min(0.22 * clients, 14)))
    image = ax.imshow(acc, vmin=0, vmax=100, cmap="viridis", aspect="auto", interpolation="nearest")
    ax.set_xlabel("class")
    ax.set_ylabel("client")
    ax.set_xticks(range(classes))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # client ids
    ax.set_title(f"{method}: per-class test accuracy (%), mean of {len(grids)} run(s)", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.05)
    fig.tight_layout()
    path = Path(out_dir) / f"class_acc_{method}{suffix}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
