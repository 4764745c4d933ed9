"""Unit tests (milliseconds): LocFedMix-SL's mixup partners and coefficients, the
server-only mixup of smashed data, soft cross-entropy, the reconstruction decoder and
the FedAvg schedule.

Mixup expectations are worked out by hand on integer activations.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_gapsl.methods.locfedmix.math import (
    decoder_for,
    draw_lambda,
    fedavg_due,
    mix_partners,
    mixup_smashed,
    reconstruction_loss,
    soft_cross_entropy,
)

# --------------------------------------------------------------------------- partners


@pytest.mark.parametrize(("n", "p"), [(5, 2), (4, 3), (2, 1), (1, 0), (6, 0)])
def test_mix_partners_are_distinct_other_clients(n: int, p: int) -> None:
    partners = mix_partners(n, p, seed=0, step=3)
    assert partners.dtype == torch.long and partners.shape == (n, p)
    for i, row in enumerate(partners.tolist()):
        assert i not in row
        assert len(set(row)) == p
        assert all(0 <= j < n for j in row)


def test_mix_partners_all_others_when_p_is_n_minus_1() -> None:
    partners = mix_partners(4, 3, seed=1, step=0)
    for i, row in enumerate(partners.tolist()):
        assert sorted(row) == [j for j in range(4) if j != i]


def test_mix_partners_seeded_by_step_and_cover_all_clients() -> None:
    assert torch.equal(mix_partners(6, 2, 5, 9), mix_partners(6, 2, 5, 9))
    draws = [mix_partners(4, 1, seed=5, step=s) for s in range(60)]
    assert len({tuple(d.flatten().tolist()) for d in draws}) > 1
    assert {int(d[0, 0]) for d in draws} == {1, 2, 3}  # every other client gets picked


@pytest.mark.parametrize(("n", "p"), [(3, 3), (3, -1)])
def test_mix_partners_rejects_bad_count(n: int, p: int) -> None:
    with pytest.raises(ValueError, match="algorithm.num_partners"):
        mix_partners(n, p, seed=0, step=0)


# --------------------------------------------------------------------------- lambda


def test_draw_lambda_shape_range_and_determinism() -> None:
    lam = draw_lambda(3, 2, alpha=0.4, seed=0, step=1)
    assert lam.shape == (3, 2) and lam.dtype == torch.float32
    assert bool(((lam >= 0) & (lam <= 1)).all())
    assert torch.equal(lam, draw_lambda(3, 2, alpha=0.4, seed=0, step=1))
    assert not torch.equal(lam, draw_lambda(3, 2, alpha=0.4, seed=0, step=2))


def test_draw_lambda_moments_and_no_global_rng_use() -> None:
    state = torch.get_rng_state()
    lam = draw_lambda(100, 50, alpha=2.0, seed=0, step=0).double()
    assert torch.equal(torch.get_rng_state(), state)
    # Beta(2, 2): mean 1/2, variance a^2 / ((2a)^2 (2a + 1)) = 1/20; 5000 draws
    assert abs(lam.mean().item() - 0.5) < 0.02
    assert abs(lam.var().item() - 0.05) < 0.01


@pytest.mark.parametrize("alpha", [0.0, -1.0, math.inf])
def test_draw_lambda_rejects_bad_alpha(alpha: float) -> None:
    with pytest.raises(ValueError, match="algorithm.mix_alpha"):
        draw_lambda(2, 1, alpha=alpha, seed=0, step=0)


# --------------------------------------------------------------------------- mixup


def test_mixup_smashed_hand_example() -> None:
    acts = torch.tensor([[[1.0], [2.0]], [[3.0], [5.0]]])  # (N=2, B=2, F=1)
    onehot = F.one_hot(torch.tensor([[0, 1], [1, 1]]), 2).float()  # (N, B, C=2)
    partners = torch.tensor([[1], [0]])  # (N, P=1)
    lam = torch.tensor([[0.25], [0.5]])
    mixed, targets = mixup_smashed(acts, onehot, partners, lam)
    # row 0: 0.25 * [1, 2] + 0.75 * [3, 5]; row 1: 0.5 * [3, 5] + 0.5 * [1, 2]
    assert torch.equal(mixed, torch.tensor([[[2.5], [4.25]], [[2.0], [3.5]]]))
    expected_targets = torch.tensor([[[0.25, 0.75], [0.0, 1.0]], [[0.5, 0.5], [0.0, 1.0]]])
    assert torch.equal(targets, expected_targets)


def test_mixup_smashed_row_order_and_extreme_lambdas() -> None:
    gen = torch.Generator().manual_seed(0)
    acts = torch.randn(3, 4, 2, 3, 3, generator=gen)  # (N, B, C, H, W)
    onehot = F.one_hot(torch.randint(0, 5, (3, 4), generator=gen), 5).float()
    partners = torch.tensor([[1, 2], [2, 0], [0, 1]])  # (N, P=2)
    lam = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    mixed, targets = mixup_smashed(acts, onehot, partners, lam)
    assert mixed.shape == (6, 4, 2, 3, 3) and targets.shape == (6, 4, 5)
    for i in range(3):  # row i * P + p: lam = 1 keeps client i, lam = 0 takes the partner
        assert torch.equal(mixed[2 * i], acts[i])
        assert torch.equal(mixed[2 * i + 1], acts[partners[i, 1]])
        assert torch.equal(targets[2 * i + 1], onehot[partners[i, 1]])


def test_mixup_loss_updates_the_server_only() -> None:
    client = nn.Linear(3, 4)
    server = nn.Linear(4, 2)
    x = torch.randn(2, 5, 3)  # (N, B, in)
    acts = client(x)  # (N, B, 4), attached to the clients' graph
    onehot = F.one_hot(torch.randint(0, 2, (2, 5)), 2).float()
    mixed, targets = mixup_smashed(acts, onehot, torch.tensor([[1], [0]]), torch.full((2, 1), 0.3))
    assert not mixed.requires_grad
    soft_cross_entropy(server(mixed).reshape(-1, 2), targets.reshape(-1, 2)).backward()
    assert server.weight.grad is not None
    assert client.weight.grad is None


# --------------------------------------------------------------------------- losses


def test_soft_cross_entropy_matches_hand_and_torch() -> None:
    # uniform logits: -sum_c t_c log(1/4) = log 4 whatever the target distribution
    t = torch.tensor([[0.1, 0.2, 0.3, 0.4], [1.0, 0.0, 0.0, 0.0]])
    assert soft_cross_entropy(torch.zeros(2, 4), t).item() == pytest.approx(math.log(4))
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, generator=gen)
    labels = torch.randint(0, 5, (6,), generator=gen)
    onehot = F.one_hot(labels, 5).float()
    assert torch.allclose(soft_cross_entropy(logits, onehot), F.cross_entropy(logits, labels))
    probs = torch.softmax(torch.randn(6, 5, generator=gen), dim=1)
    assert torch.allclose(soft_cross_entropy(logits, probs), F.cross_entropy(logits, probs))


def test_reconstruction_loss_is_mse_and_trains_the_decoded_side() -> None:
    decoded = torch.tensor([[1.0, 2.0]], requires_grad=True)
    inputs = torch.zeros(1, 2)
    loss = reconstruction_loss(decoded, inputs)
    assert loss.item() == 2.5  # (1 + 4) / 2
    loss.backward()
    assert torch.equal(decoded.grad, torch.tensor([[1.0, 2.0]]))  # 2 * (d - x) / 2
    with pytest.raises(ValueError):
        reconstruction_loss(decoded, torch.zeros(2, 1))


@pytest.mark.parametrize(
    ("act", "inp"),
    [
        ((8, 14, 14), (1, 28, 28)),
        ((16, 7, 7), (1, 28, 28)),
        ((64, 32, 32), (3, 32, 32)),
        ((128,), (1, 28, 28)),
        ((6, 12, 12), (1, 28, 28)),  # not a power-of-two ratio
        ((16, 30, 30), (1, 28, 28)),  # larger than the input
        ((8, 4, 4), (64,)),  # flat input
    ],
)
def test_decoder_for_produces_the_input_shape(act: tuple, inp: tuple) -> None:
    dec = decoder_for(act, inp)
    z = torch.randn(2, *act, requires_grad=True)
    out = dec(z)
    assert out.shape == (2, *inp)
    out.sum().backward()
    assert z.grad is not None  # the regularizer reaches the client segment
    norms = (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)
    assert not any(isinstance(m, norms) for m in dec.modules())


# --------------------------------------------------------------------------- schedule


def test_fedavg_due_every_interval_rounds() -> None:
    assert [fedavg_due(r, 3) for r in range(7)] == [False, False, True, False, False, True, False]
    assert all(fedavg_due(r, 1) for r in range(5))
    with pytest.raises(ValueError, match="algorithm.fedavg_interval"):
        fedavg_due(0, 0)
