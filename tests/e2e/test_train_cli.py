"""End-to-end tests (tens of seconds): the real entry point as a user runs it.

`python -m lightning_gapsl.train` on digits with 3 processes and the CSV logger, and
once with the W&B logger in offline mode; bad input through the same command.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_gapsl.data import load_dataset
from tests.wandb_reader import history, kinds

pytestmark = pytest.mark.slow

REQUIRED = {
    "algorithm",
    "num_clients",
    "devices",
    "epochs",
    "steps",
    "seed",
    "test_acc_mean",
    "test_acc_min",
    "test_acc_global",
    "train_loss_final",
    "bytes_up",
    "bytes_down",
    "sim_latency_s",
    "wall_s",
    "samples_per_s",
    "history",
}


def _train(tmp_path: Path, *overrides: str, env: dict | None = None):
    cmd = [
        sys.executable,
        "-m",
        "lightning_gapsl.train",
        "data=digits",
        "trainer.progress_bar=false",
        "trainer.timeout_s=60",
        f"output_dir={tmp_path / 'out'}",
        *overrides,
    ]
    full_env = {**os.environ, "WANDB_MODE": "offline", **(env or {})}
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, env=full_env, check=False
    )


def test_train_three_processes_csv(tmp_path):
    proc = _train(tmp_path, "trainer.devices=3", "trainer.max_epochs=2", "logger=csv")
    assert proc.returncode == 0, proc.stderr[-3000:]
    last_line = proc.stdout.strip().splitlines()[-1]
    summary_path = Path(last_line)
    assert summary_path == (tmp_path / "out" / "summary.json").resolve()
    summary = json.loads(summary_path.read_text())
    assert REQUIRED <= set(summary)
    assert summary["algorithm"] == "gapsl" and summary["devices"] == 3
    assert summary["epochs"] == 2 and len(summary["history"]) == 2
    assert summary["bytes_up"] > 0 and summary["sim_latency_s"] > 0
    # (<= up to the last bit: the default GAPSL keeps every client one model, and the
    # mean of N equal floats may differ from them in the last bit.)
    assert 0 < summary["test_acc_min"] <= summary["test_acc_mean"] + 1e-12 <= 1 + 1e-12
    # The CSV logger got the per-epoch metrics.
    with open(tmp_path / "out" / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    logged = {k for row in rows for k, v in row.items() if v}
    documented = {  # the keys the README and callbacks/logging.py promise
        "train_loss",
        "train_loss_epoch",
        "test_acc_mean",
        "test_acc_min",
        "test_acc_max",
        "test_acc_std",
        "client_acc/0",
        "client_acc/5",
        "client_test_loss/0",
        "bytes_up",
        "bytes_down",
        "bytes_up_epoch",
        "bytes_down_epoch",
        "sim_latency_s",
        "samples_per_s",
        "gapsl/leaders",
        "gapsl/cos_before",
        "gapsl/cos_after",
        "gapsl/leader_freq/0",
    }
    assert documented <= logged, documented - logged
    with open(tmp_path / "out" / "label_histograms.csv") as f:
        hist = list(csv.reader(f))
    # every training sample once: 80% of 1797 less the seed-0 validation split
    n_train = load_dataset("digits", seed=0, val_fraction=0.1).train_y.shape[0]
    assert len(hist) == 1 + 6 and sum(int(r[1]) for r in hist[1:]) == n_train


def test_train_wandb_offline_one_run_folder(tmp_path):
    proc = _train(
        tmp_path, "trainer.devices=3", "trainer.max_epochs=1", "logger=wandb", "algorithm=psl"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted((tmp_path / "out" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs  # created on the server rank only
    assert (tmp_path / "out" / "summary.json").is_file()
    # The run file holds the epoch's metrics and the run's clean end (it was 7 bytes).
    (run_file,) = runs[0].glob("run-*.wandb")
    assert kinds(run_file)[-1] == "exit"
    rows = [row for row in history(run_file) if "epoch" in row]
    logged = set().union(*rows)
    assert {"test_acc_mean", "bytes_up", "client_acc/5", "samples_per_s"} <= logged, logged
    assert "litlogger" not in proc.stderr  # no advertisement for another product


@pytest.mark.parametrize(
    "override, expected",
    [
        ("algorithm=nope", "algorithm"),
        ("data.alpha=0", "data.alpha"),
        ("trainer.devices=9", "trainer.devices"),
        ("model.cut_layer=7", "model.cut_layer"),
    ],
)
def test_bad_input_one_clear_line(tmp_path, override, expected):
    proc = _train(tmp_path, override, "trainer.max_epochs=1")
    assert proc.returncode != 0
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr
