"""Distributed tests (about 30 s): CIFAR-10 (small generated pickle files) with training
augmentation in 1 process and in 3 gloo ranks started with fork (5 clients over 2 client
ranks: blocks of 3 and 2), compared to the last bit; the same run without augmentation
differs (so the crops and flips really reach the model), and a run that replays the
first run's partition.json with another data.partition gets the same clients and
numbers. LEAF with natural partitions runs in 3 processes and equals 1 process.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightning_gapsl.data import load_dataset
from lightning_gapsl.train import compose, run
from tests.conftest import load_summary
from tests.fake_data import write_cifar10, write_leaf
from tests.golden.record import exact_fields

pytestmark = pytest.mark.slow

COMMON = [
    "optim=sgd",
    "logger=none",
    "trainer.progress_bar=false",
    "trainer.timeout_s=60",
    "model=lenet",
    "algorithm=psl",
    "data.num_clients=5",
    "data.batch_size=8",
    "data.steps_per_epoch=4",
    "trainer.max_epochs=2",
    "trainer.threads=1",
]


def _run(tmp_path: Path, name: str, *overrides: str) -> dict:
    return load_summary(run(compose([*COMMON, *overrides], str(tmp_path / name))))


def test_cifar_augmentation_is_layout_invariant_and_replays(tmp_path):
    root = write_cifar10(tmp_path, rows=30)
    cifar = ["data=cifar10", f"data.root={root}"]
    one = _run(tmp_path, "one", *cifar, "trainer.devices=1")
    three = _run(tmp_path, "three", *cifar, "trainer.devices=3")
    assert three["devices"] == 3
    assert exact_fields(one) == exact_fields(three)
    off = _run(tmp_path, "off", *cifar, "trainer.devices=1", "data.augment=false")
    assert off["history"][0]["train_loss"] != one["history"][0]["train_loss"]
    saved = tmp_path / "one" / "partition.json"
    replay = _run(
        tmp_path,
        "replay",
        *cifar,
        "trainer.devices=3",
        "data.partition=iid",
        f"data.partition_file={saved}",
    )
    assert (tmp_path / "replay" / "partition.json").read_text() == saved.read_text()
    assert exact_fields(replay) == exact_fields(one)
    record = json.loads(saved.read_text())
    hist = (tmp_path / "one" / "label_histograms.csv").read_text().splitlines()
    assert len(record["clients"]) == 5 and len(hist) == 6  # header + one row per client
    assert sum(len(c) for c in record["clients"]) == record["num_train"] == 135  # 150 - val


def test_leaf_natural_partition_one_equals_three(tmp_path):
    sizes = write_leaf(tmp_path / "leaf", users=7, files=2)
    leaf = ["data=leaf", f"data.root={tmp_path / 'leaf'}", "data.val_fraction=0"]
    one = _run(tmp_path, "one", *leaf, "trainer.devices=1")
    three = _run(tmp_path, "three", *leaf, "trainer.devices=3")
    assert exact_fields(one) == exact_fields(three)
    record = json.loads((tmp_path / "one" / "partition.json").read_text())
    groups = load_dataset("leaf", root=str(tmp_path / "leaf")).train_groups  # user per sample
    users = [sorted(set(groups[c].tolist())) for c in record["clients"]]
    assert sorted(len(u) for u in users) == [1, 1, 1, 2, 2]  # 7 users dealt over 5 clients
    for client, mine in zip(record["clients"], users, strict=True):  # whole users only
        assert len(client) == sum(sizes["train_sizes"][u] for u in mine)
