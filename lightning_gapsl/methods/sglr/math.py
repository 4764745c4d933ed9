"""SGLR: parallel split learning with SplitLr and SplitAvg.

SGLR changes PSL in two places (docs/explanations/methods.md):

1. **SplitLr** (`server_lr`): the server segment is trained on the union of all ``N``
   clients' batches while each client sees only its own, so the server takes a larger
   learning rate, ``client_lr * N**a`` (``a`` in ``[0, 2]``, default 0.5).
2. **SplitAvg** (`averaged_clients`, `split_avg`): each step a fraction ``phi`` of the
   clients (default 0.5) receive, instead of their own cut-layer gradient, the
   gradient averaged *slot by slot* over those clients: sample ``j`` of each chosen
   client gets the mean of the chosen clients' sample-``j`` gradients. This damps the
   client drift that non-IID labels cause, at no communication cost (the server holds
   every client's gradient anyway). `averaging_active` optionally restricts SplitAvg
   to a phase of training: the first or (as the paper's schedule does, per its
   reading of its Algorithm 1) the final ``X`` of the steps.
3. **Server loss** (`server_loss_weights`): the server segment's loss is the plain mean
   of the cross-entropy over every sample of every (active) client, i.e. weight ``1/N``
   per client with equal batches (``server_loss="mean"``); ``weighted`` keeps PSL's
   data-size weights ``n_i / sum n``.

The chosen clients depend on ``(seed, step)`` only, never on the process layout, so a
run is the same on one process and on many (docs/explanations/architecture.md). Pure functions: no
process groups, no Lightning, no globals, inputs never modified in place.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lightning_gapsl.methods.shared.losses import client_loss_weights
from lightning_gapsl.seeding import generator

__all__ = [
    "AVG_PHASE_WHERE",
    "SERVER_LOSSES",
    "SPLIT_AVG_OVER",
    "averaged_clients",
    "averaging_active",
    "num_averaged",
    "server_loss_weights",
    "server_lr",
    "split_avg",
    "split_avg_batch",
]

AVG_PHASE_WHERE = ("first", "last")
SPLIT_AVG_OVER = ("slot", "batch")
SERVER_LOSSES = ("mean", "weighted")


def server_lr(client_lr: float, num_clients: int, exponent: float = 0.5) -> float:
    """SplitLr: the server learning rate ``client_lr * num_clients ** exponent``.

    Args:
        client_lr: the clients' learning rate, ``> 0``.
        num_clients: ``N >= 1``, the number of clients the server segment serves.
        exponent: ``a`` in ``[0, 2]`` (``algorithm.lr_exponent``): 0 keeps the client
            rate, 1 scales it linearly with the number of client batches per server step.

    Raises:
        ValueError: naming ``algorithm.lr_exponent`` for an exponent outside ``[0, 2]``,
            or on a non-positive rate or client count.
    """
    if not 0.0 <= exponent <= 2.0:
        raise ValueError(f"algorithm.lr_exponent must be in [0, 2], got {exponent}")
    if num_clients < 1:
        raise ValueError(f"the number of clients must be >= 1, got {num_clients}")
    if not client_lr > 0.0:
        raise ValueError(f"the client learning rate must be > 0, got {client_lr}")
    return float(client_lr) * float(num_clients) ** float(exponent)


def num_averaged(num_clients: int, fraction: float) -> int:
    """How many clients SplitAvg averages: ``round(fraction * N)``, half rounded up.

    At least 1 when ``fraction > 0`` (a positive fraction of a few clients should not
    silently switch SplitAvg off) and 0 when ``fraction == 0``. Rounding is half-up
    rather than Python's half-to-even, so ``0.5 * 3`` gives 2 and ``0.5 * 5`` gives 3
    (not 2 and 2); ``fraction * N`` is first rounded to 9 decimals so float noise such as
    ``0.15 * 10 = 1.4999999999999998`` does not decide the count.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"algorithm.avg_fraction must be in [0, 1], got {fraction}")
    if num_clients < 1:
        raise ValueError(f"the number of clients must be >= 1, got {num_clients}")
    if fraction == 0.0:
        return 0
    return min(num_clients, max(1, math.floor(round(fraction * num_clients, 9) + 0.5)))


def averaged_clients(num_clients: int, fraction: float, seed: int, step: int) -> Tensor:
    """SplitAvg's client choice for one step: a bool mask ``(N,)`` of `num_averaged` clients.

    Args:
        num_clients: ``N >= 1``.
        fraction: ``phi`` in ``[0, 1]`` (``algorithm.avg_fraction``).
        seed: the run seed.
        step: the global training step; a new set of clients is drawn every step.

    Returns:
        ``(N,)`` bool CPU tensor with exactly ``num_averaged(N, fraction)`` True entries.

    The generator is seeded with ``(seed, "sglr", step)``: the choice is a function of
    the step alone, so every process computes the same mask without communicating, and
    the mask does not depend on how clients are spread over ranks.

    Raises:
        ValueError: naming ``algorithm.avg_fraction`` for a fraction outside ``[0, 1]``.
    """
    k = num_averaged(num_clients, fraction)
    gen = generator(seed, "sglr", step)
    chosen = torch.randperm(num_clients, generator=gen)[:k]  # (k,)
    return torch.zeros(num_clients, dtype=torch.bool).index_fill(0, chosen, True)  # (N,)


def averaged_participants(active: Tensor, fraction: float, seed: int, step: int) -> Tensor:
    """`averaged_clients` under partial participation: ``num_averaged(k, fraction)`` of the
    ``k`` clients taking part in this step (``active`` ``(N,)`` bool), drawn with the same
    generator ``(seed, "sglr", step)`` as a permutation of the participants' ids; an idle
    client is never averaged (its row is no gradient). Returns ``(N,)`` bool on CPU."""
    active = active.cpu().to(torch.bool)
    ids = torch.nonzero(active).flatten()  # (k,) ascending
    if ids.numel() == 0:
        return torch.zeros_like(active)
    k = num_averaged(ids.numel(), fraction)
    chosen = ids[torch.randperm(ids.numel(), generator=generator(seed, "sglr", step))[:k]]
    return torch.zeros_like(active).index_fill(0, chosen, True)  # (N,)


def split_avg(
    cut_grads: Tensor, mask: Tensor, over: str = "slot", weights: Tensor | None = None
) -> Tensor:
    """SplitAvg's gradient transform: masked clients get the slot-wise mean gradient.

    Args:
        cut_grads: ``(N, B, *F)`` each client's cut-layer gradient, sample ``j`` of
            client ``i`` at ``[i, j]``.
        mask: ``(N,)`` bool, the clients to average (see `averaged_clients`).
        over: ``slot`` (the default): described below. ``batch``: every masked row
            becomes ONE ``(*F)`` vector, the mean over all samples of all masked clients
            (client ``i`` weighted by ``weights[i]``, plain when ``None``), repeated over
            the ``B`` slots: the reading of both public re-implementations read for
            the fidelity review (CycleSL's ``sl.py`` ``SGLR`` weights by client size; the paper's
            Algorithm 1 was not reachable), see `split_avg_batch`.
        weights: ``(N,)`` non-negative client weights for ``over="batch"``.

    Returns:
        A new ``(N, B, *F)`` tensor: row ``i`` is ``mean_{k in mask} cut_grads[k]`` for
        masked ``i`` (the same tensor for all of them), and ``cut_grads[i]`` bit-for-bit
        otherwise. With an all-False mask every row is the input's, bit-for-bit; with a
        single masked client its row is its own gradient exactly (``g + 0 + ... / 1``).

    The slot-wise mean pairs sample ``j`` of one client with sample ``j`` of another;
    that is SplitAvg's definition (the samples are unrelated, the average is a variance
    reduction of the per-slot gradient, not a per-sample quantity). No host-device
    synchronisation: the empty-mask case is handled by clamping the count, not by a
    Python ``if``.
    """
    if cut_grads.dim() < 2:
        raise ValueError(f"cut_grads must be (N, B, *F), got shape {tuple(cut_grads.shape)}")
    n = cut_grads.shape[0]
    if tuple(mask.shape) != (n,) or mask.dtype != torch.bool:
        raise ValueError(
            f"mask must be a bool (N,) = ({n},) tensor, got {mask.dtype} {tuple(mask.shape)}"
        )
    if over not in SPLIT_AVG_OVER:
        raise ValueError(
            f"algorithm.avg_over must be one of {', '.join(SPLIT_AVG_OVER)}, got {over!r}"
        )
    if over == "batch":
        return split_avg_batch(cut_grads, mask, weights)
    sel = mask.to(cut_grads.device).reshape(n, *([1] * (cut_grads.dim() - 1)))  # (N, 1, ...)
    # where() rather than mask * grads: a non-finite unmasked row must not leak into the
    # mean through 0 * inf = nan.
    total = torch.where(sel, cut_grads, 0.0).sum(dim=0)  # (B, *F)
    count = mask.sum().clamp_min(1).to(device=cut_grads.device, dtype=cut_grads.dtype)  # ()
    mean = total / count  # (B, *F)
    return torch.where(sel, mean.unsqueeze(0), cut_grads)  # (N, B, *F)


def split_avg_batch(cut_grads: Tensor, mask: Tensor, weights: Tensor | None = None) -> Tensor:
    """SplitAvg averaged over the whole batch: masked rows get one common per-sample vector.

    Row ``i`` of a masked client becomes ``sum_{k in mask, j} w_k g[k, j] / (B sum_{k in
    mask} w_k)`` at every slot ``j``; unmasked rows are returned bit-for-bit. This is
    "a common gradient averaged at the split-layer" read as a mean over samples
    (CycleSL's ``SGLR``: size weights; ``BorisRado/split_learning_algorithms``
    ``serve_splitavg_gradient``: plain mean, and over all clients, not only the masked).
    The scale is that of one sample's gradient, as in the slot-wise mean.
    """
    n = cut_grads.shape[0]
    w = torch.ones(n) if weights is None else weights.detach().to(torch.float64)
    if tuple(w.shape) != (n,) or bool((w < 0).any()):
        raise ValueError(f"weights must be a non-negative (N,) = ({n},) tensor")
    w = torch.where(mask.cpu(), w.to(torch.float64), 0.0)  # (N,) zero outside the mask
    w = (w / w.sum().clamp_min(1e-300)).to(device=cut_grads.device, dtype=cut_grads.dtype)
    shape = (n, *([1] * (cut_grads.dim() - 1)))
    sel = mask.to(cut_grads.device).reshape(shape)  # (N, 1, ...)
    per_client = torch.where(sel, cut_grads, 0.0).mean(dim=1)  # (N, *F) batch means
    common = (w.reshape(n, *([1] * (per_client.dim() - 1))) * per_client).sum(dim=0)  # (*F)
    return torch.where(sel, common.expand_as(cut_grads[0]).unsqueeze(0), cut_grads)


def averaging_active(
    step: int, total_steps: int, phase_fraction: float | None, where: str = "first"
) -> bool:
    """Whether SplitAvg applies at ``step`` under the phased schedule.

    Args:
        step: 0-based global step.
        total_steps: number of steps of the whole run, ``>= 1``.
        phase_fraction: ``None``: SplitAvg on every step. Otherwise ``X`` in ``[0, 1]``
            (``algorithm.avg_phase``): averaged gradients in a phase of
            ``k = ceil(X * total_steps)`` steps, plain PSL in the others.
        where: ``first`` (the default, this project's earlier schedule): steps
            ``0 .. k - 1``; ``last`` (the paper's): the final ``k`` steps,
            ``total_steps - k .. total_steps - 1``, so training ends averaged.

    ``X * total_steps`` is rounded to 9 decimals before the ceiling so that float
    noise (``0.3 * 10 = 3.0000000000000004``) does not add a step.
    """
    if where not in AVG_PHASE_WHERE:
        raise ValueError(
            f"algorithm.avg_phase_where must be one of {', '.join(AVG_PHASE_WHERE)}, got {where!r}"
        )
    if phase_fraction is None:
        return True
    if not 0.0 <= phase_fraction <= 1.0:
        raise ValueError(f"algorithm.avg_phase must be in [0, 1] or null, got {phase_fraction}")
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    k = math.ceil(round(phase_fraction * total_steps, 9))
    return step < k if where == "first" else step >= total_steps - k


def server_loss_weights(
    client_sizes: Tensor, mode: str = "mean", active: Tensor | None = None
) -> Tensor:
    """Per-client weights ``(N,)`` of SGLR's server loss ``sum_i w_i mean_b CE_i``.

    Args:
        client_sizes: ``(N,)`` training samples per client.
        mode: ``mean`` (SGLR): ``w_i = 1 / |active|``, so with equal batches the loss
            is the plain mean over every sample the server received; ``weighted``
            (PSL's convention): ``w_i = n_i / sum_{j active} n_j``.
        active: ``(N,)`` bool, the clients that sent a batch this step (local-pass
            rounds); ``None``: all. Idle clients get weight 0; at least one must be active.

    Returns:
        ``(N,)`` float32 weights summing to 1 over the active clients, for
        `lightning_gapsl.methods.shared.losses.weighted_client_loss`.
    """
    if mode not in SERVER_LOSSES:
        raise ValueError(
            f"algorithm.server_loss must be one of {', '.join(SERVER_LOSSES)}, got {mode!r}"
        )
    n = client_sizes.shape[0] if client_sizes.dim() == 1 else -1
    if n < 1:
        raise ValueError(f"client_sizes must be (N,), got shape {tuple(client_sizes.shape)}")
    if active is None:
        active = torch.ones(n, dtype=torch.bool)
    if active.dtype != torch.bool or tuple(active.shape) != (n,) or not bool(active.any()):
        raise ValueError(f"active must be a bool ({n},) mask with at least one True entry")
    active = active.to(client_sizes.device)
    if mode == "mean":
        return active.to(torch.float32) / active.sum().to(torch.float32)
    return client_loss_weights(torch.where(active, client_sizes.to(torch.float64), 0.0))
