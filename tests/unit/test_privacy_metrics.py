"""Unit tests (milliseconds to a second): the leakage metrics on inputs whose answer is
known by hand or in closed form (the tests docs/explanations/privacy.md lists)."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_gapsl.privacy.metrics import (
    distance_correlation,
    leakage_index,
    mse,
    psnr,
    ssim,
    u_centre,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _rotation(d: int, seed: int = 1) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=_gen(seed), dtype=torch.float64))
    return q  # (d, d) orthogonal


def test_dcor_is_one_for_identity_scaled_and_rotated_copies():
    x = torch.randn(200, 3, 4, 4, generator=_gen())  # (n, C, H, W)
    flat = x.flatten(1).double()  # (n, 48)
    assert float(distance_correlation(x, x)) == pytest.approx(1.0, abs=1e-9)
    assert float(distance_correlation(x, 7.5 * x + 3.0)) == pytest.approx(1.0, abs=1e-9)
    assert float(distance_correlation(x, flat @ _rotation(48))) == pytest.approx(1.0, abs=1e-9)


def test_dcor_of_a_constant_is_zero():
    x = torch.randn(100, 8, generator=_gen())
    assert float(distance_correlation(x, torch.full((100, 5), 3.25))) == 0.0
    assert float(distance_correlation(torch.zeros(100, 2), x)) == 0.0


def test_dcor_of_independent_noise_is_near_zero():
    # The plain V-statistic sits near 0.29 here; the bias-corrected one near 0.
    x = torch.randn(1000, 64, generator=_gen(2))
    y = torch.randn(1000, 64, generator=_gen(3))
    assert abs(float(distance_correlation(x, y))) < 0.02


def _bivariate_normal_dcor2(rho: float) -> float:
    """Population squared distance correlation of a standard bivariate normal
    (Szekely, Rizzo & Bakirov 2007, Theorem 7)."""
    r = abs(rho)
    num = r * math.asin(r) + math.sqrt(1 - r * r) - r * math.asin(r / 2) - math.sqrt(4 - r * r) + 1
    return num / (1 + math.pi / 3 - math.sqrt(3))


def test_dcor_of_a_bivariate_normal_matches_the_closed_form():
    rho, n = 0.6, 2000
    expected = _bivariate_normal_dcor2(rho)
    assert expected == pytest.approx(0.3028, abs=1e-3)  # the value by hand
    z = torch.randn(n, 2, generator=_gen(4), dtype=torch.float64)
    x = z[:, :1]
    y = rho * z[:, :1] + math.sqrt(1 - rho**2) * z[:, 1:]
    assert float(distance_correlation(x, y)) == pytest.approx(expected, abs=0.05)


def _squared_distance_form(x: torch.Tensor, y: torch.Tensor) -> float:
    """What many NoPeek copies compute: the same U-statistic on squared distances."""

    def u(z):
        z = z.reshape(z.shape[0], -1).double()
        return u_centre(torch.cdist(z, z) ** 2)

    ux, uy = u(x), u(y)
    return float((ux * uy).sum() / ((ux * ux).sum() * (uy * uy).sum()).sqrt())


def test_the_squared_distance_form_is_detected_as_wrong():
    # On y = x^3 the squared-distance form is the squared Pearson correlation (3/5 for a
    # standard normal x), a linear coefficient; distance correlation is not.
    x = torch.randn(2000, 1, generator=_gen(5), dtype=torch.float64)
    y = x**3
    squared_form = _squared_distance_form(x, y)
    assert squared_form == pytest.approx(0.6, abs=0.1)
    assert abs(float(distance_correlation(x, y)) - squared_form) > 0.1


def test_dcor_is_differentiable_without_nans_on_coincident_points():
    x = torch.randn(16, 4, generator=_gen(6))
    a = torch.cat([x[:8], x[:8]]).clone().requires_grad_(True)  # duplicated rows: distance 0
    distance_correlation(x, a).backward()
    assert torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0


def test_pixel_scores_by_hand():
    target = torch.zeros(2, 1, 8, 8)
    pred = torch.zeros(2, 1, 8, 8)
    pred[0] += 0.1  # MSE 0.01 -> 20 dB
    pred[1] += 0.01  # MSE 1e-4 -> 40 dB
    assert mse(pred, target).tolist() == pytest.approx([0.01, 1e-4])
    assert psnr(pred, target).tolist() == pytest.approx([20.0, 40.0])
    assert float(psnr(target, target)[0]) == pytest.approx(100.0)  # capped, not inf
    image = torch.rand(3, 1, 28, 28, generator=_gen(7))
    assert ssim(image, image).tolist() == pytest.approx([1.0] * 3, abs=1e-6)
    assert (ssim(torch.rand(3, 1, 28, 28, generator=_gen(8)), image) < 0.2).all()
    assert ssim(pred, target).shape == (2,)  # 8 x 8 images use a smaller window


def test_leakage_index_places_psnr_between_the_references():
    assert leakage_index(10.0, 10.0, 30.0) == 0.0
    assert leakage_index(30.0, 10.0, 30.0) == 1.0
    assert leakage_index(15.0, 10.0, 30.0) == pytest.approx(0.25)
    assert math.isnan(leakage_index(15.0, 10.0, 10.0))
