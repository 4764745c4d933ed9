"""Models: any module whose children run in order (an ``nn.Sequential`` of blocks); a
child is the unit a cut counts. Built-ins (LeNet, ResNet-18) and a plugin's models come from
the registry, ``model=module`` from ``model.target``.

``cut_layer = c`` puts blocks ``[0, c)`` on each client and ``[c, n)`` on the server
(see `lightning_gapsl.models.split`). `StackedSegments` (``models.stacked``) runs many
clients' segments in one call.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable

import torch
from torch import nn

from lightning_gapsl.models.lenet import BlockFactory, lenet_block_factories
from lightning_gapsl.models.resnet import resnet18_block_factories

MODELS = ("lenet", "resnet18")  # the built-in names; plugins add to the registry


class ModelError(ValueError):
    """Invalid model configuration; the message names the offending config key."""


def _check_input_shape(input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Return ``input_shape`` as a tuple of positive ints or raise ModelError."""
    shape = tuple(input_shape)
    if not shape or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ModelError(f"input_shape must be positive ints, got {shape}")
    return shape


# The built-ins also have per-block constructors, so a client segment builds (and spends
# RNG draws on) only its own blocks: a client rank never builds a ResNet's server part.
_BLOCK_FACTORIES = {"lenet": lenet_block_factories, "resnet18": resnet18_block_factories}


def _image_shape(name: str, shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ModelError(
            f"model={name} takes images (C, H, W), but the data's samples are "
            f"{shape}; use model=module model.target=pkg.module.fn for other data"
        )
    return shape  # type: ignore[return-value]


def import_target(target: str) -> Callable:
    """``pkg.module.fn`` -> the function (``model.target``), or ModelError naming it."""
    module_name, _, attr = target.rpartition(".")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise ModelError(
            f"model.target={target!r} cannot be imported ({err}); give "
            "pkg.module.fn with its folder on PYTHONPATH"
        ) from None
    if not callable(fn):
        raise ModelError(f"model.target={target!r} is not callable")
    return fn


def model_builder(model) -> tuple[str, Callable]:
    """(what to call it in messages, ``build(input_shape, num_classes) -> nn.Module``) for
    a model name or a `ModelConfig` (whose ``name=module`` takes ``target``)."""
    from lightning_gapsl.registry import MODELS, RegistryError

    name = model if isinstance(model, str) else model.name
    if name == "module":
        target = None if isinstance(model, str) else model.target
        if target is None:
            raise ModelError("model=module needs model.target=pkg.module.fn")
        return f"module {target}", import_target(target)
    try:
        return name, MODELS.get(name)
    except RegistryError as err:
        raise ModelError(str(err)) from None


def children_of(module: nn.Module, label: str) -> list[nn.Module]:
    """The children a model is cut between, in order; ModelError unless there are two."""
    if not isinstance(module, nn.Module):
        raise ModelError(f"model {label} returned {type(module).__name__}, not an nn.Module")
    blocks = list(module.children())
    if len(blocks) < 2:
        raise ModelError(
            f"model {label} has {len(blocks)} children; a cut needs at least two "
            "(return an nn.Sequential of the layers in order)"
        )
    return blocks


def _module_factories(
    label: str, build: Callable, shape: tuple[int, ...], num_classes: int
) -> list[BlockFactory]:
    """Factories of a whole-module model: the first one called builds the model (under the
    caller's RNG state) and each returns its child, so a segment is a slice of one model
    built from that segment's seed."""
    built: list[list[nn.Module]] = []
    count = len(children_of(_build_checked(label, build, shape, num_classes), label))

    def child(i: int) -> nn.Module:
        if not built:
            built.append(children_of(_build_checked(label, build, shape, num_classes), label))
        return built[0][i]

    return [functools.partial(child, i) for i in range(count)]


def _build_checked(label: str, build: Callable, shape: tuple[int, ...], num_classes: int):
    with torch.random.fork_rng(devices=[]):  # the counting build spends no caller draws
        try:
            return build(shape, num_classes)
        except (ValueError, TypeError, RuntimeError) as err:
            raise ModelError(
                f"model {label}: building it for inputs {shape} and "
                f"{num_classes} classes failed: {err}"
            ) from err


def block_factories(model, input_shape: tuple[int, ...], num_classes: int) -> list[BlockFactory]:
    """Zero-argument constructors of the model's blocks, in order (``model``: a name or a
    `ModelConfig`).

    Calling them in order under one RNG state gives the same weights as `build_blocks`;
    calling a prefix only builds a client segment without paying for the rest (built-ins;
    a whole-module model is built once and sliced).
    """
    shape = _check_input_shape(input_shape)
    if num_classes < 1:
        raise ModelError(f"num_classes must be >= 1, got {num_classes}")
    label, build = model_builder(model)
    if label in _BLOCK_FACTORIES:
        try:
            return _BLOCK_FACTORIES[label](_image_shape(label, shape), num_classes)
        except ValueError as err:  # shape checks inside a builder
            if isinstance(err, ModelError):
                raise
            raise ModelError(f"model={label!r}: {err}") from err
    return _module_factories(label, build, shape, num_classes)


def cut_index(model, input_shape: tuple[int, ...], num_classes: int) -> int:
    """Blocks on the client for a `ModelConfig`: ``cut_layer``, or with ``cut`` set one
    past the child it names (a name of ``named_children`` or an index)."""
    if isinstance(model, str) or model.cut is None:
        return model if isinstance(model, int) else model.cut_layer
    label, build = model_builder(model)
    module = _build_checked(label, build, _check_input_shape(input_shape), num_classes)
    return cut_position([n for n, _ in module.named_children()], model.cut, label)


def cut_position(names: list[str], cut: str, label: str) -> int:
    """One past the child ``cut`` (a name in ``names``, else an index): the client's count."""
    if cut in names:
        return names.index(cut) + 1
    if cut.isdigit() and int(cut) < len(names):
        return int(cut) + 1
    raise ModelError(
        f"model.cut={cut!r} is not a child of model {label}; choose a name or "
        f"index of: {', '.join(names)}"
    )


def build_blocks(name, input_shape: tuple[int, ...], num_classes: int) -> nn.Sequential:
    """Model ``name`` for inputs ``(C, H, W)`` as ``nn.Sequential`` of blocks.

    Initialised from the global RNG; use `models.split` for seeded construction.
    """
    return nn.Sequential(*(make() for make in block_factories(name, input_shape, num_classes)))


def num_cut_choices(name, input_shape: tuple[int, ...], num_classes: int) -> int:
    """Number of valid cut layers (``1 .. num_blocks - 1``), without building the model."""
    return len(block_factories(name, input_shape, num_classes)) - 1


__all__ = [
    "MODELS",
    "BlockFactory",
    "ModelError",
    "block_factories",
    "build_blocks",
    "children_of",
    "cut_index",
    "cut_position",
    "num_cut_choices",
]
