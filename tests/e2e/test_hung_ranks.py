"""End-to-end tests (about 15 s each): a rank that hangs (SIGSTOP) instead of dying.

Every other rank must leave within ``trainer.timeout_s`` plus a few seconds, with one
line naming the rank that stopped answering (not the rank that waited for it), and
the last checkpoint must stay loadable. Two layouts: ranks forked by the launching
process (which then kills the stopped rank), and ranks started like ``srun`` starts
them (the SLURM environment of `tests/unit/test_cluster.py`, one process per task, no
parent to notice anything): there, the ranks' own timeouts are all there is.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.e2e.test_resume_faults import _rank_pids
from tests.unit.test_cluster import task_env

pytestmark = pytest.mark.slow

TIMEOUT_S = 4
# Heartbeat check (1.5 s, or 2.5 s when the store's host is the one stopped), the
# launcher's grace before it kills the stopped rank (2 x 1.5 s), process exit.
SLACK_S = 8
CMD = [
    sys.executable,
    "-m",
    "lightning_gapsl.train",
    "data=digits",
    "logger=none",
    "trainer.progress_bar=false",
    "data.steps_per_epoch=6",
    "data.num_clients=4",
    "trainer.threads=1",
    "trainer.devices=3",
    "trainer.max_epochs=400",
    f"trainer.timeout_s={TIMEOUT_S}",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(out: Path, srun: bool) -> tuple[list[subprocess.Popen], list[int]]:
    """The launched processes and the pid of each rank."""
    cmd = [*CMD, f"output_dir={out}"]
    if not srun:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return [proc], _rank_pids(proc.pid, 3)
    port = str(_free_port())
    procs = [
        subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **task_env(rank), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port},
        )
        for rank in range(3)
    ]
    return procs, [p.pid for p in procs]


def _wait_for_checkpoint(out: Path, procs: list[subprocess.Popen], timeout: float = 120) -> None:
    deadline = time.time() + timeout
    # Every rank's file: stopping rank 0 before its first rename would leave no last.ckpt.
    names = ("last.ckpt", "last.ckpt.rank1", "last.ckpt.rank2")
    while not all((out / "checkpoints" / name).exists() for name in names):
        assert all(p.poll() is None for p in procs), procs[0].communicate()[1][-3000:]
        assert time.time() < deadline, "no checkpoint"
        time.sleep(0.1)


# Two of the four (layout, role) pairs, to keep the suite short; they cover the
# launcher's kill (forked), a rank's own timeout without a parent (srun), a silent
# heartbeat (client) and a silent store (server). The other two were measured once
# with timeout_s=4: forked/server rank 10.4 s, srun/client rank 5.6 s.
@pytest.mark.parametrize(
    "srun, stopped",
    [(False, 2), (True, 0)],
    ids=["forked-client_rank", "srun-server_rank"],
)
def test_stopped_rank_is_named_and_everyone_leaves(tmp_path, srun, stopped):
    out = tmp_path / "run"
    procs, pids = _start(out, srun)
    try:
        _wait_for_checkpoint(out, procs)
        start = time.time()
        os.kill(pids[stopped], signal.SIGSTOP)
        # Forked: the launching process reports. srun: every rank that is not stopped.
        watched = procs if not srun else [p for r, p in enumerate(procs) if r != stopped]
        for proc in watched:
            _, stderr = proc.communicate(timeout=TIMEOUT_S + 60)
            took = time.time() - start
            lines = [line for line in stderr.splitlines() if line.startswith("error:")]
            print(
                f"stopped rank {stopped} ({'srun' if srun else 'forked'}): a rank left after "
                f"{took:.1f} s: {lines}"
            )
            assert proc.returncode != 0
            assert took < TIMEOUT_S + SLACK_S, took
            assert len(lines) == 1, stderr[-3000:]
            assert lines[0].startswith(f"error: rank {stopped} stopped answering"), lines
            assert "Traceback" not in stderr
        if not srun:  # the launching process also removed the stopped rank
            assert (
                not Path(f"/proc/{pids[stopped]}").exists()
                or Path(f"/proc/{pids[stopped]}/stat").read_text().split()[2] == "Z"
            )
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in procs:
            proc.wait()
    for name in ("last.ckpt", "last.ckpt.rank1", "last.ckpt.rank2"):  # still loadable
        torch.load(out / "checkpoints" / name, weights_only=True)
