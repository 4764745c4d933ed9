"""End-to-end tests (tens of seconds): checkpoints, resume, pre-emption and dead ranks,
through the real entry point (`run` in-process, or the CLI as a subprocess)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lightning_gapsl.checkpoint import CheckpointError
from lightning_gapsl.train import run
from tests.conftest import PreemptAt, load_summary

pytestmark = pytest.mark.slow

FAST = ["data.steps_per_epoch=6", "trainer.threads=1", "data.num_clients=4"]


def _assert_same_history(a: dict, b: dict, tol: float = 1e-6) -> None:
    assert len(a["history"]) == len(b["history"])
    for ha, hb in zip(a["history"], b["history"], strict=False):
        for key in ("train_loss", "test_acc_mean", "test_acc_min", "bytes_up", "sim_latency_s"):
            assert abs(ha[key] - hb[key]) <= tol, (key, ha[key], hb[key])


@pytest.mark.parametrize("devices", [1, 3])
def test_resume_equals_uninterrupted(compose_cfg, devices):
    common = [*FAST, f"trainer.devices={devices}"]
    full = load_summary(run(compose_cfg(*common, "trainer.max_epochs=4", name="full")))
    half = compose_cfg(*common, "trainer.max_epochs=2", name="half")
    run(half)
    ckpt = Path(half.output_dir) / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    if devices == 3:  # one file per rank
        assert ckpt.with_name("last.ckpt.rank1").is_file()
        assert ckpt.with_name("last.ckpt.rank2").is_file()
    resumed = load_summary(
        run(compose_cfg(*common, "trainer.max_epochs=4", f"ckpt_path={ckpt}", name="resumed"))
    )
    _assert_same_history(full, resumed)
    assert resumed["steps"] == full["steps"] == 24


@pytest.mark.parametrize("epoch,batch", [(0, 5), (1, 2)], ids=["epoch_end", "mid_epoch"])
def test_preempted_run_resumes_to_the_uninterrupted_history(compose_cfg, epoch, batch):
    """SIGUSR1 on an epoch's last batch (batch 5 of 6) or inside one: the resumed run
    records every epoch once, with the uninterrupted run's numbers."""
    common = [*FAST, "trainer.devices=1", "trainer.max_epochs=3"]
    full = load_summary(run(compose_cfg(*common, name="full")))
    first = compose_cfg(*common, name="first")
    assert run(first, extra_callbacks=[PreemptAt(epoch=epoch, batch=batch)]) is None
    ckpt = Path(first.output_dir) / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=True)
    stopped_at = state["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["next_step"]
    assert stopped_at == 6 * epoch + batch + 1
    resumed = load_summary(run(compose_cfg(*common, f"ckpt_path={ckpt}", name="resumed")))
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    _assert_same_history(full, resumed)


def test_checkpoint_from_other_config_or_corrupt(compose_cfg, tmp_path):
    first = compose_cfg(*FAST, "trainer.devices=1", "trainer.max_epochs=1", name="first")
    run(first)
    ckpt = Path(first.output_dir) / "checkpoints" / "last.ckpt"
    other = compose_cfg(
        *FAST[:-1],
        "data.num_clients=5",
        "trainer.devices=1",
        "trainer.max_epochs=2",
        f"ckpt_path={ckpt}",
        name="other",
    )
    with pytest.raises(CheckpointError, match="different configuration: data"):
        run(other)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(ckpt.read_bytes()[:1000])
    bad = compose_cfg(
        *FAST, "trainer.devices=1", "trainer.max_epochs=2", f"ckpt_path={truncated}", name="bad"
    )
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        run(bad)


def _cli(out: Path, *overrides: str) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "lightning_gapsl.train",
        "data=digits",
        "logger=none",
        "trainer.progress_bar=false",
        *FAST,
        f"output_dir={out}",
        *overrides,
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _rank_pids(parent: int, count: int, timeout: float = 60) -> list[int]:
    """The forked rank processes of ``parent``, by rank (started in rank order)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        path = f"/proc/{parent}/task/{parent}/children"
        pids = (
            sorted(int(p) for p in Path(path).read_text().split()) if os.path.exists(path) else []
        )
        if len(pids) >= count:
            return pids[:count]
        time.sleep(0.2)
    raise AssertionError("ranks did not start")


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.1)


def test_sigusr1_to_server_checkpoints_and_resumes(tmp_path):
    out = tmp_path / "run"
    proc = _cli(out, "trainer.devices=3", "trainer.max_epochs=400")
    server = _rank_pids(proc.pid, 3)[0]
    _wait_for(out / "checkpoints" / "last.ckpt", proc)  # first epoch done: training is on
    os.kill(server, signal.SIGUSR1)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-3000:]
    assert "pre-empted" in stderr
    assert not (out / "summary.json").exists()  # no final numbers for a stopped run
    state = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    stopped_at = state["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["next_step"]
    assert 6 <= stopped_at < 2400
    # Resume and finish two epochs past the one it stopped in (max_epochs is not part of
    # a checkpoint's identity: a shorter run resumes as well and costs seconds, not 400
    # epochs).
    epochs = stopped_at // 6 + 2
    resumed = _cli(
        tmp_path / "resumed",
        "trainer.devices=3",
        f"trainer.max_epochs={epochs}",
        f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}",
        f"trainer.eval_every={epochs}",
    )
    _, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr[-3000:]
    summary = load_summary(tmp_path / "resumed" / "summary.json")
    assert summary["steps"] == 6 * epochs and len(summary["history"]) == epochs


def test_killed_client_rank_stops_everyone(tmp_path):
    out = tmp_path / "run"
    proc = _cli(out, "trainer.devices=3", "trainer.max_epochs=400", "trainer.timeout_s=15")
    ranks = _rank_pids(proc.pid, 3)
    _wait_for(out / "checkpoints" / "last.ckpt", proc)
    start = time.time()
    os.kill(ranks[2], signal.SIGKILL)
    _, stderr = proc.communicate(timeout=60)
    assert time.time() - start < 30
    assert proc.returncode != 0
    assert "rank 2" in stderr, stderr[-2000:]
    for name in ("last.ckpt", "last.ckpt.rank1", "last.ckpt.rank2"):  # still loadable
        torch.load(out / "checkpoints" / name, weights_only=True)
