"""SLURM checks: is this process an srun task, and does the job match the config?

Pure functions of an environment mapping (pass ``os.environ``), so tests set the
variables a real job has without a cluster. Detection mirrors Lightning's
(`lightning.fabric.plugins.environments.slurm`): a process counts as SLURM-launched
when ``SLURM_NTASKS`` is set and the job name is not ``bash`` or ``interactive``
(Lightning's escape hatch for launching ranks by hand inside an allocation), and
torchrun (``TORCHELASTIC_RUN_ID``) takes precedence over SLURM, as in Lightning.
"""

from __future__ import annotations

from collections.abc import Mapping

from lightning_gapsl.config import ConfigError

# Job names with which Lightning ignores SLURM (``srun --job-name=interactive ...``).
INTERACTIVE_JOB_NAMES = ("bash", "interactive")


def is_slurm_launched(environ: Mapping[str, str]) -> bool:
    """True when Lightning would pick ``SLURMEnvironment`` for this process."""
    if "TORCHELASTIC_RUN_ID" in environ:  # torchrun inside an allocation: not SLURM's ranks
        return False
    return "SLURM_NTASKS" in environ and environ.get("SLURM_JOB_NAME") not in INTERACTIVE_JOB_NAMES


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
