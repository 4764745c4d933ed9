"""Leakage metrics as pure functions over tensors (docs/explanations/privacy.md).

* `distance_correlation`: the bias-corrected squared distance correlation (Szekely &
  Rizzo 2014, U-centred distance matrices), Euclidean distances (exponent 1), float64.
  Not the plain V-statistic (a positive floor of about 0.3 for independent noise in high
  dimension) and not the squared-distance form many NoPeek copies use (that is a linear
  RV-type coefficient: corr^2 in one dimension, blind to non-linear dependence).
* `psnr`, `ssim`, `mse`: per-image reconstruction scores in pixel space ``[0, 1]``.
* `leakage_index`: an attacker's PSNR placed between a constant client (0) and an
  identity client (1).
"""

from __future__ import annotations

import torch
from torchmetrics.functional.image import structural_similarity_index_measure

# PSNR is capped at 100 dB (MSE floor 1e-10): a perfect reconstruction would be +inf.
MSE_FLOOR = 1e-10


def _flat64(z: torch.Tensor) -> torch.Tensor:
    """(n, ...) -> (n, d) float64, centred (distances are translation invariant; centring
    first makes a constant input exactly zero, so its distances are exactly 0)."""
    z = z.reshape(z.shape[0], -1).double()
    return z - z.mean(0, keepdim=True)


def pairwise_distances(z: torch.Tensor) -> torch.Tensor:
    """(n, ...) -> (n, n) Euclidean distances, float64, exact zeros on the diagonal.

    Differentiable (NoPeek): the square root is taken only where the squared distance is
    clearly positive, so coincident points give distance 0 and a zero (not NaN) gradient.
    """
    z = _flat64(z)  # (n, d)
    sq = (z * z).sum(1)  # (n,)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (z @ z.T)  # (n, n)
    tiny = 1e-12 * sq.detach().max().clamp_min(1e-300)  # Gram-form rounding of |z|^2
    positive = d2 > tiny
    return torch.where(positive, torch.where(positive, d2, 1.0).sqrt(), 0.0)


def u_centre(a: torch.Tensor) -> torch.Tensor:
    """(n, n) distance matrix -> its U-centred version (zero diagonal), n >= 4."""
    n = a.shape[0]
    if n < 4:
        raise ValueError(f"distance correlation needs at least 4 samples, got {n}")
    row = a.sum(1, keepdim=True) / (n - 2)  # (n, 1)
    col = a.sum(0, keepdim=True) / (n - 2)  # (1, n)
    total = a.sum() / ((n - 1) * (n - 2))
    off_diagonal = 1.0 - torch.eye(n, dtype=a.dtype, device=a.device)
    return (a - row - col + total) * off_diagonal


def _u_inner(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The unbiased inner product of two U-centred (n, n) matrices."""
    n = u.shape[0]
    return (u * v).sum() / (n * (n - 3))


def u_centred_distances(z: torch.Tensor) -> torch.Tensor:
    """(n, ...) samples -> their U-centred Euclidean distance matrix (n, n), float64."""
    return u_centre(pairwise_distances(z))


def distance_correlation_u(ux: torch.Tensor, uy: torch.Tensor) -> torch.Tensor:
    """Bias-corrected squared distance correlation from two U-centred matrices (0-d).

    0 when either distance variance is (numerically) 0, e.g. for a constant input.
    Can be slightly negative for independent samples (it is unbiased, not clipped).
    """
    vx, vy = _u_inner(ux, ux), _u_inner(uy, uy)
    if float(vx.detach()) <= 0.0 or float(vy.detach()) <= 0.0:
        return ux.new_zeros(())
    return _u_inner(ux, uy) / (vx * vy).sqrt()


def distance_correlation(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Bias-corrected squared distance correlation of x (n, ...) and y (n, ...) (0-d float64).

    1 for y = x, a scaled copy or an orthogonal rotation of x; 0 for a constant y; about 0
    (|value| ~ 1/n) for independent samples.
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x and y need the same number of samples, got {x.shape[0]} and {y.shape[0]}"
        )
    return distance_correlation_u(u_centred_distances(x), u_centred_distances(y))


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared error: (n, C, H, W) x2 -> (n,) float64."""
    return (pred.double() - target.double()).pow(2).flatten(1).mean(1)


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB for data range 1: (n, C, H, W) x2 -> (n,) float64."""
    return 10.0 * torch.log10(1.0 / mse(pred, target).clamp_min(MSE_FLOOR))


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM (torchmetrics, data_range 1, Gaussian window): (n, C, H, W) x2 -> (n,).

    The window is 11 pixels (the standard) or the largest odd size that fits smaller
    images (digits are 8 x 8). Computed in float32 (8x faster than float64 on CPU; the
    two agree to about 1e-6) and returned as float64.
    """
    side = min(pred.shape[-2:])
    kernel = min(11, side - 1 if side % 2 == 0 else side - 2)
    if kernel < 3:
        raise ValueError(f"SSIM needs images of at least 4 x 4 pixels, got {tuple(pred.shape)}")
    return structural_similarity_index_measure(
        pred.float(), target.float(), data_range=1.0, kernel_size=kernel, reduction="none"
    ).double()


def leakage_index(psnr_client: float, psnr_constant: float, psnr_identity: float) -> float:
    """(PSNR_c - PSNR_const) / (PSNR_id - PSNR_const): 0 at the constant client (the mean
    image), 1 at the identity client (a = x), same attacker; NaN if the two references
    coincide (the attacker learns nothing even from x itself)."""
    span = psnr_identity - psnr_constant
    if not span > 0:
        return float("nan")
    return (psnr_client - psnr_constant) / span
