"""Unit tests (about a second): the Fashion-MNIST loader, its statistics and its errors.

Tests on the real files (the Debian package ``dataset-fashion-mnist``) skip where it is
not installed; the format, ``data.root`` and error tests run on files written here.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_gapsl.data import DataError, datasets, idx, load_dataset

REAL = Path(idx.FMNIST_DIR)
needs_real = pytest.mark.skipif(
    not (REAL / "train-images-idx3-ubyte.gz").is_file(),
    reason="dataset-fashion-mnist is not installed",
)


def _idx(array: np.ndarray) -> bytes:
    """``array`` (uint8) in IDX format: magic 0x08 | ndim, sizes, then the bytes."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_fake(folder: Path, gz: set[str]) -> dict[str, np.ndarray]:
    """Four MNIST-sized IDX files whose pixels all equal 20 * label; ``gz`` stems gzipped."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for prefix, n in (("train", 60000), ("t10k", 10000)):
        labels = (np.arange(n) * 7 % 10).astype(np.uint8)  # (n,)
        images = np.broadcast_to((labels * 20)[:, None, None], (n, 28, 28))  # (n, 28, 28)
        for stem, arr in (
            (f"{prefix}-images-idx3-ubyte", images),
            (f"{prefix}-labels-idx1-ubyte", labels),
        ):
            raw = _idx(np.ascontiguousarray(arr))
            if stem in gz:
                (folder / f"{stem}.gz").write_bytes(gzip.compress(raw, compresslevel=1))
            else:
                (folder / stem).write_bytes(raw)
            written[stem] = arr
    return written


@needs_real
def test_statistics_are_those_of_the_training_set() -> None:
    # Recompute mean and std over all 60000 training images from the raw bytes.
    raw = idx.read_idx(REAL / "train-images-idx3-ubyte.gz", 3)  # (60000, 28, 28)
    x = raw.astype(np.float64) / 255.0
    assert x.mean() == pytest.approx(idx.FMNIST_MEAN[0], abs=1e-4)
    assert x.std() == pytest.approx(idx.FMNIST_STD[0], abs=1e-4)


@needs_real
def test_real_files_load_balanced_and_normalised() -> None:
    d = load_dataset("fmnist", max_test=2000)
    assert d.train_x.shape == (60000, 1, 28, 28) and d.test_x.shape == (2000, 1, 28, 28)
    assert torch.bincount(d.train_y).tolist() == [6000] * 10  # Fashion-MNIST is balanced
    assert d.train_x.dtype == torch.uint8  # pixels; the split's scale normalizes batches
    x = d.scale(d.train_x)  # (60000, 1, 28, 28) float32
    assert abs(x.mean().item()) < 0.01 and abs(x.std().item() - 1) < 0.01
    assert d.name == "fmnist" and d.num_classes == 10


def test_root_reads_gzipped_and_plain_files(tmp_path: Path) -> None:
    gz = {"train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"}  # the other two plain
    written = _write_fake(tmp_path / "f", gz)
    d = load_dataset("fmnist", root=str(tmp_path / "f"), max_train=500, max_test=30)
    keep = datasets._keep_index(60000, 500, "fmnist-train")  # the rows truncation keeps
    labels = torch.from_numpy(written["train-labels-idx1-ubyte"][keep.numpy()].astype(np.int64))
    assert torch.equal(d.train_y, labels)
    mean, std = idx.FMNIST_MEAN[0], idx.FMNIST_STD[0]
    expected = ((labels.float() * 20 / 255 - mean) / std).view(-1, 1, 1, 1).expand(-1, 1, 28, 28)
    torch.testing.assert_close(d.scale(d.train_x), expected)
    assert d.test_x.shape == (30, 1, 28, 28)


def test_missing_file_names_the_file_and_both_ways(tmp_path: Path) -> None:
    _write_fake(tmp_path / "f", gz=set())
    (tmp_path / "f" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError) as err:
        load_dataset("fmnist", root=str(tmp_path / "f"))
    message = str(err.value)
    assert "t10k-labels-idx1-ubyte.gz" in message and str(tmp_path / "f") in message
    assert "apt-get install dataset-fashion-mnist" in message and "data.root=" in message
    assert "\n" not in message


def test_wrong_size_and_corrupt_gzip_are_named(tmp_path: Path) -> None:
    _write_fake(tmp_path / "f", gz=set())
    short = np.zeros((5, 28, 28), dtype=np.uint8)
    (tmp_path / "f" / "t10k-images-idx3-ubyte").write_bytes(_idx(short))
    with pytest.raises(DataError, match=r"Fashion-MNIST t10k files .* \(5, 28, 28\)"):
        load_dataset("fmnist", root=str(tmp_path / "f"))
    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(_idx(short))[:30])  # truncated gzip stream
    with pytest.raises(DataError, match="bad.gz is not a readable gzip file"):
        idx.read_idx(bad, 3, "Fashion-MNIST", "hint")
