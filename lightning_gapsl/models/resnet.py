"""CIFAR-style ResNet-18 as six blocks: stem, four stages, head.

CIFAR variant (He et al. 2016, as in most split-learning papers): 3x3 stride-1 stem
conv with 64 channels and no max pool, so 32x32 inputs keep resolution in stage 1.

Normalisation is GroupNorm with 32 groups (the default of Wu & He 2018, "Group
Normalization", which they found robust across widths). Every width here (64..512) is
divisible by 32, giving 2..16 channels per group. BatchNorm is avoided because its
running statistics would mix clients' non-IID batches and make a client's output depend
on train/eval mode; GroupNorm is per-sample, so split == unsplit exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

BlockFactory = Callable[[], nn.Module]

GROUPS = 32
STAGE_WIDTHS = (64, 128, 256, 512)
STAGE_STRIDES = (1, 2, 2, 2)


def _norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with ``min(GROUPS, channels)`` groups (channels is always a multiple here)."""
    return nn.GroupNorm(min(GROUPS, channels), channels)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (1x1 projection when shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm1 = _norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = _norm(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                _norm(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C_in, H, W) -> (B, C_out, H / stride, W / stride)``."""
        out = torch.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


def _stage(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """Two BasicBlocks; only the first one changes width / resolution."""
    return nn.Sequential(
        BasicBlock(in_channels, out_channels, stride),
        BasicBlock(out_channels, out_channels, 1),
    )


def resnet18_block_factories(
    input_shape: tuple[int, int, int], num_classes: int
) -> list[BlockFactory]:
    """One zero-argument constructor per block: [stem, stage1..stage4, head].

    See `lenet_block_factories` for why constructors: a client segment with an early
    cut builds only its own (small) blocks instead of all 11M parameters.
    """
    channels = input_shape[0]
    widths = (STAGE_WIDTHS[0],) + STAGE_WIDTHS
    factories: list[BlockFactory] = [
        lambda: nn.Sequential(
            nn.Conv2d(channels, STAGE_WIDTHS[0], 3, padding=1, bias=False),
            _norm(STAGE_WIDTHS[0]),
            nn.ReLU(),
        )
    ]
    for i, stride in enumerate(STAGE_STRIDES):
        # Default arguments bind the loop values now (closures would see the last ones).
        factories.append(
            lambda c_in=widths[i], c_out=widths[i + 1], s=stride: _stage(c_in, c_out, s)
        )
    factories.append(
        lambda: nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(STAGE_WIDTHS[-1], num_classes)
        )
    )
    return factories


def resnet18_blocks(input_shape: tuple[int, int, int], num_classes: int) -> nn.Sequential:
    """CIFAR-style GroupNorm ResNet-18 as ``nn.Sequential`` of 6 blocks (cut layer 1..5).

    Shapes for ``(3, 32, 32)``: stem/stage1 -> (64, 32, 32), stage2 -> (128, 16, 16),
    stage3 -> (256, 8, 8), stage4 -> (512, 4, 4), head -> (num_classes,).
    """
    factories = resnet18_block_factories(input_shape, num_classes)
    return nn.Sequential(*(make() for make in factories))
