"""Defenses of the smashed data, as pure functions (also the instrument's positive
controls: both must lower the measured leakage).

* `add_activation_noise`: Gaussian noise with sigma = ``sigma`` x the std of each
  client's activations (detached), drawn from (seed, client id, step): the same noise in
  every layout. Additive, so the cut gradient the server returns is also the gradient
  of the clean activations.
* `nopeek_losses`: the bias-corrected distance correlation between each client's batch
  and its activations (NoPeek, Vepakomma et al. 2020, with Euclidean distances).
"""

from __future__ import annotations

import torch

from lightning_gapsl.privacy.metrics import distance_correlation
from lightning_gapsl.seeding import generator


def add_activation_noise(
    acts: torch.Tensor, sigma: float, seed: int, client_ids: list[int], step: int | str
) -> torch.Tensor:
    """acts (K, B, *F) of clients ``client_ids`` (K) -> acts + noise (K, B, *F).

    ``sigma`` <= 0 returns ``acts`` itself (the defaults compute exactly what they did).
    """
    if sigma <= 0:
        return acts
    noise = torch.stack(
        [
            torch.randn(acts.shape[1:], generator=generator(seed, "activation_noise", c, step))
            for c in client_ids
        ]
    ).to(acts)  # (K, B, *F)
    scale = acts.detach().flatten(1).std(1).view(-1, *([1] * (acts.dim() - 1)))  # (K, 1, ...)
    return acts + sigma * scale * noise


def nopeek_losses(x: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
    """x (K, B, ...) inputs, acts (K, B, *F) activations -> (K,) distance correlations,
    differentiable in ``acts`` (float64)."""
    return torch.stack([distance_correlation(x[k].detach(), acts[k]) for k in range(acts.shape[0])])
