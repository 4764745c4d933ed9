"""Tensors to and from one flat vector: the one place parameters are (un)flattened for
sending (SplitFed V1's server average, SL's hand-off, FSL-SAGE's estimators)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor


def flatten(tensors: Iterable[Tensor]) -> Tensor:
    """Concatenate ``tensors`` (detached) into one (D,) vector, in iteration order."""
    return torch.cat([t.detach().reshape(-1) for t in tensors])


@torch.no_grad()
def load_flat_(tensors: Iterable[Tensor], flat: Tensor) -> int:
    """Copy consecutive pieces of ``flat`` into ``tensors`` IN PLACE (views such as a
    stacked parameter's slice ``p[k]`` included); returns the number of values used."""
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()
    return offset
