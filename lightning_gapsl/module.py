"""The LightningModule: manual optimization, thin glue around the method and the transport.

Everything method-specific lives in `lightning_gapsl.methods` (looked up once, by name,
in the registry). Models are built in ``setup`` (after the process group exists), so
each rank builds only what it hosts. Per-epoch records go to ``self.history``, from
which `callbacks.summary` writes summary.json.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import zlib

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_gapsl.checkpoint import (
    CheckpointError,
    PreemptionFlag,
    last_checkpoint,
    requeue_slurm_job,
)
from lightning_gapsl.config import RunConfig
from lightning_gapsl.data.augment import augment_clients
from lightning_gapsl.data.sampling import ClientBatches, StepLoader
from lightning_gapsl.evaluation import evaluate_clients, row_width, summarize
from lightning_gapsl.federated import FederatedData
from lightning_gapsl.memory_estimate import check_fits, rank_step_memory
from lightning_gapsl.methods import get_method
from lightning_gapsl.methods.base import load_method_state, make_optimizers, step_latency_model
from lightning_gapsl.metrics import EpochInputs, epoch_record, non_finite_message
from lightning_gapsl.schedule import Participation, StepSchedule
from lightning_gapsl.transport import make_transport


def make_deterministic() -> None:
    """``trainer.deterministic``: no TF32 (it rounds matmul and convolution inputs to 10
    mantissa bits on Ampere and later GPUs) and deterministic kernels only."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's reproducible mode
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True)


class SplitLearningModule(L.LightningModule):
    def __init__(self, cfg: RunConfig, data: FederatedData):
        super().__init__()
        self.automatic_optimization = False
        self.cfg, self.data = cfg, data
        self.method = get_method(cfg.algorithm.name)
        self.transport = None
        self.state = None  # the method's RankState
        self.history: list[dict] = []
        self.wall_offset = 0.0  # seconds of training before a resume
        self.sim_latency = 0.0
        self.preempted_at: int | None = None
        self._stop_at_epoch_end = False  # pre-empted on an epoch's last batch
        self._preemption = PreemptionFlag()
        self._pending_state: dict | None = None
        self._pending_epoch_stats = None
        self._evaluated: dict[str, dict] = {}

    # -- construction ---------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if self.transport is not None:
            return
        if self.cfg.trainer.threads is not None:
            torch.set_num_threads(self.cfg.trainer.threads)
        if self.cfg.trainer.deterministic:  # in every rank, whatever started it
            make_deterministic()
        device = self.trainer.strategy.root_device
        self.transport = make_transport(self.data.num_clients, device, self.cfg.trainer.timeout_s)
        if device.type == "cuda":  # before any exchange: a rank that cannot fit stops first
            free, _ = torch.cuda.mem_get_info(device)
            layout = self.transport.layout
            check_fits(rank_step_memory(self.cfg, self.data, layout), free, layout.rank)
        self.transport.check_agreement(self._fingerprint())
        self.state = self.method.build(self.cfg, self.data, self.transport.layout)
        # Registered, so Lightning moves them to the device and checkpoints them.
        self.models = nn.ModuleDict(self.state.modules())
        self._step_latency = step_latency_model(self.method, self.state)
        self._schedule = StepSchedule(self.method, self.state)

    def _identity(self) -> dict[str, str]:
        """What a checkpoint must match to be resumed by this run (and all ranks must share)."""
        c = self.cfg
        return {
            "algorithm": repr(c.algorithm),
            "data": repr(dataclasses.replace(c.data, eval_batch_size=0)),
            # How clients execute (loop/grouped) does not change what they compute.
            "model": repr(dataclasses.replace(c.model, client_exec="")),
            "optim": repr(c.optim),
            "defense": repr(c.defense),
            "seed": str(c.seed),
            "participation": repr(c.participation),
            "latency.trace": str(c.latency.trace),  # its windows decide who takes part
            "trainer.devices": str(c.trainer.devices),
        }

    def _fingerprint(self) -> int:
        return zlib.crc32(repr(self._identity()).encode())

    def configure_optimizers(self):
        optimizers = make_optimizers(self.method, self.state, self.trainer.strategy.root_device)
        if self._pending_state is not None:  # loaded before the optimizers existed
            self._restore(self._pending_state)
        return optimizers

    # -- data -----------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        ds, hosted = self.data.dataset, self.transport.layout.hosted
        indices = {c: self.data.client_indices[c] for c in hosted}
        batches = ClientBatches(
            ds.train_x,
            ds.train_y,
            indices,
            self.data.batch_size,
            self.cfg.seed,
            self.state.total_steps,
            round_len=self.state.round_len,
            turns=self.state.turns,
            prepare=ds.prepare,
        )
        self._train_loader = StepLoader(batches, self.data.steps_per_epoch)
        return self._train_loader

    def val_dataloader(self) -> list[DataLoader]:
        """The test set, and the validation split when the dataset has one."""
        ds, size = self.data.dataset, self.cfg.data.eval_batch_size
        self._eval_splits = ["test"]
        loaders = [DataLoader(TensorDataset(ds.test_x, ds.test_y), batch_size=size)]
        if getattr(ds, "val_x", None) is not None and len(ds.val_y):
            self._eval_splits.append("val")
            loaders.append(DataLoader(TensorDataset(ds.val_x, ds.val_y), batch_size=size))
        return loaders

    # -- training -------------------------------------------------------------------
    def on_fit_start(self) -> None:
        self._fit_start = time.perf_counter()
        self._reset_epoch_stats()
        self._preemption.install()

    def on_fit_end(self) -> None:
        self._preemption.uninstall()

    def elapsed(self) -> float:
        """Seconds of fitting, including those before a resume."""
        return self.wall_offset + time.perf_counter() - self._fit_start

    def on_train_epoch_start(self) -> None:
        self._reset_epoch_stats()

    def _reset_epoch_stats(self) -> None:
        self._epoch_start = self._last_batch_end = time.perf_counter()
        # Restored from a mid-epoch checkpoint when resuming (Lightning then skips
        # on_train_epoch_start), so a pre-empted epoch still averages all its steps.
        self._epoch_losses, self._epoch_diag = self._pending_epoch_stats or ([], {})
        self._pending_epoch_stats = None
        self._epoch_part = Participation()

    def training_step(self, batch, batch_idx: int) -> None:
        x, y, step = batch  # (K, B, C, H, W), (K, B), global step number
        step, counter = int(step), self.transport.counter
        if self.data.augment:  # on x's device, seeded by (seed, client, step): any layout
            x = augment_clients(
                x, self.transport.layout.hosted, step, self.cfg.seed, self.data.augment_fill
            )
        up0, down0 = counter.bytes_up, counter.bytes_down
        self.state.schedule = self._schedule.at(step, self.device, self._epoch_part)
        ran = self.state.active is None or bool(self.state.active.any())
        # Nobody delivering this step: nothing is computed, sent or stepped.
        out = self.method.train_step(self.state, self.transport, step, x, y) if ran else None
        for key, value in self.state.step_diagnostics.items() if ran else ():
            self._epoch_diag.setdefault(key, []).append(value)
        if self.method.after_step is not None:
            self.method.after_step(self.state, self.transport, step)
        senders = self.state.active if ran else self.state.participants  # FedAvg traffic only
        if senders is None or bool(senders.any()):
            self.sim_latency += self._step_latency(
                counter.bytes_up - up0, counter.bytes_down - down0, senders
            )
        self._train_loader.next_step = step + 1
        if out is not None and out.loss is not None:
            if not math.isfinite(out.loss):
                raise FloatingPointError(non_finite_message(out.loss, out.client_losses, step))
            self._epoch_losses.append(out.loss)
            self.log("train_loss", out.loss, prog_bar=True, on_step=True, on_epoch=False)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self._last_batch_end = time.perf_counter()
        # The server decides for everyone, so all ranks checkpoint the same step.
        flag = torch.tensor([float(self._preemption.requested)], device=self.device)
        self.transport.broadcast_(flag)
        if not flag.item():
            return
        # On an epoch's last batch, stop at the epoch's end instead: a checkpoint taken
        # here resumes past the epoch's end hooks, so the epoch would never be recorded.
        if self._train_loader.next_step % self.data.steps_per_epoch == 0:
            self._stop_at_epoch_end = True
        else:
            self._stop_preempted()

    def _stop_preempted(self) -> None:
        """Checkpoint the step every rank has reached and stop (SLURM: requeue the job)."""
        self.preempted_at = self._train_loader.next_step
        self.trainer.save_checkpoint(last_checkpoint(self.cfg.output_dir), weights_only=False)
        self.trainer.should_stop = True
        if self.transport.layout.is_server:
            requeue_slurm_job()

    # -- evaluation -----------------------------------------------------------------
    def _evaluation_due(self) -> bool:
        every, epoch = self.cfg.trainer.eval_every, self.current_epoch + 1
        return every > 0 and (epoch % every == 0 or epoch == self.cfg.trainer.max_epochs)

    def on_validation_epoch_start(self) -> None:
        self._eval_now = self._evaluation_due()
        if not self._eval_now:
            return
        self.method.before_eval(self.state, self.transport, self.current_epoch)
        # Bit-identical client segments give identical rows: evaluate one (the same
        # numbers, a K-th of the cost; GAPSL at full alignment, any method's round end).
        clients = self.state.clients
        self._identical = self._global_model() or (clients is not None and clients.all_equal())
        k, width = len(self.transport.layout.hosted), row_width(self.data.dataset.num_classes)
        self._eval_rows = {
            s: torch.zeros(k, width, dtype=torch.float64, device=self.device)
            for s in self._eval_splits
        }

    def _global_model(self) -> bool:
        global_model = self.method.global_model
        return bool(global_model and global_model(self.state, self.current_epoch))

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if not self._eval_now or self.state.clients is None:
            return
        x, y = batch
        x = self.data.dataset.prepare(x)  # (b, C, H, W): one bounded batch at a time
        self.state.eval_server.eval()
        rows = evaluate_clients(
            self.state.clients,
            self.state.eval_server,
            x,
            y,
            self.data.dataset.num_classes,
            only_first=self._identical,
        )
        split = self._eval_splits[dataloader_idx]
        self._eval_rows[split] += rows.expand(self._eval_rows[split].shape[0], -1)

    def on_validation_epoch_end(self) -> None:
        if not self._eval_now:
            return
        classes = self.data.dataset.num_classes
        self._evaluated = {
            split: summarize(self.transport.all_gather_rows(rows), classes)  # (N, 2C + 1)
            for split, rows in self._eval_rows.items()
        }
        self._evaluated_epoch = self.current_epoch

    def diagnostic_names(self) -> list[str]:
        """The keys of this epoch's method diagnostics in `epoch_record`."""
        return list(self._epoch_diag)

    def epoch_record(self) -> dict | None:
        """This epoch's numbers (computed once; callbacks log them, history keeps them).

        None for a pre-empted (partial) epoch: the resumed run records it.
        """
        if self.preempted_at is not None:
            return None
        cached = getattr(self, "_record", None)
        if cached is not None and cached["epoch"] == self.current_epoch + 1:
            return cached
        steps, counter = self.data.steps_per_epoch, self.transport.counter
        evaluated = getattr(self, "_evaluated_epoch", -1) == self.current_epoch
        partial = self._schedule.draws is not None
        self._record = epoch_record(
            EpochInputs(
                epoch=self.current_epoch + 1,
                steps=(self.current_epoch + 1) * steps,
                losses=self._epoch_losses,
                evaluated=self._evaluated if evaluated else {},
                num_clients=self.data.num_clients,
                global_model=self._global_model(),
                bytes_up=counter.bytes_up,
                bytes_down=counter.bytes_down,
                sim_latency_s=self.sim_latency,
                wall_s=self.elapsed(),
                train_s=self._last_batch_end - self._epoch_start,
                samples=(
                    self._epoch_part.samples
                    if partial
                    else steps * self.data.batch_size * self.data.num_clients
                ),
                diagnostics=self._epoch_diag,
                participation=self._epoch_part.as_dict() if partial else None,
            ),
            self.history[-1] if self.history else None,
        )
        return self._record

    def on_train_epoch_end(self) -> None:
        record = self.epoch_record()
        if record is None:
            return
        self.history.append(record)
        if self._stop_at_epoch_end and self.current_epoch + 1 < self.trainer.max_epochs:
            self._stop_preempted()  # (on the last epoch's last batch the run just ends)
            return
        every = self.cfg.trainer.ckpt_every
        if every and (self.current_epoch + 1) % every == 0:
            self.trainer.save_checkpoint(last_checkpoint(self.cfg.output_dir), weights_only=False)

    # -- checkpoints ----------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        counter, save = self.transport.counter, self.method.state_dict
        checkpoint["split_state"] = {
            "identity": self._identity(),
            "rank": self.transport.layout.rank,
            "method": save(self.state) if save else {},
            "bytes": [counter.bytes_up, counter.bytes_down],
            "sim_latency_s": self.sim_latency,
            "wall_s": self.elapsed(),
            "history": self.history,
            "epoch_stats": [self._epoch_losses, self._epoch_diag],
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("split_state")
        if state is None:
            raise CheckpointError("checkpoint was not written by lightning_gapsl (no split_state)")
        mine = self._identity()
        for key, value in state["identity"].items():
            if mine.get(key) != value:
                raise CheckpointError(
                    f"checkpoint is from a different configuration: {key} was {value}, "
                    f"this run has {mine.get(key)}"
                )
        if self.state is not None and self.state.loss_weights is not None:
            self._restore(state)
        else:
            self._pending_state = state

    def _restore(self, saved: dict) -> None:
        load_method_state(self.method, self.state, saved["method"], self.device)
        self.transport.counter.bytes_up, self.transport.counter.bytes_down = saved["bytes"]
        self.sim_latency = saved["sim_latency_s"]
        self.wall_offset = saved["wall_s"]
        self.history = list(saved["history"])
        self._pending_epoch_stats = saved.get("epoch_stats")
        self._pending_state = None

    def teardown(self, stage: str) -> None:
        if self.transport is not None:
            self.transport.close()
