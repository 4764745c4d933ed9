"""Methods: each module (`psl.py`) or package (`gapsl/`) here defines ``METHOD``,
a `lightning_gapsl.methods.base.Method`,
registered (in table order) by `lightning_gapsl.builtins`; a user's method registers the
same way from a plugin (`lightning_gapsl.registry.register_method`).
"""

from __future__ import annotations

from lightning_gapsl.methods.base import Method, with_defaults
from lightning_gapsl.registry import METHODS


def method_names() -> tuple[str, ...]:
    """Every registered method, in registration order (the order of tables and plots)."""
    return METHODS.names()


def get_method(name: str) -> Method:
    """The method registered as ``name`` with the shared hooks filled in; KeyError
    naming the valid ones otherwise."""
    if name not in METHODS:
        raise KeyError(f"unknown algorithm {name!r}; choose one of: {', '.join(METHODS.names())}")
    return with_defaults(METHODS.get(name))
