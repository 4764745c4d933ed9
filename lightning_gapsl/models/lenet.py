"""LeNet-style CNN as a sequence of four blocks (the unit a cut layer counts).

Sized so MNIST trains in seconds per epoch on a 2-core CPU (8 and 16 channels,
about 1.8 MFLOPs per sample): evaluating 20 client models on the 10k test images
every epoch must stay cheap too. GroupNorm instead of
BatchNorm: split learning runs one forward per client mini-batch, and GroupNorm has no
running statistics, so a client segment's output never depends on other clients' data
or on train/eval mode.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

BlockFactory = Callable[[], nn.Module]


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Conv 5x5 (same padding) -> GroupNorm(4) -> ReLU -> 2x2 max pool (halves H and W)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=5, padding=2),
        nn.GroupNorm(4, out_channels),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


def lenet_block_factories(
    input_shape: tuple[int, int, int], num_classes: int
) -> list[BlockFactory]:
    """One zero-argument constructor per block, in order.

    Constructors rather than modules so a client segment can build (and spend RNG
    draws on) only its own blocks; calling them in order under one seed gives exactly
    the weights of `lenet_blocks`.
    """
    channels, height, width = input_shape
    if height < 4 or width < 4:
        raise ValueError(f"lenet needs input height and width >= 4, got {tuple(input_shape)}")
    # Two 2x2 max pools (floor division) shrink each spatial side by 4.
    flat_features = 16 * (height // 4) * (width // 4)
    return [
        lambda: _conv_block(channels, 8),
        lambda: _conv_block(8, 16),
        lambda: nn.Sequential(nn.Flatten(), nn.Linear(flat_features, 128), nn.ReLU()),
        lambda: nn.Linear(128, num_classes),
    ]


def lenet_blocks(input_shape: tuple[int, int, int], num_classes: int) -> nn.Sequential:
    """LeNet-style CNN for inputs ``(C, H, W)`` as ``nn.Sequential`` of 4 blocks.

    Shapes for MNIST ``(1, 28, 28)``: block1 -> (8, 14, 14), block2 -> (16, 7, 7),
    block3 -> (128,), block4 -> (num_classes,).
    """
    return nn.Sequential(*(make() for make in lenet_block_factories(input_shape, num_classes)))
