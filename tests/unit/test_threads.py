"""Unit tests (milliseconds): the default thread count never depends on the process count."""

from __future__ import annotations

from lightning_gapsl.train import resolve_threads


def test_default_threads_from_environment_else_one(compose_cfg):
    for devices in (1, 3):
        cfg = compose_cfg(f"trainer.devices={devices}", "data.num_clients=4")
        assert resolve_threads(cfg, {}).trainer.threads == 1
        assert resolve_threads(cfg, {"OMP_NUM_THREADS": "4"}).trainer.threads == 4
        assert resolve_threads(cfg, {"OMP_NUM_THREADS": "bogus"}).trainer.threads == 1
    explicit = compose_cfg("trainer.threads=2")
    assert resolve_threads(explicit, {"OMP_NUM_THREADS": "4"}).trainer.threads == 2
