"""The built-in methods, data sets, models and partitioners, registered exactly as a
user's plugin registers its own (`lightning_gapsl.registry`). Imported by the registry
the first time one is read; registration order is the order of tables and plots."""

from __future__ import annotations

import importlib

from lightning_gapsl.data.builtin import builtin_split
from lightning_gapsl.data.datasets import DATASETS
from lightning_gapsl.data.partition import PARTITIONS, partition
from lightning_gapsl.data.tensors import load_tensors
from lightning_gapsl.models.lenet import lenet_blocks
from lightning_gapsl.models.resnet import resnet18_blocks
from lightning_gapsl.registry import (
    register_dataset,
    register_method,
    register_model,
    register_partitioner,
)

METHOD_MODULES = (
    "centralized",
    "psl",
    "gapsl",
    "epsl",
    "sglr",
    "sfl_v1",
    "sfl_v2",
    "fedavg",
    "locfedmix",
    "cse_fsl",
    "fsl_sage",
    "sl",
)


def _builtin_loader(name: str):
    def load(d, seed: int):
        return builtin_split(
            name,
            root=d.root,
            seed=seed,
            shape=d.shape,
            classes=d.num_classes,
            num_train=d.num_train,
            num_test=d.num_test,
            max_train=d.max_train,
            max_test=d.max_test,
            label_kind=d.label_kind,
        )

    return load


def _builtin_partitioner(scheme: str):
    def split(labels, num_clients: int, d, seed: int, groups):
        return partition(
            labels,
            num_clients,
            scheme,
            alpha=d.alpha,
            shards_per_client=d.shards_per_client,
            seed=seed,
            min_size=d.min_client_size,
            groups=groups,
            quantity_sigma=d.quantity_sigma,
        )

    return split


for _module in METHOD_MODULES:
    register_method(importlib.import_module(f"lightning_gapsl.methods.{_module}").METHOD)
for _name in DATASETS:
    register_dataset(_name, _builtin_loader(_name))
register_dataset("tensors", load_tensors)
register_model("lenet", lenet_blocks)
register_model("resnet18", resnet18_blocks)
for _scheme in PARTITIONS:
    register_partitioner(_scheme, _builtin_partitioner(_scheme))
