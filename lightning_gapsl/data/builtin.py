"""The built-in data sets by name: `builtin_split` (what the registered loaders of
`lightning_gapsl.builtins` call) and `load_dataset`, the keyword form tests and scripts
use. Kept apart from `datasets` so the loaders (idx, cifar, leaf) import that module
without a cycle."""

from __future__ import annotations

from lightning_gapsl.data.cifar import load_cifar
from lightning_gapsl.data.datasets import (
    DATASETS,
    DataError,
    DatasetSplit,
    _check_max,
    _load_digits,
    _make_synthetic,
    _truncate,
    carve_validation,
)
from lightning_gapsl.data.idx import load_fmnist, load_mnist
from lightning_gapsl.data.leaf import load_leaf


def load_dataset(
    name: str,
    *,
    root: str | None = None,
    seed: int = 0,
    synthetic_shape: tuple[int, int, int] = (1, 28, 28),
    synthetic_classes: int = 10,
    synthetic_train: int = 6000,
    synthetic_test: int = 1000,
    max_train: int | None = None,
    max_test: int | None = None,
    val_fraction: float = 0.0,
    label_kind: str = "fine",
) -> DatasetSplit:
    """Load dataset ``name`` (one of `DATASETS`), optionally truncated, with a validation split.

    ``root`` is used by ``cifar10``, ``cifar100``, ``leaf`` and ``fmnist`` (default
    `idx.FMNIST_DIR`); ``label_kind`` (fine | coarse) by ``cifar100``;
    ``synthetic_shape`` by ``synthetic`` and by ``leaf`` (the shape of one flattened
    sample); the other ``synthetic_*`` arguments by ``synthetic``. ``seed`` (the run
    seed) generates the synthetic data and draws the
    validation split. ``max_train``/``max_test`` keep a fixed, seed-independent random
    subset (in original order) for fast runs; ``None`` keeps everything. Then
    ``val_fraction`` of the remaining training samples become the validation split
    (`carve_validation`; 0 keeps none), identically for every dataset.
    """
    _check_max("data.max_train", max_train)
    _check_max("data.max_test", max_test)
    split = builtin_split(
        name,
        root=root,
        seed=seed,
        shape=synthetic_shape,
        classes=synthetic_classes,
        num_train=synthetic_train,
        num_test=synthetic_test,
        max_train=max_train,
        max_test=max_test,
        label_kind=label_kind,
    )
    # The loaders build fresh tensors, so the carve may reuse their memory.
    return carve_validation(
        _truncate(split, max_train, max_test), val_fraction, seed, in_place=True
    )


def builtin_split(
    name: str,
    *,
    root: str | None,
    seed: int,
    shape: tuple[int, ...],
    classes: int,
    num_train: int,
    num_test: int,
    max_train: int | None,
    max_test: int | None,
    label_kind: str,
) -> DatasetSplit:
    """Built-in data set ``name`` as loaded, before truncation and the validation carve
    (mnist and fmnist truncate while reading; `_truncate` is then a no-op)."""
    if name in ("mnist", "fmnist"):
        return (
            load_mnist(max_train, max_test)
            if name == "mnist"
            else load_fmnist(root, max_train, max_test)
        )
    if name == "digits":
        return _load_digits()
    if name == "synthetic":
        return _make_synthetic(seed, shape, classes, num_train, num_test)
    if name in ("cifar10", "cifar100"):
        return load_cifar(name, root, label_kind)
    if name == "leaf":
        return load_leaf(root, shape)
    raise DataError(f"data={name!r} is not a built-in dataset; valid: {', '.join(DATASETS)}")
