"""GPU tests (seconds to a minute each; need CUDA, skipped without it, as in CI).

What a lent GPU machine must show: every method runs in one process on the GPU, 1000
LeNet clients fit in one process, the grouped client kernels give the loop's numbers,
and with at least 3 GPUs the NCCL run equals the in-process one within 1e-4.
"""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from lightning_gapsl.methods import method_names
from lightning_gapsl.train import run
from tests.conftest import DIGITS, load_summary

ALGORITHMS = method_names()

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.slow,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

GPU = ["trainer.accelerator=gpu", "trainer.max_epochs=1", "data.steps_per_epoch=4"]
# Lockstep rounds that divide the 4 steps of an epoch (a local-pass round or a whole-epoch
# turn is a full pass over the data, too long for this check).
ROUNDS = ["algorithm.rounds=lockstep", "algorithm.round_steps=2"]
EXTRA = {
    "sfl_v1": ROUNDS,
    "sfl_v2": [*ROUNDS, "algorithm.turns=batch"],
    "fedavg": ROUNDS,
    "locfedmix": ROUNDS,
    "cse_fsl": ROUNDS,
    "fsl_sage": ROUNDS,
    "sl": ["algorithm.turns=batch"],
}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_method_runs_in_process_on_gpu(compose_cfg, algorithm):
    cfg = compose_cfg(
        f"algorithm={algorithm}",
        "trainer.devices=1",
        "data.num_clients=4",
        *GPU,
        *EXTRA.get(algorithm, []),
    )
    summary = load_summary(run(cfg))
    assert math.isfinite(summary["train_loss_final"])
    assert 0.0 <= summary["test_acc_mean"] <= 1.0


@pytest.mark.parametrize("client_exec", ["loop", "grouped", "vmap"])
def test_thousand_lenet_clients_in_one_process(compose_cfg, client_exec):
    cfg = compose_cfg(
        "algorithm=psl",
        "data=synthetic",
        "data.shape=[1,28,28]",
        "data.num_train=64000",
        "data.num_clients=1000",
        "data.partition=iid",
        "trainer.devices=1",
        "trainer.eval_every=0",
        f"model.client_exec={client_exec}",
        "trainer.accelerator=gpu",
        "trainer.max_epochs=1",
        "data.steps_per_epoch=2",
    )
    summary = load_summary(run(cfg))
    assert summary["num_clients"] == 1000 and math.isfinite(summary["train_loss_final"])


def test_grouped_equals_loop_in_training_on_gpu(compose_cfg):
    """Whole runs, not just one call: grouped client kernels vs the loop within 1e-4."""
    common = ["algorithm=psl", "trainer.devices=1", "data.num_clients=8", *GPU]
    loop = load_summary(run(compose_cfg(*common, "model.client_exec=loop", name="loop")))
    grouped = load_summary(run(compose_cfg(*common, "model.client_exec=grouped", name="grp")))
    assert math.isclose(loop["train_loss_final"], grouped["train_loss_final"], abs_tol=1e-4)


def _train_cli(out, *overrides: str) -> dict:
    """A fresh process: forking NCCL ranks is impossible once pytest's process used CUDA."""
    cmd = [sys.executable, "-m", "lightning_gapsl.train", *DIGITS, *overrides, f"output_dir={out}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return load_summary(out / "summary.json")


@pytest.mark.skipif(torch.cuda.device_count() < 3, reason="needs 3 GPUs (one per NCCL rank)")
def test_nccl_three_processes_equal_one(tmp_path):
    common = ["algorithm=gapsl", "data.num_clients=5", *GPU]
    one = _train_cli(tmp_path / "one", *common, "trainer.devices=1")
    three = _train_cli(tmp_path / "three", *common, "trainer.devices=3")
    for key in ("train_loss_final", "test_acc_mean", "test_acc_min"):
        assert math.isclose(one[key], three[key], abs_tol=1e-4), key
    assert one["bytes_up"] == three["bytes_up"]


def test_more_processes_than_gpus_is_a_start_up_error(tmp_path):
    gpus = torch.cuda.device_count()
    cmd = [
        sys.executable,
        "-m",
        "lightning_gapsl.train",
        *DIGITS,
        "trainer.accelerator=gpu",
        f"trainer.devices={gpus + 1}",
        f"data.num_clients={gpus + 1}",
        f"output_dir={tmp_path}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 2
    assert f"this node has {gpus}" in proc.stderr
