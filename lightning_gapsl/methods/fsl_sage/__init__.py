"""FSL-SAGE (Nair et al.): each client's auxiliary model estimates the server's cut-layer
gradient, d CE(aux(z), y) / dz, and the client back-propagates that estimate; every q
steps the activations go up, the server steps on them and keeps the last `buffer_size`
samples per client; every l rounds it fits each client's auxiliary model so its
input-gradient matches the server's true cut-layer gradients on that buffer (MSE), and
sends it down. Client segments are averaged every round.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from lightning_gapsl.config import OptimConfig, check, choice
from lightning_gapsl.methods.auxiliary import AuxConfig, aux_exchange
from lightning_gapsl.methods.base import (
    Method,
    cut_shape,
    init_id,
    kept_module,
    seeded,
    split_state,
)
from lightning_gapsl.methods.configs import check_round_steps, local_pass_epoch
from lightning_gapsl.methods.exchange import Hooks
from lightning_gapsl.methods.fsl_sage.math import (
    ActivationBuffer,
    align_aux_,
    alignment_due,
    alignment_optimizer,
    aux_model_for,
    estimated_cut_grads,
    next_stage_aux,
    server_cut_grads,
)
from lightning_gapsl.methods.rounds import every_round_global, fedavg_clients_, segment_shapes
from lightning_gapsl.models import num_cut_choices
from lightning_gapsl.models.flat import flatten, load_flat_
from lightning_gapsl.models.stacked import StackedSegments
from lightning_gapsl.privacy.exposure import AUXILIARY
from lightning_gapsl.seeding import derive_seed, generator

AUX_MODELS = ("linear", "next_stage")


@dataclass(frozen=True)
class FslSageConfig(AuxConfig):
    name: str = "fsl_sage"
    """The method's registry name (``algorithm=``)."""
    align_interval: int = 1
    """Fit the clients' auxiliary models every l rounds."""
    align_when: str = "start"
    """start: at the start of rounds 0, l, 2l, ... after that step's upload and before any
    client update (the reference); end: after rounds l-1, 2l-1, ... (a variant kept for comparison)."""
    buffer_size: int = 1000
    """Activations kept per client on the server for the alignment."""
    align_epochs: int = 100
    """Epochs over the buffer per alignment (the reference: 100)."""
    align_batch: int | None = None
    """Alignment minibatch (null: the whole buffer, as the reference)."""
    align_lr: float = 0.001
    """Adam learning rate of the alignment."""
    align_optimizer: str = "persistent"
    """persistent: one Adam per client kept across alignments (the reference); fresh: a
    new Adam for every alignment."""
    aux_model: str = "linear"
    """linear: flatten (+ pooling for large activations) + one linear layer; next_stage:
    the reference's ResNet-18 auxiliary model, a freshly initialised copy of the server's
    next block + global average pool + linear (needs a server segment of >= 2 blocks)."""

    def validate(self, run) -> None:
        super().validate(run)
        for key in ("align_interval", "buffer_size", "align_epochs"):
            check(getattr(self, key) >= 1, f"algorithm.{key}={getattr(self, key)} must be >= 1")
        check(
            self.align_batch is None or self.align_batch >= 1,
            f"algorithm.align_batch={self.align_batch} must be >= 1 or null",
        )
        check(self.align_lr > 0, f"algorithm.align_lr={self.align_lr} must be > 0")
        choice("algorithm.align_when", self.align_when, ("start", "end"))
        choice("algorithm.align_optimizer", self.align_optimizer, ("persistent", "fresh"))
        choice("algorithm.aux_model", self.aux_model, AUX_MODELS)


def check_data(cfg, data) -> None:
    """Rounds divide the epoch; ``next_stage`` needs a server block to copy besides the
    classifier."""
    check_round_steps(cfg, data)
    blocks = num_cut_choices(cfg.model, data.dataset.input_shape, data.dataset.num_classes) + 1
    check(
        cfg.algorithm.aux_model != "next_stage" or blocks - cfg.model.cut_layer >= 2,
        f"algorithm.aux_model=next_stage copies the server's next block, but "
        f"model.cut_layer={cfg.model.cut_layer} leaves the server one block of {blocks} "
        f"({cfg.model.name}); use a cut of at most {blocks - 2} or algorithm.aux_model=linear",
    )


@dataclass
class FslSageState:
    """FSL-SAGE's own state: the estimators on both sides and the server's buffers."""

    client_shapes: dict[str, torch.Size]  # per-client segment parameter shapes
    estimators: StackedSegments | None = kept_module()  # hosted clients' (K, ...)
    server_estimators: nn.ModuleList | None = kept_module()  # the server's, one per client
    # The server's buffer of (activations, labels) per client, fitted on at alignment.
    buffers: list[ActivationBuffer] = field(default_factory=list)
    # client id -> the persistent alignment Adam (``align_optimizer=persistent``).
    align_optimizers: dict[int, torch.optim.Optimizer] = field(default_factory=dict)


def build(cfg, data, layout):
    state = split_state(cfg, data, layout)
    act, classes = cut_shape(cfg, data), data.dataset.num_classes

    def estimator(client_id: int) -> nn.Module:
        if cfg.algorithm.aux_model == "next_stage":
            return next_stage_aux(
                state.server,
                act,
                classes,
                init="fresh",
                seed=derive_seed(cfg.seed, "aux", init_id(cfg, client_id)),
            )
        return seeded(lambda: aux_model_for(act, classes), cfg.seed, "aux", init_id(cfg, client_id))

    own = FslSageState(segment_shapes(cfg, data))
    if layout.hosted:
        own.estimators = StackedSegments([estimator(c) for c in layout.hosted])
    if layout.is_server:  # the server's copy of every estimator starts equal to the client's
        own.server_estimators = nn.ModuleList([estimator(c) for c in range(data.num_clients)])
        own.buffers = [ActivationBuffer(cfg.algorithm.buffer_size) for _ in range(data.num_clients)]
    state.own = own
    return state


def _local_backward(state, acts, y):
    """The estimator's input-gradient of each client's own mean loss stands in for the
    server's cut-layer gradient."""
    estimate, losses = estimated_cut_grads(state.own.estimators, acts, y)
    acts.backward(estimate)  # (K, B, *F)
    return losses


def _buffer(state, acts, labels) -> None:
    for c, buffer in enumerate(state.own.buffers):
        if state.active is None or bool(state.active[c]):
            buffer.add(acts[c], labels[c])


def train_step(state, transport, step, x, y):
    return aux_exchange(
        state,
        transport,
        step,
        x,
        y,
        Hooks(
            local_backward=_local_backward,
            after_server_step=_buffer,
            before_client_update=_align_at_round_start,
        ),
    )


def _align(state, transport, step: int) -> None:
    """Fit every client's estimator to the server's true gradients; send it down."""
    algo, rows = state.cfg.algorithm, None
    if state.layout.is_server:
        server_aux = state.own.server_estimators
        for c, (model, buffer) in enumerate(zip(server_aux, state.own.buffers, strict=True)):
            if len(buffer):
                acts, labels = buffer.tensors()
                true = server_cut_grads(state.server, acts, labels)  # (M, *F)
                align_aux_(
                    model,
                    acts,
                    labels,
                    true,
                    epochs=algo.align_epochs,
                    lr=algo.align_lr,
                    batch_size=algo.align_batch,
                    generator=generator(state.seed, "fsl_sage", "align", step, c),
                    optimizer=_optimizer(state, c),
                )
        rows = [torch.stack([flatten(m.parameters()) for m in server_aux])]  # (N, P_aux)
    mine = transport.scatter(step, "aux_models", rows)
    estimators = state.own.estimators
    if estimators is not None:
        for k in range(estimators.num_segments):
            load_flat_([p[k] for p in estimators.stacked_params().values()], mine[0][k])


def _optimizer(state, client_id: int):
    """The persistent alignment Adam of one client's estimator (None: a fresh one)."""
    algo = state.cfg.algorithm
    if algo.align_optimizer != "persistent":
        return None
    optimizers = state.own.align_optimizers
    if client_id not in optimizers:
        model = state.own.server_estimators[client_id]
        optimizers[client_id] = alignment_optimizer(model, algo.align_lr)
    return optimizers[client_id]


def _align_at_round_start(state, transport, step) -> None:
    algo = state.cfg.algorithm
    sched = state.schedule
    if (
        algo.align_when == "start"
        and sched.round_start
        and alignment_due(sched.round_index, algo.align_interval, when="start")
    ):
        _align(state, transport, step)


def after_step(state, transport, step) -> None:
    if not state.schedule.round_end:
        return
    fedavg_clients_(state, state.clients, state.own.client_shapes, transport)
    algo = state.cfg.algorithm
    if algo.align_when == "end" and alignment_due(
        state.schedule.round_index, algo.align_interval, when="end"
    ):
        _align(state, transport, step)


def state_dict(state) -> dict:
    optimizers = state.own.align_optimizers
    return {
        "buffers": [b.state_dict() for b in state.own.buffers],
        "align_optimizers": {c: o.state_dict() for c, o in optimizers.items()},
    }


def load_state_dict(state, saved: dict) -> None:
    for buffer, entry in zip(state.own.buffers, saved["buffers"], strict=False):
        buffer.load_state_dict(entry)
    for client_id, entry in saved.get("align_optimizers", {}).items():
        _optimizer(state, int(client_id)).load_state_dict(entry)


# What reaches the server (docs/explanations/privacy.md, exposure flags).
EXPOSURE = AUXILIARY
# The optimizer this method runs with unless optim=sgd|adam or optim.* is given:
# chosen by the tuning grid on validation, point adam1e-3_q1_l1 of
# experiments/results/tune_mnist20_dir01/chosen.yaml.
TUNED_OPTIM = OptimConfig("adam", lr=0.001, momentum=0.0, weight_decay=0.0)

METHOD = Method(
    "fsl_sage",
    FslSageConfig,
    build,
    train_step,
    after_step=after_step,
    global_model=every_round_global,
    state_dict=state_dict,
    load_state_dict=load_state_dict,
    epoch_steps=local_pass_epoch,
    participation="round",
    optim=TUNED_OPTIM,
    exposure=EXPOSURE,
    check_data=check_data,
)
