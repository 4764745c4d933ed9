"""Local-pass rounds: each client makes exactly one pass over its own data per round.

Two conventions exist for what a round of a FedAvg-family method is (DESIGN section 7,
issue 8 item 7):

* ``lockstep`` (the convention before issue 8): every client draws ``B`` samples at every
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

Pure functions of (client sizes, batch size, step): no rank, no global state, so every
process computes the same mask for every client.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "ROUND_MODES",
    "active_clients",
    "fresh_samples",
    "local_steps",
    "pass_positions",
    "round_length",
    "round_position",
]

ROUND_MODES = ("lockstep", "local_pass")


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
