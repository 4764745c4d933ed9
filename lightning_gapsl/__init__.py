"""lightning_gapsl: parallel split learning on heterogeneous data, led by GAPSL.

``lightning_gapsl.run(overrides, *, model=None, data=None) -> dict`` trains one
configuration from Python (`lightning_gapsl.api`); ``lightning_gapsl.registry`` is where
a user's method, data set, model, partitioner or metric is registered.
"""

from __future__ import annotations


def run(overrides, *, model=None, data=None, output_dir=None):
    """See `lightning_gapsl.api.run` (imported on first call: Lightning loads slowly)."""
    from lightning_gapsl.api import run as _run

    return _run(overrides, model=model, data=data, output_dir=output_dir)


__all__ = ["run"]
