"""Data layer: in-memory datasets and client partitions for split learning."""

from lightning_gapsl.data.builtin import load_dataset
from lightning_gapsl.data.datasets import (
    DATASETS,
    DataError,
    DatasetSplit,
    carve_validation,
    validation_mask,
)
from lightning_gapsl.data.partition import PARTITIONS, label_histograms, partition

__all__ = [
    "DATASETS",
    "PARTITIONS",
    "DataError",
    "DatasetSplit",
    "carve_validation",
    "label_histograms",
    "load_dataset",
    "partition",
    "validation_mask",
]
