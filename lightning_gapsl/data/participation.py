"""Partial participation: which clients take part in a round or step, and who drops out.

Pure functions of ``(seed, index)`` and client counts, never of the rank, so every
process layout draws the same clients. ``index`` is the step for the
PSL family (a new subset every step) and the round for the averaging methods (one
subset per FedAvg round).

* `participant_count`: how many of the N clients a fraction or a count asks for
  (Flower's ``fraction_fit``: ``floor(fraction * N)``, at least one).
* `sample_participants`: a seeded draw of exactly that many clients, as an ``(N,)`` mask.
* `dropouts`: each participant independently fails to deliver with probability ``p``.
* `past_deadline`: participants whose simulated step time exceeds the deadline.
* `online`: clients whose availability windows (``latency.trace``) cover the draw.

The runtime combines them (`Draw`): ``delivering = participants & ~offline & ~dropped &
~late``; clients outside ``delivering`` compute and send nothing and keep their
optimizer state. Participants are drawn from all N whether online or not (the server
picks without knowing who is offline, as it cannot know who will drop out), so a trace
whose clients are always online draws exactly what a run without one draws.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from lightning_gapsl.seeding import generator

__all__ = [
    "Draw",
    "Draws",
    "covers",
    "dropouts",
    "online",
    "participant_count",
    "past_deadline",
    "sample_participants",
]

Windows = Sequence[tuple[int, int]]  # half-open [start, end) windows of training steps


def participant_count(num_clients: int, fraction: float = 1.0, clients: int | None = None) -> int:
    """Clients per round or step: ``clients`` if given, else ``max(1, floor(fraction * N))``.

    ``floor`` on a value rounded to 9 decimals, so ``0.3 * 10`` gives 3, not 2.

    Raises:
        ValueError: naming ``participation.fraction`` unless ``0 < fraction <= 1``, and
            ``participation.clients`` unless ``1 <= clients <= num_clients``.
    """
    if clients is not None:
        if not 1 <= clients <= num_clients:
            raise ValueError(
                f"participation.clients={clients} must be in [1, data.num_clients={num_clients}]"
            )
        return clients
    if not 0 < fraction <= 1:
        raise ValueError(f"participation.fraction={fraction} must be in (0, 1]")
    return max(1, math.floor(round(fraction * num_clients, 9)))


def sample_participants(seed: int, index: int, num_clients: int, count: int) -> Tensor:
    """Bool ``(N,)``: ``count`` clients drawn without replacement for round/step ``index``.

    The first ``count`` entries of a permutation from the generator
    ``(seed, "participation", index)``; all N clients (no draw) when ``count == N``, so full
    participation consumes no randomness and changes nothing.
    """
    if not 1 <= count <= num_clients:
        raise ValueError(f"count must be in [1, {num_clients}], got {count}")
    mask = torch.zeros(num_clients, dtype=torch.bool)
    if count == num_clients:
        return mask.fill_(True)
    perm = torch.randperm(num_clients, generator=generator(seed, "participation", index))  # (N,)
    mask[perm[:count]] = True
    return mask


def dropouts(seed: int, index: int, participants: Tensor, p: float) -> Tensor:
    """Bool ``(N,)``: the participants that fail to deliver at round/step ``index``.

    One uniform draw per client (all N, from the generator ``(seed, "dropout", index)``,
    so a client's fate does not depend on who else takes part); client ``i`` drops when
    it participates and its draw is below ``p``. ``p = 0`` draws nothing.
    """
    if not 0 <= p < 1:
        raise ValueError(f"participation.dropout={p} must be in [0, 1)")
    if p == 0:
        return torch.zeros_like(participants, dtype=torch.bool)
    u = torch.rand(participants.shape[0], generator=generator(seed, "dropout", index))  # (N,)
    return participants.to(torch.bool) & (u < p)


def past_deadline(times_s: Tensor, participants: Tensor, deadline_s: float | None) -> Tensor:
    """Bool ``(N,)``: participants whose simulated step time ``times_s`` (N,) exceeds
    ``deadline_s`` (None: no deadline, nobody is late). A time equal to it is in time."""
    late = torch.zeros_like(participants, dtype=torch.bool)
    if deadline_s is None:
        return late
    return participants.to(torch.bool) & (times_s.to(torch.float64) > deadline_s)


def covers(windows: Windows | None, start: int, end: int) -> bool:
    """Whether the union of ``windows`` covers every step in ``[start, end)`` (None:
    always online; ``[]``: never)."""
    if windows is None:
        return True
    reached = start  # every step before it is covered
    for a, b in sorted(windows):
        if a > reached:  # a gap at step `reached`
            return False
        reached = max(reached, b)
        if reached >= end:
            return True
    return reached >= end


def online(windows: Sequence[Windows | None], start: int, length: int) -> Tensor:
    """Bool ``(N,)``: clients whose windows cover the draw's steps ``[start, start + length)``."""
    return torch.tensor([covers(w, start, start + length) for w in windows], dtype=torch.bool)


class Draw(NamedTuple):
    """One draw's masks, bool ``(N,)`` each; every client dropped is in exactly one of
    ``offline``, ``dropped`` and ``late``."""

    participants: Tensor  # drawn
    dropped: Tensor  # drawn, online, failed to deliver (`dropouts`)
    late: Tensor  # drawn, online, delivered after the deadline (`past_deadline`)
    offline: Tensor  # drawn but outside its availability windows (`online`)

    @property
    def delivering(self) -> Tensor:
        return self.participants & ~self.offline & ~self.dropped & ~self.late


@dataclass(frozen=True)
class Draws:
    """The participation schedule of a run: one draw per ``per`` steps (1: every step,
    the PSL family; a round's length for the averaging methods), the same on every rank."""

    seed: int
    num_clients: int
    count: int  # participants per draw (`participant_count`)
    per: int  # steps per draw
    dropout: float = 0.0
    deadline_s: float | None = None
    times_s: Tensor | None = None  # (N,) simulated compute seconds per draw, for the deadline
    windows: tuple[Windows | None, ...] | None = None  # (N,) availability; None: always on

    def index(self, step: int) -> int:
        return step // self.per

    def first_step(self, step: int) -> bool:
        """Whether ``step`` opens its draw (so per-draw counts are taken once)."""
        return step % self.per == 0

    def draw(self, step: int) -> Draw:
        """The draw of ``step``: offline clients first (they never start), then dropouts
        and the deadline among the rest."""
        i = self.index(step)
        part = sample_participants(self.seed, i, self.num_clients, self.count)
        offline = torch.zeros_like(part)
        if self.windows is not None:
            offline = part & ~online(self.windows, i * self.per, self.per)
        dropped = dropouts(self.seed, i, part & ~offline, self.dropout)
        times = self.times_s if self.times_s is not None else torch.zeros(self.num_clients)
        late = past_deadline(times, part & ~offline & ~dropped, self.deadline_s)
        return Draw(part, dropped, late, offline)
