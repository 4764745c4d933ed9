"""Cluster launchers: is this process an srun or torchrun rank, and does the job match the config?

Pure functions of an environment mapping (pass ``os.environ``), so tests set the
variables a real job has without a cluster. Detection mirrors Lightning's
(`lightning.fabric.plugins.environments`): a process counts as SLURM-launched when
``SLURM_NTASKS`` is set and the job name is not ``bash`` or ``interactive``
(Lightning's escape hatch for launching ranks by hand inside an allocation), and as
torchrun-launched when ``TORCHELASTIC_RUN_ID`` is set; torchrun takes precedence over
SLURM, as in Lightning.

Our ``trainer.devices`` is the number of processes of the whole job (server
included); Lightning counts ``devices`` per node times ``num_nodes``.
`lightning_process_grid` translates between the two, so one config runs unchanged on
one node and on several.
"""

from __future__ import annotations

from collections.abc import Mapping

from lightning_gapsl.config import ConfigError

# Job names with which Lightning ignores SLURM (``srun --job-name=interactive ...``).
INTERACTIVE_JOB_NAMES = ("bash", "interactive")


def is_torchrun_launched(environ: Mapping[str, str]) -> bool:
    """True when torchrun (torch.distributed.elastic) started this process, as Lightning
    detects it (`TorchElasticEnvironment`)."""
    return "TORCHELASTIC_RUN_ID" in environ


def is_slurm_launched(environ: Mapping[str, str]) -> bool:
    """True when Lightning would pick ``SLURMEnvironment`` for this process."""
    if is_torchrun_launched(environ):  # torchrun inside an allocation: not SLURM's ranks
        return False
    return "SLURM_NTASKS" in environ and environ.get("SLURM_JOB_NAME") not in INTERACTIVE_JOB_NAMES


def is_externally_launched(environ: Mapping[str, str]) -> bool:
    """True when a launcher (srun, torchrun) started every rank: the trainer must attach
    to this process, never fork ranks of its own (that would start devices x devices)."""
    return is_torchrun_launched(environ) or is_slurm_launched(environ)


def check_slurm_tasks(devices: int, environ: Mapping[str, str]) -> None:
    """Raise `ConfigError` when ``trainer.devices`` differs from the SLURM task count.

    Under srun every task is one rank and Lightning takes the world size from
    ``SLURM_NTASKS``, ignoring ``devices``; a mismatch would otherwise show up later
    as a wrong client layout, a duplicated in-process run per task, or a hang. Does
    nothing outside SLURM.
    """
    if not is_slurm_launched(environ):
        return
    ntasks = int(environ["SLURM_NTASKS"])
    if devices != ntasks:
        raise ConfigError(
            f"trainer.devices={devices} but this SLURM job runs {ntasks} tasks "
            f"(SLURM_NTASKS={ntasks}); every task is one rank (rank 0 the server), so set "
            f"trainer.devices={ntasks} or submit with --ntasks-per-node={devices}"
        )


def check_torchrun_world(devices: int, environ: Mapping[str, str]) -> None:
    """Raise `ConfigError` when ``trainer.devices`` differs from torchrun's ``WORLD_SIZE``
    (the processes of all agents together). Does nothing outside torchrun."""
    if not is_torchrun_launched(environ):
        return
    world = int(environ["WORLD_SIZE"])
    if devices != world:
        raise ConfigError(
            f"trainer.devices={devices} but torchrun started {world} processes in all "
            f"(WORLD_SIZE={world}, the sum of --nproc_per_node over the --nnodes agents); "
            f"set trainer.devices={world}"
        )


def _local_processes(devices: int, environ: Mapping[str, str]) -> int:
    """Processes on this node: torchrun's LOCAL_WORLD_SIZE, SLURM's tasks per node, or all."""
    if is_torchrun_launched(environ):
        return int(environ.get("LOCAL_WORLD_SIZE", environ["WORLD_SIZE"]))
    if is_slurm_launched(environ):
        return _slurm_tasks_per_node(environ)
    return devices


def _slurm_tasks_per_node(environ: Mapping[str, str]) -> int:
    """SLURM_NTASKS_PER_NODE (set by --ntasks-per-node), else tasks / nodes."""
    if "SLURM_NTASKS_PER_NODE" in environ:
        return int(environ["SLURM_NTASKS_PER_NODE"])
    return int(environ["SLURM_NTASKS"]) // int(environ.get("SLURM_NNODES", "1"))


def lightning_process_grid(
    devices: int, accelerator: str, environ: Mapping[str, str]
) -> tuple[int, int]:
    """``(devices, num_nodes)`` to give `lightning.Trainer` for ``trainer.devices`` processes.

    - no launcher: ``(devices, 1)``, Lightning forks the ranks on this machine;
    - SLURM: ``(tasks per node, SLURM_NNODES)``, which Lightning checks against the job;
    - torchrun: ``(LOCAL_WORLD_SIZE, nodes)`` when every agent runs the same number of
      processes. Agents of different sizes (2 + 1) cannot be written as devices x nodes;
      on CPU ``(WORLD_SIZE, 1)`` is then exact, because Lightning takes ranks and world
      size from torchrun's environment and every CPU rank uses the same device; on GPU
      each rank needs ``cuda:LOCAL_RANK`` of a node-sized device list, so it is refused.
    """
    if is_slurm_launched(environ):
        return _slurm_tasks_per_node(environ), int(environ.get("SLURM_NNODES", "1"))
    if not is_torchrun_launched(environ):
        return devices, 1
    world = int(environ["WORLD_SIZE"])
    local = _local_processes(devices, environ)
    nodes = int(environ.get("GROUP_WORLD_SIZE", world // local))  # torchrun's agent count
    if local * nodes == world:
        return local, nodes
    if accelerator == "cpu":
        return world, 1
    raise ConfigError(
        f"torchrun agents run different numbers of processes (this node {local}, "
        f"{world} in all); with trainer.accelerator={accelerator} give every agent the "
        "same --nproc_per_node (one process per GPU), or use trainer.accelerator=cpu"
    )


def check_gpu_processes(
    accelerator: str, devices: int, environ: Mapping[str, str], gpus_on_node: int
) -> None:
    """Raise `ConfigError` when a GPU run would put more processes on a node than it has GPUs.

    Every rank needs a GPU of its own: NCCL refuses two ranks on one device, and Lightning
    gives rank ``r`` of a node ``cuda:r``. ``gpus_on_node`` is ``torch.cuda.device_count()``
    (passed in, so this stays a pure function). ``accelerator=auto`` is checked only when
    a GPU exists (without one it runs on CPU). The fix for one GPU and many clients is one
    process: every client is a virtual client on that GPU.
    """
    if accelerator == "cpu" or (accelerator == "auto" and gpus_on_node == 0):
        return
    local = _local_processes(devices, environ)
    if gpus_on_node == 0:
        raise ConfigError(
            "trainer.accelerator=gpu but no CUDA GPU is visible (torch.cuda.device_count()=0); "
            "use trainer.accelerator=cpu, or a CUDA build of torch on a GPU machine"
        )
    if local > gpus_on_node:
        where = "on this node " if local != devices else ""
        raise ConfigError(
            f"trainer.accelerator={accelerator} with {local} processes {where}needs {local} GPUs "
            f"(one per process: NCCL cannot share a GPU between ranks), but this node has "
            f"{gpus_on_node}; use trainer.devices={gpus_on_node} (devices=1 runs every "
            "client in one process on the GPU), or trainer.accelerator=cpu"
        )


def slurm_rank_info(environ: Mapping[str, str]) -> dict[str, int]:
    """This task's place in the job, for a log line; empty outside SLURM.

    Keys: ``global_rank`` (SLURM_PROCID), ``world_size`` (SLURM_NTASKS),
    ``local_rank`` (SLURM_LOCALID, the rank on its node, which picks the GPU) and
    ``node_rank`` (SLURM_NODEID).
    """
    if not is_slurm_launched(environ):
        return {}
    names = {
        "global_rank": "SLURM_PROCID",
        "world_size": "SLURM_NTASKS",
        "local_rank": "SLURM_LOCALID",
        "node_rank": "SLURM_NODEID",
    }
    return {key: int(environ[var]) for key, var in names.items()}


# NCCL's error handling (torch's ProcessGroupNCCL ErrorHandlingMode): 2 = CleanUpOnly, abort
# the communicators and raise in the waiting thread, without tearing the process down.
# Torch's default (3) and 1 end the process with SIGABRT about 100 ms after a timeout,
# before the transport's liveness check (1.5-2.5 s) can name the rank that stopped.
NCCL_ERROR_HANDLING = {"TORCH_NCCL_ASYNC_ERROR_HANDLING": "2"}
_NCCL_ERROR_KEYS = ("TORCH_NCCL_ASYNC_ERROR_HANDLING", "NCCL_ASYNC_ERROR_HANDLING")


def nccl_error_policy(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables to set before ``init_process_group`` so a failed or timed-out NCCL
    collective raises where the transport can name the peer; nothing when the user has set
    either name of the switch (their choice stands)."""
    if any(key in environ for key in _NCCL_ERROR_KEYS):
        return {}
    return dict(NCCL_ERROR_HANDLING)
