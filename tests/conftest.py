"""Shared helpers: configs composed through the real Hydra files, small and fast."""

from __future__ import annotations

import json
import logging
import os
import signal

import lightning as L
import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

# Small, fast settings shared by the multi-process and end-to-end tests. One optimizer
# for every method (the tests check mechanics); each method's own optimizer
# (optim=method, the default) is checked in tests/unit/test_config.py.
DIGITS = [
    "data=digits",
    "optim=sgd",
    "logger=none",
    "trainer.progress_bar=false",
    "trainer.timeout_s=60",
]


@pytest.fixture(autouse=True)
def no_logging_errors(monkeypatch):
    """Fails the test if a log handler could not write (it prints "--- Logging error ---"
    and carries on, so nothing else would notice)."""
    failures: list[str] = []
    report = logging.Handler.handleError

    def record(handler, log_record):
        failures.append(f"{type(handler).__name__}: {log_record.getMessage()[:80]}")
        report(handler, log_record)

    monkeypatch.setattr(logging.Handler, "handleError", record)
    yield
    assert not failures, f"log handlers failed to write: {failures}"


@pytest.fixture
def compose_cfg(tmp_path):
    """compose_cfg(*overrides, name="run") -> validated RunConfig writing under tmp_path."""
    from lightning_gapsl.train import compose

    def make(*overrides: str, name: str = "run"):
        return compose([*DIGITS, *overrides], str(tmp_path / name))

    return make


def load_summary(path) -> dict:
    with open(path) as f:
        return json.load(f)


@pytest.fixture
def registries_restored():
    """Registrations made in this process (an in-process plugin import, `run`'s objects)
    are undone afterwards, so later tests see the built-ins only."""
    import sys

    from lightning_gapsl.registry import REGISTRIES

    before = [set(r.names()) for r in REGISTRIES]
    modules = set(sys.modules)
    yield
    for registry, names in zip(REGISTRIES, before, strict=True):
        for name in set(registry.names()) - names:
            registry.unregister(name)
    for name in set(sys.modules) - modules:  # a plugin imported again registers again
        if name == "my_plugin" or name.startswith("tests.plugin."):
            del sys.modules[name]


class PreemptAt(L.Callback):
    """Sends SIGUSR1 (SLURM's warning signal) to the server rank at one step."""

    def __init__(self, epoch: int, batch: int):
        self.epoch, self.batch = epoch, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_rank == 0 and (trainer.current_epoch, batch_idx) == (
            self.epoch,
            self.batch,
        ):
            os.kill(os.getpid(), signal.SIGUSR1)
