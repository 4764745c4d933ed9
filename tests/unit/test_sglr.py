"""Unit tests (milliseconds): SGLR's SplitLr rate, SplitAvg client choice and transform.

Expected values are worked out by hand on tiny tensors (means of small integers, which
float32 represents exactly), not by re-running the code under test.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lightning_gapsl.methods.shared.losses import weighted_client_loss
from lightning_gapsl.methods.sglr.math import (
    averaged_clients,
    averaged_participants,
    averaging_active,
    num_averaged,
    server_loss_weights,
    server_lr,
    split_avg,
    split_avg_batch,
)

# --------------------------------------------------------------------------- SplitLr


@pytest.mark.parametrize(("exponent", "expected"), [(0.0, 0.1), (0.5, 0.2), (1.0, 0.4), (2.0, 1.6)])
def test_server_lr_scales_with_clients(exponent: float, expected: float) -> None:
    assert server_lr(0.1, 4, exponent) == pytest.approx(expected, rel=1e-12)


def test_server_lr_default_exponent_is_half() -> None:
    assert server_lr(0.01, 16) == pytest.approx(0.04, rel=1e-12)


@pytest.mark.parametrize("exponent", [-0.1, 2.5])
def test_server_lr_rejects_exponent_outside_0_2(exponent: float) -> None:
    with pytest.raises(ValueError, match="algorithm.lr_exponent"):
        server_lr(0.1, 4, exponent)


# --------------------------------------------------------------------------- client choice


@pytest.mark.parametrize(
    ("n", "fraction", "expected"),
    [
        (10, 0.5, 5),
        (3, 0.5, 2),
        (5, 0.5, 3),
        (10, 0.15, 2),
        (10, 0.01, 1),
        (10, 0.0, 0),
        (10, 1.0, 10),
        (1, 0.5, 1),
    ],
)
def test_num_averaged_rounds_half_up_with_at_least_one(
    n: int, fraction: float, expected: int
) -> None:
    assert num_averaged(n, fraction) == expected


def test_averaged_clients_mask_size_dtype_and_determinism() -> None:
    mask = averaged_clients(10, 0.5, seed=3, step=7)
    assert mask.dtype == torch.bool and mask.shape == (10,)
    assert int(mask.sum()) == 5
    assert torch.equal(mask, averaged_clients(10, 0.5, seed=3, step=7))


def test_averaged_clients_depends_on_step_not_on_global_rng() -> None:
    torch.manual_seed(0)
    first = averaged_clients(10, 0.5, seed=3, step=7)
    torch.manual_seed(1)  # the global RNG must play no part (it differs across ranks)
    assert torch.equal(first, averaged_clients(10, 0.5, seed=3, step=7))
    masks = {tuple(averaged_clients(10, 0.5, seed=3, step=s).tolist()) for s in range(8)}
    assert len(masks) > 1  # a fresh choice per step (C(10, 5) = 252 possible masks)


def test_averaged_clients_extremes() -> None:
    assert not averaged_clients(4, 0.0, seed=0, step=0).any()
    assert averaged_clients(4, 1.0, seed=0, step=0).all()


@pytest.mark.parametrize("fraction", [-0.1, 1.5])
def test_averaged_clients_rejects_bad_fraction(fraction: float) -> None:
    with pytest.raises(ValueError, match="algorithm.avg_fraction"):
        averaged_clients(4, fraction, seed=0, step=0)


# --------------------------------------------------------------------------- SplitAvg


def test_split_avg_hand_example() -> None:
    grads = torch.tensor([[[1.0], [2.0]], [[3.0], [4.0]], [[10.0], [20.0]]])  # (N=3, B=2, F=1)
    before = grads.clone()
    out = split_avg(grads, torch.tensor([True, True, False]))
    # clients 0 and 1: slot 0 -> (1 + 3) / 2 = 2, slot 1 -> (2 + 4) / 2 = 3
    expected = torch.tensor([[[2.0], [3.0]], [[2.0], [3.0]], [[10.0], [20.0]]])
    assert torch.equal(out, expected)
    assert torch.equal(grads, before)  # input untouched


def test_split_avg_keeps_unmasked_clients_bit_for_bit() -> None:
    gen = torch.Generator().manual_seed(0)
    grads = torch.randn(5, 4, 3, 2, 2, generator=gen)  # (N, B, C, H, W)
    mask = torch.tensor([False, True, False, True, True])
    out = split_avg(grads, mask)
    assert out.shape == grads.shape
    for i in (0, 2):
        assert torch.equal(out[i], grads[i])
    mean = (grads[1] + grads[3] + grads[4]) / 3
    for i in (1, 3, 4):
        assert torch.allclose(out[i], mean, rtol=1e-6, atol=1e-7)
    assert torch.equal(out[1], out[3]) and torch.equal(out[3], out[4])


def test_split_avg_empty_and_single_masks_are_identity() -> None:
    gen = torch.Generator().manual_seed(1)
    grads = torch.randn(3, 4, 5, generator=gen)
    assert torch.equal(split_avg(grads, torch.zeros(3, dtype=torch.bool)), grads)
    assert torch.equal(split_avg(grads, torch.tensor([False, True, False])), grads)


def test_split_avg_all_clients_gives_the_slotwise_mean() -> None:
    gen = torch.Generator().manual_seed(2)
    grads = torch.randn(4, 3, 6, generator=gen, dtype=torch.float64)
    out = split_avg(grads, torch.ones(4, dtype=torch.bool))
    assert torch.allclose(out, grads.mean(0, keepdim=True).expand_as(grads), rtol=1e-12, atol=1e-15)


def test_split_avg_rejects_bad_mask() -> None:
    grads = torch.zeros(3, 2, 1)
    with pytest.raises(ValueError, match="mask"):
        split_avg(grads, torch.ones(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask"):
        split_avg(grads, torch.ones(3))


# --------------------------------------------------------------------------- phases


def test_averaging_active_phases() -> None:
    assert all(averaging_active(s, 10, None) for s in range(20))
    assert [averaging_active(s, 10, 0.5) for s in range(10)] == [True] * 5 + [False] * 5
    # 0.3 * 10 = 3.0000000000000004 in binary: still exactly 3 averaged steps
    assert [averaging_active(s, 10, 0.3) for s in range(5)] == [True] * 3 + [False] * 2
    # 0.25 * 10 = 2.5: the step that straddles the boundary is included
    assert [averaging_active(s, 10, 0.25) for s in range(4)] == [True] * 3 + [False]
    assert not any(averaging_active(s, 10, 0.0) for s in range(10))
    assert all(averaging_active(s, 10, 1.0) for s in range(10))


def test_averaging_active_rejects_bad_phase() -> None:
    with pytest.raises(ValueError, match="algorithm.avg_phase"):
        averaging_active(0, 10, 1.5)


def test_averaging_in_the_final_share_of_training() -> None:
    last = [s for s in range(10) if averaging_active(s, 10, 0.3, where="last")]
    assert last == [7, 8, 9]  # ceil(0.3 * 10) = 3 final steps
    assert [s for s in range(10) if averaging_active(s, 10, 0.25, where="last")] == [7, 8, 9]
    assert [s for s in range(10) if averaging_active(s, 10, 0.3, where="first")] == [0, 1, 2]
    assert not any(averaging_active(s, 10, 0.0, where="last") for s in range(10))
    assert all(averaging_active(s, 10, 1.0, where="last") for s in range(10))
    assert all(averaging_active(s, 10, None, where="last") for s in range(10))
    with pytest.raises(ValueError, match="avg_phase_where.*first, last"):
        averaging_active(0, 10, 0.5, where="middle")


# --------------------------------------------------------------------------- server loss


def test_server_loss_weights_by_hand() -> None:
    sizes = torch.tensor([10.0, 30.0, 60.0])
    assert server_loss_weights(sizes, "mean").tolist() == pytest.approx([1 / 3] * 3)
    assert server_loss_weights(sizes, "weighted").tolist() == pytest.approx([0.1, 0.3, 0.6])
    idle_first = torch.tensor([False, True, True])
    assert server_loss_weights(sizes, "mean", idle_first).tolist() == [0.0, 0.5, 0.5]
    assert server_loss_weights(sizes, "weighted", idle_first).tolist() == pytest.approx(
        [0.0, 1 / 3, 2 / 3]
    )


def test_mean_server_loss_is_the_plain_mean_over_all_samples() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 5, generator=gen)  # (N, B, C)
    labels = torch.randint(0, 5, (3, 4), generator=gen)
    sizes = torch.tensor([1.0, 2.0, 97.0])  # very unequal: weighted would differ a lot
    loss, _ = weighted_client_loss(logits, labels, server_loss_weights(sizes, "mean"))
    plain = F.cross_entropy(logits.reshape(12, 5), labels.reshape(12))
    assert loss.item() == pytest.approx(plain.item(), rel=1e-6)
    weighted, _ = weighted_client_loss(logits, labels, server_loss_weights(sizes, "weighted"))
    assert weighted.item() != pytest.approx(plain.item(), rel=1e-3)


def test_server_loss_weights_reject_bad_input() -> None:
    sizes = torch.tensor([1.0, 2.0])
    with pytest.raises(ValueError, match="algorithm.server_loss.*mean, weighted"):
        server_loss_weights(sizes, "sum")
    with pytest.raises(ValueError, match="at least one True"):
        server_loss_weights(sizes, "mean", torch.tensor([False, False]))


def test_split_avg_over_the_batch_by_hand() -> None:
    grads = torch.tensor([[[1.0], [3.0]], [[5.0], [7.0]], [[10.0], [20.0]]])  # (3, 2, 1)
    mask = torch.tensor([True, True, False])
    # plain: (1 + 3 + 5 + 7) / 4 = 4 in every slot of clients 0 and 1
    out = split_avg(grads, mask, over="batch")
    assert torch.equal(out, torch.tensor([[[4.0], [4.0]], [[4.0], [4.0]], [[10.0], [20.0]]]))
    # size weights 1 : 3 -> batch means 2 and 6 -> (1 * 2 + 3 * 6) / 4 = 5
    out = split_avg_batch(grads, mask, torch.tensor([1.0, 3.0, 100.0]))
    assert torch.equal(out[:2], torch.full((2, 2, 1), 5.0)) and torch.equal(out[2], grads[2])
    # an empty mask changes nothing; a non-finite unmasked row does not leak
    assert torch.equal(split_avg(grads, torch.zeros(3, dtype=torch.bool), over="batch"), grads)
    bad = grads.clone()
    bad[2, 0, 0] = float("inf")
    assert torch.isfinite(split_avg(bad, mask, over="batch")[:2]).all()
    with pytest.raises(ValueError, match="avg_over.*slot, batch"):
        split_avg(grads, mask, over="sample")
    with pytest.raises(ValueError, match="weights"):
        split_avg_batch(grads, mask, torch.tensor([1.0, -1.0, 1.0]))


def test_averaged_participants_are_drawn_among_the_active_clients():
    active = torch.tensor([False, True, True, False, True, True, False, False])  # k = 4
    for step in range(20):
        mask = averaged_participants(active, 0.5, seed=7, step=step)
        assert int(mask.sum()) == 2 and not bool((mask & ~active).any())
    draws = {tuple(averaged_participants(active, 0.5, 7, s).tolist()) for s in range(20)}
    assert len(draws) > 1  # a new draw each step
    assert torch.equal(
        averaged_participants(active, 0.5, 7, 3), averaged_participants(active, 0.5, 7, 3)
    )  # a function of the step
    assert int(averaged_participants(active, 0.0, 7, 0).sum()) == 0
    assert not bool(averaged_participants(torch.zeros(4, dtype=torch.bool), 1.0, 7, 0).any())
