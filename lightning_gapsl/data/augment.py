"""Standard CIFAR training augmentation as pure tensor ops: random crop with padding, flip.

The same transform as torchvision's ``RandomCrop(32, padding=4)`` followed by
``RandomHorizontalFlip()`` on raw images, applied here to normalized batches: the padding
takes the per-channel value a black pixel has after normalization (``fill``), so the
result equals the usual raw-image pipeline normalized afterwards.

Layout invariance (docs/explanations/architecture.md): the random parameters of client c's batch at global
step t come from a CPU generator seeded by ``(seed, "augment", c, t)``, never by rank,
so a client draws the same crops and flips whichever process hosts it. Only these small
integer draws are made on the CPU; the crop itself is one gather on the batch's device
(a GPU batch is augmented on the GPU). The gather copies values and does no arithmetic,
so the result is bit-identical on every layout.
"""

from __future__ import annotations

import torch

from lightning_gapsl.seeding import generator

PAD = 4  # pixels of padding before the random crop (the CIFAR standard)


def draw_params(
    seed: int, client_id: int, step: int, batch: int, pad: int = PAD
) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop offsets ``(batch, 2)`` in ``0..2*pad`` (row, column) and flips ``(batch,)`` bool
    for client ``client_id``'s batch at global ``step``; CPU tensors."""
    gen = generator(seed, "augment", client_id, step)
    offsets = torch.randint(0, 2 * pad + 1, (batch, 2), generator=gen)  # (B, 2)
    flips = torch.randint(0, 2, (batch,), generator=gen).bool()  # (B,)
    return offsets, flips


def crop_flip(
    x: torch.Tensor,
    offsets: torch.Tensor,
    flips: torch.Tensor,
    pad: int,
    fill: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pad each image by ``pad`` with ``fill``, crop it back to (H, W) at ``offsets``, flip.

    x: (n, C, H, W); offsets: (n, 2) int, top-left corner of the crop in the padded image
    (``pad, pad`` is the identity crop); flips: (n,) bool, mirror left-right after the crop;
    fill: (C,) padding value per channel (None: 0). Returns a new (n, C, H, W) tensor on
    ``x``'s device.
    """
    n, c, h, w = x.shape
    dev = x.device
    padded = x.new_empty((n, c, h + 2 * pad, w + 2 * pad))  # (n, C, H + 2p, W + 2p)
    padded[:] = 0 if fill is None else fill.to(dev, x.dtype).view(1, c, 1, 1)
    padded[:, :, pad : pad + h, pad : pad + w] = x
    offsets, flips = offsets.to(dev), flips.to(dev)
    cols = torch.arange(w, device=dev)  # (W,)
    cols = torch.where(flips[:, None], w - 1 - cols, cols) + offsets[:, 1:2]  # (n, W)
    rows = torch.arange(h, device=dev) + offsets[:, 0:1]  # (n, H)
    sample = torch.arange(n, device=dev)[:, None, None]  # (n, 1, 1)
    out = padded.permute(0, 2, 3, 1)[sample, rows[:, :, None], cols[:, None, :]]  # (n, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()  # (n, C, H, W)


def augment_clients(
    x: torch.Tensor,
    client_ids: list[int],
    step: int,
    seed: int,
    fill: torch.Tensor | None = None,
    pad: int = PAD,
) -> torch.Tensor:
    """Augment a rank's stacked batch: x (K, B, C, H, W) of clients ``client_ids`` (K of
    them, in row order) at global ``step``; returns the augmented (K, B, C, H, W)."""
    k, b = x.shape[:2]
    if len(client_ids) != k:
        raise ValueError(f"{k} batch rows but {len(client_ids)} client ids")
    if k == 0:
        return x
    params = [draw_params(seed, c, step, b, pad) for c in client_ids]
    offsets = torch.cat([o for o, _ in params])  # (K * B, 2)
    flips = torch.cat([f for _, f in params])  # (K * B,)
    out = crop_flip(x.reshape(k * b, *x.shape[2:]), offsets, flips, pad, fill)
    return out.view(x.shape)
