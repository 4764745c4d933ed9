"""End-to-end test (about half a minute): a two-node torchrun job emulated on this machine.

Two ``torchrun`` agents with ``--nnodes=2`` on the loopback address (2 + 1 processes,
static rendezvous), exactly as a user starts ranks on two hosts, must give the same
losses, accuracies and byte counts as the one-process run of the same config.
Before the launcher was detected, every torchrun rank forked ``devices`` ranks of its
own and the job died on gloo timeouts.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_gapsl.train import run
from tests.conftest import DIGITS, load_summary
from tests.distributed.launch import _free_port

pytestmark = pytest.mark.slow

COMMON = [
    "algorithm=gapsl",
    "algorithm.reading=client",
    "data.num_clients=5",
    "trainer.max_epochs=2",
    "data.steps_per_epoch=6",
    "trainer.threads=1",
]


def _torchrun_two_nodes(out: Path) -> list[subprocess.CompletedProcess]:
    """Start both agents (node 0: ranks 0-1, node 1: rank 2) and wait for them."""
    port = _free_port()
    overrides = [*DIGITS, *COMMON, "trainer.devices=3", f"output_dir={out}"]
    agents = []
    for node_rank, nproc in ((0, 2), (1, 1)):
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes=2",
            f"--node_rank={node_rank}",
            f"--nproc_per_node={nproc}",
            "--rdzv_backend=static",
            "--master_addr=127.0.0.1",
            f"--master_port={port}",
            "-m",
            "lightning_gapsl.train",
            *overrides,
        ]
        agents.append(
            subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
        )
    done = []
    for agent in agents:
        stdout, stderr = agent.communicate(timeout=240)
        done.append(subprocess.CompletedProcess(agent.args, agent.returncode, stdout, stderr))
    return done


def test_two_torchrun_nodes_equal_one_process(tmp_path, compose_cfg):
    node0, node1 = _torchrun_two_nodes(tmp_path / "two_nodes")
    assert node0.returncode == 0, node0.stderr[-3000:]
    assert node1.returncode == 0, node1.stderr[-3000:]
    # Each rank attached to its torchrun process: 3 ranks in all, none forked.
    starts = (node0.stdout + node0.stderr).count("Initializing distributed")
    starts += (node1.stdout + node1.stderr).count("Initializing distributed")
    assert starts == 3
    assert node0.stdout.strip().splitlines()[-1].endswith("summary.json")

    multi = load_summary(tmp_path / "two_nodes" / "summary.json")
    single = load_summary(run(compose_cfg(*COMMON, "trainer.devices=1", name="one")))
    assert multi["devices"] == 3 and single["devices"] == 1
    for h1, h3 in zip(single["history"], multi["history"], strict=True):
        for key in ("train_loss", "test_acc_mean", "test_acc_min"):
            assert math.isclose(h1[key], h3[key], abs_tol=1e-5), (key, h1[key], h3[key])
        assert h1["client_acc"] == pytest.approx(h3["client_acc"], abs=1e-5)
        assert h1["bytes_up"] == h3["bytes_up"] > 0
        assert h1["bytes_down"] == h3["bytes_down"] > 0
