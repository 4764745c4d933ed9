"""LocFedMix-SL: PSL + a local reconstruction regularizer + server-side mixup + FedAvg.

LocFedMix-SL (docs/explanations/methods.md) adds three things to parallel split learning:

1. **Local regularizer** (`decoder_for`, `reconstruction_loss`): each client owns a
   small decoder from its smashed data back to its input and adds the reconstruction
   MSE to its loss, so the client segment keeps the information about the input that
   the server may need (it cannot collapse to what its own label skew rewards).
2. **Server-side mixup** (`mix_partners`, `draw_lambda`, `mixup_smashed`,
   `soft_cross_entropy`): the server mixes the smashed data of different clients,
   ``lam * z_i + (1 - lam) * z_p`` sample slot by sample slot, with the one-hot labels
   mixed the same way, ``lam ~ Beta(alpha, alpha)``. The mixup loss updates the server
   segment only: the mixed activations are built from detached activations, so no
   gradient of it reaches any client.
3. **FedAvg** of client segments every ``T_c`` rounds (`fedavg_due`; the average itself
   is `lightning_gapsl.methods.shared.fedavg`).

Randomness (partners, lambdas) is seeded by ``(seed, "locfedmix", step)``, never by
rank. Pure functions: no process groups, no Lightning, no globals, no in-place input
modification.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_gapsl.seeding import derive_seed, generator

__all__ = [
    "decoder_for",
    "draw_lambda",
    "fedavg_due",
    "mix_partners",
    "mixup_smashed",
    "reconstruction_loss",
    "soft_cross_entropy",
]


# --------------------------------------------------------------------------- mixup


def mix_partners(num_clients: int, num_partners: int, seed: int, step: int) -> Tensor:
    """Each client's mixup partners for one step: ``(N, P)`` int64 client ids.

    Row ``i`` holds ``P`` distinct client ids, none equal to ``i`` (mixing a client with
    itself is plain data, not a cross-client mix), uniformly drawn without replacement.

    Args:
        num_clients: ``N >= 1``.
        num_partners: ``P`` in ``[0, N - 1]`` (``algorithm.num_partners``).
        seed: the run seed.
        step: the global step; the generator is seeded by ``(seed, "locfedmix", step)``.

    Raises:
        ValueError: naming ``algorithm.num_partners`` when ``P`` is outside ``[0, N-1]``.
    """
    if num_clients < 1:
        raise ValueError(f"the number of clients must be >= 1, got {num_clients}")
    if not 0 <= num_partners <= num_clients - 1:
        raise ValueError(
            f"algorithm.num_partners must be in [0, {num_clients - 1}] for "
            f"{num_clients} clients, got {num_partners}"
        )
    gen = generator(seed, "locfedmix", step)
    # Rank N - 1 random keys per row: the first P positions of the argsort are a uniform
    # sample without replacement of the N - 1 *other* clients, indexed 0..N-2.
    keys = torch.rand(num_clients, num_clients - 1, generator=gen)  # (N, N-1)
    idx = keys.argsort(dim=1)[:, :num_partners]  # (N, P) in [0, N-2]
    own = torch.arange(num_clients).unsqueeze(1)  # (N, 1)
    # Skip over the client itself: other-index j maps to client j (j < i) or j + 1.
    return idx + (idx >= own).long()  # (N, P)


def draw_lambda(num_clients: int, num_partners: int, alpha: float, seed: int, step: int) -> Tensor:
    """Mixup coefficients ``lam ~ Beta(alpha, alpha)``, one per (client, partner): ``(N, P)``.

    Args:
        num_clients: ``N >= 1``.
        num_partners: ``P >= 0``.
        alpha: Beta concentration ``> 0`` (``algorithm.mix_alpha``); ``alpha = 1`` is
            uniform on ``[0, 1]``, small ``alpha`` puts ``lam`` near 0 or 1 (weak mixing).
        seed: the run seed.
        step: the global step.

    Returns:
        ``(N, P)`` float32 CPU tensor with values in ``[0, 1]``.

    ``torch.distributions.Beta`` cannot take a generator and would consume the global
    RNG (which differs between processes); numpy's ``Generator.beta`` seeded explicitly
    with ``derive_seed(seed, "locfedmix", "lambda", step)`` is reproducible, layout
    independent and leaves every global RNG untouched.
    """
    if not (math.isfinite(alpha) and alpha > 0.0):
        raise ValueError(f"algorithm.mix_alpha must be > 0, got {alpha}")
    if num_clients < 1 or num_partners < 0:
        raise ValueError(
            f"need num_clients >= 1 and num_partners >= 0, got {num_clients}, {num_partners}"
        )
    rng = np.random.default_rng(derive_seed(seed, "locfedmix", "lambda", step))
    lam = rng.beta(alpha, alpha, size=(num_clients, num_partners))  # (N, P) float64
    return torch.from_numpy(lam).to(torch.float32)  # (N, P)


def mixup_smashed(
    acts: Tensor, labels_onehot: Tensor, partners: Tensor, lam: Tensor
) -> tuple[Tensor, Tensor]:
    """Mix the smashed data of client pairs, sample slot by sample slot.

    Args:
        acts: ``(N, B, *F)`` cut-layer activations, client ``i``'s batch at ``[i]``.
        labels_onehot: ``(N, B, C)`` one-hot (or already soft) targets.
        partners: ``(N, P)`` int64 partner ids (`mix_partners`).
        lam: ``(N, P)`` mixup coefficients (`draw_lambda`).

    Returns:
        ``(mixed_acts (N*P, B, *F), mixed_targets (N*P, B, C))`` where row
        ``i * P + p`` is ``lam[i, p] * x[i] + (1 - lam[i, p]) * x[partners[i, p]]`` for
        ``x`` = activations and targets alike (sample ``j`` mixed with the partner's
        sample ``j``). Both are in ``acts``' dtype and device.

    The mixup loss updates the server only: the result is built from ``acts.detach()``,
    so back-propagating a loss on ``mixed_acts`` reaches the server segment's parameters
    and never the clients' graphs (each client's own loss already trains its segment).
    """
    if acts.dim() < 2:
        raise ValueError(f"acts must be (N, B, *F), got shape {tuple(acts.shape)}")
    n, b = acts.shape[:2]
    if labels_onehot.dim() != 3 or tuple(labels_onehot.shape[:2]) != (n, b):
        raise ValueError(
            f"labels_onehot must be (N, B, C) with (N, B) = {(n, b)}, got "
            f"{tuple(labels_onehot.shape)}"
        )
    if partners.dim() != 2 or partners.shape[0] != n:
        raise ValueError(f"partners must be (N, P) with N = {n}, got {tuple(partners.shape)}")
    if tuple(lam.shape) != tuple(partners.shape):
        raise ValueError(
            f"lam must have the shape of partners {tuple(partners.shape)}, got {tuple(lam.shape)}"
        )
    p = partners.shape[1]
    a = acts.detach()  # (N, B, *F) cut from the clients' graphs: server-only loss
    partners = partners.to(device=a.device, dtype=torch.long)  # (N, P)

    def mix(x: Tensor) -> Tensor:  # (N, B, *G) -> (N*P, B, *G)
        weight = lam.to(device=x.device, dtype=x.dtype)  # (N, P)
        weight = weight.reshape(n, p, *([1] * (x.dim() - 1)))  # (N, P, 1, ...)
        own = x.unsqueeze(1)  # (N, 1, B, *G) broadcasts over P
        other = x[partners]  # (N, P, B, *G)
        return (weight * own + (1 - weight) * other).reshape(n * p, *x.shape[1:])

    targets = labels_onehot.detach().to(dtype=a.dtype, device=a.device)  # (N, B, C)
    return mix(a), mix(targets)


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy with soft targets: ``mean_m -sum_c t[m, c] log softmax(z[m])_c``.

    Args:
        logits: ``(M, C)`` (any leading dims ``(..., C)`` are flattened into ``M``).
        targets: same shape, each row a probability vector (mixed one-hot labels).

    Returns:
        A differentiable scalar; with one-hot targets it equals ``F.cross_entropy``.
    """
    if logits.shape != targets.shape or logits.dim() < 2:
        raise ValueError(
            f"logits and targets must both be (M, C), got {tuple(logits.shape)} and "
            f"{tuple(targets.shape)}"
        )
    log_p = F.log_softmax(logits, dim=-1)  # (..., C)
    return -(targets.to(log_p.dtype) * log_p).sum(dim=-1).mean()


# --------------------------------------------------------------------------- regularizer


def reconstruction_loss(decoded: Tensor, inputs: Tensor) -> Tensor:
    """Mean squared error between the decoder's output and the client's input batch.

    ``inputs`` is data and is detached; gradients flow into ``decoded`` (the decoder and,
    through the smashed data, the client segment).
    """
    if decoded.shape != inputs.shape:
        raise ValueError(
            f"decoded {tuple(decoded.shape)} and inputs {tuple(inputs.shape)} must match"
        )
    return F.mse_loss(decoded, inputs.detach().to(decoded.dtype))


def decoder_for(activation_shape: Sequence[int], input_shape: Sequence[int]) -> nn.Module:
    """A small decoder from smashed data ``(B, *activation_shape)`` to ``(B, *input_shape)``.

    Image activations ``(C', H', W')`` to an image input ``(C, H, W)``:
    ``ConvTranspose2d(k=4, s=2, p=1)`` + ReLU doublings (halving the channels, at least 8)
    while the size at most reaches the target, then, only where the size is still off,
    a stride-1 ``Conv2d`` that shrinks or ``ConvTranspose2d`` that grows to exactly
    ``(H, W)``, then a 3x3 ``Conv2d`` to ``C`` channels. Examples: ``(8, 14, 14)`` -> one
    doubling; ``(16, 7, 7)`` -> two; ``(64, 32, 32)`` -> the 3x3 conv alone. Every other
    pair of shapes (flat activations or flat inputs): ``Flatten`` + ``Linear`` +
    ``Unflatten``.

    No output nonlinearity (inputs are standardised, not in ``[0, 1]``) and no
    normalisation layer (no BatchNorm in client-side parts: a client batch would
    normalise with its own statistics). No interpolation layers either: their CUDA
    backward has no deterministic implementation.
    """
    act, inp = tuple(int(s) for s in activation_shape), tuple(int(s) for s in input_shape)
    if not act or not inp or min(act + inp) < 1:
        raise ValueError(f"shapes must be non-empty and positive, got {act} -> {inp}")
    if len(act) != 3 or len(inp) != 3:
        return nn.Sequential(
            nn.Flatten(), nn.Linear(math.prod(act), math.prod(inp)), nn.Unflatten(1, inp)
        )

    (ch, h, w), (c_in, h_in, w_in) = act, inp
    layers: list[nn.Module] = []
    while 2 * h <= h_in and 2 * w <= w_in:  # (B, ch, h, w) -> (B, ch', 2h, 2w)
        out = max(ch // 2, 8)
        layers += [nn.ConvTranspose2d(ch, out, kernel_size=4, stride=2, padding=1), nn.ReLU()]
        ch, h, w = out, 2 * h, 2 * w
    if h > h_in or w > w_in:  # shrink: a valid conv loses kernel - 1 pixels
        kernel = (max(h - h_in, 0) + 1, max(w - w_in, 0) + 1)
        layers += [nn.Conv2d(ch, ch, kernel_size=kernel), nn.ReLU()]
        h, w = min(h, h_in), min(w, w_in)
    if h < h_in or w < w_in:  # grow: a stride-1 transposed conv adds kernel - 1 pixels
        kernel = (h_in - h + 1, w_in - w + 1)
        layers += [nn.ConvTranspose2d(ch, ch, kernel_size=kernel), nn.ReLU()]
    layers.append(nn.Conv2d(ch, c_in, kernel_size=3, padding=1))  # (B, C, H, W)
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------- schedule


def fedavg_due(round_index: int, interval: int) -> bool:
    """Whether client segments are averaged at the end of round ``round_index`` (0-based).

    True after every ``interval``-th completed round: rounds ``interval - 1``,
    ``2 * interval - 1``, ... (``interval = 1``: every round). Averaging at the end
    rather than the start means the first average follows ``T_c`` rounds of training,
    not the identical initial weights.
    """
    if interval < 1:
        raise ValueError(f"algorithm.fedavg_interval must be >= 1, got {interval}")
    if round_index < 0:
        raise ValueError(f"round_index must be >= 0, got {round_index}")
    return (round_index + 1) % interval == 0
