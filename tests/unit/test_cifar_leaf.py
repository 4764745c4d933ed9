"""Unit tests (milliseconds): the CIFAR-10/100 and LEAF loaders on small files written in
the official layouts (`tests.fake_data`), and their errors."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from lightning_gapsl.data import DataError, load_dataset
from lightning_gapsl.data.cifar import CIFAR100_MEAN, CIFAR100_STD
from tests.fake_data import leaf_blob, write_cifar10, write_cifar100, write_leaf


def test_cifar100_fine_and_coarse_labels(tmp_path: Path) -> None:
    folder = write_cifar100(tmp_path, train=30, test=7)
    with (folder / "train").open("rb") as f:
        raw = pickle.load(f, encoding="bytes")
    fine = load_dataset("cifar100", root=str(folder))
    assert fine.num_classes == 100 and fine.train_x.shape == (30, 3, 32, 32)
    assert fine.test_x.shape == (7, 3, 32, 32)
    assert fine.train_y.tolist() == raw[b"fine_labels"]
    coarse = load_dataset("cifar100", root=str(tmp_path), label_kind="coarse")  # parent folder
    assert coarse.num_classes == 20 and coarse.train_y.tolist() == raw[b"coarse_labels"]
    assert torch.equal(coarse.train_x, fine.train_x)
    c, i, j = 2, 31, 0  # channel-major rows: pixel (c, i, j) is column c*1024 + i*32 + j
    expected = (raw[b"data"][4][c * 1024 + i * 32 + j] / 255.0 - CIFAR100_MEAN[c]) / CIFAR100_STD[c]
    assert fine.train_x.dtype == torch.uint8  # pixels, normalized per batch when drawn
    assert fine.prepare(fine.train_x)[4, c, i, j].item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_pixels_scaled_per_batch_equal_the_whole_set_normalized_once(
    tmp_path: Path, name: str
) -> None:
    # Stored as uint8 and normalized per drawn batch (as MNIST): the floats must be bitwise
    # those of normalizing the whole set once at load time (x / 255, - mean, / std).
    folder = (
        write_cifar10(tmp_path, rows=40)
        if name == "cifar10"
        else write_cifar100(tmp_path, train=400)
    )  # enough samples per class for a validation split
    d = load_dataset(name, root=str(folder), val_fraction=0.2, seed=3)
    assert d.val_x.shape[0] > 0
    assert d.train_x.dtype == d.val_x.dtype == d.test_x.dtype == torch.uint8
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in d.norm)
    for x in (d.train_x, d.val_x, d.test_x):
        once = x.to(torch.float32).div_(255.0).sub_(mean).div_(std)  # (n, 3, 32, 32)
        assert torch.equal(d.prepare(x), once)
        idx = torch.tensor([[0, x.shape[0] - 1], [1, 1]])  # (K, B) as ClientBatches gathers
        assert torch.equal(d.prepare(x[idx]), once[idx])


def test_cifar_errors_name_the_file_or_key(tmp_path: Path) -> None:
    folder = write_cifar100(tmp_path)
    with pytest.raises(DataError, match="data.label_kind='coarse' is not valid for data=cifar10"):
        load_dataset("cifar10", root=str(write_cifar10(tmp_path)), label_kind="coarse")
    (folder / "test").unlink()
    with pytest.raises(DataError, match=r"lacks test; set data.root=/path/to/cifar-100-python"):
        load_dataset("cifar100", root=str(folder))
    (folder / "test").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match=r"CIFAR-100 file .*test is not a readable pickle"):
        load_dataset("cifar100", root=str(folder))
    with (folder / "test").open("wb") as f:
        pickle.dump(
            {b"data": torch.zeros(2, 3072, dtype=torch.uint8).numpy(), b"fine_labels": [0, 100]}, f
        )
    with pytest.raises(DataError, match=r"b'fine_labels' must be in 0..99"):
        load_dataset("cifar100", root=str(folder))


def test_leaf_reads_users_as_groups(tmp_path: Path) -> None:
    sizes = write_leaf(tmp_path, users=5, files=2)
    d = load_dataset("leaf", root=str(tmp_path))
    n = sum(sizes["train_sizes"])
    assert d.train_x.shape == (n, 1, 28, 28) and d.test_x.shape == (15, 1, 28, 28)
    assert torch.bincount(d.train_groups).tolist() == sizes["train_sizes"]
    assert torch.equal(d.train_groups, d.train_groups.sort().values)  # users in file order
    blob = json.loads(min((tmp_path / "train").glob("*.json")).read_text())
    first = blob["users"][0]
    assert d.train_y[: sizes["train_sizes"][0]].tolist() == blob["user_data"][first]["y"]
    # normalized with the training statistics: mean 0, std 1 over the training pixels
    assert abs(d.train_x.mean().item()) < 1e-4 and abs(d.train_x.std().item() - 1) < 1e-3
    carved = load_dataset("leaf", root=str(tmp_path), val_fraction=0.2, seed=3)
    assert carved.train_groups.shape == carved.train_y.shape  # groups follow the carve
    assert carved.train_groups.numel() + carved.val_y.numel() == n


@pytest.mark.parametrize(
    "content, message",
    [
        ("{oops", "is not readable JSON"),
        ('{"users": ["a"]}', "must be a JSON object with 'users' and 'user_data'"),
        (
            json.dumps({"users": ["a"], "num_samples": [1], "user_data": {}}),
            "user_data['a'] must hold 'x' and 'y'",
        ),
        (
            json.dumps(
                {
                    "users": ["a"],
                    "num_samples": [2],
                    "user_data": {"a": {"x": [[0.0] * 784], "y": [1]}},
                }
            ),
            "has 1 x rows, 1 labels and num_samples 2",
        ),
        (
            json.dumps(
                {
                    "users": ["a"],
                    "num_samples": [1],
                    "user_data": {"a": {"x": [[0.0] * 10], "y": [1]}},
                }
            ),
            "samples of 10 values, data.shape needs 784",
        ),
        (
            json.dumps(
                {
                    "users": ["a"],
                    "num_samples": [1],
                    "user_data": {"a": {"x": [[0.0] * 784], "y": [0.5]}},
                }
            ),
            "labels must be integers",
        ),
    ],
)
def test_malformed_leaf_file_names_it(tmp_path: Path, content: str, message: str) -> None:
    write_leaf(tmp_path, users=2, files=1)
    bad = tmp_path / "train" / "zz_bad.json"
    bad.write_text(content)
    with pytest.raises(DataError) as err:
        load_dataset("leaf", root=str(tmp_path))
    assert str(bad) in str(err.value) and message in str(err.value)


def test_leaf_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data.root is not set; data=leaf needs it"):
        load_dataset("leaf")
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="lacks the folder test/"):
        load_dataset("leaf", root=str(tmp_path))
    (tmp_path / "test").mkdir()
    with pytest.raises(DataError, match="holds no \\*.json files"):
        load_dataset("leaf", root=str(tmp_path))
    (tmp_path / "train" / "a.json").write_text(json.dumps(leaf_blob({})))
    (tmp_path / "test" / "a.json").write_text(json.dumps(leaf_blob({})))
    with pytest.raises(DataError, match="hold no samples"):
        load_dataset("leaf", root=str(tmp_path))
