"""LEAF's JSON layout (FEMNIST and the other flattened-image tasks) from ``data.root``.

LEAF (Caldas et al., 2018; github.com/TalwalkarLab/leaf) writes each split as one or
more JSON files, ``<root>/train/*.json`` and ``<root>/test/*.json``, each holding::

    {"users": ["f0000_14", ...], "num_samples": [n_0, ...],
     "user_data": {"f0000_14": {"x": [[...], ...], "y": [...]}, ...}}

where each ``x`` row is one flattened sample (FEMNIST: 28 * 28 = 784 floats in [0, 1])
and ``y`` its integer label (FEMNIST: 62 classes). Files are read in name order and
users in file order; each training sample's group id is the index of its user in that
order, so ``data.partition=natural`` makes clients of LEAF's own users. The test files
of all users are pooled into the common test set. Samples are reshaped to
``data.shape`` (default (1, 28, 28), FEMNIST's) and normalized with the training set's
per-channel statistics; the number of classes is the largest label plus one.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from lightning_gapsl.data.datasets import DataError, DatasetSplit, _channel_stats, _normalize_

_HINT = (
    "set data.root to a LEAF data folder holding train/*.json and test/*.json "
    "(each with users, num_samples and user_data: {user: {x, y}})"
)


def read_leaf_file(
    path: Path, features: int
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """One LEAF JSON file: users, x (n, features) float32, y (n,) int64, user (n,) int64
    (position of each sample's user in ``users``)."""
    try:
        blob = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"LEAF file {path} is not readable JSON ({err}); {_HINT}") from None
    if not isinstance(blob, dict) or not all(k in blob for k in ("users", "user_data")):
        raise DataError(
            f"LEAF file {path} must be a JSON object with 'users' and "
            f"'user_data' (and 'num_samples'); {_HINT}"
        )
    users, data = blob["users"], blob["user_data"]
    counts = blob.get("num_samples", [None] * len(users))
    if not isinstance(users, list) or not isinstance(data, dict) or len(counts) != len(users):
        raise DataError(
            f"LEAF file {path}: 'users' must be a list as long as 'num_samples' "
            "and 'user_data' an object keyed by user"
        )
    xs, ys, owner = [], [], []
    for k, (user, count) in enumerate(zip(users, counts, strict=False)):
        record = data.get(user)
        if not isinstance(record, dict) or "x" not in record or "y" not in record:
            raise DataError(f"LEAF file {path}: user_data[{user!r}] must hold 'x' and 'y'")
        try:
            rows = record["x"]
            x = (
                np.asarray(rows, dtype=np.float32)
                if len(rows)
                else np.zeros((0, features), dtype=np.float32)
            )
            x = x.reshape(x.shape[0], -1)  # (n, features); nested rows are flattened
            y = np.asarray(record["y"])
        except (TypeError, ValueError) as err:
            raise DataError(
                f"LEAF file {path}: user {user!r} has x rows of unequal length or "
                f"non-numbers ({err})"
            ) from None
        n = x.shape[0]
        if y.shape != (n,) or (count is not None and count != n):
            raise DataError(
                f"LEAF file {path}: user {user!r} has {n} x rows, {y.size} labels "
                f"and num_samples {count}; they must agree"
            )
        if n and x.shape[1] != features:
            raise DataError(
                f"LEAF file {path}: user {user!r} has samples of {x.shape[1]} "
                f"values, data.shape needs {features} (set data.shape=[C,H,W])"
            )
        if n and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0):
            raise DataError(f"LEAF file {path}: user {user!r} labels must be integers >= 0")
        xs.append(x.reshape(n, features))
        ys.append(y.astype(np.int64))
        owner.append(np.full(n, k, dtype=np.int64))
    if not xs:
        return [], np.zeros((0, features), np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64)
    return list(users), np.concatenate(xs), np.concatenate(ys), np.concatenate(owner)


def _read_split(folder: Path, features: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All files of ``folder``: x (n, features), y (n,), group (n,) in first-seen user order."""
    files = sorted(folder.glob("*.json"))
    if not files:
        raise DataError(f"data.root: {folder} holds no *.json files; {_HINT}")
    xs, ys, groups, ids = [], [], [], {}
    for path in files:
        users, x, y, owner = read_leaf_file(path, features)
        gid = np.array([ids.setdefault(u, len(ids)) for u in users], dtype=np.int64)
        xs.append(x)
        ys.append(y)
        groups.append(gid[owner] if owner.size else owner)
    x, y, g = (torch.from_numpy(np.concatenate(a)) for a in (xs, ys, groups))
    if y.numel() == 0:
        raise DataError(f"data.root: the LEAF files in {folder} hold no samples")
    return x, y, g


def load_leaf(root: str | None, shape: tuple[int, int, int] = (1, 28, 28)) -> DatasetSplit:
    """LEAF train and test splits from ``root`` (see the module docstring)."""
    if root is None:
        raise DataError(f"data.root is not set; data=leaf needs it: {_HINT}")
    folder = Path(root).expanduser()
    for part in ("train", "test"):
        if not (folder / part).is_dir():
            raise DataError(f"data.root={folder} lacks the folder {part}/; {_HINT}")
    features = math.prod(shape)
    train_x, train_y, groups = _read_split(folder / "train", features)
    test_x, test_y, _ = _read_split(folder / "test", features)
    train_x, test_x = train_x.view(-1, *shape), test_x.view(-1, *shape)  # (n, C, H, W)
    mean, std = _channel_stats(train_x)
    classes = int(max(train_y.max(), test_y.max())) + 1
    return DatasetSplit(
        _normalize_(train_x, mean, std),
        train_y,
        _normalize_(test_x, mean, std),
        test_y,
        max(classes, 2),
        "leaf",
        train_groups=groups,
        norm=(mean, std),
    )
