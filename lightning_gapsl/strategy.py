"""The Lightning strategy for split learning: DDP's process management, none of its syncing.

`SplitStrategy` keeps what DDPStrategy does well (starting ranks with fork/spawn or
attaching to ranks a cluster launcher started, the default process group, barriers)
and drops what is wrong for split learning:

- no `DistributedDataParallel` wrapper: client segments are never averaged in PSL and
  GAPSL, and ranks hold different modules (clients on client ranks, server on rank 0);
- no broadcast of rank 0's weights at set-up: every client is initialised from
  (seed, client id), and rank 0 holds no client at all;
- checkpoints from every rank, not only rank 0, each written atomically;
- ranks started with fork/spawn run the callbacks' ``on_exception`` when they fail (as
  a run without a launcher does), so the W&B run is finished inside the rank; and when
  one rank fails, the launching process waits `KILL_GRACE_S` for the others to leave
  before it kills them, instead of torch's 30 s SIGTERM grace plus 30 s more (a rank
  stopped with SIGSTOP ignores SIGTERM until it is killed).
"""

from __future__ import annotations

import functools
from datetime import timedelta

import torch.multiprocessing as torch_mp
from lightning.fabric.utilities.optimizer import _optimizers_to_device
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from lightning.pytorch.trainer.call import _interrupt
from lightning.pytorch.trainer.states import TrainerFn

from lightning_gapsl.checkpoint import AtomicCheckpointIO, rank_path
from lightning_gapsl.transport import collective_fault

# Seconds the launching process gives the other ranks to leave after one failed, before
# SIGTERM, and again before SIGKILL. The healthy ranks have already timed out (or see the
# failure at once) and only finish their W&B run and exit.
KILL_GRACE_S = 1.5


class SplitLauncher(_MultiProcessingLauncher):
    """Lightning's fork/spawn launcher, with failure handling inside the ranks."""

    def launch(self, function, *args, trainer=None, **kwargs):
        start = torch_mp.start_processes

        def start_with_grace(*a, **kw):
            context = start(*a, **kw)
            context.join = functools.partial(context.join, grace_period=KILL_GRACE_S)
            return context

        # Lightning calls ``join()`` without a grace period; give it ours for this launch.
        torch_mp.start_processes = start_with_grace
        try:
            return super().launch(function, *args, trainer=trainer, **kwargs)
        finally:
            torch_mp.start_processes = start

    def _wrapping_function(self, process_idx, trainer, *args, **kwargs) -> None:
        try:
            super()._wrapping_function(process_idx, trainer, *args, **kwargs)
        except BaseException as err:
            if trainer is not None:  # what Lightning does for a run it did not launch
                _interrupt(trainer, err)
            raise


class SplitStrategy(DDPStrategy):
    strategy_name = "split"

    def __init__(self, timeout_s: float = 120.0, start_method: str = "fork", **kwargs):
        kwargs.setdefault("checkpoint_io", AtomicCheckpointIO())
        super().__init__(timeout=timedelta(seconds=timeout_s), start_method=start_method, **kwargs)
        self.timeout_s = timeout_s

    # Lightning's own collectives (epoch ends, checkpoints): a timeout names the rank that
    # stopped answering, as the split-learning exchanges do.
    def barrier(self, name: str | None = None) -> None:
        try:
            super().barrier(name)
        except RuntimeError as err:
            raise collective_fault(f"Lightning's barrier ({name})", self.timeout_s) from err

    def broadcast(self, obj, src: int = 0):
        try:
            return super().broadcast(obj, src)
        except RuntimeError as err:
            raise collective_fault("Lightning's broadcast", self.timeout_s) from err

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        try:
            return super().reduce_boolean_decision(decision, all)
        except RuntimeError as err:
            raise collective_fault("Lightning's stop decision", self.timeout_s) from err

    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        if self._start_method != "popen":  # popen: ranks are separate commands (srun-like)
            self._launcher = SplitLauncher(self, start_method=self._start_method)

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
