"""PNG plots of a comparison: mean client accuracy against epochs, bytes and latency."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: runs on headless nodes
import matplotlib.pyplot as plt

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


def plot_comparison(summaries: list[dict], labels: list[str], out_dir: Path) -> list[Path]:
    """One PNG per x-axis; one line per run, coloured by variant (seeds share a colour)."""
    variants = list(dict.fromkeys(labels))
    # tab20 + marker cycle: up to 11 methods stay distinguishable.
    colours = {v: plt.cm.tab20(2 * i % 20 + (i >= 10)) for i, v in enumerate(variants)}
    markers = {v: "osD^vP*Xh<>"[i % 11] for i, v in enumerate(variants)}
    paths = []
    for name, (x_key, x_label) in AXES.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        seen = set()
        for summary, label in zip(summaries, labels):
            xs, ys = _curve(summary["history"], x_key)
            ax.plot(xs, ys, marker=markers[label], color=colours[label], alpha=0.8,
                    label=None if label in seen else label)
            seen.add(label)
        ax.set_xlabel(x_label)
        if name != "epoch":  # methods differ by orders of magnitude; 0 stays visible
            ax.set_xscale("symlog", linthresh=1.0)
        ax.set_ylabel("mean client test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = Path(out_dir) / f"acc_vs_{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
