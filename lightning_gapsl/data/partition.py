"""Split a labelled train set across clients: IID, Dirichlet label skew, label shards, or
natural groups (who produced the data), optionally with log-normal quantity skew.

Each partitioner returns one sorted int64 index tensor per client; together they cover
every sample exactly once. All randomness is seeded through `lightning_gapsl.seeding`
with keys of the form ``("partition", scheme, ...)``, so a partition depends only on the
labels (and group ids), the arguments and the run seed. Nothing here loops without a
bound: a Dirichlet draw is retried a fixed number of times and then fails with an error
that names the keys to change.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from lightning_gapsl.data.datasets import DataError
from lightning_gapsl.seeding import derive_seed, generator

PARTITIONS = ("iid", "dirichlet", "shards", "natural")
SIZED = ("iid", "dirichlet")  # the schemes that take data.quantity_sigma

# Dirichlet re-draws (each with a fresh derived key) before giving up with an error.
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
    groups: torch.Tensor | None = None,
    quantity_sigma: float = 0.0,
) -> list[torch.Tensor]:
    """Return one int64 index tensor per client (sorted ascending); every sample index
    appears in exactly one client.

    * ``iid``: a seeded permutation cut into near-equal parts (sizes differ by <= 1).
    * ``dirichlet``: per class, client proportions ~ Dir(``alpha``); smaller ``alpha``
      gives more skewed label distributions.
    * ``shards``: samples sorted by label, cut into ``num_clients * shards_per_client``
      equal shards, ``shards_per_client`` random shards per client (McMahan et al., 2017).
    * ``natural``: clients made of ``groups`` (one id per sample: LEAF's user, a writer),
      see `natural_groups`.

    ``quantity_sigma > 0`` (iid and dirichlet) first draws log-normal client sizes
    (`lognormal_sizes`, FedLab's ``unbalance_sgm``); dirichlet then draws each client's
    label mix ~ Dir(``alpha``) and fills its size (`dirichlet_counts`). ``0`` keeps the
    schemes above unchanged.

    Every client gets at least ``min_size`` samples (``data.min_client_size``): empty
    clients would break training. A Dirichlet draw that misses it after
    ``_DIRICHLET_ATTEMPTS`` seeded re-draws raises `DataError`.
    """
    n = _check_labels(labels)
    _check_common(n, num_clients, scheme, min_size)
    if not (quantity_sigma >= 0 and math.isfinite(quantity_sigma)):
        raise DataError(f"data.quantity_sigma must be >= 0 (and finite), got {quantity_sigma}")
    if quantity_sigma > 0 and scheme not in SIZED:
        raise DataError(
            f"data.quantity_sigma={quantity_sigma} applies to data.partition="
            f"{' or '.join(SIZED)}, not {scheme}; set data.quantity_sigma=0"
        )
    if scheme == "dirichlet" and not (alpha > 0 and math.isfinite(alpha)):
        raise DataError(f"data.alpha must be > 0 (and finite), got {alpha}")
    sizes = (
        lognormal_sizes(n, num_clients, quantity_sigma, seed, min_size)
        if quantity_sigma > 0
        else None
    )
    if scheme == "iid":
        parts = _iid(n, num_clients, seed) if sizes is None else _iid_sized(sizes, seed)
    elif scheme == "dirichlet":
        if sizes is None:
            parts = _dirichlet(labels, num_clients, alpha, seed, min_size)
        else:
            parts = _dirichlet_sized(labels, sizes, alpha, seed)
    elif scheme == "natural":
        if groups is None:
            raise DataError(
                "data.partition=natural needs a per-sample group id (the user or "
                "device that produced each sample); this data set has none: use "
                "data=leaf (or a data set with groups) or another data.partition"
            )
        parts = natural_groups(groups, num_clients, seed)
        small = min(p.numel() for p in parts)
        if small < min_size:  # moving samples would mix users: refuse instead
            raise DataError(
                f"data.partition=natural: a client holds {small} samples, under "
                f"data.min_client_size={min_size}; lower it or data.num_clients"
            )
    else:
        if shards_per_client < 1 or num_clients * shards_per_client > n:
            raise DataError(
                f"data.shards_per_client must be >= 1 with num_clients * shards_per_client "
                f"<= {n} samples, got {shards_per_client} for {num_clients} clients"
            )
        parts = _shards(labels, num_clients, shards_per_client, seed)
    return _ensure_min_size(parts, min_size)  # sorts each part; only shards/iid move any


def lognormal_sizes(
    n: int, num_clients: int, sigma: float, seed: int, min_size: int = 1
) -> torch.Tensor:
    """Client sizes ``(num_clients,)`` int64 summing to ``n``, log-normally spread.

    Each client's share of the ``n - num_clients * min_size`` samples above the minimum
    is proportional to ``exp(sigma * z_k)``, z_k ~ N(0, 1) from the generator
    ``(seed, "partition", "sizes")`` (the log-normal of FedLab's ``unbalance_sgm``,
    whose common mean cancels in the shares); the shares are rounded down and the
    remaining samples go one each to the largest fractional parts (lowest id on ties).
    Computed as a softmax (max subtracted), so no sigma overflows to inf or NaN;
    ``sigma = 0`` gives sizes that differ by at most one.
    """
    free = n - num_clients * min_size
    if free < 0:
        raise DataError(
            f"data.num_clients={num_clients} with data.min_client_size={min_size} "
            f"needs at least {num_clients * min_size} samples, have {n}"
        )
    z = (
        torch.randn(
            num_clients, generator=generator(seed, "partition", "sizes"), dtype=torch.float64
        )
        * sigma
    )  # (N,) log-weights
    share = torch.softmax(z, dim=0) * free  # (N,) float64, sums to free
    base = share.floor().long()  # (N,)
    extra = free - int(base.sum())  # 0 <= extra < N
    order = sorted(range(num_clients), key=lambda k: (-(share[k] - base[k]).item(), k))
    base[order[:extra]] += 1
    return base + min_size


def _iid_sized(sizes: torch.Tensor, seed: int) -> list[torch.Tensor]:
    """A seeded permutation cut into consecutive parts of the given ``sizes``."""
    perm = torch.randperm(int(sizes.sum()), generator=generator(seed, "partition", "iid"))
    return list(torch.split(perm, sizes.tolist()))


def dirichlet_counts(
    class_counts: np.ndarray, sizes: np.ndarray, alpha: float, rng: np.random.Generator
) -> np.ndarray:
    """Samples of each class per client, ``(N, C)`` int64, rows summing to ``sizes``.

    Client by client (in the order given), a label mix p ~ Dir(alpha) over the C classes
    is drawn and the client's size is split by p over the classes that still have samples
    (largest remainders); a class that runs out caps its share and the rest of the size
    is split again over the classes left. Each pass either fills the size or exhausts a
    class, so a client takes at most C + 1 passes; ``sum(sizes) <= sum(class_counts)``
    guarantees every size is met. (FedLab's client-inner Dirichlet instead samples
    sample by sample and can spin on exhausted classes.)
    """
    if sizes.sum() > class_counts.sum():
        raise DataError(
            f"client sizes sum to {sizes.sum()}, more than the {class_counts.sum()} samples"
        )
    avail = class_counts.astype(np.int64).copy()  # (C,)
    counts = np.zeros((len(sizes), len(avail)), dtype=np.int64)  # (N, C)
    for k, size in enumerate(sizes):
        p = rng.dirichlet(np.full(len(avail), alpha))  # (C,)
        if not np.all(np.isfinite(p)) or p.sum() <= 0:  # tiny alpha underflows: one class
            p = np.eye(len(avail))[rng.integers(len(avail))]
        need = int(size)
        while need > 0:
            q = np.where(avail > 0, p, 0.0)
            if q.sum() <= 0:  # this client's classes ran out: spread over what is left
                q = (avail > 0).astype(np.float64)
            want = _largest_remainder(q / q.sum() * need)  # (C,) sums to need
            take = np.minimum(want, avail)
            counts[k] += take
            avail -= take
            need -= int(take.sum())
    return counts


def _largest_remainder(share: np.ndarray) -> np.ndarray:
    """Round non-negative ``share`` (summing to an integer) to int64 with the same sum."""
    base = np.floor(share).astype(np.int64)
    extra = int(np.rint(share.sum())) - int(base.sum())
    order = np.lexsort((np.arange(len(share)), -(share - base)))  # largest fraction first
    base[order[:extra]] += 1
    return base


def _dirichlet_sized(
    labels: torch.Tensor, sizes: torch.Tensor, alpha: float, seed: int
) -> list[torch.Tensor]:
    """Quantity skew with label skew: fixed ``sizes``, label mixes ~ Dir(alpha) per client.

    Clients are filled in a seeded random order (the last ones filled take what the
    earlier ones left, so no client id is favoured); each class's shuffled indices are
    then dealt out by the counts of `dirichlet_counts`.
    """
    y = labels.cpu().numpy()
    classes = np.unique(y)
    rng = np.random.default_rng(derive_seed(seed, "partition", "dirichlet-sized"))
    order = rng.permutation(len(sizes))  # (N,) fill order
    counts = np.zeros((len(sizes), len(classes)), dtype=np.int64)
    class_counts = np.array([(y == c).sum() for c in classes])
    counts[order] = dirichlet_counts(class_counts, sizes.numpy()[order], alpha, rng)
    buckets: list[list[np.ndarray]] = [[] for _ in range(len(sizes))]
    for j, c in enumerate(classes):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        for k, chunk in enumerate(np.split(idx, np.cumsum(counts[:, j])[:-1])):
            buckets[k].append(chunk)
    return [torch.from_numpy(np.concatenate(b).astype(np.int64)) for b in buckets]


def natural_groups(groups: torch.Tensor, num_clients: int, seed: int) -> list[torch.Tensor]:
    """Clients of whole groups: ``groups`` (n,) holds each sample's group id.

    With as many clients as distinct groups, client k holds the k-th group in ascending
    id order (LEAF: the k-th user). With fewer clients, the groups are shuffled by the
    generator ``(seed, "partition", "natural")`` and dealt out in near-equal contiguous
    blocks, so each client is a few whole users; more clients than groups is an error.
    """
    if groups.ndim != 1 or groups.dtype.is_floating_point:
        raise DataError(
            f"group ids must be a 1-D integer tensor, got {groups.dtype} "
            f"of shape {tuple(groups.shape)}"
        )
    ids, owner = torch.unique(groups, return_inverse=True)  # (G,), (n,) in 0..G-1
    g = ids.numel()
    if num_clients > g:
        raise DataError(
            f"data.partition=natural: data.num_clients={num_clients} exceeds the "
            f"{g} groups (users) in the training data; use data.num_clients <= {g}"
        )
    order = (
        torch.arange(g)
        if num_clients == g
        else torch.randperm(g, generator=generator(seed, "partition", "natural"))
    )
    client_of_group = torch.empty(g, dtype=torch.int64)
    for k, block in enumerate(torch.tensor_split(order, num_clients)):
        client_of_group[block] = k
    client = client_of_group[owner]  # (n,)
    return [torch.nonzero(client == k).flatten() for k in range(num_clients)]


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
            f"data.num_clients={num_clients} with data.min_client_size={min_size} needs at "
            f"least {num_clients * min_size} samples, have {n}"
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
    If every one of ``_DIRICHLET_ATTEMPTS`` draws leaves a client under ``min_size``, raises
    `DataError` naming the keys that would help (moving samples by hand would silently
    change the label skew asked for).
    """
    y = labels.cpu().numpy()
    classes = np.unique(y)  # sorted, so the per-class draw order is fixed
    smallest = 0
    for attempt in range(_DIRICHLET_ATTEMPTS):
        rng = np.random.default_rng(derive_seed(seed, "partition", "dirichlet", attempt))
        parts = _dirichlet_draw(y, classes, num_clients, alpha, rng)
        small = min(p.numel() for p in parts)
        if small >= min_size:
            return parts
        smallest = max(smallest, small)
    raise DataError(
        f"data.partition=dirichlet: {_DIRICHLET_ATTEMPTS} seeded draws with data.alpha={alpha} "
        f"over data.num_clients={num_clients} ({len(y)} samples, {len(classes)} classes) all "
        f"left a client under data.min_client_size={min_size} samples (best smallest: "
        f"{smallest}); raise data.alpha, lower data.num_clients or data.min_client_size, or "
        "use data.quantity_sigma (sizes fixed first)"
    )


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
