"""The run's data, split over clients: built once in the launching process.

With the fork launcher every rank inherits this object (no copy, no re-parse); under
SLURM each rank builds the identical object from the same seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lightning_gapsl.config import RunConfig
from lightning_gapsl.data.datasets import DatasetSplit, load_split
from lightning_gapsl.data.partition import label_histograms
from lightning_gapsl.data.partition_file import load_partition
from lightning_gapsl.registry import METHODS, PARTITIONERS


@dataclass(frozen=True)
class FederatedData:
    dataset: DatasetSplit
    client_indices: list[torch.Tensor]  # one (n_c,) int64 tensor per client id
    histograms: torch.Tensor  # (N, num_classes) label counts per client
    steps_per_epoch: int
    batch_size: int
    augment: bool = False  # crop + flip training batches (`lightning_gapsl.data.augment`)

    @property
    def augment_fill(self) -> torch.Tensor | None:
        """(C,) padding value of the crop: a black pixel after normalization (None: 0)."""
        norm = self.dataset.norm
        if norm is None:
            return None
        mean, std = (torch.tensor(v, dtype=torch.float32) for v in norm)
        return -mean / std

    @property
    def num_clients(self) -> int:
        return len(self.client_indices)

    @property
    def client_sizes(self) -> torch.Tensor:
        return torch.tensor([len(ix) for ix in self.client_indices], dtype=torch.float64)


def build_federated_data(cfg: RunConfig) -> FederatedData:
    """Load the dataset, carve the validation split, and partition the rest over clients.

    The validation split (``data.val_fraction``, seeded by the run seed) is carved before
    partitioning and identically for every layout and algorithm; clients (and
    centralized's one pooled "client") only ever index the remaining training samples,
    and the default steps per epoch count only those. The data set comes from the
    registry (`load_split`), the partition from the registered partitioner.
    """
    d = cfg.data
    dataset = load_split(d, cfg.seed)
    n_train = len(dataset.train_y)
    # Centralized trains one model on the pooled data: one "client" holding every
    # sample, so it draws exactly the batches a single-client PSL run draws.
    method = METHODS.get(cfg.algorithm.name)
    num_clients = 1 if method.pools_data else d.num_clients
    if num_clients == 1:
        parts = [torch.arange(n_train)]
    elif d.partition_file is not None:
        parts = load_partition(d.partition_file, dataset.train_y, num_clients)
    else:
        split = PARTITIONERS.get(d.partition)
        parts = split(dataset.train_y, num_clients, d, cfg.seed, dataset.train_groups)
    steps = d.steps_per_epoch or math.ceil(n_train / (num_clients * d.batch_size))
    if method.epoch_steps is not None:  # e.g. local-pass rounds: one pass per client
        sizes = torch.tensor([len(ix) for ix in parts])
        steps = method.epoch_steps(cfg, sizes, d.batch_size) or steps
    hist = label_histograms(dataset.train_y, parts, dataset.num_classes)
    return FederatedData(dataset, parts, hist, steps, d.batch_size, augment=d.augmented)
