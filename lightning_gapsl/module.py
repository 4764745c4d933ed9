"""The LightningModule: manual optimization, thin glue around `split_step` and the transport.

Models are built in ``setup`` (after the process group exists), so each rank builds
only what it hosts: its client segments (stacked), and the server segment (trained
on rank 0, an evaluation copy elsewhere). Per-epoch records go to ``self.history``,
from which `callbacks.summary` writes summary.json.
"""

from __future__ import annotations

import dataclasses
import math
import time
import zlib

import lightning as L
import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters
from torch.utils.data import DataLoader, TensorDataset

from lightning_gapsl.algorithms.fedavg import fedavg_stacked_
from lightning_gapsl.algorithms.fsl_sage import alignment_due
from lightning_gapsl.algorithms.locfedmix import fedavg_due
from lightning_gapsl.algorithms.psl import client_loss_weights
from lightning_gapsl.algorithms.sglr import server_lr
from lightning_gapsl.aux_step import AuxState, align_auxiliaries, aux_train_step
from lightning_gapsl.averaging import fedavg_clients_, round_ends
from lightning_gapsl.checkpoint import (
    CheckpointError,
    PreemptionFlag,
    last_checkpoint,
    requeue_slurm_job,
)
from lightning_gapsl.config import AUX_ALGORITHMS, FEDAVG_ALGORITHMS, RunConfig
from lightning_gapsl.data.sampling import ClientBatches, StepLoader
from lightning_gapsl.federated import FederatedData
from lightning_gapsl.latency import (
    TRAIN_FLOPS_PER_FORWARD,
    client_speeds,
    forward_flops,
    parallel_step_latency,
    sequential_step_latency,
)
from lightning_gapsl.models.split import (
    build_client_segment,
    build_server_segment,
)
from lightning_gapsl.models.stacked import StackedSegments
from lightning_gapsl.rank_models import aux_template, build_rank_models, client_template
from lightning_gapsl.sl_step import share_segment, sl_train_step
from lightning_gapsl.split_step import (
    Parties,
    evaluate_hosted,
    local_train_step,
    make_optimizer,
    split_train_step,
)
from lightning_gapsl.transport import make_transport


def _non_finite_message(loss: float, client_losses: torch.Tensor | None, step: int) -> str:
    """Name the clients whose loss went non-finite (the server sees every client's loss)."""
    if client_losses is None:
        return f"training loss became {loss} at step {step} (centralized model)"
    bad = [c for c, v in enumerate(client_losses.tolist()) if not math.isfinite(v)]
    first = bad[0] if bad else None
    return (
        f"training loss became {loss} at step {step}: client {first} first "
        f"(non-finite clients: {bad}); lower optim.lr or check the data"
    )


class SplitLearningModule(L.LightningModule):
    def __init__(self, cfg: RunConfig, data: FederatedData):
        super().__init__()
        self.automatic_optimization = False
        self.cfg = cfg
        self.data = data
        self.transport = None
        self.parties: Parties | None = None
        self.clients: StackedSegments | None = None
        self.server = None  # trained server segment (SplitFed V1: stacked copies)
        self.eval_server = None  # the single server segment clients evaluate with
        self.full_model = None  # centralized only
        self.decoders = None  # LocFedMix only
        self.client_aux = None  # CSE-FSL heads / FSL-SAGE estimators of the hosted clients
        self.server_aux = None  # FSL-SAGE: the server's copy of every client's estimator
        self._act_buffers: list = []  # FSL-SAGE: per-client activation buffers (server)
        self.history: list[dict] = []
        self._fit_start = 0.0
        self.wall_offset = 0.0  # seconds of training before a resume
        self._sim_latency = 0.0
        self.preempted_at: int | None = None
        self._preemption = PreemptionFlag()

    # -- construction ---------------------------------------------------------------
    def _model_args(self) -> tuple:
        m, ds = self.cfg.model, self.data.dataset
        return m.name, ds.input_shape, ds.num_classes, m.cut_layer

    def setup(self, stage: str) -> None:
        if self.transport is not None:
            return
        if self.cfg.trainer.threads is not None:
            torch.set_num_threads(self.cfg.trainer.threads)
        device = self.trainer.strategy.root_device
        self.transport = make_transport(self.data.num_clients, device, self.cfg.trainer.timeout_s)
        self.transport.check_agreement(self._fingerprint())
        m = build_rank_models(self.cfg, self.data, self.transport.layout)
        # Attributes, so nn.Module registers them (state_dict, device moves, checkpoints).
        self.clients, self.server, self.eval_server = m.clients, m.server, m.eval_server
        self.full_model, self.decoders = m.full_model, m.decoders
        self.client_aux, self.server_aux, self._act_buffers = m.client_aux, m.server_aux, \
            m.act_buffers
        self._setup_latency(*self._model_args())

    def _identity(self) -> dict[str, str]:
        """What a checkpoint must match to be resumed by this run (and all ranks must share)."""
        c = self.cfg
        return {
            "algorithm": repr(c.algorithm),
            "data": repr(dataclasses.replace(c.data, eval_batch_size=0)),
            "model": repr(c.model),
            "optim": repr(c.optim),
            "seed": str(c.seed),
            "trainer.devices": str(c.trainer.devices),
        }

    def _fingerprint(self) -> int:
        return zlib.crc32(repr(self._identity()).encode())

    def _setup_latency(self, name, shape, classes, cut) -> None:
        client = build_client_segment(name, shape, classes, cut, self.cfg.seed, 0)
        server = build_server_segment(name, shape, classes, cut, self.cfg.seed)
        cut_shape = client(torch.zeros(1, *shape)).shape[1:]
        self._flops_client = forward_flops(client, shape)  # per sample
        self._flops_server = forward_flops(server, cut_shape)
        self._speeds = client_speeds(self.cfg.latency, self.data.num_clients, self.cfg.seed)

    def configure_optimizers(self):
        optim = self.cfg.optim
        if self.full_model is not None:
            self._central_opt = make_optimizer(self.full_model.parameters(), optim)
            return [self._central_opt]
        layout = self.transport.layout
        client_params = list(self.clients.parameters()) if self.clients else []
        for extra in (self.decoders, self.client_aux if self.cfg.algorithm.name == "cse_fsl"
                      else None):
            if extra is not None and self.clients is not None:
                client_params += list(extra.parameters())
        client_opt = make_optimizer(client_params, optim) if self.clients else None
        server_opt = None
        if layout.is_server and self.cfg.algorithm.name != "fedavg":
            server_opt = make_optimizer(self.server.parameters(), optim, self._server_lr())
        weights = client_loss_weights(self.data.client_sizes).to(self.trainer.strategy.root_device)
        total = self.data.steps_per_epoch * self.cfg.trainer.max_epochs
        self.parties = Parties(layout, self.clients, self.server, client_opt, server_opt, weights,
                               decoders=self.decoders, seed=self.cfg.seed, total_steps=total)
        self.aux = AuxState(self.client_aux, list(self.server_aux or []), self._act_buffers)
        if getattr(self, "_pending_state", None) is not None:
            self._restore_split_state(self._pending_state)  # loaded before optimizers existed
            self._pending_state = None
        return [o for o in (client_opt, server_opt) if o is not None]

    def _server_lr(self) -> float:
        """SGLR's SplitLr scales the server's rate by N ** a; every other method: the same."""
        a = self.cfg.algorithm
        if a.name == "sglr":
            return server_lr(self.cfg.optim.lr, self.data.num_clients, a.lr_exponent)
        return self.cfg.optim.lr

    # -- data -----------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        ds = self.data.dataset
        hosted = [0] if self.full_model is not None else self.transport.layout.hosted
        indices = {c: self.data.client_indices[c] for c in hosted}
        total = self.data.steps_per_epoch * self.cfg.trainer.max_epochs
        batches = ClientBatches(
            ds.train_x, ds.train_y, indices, self.data.batch_size, self.cfg.seed, total
        )
        self._train_loader = StepLoader(batches, self.data.steps_per_epoch)
        return self._train_loader

    def val_dataloader(self) -> DataLoader:
        ds = self.data.dataset
        test = TensorDataset(ds.test_x, ds.test_y)
        return DataLoader(test, batch_size=self.cfg.data.eval_batch_size, shuffle=False)

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
        self._epoch_start = time.perf_counter()
        self._last_batch_end = self._epoch_start
        # Restored from a mid-epoch checkpoint when resuming (Lightning then skips
        # on_train_epoch_start), so a pre-empted epoch still averages all its steps.
        pending = getattr(self, "_pending_epoch_stats", None)
        self._epoch_losses, self._epoch_diag = pending or ([], {})
        self._pending_epoch_stats = None

    def training_step(self, batch, batch_idx: int) -> None:
        x, y, step = batch  # (K, B, C, H, W), (K, B), global step number
        step = int(step)
        counter = self.transport.counter
        up0, down0 = counter.bytes_up, counter.bytes_down
        client_losses = None
        if self.full_model is not None:
            loss = self._centralized_step(x[0], y[0])
        else:
            if self.cfg.algorithm.name == "fedavg":
                out = local_train_step(self.parties, self.transport, step, x, y)
            elif self.cfg.algorithm.name == "sl":
                numel = sum(s.numel() for s in self._client_template.values())
                out = sl_train_step(self.parties, self.transport, step, x, y, numel)
            elif self.cfg.algorithm.name in AUX_ALGORITHMS:
                out = aux_train_step(self.parties, self.aux, self.transport, self.cfg.algorithm,
                                     step, x, y)
            else:
                out = split_train_step(self.parties, self.transport, self.cfg.algorithm, step, x, y)
            loss, client_losses = out.loss, out.client_losses
            for key, value in self.parties.step_diagnostics.items():
                self._epoch_diag.setdefault(key, []).append(value)
            if self.cfg.algorithm.name in FEDAVG_ALGORITHMS and round_ends(step, self._round_steps):
                self._end_round(step)
        self._sim_latency += self._step_latency(counter.bytes_up - up0, counter.bytes_down - down0)
        self._train_loader.next_step = step + 1
        if loss is not None:
            if not math.isfinite(loss):
                raise FloatingPointError(_non_finite_message(loss, client_losses, step))
            self._epoch_losses.append(loss)
            self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=False)

    @property
    def _round_steps(self) -> int:
        return self.cfg.algorithm.round_steps or self.data.steps_per_epoch

    def _end_round(self, step: int) -> None:
        """FedAvg of client segments across ranks; SplitFed V1 also of its server copies."""
        algo = self.cfg.algorithm
        if algo.name == "locfedmix" and not fedavg_due(step // self._round_steps,
                                                       algo.fedavg_interval):
            return
        hosted = self.transport.layout.hosted
        weights = self.data.client_sizes[hosted] if hosted else torch.zeros(0)
        fedavg_clients_(self.clients, weights, self._client_template, self.transport)
        if algo.name == "cse_fsl":  # the auxiliary heads are averaged too
            fedavg_clients_(self.client_aux, weights, self._aux_template, self.transport)
        if algo.name == "fsl_sage" and alignment_due(step // self._round_steps,
                                                     algo.align_interval):
            align_auxiliaries(self.parties, self.aux, self.transport, algo, step)
        if self.cfg.algorithm.name == "sfl_v1" and self.transport.layout.is_server:
            fedavg_stacked_(self.server.stacked_params(), self.data.client_sizes.float())

    @property
    def _client_template(self) -> dict[str, torch.Size]:
        if not hasattr(self, "_template_shapes"):
            self._template_shapes = client_template(self.cfg, self.data)
        return self._template_shapes

    @property
    def _aux_template(self) -> dict[str, torch.Size]:
        return aux_template(self.cfg, self.data)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self._last_batch_end = time.perf_counter()
        # The server decides for everyone, so all ranks checkpoint the same step.
        flag = torch.tensor([float(self._preemption.requested)], device=self.device)
        self.transport.broadcast_(flag)
        if flag.item():
            self.preempted_at = self._train_loader.next_step
            self.trainer.save_checkpoint(last_checkpoint(self.cfg.output_dir), weights_only=False)
            self.trainer.should_stop = True
            if self.transport.layout.is_server:
                requeue_slurm_job()

    def _centralized_step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        self._central_opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(self.full_model(x), y)
        loss.backward()
        self._central_opt.step()
        return float(loss.detach())

    def _step_latency(self, up: int, down: int) -> float:
        n, b = self.data.num_clients, self.data.batch_size
        lat = self.cfg.latency
        if self.full_model is not None:
            flops = TRAIN_FLOPS_PER_FORWARD * (self._flops_client + self._flops_server) * b
            return flops / lat.server_flops
        client_flops, server_flops = self._flops_client, self._flops_server * n
        if self.cfg.algorithm.name == "fedavg":  # the whole model on the client, no server
            client_flops, server_flops = self._flops_client + self._flops_server, 0.0
        if self.cfg.algorithm.name == "sl":  # turns, not parallel: the sum over clients
            return sequential_step_latency(
                lat, self._speeds, TRAIN_FLOPS_PER_FORWARD * client_flops * b,
                TRAIN_FLOPS_PER_FORWARD * self._flops_server * b, up / n, down / n)
        return parallel_step_latency(
            lat,
            self._speeds,
            TRAIN_FLOPS_PER_FORWARD * client_flops * b,
            TRAIN_FLOPS_PER_FORWARD * server_flops * b,
            up / n,
            down / n,
        )

    # -- evaluation -----------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        if self.cfg.algorithm.name == "sl":  # every rank evaluates the current segment
            numel = sum(s.numel() for s in self._client_template.values())
            share_segment(self.parties, self.transport, -1 - self.current_epoch, numel)
        if self.server is not None and any(True for _ in self.eval_server.parameters()):
            # Client ranks evaluate their clients locally with a copy of the server.
            flat = self._server_vector()
            self.transport.broadcast_(flat)
            with torch.no_grad():
                vector_to_parameters(flat, self.eval_server.parameters())
        k = 1 if self.full_model is not None else len(self.transport.layout.hosted)
        self._eval_rows = torch.zeros(k, 3, dtype=torch.float64, device=self.device)

    def _server_vector(self) -> torch.Tensor:
        """The server weights clients evaluate with (SplitFed V1: its copies' average)."""
        if isinstance(self.server, StackedSegments):
            weights = self.data.client_sizes.to(self.device)
            return torch.cat([
                (p.detach().flatten(1).double() * weights[:, None]).sum(0).div(weights.sum()).float()
                for p in self.server.stacked_params().values()
            ])
        return parameters_to_vector(self.eval_server.parameters()).detach().clone()

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        if self.full_model is not None:
            logits = self.full_model(x)
            loss = torch.nn.functional.cross_entropy(logits, y, reduction="sum")
            row = torch.stack([(logits.argmax(-1) == y).sum().double(), loss.double(),
                               torch.tensor(float(len(y)), dtype=torch.float64)])
            self._eval_rows += row.to(self._eval_rows.device)
        elif self.clients is not None:
            self.eval_server.eval()
            rows = evaluate_hosted(self.clients, self.eval_server, x, y)  # (K, 3)
            if self.cfg.algorithm.name == "sl":  # one shared segment: the same for all hosted
                rows = rows.expand(len(self.transport.layout.hosted), 3)
            self._eval_rows += rows.to(self.device)

    def on_validation_epoch_end(self) -> None:
        rows = self._eval_rows if self.full_model is not None else self.transport.all_gather_rows(
            self._eval_rows
        )  # (N, 3)
        self._client_acc = (rows[:, 0] / rows[:, 2]).cpu()  # (N,)
        self._evaluated_epoch = self.current_epoch
        self._client_test_loss = (rows[:, 1] / rows[:, 2]).cpu()

    def epoch_record(self) -> dict | None:
        """This epoch's numbers (computed once; callbacks log them, history keeps them).

        None for a pre-empted (partial) epoch: the resumed run records it.
        """
        if self.preempted_at is not None:
            return None
        cached = getattr(self, "_record", None)
        if cached is not None and cached["epoch"] == self.current_epoch + 1:
            return cached
        train_s = self._last_batch_end - self._epoch_start
        steps = self.data.steps_per_epoch
        samples = steps * self.data.batch_size * self.data.num_clients
        evaluated = getattr(self, "_evaluated_epoch", -1) == self.current_epoch
        nan = torch.full((self.data.num_clients,), math.nan)
        acc = self._client_acc if evaluated else nan
        test_loss = self._client_test_loss if evaluated else nan
        previous = self.history[-1] if self.history else {}
        record = {
            "epoch": self.current_epoch + 1,
            "steps": (self.current_epoch + 1) * steps,
            "train_loss": (sum(self._epoch_losses) / len(self._epoch_losses))
            if self._epoch_losses else None,
            "test_acc_mean": float(acc.mean()),
            "test_acc_min": float(acc.min()),
            "test_acc_global": float(acc[0]) if self._has_global_model() else None,
            "bytes_up": self.transport.counter.bytes_up,  # cumulative
            "bytes_down": self.transport.counter.bytes_down,
            "bytes_up_epoch": self.transport.counter.bytes_up - previous.get("bytes_up", 0),
            "bytes_down_epoch": self.transport.counter.bytes_down - previous.get("bytes_down", 0),
            "sim_latency_s": self._sim_latency,
            "wall_s": self.elapsed(),
            "samples_per_s": samples / train_s if train_s > 0 else None,
            "train_s": train_s,
            "samples": samples,
            "client_acc": [round(float(a), 6) for a in acc],
            "client_test_loss": [round(float(v), 6) for v in test_loss],
        }
        for key, values in self._epoch_diag.items():
            if key == "gapsl/leader_mask":  # per-client share of steps spent as a leader
                record["leader_freq"] = [round(float(f), 4) for f in torch.stack(values).mean(0)]
            else:
                record[key] = sum(values) / len(values)
        self._record = record
        return record

    def _has_global_model(self) -> bool:
        """Centralized, or FedAvg-family runs evaluated right after averaging."""
        algo = self.cfg.algorithm
        if self.full_model is not None or algo.name == "sl":
            return True
        if algo.name not in FEDAVG_ALGORITHMS or self.data.steps_per_epoch % self._round_steps:
            return False
        if algo.name == "locfedmix":  # averaged only every T_c rounds
            rounds = (self.current_epoch + 1) * self.data.steps_per_epoch // self._round_steps
            return fedavg_due(rounds - 1, algo.fedavg_interval)
        return True

    def on_train_epoch_end(self) -> None:
        record = self.epoch_record()
        if record is None:
            return
        self.history.append(record)
        every = self.cfg.trainer.ckpt_every
        if every and (self.current_epoch + 1) % every == 0:
            self.trainer.save_checkpoint(last_checkpoint(self.cfg.output_dir), weights_only=False)

    # -- checkpoints ----------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        counter = self.transport.counter
        checkpoint["split_state"] = {
            "identity": self._identity(),
            "rank": self.transport.layout.rank,
            "leader_ema": self.parties.leader_ema if self.parties else None,
            "bytes": [counter.bytes_up, counter.bytes_down],
            "sim_latency_s": self._sim_latency,
            "wall_s": self.elapsed(),
            "history": self.history,
            "epoch_stats": [self._epoch_losses, self._epoch_diag],
            "buffers": [b.state_dict() for b in self._act_buffers],
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
        if self.parties is not None or self.full_model is not None:
            self._restore_split_state(state)
        else:
            self._pending_state = state

    def _restore_split_state(self, state: dict) -> None:
        if self.parties is not None:
            self.parties.leader_ema = state["leader_ema"]
        self.transport.counter.bytes_up, self.transport.counter.bytes_down = state["bytes"]
        self._sim_latency = state["sim_latency_s"]
        self.wall_offset = state["wall_s"]
        self.history = list(state["history"])
        self._pending_epoch_stats = state.get("epoch_stats")
        for buffer, saved in zip(self._act_buffers, state.get("buffers", [])):
            buffer.load_state_dict(saved)

    def teardown(self, stage: str) -> None:
        if self.transport is not None:
            self.transport.close()
