"""Unit tests (milliseconds): PSL's size-weighted server loss and identity transform.

Every expected value is computed by hand (closed-form softmax cross-entropies on tiny
logits), not by re-running the code under test.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lightning_gapsl.methods.shared.losses import (
    client_loss_weights,
    weighted_client_loss,
)

# --------------------------------------------------------------------------- weights


def test_weights_are_size_fractions_in_float32() -> None:
    w = client_loss_weights(torch.tensor([10, 30, 60]))
    assert w.dtype == torch.float32
    assert w.shape == (3,)
    torch.testing.assert_close(w, torch.tensor([0.1, 0.3, 0.6]), rtol=0, atol=1e-7)
    assert abs(w.sum().item() - 1.0) < 1e-6


def test_weights_sum_to_one_for_large_uneven_sizes() -> None:
    # Sizes beyond float32's exact-integer range (2**24): the float64 division matters.
    sizes = torch.tensor([1_000_003, 7, 16_777_217, 0, 123_456_789], dtype=torch.int64)
    w = client_loss_weights(sizes)
    assert w.dtype == torch.float32
    assert abs(w.double().sum().item() - 1.0) < 1e-6
    assert w[3].item() == 0.0
    expected = sizes.double() / sizes.double().sum()
    torch.testing.assert_close(w.double(), expected, rtol=1e-7, atol=0)


def test_weights_accept_float_sizes_and_do_not_modify_input() -> None:
    sizes = torch.tensor([1.0, 3.0], dtype=torch.float64)
    before = sizes.clone()
    w = client_loss_weights(sizes)
    assert torch.equal(sizes, before)
    torch.testing.assert_close(w, torch.tensor([0.25, 0.75]), rtol=0, atol=0)


@pytest.mark.parametrize(
    "sizes",
    [torch.tensor([3, -1]), torch.tensor([0, 0]), torch.tensor([[1, 2]]), torch.tensor([])],
)
def test_weights_reject_invalid_sizes(sizes: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="client_sizes"):
        client_loss_weights(sizes)


# --------------------------------------------------------------------------- loss


def test_single_client_unit_weight_equals_cross_entropy_float64() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 32, 10, generator=gen, dtype=torch.float64)  # (1, B, C)
    labels = torch.randint(0, 10, (1, 32), generator=gen)  # (1, B)
    loss, per_client = weighted_client_loss(logits, labels, torch.ones(1))
    ref = F.cross_entropy(logits[0], labels[0])
    assert abs(loss.item() - ref.item()) < 1e-7
    assert abs(per_client[0].item() - ref.item()) < 1e-7


def test_single_client_unit_weight_equals_cross_entropy_float32() -> None:
    # In float32 the two batch means differ only in summation order: F.cross_entropy's
    # "mean" reduction accumulates differently from torch.mean, which costs a few ulps
    # (an ulp at a loss of ~2.3 is 2.4e-7), so 1e-7 absolute is checked in float64
    # above and a few-ulp relative bound here.
    for seed in range(20):
        gen = torch.Generator().manual_seed(seed)
        logits = torch.randn(1, 64, 10, generator=gen)  # (1, B, C)
        labels = torch.randint(0, 10, (1, 64), generator=gen)  # (1, B)
        loss, _ = weighted_client_loss(logits, labels, torch.ones(1))
        ref = F.cross_entropy(logits[0], labels[0])
        torch.testing.assert_close(loss, ref, rtol=2e-6, atol=1e-7)


def _hand_example() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[float], float]:
    """Two clients, B=2, C=3, logits chosen so every softmax is a simple fraction."""
    ln3 = math.log(3.0)
    logits = torch.tensor(
        [
            [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],  # client 0: uniform, CE = ln 3 twice
            [[0.0, ln3, 0.0], [0.0, ln3, 0.0]],  # client 1: softmax = (1/5, 3/5, 1/5)
        ],
        dtype=torch.float64,
        requires_grad=True,
    )  # (N=2, B=2, C=3)
    labels = torch.tensor([[0, 2], [1, 0]])  # (2, 2)
    weights = torch.tensor([0.25, 0.75])  # (2,)
    ce0 = ln3
    ce1 = (math.log(5.0 / 3.0) + math.log(5.0)) / 2.0  # labels 1 (p=3/5) and 0 (p=1/5)
    return logits, labels, weights, [ce0, ce1], 0.25 * ce0 + 0.75 * ce1


def test_per_client_losses_and_weighted_sum_by_hand() -> None:
    logits, labels, weights, per_expected, loss_expected = _hand_example()
    loss, per_client = weighted_client_loss(logits, labels, weights)
    assert loss.shape == ()
    assert per_client.shape == (2,)
    torch.testing.assert_close(
        per_client, torch.tensor(per_expected, dtype=torch.float64), rtol=0, atol=1e-12
    )
    assert abs(loss.item() - loss_expected) < 1e-12
    # The loss keeps the float64 dtype of the logits even though weights are float32.
    assert loss.dtype == torch.float64


def test_per_client_is_detached_and_loss_gradient_by_hand() -> None:
    logits, labels, weights, _, _ = _hand_example()
    loss, per_client = weighted_client_loss(logits, labels, weights)
    assert loss.requires_grad
    assert not per_client.requires_grad
    loss.backward()
    # d loss / d logits[i, b] = w_i / B * (softmax - onehot). Client 0, sample 0:
    # softmax = 1/3 each, label 0 -> 0.25 / 2 * (1/3 - 1, 1/3, 1/3).
    expected = torch.tensor([-2.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0], dtype=torch.float64) / 8.0
    assert logits.grad is not None
    torch.testing.assert_close(logits.grad[0, 0], expected, rtol=0, atol=1e-12)
    # Client 1, sample 1: softmax (1/5, 3/5, 1/5), label 0 -> 0.75/2 * (-4/5, 3/5, 1/5).
    expected1 = torch.tensor([-0.8, 0.6, 0.2], dtype=torch.float64) * 0.375
    torch.testing.assert_close(logits.grad[1, 1], expected1, rtol=0, atol=1e-12)


def test_loss_does_not_modify_inputs() -> None:
    logits, labels, weights, _, _ = _hand_example()
    snapshot = (logits.detach().clone(), labels.clone(), weights.clone())
    weighted_client_loss(logits, labels, weights)
    assert torch.equal(logits.detach(), snapshot[0])
    assert torch.equal(labels, snapshot[1])
    assert torch.equal(weights, snapshot[2])


@pytest.mark.parametrize(
    ("logits_shape", "labels_shape", "weights_shape"),
    [
        ((2, 4), (2, 4), (2,)),  # logits not 3-D
        ((2, 4, 3), (2, 5), (2,)),  # labels batch mismatch
        ((2, 4, 3), (2, 4), (3,)),  # weights length mismatch
        ((2, 0, 3), (2, 0), (2,)),  # empty batch
    ],
)
def test_loss_rejects_bad_shapes(
    logits_shape: tuple[int, ...], labels_shape: tuple[int, ...], weights_shape: tuple[int, ...]
) -> None:
    with pytest.raises(ValueError):
        weighted_client_loss(
            torch.zeros(logits_shape),
            torch.zeros(labels_shape, dtype=torch.long),
            torch.ones(weights_shape),
        )
