"""Unit tests (milliseconds): multi-node jobs and GPU process counts without a cluster.

The environment a two-node srun job or two torchrun agents give each rank is set with
monkeypatch; Lightning's real cluster environments and `Trainer` read it, and
`lightning_process_grid` must give them a (devices, num_nodes) they accept.
"""

from __future__ import annotations

import os

import pytest
from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

from lightning_gapsl.cluster import (
    check_gpu_processes,
    check_torchrun_world,
    is_externally_launched,
    lightning_process_grid,
)
from lightning_gapsl.config import ConfigError


def torchrun_env(
    rank: int, local_rank: int, local_world: int, world: int, nodes: int, node_rank: int
) -> dict[str, str]:
    """What torchrun (static rendezvous) sets for one worker."""
    return {
        "TORCHELASTIC_RUN_ID": "none",
        "RANK": str(rank),
        "LOCAL_RANK": str(local_rank),
        "LOCAL_WORLD_SIZE": str(local_world),
        "WORLD_SIZE": str(world),
        "GROUP_RANK": str(node_rank),
        "GROUP_WORLD_SIZE": str(nodes),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29500",
    }


def slurm_env(procid: int, nodes: int, per_node: int) -> dict[str, str]:
    """What srun sets for task ``procid`` of ``--nodes=nodes --ntasks-per-node=per_node``."""
    ntasks = nodes * per_node
    return {
        "SLURM_JOB_ID": "4813456",
        "SLURM_JOB_NAME": "lgapsl",
        "SLURM_NTASKS": str(ntasks),
        "SLURM_NTASKS_PER_NODE": str(per_node),
        "SLURM_NNODES": str(nodes),
        "SLURM_NODELIST": f"node[001-{nodes:03d}]",
        "SLURM_PROCID": str(procid),
        "SLURM_LOCALID": str(procid % per_node),
        "SLURM_NODEID": str(procid // per_node),
    }


@pytest.fixture
def environ(monkeypatch):
    """environ(mapping) replaces this process's launcher variables with ``mapping``."""
    for var in list(os.environ):
        if var.startswith(("SLURM", "TORCHELASTIC")) or var in (
            "RANK",
            "LOCAL_RANK",
            "WORLD_SIZE",
            "LOCAL_WORLD_SIZE",
            "GROUP_RANK",
            "GROUP_WORLD_SIZE",
            "MASTER_ADDR",
            "MASTER_PORT",
            "NODE_RANK",
        ):
            monkeypatch.delenv(var)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # else Lightning sets torch threads globally
    for var in ("MASTER_ADDR", "MASTER_PORT"):  # Lightning writes them; teardown removes them
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)

    def enter(env: dict[str, str]) -> dict[str, str]:
        for var, value in env.items():
            monkeypatch.setenv(var, value)
        return env

    return enter


def _trainer(devices: int, num_nodes: int):
    """The Trainer train.py builds for a job that a launcher started (not fitted)."""
    import lightning as L

    from lightning_gapsl.strategy import SplitStrategy

    return L.Trainer(
        accelerator="cpu",
        devices=devices,
        num_nodes=num_nodes,
        strategy=SplitStrategy(start_method="popen"),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )


# (global rank, local rank, node rank) of the 2 + 1 job of the issue.
UNEVEN = [(0, 0, 0), (1, 1, 0), (2, 0, 1)]


@pytest.mark.parametrize(("rank", "local", "node"), UNEVEN)
def test_uneven_torchrun_agents_attach_on_cpu(environ, rank, local, node):
    env = environ(torchrun_env(rank, local, 2 if node == 0 else 1, 3, 2, node))
    assert is_externally_launched(env)
    check_torchrun_world(3, env)
    grid = lightning_process_grid(3, "cpu", env)
    assert grid == (3, 1)  # 2 + 1 is no devices x nodes product; CPU needs none
    trainer = _trainer(*grid)
    assert isinstance(trainer.strategy.cluster_environment, TorchElasticEnvironment)
    assert (trainer.global_rank, trainer.world_size) == (rank, 3)
    assert trainer.strategy.launcher.launch(os.getpid) == os.getpid()  # runs here, forks none


def test_uneven_torchrun_agents_refused_on_gpu(environ):
    env = environ(torchrun_env(0, 0, 2, 3, 2, 0))
    with pytest.raises(ConfigError, match="same --nproc_per_node"):
        lightning_process_grid(3, "gpu", env)


@pytest.mark.parametrize("rank", [0, 3])
def test_even_torchrun_agents_give_devices_per_node(environ, rank):
    env = environ(torchrun_env(rank, rank % 2, 2, 4, 2, rank // 2))
    assert lightning_process_grid(4, "gpu", env) == (2, 2)
    trainer = _trainer(2, 2)
    assert (trainer.global_rank, trainer.world_size, trainer.local_rank) == (rank, 4, rank % 2)
    trainer.strategy.launcher.launch(os.getpid)  # Lightning's devices x nodes check passes


def test_torchrun_world_must_match_devices(environ):
    env = environ(torchrun_env(0, 0, 2, 3, 2, 0))
    with pytest.raises(ConfigError, match=r"trainer\.devices=4.*WORLD_SIZE=3"):
        check_torchrun_world(4, env)


@pytest.mark.parametrize("procid", [0, 5])
def test_two_slurm_nodes_give_tasks_per_node(environ, procid):
    """--nodes=2 --ntasks-per-node=3: Lightning wants devices=3, num_nodes=2, and
    refuses devices=6 (the total, what trainer.devices counts)."""
    env = environ(slurm_env(procid, nodes=2, per_node=3))
    assert lightning_process_grid(6, "cpu", env) == (3, 2)
    trainer = _trainer(3, 2)
    assert isinstance(trainer.strategy.cluster_environment, SLURMEnvironment)
    assert (trainer.global_rank, trainer.world_size, trainer.node_rank) == (procid, 6, procid // 3)
    trainer.strategy.launcher.launch(os.getpid)
    with pytest.raises(ValueError, match="ntasks-per-node=3"):
        _trainer(6, 1).strategy.launcher.launch(os.getpid)


def test_no_launcher_forks_devices_on_one_node(environ):
    assert lightning_process_grid(5, "cpu", {}) == (5, 1)
    assert not is_externally_launched({})


@pytest.mark.parametrize(
    ("accelerator", "devices", "env", "gpus", "error"),
    [
        ("gpu", 3, {}, 1, r"3 processes needs 3 GPUs.*this node has 1.*trainer\.devices=1"),
        ("gpu", 1, {}, 0, "no CUDA GPU is visible"),
        ("auto", 3, {}, 2, "needs 3 GPUs"),
        ("gpu", 3, torchrun_env(0, 0, 2, 3, 2, 0), 1, "2 processes on this node needs 2 GPUs"),
    ],
)
def test_more_gpu_processes_than_gpus_fail_at_start(accelerator, devices, env, gpus, error):
    with pytest.raises(ConfigError, match=error):
        check_gpu_processes(accelerator, devices, env, gpus)


@pytest.mark.parametrize(
    ("accelerator", "devices", "env", "gpus"),
    [
        ("gpu", 1, {}, 1),
        ("gpu", 4, {}, 4),
        ("cpu", 8, {}, 0),
        ("auto", 3, {}, 0),
        ("gpu", 3, torchrun_env(2, 0, 1, 3, 2, 1), 1),
    ],  # one process on a one-GPU node
)
def test_gpu_process_counts_that_fit(accelerator, devices, env, gpus):
    check_gpu_processes(accelerator, devices, env, gpus)
