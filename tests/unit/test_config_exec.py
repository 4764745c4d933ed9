"""Unit tests (milliseconds): the config keys of batched clients and precision are checked
once at start-up, naming the key."""

from __future__ import annotations

import pytest

from lightning_gapsl.bench import gpu_processes
from lightning_gapsl.config import ConfigError


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.client_exec=batched", "model.client_exec"),
        ("trainer.precision=fp8", "trainer.precision"),
    ],
)
def test_bad_values_name_the_key(compose_cfg, override, key):
    with pytest.raises(ConfigError, match=key):
        compose_cfg(override)


def test_defaults(compose_cfg):
    cfg = compose_cfg()
    assert cfg.model.client_exec == "auto" and cfg.trainer.precision == "32-true"
    assert compose_cfg("model.client_exec=grouped").model.client_exec == "grouped"


@pytest.mark.parametrize(("gpus", "processes"), [(0, 1), (1, 1), (2, 2), (8, 8)])
def test_gpu_bench_fits_the_gpus_it_finds(gpus, processes):
    """One GPU: in-process only (two NCCL ranks cannot share it)."""
    assert gpu_processes(gpus) == processes
