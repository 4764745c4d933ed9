"""CIFAR-10 and CIFAR-100 from the official python-pickle files in ``data.root``.

Never downloaded. The layouts (https://www.cs.toronto.edu/~kriz/cifar.html, python
version), each file a pickled dict with bytes keys:

* CIFAR-10, folder ``cifar-10-batches-py``: ``data_batch_1`` .. ``data_batch_5`` and
  ``test_batch``, each ``b"data"`` (n, 3072) uint8 and ``b"labels"`` (n,) in 0..9;
* CIFAR-100, folder ``cifar-100-python``: ``train`` and ``test``, each ``b"data"``
  (n, 3072) uint8, ``b"fine_labels"`` (0..99) and ``b"coarse_labels"`` (0..19).

Rows are channel-major (1024 red, 1024 green, 1024 blue values, each row-major 32x32).
The images stay uint8 pixels; the split's `PixelScale` (the per-channel statistics below)
normalizes each batch when it is drawn, as for MNIST.
``data.root`` may name that folder or the folder above it.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from lightning_gapsl.data.datasets import DataError, DatasetSplit, PixelScale

# Per-channel statistics of each training set (the std over all pixels, not the
# often-copied per-image average 0.2023/0.1994/0.2010).
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)

CIFAR10_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
CIFAR100_FILES = ("train", "test")
LABEL_KINDS = ("fine", "coarse")  # CIFAR-100's 100 classes or its 20 superclasses

_SPEC = {  # name -> (folder name, files, label key(s) by kind, classes by kind, stats)
    "cifar10": (
        "cifar-10-batches-py",
        CIFAR10_FILES,
        {"fine": b"labels"},
        {"fine": 10},
        (CIFAR10_MEAN, CIFAR10_STD),
    ),
    "cifar100": (
        "cifar-100-python",
        CIFAR100_FILES,
        {"fine": b"fine_labels", "coarse": b"coarse_labels"},
        {"fine": 100, "coarse": 20},
        (CIFAR100_MEAN, CIFAR100_STD),
    ),
}


def _hint(name: str) -> str:
    folder, files = _SPEC[name][0], _SPEC[name][1]
    return (
        f"set data.root=/path/to/{folder} (the folder with {', '.join(files)} from the "
        f"python version of {name.upper().replace('CIFAR', 'CIFAR-')}; nothing is "
        "downloaded)"
    )


def cifar_folder(name: str, root: str | None) -> Path:
    """The folder holding ``name``'s files: ``root`` itself or its standard subfolder."""
    if root is None:
        raise DataError(f"data.root is not set; data={name} needs it: {_hint(name)}")
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise DataError(f"data.root={folder} is not a folder; {_hint(name)}")
    sub, files = folder / _SPEC[name][0], _SPEC[name][1]
    if not (folder / files[0]).is_file() and sub.is_dir():
        folder = sub
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise DataError(f"data.root={folder} lacks {', '.join(missing)}; {_hint(name)}")
    return folder


def read_batch(
    path: Path, name: str, label_key: bytes, classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """One pickled CIFAR file: data (n, 3072) uint8 and labels (n,) int64 in 0..classes-1."""
    title = name.upper().replace("CIFAR", "CIFAR-")
    try:
        with path.open("rb") as f:
            batch = pickle.load(f, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, OSError, ValueError) as err:
        raise DataError(
            f"{title} file {path} is not a readable pickle ({err}); {_hint(name)}"
        ) from err
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        raise DataError(f"{title} file {path} must be a dict with b'data' and {label_key!r}")
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (data.shape[0],):
        raise DataError(
            f"{title} file {path}: b'data' must be (n, 3072) with n labels, got "
            f"{data.shape} and {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise DataError(f"{title} file {path}: {label_key!r} must be in 0..{classes - 1}")
    return data, labels


def to_images(data: np.ndarray) -> torch.Tensor:
    """(n, 3072) uint8 rows -> (n, 3, 32, 32) uint8 images (channel-major rows: an exact view).

    Kept as pixels: the split's `PixelScale` normalizes each batch when it is drawn
    (`DatasetSplit.prepare`), a quarter of the memory of normalized float32 images.
    """
    return torch.from_numpy(data).view(-1, 3, 32, 32)


def load_cifar(name: str, root: str | None, label_kind: str = "fine"):
    """``cifar10`` or ``cifar100`` as a `DatasetSplit` (CIFAR-100: ``label_kind`` fine or
    coarse labels; CIFAR-10 has only ``fine``)."""
    _, files, keys, classes, (mean, std) = _SPEC[name]
    if label_kind not in keys:
        raise DataError(
            f"data.label_kind={label_kind!r} is not valid for data={name}; "
            f"choose one of: {', '.join(keys)}"
        )
    folder = cifar_folder(name, root)
    parts = [read_batch(folder / f, name, keys[label_kind], classes[label_kind]) for f in files]
    train = parts[:-1]  # CIFAR-10: five batches; CIFAR-100: one file
    train_x = to_images(np.concatenate([d for d, _ in train]))  # fresh: carved in place
    train_y = torch.from_numpy(np.concatenate([lab for _, lab in train]))
    test_x = to_images(parts[-1][0])
    return DatasetSplit(
        train_x,
        train_y,
        test_x,
        torch.from_numpy(parts[-1][1]),
        classes[label_kind],
        name,
        norm=(mean, std),
        scale=PixelScale(mean, std),
    )
