"""FedAvg of client segments: the weighted parameter average several baselines use.

SplitFed (V1, V2), LocFedMix-SL, FSL-SAGE and CSE-FSL average the clients' segments
(DESIGN section 6): every client's parameter tensor is replaced by
``sum_k w_k x_k / sum_k w_k``, usually with ``w_k`` = client ``k``'s data size.

Clients live on several ranks, each hosting a block of ``K`` virtual clients with
parameters stacked as ``(K, *shape)`` (`lightning_gapsl.models.stacked`). The average is
therefore split in two halves around one collective:

1. each rank computes `partial_sums` over its hosted clients: the weighted sum and the
   weight total;
2. a collective (an all-reduce with SUM) adds the partials over ranks;
3. `combine_partials` divides, and `assign_slices_` writes the average into every
   hosted slice.

With one process `fedavg_stacked_` does all of it in place. Everything is pure tensor
math: no process groups, no Lightning, no globals; only the functions whose name ends
in ``_`` modify their arguments, as their docstrings say.

Optimizer state (momentum, Adam moments) stays per client: whether to reset or average
it is the caller's choice, not part of the parameter average.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "assign_slices_",
    "combine_partials",
    "fedavg_stacked_",
    "partial_sums",
    "weighted_average",
]


def _check_weights(weights: Tensor, k: int, *, need_positive_total: bool) -> None:
    """Raise ValueError unless ``weights`` is a ``(K,)`` tensor of finite values ``>= 0``."""
    if tuple(weights.shape) != (k,):
        raise ValueError(f"weights must be (K,) = ({k},), got shape {tuple(weights.shape)}")
    w = weights.detach().to(torch.float64)  # (K,)
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise ValueError(f"weights must be finite and >= 0, got {weights.tolist()}")
    if need_positive_total and not bool(w.sum() > 0):
        raise ValueError("weights must contain at least one positive value")


def _weighted_sum(stacked: Tensor, weights: Tensor) -> Tensor:
    """``sum_k w_k stacked[k]`` in ``stacked``'s dtype: ``(K, ...)``, ``(K,)`` -> ``(...)``."""
    # Weights are data (client sizes), not parameters: detach, and cast to the parameter
    # dtype so a float64 model is not downcast (nor a float32 one upcast).
    w = weights.detach().to(device=stacked.device, dtype=stacked.dtype)  # (K,)
    # tensordot over dim 0 is one matmul (K,) @ (K, D), not K separate axpys.
    return torch.tensordot(w, stacked.detach(), dims=1)  # (...)


def partial_sums(stacked: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """One rank's half of a distributed weighted average.

    Args:
        stacked: ``(K, ...)`` floating tensor, client ``k``'s value at ``[k]``.
        weights: ``(K,)`` non-negative weights of these clients (all zero is allowed:
            a rank may host only clients that do not take part).

    Returns:
        ``(weighted_sum (...), weight_total ())``, both detached, in ``stacked``'s dtype
        and device, ready to be summed over ranks by an all-reduce.
    """
    if stacked.dim() < 1 or not stacked.is_floating_point():
        raise ValueError(
            f"stacked must be a floating (K, ...) tensor, got {stacked.dtype} "
            f"{tuple(stacked.shape)}"
        )
    _check_weights(weights, stacked.shape[0], need_positive_total=False)
    total = weights.detach().to(device=stacked.device, dtype=stacked.dtype).sum()  # ()
    return _weighted_sum(stacked, weights), total


def combine_partials(partials: Sequence[tuple[Tensor, Tensor]]) -> Tensor:
    """Finish a weighted average from per-rank `partial_sums`: ``sum(sums) / sum(totals)``.

    Args:
        partials: one ``(weighted_sum (...), weight_total ())`` pair per rank (or per
            block of clients), in any order and any split of the clients. After an
            all-reduce a rank passes the single reduced pair.

    Returns:
        ``(...)`` the weighted average. It equals `weighted_average` on all clients up
        to float summation order.

    Raises:
        ValueError: on an empty list or a non-positive weight total.
    """
    if not partials:
        raise ValueError("combine_partials needs at least one (sum, total) pair")
    total_sum = torch.stack([s for s, _ in partials]).sum(dim=0)  # (...)
    total_weight = torch.stack([t for _, t in partials]).sum()  # ()
    if not bool(total_weight > 0):
        raise ValueError(f"the total client weight must be > 0, got {float(total_weight)}")
    return total_sum / total_weight  # (...)


def weighted_average(stacked: Tensor, weights: Tensor) -> Tensor:
    """``sum_k w_k stacked[k] / sum_k w_k``: ``(K, ...)``, ``(K,)`` -> ``(...)``.

    The weights need not be normalised; at least one must be positive. The result is a
    new detached tensor; neither input is modified.
    """
    return combine_partials([partial_sums(stacked, weights)])


def assign_slices_(params: dict[str, Tensor], averages: dict[str, Tensor]) -> None:
    """In place: set every client slice ``params[name][k]`` to ``averages[name]``.

    Args:
        params: name -> stacked ``(K, *shape)`` tensor (e.g.
            `StackedSegments.stacked_params`). MODIFIED in place, under ``no_grad``, so
            the Parameter objects (and the optimizer's references to them) survive.
        averages: name -> ``(*shape)`` average, same keys as ``params``.
    """
    if set(params) != set(averages):
        raise KeyError(
            f"parameter names differ: missing={set(params) - set(averages)} "
            f"unexpected={set(averages) - set(params)}"
        )
    with torch.no_grad():
        for name, stacked in params.items():
            avg = averages[name]
            if tuple(avg.shape) != tuple(stacked.shape[1:]):
                raise ValueError(
                    f"{name}: average shape {tuple(avg.shape)} does not match the client "
                    f"slice shape {tuple(stacked.shape[1:])}"
                )
            # expand is a broadcast view: one copy kernel writes all K slices.
            stacked.copy_(avg.to(stacked.dtype).unsqueeze(0).expand_as(stacked))


def fedavg_stacked_(params: dict[str, Tensor], weights: Tensor) -> None:
    """In place: FedAvg of the ``K`` clients held in ``params`` (one process, all clients).

    Args:
        params: name -> stacked ``(K, *shape)`` tensor. MODIFIED in place (under
            ``no_grad``): afterwards all ``K`` slices of every tensor equal the weighted
            average of the slices before the call.
        weights: ``(K,)`` non-negative client weights, at least one positive.

    All averages are computed before any tensor is written, so a failure (bad shape)
    leaves ``params`` untouched. Multi-rank runs use `partial_sums`, an all-reduce,
    `combine_partials` and `assign_slices_` instead.
    """
    if weights.dim() != 1:
        raise ValueError(f"weights must be (K,), got shape {tuple(weights.shape)}")
    for name, stacked in params.items():
        if stacked.dim() < 1 or stacked.shape[0] != weights.shape[0]:
            raise ValueError(
                f"{name}: leading dim must be K = {weights.shape[0]}, got {tuple(stacked.shape)}"
            )
    averages = {name: weighted_average(stacked, weights) for name, stacked in params.items()}
    assign_slices_(params, averages)
