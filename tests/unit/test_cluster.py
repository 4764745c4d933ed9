"""Unit tests (milliseconds): a 3-task SLURM job without a cluster.

The environment variables srun gives each task of ``sbatch slurm/cpu_node.sbatch``
(1 node, 3 tasks) are set with monkeypatch, one task at a time; Lightning's real
`SLURMEnvironment` and `Trainer` read them, our `Layout` turns the rank into a role,
and `check_slurm_tasks` catches a ``trainer.devices`` that disagrees with the job.
"""

from __future__ import annotations

import os

import pytest
from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

from lightning_gapsl.cluster import check_slurm_tasks, is_slurm_launched, slurm_rank_info
from lightning_gapsl.config import ConfigError
from lightning_gapsl.layout import Layout

JOB_ID = "4813456"


def task_env(procid: int, ntasks: int = 3) -> dict[str, str]:
    """What srun sets for task ``procid`` of a one-node job with ``ntasks`` tasks."""
    return {
        "SLURM_JOB_ID": JOB_ID,
        "SLURM_JOBID": JOB_ID,
        "SLURM_JOB_NAME": "lgapsl",
        "SLURM_NTASKS": str(ntasks),
        "SLURM_NPROCS": str(ntasks),
        "SLURM_NTASKS_PER_NODE": str(ntasks),
        "SLURM_TASKS_PER_NODE": str(ntasks),
        "SLURM_NNODES": "1",
        "SLURM_JOB_NUM_NODES": "1",
        "SLURM_NODELIST": "node[001]",
        "SLURM_JOB_NODELIST": "node[001]",
        "SLURMD_NODENAME": "node001",
        "SLURM_STEP_ID": "0",
        "SLURM_PROCID": str(procid),
        "SLURM_LOCALID": str(procid),  # one node: local rank = global rank
        "SLURM_NODEID": "0",
        "SLURM_CPUS_PER_TASK": "2",
    }


@pytest.fixture
def slurm_task(monkeypatch):
    """slurm_task(procid, **overrides) puts this process inside a fake srun task."""
    for var in list(os.environ):
        if var.startswith(("SLURM", "TORCHELASTIC")):
            monkeypatch.delenv(var)
    # Lightning writes MASTER_ADDR / MASTER_PORT into os.environ; make teardown remove them.
    for var in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)

    def enter(procid: int, **overrides: str | None) -> dict[str, str]:
        env = {**task_env(procid), **overrides}
        for var, value in env.items():
            if value is None:
                monkeypatch.delenv(var, raising=False)
            else:
                monkeypatch.setenv(var, value)
        return {k: v for k, v in env.items() if v is not None}

    return enter


@pytest.mark.parametrize("procid", [0, 1, 2])
def test_lightning_reads_the_task_and_layout_gives_its_role(slurm_task, procid):
    env = slurm_task(procid)
    assert SLURMEnvironment.detect() and is_slurm_launched(env)
    slurm = SLURMEnvironment()
    rank, world = slurm.global_rank(), slurm.world_size()
    assert (rank, world, slurm.local_rank(), slurm.node_rank()) == (procid, 3, procid, 0)
    assert slurm.main_address == "node001"  # first host of node[001]
    assert slurm.main_port == 15000 + int(JOB_ID[-4:])  # same port on every task
    assert slurm_rank_info(env) == {
        "global_rank": procid,
        "world_size": 3,
        "local_rank": procid,
        "node_rank": 0,
    }

    layout = Layout(rank, world, num_clients=10)
    expected = {0: [], 1: [0, 1, 2, 3, 4], 2: [5, 6, 7, 8, 9]}
    assert layout.is_server == (procid == 0)
    assert layout.hosted == expected[procid]
    uneven = Layout(rank, world, num_clients=7)
    assert uneven.hosted == {0: [], 1: [0, 1, 2, 3], 2: [4, 5, 6]}[procid]


def test_check_slurm_tasks(slurm_task):
    env = slurm_task(1)
    check_slurm_tasks(3, env)
    with pytest.raises(ConfigError, match=r"trainer\.devices=4.*SLURM_NTASKS=3"):
        check_slurm_tasks(4, env)
    with pytest.raises(ConfigError, match=r"trainer\.devices=1"):
        check_slurm_tasks(1, env)  # would run a whole in-process job on every task


@pytest.mark.parametrize(
    "overrides",
    [
        {"SLURM_NTASKS": None},  # not an srun task (e.g. the sbatch shell, a laptop)
        {"SLURM_JOB_NAME": "interactive"},  # Lightning's opt-out: ranks started by hand
        {"SLURM_JOB_NAME": "bash"},
        {"TORCHELASTIC_RUN_ID": "x"},  # torchrun inside an allocation wins, as in Lightning
    ],
)
def test_not_under_slurm_nothing_is_checked(slurm_task, overrides):
    env = slurm_task(0, **overrides)
    lightning_picks_slurm = SLURMEnvironment.detect() and not TorchElasticEnvironment.detect()
    assert not is_slurm_launched(env) and not lightning_picks_slurm
    check_slurm_tasks(4, env)
    assert slurm_rank_info(env) == {}


def test_lightning_rejects_ntasks_without_ntasks_per_node(slurm_task):
    """Why the sbatch scripts use --ntasks-per-node: with --ntasks alone srun sets no
    SLURM_NTASKS_PER_NODE and Lightning refuses to start."""
    slurm_task(0, SLURM_NTASKS_PER_NODE=None)
    with pytest.raises(RuntimeError, match="ntasks-per-node"):
        SLURMEnvironment()


def _trainer(devices: int, start_method: str):
    """The Trainer train.py builds for a multi-process run (not fitted)."""
    import lightning as L

    from lightning_gapsl.strategy import SplitStrategy

    return L.Trainer(
        accelerator="cpu",
        devices=devices,
        num_nodes=1,
        strategy=SplitStrategy(start_method=start_method),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )


@pytest.mark.parametrize("procid", [0, 2])
def test_trainer_attaches_to_the_slurm_task(slurm_task, monkeypatch, procid):
    """With start_method=popen the Trainer takes its rank from srun and starts nothing."""
    slurm_task(procid)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # else launch() sets torch threads globally
    trainer = _trainer(3, "popen")
    strategy = trainer.strategy
    assert isinstance(strategy.cluster_environment, SLURMEnvironment)
    assert strategy.cluster_environment.auto_requeue  # SIGUSR1 handler is installed at fit
    assert (trainer.global_rank, trainer.world_size, trainer.local_rank) == (procid, 3, procid)
    assert trainer.is_global_zero == (procid == 0)
    # fit() goes through launch(): it checks the job shape, then runs here, in this task.
    assert strategy.launcher.launch(os.getpid) == os.getpid()


def test_under_slurm_fork_would_start_ranks_of_its_own(slurm_task):
    """Why train.py must not use start_method=fork/spawn under srun: DDPStrategy then
    always uses the multiprocessing launcher, which forks ``devices`` workers inside every
    srun task (3 tasks x 3 workers, all claiming the task's SLURM_PROCID)."""
    from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher

    slurm_task(0)
    assert isinstance(_trainer(3, "fork").strategy.launcher, _MultiProcessingLauncher)


def test_lightning_checks_devices_per_node_only_at_launch(slurm_task, monkeypatch):
    """Lightning accepts devices=4 in a 3-task job at construction and reports it only when
    fit() launches, naming its own `devices`; check_slurm_tasks names the config key first."""
    env = slurm_task(0)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    trainer = _trainer(4, "popen")
    assert trainer.world_size == 3  # world size from SLURM_NTASKS, not from devices
    with pytest.raises(ValueError, match="ntasks-per-node=3"):
        trainer.strategy.launcher.launch(os.getpid)
    with pytest.raises(ConfigError, match="trainer.devices=4"):
        check_slurm_tasks(4, env)


def test_nccl_errors_raise_where_the_failing_rank_can_be_named():
    from lightning_gapsl.cluster import nccl_error_policy

    # Unset: CleanUpOnly (2), not torch's default tear-down that aborts the process.
    assert nccl_error_policy({}) == {"TORCH_NCCL_ASYNC_ERROR_HANDLING": "2"}
    # A user's choice, under either name, stands.
    assert nccl_error_policy({"TORCH_NCCL_ASYNC_ERROR_HANDLING": "1"}) == {}
    assert nccl_error_policy({"NCCL_ASYNC_ERROR_HANDLING": "0"}) == {}


def test_the_sbatch_scripts_leave_nccl_error_handling_to_the_trainer():
    from pathlib import Path

    for script in Path(__file__).resolve().parents[2].glob("slurm/*.sbatch"):
        text = script.read_text()
        assert "export TORCH_NCCL_ASYNC_ERROR_HANDLING" not in text, script.name
        assert "export NCCL_ASYNC_ERROR_HANDLING" not in text, script.name
