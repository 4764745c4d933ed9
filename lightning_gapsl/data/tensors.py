"""``data=tensors data.path=FILE``: any tensors as a data set.

``FILE`` is a `torch.save`d dict with ``train_x`` ``(n, *F)`` (floating point, used as
given: normalize before saving), ``train_y`` ``(n,)`` integer class ids, ``test_x``,
``test_y`` and optionally ``train_groups`` ``(n,)`` (who produced each sample, for
``data.partition=natural``). The validation split is carved from the training samples
as for every data set.
"""

from __future__ import annotations

import os
import pickle

import torch

from lightning_gapsl.data.datasets import DataError, DatasetSplit

REQUIRED = ("train_x", "train_y", "test_x", "test_y")
OPTIONAL = ("train_groups",)


def tensors_split(tensors: dict, name: str = "tensors") -> DatasetSplit:
    """A `DatasetSplit` from a dict of tensors (the keys above); errors name the key."""
    if not isinstance(tensors, dict):
        raise DataError(
            f"{name}: expected a dict with keys {', '.join(REQUIRED)}, got {type(tensors).__name__}"
        )
    missing = [k for k in REQUIRED if k not in tensors]
    unknown = sorted(set(tensors) - set(REQUIRED) - set(OPTIONAL))
    if missing or unknown:
        bad = f"missing {', '.join(missing)}" if missing else f"unknown key {unknown[0]}"
        raise DataError(
            f"{name}: {bad}; the dict holds {', '.join(REQUIRED)} and optionally "
            f"{', '.join(OPTIONAL)}"
        )
    return DatasetSplit.from_tensors(
        *(tensors[k] for k in REQUIRED), train_groups=tensors.get("train_groups"), name=name
    )


def load_tensors(d, seed: int) -> DatasetSplit:
    """The registered loader of ``data=tensors`` (``d``: the `DataConfig`)."""
    del seed  # the file is the data: nothing to draw
    if d.path is None:
        raise DataError(
            f"data=tensors needs data.path=FILE (a torch.save'd dict with {', '.join(REQUIRED)})"
        )
    if not os.path.isfile(d.path):
        raise DataError(f"data.path={d.path!r}: no such file")
    try:
        tensors = torch.load(d.path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as err:  # not a torch file
        raise DataError(
            f"data.path={d.path!r} is not a torch.save'd dict of tensors: "
            f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
        ) from None
    return tensors_split(tensors, name=f"data.path={d.path!r}")
