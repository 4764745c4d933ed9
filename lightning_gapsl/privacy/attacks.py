"""The honest-but-curious server's inversion attackers (docs/explanations/privacy.md).

Both map a client segment's activations back to pixels ``[0, 1]`` and are fitted on the
auxiliary pairs ``(x_aux, f_c(x_aux))`` only; the pool images are never fitted on.

* `ridge_attack`: closed-form ridge regression in float64 from the flattened activations
  (plus an unpenalised bias) to the pixels, with a relative penalty
  ``lambda * trace(A^T A) / d`` chosen on the last 20% of the auxiliary set from
  `RIDGE_LAMBDAS`, then refitted on all of it. The relative penalty and the centring make
  it invariant to scaling, shifting and rotating the activations: the instrument cannot
  be fooled by the activations' scale.
* `conv_attack`: a small seeded convolutional decoder trained with MSE and Adam.
"""

from __future__ import annotations

import torch
from torch import nn

RIDGE_LAMBDAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
HOLDOUT = 0.2  # share of the auxiliary set that picks the ridge penalty


def _informative(a: torch.Tensor) -> torch.Tensor:
    """(n, d) float64 -> the columns that vary (constant ones carry nothing, and their
    rounding noise would be scaled up by a relative penalty)."""
    spread = a.std(0) if a.shape[0] > 1 else torch.zeros(a.shape[1], dtype=a.dtype)
    return spread > 1e-9 * (1.0 + a.abs().mean(0))


def _ridge_predictor(a_fit: torch.Tensor, x_fit: torch.Tensor):
    """Fit on a_fit (n, d) float64 -> x_fit (n, p) float64; returns predict(a, lam) -> (m, p).

    One eigendecomposition serves every penalty: of A^T A (d x d) when d <= n, else of
    the kernel A A^T (n x n) (the dual form, for wide activations).
    """
    keep = _informative(a_fit)
    x_mean = x_fit.mean(0)  # (p,)
    if not bool(keep.any()):  # a constant client: the best it can give is the mean image
        return lambda a, lam: x_mean.expand(a.shape[0], -1)
    a_fit = a_fit[:, keep]
    a_mean = a_fit.mean(0)
    ac, xc = a_fit - a_mean, x_fit - x_mean  # (n, d), (n, p)
    n, d = ac.shape
    primal = d <= n
    s, v = torch.linalg.eigh(ac.T @ ac if primal else ac @ ac.T)  # (r,), (d or n, r)
    s = s.clamp_min(0.0)
    trace = float(s.sum())
    proj = v.T @ (ac.T @ xc) if primal else v.T @ xc  # (r, p)

    def predict(a: torch.Tensor, lam: float) -> torch.Tensor:
        q = a[:, keep] - a_mean  # (m, d)
        q = q @ v if primal else (q @ ac.T) @ v  # (m, r)
        return x_mean + q @ (proj / (s + lam * trace / d)[:, None])

    return predict


def _ridge_refit(a_fit: torch.Tensor, x_fit: torch.Tensor, lam: float):
    """The same ridge at one penalty, by a Cholesky solve (cheaper than a second
    eigendecomposition); returns predict(a) -> (m, p)."""
    keep = _informative(a_fit)
    x_mean = x_fit.mean(0)  # (p,)
    if not bool(keep.any()):
        return lambda a: x_mean.expand(a.shape[0], -1)
    a_fit = a_fit[:, keep]
    a_mean = a_fit.mean(0)
    ac, xc = a_fit - a_mean, x_fit - x_mean  # (n, d), (n, p)
    n, d = ac.shape
    primal = d <= n
    gram = ac.T @ ac if primal else ac @ ac.T  # (d, d) or (n, n)
    ridge = lam * float(gram.diagonal().sum()) / d
    chol = torch.linalg.cholesky(gram + ridge * torch.eye(gram.shape[0], dtype=gram.dtype))
    coef = torch.cholesky_solve(ac.T @ xc if primal else xc, chol)  # (d or n, p)

    def predict(a: torch.Tensor) -> torch.Tensor:
        q = a[:, keep] - a_mean  # (m, d)
        return x_mean + (q if primal else q @ ac.T) @ coef

    return predict


def _clip(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return x.clamp(0.0, 1.0).reshape(-1, *like.shape[1:])


def ridge_attack(
    a_aux: torch.Tensor, x_aux: torch.Tensor, a_eval: torch.Tensor
) -> tuple[torch.Tensor, float]:
    """Reconstruct pixels from activations; returns (images like x_aux (m, C, H, W), lambda).

    a_aux (n, ...) activations of the auxiliary images x_aux (n, C, H, W) in [0, 1];
    a_eval (m, ...) the activations to invert. All arithmetic in float64.
    """
    a = a_aux.reshape(a_aux.shape[0], -1).double()  # (n, d)
    x = x_aux.reshape(x_aux.shape[0], -1).double()  # (n, p)
    cut = a.shape[0] - max(1, int(round(HOLDOUT * a.shape[0])))
    predict = _ridge_predictor(a[:cut], x[:cut])
    errors = [
        float((_clip(predict(a[cut:], lam), x_aux) - _clip(x[cut:], x_aux)).pow(2).mean())
        for lam in RIDGE_LAMBDAS
    ]
    lam = RIDGE_LAMBDAS[min(range(len(errors)), key=errors.__getitem__)]
    refit = _ridge_refit(a, x, lam)
    return _clip(refit(a_eval.reshape(a_eval.shape[0], -1).double()), x_aux).float(), lam


class ConvDecoder(nn.Module):
    """Activations (B, *F) -> images (B, C, H, W) in [0, 1]: two 3x3 convolutions at the
    activations' resolution, a bilinear upsample to the image size, a 3x3 convolution and
    a sigmoid. Flat activations (B, F) first go through a linear layer to a 7x7 map."""

    def __init__(
        self, act_shape: tuple[int, ...], image_shape: tuple[int, int, int], width: int = 16
    ):
        super().__init__()
        channels, height, width_px = image_shape
        if len(act_shape) == 3:
            stem: list[nn.Module] = []
            in_ch = act_shape[0]
        else:
            side = 7
            stem = [
                nn.Flatten(),
                nn.Linear(int(torch.tensor(act_shape).prod()), width * side * side),
                nn.ReLU(),
                nn.Unflatten(1, (width, side, side)),
            ]
            in_ch = width
        self.net = nn.Sequential(
            *stem,
            nn.Conv2d(in_ch, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.Upsample(size=(height, width_px), mode="bilinear", align_corners=False),
            nn.Conv2d(width, channels, 3, padding=1),
            nn.Sigmoid(),
        )

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return self.net(a)


def conv_attack(
    a_aux: torch.Tensor,
    x_aux: torch.Tensor,
    a_eval: torch.Tensor,
    seed: int,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 1e-3,
) -> torch.Tensor:
    """Train a `ConvDecoder` on (a_aux (n, *F), x_aux (n, C, H, W)) with MSE and Adam;
    return its reconstructions of a_eval (m, *F) -> (m, C, H, W).

    Seeded by ``seed`` (initialisation and batch order) on a forked RNG; activations are
    standardised by their auxiliary mean and std first (a scale-free input, like the
    ridge attacker's relative penalty).
    """
    a_aux, a_eval, x_aux = a_aux.float(), a_eval.float(), x_aux.float()
    mean, std = a_aux.mean(), a_aux.std().clamp_min(1e-12)
    a_aux, a_eval = (a_aux - mean) / std, (a_eval - mean) / std
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        decoder = ConvDecoder(tuple(a_aux.shape[1:]), tuple(x_aux.shape[1:]))
        order = torch.Generator().manual_seed(seed + 1)
        optimizer = torch.optim.Adam(decoder.parameters(), lr=lr)
        with torch.enable_grad():
            for _ in range(epochs):
                for idx in torch.randperm(a_aux.shape[0], generator=order).split(batch_size):
                    loss = nn.functional.mse_loss(decoder(a_aux[idx]), x_aux[idx])
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
    with torch.no_grad():
        return torch.cat([decoder(chunk) for chunk in a_eval.split(500)])
