"""Per-epoch records: a pure function from what an epoch measured to the dict that
callbacks log and summary.json keeps (docs/tutorials/quickstart.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class EpochInputs:
    epoch: int  # 1-based
    steps: int  # global steps done at the end of this epoch
    losses: list[float]  # this epoch's training losses (server rank)
    evaluated: dict[str, dict[str, torch.Tensor]]  # split -> `evaluation.summarize` output
    num_clients: int
    global_model: bool  # every client holds the same model
    bytes_up: int  # cumulative
    bytes_down: int
    sim_latency_s: float
    wall_s: float
    train_s: float
    samples: int
    diagnostics: dict[str, list]  # name -> per-step values (floats or (N,) tensors)
    # Partial participation only: this epoch's participant-draws and how many of them
    # dropped out, missed the deadline or were offline (counted once per round or step).
    participation: dict[str, int] | None = None


def _rounded(values: torch.Tensor) -> list:
    return [round(float(v), 6) for v in values]


def epoch_record(inp: EpochInputs, previous: dict | None) -> dict:
    """This epoch's numbers. Accuracies are NaN (null in JSON) when not evaluated."""
    nan = torch.full((inp.num_clients,), math.nan)
    test = inp.evaluated.get("test", {})
    val = inp.evaluated.get("val", {})
    acc, val_acc = test.get("acc", nan), val.get("acc", nan)
    previous = previous or {}
    record = {
        "epoch": inp.epoch,
        "steps": inp.steps,
        "train_loss": sum(inp.losses) / len(inp.losses) if inp.losses else None,
        "test_acc_mean": float(acc.mean()),
        "test_acc_min": float(acc.min()),
        "test_acc_global": float(acc[0]) if inp.global_model else None,
        "val_acc_mean": float(val_acc.mean()),
        "val_acc_min": float(val_acc.min()),
        "bytes_up": inp.bytes_up,
        "bytes_down": inp.bytes_down,
        "bytes_up_epoch": inp.bytes_up - previous.get("bytes_up", 0),
        "bytes_down_epoch": inp.bytes_down - previous.get("bytes_down", 0),
        "sim_latency_s": inp.sim_latency_s,
        "wall_s": inp.wall_s,
        "samples_per_s": inp.samples / inp.train_s if inp.train_s > 0 else None,
        "train_s": inp.train_s,
        "samples": inp.samples,
        "client_acc": _rounded(acc),
        "client_test_loss": _rounded(test.get("loss", nan)),
        "client_val_acc": _rounded(val_acc),
    }
    if inp.participation is not None:
        for key in ("participants", "dropped_dropout", "dropped_deadline", "dropped_unavailable"):
            record[key] = inp.participation[key]
    if "class_acc" in test:
        record["client_class_acc"] = [_rounded(row) for row in test["class_acc"]]
    for split, evaluated in (("test", test), ("val", val)):  # the registered metrics
        for key, values in evaluated.items():
            if key.startswith("metric/"):
                name = key.removeprefix("metric/")
                record[f"{split}_{name}_mean"] = float(values.mean())
                record[f"client_{split}_{name}"] = _rounded(values)
    for key, values in inp.diagnostics.items():
        if isinstance(values[0], torch.Tensor) and values[0].ndim == 1:  # (N,) per client
            record[key] = [round(float(f), 4) for f in torch.stack(values).mean(0)]
        else:
            record[key] = sum(values) / len(values)
    return record


def non_finite_message(loss: float, client_losses: torch.Tensor | None, step: int) -> str:
    """Name the clients whose loss went non-finite (the server sees every client's loss)."""
    if client_losses is None:
        return f"training loss became {loss} at step {step} (centralized model)"
    bad = [c for c, v in enumerate(client_losses.tolist()) if not math.isfinite(v)]
    return (
        f"training loss became {loss} at step {step}: client {bad[0] if bad else None} "
        f"first (non-finite clients: {bad}); lower optim.lr or check the data"
    )
