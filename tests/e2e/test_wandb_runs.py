"""End-to-end tests (about 30 s): W&B runs hold what was logged, in every layout.

W&B runs offline; each run's ``.wandb`` file is read back with `tests.wandb_reader`
and must hold every documented key (callbacks/logging.py) for every epoch, and end with
the run's exit record (finished, not abandoned). Layouts: one process (in-process), and
three processes forked by Lightning, pre-empted with SIGUSR1 in the middle of epoch 2
and resumed from the checkpoint: the resumed run continues the same W&B run (same id).
The CLI test in test_train_cli.py reads a 3-process CLI run the same way.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lightning_gapsl.train import run
from tests.conftest import PreemptAt, load_summary
from tests.wandb_reader import history, kinds, records

pytestmark = pytest.mark.slow

CLIENTS = 4
FAST = [
    "logger=wandb",
    "data.steps_per_epoch=6",
    "trainer.threads=1",
    f"data.num_clients={CLIENTS}",
]
PER_CLIENT = ("client_acc", "client_test_loss", "gapsl/leader_freq")
DOCUMENTED = (
    "train_loss_epoch",
    "test_acc_mean",
    "test_acc_min",
    "test_acc_max",
    "test_acc_std",
    "bytes_up",
    "bytes_down",
    "bytes_up_epoch",
    "bytes_down_epoch",
    "sim_latency_s",
    "samples_per_s",
    "gapsl/leaders",
    "gapsl/cos_before",
    "gapsl/cos_after",
    *[f"{name}/{c}" for name in PER_CLIENT for c in range(CLIENTS)],
)


def run_files(output_dir: Path) -> list[Path]:
    return sorted(output_dir.glob("wandb/offline-run-*/run-*.wandb"))


def _finished(path: Path, wait_s: float = 30.0) -> bool:
    """The run's last record is its exit. W&B's service process writes the file after
    ``finish`` returns, so on a loaded machine the records (even the first) can land a
    little later."""
    deadline = time.monotonic() + wait_s
    while kinds(path)[-1:] != ["exit"]:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def assert_every_key_every_epoch(files: list[Path], epochs: int) -> None:
    keys_by_epoch: dict[int, set] = {}
    for path in files:
        assert _finished(path), f"{path}: run not finished"
        for row in history(path):
            if "epoch" in row:  # the other row: the label-histogram table, logged once
                keys_by_epoch.setdefault(int(row["epoch"]) + 1, set()).update(row)
    assert sorted(keys_by_epoch) == list(range(1, epochs + 1)), sorted(keys_by_epoch)
    for epoch, keys in keys_by_epoch.items():
        missing = set(DOCUMENTED) - keys
        assert not missing, (epoch, sorted(missing))


def test_one_process(compose_cfg):
    cfg = compose_cfg(*FAST, "trainer.devices=1", "trainer.max_epochs=2", name="one")
    run(cfg)
    files = run_files(Path(cfg.output_dir))
    assert len(files) == 1
    assert_every_key_every_epoch(files, 2)


def test_three_processes_preempted_and_resumed(compose_cfg):
    common = [*FAST, "trainer.devices=3", "trainer.max_epochs=3"]
    first = compose_cfg(*common, name="first")
    assert run(first, extra_callbacks=[PreemptAt(epoch=1, batch=2)]) is None  # pre-empted
    ckpt = Path(first.output_dir) / "checkpoints" / "last.ckpt"
    resumed = compose_cfg(*common, f"ckpt_path={ckpt}", name="resumed")
    summary = load_summary(run(resumed))
    assert summary["epochs"] == 3
    before, after = run_files(Path(first.output_dir)), run_files(Path(resumed.output_dir))
    assert len(before) == len(after) == 1
    assert before[0].name == after[0].name  # run-<id>.wandb: the same W&B run continues
    assert "preempting" in kinds(before[0])  # the first part says why it stopped
    assert_every_key_every_epoch([*before, *after], 3)


def test_three_processes_error_still_finishes_the_run(compose_cfg):
    """A diverging run stops with an error on the server rank; its W&B run is finished
    there with exit code 1, holding what was logged before."""
    from torch.multiprocessing import ProcessRaisedException

    cfg = compose_cfg(
        *FAST, "trainer.devices=3", "trainer.max_epochs=3", "optim.lr=1e12", name="diverged"
    )
    with pytest.raises(ProcessRaisedException, match="training loss became"):
        run(cfg)
    (path,) = run_files(Path(cfg.output_dir))
    assert kinds(path)[-1] == "exit" and "run" in kinds(path)
    assert records(path)[-1].exit.exit_code == 1
