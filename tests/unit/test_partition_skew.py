"""Unit tests (milliseconds): natural partitions, log-normal quantity skew (alone and with
Dirichlet label skew), and saving / replaying a partition file, on numbers small enough
to check by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_gapsl.data import DataError, label_histograms, partition
from lightning_gapsl.data.partition import dirichlet_counts, lognormal_sizes, natural_groups
from lightning_gapsl.data.partition_file import load_partition, partition_record, save_partition
from lightning_gapsl.seeding import generator


def cover(parts: list[torch.Tensor]) -> list[int]:
    return torch.cat(parts).sort().values.tolist()


# --- natural ---------------------------------------------------------------------------


def test_natural_one_client_per_group_in_id_order() -> None:
    groups = torch.tensor([7, 3, 7, 9, 3, 3])  # three writers: 3, 7, 9
    parts = natural_groups(groups, 3, seed=0)
    assert [p.tolist() for p in parts] == [[1, 4, 5], [0, 2], [3]]


def test_natural_fewer_clients_take_whole_groups() -> None:
    groups = torch.arange(60) % 6  # six groups of 10
    parts = natural_groups(groups, 4, seed=1)
    assert cover(parts) == list(range(60))
    assert sorted(p.numel() for p in parts) == [10, 10, 20, 20]  # blocks of 1-2 groups
    for p in parts:  # no group is split between clients
        assert all(int((groups[p] == g).sum()) in (0, 10) for g in range(6))
    assert [p.tolist() for p in natural_groups(groups, 4, seed=1)] == [p.tolist() for p in parts]


def test_natural_errors_name_the_key() -> None:
    labels = torch.zeros(6, dtype=torch.int64)
    with pytest.raises(DataError, match=r"data.num_clients=4 exceeds the 3 groups"):
        partition(labels, 4, "natural", groups=torch.tensor([0, 0, 1, 1, 2, 2]))
    with pytest.raises(DataError, match="data.partition=natural needs a per-sample group id"):
        partition(labels, 2, "natural")
    with pytest.raises(DataError, match="data.min_client_size=3"):
        partition(labels, 3, "natural", groups=torch.tensor([0, 0, 1, 1, 2, 2]), min_size=3)


# --- quantity skew ---------------------------------------------------------------------


def test_lognormal_sizes_by_hand() -> None:
    # sigma = 0: equal shares; 10 over 3 -> 3.33 each, the one left over to client 0
    assert lognormal_sizes(10, 3, 0.0, seed=0).tolist() == [4, 3, 3]
    # the minimum comes first: 2 each, the other 4 shared
    assert lognormal_sizes(10, 3, 0.0, seed=0, min_size=2).tolist() == [4, 3, 3]
    sizes = lognormal_sizes(1000, 8, 1.0, seed=3, min_size=5)
    assert int(sizes.sum()) == 1000 and int(sizes.min()) >= 5
    assert torch.equal(sizes, lognormal_sizes(1000, 8, 1.0, seed=3, min_size=5))
    z = torch.randn(8, generator=generator(3, "partition", "sizes"), dtype=torch.float64)
    assert sizes.argsort().tolist() == z.argsort().tolist()  # larger z, larger client


def test_lognormal_spread_grows_with_sigma_and_never_overflows() -> None:
    spread = [float(lognormal_sizes(10000, 20, s, seed=0).double().std()) for s in (0.3, 1, 2)]
    assert spread[0] < spread[1] < spread[2]
    huge = lognormal_sizes(100, 5, 1e300, seed=0)  # exp would overflow; the softmax cannot
    assert int(huge.sum()) == 100 and int(huge.min()) >= 1 and int(huge.max()) == 96


def test_iid_with_quantity_skew_covers_with_those_sizes() -> None:
    labels = torch.arange(300) % 3
    parts = partition(labels, 6, "iid", quantity_sigma=1.0, seed=2)
    assert cover(parts) == list(range(300))
    assert [p.numel() for p in parts] == lognormal_sizes(300, 6, 1.0, seed=2).tolist()


def test_dirichlet_counts_fill_sizes_within_class_supply() -> None:
    rng = np.random.default_rng(0)
    class_counts = np.array([5, 5, 2])
    counts = dirichlet_counts(class_counts, np.array([6, 4, 2]), 0.1, rng)
    assert counts.sum(1).tolist() == [6, 4, 2] and counts.sum(0).tolist() == [5, 5, 2]
    # a client whose whole mix is on exhausted classes still gets its size from the rest
    few = dirichlet_counts(np.array([1, 9]), np.array([1, 9]), 1e-300, rng)
    assert few.sum(1).tolist() == [1, 9] and few.sum(0).tolist() == [1, 9]
    with pytest.raises(DataError):
        dirichlet_counts(np.array([1, 1]), np.array([3]), 1.0, rng)


def test_dirichlet_with_quantity_skew_has_both() -> None:
    labels = torch.arange(10).repeat_interleave(100)
    parts = partition(labels, 10, "dirichlet", alpha=0.1, quantity_sigma=1.0, seed=0)
    assert cover(parts) == list(range(1000))
    assert [p.numel() for p in parts] == lognormal_sizes(1000, 10, 1.0, seed=0).tolist()
    hist = label_histograms(labels, parts, 10).double()
    top_share = (hist.max(1).values / hist.sum(1)).mean()
    assert top_share > 0.6  # label skew: most of a client's samples share a label
    iid_like = partition(labels, 10, "dirichlet", alpha=1000.0, quantity_sigma=1.0, seed=0)
    flat = label_histograms(labels, iid_like, 10).double()
    assert (flat.max(1).values / flat.sum(1)).mean() < top_share


def test_quantity_sigma_on_shards_is_refused() -> None:
    with pytest.raises(DataError, match="data.quantity_sigma=1.0 applies to data.partition"):
        partition(torch.arange(100) % 10, 5, "shards", quantity_sigma=1.0)


# --- partition files -------------------------------------------------------------------


def write(tmp_path, parts, labels) -> str:
    path = tmp_path / "partition.json"
    save_partition(path, partition_record(parts, labels, "toy", 3))
    return str(path)


def test_partition_file_round_trip(tmp_path) -> None:
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    parts = [torch.tensor([0, 4]), torch.tensor([1, 2, 6]), torch.tensor([3, 5])]
    path = write(tmp_path, parts, labels)
    record = json.loads(Path(path).read_text())
    assert record["clients"] == [[0, 4], [1, 2, 6], [3, 5]]
    assert record["label_counts"] == [[1, 1, 0], [1, 1, 1], [1, 0, 1]]
    back = load_partition(path, labels, 3)
    assert [p.tolist() for p in back] == [p.tolist() for p in parts]


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda r: r.update(clients=[[0, 4], [1, 2, 6]]), "holds 2 clients but data.num_clients=3"),
        (lambda r: r["clients"][1].append(4), "repeats a sample index"),
        (lambda r: r["clients"][2].append(7), "index outside 0..6"),
        (lambda r: r["clients"].__setitem__(0, []), "client 0 must be a non-empty list"),
        (lambda r: r["clients"].__setitem__(0, ["a"]), "client 0 must be a non-empty list"),
        (lambda r: r.update(num_train=8), "was written for other training data"),
        (lambda r: r.update(labels_crc32=1), "was written for other training data"),
        (lambda r: r.pop("format"), "is not a partition file"),
    ],
)
def test_bad_partition_files_name_the_key(tmp_path, edit, message) -> None:
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    path = write(
        tmp_path, [torch.tensor([0, 4]), torch.tensor([1, 2, 6]), torch.tensor([3, 5])], labels
    )
    record = json.loads(Path(path).read_text())
    edit(record)
    Path(path).write_text(json.dumps(record))
    with pytest.raises(DataError) as err:
        load_partition(path, labels, 3)
    assert str(err.value).startswith(f"data.partition_file={path}") and message in str(err.value)


def test_unreadable_partition_file(tmp_path) -> None:
    path = tmp_path / "p.json"
    path.write_text("{not json")
    with pytest.raises(DataError, match="is not a readable JSON file"):
        load_partition(path, torch.zeros(3, dtype=torch.int64), 1)
