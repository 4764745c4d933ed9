"""Unit tests (milliseconds): the participation draws, checkable by hand.

Which clients take part, which drop out and which miss the deadline are pure functions
of (seed, round or step) and client counts; the FedAvg-over-participants test runs the
project's one FedAvg on stacked tensors.
"""

from __future__ import annotations

import pytest
import torch

from lightning_gapsl.methods.shared.fedavg import fedavg_
from lightning_gapsl.data.participation import (
    Draws,
    dropouts,
    participant_count,
    past_deadline,
    sample_participants,
)


def test_participant_count_floors_the_fraction_and_keeps_one() -> None:
    assert participant_count(10, 1.0) == 10
    assert participant_count(10, 0.3) == 3  # 0.3 * 10 = 3.0000000000000004 -> 3, not 2.99
    assert participant_count(10, 0.35) == 3  # Flower's floor
    assert participant_count(1000, 0.1) == 100
    assert participant_count(5, 0.01) == 1  # at least one
    assert participant_count(10, 0.5, clients=7) == 7  # a count replaces the fraction


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"fraction": 0.0}, "participation.fraction=0.0"),
        ({"fraction": 1.5}, "participation.fraction=1.5"),
        ({"clients": 11}, "participation.clients=11"),
        ({"clients": 0}, "participation.clients=0"),
    ],
)
def test_participant_count_names_the_bad_key(kwargs, key) -> None:
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        participant_count(10, **kwargs)


def test_sample_is_exactly_count_clients_and_depends_on_seed_and_index_only() -> None:
    a = sample_participants(seed=3, index=7, num_clients=20, count=5)
    assert a.dtype == torch.bool and a.shape == (20,) and int(a.sum()) == 5
    assert torch.equal(a, sample_participants(3, 7, 20, 5))  # a pure function
    draws = [sample_participants(3, i, 20, 5) for i in range(10)]
    assert len({tuple(d.nonzero().flatten().tolist()) for d in draws}) > 1  # varies by index
    assert not torch.equal(a, sample_participants(4, 7, 20, 5))  # and by seed
    assert bool(sample_participants(3, 7, 20, 20).all())  # full participation: everyone


def test_sampling_is_uniform_over_many_draws() -> None:
    counts = sum(sample_participants(0, i, 10, 3).to(torch.int64) for i in range(3000))
    assert counts.sum() == 9000
    assert ((counts - 900).abs() < 100).all()  # each client ~30% of the rounds


def test_dropout_drops_only_participants_below_the_threshold() -> None:
    part = torch.tensor([True, True, False, True, False, True])
    assert not dropouts(1, 0, part, 0.0).any()  # p = 0: nobody
    dropped = dropouts(1, 0, part, 0.5)
    assert not bool((dropped & ~part).any())  # never a non-participant
    # The rule, by hand: client i drops iff it participates and its uniform draw < p.
    from lightning_gapsl.seeding import generator

    u = torch.rand(6, generator=generator(1, "dropout", 0))
    assert torch.equal(dropped, part & (u < 0.5))
    rate = sum(
        int(dropouts(2, i, torch.ones(50, dtype=torch.bool), 0.2).sum()) for i in range(200)
    ) / (50 * 200)
    assert abs(rate - 0.2) < 0.02
    with pytest.raises(ValueError, match=r"participation\.dropout=-0\.1"):
        dropouts(0, 0, part, -0.1)


def test_deadline_drops_exactly_the_slower_participants() -> None:
    times = torch.tensor([0.5, 2.0, 1.0, 3.0, 1.5])
    part = torch.tensor([True, True, True, False, True])
    assert torch.equal(
        past_deadline(times, part, 1.0), torch.tensor([False, True, False, False, True])
    )  # 1.0 is in time
    assert not past_deadline(times, part, None).any()


def test_draws_hold_one_subset_per_round() -> None:
    d = Draws(seed=0, num_clients=8, count=3, per=4, dropout=0.0)
    rounds = [d.draw(s)[0] for s in range(8)]
    assert all(torch.equal(rounds[0], r) for r in rounds[:4])  # steps 0-3: round 0
    assert all(torch.equal(rounds[4], r) for r in rounds[4:])  # steps 4-7: round 1
    assert torch.equal(rounds[4], sample_participants(0, 1, 8, 3))
    assert [d.first_step(s) for s in range(5)] == [True, False, False, False, True]


def test_fedavg_over_a_subset_is_the_size_weighted_mean_of_exactly_those() -> None:
    # 4 clients with scalar "parameters" 1, 2, 3, 4 and sizes 10, 20, 30, 40; clients 1
    # and 3 take part: (2 * 20 + 4 * 40) / 60 = 200 / 60.
    stacked = {"w": torch.tensor([[1.0], [2.0], [3.0], [4.0]], dtype=torch.float64)}
    sizes = torch.tensor([10.0, 20.0, 30.0, 40.0], dtype=torch.float64)
    part = torch.tensor([False, True, False, True])
    fedavg_(stacked, sizes * part.to(sizes), {"w": torch.Size([1])})
    assert torch.allclose(stacked["w"], torch.full((4, 1), 200 / 60, dtype=torch.float64))
