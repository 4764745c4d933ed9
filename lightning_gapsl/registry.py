"""The registries: every name a configuration can choose (``algorithm=``, ``data=``,
``model=``, ``data.partition=``, a metric) is looked up here, and only here.

This module imports nothing of the package, so any module (a built-in or a user's
plugin) can register without an import cycle. The built-ins register themselves the
same way a plugin does, from `lightning_gapsl.builtins`, which is imported (by name,
once) the first time a registry is read. A user's modules are imported by
`import_plugins`, which every entry point calls with the ``plugins=[pkg.module,...]``
key before the configuration is validated::

    from lightning_gapsl.registry import register_dataset

    @register_dataset("my_features")
    def load(data_cfg, seed):           # -> lightning_gapsl.data.DatasetSplit
        ...

What an entry is, per registry:

* method: a `lightning_gapsl.methods.base.Method` (its ``name`` is the key);
* dataset: ``load(data_cfg, seed) -> DatasetSplit`` (before truncation and the
  validation carve, which every data set gets alike);
* model: ``build(input_shape, num_classes) -> nn.Module`` whose children run in order
  (``nn.Sequential``); cut by ``model.cut`` (a child's name or index);
* partitioner: ``split(labels (n,), num_clients, data_cfg, seed, groups) -> list of
  (n_c,) int64 index tensors``;
* metric: a `Metric` (additive per-batch statistics, finished per client).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

_BUILTINS = "lightning_gapsl.builtins"


class RegistryError(ValueError):
    """An unknown name, a clashing registration or a plugin that cannot be imported; the
    message names the key and what would be valid."""


class Registry:
    """Names -> entries of one kind, in registration order (the order of tables)."""

    def __init__(self, kind: str, key: str):
        self.kind = kind  # what an entry is, for messages: "method", "dataset", ...
        self.key = key  # the config key that chooses one: "algorithm", "data", ...
        self._entries: dict[str, Any] = {}

    def register(self, name: str, entry: Any, replace: bool = False) -> Any:
        """Add ``entry`` as ``name``; the same entry again is a no-op (a re-imported
        module), another entry under a taken name is refused unless ``replace``."""
        if not isinstance(name, str) or not name.isidentifier():
            raise RegistryError(f"a {self.kind} name must be an identifier, got {name!r}")
        held = self._entries.get(name)
        if (
            not replace
            and held is not None
            and held is not entry
            and _origin(held) != _origin(entry)
        ):
            raise RegistryError(
                f"{self.key}={name!r} is registered already (by {_origin(held)}); pick another name"
            )
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Remove ``name`` (a test's or a notebook's own registration); KeyError if absent."""
        del self._entries[name]

    def get(self, name: str) -> Any:
        load_builtins()
        if name not in self._entries:
            raise RegistryError(
                f"{self.key}={name!r} is not valid; choose one of: "
                f"{', '.join(self._entries)} (or register one from a "
                "module listed in plugins=[...])"
            )
        return self._entries[name]

    def names(self) -> tuple[str, ...]:
        load_builtins()
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        load_builtins()
        return name in self._entries


def _origin(entry: Any) -> str:
    """Where an entry was defined (a re-imported module gives equal entries again)."""
    target = getattr(entry, "train_step", entry)  # a Method: its step function's module
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', '?')}"


METHODS = Registry("method", "algorithm")
DATASETS = Registry("dataset", "data")
MODELS = Registry("model", "model")
PARTITIONERS = Registry("partitioner", "data.partition")
METRICS = Registry("metric", "metric")
REGISTRIES = (METHODS, DATASETS, MODELS, PARTITIONERS, METRICS)


@dataclass(frozen=True)
class Metric:
    """A test/validation metric counted like accuracy: additive statistics per batch,
    summed over batches and ranks, then finished into one value per client.

    ``width(num_classes)``: how many statistics; ``batch(logits (b, C), labels (b,))``:
    their float64 ``(width,)`` values for one batch; ``finish(summed (N, width))``: the
    ``(N,)`` per-client values. The summary reports ``test_<name>_mean`` (and val_).
    """

    name: str
    width: Callable[[int], int]
    batch: Callable[[Any, Any], Any]
    finish: Callable[[Any], Any]


def register_method(method: Any) -> Any:
    """Register a `Method` under its ``name``; returns it."""
    return METHODS.register(method.name, method)


def _decorator(registry: Registry, name: str, entry: Any | None):
    if entry is not None:
        return registry.register(name, entry)
    return lambda fn: registry.register(name, fn)


def register_dataset(name: str, load: Callable | None = None):
    """Register ``load(data_cfg, seed) -> DatasetSplit``; usable as a decorator."""
    return _decorator(DATASETS, name, load)


def register_model(name: str, build: Callable | None = None):
    """Register ``build(input_shape, num_classes) -> nn.Module``; usable as a decorator."""
    return _decorator(MODELS, name, build)


def register_partitioner(name: str, split: Callable | None = None):
    """Register ``split(labels, num_clients, data_cfg, seed, groups)``; a decorator too."""
    return _decorator(PARTITIONERS, name, split)


def register_metric(metric: Metric) -> Metric:
    """Register a `Metric` under its ``name``; returns it."""
    return METRICS.register(metric.name, metric)


_loaded = False


def load_builtins() -> None:
    """Import the built-in methods, data sets, models, partitioners (once)."""
    global _loaded
    if not _loaded:
        _loaded = True  # first: the built-ins' own registrations read the registries
        importlib.import_module(_BUILTINS)


def import_plugins(modules: Iterable[str]) -> None:
    """Import every module named in ``plugins=[...]`` (each registers what it brings).

    Raises:
        RegistryError: naming ``plugins`` and the module that cannot be imported.
    """
    load_builtins()
    for name in modules:
        if not isinstance(name, str) or not all(p.isidentifier() for p in name.split(".")):
            raise RegistryError(f"plugins: {name!r} is not a module name (pkg.module)")
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise RegistryError(
                f"plugins: cannot import {name!r} ({err}); is its folder on "
                "PYTHONPATH or the package installed?"
            ) from None
