"""The W&B run's life cycle: one run per experiment, finished before its process exits.

Lightning's `WandbLogger` starts the run lazily on the server rank and leaves finishing
it to an ``atexit`` hook. Rank processes started with fork or spawn leave through
``os._exit``, which skips ``atexit``: the run's records never reach its ``.wandb`` file
(a 7-byte file with 3 processes). `WandbRunCloser` finishes the run explicitly on
every way out of ``fit``: at its end (exit code 0; a pre-empted run is marked so), and
on an error (exit code 1; `SplitStrategy`'s launcher calls ``on_exception`` inside
forked ranks too).

Resuming: the run id is stored in every checkpoint (``wandb_run_id``); a run resumed
from that checkpoint (``ckpt_path=`` or a SLURM requeue) continues the same W&B run.
"""

from __future__ import annotations

import secrets
import string

import lightning as L

CHECKPOINT_KEY = "wandb_run_id"


def new_run_id() -> str:
    """A fresh W&B run id (8 lowercase letters and digits, as W&B makes them)."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def run_id_from_checkpoint(checkpoint: dict) -> str | None:
    """The W&B run id a checkpoint was written by (None: none, e.g. logger=csv)."""
    value = checkpoint.get(CHECKPOINT_KEY)
    return value if isinstance(value, str) and value else None


def finish_run(exit_code: int, preempted: bool = False) -> bool:
    """Finish this process's W&B run, if it has one; True when one was finished."""
    import wandb

    run = wandb.run
    if run is None:  # client ranks, the launching process, or already finished
        return False
    if preempted:
        run.mark_preempting()
    run.finish(exit_code=exit_code)
    return True


class WandbRunCloser(L.Callback):
    """Stores the run id in checkpoints and finishes the run on the server rank."""

    def __init__(self, run_id: str):
        self.run_id = run_id

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = self.run_id

    def on_fit_end(self, trainer, pl_module) -> None:
        finish_run(0, preempted=getattr(pl_module, "preempted_at", None) is not None)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        finish_run(1)
