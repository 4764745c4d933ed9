"""FedAvg of client segments: the weighted parameter average several baselines use.

SplitFed (V1, V2), LocFedMix-SL, FSL-SAGE and CSE-FSL average the clients' segments
(docs/explanations/methods.md): every client's parameter tensor is replaced by
``sum_k w_k x_k / sum_k w_k``, usually with ``w_k`` = client ``k``'s data size.

Clients live on several ranks, each hosting a block of ``K`` virtual clients with
parameters stacked as ``(K, *shape)`` (`lightning_gapsl.models.stacked`). The average is
therefore split in two halves around one collective:

1. each rank computes `partial_sums` over its hosted clients: the weighted sum and the
   weight total;
2. a collective (an all-reduce with SUM) adds the partials over ranks;
3. `combine_partials` divides, and `assign_slices_` writes the average into every
   hosted slice.

`fedavg_` does all three, with the collective passed in as a function. Everything is pure tensor
math: no process groups, no Lightning, no globals; only the functions whose name ends
in ``_`` modify their arguments, as their docstrings say.

Optimizer state (momentum, Adam moments) stays per client: whether to reset or average
it is the caller's choice, not part of the parameter average.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["assign_slices_", "combine_partials", "fedavg_", "partial_sums"]


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


def fedavg_(
    params: dict[str, Tensor] | None,
    weights: Tensor | None,
    shapes: dict[str, torch.Size],
    reduce_: Callable[[Tensor], None] | None = None,
    dtype: torch.dtype = torch.float64,
    assign: bool = True,
    device: torch.device | None = None,
) -> Tensor:
    """FedAvg: the weighted average of every client's parameters; the one FedAvg that runs.

    Args:
        params: name -> stacked ``(K, *shape)`` tensors of the clients this rank holds
            (None on a rank that holds none; it still takes part in ``reduce_``).
            With ``assign`` every slice is set to the average IN PLACE (under
            ``no_grad``, so optimizers keep their references).
        weights: ``(K,)`` non-negative client weights (data sizes), None with ``params``.
        shapes: name -> per-client shape, identical on every rank: it fixes the order
            of the flat vector the ranks add up.
        reduce_: adds a tensor over all ranks in place (an all-reduce); None: one rank
            holds every client.
        dtype: accumulation dtype. float64 by default, so the average does not depend
            on how clients are grouped per rank (float32 partial sums would round
            differently for 20 clients in one process than for 2 x 10).
        assign: write the average into ``params`` (False: only return it).
        device: where the flat vector lives on a rank without ``params``.

    Returns:
        ``(D,)`` the flat average in ``shapes`` order, in ``dtype``.
    """
    sizes = [shape.numel() for shape in shapes.values()]
    total = sum(sizes)
    if params:
        device = next(iter(params.values())).device
    device = device or torch.device("cpu")
    flat = torch.zeros(total + 1, dtype=dtype, device=device)  # (D + 1,): sums, weight
    if params:
        w = weights.to(device, dtype)  # (K,)
        parts = [partial_sums(params[n].detach().flatten(1).to(dtype), w)[0] for n in shapes]
        flat[:total] = torch.cat(parts)
        flat[total] = w.sum()
    if reduce_ is not None:
        reduce_(flat)
    average = combine_partials([(flat[:total], flat[total])])  # (D,)
    if params and assign:
        pieces = average.split(sizes)
        assign_slices_(
            params, {n: p.view(s) for (n, s), p in zip(shapes.items(), pieces, strict=False)}
        )
    return average
