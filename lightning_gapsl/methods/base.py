"""The method protocol: what every `algorithm=` key provides, and the state it runs on.

A method is a `Method` record of small functions (torchtitan's train specs, Flower's
`Strategy`): its typed config, what each rank builds, its training step, what happens
after a step (FedAvg at a round's end, estimator fitting), what happens before an
evaluation, its cost model for the latency simulation, whether a single global model
exists, and its checkpoint state. The runtime (`module.py`) calls these and never
branches on a method's name; `methods/__init__.py` is the one registry.

Everything a method builds lives in one `RankState`: the hosted clients' stacked
segments, the server segment, the optimizers, the runtime's `Schedule` for this step,
and ``own``: the method's typed state (a dataclass of its own: decoders, auxiliary
models, buffers, GAPSL's leader EMA). Module fields of ``own`` declared with
`client_module` are trained by the client optimizer, `kept_module` ones by nobody of
ours; both are registered with Lightning (device moves, checkpoints) under the field's
name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
from torch import nn

from lightning_gapsl.config import OptimConfig, RunConfig
from lightning_gapsl.data.rounds import Turns
from lightning_gapsl.federated import FederatedData
from lightning_gapsl.latency import TRAIN_FLOPS_PER_FORWARD
from lightning_gapsl.layout import Layout
from lightning_gapsl.methods.configs import turn_schedule
from lightning_gapsl.methods.shared.losses import client_loss_weights
from lightning_gapsl.models.flat import flatten, load_flat_
from lightning_gapsl.models.split import build_client_segment, build_server_segment
from lightning_gapsl.models.stacked import StackedSegments, masked_step_
from lightning_gapsl.models.stacked_adam import StackedAdam
from lightning_gapsl.seeding import derive_seed
from lightning_gapsl.transport import Transport


def client_module() -> Any:
    """A field of a method's state holding a module the client optimizer trains beside
    the segments (LocFedMix's decoders, CSE-FSL's heads); None where the rank hosts none."""
    return field(default=None, metadata={"trained_by": "client"})


def kept_module() -> Any:
    """A field holding a module the method keeps but no optimizer of ours trains
    (FSL-SAGE's estimators: fitted by its own alignment)."""
    return field(default=None, metadata={"trained_by": None})


def own_modules(own: Any, client_trained: bool = False) -> dict[str, nn.Module]:
    """The module fields of a method's state ``own``, by field name, in declaration
    order; ``client_trained``: only the `client_module` fields."""
    if own is None:
        return {}
    return {
        f.name: getattr(own, f.name)
        for f in dataclasses.fields(own)
        if isinstance(getattr(own, f.name), nn.Module)
        and (not client_trained or f.metadata.get("trained_by") == "client")
    }


@dataclass(frozen=True)
class Schedule:
    """What the runtime decided for one step (`lightning_gapsl.schedule`): the step, who
    trains in it, who delivers, and where it sits in the averaging round."""

    step: int  # global step number
    # (N,) bool: the clients that compute in this step (whole-epoch turns, local-pass
    # rounds, partial participation); None: every client.
    active: torch.Tensor | None = None
    # (N,) bool: the clients that deliver in this round (averaging methods) or step (PSL
    # family) under partial participation; None: every client.
    participants: torch.Tensor | None = None
    round_index: int = 0  # the averaging round (steps // round_steps)
    round_start: bool = True  # first step of its round
    round_end: bool = True  # last step of its round (the averaging methods average now)


@dataclass
class RankState:
    """The models, optimizers and method state that live on this rank."""

    cfg: RunConfig
    data: FederatedData
    layout: Layout
    clients: StackedSegments | None  # hosted clients' segments, params (K, ...)
    server: nn.Module | None  # trained server segment (SplitFed V1: stacked copies)
    eval_server: nn.Module  # the single server segment clients evaluate with
    # The method's own typed state (a dataclass; see `client_module`, `kept_module`):
    # what is not a module is checkpointed through the method's `state_dict`.
    own: Any = None
    client_opt: torch.optim.Optimizer | None = None
    server_opt: torch.optim.Optimizer | None = None  # server rank only
    step_diagnostics: dict = field(default_factory=dict)  # name -> float or (N,) tensor
    loss_weights: torch.Tensor | None = None  # (N,) n_i / n, the server's loss weights
    schedule: Schedule = field(default_factory=lambda: Schedule(0))  # set every step

    @property
    def active(self) -> torch.Tensor | None:
        """(N,) bool: the clients that compute in this step; None: every client."""
        return self.schedule.active

    @property
    def participants(self) -> torch.Tensor | None:
        """(N,) bool: the clients that deliver (partial participation); None: every one."""
        return self.schedule.participants

    @property
    def seed(self) -> int:
        return self.cfg.seed

    @property
    def total_steps(self) -> int:
        return self.data.steps_per_epoch * self.cfg.trainer.max_epochs

    @cached_property
    def turns(self) -> Turns | None:
        """Whole-epoch turns (SL, SplitFed V2 with ``algorithm.turns=epoch``); else None."""
        return turn_schedule(self.cfg, self.data.client_sizes, self.data.batch_size)

    @property
    def round_len(self) -> int | None:
        """Local-pass rounds: steps per round (= per epoch); None: lockstep rounds."""
        if self.turns is None and getattr(self.cfg.algorithm, "rounds", None) == "local_pass":
            return self.data.steps_per_epoch
        return None

    @property
    def round_steps(self) -> int:
        """Steps per round for the averaging methods (default: one epoch)."""
        return getattr(self.cfg.algorithm, "round_steps", None) or self.data.steps_per_epoch

    def modules(self) -> dict[str, nn.Module]:
        """Every module on this rank, by a stable name (registered by the LightningModule)."""
        named = {
            "clients": self.clients,
            "server": self.server,
            "eval_server": self.eval_server,
            **own_modules(self.own),
        }
        return {k: v for k, v in named.items() if v is not None}


@dataclass
class StepOutput:
    loss: float | None  # server loss (server rank only)
    client_losses: torch.Tensor | None  # (N,) per-client mean CE (server rank only)


@dataclass(frozen=True)
class StepCost:
    """Training FLOPs of one step for the latency model (`lightning_gapsl.latency`)."""

    client: float  # what one client computes in the step
    server: float  # what the server computes in the step (sequential: per client turn)
    sequential: bool = False  # clients take turns (SL) instead of running in parallel


def parallel_cost(state: RankState, client_flops: float, server_flops: float) -> StepCost:
    """Every client trains its segment on B samples; the server its segment on N * B."""
    b, n = state.data.batch_size, state.data.num_clients
    return StepCost(
        TRAIN_FLOPS_PER_FORWARD * client_flops * b, TRAIN_FLOPS_PER_FORWARD * (server_flops * n) * b
    )


def broadcast_server(state: RankState, transport: Transport, epoch: int) -> None:
    """Client ranks evaluate their clients locally with a copy of the server segment."""
    if not any(True for _ in state.eval_server.parameters()):
        return
    flat = flatten(state.eval_server.parameters())
    transport.broadcast_(flat)
    load_flat_(state.eval_server.parameters(), flat)


@dataclass(frozen=True)
class Method:
    """One `algorithm=` key: its config and the functions the runtime calls."""

    name: str
    config: type  # the method's config dataclass (validated by its ``validate(run_cfg)``)
    build: Callable[[RunConfig, FederatedData, Layout], RankState]
    train_step: Callable[[RankState, Transport, int, torch.Tensor, torch.Tensor], StepOutput]
    # After every step (FedAvg at a round's end, FSL-SAGE's fitting); None: nothing.
    after_step: Callable[[RankState, Transport, int], None] | None = None
    # Before every evaluation: give client ranks the server weights they evaluate with.
    before_eval: Callable[[RankState, Transport, int], None] | None = None  # set below
    # (state, client forward FLOPs/sample, server forward FLOPs/sample) -> a step's cost.
    cost: Callable[[RankState, float, float], StepCost] | None = None  # set below
    # Whether, after ``epoch`` (0-based) ends, every client holds the same model.
    global_model: Callable[[RankState, int], bool] | None = None
    server_lr: Callable[[RunConfig, FederatedData], float] | None = None
    # The server's per-client loss weights (N,); None: data-size weights n_i / n.
    loss_weights: Callable[[RunConfig, FederatedData], torch.Tensor] | None = None
    state_dict: Callable[[RankState], dict] | None = None
    load_state_dict: Callable[[RankState, dict], None] | None = None
    # One "client" holding the pooled data (centralized), whatever data.num_clients says.
    pools_data: bool = False
    # Partial participation: "step" (a new subset every step, the PSL family) or "round"
    # (one subset per FedAvg round); None: not supported, refused at start-up.
    participation: str | None = None
    # (cfg, client sizes (N,), batch size) -> steps per epoch; None or returning None:
    # ceil(train samples / (N * B)). Local-pass rounds: one round.
    epoch_steps: Callable[[RunConfig, torch.Tensor, int], int | None] | None = None
    # The optimizer the method runs with unless ``optim=sgd|adam`` or ``optim.*`` is given
    # (its tuned choice); None: the `OptimConfig` defaults.
    optim: OptimConfig | None = None
    # Checks that need the loaded data (a cut that leaves too few server blocks, a round
    # that does not divide the epoch, image-only parts): ConfigError naming the key.
    check_data: Callable[[RunConfig, FederatedData], None] | None = None
    # What reaches the server (`lightning_gapsl.privacy.exposure`): required by the
    # leakage evaluation; None: not declared.
    exposure: dict | None = None


# --------------------------------------------------------------------- construction


def model_args(cfg: RunConfig, data: FederatedData) -> tuple[Any, tuple[int, ...], int, int]:
    """(model config, sample shape, classes, client blocks): what builds a segment."""
    ds = data.dataset
    return cfg.model, ds.input_shape, ds.num_classes, cfg.model.cut_layer


def seeded(make: Callable[[], nn.Module], seed: int, *key) -> nn.Module:
    """Build a module under its own seed without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, *key))
        return make()


def cut_shape(cfg: RunConfig, data: FederatedData) -> tuple[int, ...]:
    """Per-sample shape of the cut-layer activations."""
    name, shape, classes, cut = model_args(cfg, data)
    client = build_client_segment(name, shape, classes, cut, cfg.seed, 0)
    with torch.no_grad():
        return tuple(client(torch.zeros(1, *shape)).shape[1:])


def shared_init(cfg: RunConfig) -> bool:
    """``model.client_init=shared`` (default): every client segment, auxiliary model and
    decoder starts as a copy of one model initialised from the run seed (client id 0's
    initialisation), as deployed split learning does; ``independent``: from (seed, id)."""
    return cfg.model.client_init == "shared"


def init_id(cfg: RunConfig, client_id: int) -> int:
    """The id whose seeded initialisation client ``client_id`` starts from."""
    return 0 if shared_init(cfg) else client_id


def split_state(cfg: RunConfig, data: FederatedData, layout: Layout) -> RankState:
    """Hosted client segments and the server segment, as every split method starts."""
    name, shape, classes, cut = model_args(cfg, data)
    clients = None
    if layout.hosted:
        clients = StackedSegments(
            [
                build_client_segment(name, shape, classes, cut, cfg.seed, init_id(cfg, c))
                for c in layout.hosted
            ],
            mode=cfg.model.client_exec,
        )
    server = build_server_segment(name, shape, classes, cut, cfg.seed)
    return RankState(cfg, data, layout, clients, server, server)


def step_weights(state: RankState) -> torch.Tensor:
    """(N,) the server's loss weights this step: idle clients (local-pass rounds) weigh
    0 and the active ones are renormalised to sum to 1."""
    if state.active is None:
        return state.loss_weights
    w = state.loss_weights * state.active.to(state.loss_weights)
    return w / w.sum()


def fedavg_weights(state: RankState) -> torch.Tensor:
    """(N,) float64 FedAvg weights: data sizes, zero for clients that did not deliver this
    round (partial participation), so the average is over participants, size-weighted."""
    sizes = state.data.client_sizes
    if state.participants is None:
        return sizes
    return sizes * state.participants.cpu().to(sizes)


def hosted_active(state: RankState) -> torch.Tensor | None:
    """(K,) bool for this rank's clients, or None when every client steps every step."""
    if state.active is None or state.clients is None:
        return None
    return state.active[state.layout.hosted].to(torch.bool)


def client_forward(state: RankState, x: torch.Tensor) -> torch.Tensor:
    """Hosted clients' segments on x (K, B, ...) -> (K, B, *F); under partial
    participation only the delivering clients compute (loop mode), idle rows are zeros."""
    if state.participants is None:
        return state.clients(x)
    return state.clients(x, active=hosted_active(state).cpu())


def client_step(state: RankState) -> None:
    """The client optimizer's step; idle clients (local-pass rounds) are left untouched,
    momentum and Adam moments included."""
    active = hosted_active(state)
    if active is None:
        state.client_opt.step()
    else:
        masked_step_(state.client_opt, active.cpu())


def make_optimizer(
    params, cfg: OptimConfig, lr: float | None = None, stacked: bool = False
) -> torch.optim.Optimizer:
    """One optimizer per party; elementwise rules, so a stacked one is K independent ones
    (``stacked``: parameters (K, ...); Adam then keeps a step count per client)."""
    params, lr = list(params), cfg.lr if lr is None else lr
    if cfg.name == "adam" and stacked:
        return StackedAdam(params, lr=lr, weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def make_optimizers(
    method: Method, state: RankState, device: torch.device
) -> list[torch.optim.Optimizer]:
    """The client optimizer (segments + client-trained extras) and the server's.

    Called once the modules sit on ``device`` (Lightning moves them after ``setup``).
    """
    optim = state.cfg.optim
    weights = (
        method.loss_weights(state.cfg, state.data)
        if method.loss_weights
        else client_loss_weights(state.data.client_sizes)
    )
    state.loss_weights = weights.to(device)
    if state.clients is not None:
        params = list(state.clients.parameters())
        for extra in own_modules(state.own, client_trained=True).values():
            params += list(extra.parameters())
        state.client_opt = make_optimizer(params, optim, stacked=True)
    server_params = list(state.server.parameters()) if state.server is not None else []
    if state.layout.is_server and server_params:
        lr = method.server_lr(state.cfg, state.data) if method.server_lr else optim.lr
        state.server_opt = make_optimizer(
            server_params, optim, lr, stacked=isinstance(state.server, StackedSegments)
        )
    return [o for o in (state.client_opt, state.server_opt) if o is not None]


# --------------------------------------------------------------------- shared step parts


def report_client_losses(
    state: RankState, transport: Transport, step: int, hosted_losses: torch.Tensor | None
) -> StepOutput:
    """Methods whose clients compute their own loss: per-client losses (K,) go to the
    server as telemetry (not counted as communication), which reports their size-weighted
    sum like every other method."""
    rows = [hosted_losses.view(-1, 1)] if hosted_losses is not None else []
    received = transport.gather(step, "losses", rows, count=False)
    if not state.layout.is_server:
        return StepOutput(None, None)
    all_losses = received[0].view(-1)  # (N,)
    return StepOutput(float((all_losses * step_weights(state)).sum()), all_losses)


def to_device(obj: Any, device: torch.device) -> Any:
    """``obj`` with every tensor in it (through dicts, lists and tuples) on ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


def load_method_state(method: Method, state: RankState, saved: dict, device: torch.device) -> None:
    """Give the method its checkpointed state on the device its modules sit on:
    checkpoints load to the CPU, and a GPU run's first step would otherwise mix devices
    (GAPSL's leader EMA, FSL-SAGE's activation buffers)."""
    if method.load_state_dict is not None:
        method.load_state_dict(state, to_device(saved, device))


def with_defaults(method: Method) -> Method:
    """Fill the hooks every split method shares unless it brings its own."""
    return dataclasses.replace(
        method,
        before_eval=method.before_eval or broadcast_server,
        cost=method.cost or parallel_cost,
    )


def step_cost(method: Method, state: RankState) -> StepCost:
    """The method's `StepCost` from FLOPs counted once on fresh segments."""
    from lightning_gapsl.latency import forward_flops

    cfg = state.cfg
    name, shape, classes, cut = model_args(cfg, state.data)
    client = build_client_segment(name, shape, classes, cut, cfg.seed, 0)
    server = build_server_segment(name, shape, classes, cut, cfg.seed)
    with torch.no_grad():
        cut_shape = client(torch.zeros(1, *shape)).shape[1:]
    return method.cost(state, forward_flops(client, shape), forward_flops(server, cut_shape))


def draw_compute_seconds(method: Method, state: RankState) -> torch.Tensor:
    """(N,) float64 simulated compute seconds of each client in one participation draw
    (the deadline's measure): a step's FLOPs / its speed, times the steps it trains in a
    round for the averaging methods (local pass: ceil(n_i / B); lockstep: round_steps)."""
    from lightning_gapsl.data.rounds import local_steps
    from lightning_gapsl.latency import client_devices

    cfg, n = state.cfg, state.data.num_clients
    speeds = client_devices(cfg.latency, n, cfg.seed).flops  # (N,)
    per_step = step_cost(method, state).client / speeds  # (N,)
    if method.participation != "round":
        return per_step
    if state.round_len is not None:
        steps = local_steps(state.data.client_sizes.to(torch.int64), state.data.batch_size)
        return per_step * steps.to(per_step)
    return per_step * state.round_steps


def step_latency_model(method: Method, state: RankState) -> Callable[..., float]:
    """(bytes up, bytes down[, active clients]) of a step -> its simulated seconds
    (`lightning_gapsl.latency`), from the method's cost model on FLOPs counted once."""
    from lightning_gapsl.latency import (
        client_devices,
        parallel_step_latency,
        sequential_step_latency,
    )

    cfg, n = state.cfg, state.data.num_clients
    cost, devices = step_cost(method, state), client_devices(cfg.latency, n, cfg.seed)
    latency = sequential_step_latency if cost.sequential else parallel_step_latency

    def step_latency(up: int, down: int, active: torch.Tensor | None = None) -> float:
        """``active`` (N,) bool: the clients that took part (local-pass rounds, turns);
        idle clients neither compute nor send, and the server serves only the active
        ones (the parallel cost counts the server's work for all N clients)."""
        part = devices if active is None else devices.of(active.cpu())  # k clients
        k = part.flops.numel()
        server = cost.server if cost.sequential else cost.server * k / n
        return latency(cfg.latency, part, cost.client, server, up / k, down / k)

    return step_latency
