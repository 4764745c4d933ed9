"""Small data folders in the exact official layouts, written into a test's tmp folder.

* `write_cifar10`: ``cifar-10-batches-py/`` with ``data_batch_1..5`` and ``test_batch``;
* `write_cifar100`: ``cifar-100-python/`` with ``train`` and ``test`` (fine and coarse
  labels, with CIFAR-100's own fine -> coarse mapping style: coarse = fine // 5);
* `write_leaf`: ``train/*.json`` and ``test/*.json`` of LEAF (FEMNIST-like: 784 floats).

Pixels are random but class-dependent (a per-class brightness offset), so a few steps
of training can move the loss.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np


def _images(rng: np.random.Generator, labels: np.ndarray, classes: int) -> np.ndarray:
    """(n, 3072) uint8 rows, channel-major, brighter for higher labels."""
    base = rng.integers(0, 128, size=(labels.size, 3072))
    return (base + (labels[:, None] * 127) // max(classes - 1, 1)).astype(np.uint8)


def write_cifar10(root: Path, rows: int = 8, seed: int = 0) -> Path:
    """The six CIFAR-10 batches with ``rows`` rows each; returns the folder."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = rng.integers(0, 10, size=rows)
        batch = {
            b"batch_label": name.encode(),
            b"labels": labels.tolist(),
            b"data": _images(rng, labels, 10),
            b"filenames": [b"x.png"] * rows,
        }
        with (folder / name).open("wb") as f:
            pickle.dump(batch, f)
    return folder


def write_cifar100(root: Path, train: int = 40, test: int = 10, seed: int = 0) -> Path:
    """CIFAR-100's ``train`` and ``test`` files; returns the folder."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("test", test)):
        fine = rng.integers(0, 100, size=rows)
        batch = {
            b"filenames": [b"x.png"] * rows,
            b"batch_label": name.encode(),
            b"fine_labels": fine.tolist(),
            b"coarse_labels": (fine // 5).tolist(),
            b"data": _images(rng, fine, 100),
        }
        with (folder / name).open("wb") as f:
            pickle.dump(batch, f)
    return folder


def leaf_blob(users: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict:
    """LEAF's JSON object for ``{user: (x (n, d), y (n,))}``."""
    return {
        "users": list(users),
        "num_samples": [len(y) for _, y in users.values()],
        "user_data": {u: {"x": x.tolist(), "y": y.tolist()} for u, (x, y) in users.items()},
    }


def write_leaf(
    root: Path,
    users: int = 6,
    per_user: tuple[int, int] = (6, 14),
    classes: int = 62,
    files: int = 2,
    seed: int = 0,
) -> dict[str, list[int]]:
    """A FEMNIST-like LEAF folder: ``users`` writers over ``files`` train and test files.

    Returns ``{"train_sizes": [...], "test_sizes": [...]}`` in user order.
    """
    rng = np.random.default_rng(seed)
    sizes = {"train_sizes": [], "test_sizes": []}
    for part in ("train", "test"):
        (root / part).mkdir(parents=True, exist_ok=True)
        names = [f"f{u:04d}_{u % 7:02d}" for u in range(users)]
        for f, chunk in enumerate(np.array_split(np.arange(users), files)):
            blob = {}
            for u in chunk:
                n = int(rng.integers(*per_user)) if part == "train" else 3
                y = rng.integers(0, classes, size=n)
                x = np.clip(rng.random((n, 784)) * 0.5 + y[:, None] / (2 * classes), 0, 1)
                blob[names[u]] = (x.round(4), y)
                sizes[f"{part}_sizes"].append(n)
            (root / part / f"all_data_{f}_niid_0_keep_0_{part}_9.json").write_text(
                json.dumps(leaf_blob(blob))
            )
    return sizes
