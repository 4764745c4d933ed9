"""The method registry: the one place an ``algorithm=`` name is looked up.

Adding a method is a file in this folder that defines ``METHOD`` (a
`lightning_gapsl.methods.base.Method`), a ``conf/algorithm/<name>.yaml`` and its tests;
then its name goes in `_MODULES` below.
"""

from __future__ import annotations

import importlib

from lightning_gapsl.methods.base import Method, with_defaults

# Registry order is the order of tables and plots.
_MODULES = ("centralized", "psl", "gapsl", "epsl", "sglr", "sfl_v1", "sfl_v2", "fedavg",
            "locfedmix", "cse_fsl", "fsl_sage", "sl")


def method_names() -> tuple[str, ...]:
    return _MODULES


def get_method(name: str) -> Method:
    """The method registered as ``name``; KeyError naming the valid ones otherwise."""
    if name not in _MODULES:
        raise KeyError(f"unknown algorithm {name!r}; choose one of: {', '.join(_MODULES)}")
    method = importlib.import_module(f"lightning_gapsl.methods.{name}").METHOD
    return with_defaults(method)
