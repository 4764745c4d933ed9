"""Per-epoch logging as Lightning callbacks, one concern each.

They read `SplitLearningModule.epoch_record()` (computed once per epoch on every rank,
identical where it matters) and log through Lightning's logger, which exists on the
server rank only: W&B (`logger=wandb`) or CSV (`logger=csv`) get the same keys.

Keys (per epoch):
- client metrics: ``train_loss_epoch``, ``test_acc_mean``, ``test_acc_min``,
  ``test_acc_max``, ``test_acc_std``, ``client_acc/<id>``, ``client_test_loss/<id>``;
- communication: ``bytes_up``, ``bytes_down`` (cumulative), ``bytes_up_epoch``,
  ``bytes_down_epoch`` (this epoch), ``sim_latency_s``, ``samples_per_s``;
- registered metrics (`lightning_gapsl.registry.Metric`): ``test_<name>_mean``,
  ``val_<name>_mean``;
- a method's diagnostics, epoch means: GAPSL's ``gapsl/leaders`` (leader-set size),
  ``gapsl/cos_before``, ``gapsl/cos_after`` (mean cosine to the leader gradient
  before/after alignment), ``gapsl/leader_freq/<id>`` (share of the epoch's steps
  client id was a leader).
Label histograms are written once to ``<output_dir>/label_histograms.csv`` (and as a
W&B table), and the partition itself (client -> training-sample indices, with each
client's label counts) to ``<output_dir>/partition.json``, which
``data.partition_file=`` replays.
"""

from __future__ import annotations

import csv
import math
import os
import statistics
import sys

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar

from lightning_gapsl.data.partition_file import partition_record, save_partition


def _log(pl_module, metrics: dict) -> None:
    """Log finite numbers only: an epoch without evaluation has NaN accuracies."""
    clean = {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and v is not None and math.isfinite(v)
    }
    if clean:
        pl_module.log_dict(clean, on_step=False, on_epoch=True)


class ClientMetricsLogger(L.Callback):
    """Accuracy and loss of every client's model, and their aggregates."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        rec = pl_module.epoch_record()
        if rec is None or not trainer.is_global_zero:
            return
        acc = rec["client_acc"]
        metrics = {"train_loss_epoch": rec["train_loss"]}
        if all(math.isfinite(a) for a in acc):
            metrics.update(
                test_acc_mean=rec["test_acc_mean"],
                test_acc_min=rec["test_acc_min"],
                test_acc_max=max(acc),
                test_acc_std=statistics.pstdev(acc),
            )
            metrics.update(
                {
                    k: v
                    for k, v in rec.items()  # every metric's aggregate
                    if k.startswith(("test_", "val_")) and k.endswith("_mean")
                }
            )
            metrics.update({f"client_acc/{c}": a for c, a in enumerate(acc)})
            metrics.update(
                {f"client_test_loss/{c}": v for c, v in enumerate(rec["client_test_loss"])}
            )
        _log(pl_module, metrics)


class CommunicationLogger(L.Callback):
    """Bytes moved between clients and server, simulated latency, throughput."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        rec = pl_module.epoch_record()
        if rec is None or not trainer.is_global_zero:
            return
        _log(
            pl_module,
            {
                key: rec[key]
                for key in (
                    "bytes_up",
                    "bytes_down",
                    "bytes_up_epoch",
                    "bytes_down_epoch",
                    "sim_latency_s",
                    "samples_per_s",
                )
            },
        )


class MethodDiagnostics(L.Callback):
    """Whatever a method reports per step (`RankState.step_diagnostics`), as the epoch's
    mean: a scalar under its name, a per-client value as ``<name>/<id>``."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        rec = pl_module.epoch_record()
        if rec is None or not trainer.is_global_zero:
            return
        metrics = {}
        for name in pl_module.diagnostic_names():
            value = rec.get(name)
            if isinstance(value, list):
                metrics.update({f"{name}/{c}": v for c, v in enumerate(value)})
            else:
                metrics[name] = value
        _log(pl_module, metrics)


class LabelHistograms(L.Callback):
    """Each client's label counts and the partition, written once at the start of training."""

    def on_fit_start(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        hist = pl_module.data.histograms  # (N, num_classes)
        columns = ["client", "samples", *[f"label_{k}" for k in range(hist.shape[1])]]
        rows = [[c, int(row.sum()), *[int(v) for v in row]] for c, row in enumerate(hist)]
        data = pl_module.data
        save_partition(
            os.path.join(pl_module.cfg.output_dir, "partition.json"),
            partition_record(
                data.client_indices,
                data.dataset.train_y,
                data.dataset.name,
                data.dataset.num_classes,
            ),
        )
        path = os.path.join(pl_module.cfg.output_dir, "label_histograms.csv")
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(columns)
            writer.writerows(rows)
        for logger in trainer.loggers:
            if hasattr(logger, "log_table"):  # W&B
                logger.log_table(key="label_histograms", columns=columns, data=rows)


class EpochPrinter(L.Callback):
    """One line per epoch on the server rank, above the progress bar."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        rec = pl_module.epoch_record()
        if rec is None or not trainer.is_global_zero:
            return
        line = (
            f"epoch {rec['epoch']}/{trainer.max_epochs}  "
            f"train_loss {_fmt(rec['train_loss'], '{:.4f}')}  "
            f"test_acc_mean {_fmt(rec['test_acc_mean'], '{:.2%}')}  "
            f"worst {_fmt(rec['test_acc_min'], '{:.2%}')}  "
            f"MB up {rec['bytes_up'] / 1e6:.0f}  sim {rec['sim_latency_s']:.0f}s  "
            f"wall {rec['wall_s']:.0f}s"
        )
        bar = trainer.progress_bar_callback
        if bar is not None and bar.is_enabled:
            bar.print(line)
        else:  # stderr: stdout stays for machine-read output (summary path, bench JSON)
            print(line, file=sys.stderr, flush=True)


class FinalSummaryTable(L.Callback):
    """Prints the run's final numbers as a table on the server rank."""

    def on_fit_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero or not pl_module.history:
            return
        from rich.console import Console
        from rich.table import Table

        last = pl_module.history[-1]
        table = Table(title=f"{pl_module.cfg.algorithm.name}: final results")
        table.add_column("metric")
        table.add_column("value", justify="right")
        rows = [
            ("epochs / steps", f"{last['epoch']} / {last['steps']}"),
            ("train loss", _fmt(last["train_loss"], "{:.4f}")),
            ("test acc mean (clients)", _fmt(last["test_acc_mean"], "{:.2%}")),
            ("test acc worst client", _fmt(last["test_acc_min"], "{:.2%}")),
            ("MB up / down", f"{last['bytes_up'] / 1e6:.1f} / {last['bytes_down'] / 1e6:.1f}"),
            ("simulated latency", f"{last['sim_latency_s']:.1f} s"),
            ("wall time", f"{last['wall_s']:.1f} s"),
        ]
        for name, value in rows:
            table.add_row(name, value)
        Console(stderr=True).print(table)


class TransientProgressBar(RichProgressBar):
    """Rich's bar, removed when training ends, so no stale "Epoch N/N" line is left
    under the final results table (Rich redraws a stopped bar's last frame)."""

    def on_train_end(self, trainer, pl_module) -> None:
        if self.progress is not None:
            live = self.progress.live
            if live.console.is_terminal:
                live.transient = True  # stop() erases the bar instead of redrawing it
            else:
                live.console.quiet = True  # a file: nothing to erase, write nothing more
        self._stop_progress()


def _fmt(value, pattern: str) -> str:
    return "n/a" if value is None or not math.isfinite(value) else pattern.format(value)


def default_callbacks() -> list[L.Callback]:
    return [
        ClientMetricsLogger(),
        CommunicationLogger(),
        MethodDiagnostics(),
        LabelHistograms(),
        EpochPrinter(),
        FinalSummaryTable(),
    ]
