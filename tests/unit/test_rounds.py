"""Unit tests (milliseconds): local-pass rounds (data/rounds.py) and their batches
(ClientBatches with round_len), on hand-checkable client sizes."""

from __future__ import annotations

import pytest
import torch

from lightning_gapsl.data.rounds import (
    Turns,
    active_clients,
    fresh_samples,
    local_steps,
    pass_positions,
    round_length,
    round_position,
    sequential_round_length,
    sequential_turn,
    turn_order,
)
from lightning_gapsl.data.sampling import ClientBatches

SIZES, B = [5, 64, 33], 16  # ceil(n / B) = 1, 4, 3 active steps; R = 4


def test_local_steps_and_round_length_by_hand() -> None:
    assert local_steps(SIZES, B).tolist() == [1, 4, 3]
    assert round_length(SIZES, B) == 4
    assert local_steps([16, 17, 1], 16).tolist() == [1, 2, 1]  # exact multiple, one over, tiny
    assert round_length(torch.tensor([100.0, 7.0]), 10) == 10  # float sizes (client_sizes)


def test_active_clients_are_the_first_steps_of_the_round() -> None:
    masks = [active_clients(t, SIZES, B).tolist() for t in range(4)]
    assert masks == [
        [True, True, True],
        [False, True, True],
        [False, True, True],
        [False, True, False],
    ]
    per_client = torch.stack([active_clients(t, SIZES, B) for t in range(4)]).sum(0)
    assert per_client.tolist() == [1, 4, 3]  # exactly ceil(n_i / B) active steps each
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        active_clients(4, SIZES, B)


def test_fresh_samples_sum_to_one_pass() -> None:
    fresh = torch.stack([fresh_samples(t, SIZES, B) for t in range(4)])  # (R, N)
    assert fresh.tolist() == [[5, 16, 16], [0, 16, 16], [0, 16, 1], [0, 16, 0]]
    assert fresh.sum(0).tolist() == SIZES


def test_pass_positions_wrap_within_the_pass() -> None:
    assert pass_positions(2, 33, 16).tolist() == [32] + list(range(15))
    assert pass_positions(0, 5, 8).tolist() == [0, 1, 2, 3, 4, 0, 1, 2]
    assert pass_positions(1, 64, 16).tolist() == list(range(16, 32))


def test_round_position_and_bad_arguments() -> None:
    assert round_position(9, 4) == (2, 1) and round_position(0, 4) == (0, 0)
    with pytest.raises(ValueError):
        round_position(-1, 4)
    with pytest.raises(ValueError, match="client sizes"):
        local_steps([3, 0], 4)
    with pytest.raises(ValueError, match="batch_size"):
        local_steps([3], 0)


def _batches(client_ids: list[int], round_len: int | None) -> ClientBatches:
    # Sample values are their own index, so a batch's x reveals which samples it holds.
    n = sum(SIZES)
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1)
    starts = [0, 5, 69]
    parts = {c: torch.arange(starts[c], starts[c] + SIZES[c]) for c in client_ids}
    return ClientBatches(
        x, torch.zeros(n, dtype=torch.int64), parts, B, seed=3, total_steps=8, round_len=round_len
    )


def test_local_pass_batches_cover_each_client_once_per_round() -> None:
    data = _batches([0, 1, 2], round_len=4)
    for r in range(2):
        rows = [data[r * 4 + t][0].view(3, B) for t in range(4)]  # R steps of (K, B)
        for c, start in enumerate([0, 5, 69]):
            active = [rows[t][c] for t in range(4) if active_clients(t, SIZES, B)[c]]
            seen = torch.cat(active).long()
            assert set(seen.tolist()) == set(range(start, start + SIZES[c]))  # every sample
            assert seen.numel() == local_steps(SIZES, B)[c] * B
            # idle rows repeat the last active batch (padding for the (K, B) stack)
            for t in range(len(active), 4):
                assert torch.equal(rows[t][c], active[-1])
    first = data[1][0].view(3, B)[1]
    assert not torch.equal(first, data[5][0].view(3, B)[1])  # a new permutation per round


def test_local_pass_batches_do_not_depend_on_hosting() -> None:
    everyone, alone = _batches([0, 1, 2], 4), _batches([2], 4)
    for step in range(8):
        assert torch.equal(everyone[step][0][2], alone[step][0][0])
    with pytest.raises(ValueError, match="round_len"):
        _batches([0], 0)


def test_lockstep_batches_unchanged_without_round_len() -> None:
    lockstep = _batches([0, 1, 2], None)
    for step in range(3):  # the endless-stream batch, not a pass batch
        for k, stream in enumerate(lockstep.streams):
            assert torch.equal(lockstep[step][0][k].flatten().long(), stream.batch(step, B))
    assert not torch.equal(lockstep[1][0][0], _batches([0, 1, 2], 4)[1][0][0])


def test_whole_epoch_turns_by_hand() -> None:
    # s = (1, 4, 3): in order (2, 0, 1) client 2 takes steps 0-2, client 0 step 3,
    # client 1 steps 4-7; 8 steps in all, each client exactly one pass.
    order = torch.tensor([2, 0, 1])
    assert sequential_round_length(SIZES, B) == 8
    turns = [sequential_turn(t, SIZES, B, order) for t in range(8)]
    assert turns == [(2, 0), (2, 1), (2, 2), (0, 0), (1, 0), (1, 1), (1, 2), (1, 3)]
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        sequential_turn(8, SIZES, B, order)
    with pytest.raises(ValueError, match="permutation"):
        sequential_turn(0, SIZES, B, torch.tensor([0, 0, 1]))


def test_turn_orders() -> None:
    assert turn_order(4, seed=0, round_index=3).tolist() == [0, 1, 2, 3]
    a = turn_order(6, seed=1, round_index=0, order="random")
    assert sorted(a.tolist()) == list(range(6))
    assert torch.equal(a, turn_order(6, seed=1, round_index=0, order="random"))
    rounds = {tuple(turn_order(6, 1, r, "random").tolist()) for r in range(5)}
    assert len(rounds) > 1  # a new order every round
    with pytest.raises(ValueError, match="id, random"):
        turn_order(3, 0, 0, order="reverse")


def test_turns_schedule_and_its_batches() -> None:
    turns = Turns(tuple(SIZES), B, order="id", seed=3)
    assert turns.length == 8
    assert [turns.at(s)[1:] for s in range(8)] == [
        (0, 0),
        (1, 0),
        (1, 1),
        (1, 2),
        (1, 3),
        (2, 0),
        (2, 1),
        (2, 2),
    ]
    assert turns.at(9) == (1, 1, 0)  # round 1, step 1: client 1's first batch
    assert turns.active(5).tolist() == [False, False, True]
    data = _batches([0, 1, 2], None)
    data = ClientBatches(
        data.train_x,
        data.train_y,
        {c: data.streams[c].indices for c in range(3)},
        B,
        3,
        16,
        turns=turns,
    )
    for r in range(2):  # each turn is exactly one pass over that client's data
        for c, start in enumerate([0, 5, 69]):
            rows = [
                data[r * 8 + s][0].view(3, B)[c] for s in range(8) if turns.at(r * 8 + s)[1] == c
            ]
            seen = torch.cat(rows).long()
            assert set(seen.tolist()) == set(range(start, start + SIZES[c]))
    with pytest.raises(ValueError, match="not both"):
        ClientBatches(
            data.train_x, data.train_y, {0: torch.arange(5)}, B, 3, 8, round_len=4, turns=turns
        )
