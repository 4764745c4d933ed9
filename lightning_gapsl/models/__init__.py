"""Model zoo: every model is an ``nn.Sequential`` of blocks, the unit a cut layer counts.

``cut_layer = c`` puts blocks ``[0, c)`` on each client and ``[c, n)`` on the server
(see `lightning_gapsl.models.split`). `StackedSegments` (``models.stacked``) runs many
clients' segments in one call.
"""

from __future__ import annotations

from torch import nn

from lightning_gapsl.models.lenet import BlockFactory, lenet_block_factories
from lightning_gapsl.models.resnet import resnet18_block_factories

MODELS = ("lenet", "resnet18")


class ModelError(ValueError):
    """Invalid model configuration; the message names the offending config key."""


def _check_input_shape(input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Return ``input_shape`` as a ``(C, H, W)`` tuple of positive ints or raise ModelError."""
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ModelError(f"input_shape must be (C, H, W) of positive ints, got {shape}")
    return shape  # type: ignore[return-value]


def block_factories(
    name: str, input_shape: tuple[int, int, int], num_classes: int
) -> list[BlockFactory]:
    """Zero-argument constructors of model ``name``'s blocks, in order.

    Calling them in order under one RNG state gives the same weights as `build_blocks`;
    calling a prefix only builds a client segment without paying for the rest.
    """
    shape = _check_input_shape(input_shape)
    if num_classes < 1:
        raise ModelError(f"num_classes must be >= 1, got {num_classes}")
    try:
        if name == "lenet":
            return lenet_block_factories(shape, num_classes)
        if name == "resnet18":
            return resnet18_block_factories(shape, num_classes)
    except ValueError as err:  # shape checks inside a builder
        raise ModelError(f"model={name!r}: {err}") from err
    raise ModelError(f"model={name!r} is unknown; choose one of {', '.join(MODELS)}")


def build_blocks(name: str, input_shape: tuple[int, int, int], num_classes: int) -> nn.Sequential:
    """Model ``name`` for inputs ``(C, H, W)`` as ``nn.Sequential`` of blocks.

    Initialised from the global RNG; use `models.split` for seeded construction.
    """
    return nn.Sequential(*(make() for make in block_factories(name, input_shape, num_classes)))


def num_cut_choices(name: str, input_shape: tuple[int, int, int], num_classes: int) -> int:
    """Number of valid cut layers (``1 .. num_blocks - 1``), without building the model."""
    return len(block_factories(name, input_shape, num_classes)) - 1


__all__ = [
    "MODELS",
    "BlockFactory",
    "ModelError",
    "block_factories",
    "build_blocks",
    "num_cut_choices",
]
