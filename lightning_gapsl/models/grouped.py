"""K clients' segments as single grouped kernels: one conv per layer for all clients.

``grouped_forward`` runs a template segment with stacked ``(K, *shape)`` parameters on
``(K, B, *in)`` inputs without a Python loop over clients:

- image tensors travel as ``(B, K*C, H, W)``: client k owns channels ``[k*C, (k+1)*C)``;
- a ``Conv2d`` becomes one convolution with ``groups = K * groups`` and weights
  ``(K*C_out, C_in/groups, kh, kw)``, the stacked weight reshaped (no copy);
- a ``GroupNorm(G, C)`` becomes ``group_norm(x, K*G)``: client k's G groups are K*G
  consecutive, contiguous channel groups, so it normalises exactly per client and per
  sample with no strided memory (what makes ``torch.vmap``'s version slow: it puts the
  client dimension where GroupNorm cannot use it);
- pools and activations act per channel, so they run unchanged;
- ``Flatten`` moves to ``(K, B, F)`` and a ``Linear`` is one batched matmul (``baddbmm``).

Results equal the per-client loop up to float32 rounding (sums are reordered), not
bitwise. Only the layers above (and the ResNet `BasicBlock`) are translated;
`grouped_supported` says whether a template can run this way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_gapsl.models.resnet import BasicBlock

_ELEMENTWISE = (nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Identity)


def grouped_supported(module: nn.Module) -> bool:
    """True when every layer of ``module`` has a grouped translation."""
    if isinstance(module, nn.Sequential):
        return all(grouped_supported(m) for m in module)
    if isinstance(module, nn.Flatten):
        return module.start_dim == 1 and module.end_dim == -1
    if isinstance(module, nn.Conv2d):
        return module.padding_mode == "zeros" and isinstance(module.padding, tuple)
    return isinstance(module, (BasicBlock, nn.GroupNorm, nn.Linear, *_ELEMENTWISE))


def to_grouped(x: Tensor) -> Tensor:
    """``(K, B, C, H, W) -> (B, K*C, H, W)`` (a copy: the client dimension moves inward)."""
    k, b = x.shape[:2]
    return x.transpose(0, 1).reshape(b, k * x.shape[2], *x.shape[3:])


def from_grouped(x: Tensor, k: int) -> Tensor:
    """``(B, K*C, H, W) -> (K, B, C, H, W)`` (a view) ; ``(K, B, F)`` passes through."""
    if x.dim() != 4:
        return x
    b, kc = x.shape[:2]
    return x.view(b, k, kc // k, *x.shape[2:]).transpose(0, 1)


def _conv(conv: nn.Conv2d, p: dict[str, Tensor], x: Tensor, k: int) -> Tensor:
    weight = p["weight"].flatten(0, 1)  # (K*C_out, C_in/groups, kh, kw)
    bias = p["bias"].flatten() if "bias" in p else None  # (K*C_out,)
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, k * conv.groups)


def _group_norm(norm: nn.GroupNorm, p: dict[str, Tensor], x: Tensor, k: int) -> Tensor:
    weight = p["weight"].flatten() if "weight" in p else None  # (K*C,)
    bias = p["bias"].flatten() if "bias" in p else None
    return F.group_norm(x, k * norm.num_groups, weight, bias, norm.eps)


def _flatten(x: Tensor, k: int) -> Tensor:
    """``(B, K*C, H, W) -> (K, B, C*H*W)``, the order ``nn.Flatten`` gives each client."""
    if x.dim() == 3:
        return x
    b = x.shape[0]
    return x.reshape(b, k, -1).transpose(0, 1)


def _linear(p: dict[str, Tensor], x: Tensor) -> Tensor:
    """``(K, B, in) -> (K, B, out)``: one batched matmul with each client's weight."""
    weight_t = p["weight"].transpose(1, 2)  # (K, in, out)
    if "bias" in p:
        return torch.baddbmm(p["bias"].unsqueeze(1), x, weight_t)
    return torch.bmm(x, weight_t)


def _children(p: dict[str, Tensor], name: str) -> dict[str, Tensor]:
    """The tensors of submodule ``name``, with the prefix removed."""
    prefix = name + "."
    return {n[len(prefix) :]: t for n, t in p.items() if n.startswith(prefix)}


def _basic_block(block: BasicBlock, p: dict[str, Tensor], x: Tensor, k: int) -> Tensor:
    """`BasicBlock.forward` in the grouped layout."""
    out = torch.relu(
        grouped_forward(
            block.norm1,
            _children(p, "norm1"),
            grouped_forward(block.conv1, _children(p, "conv1"), x, k),
            k,
        )
    )
    out = grouped_forward(
        block.norm2,
        _children(p, "norm2"),
        grouped_forward(block.conv2, _children(p, "conv2"), out, k),
        k,
    )
    return torch.relu(out + grouped_forward(block.shortcut, _children(p, "shortcut"), x, k))


def grouped_forward(module: nn.Module, p: dict[str, Tensor], x: Tensor, k: int) -> Tensor:
    """``module`` (the template) with stacked tensors ``p`` (name -> (K, *shape)) on ``x``
    in the grouped layout: ``(B, K*C, H, W)`` for images, ``(K, B, F)`` for features."""
    if isinstance(module, nn.Sequential):
        for name, child in module.named_children():
            x = grouped_forward(child, _children(p, name), x, k)
        return x
    if isinstance(module, nn.Conv2d):
        return _conv(module, p, x, k)
    if isinstance(module, nn.GroupNorm):
        return _group_norm(module, p, x, k)
    if isinstance(module, nn.Linear):
        if x.dim() != 3:
            raise TypeError("grouped Linear needs (K, B, F) features (Flatten first)")
        return _linear(p, x)
    if isinstance(module, nn.Flatten):
        return _flatten(x, k)
    if isinstance(module, BasicBlock):
        return _basic_block(module, p, x, k)
    if isinstance(module, _ELEMENTWISE):
        return (
            module(x)
            if x.dim() == 4 or isinstance(module, (nn.ReLU, nn.Identity))
            else _per_client(module, x)
        )
    raise TypeError(f"no grouped translation for {type(module).__name__}")


def _per_client(module: nn.Module, x: Tensor) -> Tensor:
    """A parameter-free layer on (K, B, ...) features: fold K into the batch."""
    return module(x.flatten(0, 1)).unflatten(0, x.shape[:2])
