"""Split a labelled train set across clients: IID, Dirichlet label skew, or label shards.

Each partitioner returns one sorted int64 index tensor per client; together they cover
every sample exactly once. All randomness is seeded through `lightning_gapsl.seeding`
with keys of the form ``("partition", scheme, ...)``, so a partition depends only on the
labels, the arguments and the run seed.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from lightning_gapsl.data.datasets import DataError
from lightning_gapsl.seeding import derive_seed, generator

PARTITIONS = ("iid", "dirichlet", "shards")

# Dirichlet re-draws (each with a fresh derived key) before the deterministic fix-up.
_DIRICHLET_ATTEMPTS = 10


def partition(
    labels: torch.Tensor,
    num_clients: int,
    scheme: str,
    *,
    alpha: float = 0.5,
    shards_per_client: int = 2,
    seed: int = 0,
    min_size: int = 1,
) -> list[torch.Tensor]:
    """Return one int64 index tensor per client (sorted ascending); every sample index
    appears in exactly one client.

    * ``iid``: a seeded permutation cut into near-equal parts (sizes differ by <= 1).
    * ``dirichlet``: per class, client proportions ~ Dir(``alpha``); smaller ``alpha``
      gives more skewed label distributions.
    * ``shards``: samples sorted by label, cut into ``num_clients * shards_per_client``
      equal shards, ``shards_per_client`` random shards per client (McMahan et al., 2017).

    Every client gets at least ``min_size`` samples: empty clients would break training.
    """
    n = _check_labels(labels)
    _check_common(n, num_clients, scheme, min_size)
    if scheme == "iid":
        parts = _iid(n, num_clients, seed)
    elif scheme == "dirichlet":
        if not (alpha > 0 and math.isfinite(alpha)):
            raise DataError(f"data.alpha must be > 0 (and finite), got {alpha}")
        parts = _dirichlet(labels, num_clients, alpha, seed, min_size)
    else:
        if shards_per_client < 1 or num_clients * shards_per_client > n:
            raise DataError(
                f"data.shards_per_client must be >= 1 with num_clients * shards_per_client "
                f"<= {n} samples, got {shards_per_client} for {num_clients} clients"
            )
        parts = _shards(labels, num_clients, shards_per_client, seed)
    return _ensure_min_size(parts, min_size)  # also sorts each part


def label_histograms(
    labels: torch.Tensor, parts: list[torch.Tensor], num_classes: int
) -> torch.Tensor:
    """Per-client label counts, shape (num_clients, num_classes) int64."""
    _check_labels(labels)
    if num_classes < 1 or (labels.numel() and int(labels.max()) >= num_classes):
        raise DataError(f"num_classes={num_classes} must exceed the largest label")
    rows = [torch.bincount(labels[p].long(), minlength=num_classes) for p in parts]
    return torch.stack(rows) if rows else torch.zeros((0, num_classes), dtype=torch.int64)


def _check_labels(labels: torch.Tensor) -> int:
    """Validate a 1-D tensor of non-negative integer labels; return its length."""
    if labels.ndim != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise DataError(
            f"labels must be a 1-D integer tensor, got {labels.dtype} "
            f"of shape {tuple(labels.shape)}"
        )
    if labels.numel() and int(labels.min()) < 0:
        raise DataError("labels must be >= 0")
    return int(labels.numel())


def _check_common(n: int, num_clients: int, scheme: str, min_size: int) -> None:
    """Checks shared by all schemes, naming the config key at fault."""
    if scheme not in PARTITIONS:
        raise DataError(f"data.partition={scheme!r} is unknown; valid: {', '.join(PARTITIONS)}")
    if num_clients < 1 or num_clients > n:
        raise DataError(
            f"data.num_clients must be in 1..{n} (the number of samples), got {num_clients}"
        )
    if min_size < 0 or num_clients * min_size > n:
        raise DataError(
            f"data.num_clients={num_clients} with min_size={min_size} needs at least "
            f"{num_clients * min_size} samples, have {n}"
        )


def _iid(n: int, num_clients: int, seed: int) -> list[torch.Tensor]:
    """A seeded permutation cut into near-equal contiguous parts."""
    perm = torch.randperm(n, generator=generator(seed, "partition", "iid"))  # (n,)
    return list(torch.tensor_split(perm, num_clients))


def _dirichlet(
    labels: torch.Tensor, num_clients: int, alpha: float, seed: int, min_size: int
) -> list[torch.Tensor]:
    """Dirichlet label skew; re-draws with new keys while some client is under ``min_size``.

    Uses an explicitly seeded numpy Generator: torch's Dirichlet.sample takes no generator.
    If every attempt leaves a small client, the last draw goes to `_ensure_min_size`.
    """
    y = labels.cpu().numpy()
    classes = np.unique(y)  # sorted, so the per-class draw order is fixed
    parts: list[torch.Tensor] = []
    for attempt in range(_DIRICHLET_ATTEMPTS):
        rng = np.random.default_rng(derive_seed(seed, "partition", "dirichlet", attempt))
        parts = _dirichlet_draw(y, classes, num_clients, alpha, rng)
        if min(p.numel() for p in parts) >= min_size:
            break
    return parts


def _dirichlet_draw(
    y: np.ndarray, classes: np.ndarray, num_clients: int, alpha: float, rng: np.random.Generator
) -> list[torch.Tensor]:
    """One draw: each class's shuffled indices cut by proportions ~ Dir(alpha)."""
    buckets: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for c in classes:
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        p = rng.dirichlet(np.full(num_clients, alpha))  # (num_clients,)
        if not np.all(np.isfinite(p)) or p.sum() <= 0:
            # Tiny alpha can underflow every gamma draw; all mass to one client is the limit.
            p = np.eye(num_clients)[rng.integers(num_clients)]
        cuts = np.floor(np.cumsum(p)[:-1] * idx.size).astype(np.int64)  # (num_clients - 1,)
        for k, chunk in enumerate(np.split(idx, np.clip(cuts, 0, idx.size))):
            buckets[k].append(chunk)
    return [torch.from_numpy(np.concatenate(b).astype(np.int64)) for b in buckets]


def _shards(
    labels: torch.Tensor, num_clients: int, per_client: int, seed: int
) -> list[torch.Tensor]:
    """Label-sorted shards, ``per_client`` random ones per client.

    Ties within a class are shuffled first so a shard does not just take the dataset's
    original order. With equal shards, a shard spans at most two classes whenever it is no
    longer than the smallest class plus one, so a client sees at most ``2 * per_client``
    classes; with class sizes that are multiples of the shard size, at most ``per_client``.
    """
    gen = generator(seed, "partition", "shards")
    n, num_shards = labels.numel(), num_clients * per_client
    perm = torch.randperm(n, generator=gen)  # (n,)
    order = perm[torch.argsort(labels[perm], stable=True)]  # (n,) label-sorted
    shards = torch.tensor_split(order, num_shards)
    shard_ids = torch.randperm(num_shards, generator=gen).view(num_clients, per_client)
    return [torch.cat([shards[j] for j in row.tolist()]) for row in shard_ids]


def _ensure_min_size(parts: list[torch.Tensor], min_size: int) -> list[torch.Tensor]:
    """Move samples from the largest client to clients under ``min_size``, deterministically.

    The donor is the largest client (lowest id on ties) and gives its highest indices; the
    caller has checked ``num_clients * min_size <= n``, so the donor always has a surplus.
    """
    parts = [p.sort().values for p in parts]
    while True:
        sizes = [p.numel() for p in parts]
        small = next((k for k, s in enumerate(sizes) if s < min_size), None)
        if small is None:
            return parts
        donor = max(range(len(parts)), key=lambda k: (sizes[k], -k))
        move = min(min_size - sizes[small], sizes[donor] - min_size)
        moved, parts[donor] = parts[donor][-move:], parts[donor][:-move]
        parts[small] = torch.cat([parts[small], moved]).sort().values
