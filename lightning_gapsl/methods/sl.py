"""Sequential split learning (SL): one client segment travels from client to client.

With whole-epoch turns (``algorithm.turns=epoch``, the default, as SplitFed's
SL_ResNet_HAM10000.py): a round (= an epoch) gives each client in turn, in a new
random order every round, one pass over its own data with the segment; the server
steps after every batch; the segment (with its SGD momentum) then goes to the next
client. With one-batch turns (``turns=batch``): each step every client in id order
trains on one batch and passes the segment on (client N-1 hands it to client 0 of the
next step); under partial participation only the step's delivering clients take turns,
in id order, and the segment goes from the last client that trained to the next one.
Whole-epoch turns with partial participation are refused (a round's length would depend
on the draw). Every rank walks the same schedule, so ranks stay in lockstep; each client
rank holds one physical copy of the segment (a stack of one), current whenever one of
its clients has the turn.

Traffic counted per turn: activations + labels up, the gradient down, and the
segment's P parameters at each hand-off (counted once up and once down: it leaves one
client and reaches another), whether or not the two clients share a process.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lightning_gapsl.config import OptimConfig, check
from lightning_gapsl.latency import TRAIN_FLOPS_PER_FORWARD
from lightning_gapsl.methods.base import (
    Method,
    RankState,
    StepCost,
    StepOutput,
    broadcast_server,
    model_args,
    step_weights,
)
from lightning_gapsl.methods.configs import TurnConfig, check_turns_participation, turn_epoch
from lightning_gapsl.methods.exchange import one_client_exchange
from lightning_gapsl.models.flat import flatten, load_flat_
from lightning_gapsl.models.split import build_client_segment, build_server_segment
from lightning_gapsl.models.stacked import StackedSegments
from lightning_gapsl.privacy.exposure import PSL_FAMILY
from lightning_gapsl.schedule import StepSchedule


@dataclass(frozen=True)
class SlConfig(TurnConfig):
    name: str = "sl"
    """The method's registry name (``algorithm=``)."""

    def validate(self, run) -> None:
        self.validate_turns(run)
        check(
            run.optim.name == "sgd",
            "algorithm=sl hands the segment on with its SGD momentum; use optim=sgd",
        )
        check_turns_participation(self, run)


@dataclass
class SlState:
    segment_numel: int  # parameters of the travelling segment (its hand-off's bytes / 4)
    # Any step's schedule, the same on every rank: who held the segment last (a resumed
    # run finds it again without keeping it in the checkpoint).
    schedules: StepSchedule


def build(cfg, data, layout):
    args = model_args(cfg, data)
    segment = build_client_segment(*args, cfg.seed, 0)  # the travelling segment's start
    server = build_server_segment(*args, cfg.seed)
    # One physical copy per client rank, current whenever one of its clients has the turn.
    clients = StackedSegments([segment]) if layout.hosted else None
    state = RankState(cfg, data, layout, clients, server, server)
    state.own = SlState(sum(p.numel() for p in segment.parameters()), StepSchedule(METHOD, state))
    return state


def _holder_before(state, step: int) -> int | None:
    """One-batch turns: the client holding the segment when ``step`` starts, the last one
    that trained before it; None before anyone has (every rank holds the shared start)."""
    for earlier in range(step - 1, -1, -1):
        active = state.own.schedules.at(earlier, torch.device("cpu")).active  # (N,) or None
        if active is None:
            return state.layout.num_clients - 1  # every client trained, in id order
        if bool(active.any()):
            return int(active.nonzero().max())
    return None


def _state_vector(state) -> torch.Tensor:
    """Parameters and SGD momentum of the travelling segment, flat (2P,)."""
    params = list(state.clients.parameters())
    opt_state = state.client_opt.state
    moments = [opt_state.get(p, {}).get("momentum_buffer") for p in params]
    return flatten(
        params
        + [
            m if m is not None else torch.zeros_like(p)
            for m, p in zip(moments, params, strict=False)
        ]
    )


def _load_state_vector(state, flat: torch.Tensor) -> None:
    params = list(state.clients.parameters())
    offset = load_flat_(params, flat)
    for p in params:
        buf = flat[offset : offset + p.numel()].view_as(p).clone()
        state.client_opt.state.setdefault(p, {})["momentum_buffer"] = buf
        offset += p.numel()


def _hand_off(state, transport, step: int, giver: int, taker: int) -> None:
    """The segment goes from client ``giver`` to client ``taker``, relayed if needed."""
    layout = state.layout
    giver_rank, taker_rank = layout.rank_of(giver), layout.rank_of(taker)
    rows = [_state_vector(state)] if layout.rank == giver_rank else None
    got = transport.client_to_client(
        step, "sl_handoff", giver, taker, rows, counted_bytes=4 * state.own.segment_numel
    )
    if giver_rank != taker_rank and layout.rank == taker_rank:
        _load_state_vector(state, got[0])


def train_step(state, transport, step, x, y):
    """Whole-epoch turns: this step's client; one-batch turns: every client in id order.
    x (K, B, ...), y (K, B) hosted batches."""
    n = state.layout.num_clients
    losses = torch.zeros(n) if state.layout.is_server else None

    def turn(client: int) -> None:
        loss = one_client_exchange(
            state, transport, step, client, x, y, 0, lambda: state.client_opt.step(), "sl"
        )
        if loss is not None:
            losses[client] = loss

    if state.turns is not None:
        client = state.turns.at(step)[1]
        if step > 0 and (giver := state.turns.at(step - 1)[1]) != client:
            _hand_off(state, transport, step, giver, client)
        turn(client)
    else:
        giver = _holder_before(state, step)  # None: c starts from the shared initialisation
        for c in range(n):
            if state.active is not None and not bool(state.active[c]):
                continue  # not delivering this step: computes and sends nothing
            if giver is not None and giver != c:
                _hand_off(state, transport, step, giver, c)
            turn(c)
            giver = c
    if losses is None:
        return StepOutput(None, None)
    return StepOutput(float((losses * step_weights(state).cpu()).sum()), losses)


def _holder(state, epoch: int) -> int:
    """The client holding the segment when ``epoch`` (0-based) ends: the last turn's."""
    if state.turns is None:
        holder = _holder_before(state, (epoch + 1) * state.data.steps_per_epoch)
        return 0 if holder is None else holder  # nobody trained: every copy is the start
    return state.turns.at((epoch + 1) * state.data.steps_per_epoch - 1)[1]


def before_eval(state, transport, epoch: int) -> None:
    """Every rank gets the current segment (from its holder's rank), then the server."""
    layout = state.layout
    last = _holder(state, epoch)
    step = -1 - epoch
    rows = [_state_vector(state)] if layout.rank == layout.rank_of(last) else None
    got = transport.to_server(step, "sl_share", last, rows, count=False)
    numel = state.own.segment_numel
    flat = got[0] if layout.is_server else torch.zeros(2 * numel, device=transport.device)
    transport.broadcast_(flat)
    if state.clients is not None and layout.rank != layout.rank_of(last):
        _load_state_vector(state, flat)
    broadcast_server(state, transport, epoch)


def cost(state, client_flops: float, server_flops: float) -> StepCost:
    """Turns, not parallel: per turn one client's batch on both segments (a step is
    every client's turn with one-batch turns, one client's with whole-epoch turns)."""
    b = state.data.batch_size
    return StepCost(
        TRAIN_FLOPS_PER_FORWARD * client_flops * b,
        TRAIN_FLOPS_PER_FORWARD * server_flops * b,
        sequential=True,
    )


# What reaches the server (docs/explanations/privacy.md, exposure flags).
EXPOSURE = {
    **PSL_FAMILY,
    "cut_gradient": "own",
    "client_weights": "handed on between clients (not through the server)",
}
# The optimizer this method runs with unless optim=sgd|adam or optim.* is given:
# chosen by the tuning grid on validation, point sgd0.1_m0 of
# experiments/results/tune_mnist20_dir01/chosen.yaml.
# The best point of the reference regime; the grid chose sgd0.05_batch_turns,
# which changes the regime (README, tuned comparison).
TUNED_OPTIM = OptimConfig("sgd", lr=0.1, momentum=0.0, weight_decay=0.0)

METHOD = Method(
    "sl",
    SlConfig,
    build,
    train_step,
    before_eval=before_eval,
    cost=cost,
    global_model=lambda state, epoch: True,
    epoch_steps=turn_epoch,
    participation="step",
    optim=TUNED_OPTIM,
    exposure=EXPOSURE,
)
