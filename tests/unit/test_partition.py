"""Unit tests (milliseconds): client partitioners and label histograms."""

from __future__ import annotations

import pytest
import torch

from lightning_gapsl.data import PARTITIONS, DataError, label_histograms, partition
from lightning_gapsl.seeding import generator


def balanced_labels(classes: int = 10, per_class: int = 100) -> torch.Tensor:
    """Shuffled labels with ``per_class`` samples of each class."""
    labels = torch.arange(classes).repeat_interleave(per_class)  # (classes * per_class,)
    return labels[torch.randperm(labels.numel(), generator=generator(0, "test-labels"))]


def mean_entropy(hist: torch.Tensor) -> float:
    """Mean over clients of the entropy (nats) of each client's label distribution."""
    p = hist.double() / hist.sum(1, keepdim=True)
    return float(-(p * p.clamp_min(1e-12).log()).sum(1).mean())


def assert_exact_cover(parts: list[torch.Tensor], n: int) -> None:
    for p in parts:
        assert p.dtype == torch.int64 and p.ndim == 1
        assert torch.equal(p, p.sort().values)
    assert torch.equal(torch.cat(parts).sort().values, torch.arange(n))


def groups_of(labels: torch.Tensor, num_groups: int = 25) -> torch.Tensor:
    """A fixed group id (a "writer") per sample, ``num_groups`` of them."""
    return torch.arange(labels.numel()) * 7 % num_groups


@pytest.mark.parametrize("scheme", PARTITIONS)
@pytest.mark.parametrize("num_clients", [1, 3, 10])
def test_every_index_exactly_once(scheme: str, num_clients: int) -> None:
    labels = balanced_labels()
    parts = partition(labels, num_clients, scheme, seed=3, groups=groups_of(labels))
    assert len(parts) == num_clients
    assert_exact_cover(parts, labels.numel())
    assert min(p.numel() for p in parts) >= 1


def test_iid_sizes_are_near_equal() -> None:
    sizes = [p.numel() for p in partition(balanced_labels(), 7, "iid")]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("scheme", PARTITIONS)
def test_same_seed_same_partition_other_seed_differs(scheme: str) -> None:
    labels = balanced_labels()
    g = groups_of(labels)  # natural: 25 groups over 10 clients, so the seed deals them
    a = partition(labels, 10, scheme, seed=1, groups=g)
    b = partition(labels, 10, scheme, seed=1, groups=g)
    c = partition(labels, 10, scheme, seed=2, groups=g)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=False))
    assert not all(x.numel() == y.numel() and torch.equal(x, y) for x, y in zip(a, c, strict=False))


def test_dirichlet_skew_grows_as_alpha_shrinks() -> None:
    labels = balanced_labels(per_class=200)
    entropies = []
    for alpha in (0.1, 1.0, 100.0):
        parts = partition(labels, 10, "dirichlet", alpha=alpha, seed=0)
        entropies.append(mean_entropy(label_histograms(labels, parts, 10)))
    assert entropies[0] < entropies[1] < entropies[2]
    assert entropies[2] > 0.95 * torch.log(torch.tensor(10.0)).item()  # near uniform


def test_dirichlet_min_size_by_redraw_or_a_clear_error() -> None:
    labels = balanced_labels()
    # Moderate skew: some draw gives every client >= 20 samples; it is kept, seeded.
    parts = partition(labels, 10, "dirichlet", alpha=1.0, seed=0, min_size=20)
    assert_exact_cover(parts, labels.numel())
    assert min(p.numel() for p in parts) >= 20
    again = partition(labels, 10, "dirichlet", alpha=1.0, seed=0, min_size=20)
    assert all(torch.equal(x, y) for x, y in zip(parts, again, strict=False))
    # alpha = 0.01 gives each of the 10 classes to about one client: 20 clients cannot
    # all get samples, however often it is redrawn. It fails at once, naming the keys.
    for alpha in (0.01, 1e-300):  # the second underflows every gamma draw: no NaN either
        with pytest.raises(DataError) as err:
            partition(labels, 20, "dirichlet", alpha=alpha, seed=0, min_size=1)
        message = str(err.value)
        for key in ("data.alpha", "data.num_clients", "data.min_client_size=1"):
            assert key in message


def test_shards_aligned_to_classes_give_at_most_two_classes() -> None:
    # 10 classes x 100, 10 clients x 2 shards -> 20 shards of 50, each inside one class,
    # so every client holds 100 samples from 1 or 2 classes, in multiples of 50.
    labels = balanced_labels()
    parts = partition(labels, 10, "shards", shards_per_client=2, seed=4)
    hist = label_histograms(labels, parts, 10)
    assert hist.sum(1).tolist() == [100] * 10
    assert torch.all((hist > 0).sum(1) <= 2)
    assert torch.all(hist % 50 == 0)
    assert torch.equal(hist.sum(0), torch.full((10,), 100))


def test_shards_unaligned_span_at_most_two_classes_each() -> None:
    # Unequal classes, shard length (30) <= smallest class (37) + 1: a shard spans <= 2
    # classes, so a client with 3 shards sees at most 6.
    sizes = [37, 80, 41, 120, 52, 70]
    labels = torch.cat([torch.full((s,), c) for c, s in enumerate(sizes)])  # (400,)
    parts = partition(labels, 4, "shards", shards_per_client=3, seed=0)
    assert_exact_cover(parts, labels.numel())
    hist = label_histograms(labels, parts, len(sizes))
    assert torch.all((hist > 0).sum(1) <= 6)


def test_label_histograms_shape_and_totals() -> None:
    labels = balanced_labels()
    parts = partition(labels, 4, "dirichlet", alpha=0.5)
    hist = label_histograms(labels, parts, 12)
    assert hist.shape == (4, 12) and hist.dtype == torch.int64
    assert hist.sum(0).tolist() == [100] * 10 + [0, 0]
    with pytest.raises(DataError, match="num_classes"):
        label_histograms(labels, parts, 9)


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"num_clients": 0, "scheme": "iid"}, "data.num_clients"),
        ({"num_clients": 1001, "scheme": "iid"}, "data.num_clients"),
        ({"num_clients": 10, "scheme": "iid", "min_size": 101}, "data.num_clients"),
        ({"num_clients": 10, "scheme": "dirichlet", "alpha": 0.0}, "data.alpha must be > 0"),
        ({"num_clients": 10, "scheme": "dirichlet", "alpha": -1.0}, "data.alpha must be > 0"),
        ({"num_clients": 10, "scheme": "shards", "shards_per_client": 0}, "data.shards_per_client"),
        (
            {"num_clients": 10, "scheme": "shards", "shards_per_client": 101},
            "data.shards_per_client",
        ),
        ({"num_clients": 10, "scheme": "pathological"}, "data.partition"),
    ],
)
def test_errors_name_the_key(kwargs: dict, key: str) -> None:
    with pytest.raises(DataError) as err:
        partition(balanced_labels(), **kwargs)
    assert key in str(err.value)
    if key == "data.partition":
        assert all(name in str(err.value) for name in PARTITIONS)


def test_rejects_non_integer_labels() -> None:
    with pytest.raises(DataError, match="labels"):
        partition(torch.zeros(10), 2, "iid")


def test_federated_data_partitions_only_what_validation_left(tmp_path) -> None:
    """build_federated_data: the carve is the same for 1 and 3 processes and for every
    algorithm; clients index only the remaining training samples, each exactly once."""
    from lightning_gapsl.federated import build_federated_data
    from lightning_gapsl.train import compose

    def build(*overrides):
        return build_federated_data(compose(["data=digits", *overrides], str(tmp_path / "o")))

    one, three = build("trainer.devices=1"), build("trainer.devices=3")
    central = build("trainer.devices=1", "algorithm=centralized")
    n_train = one.dataset.train_y.shape[0]
    assert one.dataset.val_y.shape[0] + n_train == 1438
    assert abs(one.dataset.val_y.shape[0] - 143.8) <= 5  # data.val_fraction defaults to 0.1
    for other in (three, central):
        assert torch.equal(one.dataset.val_x, other.dataset.val_x)
        assert torch.equal(one.dataset.train_x, other.dataset.train_x)
    for a, b in zip(one.client_indices, three.client_indices, strict=True):
        assert torch.equal(a, b)
    every = torch.cat(one.client_indices).sort().values
    assert torch.equal(every, torch.arange(n_train))  # all remaining samples, once each
    assert one.steps_per_epoch == -(-n_train // (6 * 16))  # counts only training samples
    no_val = build("trainer.devices=1", "data.val_fraction=0")
    assert no_val.dataset.val_y.shape[0] == 0 and no_val.dataset.train_y.shape[0] == 1438
