"""Unit tests (seconds): the inversion attackers and the leakage index on client segments
whose leakage is known: identity (1), constant (0), independent noise (about 0), and
invariance to the activations' scale and rotation (the tests docs/explanations/privacy.md lists).
Real images (scikit-learn's 8 x 8 digits), the real evaluation functions, no mocks."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from lightning_gapsl.privacy.attacks import conv_attack, ridge_attack
from lightning_gapsl.privacy.config import DefenseConfig, PrivacyConfig
from lightning_gapsl.privacy.evaluate import (
    SCALARS,
    _client_entry,
    chosen_clients,
    evaluate_client,
    privacy_data,
    references,
)
from lightning_gapsl.privacy.metrics import u_centred_distances


@pytest.fixture(scope="module")
def data():
    x = torch.tensor(load_digits().images, dtype=torch.float32)[:1000, None]  # (n, 1, 8, 8)
    return privacy_data((x - 4.9) / 6.0, aux_size=750, pool_size=250)  # normalized inputs


def _cfg(noise: float = 0.0):
    return SimpleNamespace(
        privacy=PrivacyConfig(mode="fast"), defense=DefenseConfig(activation_noise=noise)
    )


def _features(seed: int = 0) -> nn.Module:
    """A fixed random conv + ReLU segment: a plausible, lossy client."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))


class Constant(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return self.w * torch.ones(x.shape[0], 3, 4, 4)


class Noise(nn.Module):
    """Activations independent of the input (a fixed random draw per call order)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))
        self.gen = torch.Generator().manual_seed(11)

    def forward(self, x):
        return self.w * torch.randn(x.shape[0], 32, generator=self.gen)


class Then(nn.Module):
    """A segment followed by a fixed linear map of its flattened output."""

    def __init__(self, inner: nn.Module, matrix: torch.Tensor):
        super().__init__()
        self.inner, self.matrix = inner, matrix

    def forward(self, x):
        return self.inner(x).flatten(1) @ self.matrix


def _entry(segment, data, noise: float = 0.0) -> dict:
    cfg = _cfg(noise)
    row = evaluate_client(segment, data, u_centred_distances(data.x_pool), cfg, 0, conv=False)
    return _client_entry(row, references(data, cfg, conv=False))


def test_identity_client_has_index_one_and_constant_client_zero(data):
    identity = _entry(Then(nn.Flatten(), torch.eye(64)), data)
    assert identity["ridge"]["leakage"] == pytest.approx(1.0, abs=1e-6)
    assert identity["dcor"] == pytest.approx(1.0, abs=1e-9)
    constant = _entry(Constant(), data)
    assert constant["ridge"]["leakage"] == pytest.approx(0.0, abs=1e-9)
    assert constant["dcor"] == 0.0


def test_independent_noise_client_leaks_nothing(data):
    noise = _entry(Noise(), data)
    assert noise["ridge"]["leakage"] <= 0.05
    assert abs(noise["dcor"]) < 0.02


def test_leakage_is_unchanged_under_scaling_and_rotation_of_the_activations(data):
    base = _features()
    d = 4 * 4 * 4
    rotation, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(3)))
    plain = _entry(Then(base, torch.eye(d)), data)
    for matrix in (25.0 * torch.eye(d), rotation, 0.01 * rotation):
        other = _entry(Then(base, matrix), data)
        assert other["ridge"]["leakage"] == pytest.approx(plain["ridge"]["leakage"], abs=1e-4)
        assert other["dcor"] == pytest.approx(plain["dcor"], abs=1e-5)
    assert 0.05 < plain["ridge"]["leakage"] < 1.0  # a lossy client: between the references


def test_leakage_falls_strictly_as_activation_noise_grows(data):
    segment = _features()
    leakage = [_entry(segment, data, noise)["ridge"]["leakage"] for noise in (0, 0.3, 1, 3)]
    dcor = [_entry(segment, data, noise)["dcor"] for noise in (0, 0.3, 1, 3)]
    assert all(a > b for a, b in zip(leakage, leakage[1:], strict=False)), leakage
    assert all(a > b for a, b in zip(dcor, dcor[1:], strict=False)), dcor


def test_ridge_picks_the_penalty_on_held_out_auxiliary_images(data):
    rec, lam = ridge_attack(data.x_aux, data.pix_aux, data.x_pool)  # the identity client
    assert lam == 1e-4 and rec.shape == data.pix_pool.shape
    noisy = data.x_aux + 3 * torch.randn(
        data.x_aux.shape, generator=torch.Generator().manual_seed(1)
    )
    _, lam_noisy = ridge_attack(noisy, data.pix_aux, data.x_pool)
    assert lam_noisy > lam  # noisier activations need a stronger penalty


def test_conv_decoder_is_seeded_and_learns(data):
    a, b = (conv_attack(data.x_aux, data.pix_aux, data.x_pool, seed=5, epochs=20) for _ in range(2))
    assert torch.equal(a, b)
    floor = (data.pix_aux.mean(0) - data.pix_pool).pow(2).mean()
    assert (a - data.pix_pool).pow(2).mean() < floor  # beats the mean image


def test_chosen_clients_first_median_largest():
    sizes = torch.tensor([5.0, 50.0, 20.0, 10.0, 50.0])
    ridge, conv = chosen_clients("fast", sizes, one_model=False)
    assert ridge == [0, 1, 2] and conv == []  # median-size: client 2 (20); largest: 1
    assert chosen_clients("fast", sizes, False, all_clients=True) == ([0, 1, 2, 3, 4], [])
    ridge, conv = chosen_clients("full", sizes, one_model=False)
    assert ridge == [0, 1, 2, 3, 4] and conv == [0, 1, 2]
    assert chosen_clients("full", sizes, one_model=True) == ([0], [0])
    assert len(SCALARS) == 11


def test_ridge_primal_and_dual_forms_match_the_closed_form():
    from lightning_gapsl.privacy.attacks import _ridge_predictor, _ridge_refit

    gen = torch.Generator().manual_seed(9)
    for n, d in ((200, 30), (40, 120)):  # primal (d <= n) and dual (d > n)
        a = torch.randn(n, d, generator=gen, dtype=torch.float64)
        x = torch.rand(n, 5, generator=gen, dtype=torch.float64)
        ac, xc = a - a.mean(0), x - x.mean(0)
        lam = 0.1 * float((ac * ac).sum()) / d  # the relative penalty
        w = torch.linalg.solve(ac.T @ ac + lam * torch.eye(d, dtype=torch.float64), ac.T @ xc)
        q = torch.randn(7, d, generator=gen, dtype=torch.float64)
        expected = x.mean(0) + (q - a.mean(0)) @ w  # (7, 5)
        assert torch.allclose(_ridge_predictor(a, x)(q, 0.1), expected, atol=1e-8)
        assert torch.allclose(_ridge_refit(a, x, 0.1)(q), expected, atol=1e-8)
