"""Unit tests (milliseconds): FedAvg's weighted average, its per-rank partial sums, and
the in-place average of stacked client segments.

Expected values are hand-computed weighted means of small integers.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_gapsl.methods.shared.fedavg import (
    assign_slices_,
    combine_partials,
    fedavg_,
    partial_sums,
)
from lightning_gapsl.models.stacked import StackedSegments


def weighted_average(stacked: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The average `fedavg_` computes for one stacked tensor, without writing it back."""
    return fedavg_(
        {"x": stacked}, weights, {"x": stacked.shape[1:]}, dtype=stacked.dtype, assign=False
    ).view(stacked.shape[1:])


def fedavg_stacked_(params: dict, weights: torch.Tensor) -> None:
    """`fedavg_` in place on one rank, accumulating in the parameters' dtype."""
    fedavg_(
        params,
        weights,
        {n: p.shape[1:] for n, p in params.items()},
        dtype=next(iter(params.values())).dtype,
    )


def test_weighted_average_hand_example() -> None:
    stacked = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])  # (K=3, 2)
    before = stacked.clone()
    avg = weighted_average(stacked, torch.tensor([1.0, 1.0, 2.0]))
    # (1*[1, 2] + 1*[3, 4] + 2*[5, 6]) / 4 = [14, 18] / 4
    assert torch.equal(avg, torch.tensor([3.5, 4.5]))
    assert torch.equal(stacked, before)


def test_weighted_average_is_scale_invariant_and_skips_zero_weights() -> None:
    stacked = torch.tensor([[2.0], [4.0], [100.0]])
    w = torch.tensor([1, 3, 0])  # integer sizes, one client with no data
    assert torch.equal(weighted_average(stacked, w), torch.tensor([3.5]))
    assert torch.equal(weighted_average(stacked, w * 10), torch.tensor([3.5]))


def test_weighted_average_keeps_dtype() -> None:
    stacked = torch.arange(6, dtype=torch.float64).reshape(3, 2)
    avg = weighted_average(stacked, torch.ones(3))
    assert avg.dtype == torch.float64
    assert torch.equal(avg, torch.tensor([2.0, 3.0], dtype=torch.float64))


@pytest.mark.parametrize(
    "weights", [torch.tensor([1.0, -1.0, 1.0]), torch.zeros(3), torch.ones(2), torch.ones(3, 1)]
)
def test_weighted_average_rejects_bad_weights(weights: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="weight"):
        weighted_average(torch.zeros(3, 2), weights)


@pytest.mark.parametrize(
    "blocks", [[[0, 1, 2], [3, 4]], [[0], [1, 2, 3, 4]], [[3, 4], [0, 1, 2]], [[0, 1, 2, 3, 4]]]
)
def test_combined_partials_equal_one_shot_average(blocks: list[list[int]]) -> None:
    gen = torch.Generator().manual_seed(0)
    stacked = torch.randn(5, 3, 4, generator=gen)  # (K, 3, 4)
    weights = torch.tensor([10.0, 3.0, 7.0, 1.0, 29.0])
    parts = [partial_sums(stacked[b], weights[b]) for b in blocks]
    combined, one_shot = combine_partials(parts), weighted_average(stacked, weights)
    assert combined.shape == (3, 4)
    assert torch.allclose(combined, one_shot, rtol=1e-6, atol=1e-6)


def test_partial_sums_hand_example_and_zero_weight_block() -> None:
    s, t = partial_sums(torch.tensor([[1.0], [3.0]]), torch.tensor([2.0, 1.0]))
    assert torch.equal(s, torch.tensor([5.0])) and float(t) == 3.0
    # a rank whose clients all have weight 0 contributes nothing, without failing
    s0, t0 = partial_sums(torch.tensor([[50.0]]), torch.tensor([0.0]))
    assert torch.equal(s0, torch.tensor([0.0])) and float(t0) == 0.0
    assert torch.equal(combine_partials([(s, t), (s0, t0)]), torch.tensor([5.0 / 3.0]))


def test_combine_partials_rejects_empty_and_zero_total() -> None:
    with pytest.raises(ValueError):
        combine_partials([])
    with pytest.raises(ValueError, match="total client weight"):
        combine_partials([(torch.zeros(2), torch.tensor(0.0))])


def test_fedavg_stacked_sets_every_slice_to_the_average_in_place() -> None:
    p = nn.Parameter(torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))  # (K=3, 2)
    q = nn.Parameter(torch.tensor([[0.0], [6.0], [3.0]]))  # (K=3, 1)
    params = {"p": p, "q": q}
    fedavg_stacked_(params, torch.tensor([1.0, 1.0, 2.0]))
    assert params["p"] is p and p.requires_grad  # same Parameter objects, still trainable
    assert torch.equal(p.detach(), torch.tensor([[3.5, 4.5]] * 3))
    assert torch.equal(q.detach(), torch.tensor([[3.0]] * 3))  # (0 + 6 + 2*3) / 4


def test_fedavg_stacked_on_stacked_segments() -> None:
    torch.manual_seed(0)
    segs = [nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 2)) for _ in range(4)]
    stacked = StackedSegments(segs)
    weights = torch.tensor([1.0, 2.0, 3.0, 4.0])
    expected = {
        n: weighted_average(t.detach(), weights) for n, t in stacked.stacked_params().items()
    }
    fedavg_stacked_(stacked.stacked_params(), weights)
    for name, t in stacked.stacked_params().items():
        for k in range(4):
            assert torch.equal(t[k].detach(), expected[name])
    x = torch.randn(4, 5, 3)  # (K, B, in): equal segments give equal outputs
    out = stacked(x[:1].expand(4, 5, 3))
    assert torch.equal(out[0], out[3])


def test_fedavg_rejects_wrong_leading_dim_without_writing() -> None:
    a = torch.tensor([[1.0], [3.0]])
    b = torch.zeros(3, 1)
    with pytest.raises(ValueError, match="weights must be"):
        fedavg_stacked_({"a": a, "b": b}, torch.ones(2))
    assert torch.equal(a, torch.tensor([[1.0], [3.0]]))


def test_fedavg_reduce_adds_other_ranks_partials() -> None:
    """Two ranks, simulated by adding the other rank's flat partial sums in ``reduce_``:
    every slice on both gets the average over all clients (hand values)."""
    rank_a = {"w": torch.tensor([[1.0], [3.0]])}  # clients 0, 1 (weights 1, 1)
    rank_b = {"w": torch.tensor([[8.0]])}  # client 2 (weight 2)
    shapes = {"w": torch.Size([1])}
    other_b = fedavg_(dict(rank_b), torch.tensor([2.0]), shapes, reduce_=None, assign=False)
    flat_b = torch.cat([other_b * 2.0, torch.tensor([2.0], dtype=torch.float64)])

    def add_b(flat: torch.Tensor) -> None:
        flat += flat_b

    avg = fedavg_(rank_a, torch.tensor([1.0, 1.0]), shapes, reduce_=add_b)
    assert torch.equal(avg, torch.tensor([5.0], dtype=torch.float64))  # (1 + 3 + 16) / 4
    assert torch.equal(rank_a["w"], torch.tensor([[5.0], [5.0]]))


def test_assign_slices_checks_names_and_shapes() -> None:
    with pytest.raises(KeyError):
        assign_slices_({"a": torch.zeros(2, 1)}, {"b": torch.zeros(1)})
    with pytest.raises(ValueError, match="slice shape"):
        assign_slices_({"a": torch.zeros(2, 1)}, {"a": torch.zeros(2)})
