"""The Lightning strategy for split learning: DDP's process management, none of its syncing.

`SplitStrategy` keeps what DDPStrategy does well (starting ranks with fork/spawn or
attaching to ranks a cluster launcher started, the default process group, barriers)
and drops what is wrong for split learning:

- no `DistributedDataParallel` wrapper: client segments are never averaged in PSL and
  GAPSL, and ranks hold different modules (clients on client ranks, server on rank 0);
- no broadcast of rank 0's weights at set-up: every client is initialised from
  (seed, client id), and rank 0 holds no client at all;
- checkpoints from every rank, not only rank 0, each written atomically.
"""

from __future__ import annotations

from datetime import timedelta

from lightning.fabric.utilities.optimizer import _optimizers_to_device
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.trainer.states import TrainerFn

from lightning_gapsl.checkpoint import AtomicCheckpointIO, rank_path


class SplitStrategy(DDPStrategy):
    strategy_name = "split"

    def __init__(self, timeout_s: float = 120.0, start_method: str = "fork", **kwargs):
        kwargs.setdefault("checkpoint_io", AtomicCheckpointIO())
        super().__init__(timeout=timedelta(seconds=timeout_s), start_method=start_method, **kwargs)

    # Every rank saves, removes and loads its own file (see lightning_gapsl.checkpoint).
    def save_checkpoint(self, checkpoint, filepath, storage_options=None) -> None:
        path = rank_path(filepath, self.global_rank)
        self.checkpoint_io.save_checkpoint(checkpoint, path, storage_options=storage_options)

    def remove_checkpoint(self, filepath) -> None:
        self.checkpoint_io.remove_checkpoint(rank_path(filepath, self.global_rank))

    def load_checkpoint(self, checkpoint_path, weights_only=None):
        return self.checkpoint_io.load_checkpoint(rank_path(checkpoint_path, self.global_rank))

    def configure_ddp(self) -> None:
        """Leave the LightningModule unwrapped: there are no gradients to all-reduce."""

    def setup(self, trainer) -> None:
        """DDPStrategy.setup without the DDP wrapper and without `_sync_module_states`."""
        assert self.accelerator is not None and self.model is not None
        self.accelerator.setup(trainer)
        self.precision_plugin.convert_module(self.model)
        self.model_to_device()
        if trainer.state.fn == TrainerFn.FITTING:
            self.setup_optimizers(trainer)
        self.setup_precision_plugin()
        if trainer.state.fn == TrainerFn.FITTING:
            _optimizers_to_device(self.optimizers, self.root_device)
