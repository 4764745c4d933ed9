"""Checkpoints: one file per rank, written atomically, loaded with ``weights_only``.

Every rank holds different state (rank 0 the server segment and optimizer and GAPSL's
leader EMA, client ranks their stacked client segments and optimizers), so each rank
writes its own file: ``last.ckpt`` on rank 0 and ``last.ckpt.rank<r>`` elsewhere. A file
is written to ``<name>.tmp`` and renamed, so a job killed mid-write leaves the previous
checkpoint intact.

Pre-emption: SIGUSR1 (SLURM's warning signal; see slurm/) only sets a flag. At the
next step boundary the server tells every rank (one tiny broadcast per step), all
ranks write the same step's checkpoint together, training stops, and under SLURM the
job is requeued; the requeued job resumes from ``<output_dir>/checkpoints/last.ckpt``.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import zipfile

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or from another configuration."""


def rank_path(path: str | os.PathLike, rank: int) -> str:
    """The file of ``rank`` for checkpoint ``path``."""
    return str(path) if rank == 0 else f"{path}.rank{rank}"


def last_checkpoint(output_dir: str) -> str:
    return os.path.join(output_dir, "checkpoints", "last.ckpt")


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save to a temporary file, then rename; load with weights_only=True."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        tmp = f"{path}.tmp"
        super().save_checkpoint(checkpoint, tmp, storage_options=storage_options)
        os.replace(tmp, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        return load_file(path, map_location)


def load_file(path: str | os.PathLike, map_location=None) -> dict:
    """``torch.load(path, weights_only=True)`` with messages of our own.

    torch's own message for a file holding other objects advises loading it with
    ``weights_only=False``, which would run arbitrary code from the file; ours names the
    file and what is wrong with it, and never suggests that.
    """
    if not os.path.isfile(path):
        raise CheckpointError(
            f"checkpoint file {path} is missing (each rank reads its own file: "
            "resume with the trainer.devices the checkpoint was written with)"
        )
    try:
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only load failed" not in str(err).lower():
            raise CheckpointError(f"checkpoint {path} is corrupt or truncated") from None
        raise CheckpointError(
            f"checkpoint {path} was not written by lightning_gapsl: it holds Python objects "
            "other than tensors and plain containers, which are not loaded (unpickling them "
            "can run code from the file)"
        ) from None
    except (RuntimeError, EOFError, KeyError, ValueError, zipfile.BadZipFile):
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated (not a complete PyTorch checkpoint)"
        ) from None


def check_resumable(path: str, identity: dict[str, str], devices: int) -> dict:
    """Check, before any rank starts, that ``path`` can resume a run with ``identity``.

    Loads the server's file and checks that every rank's file exists and loads; raises
    `CheckpointError` naming the file or the setting that differs. Returns the server's
    checkpoint (for the W&B run id it holds).
    """
    checkpoint = load_file(path)
    state = checkpoint.get("split_state") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or "identity" not in state:
        raise CheckpointError(
            f"checkpoint {path} was not written by lightning_gapsl (no split_state)"
        )
    for key, value in state["identity"].items():
        if identity.get(key) != value:
            raise CheckpointError(
                f"checkpoint {path} is from a different configuration: {key} was {value}, "
                f"this run has {identity.get(key)}"
            )
    for rank in range(1, devices):
        load_file(rank_path(path, rank))
    return checkpoint


class PreemptionFlag:
    """Set by SIGUSR1; read at step boundaries (a signal handler must not do I/O)."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def install(self) -> None:
        self._previous = signal.signal(signal.SIGUSR1, self._handle)

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGUSR1, self._previous)
            self._previous = None


def requeue_slurm_job() -> None:
    """Under SLURM, put this job back in the queue (it resumes from last.ckpt)."""
    job_id = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    if job_id:
        task = os.environ.get("SLURM_ARRAY_TASK_ID")
        subprocess.run(["scontrol", "requeue", f"{job_id}_{task}" if task else job_id], check=False)
