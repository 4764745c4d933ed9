"""Per-client batch streams that keep every rank in lockstep and every layout identical.

Each client reads its own data as an endless stream of seeded permutations: batch t
of client c is positions [t*B, (t+1)*B) of that stream, and permutation e is drawn
from a generator seeded by (seed, "batches", c, e). So a client's batches depend on
(seed, client id, global step) only: not on the rank that hosts it, not on how many
clients share that rank, and a resumed run picks up exactly where it stopped.
Every client draws exactly B samples per step (small clients wrap around sooner), so
every rank runs the same number of steps.

With ``round_len`` set (local-pass rounds, `lightning_gapsl.data.rounds`), client c's
batch at step t of round r is instead taken from permutation r alone (`pass_batch`):
one pass over its own data per round, ``ceil(n_c / B)`` active steps; the rows of idle
clients are padding (their last active batch) that the runtime masks out. With
``turns`` (whole-local-epoch turns of SL / SplitFed V2) only the client whose turn it is
draws a real batch, batch ``local`` of its pass for the round; the others are padding.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from lightning_gapsl.data.rounds import Turns, pass_positions, round_position
from lightning_gapsl.seeding import generator


class ClientStream:
    """Endless, seeded stream of sample indices of one client."""

    def __init__(self, indices: torch.Tensor, seed: int, client_id: int):
        if len(indices) == 0:
            raise ValueError(f"client {client_id} has no samples")
        self.indices = indices  # (n_c,) int64 positions in the pooled training set
        self.seed = seed
        self.client_id = client_id
        self._cache: dict[int, torch.Tensor] = {}

    def _permutation(self, epoch: int) -> torch.Tensor:
        perm = self._cache.get(epoch)
        if perm is None:
            gen = generator(self.seed, "batches", self.client_id, epoch)
            perm = self.indices[torch.randperm(len(self.indices), generator=gen)]
            # Keep only the two most recent permutations: a batch spans at most two.
            self._cache = {e: p for e, p in self._cache.items() if e >= epoch - 1}
            self._cache[epoch] = perm
        return perm

    def batch(self, step: int, batch_size: int) -> torch.Tensor:
        """Sample indices of this client's batch at global ``step``: (batch_size,)."""
        n = len(self.indices)
        start, end = step * batch_size, (step + 1) * batch_size
        pieces = []
        pos = start
        while pos < end:
            epoch, offset = divmod(pos, n)
            take = min(end - pos, n - offset)
            pieces.append(self._permutation(epoch)[offset : offset + take])
            pos += take
        return torch.cat(pieces)

    def pass_batch(self, round_index: int, step_in_round: int, batch_size: int) -> torch.Tensor:
        """Sample indices ``(batch_size,)`` of batch ``step_in_round`` of local pass ``round_index``.

        Positions ``(t * B + j) mod n_c`` of permutation ``round_index`` (`pass_positions`):
        the pass wraps around within its own permutation, so each round covers every
        sample. An idle step (``t >= ceil(n_c / B)``) returns the last active batch.
        """
        n = len(self.indices)
        last = (n + batch_size - 1) // batch_size - 1
        positions = pass_positions(min(step_in_round, last), n, batch_size)  # (B,)
        return self._permutation(round_index)[positions]


class ClientBatches(Dataset):
    """Map-style dataset: item ``global_step`` is the stacked batch of the hosted clients.

    Returns ``(x, y)`` with x (K, B, C, H, W) and y (K, B) for the K hosted clients in
    client-id order (K = 0 on a dedicated server rank: empty tensors of the same rank).
    ``round_len`` None: lockstep batches (`ClientStream.batch`); an int R (computed from
    ALL clients' sizes by `lightning_gapsl.data.rounds.round_length`, so every rank
    agrees): local-pass batches (`ClientStream.pass_batch`) for rounds of R steps.
    ``turns`` (exclusive with ``round_len``): whole-local-epoch turns, see `Turns`.
    ``prepare`` maps the gathered stored images to model inputs (`DatasetSplit.prepare`:
    uint8 pixels are normalized here, one step's batch at a time).
    """

    def __init__(
        self,
        train_x: torch.Tensor,
        train_y: torch.Tensor,
        client_indices: dict[int, torch.Tensor],
        batch_size: int,
        seed: int,
        total_steps: int,
        round_len: int | None = None,
        turns: Turns | None = None,
        prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        if round_len is not None and round_len < 1:
            raise ValueError(f"round_len must be >= 1 or None, got {round_len}")
        if round_len is not None and turns is not None:
            raise ValueError("give round_len (local-pass rounds) or turns, not both")
        self.train_x = train_x  # (n, C, H, W)
        self.train_y = train_y  # (n,)
        self.client_ids = sorted(client_indices)
        self.streams = [ClientStream(client_indices[c], seed, c) for c in self.client_ids]
        self.batch_size = batch_size
        self.total_steps = total_steps
        self.round_len = round_len
        self.turns = turns
        self.prepare = prepare

    def __len__(self) -> int:
        return self.total_steps

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(x, y, step): the step travels with its batch so no rank can pair it wrongly."""
        if not self.streams:
            shape = (0, self.batch_size, *self.train_x.shape[1:])
            return torch.empty(shape), torch.empty(0, self.batch_size, dtype=torch.int64), step
        if self.turns is not None:
            r, client, local = self.turns.at(step)
            idx = torch.stack(
                [  # the turn's client draws its batch; the others pad
                    s.pass_batch(r, local if c == client else 0, self.batch_size)
                    for c, s in zip(self.client_ids, self.streams, strict=True)
                ]
            )
        elif self.round_len is None:
            idx = torch.stack([s.batch(step, self.batch_size) for s in self.streams])  # (K, B)
        else:
            r, t = round_position(step, self.round_len)
            idx = torch.stack([s.pass_batch(r, t, self.batch_size) for s in self.streams])
        x = self.train_x[idx]  # (K, B, C, H, W) as stored
        return (x if self.prepare is None else self.prepare(x)), self.train_y[idx], step


class StepSampler(Sampler[int]):
    """Yields the global step numbers of one epoch; Lightning calls ``set_epoch``."""

    def __init__(self, steps_per_epoch: int):
        self.steps_per_epoch = steps_per_epoch
        self.epoch = 0
        self.resume_step: int | None = None  # one-shot: continue a checkpointed epoch here

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        # A generator: the range is fixed at the first next(), after Lightning's
        # set_epoch, not when the DataLoader builds its iterator (which on resume
        # happens before set_epoch).
        if self.resume_step is not None:
            # Resuming: continue from the checkpointed step to the end of its epoch.
            start, self.resume_step = self.resume_step, None
            end = (start // self.steps_per_epoch + 1) * self.steps_per_epoch
        else:
            start = self.epoch * self.steps_per_epoch
            end = start + self.steps_per_epoch
        yield from range(start, end)

    def __len__(self) -> int:
        return self.steps_per_epoch


class StepLoader(DataLoader):
    """A DataLoader that Lightning can checkpoint mid-epoch (it has state_dict).

    The module records the next global step after each training step; a checkpoint
    stores it, and on resume the sampler continues the epoch exactly there.
    """

    def __init__(self, dataset: ClientBatches, steps_per_epoch: int):
        self.step_sampler = StepSampler(steps_per_epoch)
        super().__init__(dataset, sampler=self.step_sampler, batch_size=None, num_workers=0)
        self.next_step = 0

    def state_dict(self) -> dict:
        return {"next_step": self.next_step}

    def load_state_dict(self, state: dict) -> None:
        self.next_step = int(state["next_step"])
        self.step_sampler.resume_step = self.next_step
