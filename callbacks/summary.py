"""Writes summary.json (docs/tutorials/quickstart.md) on the server rank when training ends."""

from __future__ import annotations

import json
import math
import os

import lightning as L


def build_summary(
    cfg, history: list[dict], wall_s: float, num_clients: int, privacy: dict | None = None
) -> dict:
    """The summary.json dict from the run config and the per-epoch history.

    ``privacy``: the leakage evaluation's block (`lightning_gapsl.privacy`), present only
    when ``privacy`` is not ``off``.

    ``samples_per_s`` is training samples (all clients) over training time, which
    excludes evaluation; ``wall_s`` is the whole fit, evaluation included.
    """
    last = history[-1] if history else {}
    train_s = sum(h["train_s"] for h in history)
    samples = sum(h["samples"] for h in history)
    summary = {
        "algorithm": cfg.algorithm.name,
        "num_clients": num_clients,
        "devices": cfg.trainer.devices,
        "epochs": len(history),
        "steps": last.get("steps", 0),
        "seed": cfg.seed,
        "test_acc_mean": last.get("test_acc_mean"),
        "test_acc_min": last.get("test_acc_min"),
        "test_acc_global": last.get("test_acc_global"),
        "val_acc_mean": last.get("val_acc_mean"),
        "val_acc_min": last.get("val_acc_min"),
        "client_class_acc": last.get("client_class_acc"),
        "train_loss_final": last.get("train_loss"),
        "bytes_up": last.get("bytes_up", 0),
        "bytes_down": last.get("bytes_down", 0),
        "sim_latency_s": last.get("sim_latency_s", 0.0),
        "wall_s": wall_s,
        "samples_per_s": samples / train_s if train_s > 0 else None,
        "history": history,
    }
    for key, value in last.items():  # registered metrics: test_<name>_mean, val_<name>_mean
        if key.startswith(("test_", "val_")) and key.endswith("_mean") and key not in summary:
            summary[key] = value
    if privacy is not None:
        summary["privacy"] = privacy
    return summary


def _json_safe(value):
    """NaN (an epoch without evaluation) becomes null: JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


class SummaryCallback(L.Callback):
    """Collects nothing itself: reads ``pl_module.history`` and writes summary.json."""

    def __init__(self, cfg):
        self.cfg = cfg

    def on_fit_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero or pl_module.preempted_at is not None:
            return  # a pre-empted run has no final numbers; its resumed run writes them
        summary = build_summary(
            self.cfg,
            pl_module.history,
            pl_module.elapsed(),
            pl_module.data.num_clients,
            getattr(pl_module, "privacy", None),
        )
        path = os.path.join(self.cfg.output_dir, "summary.json")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(_json_safe(summary), f, indent=2)
        os.replace(tmp, path)  # atomic: a reader never sees half a file
