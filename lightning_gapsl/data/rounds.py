"""Local-pass rounds: each client makes exactly one pass over its own data per round.

Two conventions exist for what a round of a FedAvg-family method is (docs/explanations/methods.md):

* ``lockstep`` (the other convention): every client draws ``B`` samples at every
  step, so a round of ``R`` steps is ``R * B`` samples for every client whatever its
  size: a small client makes many passes over its data, a large one a fraction of one.
* ``local_pass`` (SplitFed's and FSL-SAGE's reference code: each client runs one local
  epoch of its own ``DataLoader`` per round): client ``i`` with ``n_i`` samples is
  *active* for exactly ``s_i = ceil(n_i / B)`` steps of the round and idle for the rest.
  The round lasts ``R = max_i s_i`` lockstep steps (the largest client's pass).

Which steps a client is active in: the FIRST ``s_i`` steps of the round (steps
``0 .. s_i - 1``). Every client then starts the round together, so the first server
steps of a round see all clients, and a client's last active step comes as early as its
data allows (its updates are complete before the round's FedAvg, whatever ``R``).

How its batches are drawn: batch ``t`` of round ``r`` is positions
``[t*B, (t+1)*B)`` of permutation ``r`` of the client's indices, taken modulo ``n_i``:
fixed ``B`` so the hosted clients' batches still stack to ``(K, B)``, wrapping around
*within* the same permutation, so one round covers every sample of the client at least
once and exactly ``s_i * B - n_i`` samples twice (all in the last batch; `fresh_samples`
counts the first occurrences, for a runtime that prefers to mask the repeats, as the
reference's smaller last batch effectively does). Idle clients' rows are padding: a
runtime must give them no loss weight, no optimizer step (momentum and Adam would move
them on a zero gradient) and no upload.

Sequential methods (SL, SplitFed V2) have a second choice, what one client's *turn* is:
one batch (this project's and CycleSL's convention: every step each client in turn
trains on one batch) or a whole local epoch (SplitFed's code: ``SL_ResNet_HAM10000.py``
and ``SFLV2_ResNet_HAM10000.py`` serve each client its whole ``DataLoader`` before the
next). `sequential_turn` maps a step of such a round to ``(client, its local step)``:
the round lasts ``sum_i ceil(n_i / B)`` steps, one client active at a time, in
`turn_order`.

Pure functions of (client sizes, batch size, step): no rank, no global state, so every
process computes the same mask for every client.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from lightning_gapsl.seeding import generator

__all__ = [
    "ROUND_MODES",
    "TURN_ORDERS",
    "Turns",
    "active_clients",
    "fresh_samples",
    "local_steps",
    "pass_positions",
    "round_length",
    "round_position",
    "sequential_round_length",
    "sequential_turn",
    "turn_order",
]

ROUND_MODES = ("lockstep", "local_pass")
TURN_ORDERS = ("id", "random")


def _sizes(sizes: Sequence[int] | Tensor, batch_size: int) -> Tensor:
    """Validated client sizes as an int64 ``(N,)`` CPU tensor."""
    n = torch.as_tensor(sizes).to(torch.int64).flatten()  # (N,)
    if n.numel() == 0 or bool((n < 1).any()):
        raise ValueError(f"client sizes must be a non-empty list of ints >= 1, got {n.tolist()}")
    if batch_size < 1:
        raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
    return n


def local_steps(sizes: Sequence[int] | Tensor, batch_size: int) -> Tensor:
    """Active steps per round of each client: ``ceil(n_i / B)``, int64 ``(N,)``."""
    n = _sizes(sizes, batch_size)
    return (n + batch_size - 1) // batch_size  # (N,) integer ceil


def round_length(sizes: Sequence[int] | Tensor, batch_size: int) -> int:
    """Lockstep steps in one local-pass round: ``R = max_i ceil(n_i / B)``."""
    return int(local_steps(sizes, batch_size).max())


def round_position(step: int, round_len: int) -> tuple[int, int]:
    """``(round index, step in round)`` of a 0-based global ``step`` for rounds of ``round_len``."""
    if round_len < 1 or step < 0:
        raise ValueError(f"need round_len >= 1 and step >= 0, got {round_len}, {step}")
    return divmod(int(step), int(round_len))


def active_clients(step_in_round: int, sizes: Sequence[int] | Tensor, batch_size: int) -> Tensor:
    """Bool ``(N,)``: which clients take a step at ``step_in_round`` (``0 <= t < R``).

    Client ``i`` is active for ``t < ceil(n_i / B)``: the first ``s_i`` steps of the
    round. Raises ``ValueError`` for ``t`` outside ``[0, R)``.
    """
    steps = local_steps(sizes, batch_size)  # (N,)
    if not 0 <= step_in_round < int(steps.max()):
        raise ValueError(
            f"step_in_round must be in [0, {int(steps.max())}) for these clients, got "
            f"{step_in_round}"
        )
    return steps > step_in_round  # (N,) bool


def fresh_samples(step_in_round: int, sizes: Sequence[int] | Tensor, batch_size: int) -> Tensor:
    """Int64 ``(N,)``: samples of this step's batch seen for the first time this round.

    ``B`` before a client's last active step, ``n_i - (s_i - 1) * B`` at it (the rest of
    that batch wraps around to samples already seen), 0 when idle. Summed over the round
    it is ``n_i`` for every client: exactly one pass.
    """
    n = _sizes(sizes, batch_size)
    active = active_clients(step_in_round, n, batch_size)  # (N,) validates the step too
    remaining = n - step_in_round * batch_size  # (N,) samples not yet drawn this round
    return torch.where(active, remaining.clamp(max=batch_size), 0)  # (N,)


def pass_positions(step_in_round: int, num_samples: int, batch_size: int) -> Tensor:
    """Positions in the round's permutation of one client's batch: int64 ``(B,)``.

    ``(t * B + j) mod n`` for ``j = 0 .. B-1``: consecutive, wrapping around within the
    same permutation (a client with ``n < B`` repeats its samples inside one batch).
    Meant for active steps (``t < ceil(n / B)``); an idle client's padding row may use
    its last active step's positions (``t = ceil(n / B) - 1``).
    """
    if num_samples < 1 or batch_size < 1 or step_in_round < 0:
        raise ValueError(
            f"need num_samples >= 1, batch_size >= 1, step_in_round >= 0; got "
            f"{num_samples}, {batch_size}, {step_in_round}"
        )
    start = step_in_round * batch_size
    return (torch.arange(start, start + batch_size) % num_samples).to(torch.int64)  # (B,)


def turn_order(num_clients: int, seed: int, round_index: int, order: str = "id") -> Tensor:
    """The clients' turn order in one round of a sequential method: int64 ``(N,)``.

    ``id``: ``0 .. N-1`` (FSL-SAGE's code and this project's ``sl``); ``random``: a new
    permutation every round from ``(seed, "turns", round_index)`` (SplitFed's code draws
    ``np.random.choice(range(N), N, replace=False)`` every round), the same on every rank.
    """
    if order not in TURN_ORDERS:
        raise ValueError(f"turn order must be one of {', '.join(TURN_ORDERS)}, got {order!r}")
    if num_clients < 1 or round_index < 0:
        raise ValueError(
            f"need num_clients >= 1 and round_index >= 0, got {num_clients}, {round_index}"
        )
    if order == "id":
        return torch.arange(num_clients)
    return torch.randperm(num_clients, generator=generator(seed, "turns", round_index))


def sequential_round_length(sizes: Sequence[int] | Tensor, batch_size: int) -> int:
    """Steps in a round of whole-local-epoch turns: ``sum_i ceil(n_i / B)``."""
    return int(local_steps(sizes, batch_size).sum())


def sequential_turn(
    step_in_round: int, sizes: Sequence[int] | Tensor, batch_size: int, order: Tensor
) -> tuple[int, int]:
    """``(client id, its step within its local pass)`` at ``step_in_round`` of a round of
    whole-local-epoch turns taken in ``order`` (`turn_order`).

    Client ``order[0]`` takes steps ``0 .. s_0 - 1``, then ``order[1]`` its ``s_1``
    steps, and so on (``s_i = ceil(n_i / B)``); its batches are `pass_positions` of its
    pass, so each turn is exactly one pass over that client's data.
    """
    steps = local_steps(sizes, batch_size)  # (N,)
    order = torch.as_tensor(order).to(torch.int64).flatten()
    if sorted(order.tolist()) != list(range(steps.numel())):
        raise ValueError(
            f"order must be a permutation of 0..{steps.numel() - 1}, got {order.tolist()}"
        )
    total = int(steps.sum())
    if not 0 <= step_in_round < total:
        raise ValueError(f"step_in_round must be in [0, {total}), got {step_in_round}")
    ends = torch.cumsum(steps[order], 0)  # (N,) exclusive end step of each turn
    turn = int(torch.searchsorted(ends, torch.tensor(step_in_round), right=True))
    start = int(ends[turn - 1]) if turn > 0 else 0
    return int(order[turn]), step_in_round - start


@dataclass(frozen=True)
class Turns:
    """A schedule of whole-local-epoch turns, the same on every rank.

    ``sizes``: every client's sample count (all N, not only the hosted ones);
    ``order``: ``id`` | ``random`` (`turn_order`). Round ``r`` lasts `length` steps.
    """

    sizes: tuple[int, ...]
    batch_size: int
    order: str = "id"
    seed: int = 0

    @cached_property
    def length(self) -> int:
        """Steps per round: ``sum_i ceil(n_i / B)``."""
        return sequential_round_length(self.sizes, self.batch_size)

    @cached_property
    def _orders(self) -> dict[int, Tensor]:
        return {}  # round index -> its order: this round's and the one before (SL looks back)

    def round_order(self, round_index: int) -> Tensor:
        """Round ``round_index``'s turn order (`turn_order`), drawn once: the loader, the
        runtime and the method all ask for it at every step of the round."""
        if round_index not in self._orders:
            if len(self._orders) >= 2:
                del self._orders[next(iter(self._orders))]  # the oldest round
            self._orders[round_index] = turn_order(
                len(self.sizes), self.seed, round_index, self.order
            )
        return self._orders[round_index]

    def at(self, step: int) -> tuple[int, int, int]:
        """``(round index, client whose turn it is, that client's step in its pass)``."""
        r, t = round_position(step, self.length)
        client, local = sequential_turn(t, self.sizes, self.batch_size, self.round_order(r))
        return r, client, local

    def active(self, step: int) -> Tensor:
        """Bool ``(N,)``: one-hot of the client whose turn it is at ``step``."""
        mask = torch.zeros(len(self.sizes), dtype=torch.bool)
        mask[self.at(step)[1]] = True
        return mask
