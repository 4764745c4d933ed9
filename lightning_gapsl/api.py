"""`lightning_gapsl.run`: the Python entry point beside the command line.

``run(["algorithm=psl", "data.num_clients=20"], model=build_net, data=tensors)`` trains
exactly what ``python -m lightning_gapsl.train algorithm=psl data.num_clients=20`` would,
with ``model`` and ``data`` given as Python objects instead of config keys, and returns
the summary (the dict of summary.json). Multi-process runs (``trainer.devices > 1``) fork
their ranks from this process (``trainer.start_method=fork``, the default), so the objects
need no pickling; under srun or torchrun every rank runs the calling script, and only the
server rank returns the summary (the others return None).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable

from torch import nn

from lightning_gapsl.config import ConfigError
from lightning_gapsl.registry import DATASETS, MODELS

RUN_MODEL = "run_model"  # the registry names the objects given to `run` are held under
RUN_DATA = "run_data"


def _as_builder(model) -> Callable:
    if isinstance(model, nn.Module):  # its weights are the initialisation of every segment
        return lambda input_shape, num_classes: copy.deepcopy(model)
    if callable(model):
        return model
    raise ConfigError(
        f"run(model=...) takes fn(input_shape, num_classes) -> nn.Module or an "
        f"nn.Module, got {type(model).__name__}"
    )


def _as_loader(data) -> Callable:
    from lightning_gapsl.data.datasets import DatasetSplit
    from lightning_gapsl.data.tensors import tensors_split

    split = data if isinstance(data, DatasetSplit) else tensors_split(data, name="run(data=...)")
    return lambda data_cfg, seed: split


def _check_unset(overrides: list[str], key: str) -> None:
    if any(o.split("=", 1)[0].lstrip("+~") == key for o in overrides):
        raise ConfigError(f"{key}= is given twice: as an override and as run({key}=...); keep one")


def run(
    overrides: list[str], *, model=None, data=None, output_dir: str | None = None
) -> dict | None:
    """Train one configuration and return its summary (None on a client rank of srun or
    torchrun, or when pre-empted: resume with the printed ``ckpt_path``).

    ``overrides``: the command line's ``KEY=VALUE`` list. ``model``: a function
    ``(input_shape, num_classes) -> nn.Module`` whose children run in order (or a module,
    copied for every party), cut by ``model.cut``. ``data``: a `DatasetSplit`
    (`DatasetSplit.from_tensors`) or a dict of ``train_x``, ``train_y``, ``test_x``,
    ``test_y`` (optional ``train_groups``). ``output_dir``: where summary.json goes
    (default ``outputs/run``; also settable as an override).
    """
    from lightning_gapsl.cli import compose
    from lightning_gapsl.train import run as train_run

    overrides = list(overrides)
    front = []
    if model is not None:
        _check_unset(overrides, "model")
        MODELS.register(RUN_MODEL, _as_builder(model), replace=True)
        front.append(f"model={RUN_MODEL}")
    if data is not None:
        _check_unset(overrides, "data")
        DATASETS.register(RUN_DATA, _as_loader(data), replace=True)
        front.append(f"data={RUN_DATA}")
    has_output = any(o.split("=", 1)[0] == "output_dir" for o in overrides)
    cfg = compose([*front, *overrides], None if has_output else (output_dir or "outputs/run"))
    path = train_run(cfg)
    return None if path is None else json.loads(path.read_text())
