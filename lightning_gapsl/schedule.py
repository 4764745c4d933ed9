"""The round/turn schedule: who computes in a step and where it sits in its round.

One object, owned by the runtime, decides for every method, so no method recomputes a
round boundary or a participation draw: whole-epoch turns (SL, SplitFed V2), local-pass
rounds (idle clients once their data is used), lockstep rounds of ``round_steps``, and
partial participation (a seeded draw per step or per round, minus clients offline in
the availability trace, dropouts and clients slower than the deadline). The step's
`Schedule` (`methods.base`) is handed to the method through ``state.schedule``; the
hooks read ``state.active``, ``state.participants`` and ``state.schedule.round_end``
and never branch on a method's name.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lightning_gapsl.data.participation import Draws, participant_count
from lightning_gapsl.device_trace import load_trace
from lightning_gapsl.data.rounds import active_clients
from lightning_gapsl.methods.base import Method, RankState, Schedule, draw_compute_seconds


@dataclass
class Participation:
    """One epoch's participation counts (summary.json ``participation``)."""

    participants: int = 0  # clients drawn, counted once per draw (round or step)
    dropped_dropout: int = 0
    dropped_deadline: int = 0
    dropped_unavailable: int = 0  # outside their availability windows (latency.trace)
    samples: int = 0  # samples trained on by delivering, active clients

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


class StepSchedule:
    """Builds each step's `Schedule` for a method's `RankState`."""

    def __init__(self, method: Method, state: RankState) -> None:
        self.state = state
        self.round_steps = state.round_steps
        self.draws = participation_draws(method, state)

    def at(self, step: int, device: torch.device, counts: Participation | None = None) -> Schedule:
        """Step ``step``'s schedule (tensors on ``device``); adds the draw to ``counts``."""
        state = self.state
        if state.turns is not None:  # whole-epoch turns: whose turn it is
            active = state.turns.active(step)
        elif state.round_len is not None:  # local-pass rounds: who still has data
            active = active_clients(
                step % state.round_len, state.data.client_sizes, state.data.batch_size
            )
        else:  # every client every step (participation may narrow it below)
            active = None
        participants = None
        if self.draws is not None:
            participants, active = self._take_part(step, active, counts)
        r = self.round_steps
        return Schedule(
            step=step,
            active=None if active is None else active.to(device),
            participants=None if participants is None else participants.to(device),
            round_index=step // r,
            round_start=step % r == 0,
            round_end=(step + 1) % r == 0,
        )

    def _take_part(
        self, step: int, active: torch.Tensor | None, counts: Participation | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(who delivers, who trains now) under partial participation, both (N,) bool."""
        draw = self.draws.draw(step)  # (N,) bool masks
        delivering = draw.delivering
        training = delivering if active is None else active.cpu() & delivering
        if counts is not None:
            if self.draws.first_step(step):  # counted once per draw (round or step)
                counts.participants += int(draw.participants.sum())
                counts.dropped_dropout += int(draw.dropped.sum())
                counts.dropped_deadline += int(draw.late.sum())
                counts.dropped_unavailable += int(draw.offline.sum())
            counts.samples += int(training.sum()) * self.state.data.batch_size
        return delivering, training


def participation_draws(method: Method, state: RankState) -> Draws | None:
    """The seeded participation draws, or None with everyone always taking part."""
    p, n = state.cfg.participation, state.data.num_clients
    windows = availability(state.cfg.latency.trace, n)
    if not p.partial and windows is None:
        return None
    per = 1 if method.participation == "step" else state.round_steps
    times = draw_compute_seconds(method, state) if p.deadline_s else None
    return Draws(
        state.cfg.seed,
        n,
        participant_count(n, p.fraction, p.clients),
        per,
        p.dropout,
        p.deadline_s,
        times,
        windows,
    )


def availability(trace: str | None, num_clients: int) -> tuple | None:
    """The trace's availability windows per client, or None when every client is
    always online (no trace, or one without windows: no draws are needed for it)."""
    if trace is None:
        return None
    loaded = load_trace(trace, num_clients)
    return loaded.available if loaded.has_windows else None
