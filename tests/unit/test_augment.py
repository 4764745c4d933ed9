"""Unit tests (milliseconds): CIFAR augmentation (crop with padding, flip) on tensors
small enough to check by hand, its seeding, and its layout invariance."""

from __future__ import annotations

import torch

from lightning_gapsl.data.augment import PAD, augment_clients, crop_flip, draw_params


def grid() -> torch.Tensor:
    """One 1-channel 3x3 image holding 1..9, shape (1, 1, 3, 3)."""
    return torch.arange(1.0, 10.0).view(1, 1, 3, 3)


def crop(x, dy, dx, flip=False, pad=1, fill=None):
    return crop_flip(x, torch.tensor([[dy, dx]]), torch.tensor([flip]), pad, fill)[0, 0]


def test_centre_crop_is_the_identity_and_flip_mirrors_columns() -> None:
    assert torch.equal(crop(grid(), 1, 1), grid()[0, 0])
    assert torch.equal(
        crop(grid(), 1, 1, flip=True), torch.tensor([[3.0, 2, 1], [6, 5, 4], [9, 8, 7]])
    )


def test_corner_crops_shift_in_the_padding() -> None:
    # offset (0, 0): the window starts one pixel up and left, inside the zero padding
    assert torch.equal(crop(grid(), 0, 0), torch.tensor([[0.0, 0, 0], [0, 1, 2], [0, 4, 5]]))
    # offset (2, 2): one pixel down and right
    assert torch.equal(crop(grid(), 2, 2), torch.tensor([[5.0, 6, 0], [8, 9, 0], [0, 0, 0]]))
    # flip after the crop: the (2, 0) window [[0,4,5],[0,7,8],[0,0,0]] mirrored
    assert torch.equal(
        crop(grid(), 2, 0, flip=True), torch.tensor([[5.0, 4, 0], [8, 7, 0], [0, 0, 0]])
    )


def test_padding_takes_each_channels_fill() -> None:
    x = torch.stack([grid()[0, 0], -grid()[0, 0]]).unsqueeze(0)  # (1, 2, 3, 3)
    out = crop_flip(x, torch.tensor([[0, 0]]), torch.tensor([False]), 1, torch.tensor([7.0, -7.0]))
    assert torch.equal(out[0, 0, 0], torch.tensor([7.0, 7, 7]))
    assert torch.equal(out[0, 1, :, 0], torch.tensor([-7.0, -7, -7]))
    assert torch.equal(out[0, 1, 1:, 1:], -torch.tensor([[1.0, 2], [4, 5]]))


def test_equals_padding_raw_pixels_with_black_then_normalizing() -> None:
    """The torchvision order (pad the raw image with 0, crop, flip, normalize) gives the
    same pixels as cropping the normalized image with fill = -mean / std."""
    raw = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    mean = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)
    std = torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    offsets, flips = torch.tensor([[0, 7], [3, 1]]), torch.tensor([True, False])
    raw_first = (crop_flip(raw, offsets, flips, 4) - mean) / std
    fill = (-mean / std).flatten()
    normalized_first = crop_flip((raw - mean) / std, offsets, flips, 4, fill)
    assert torch.allclose(raw_first, normalized_first, atol=1e-6)


def test_draws_depend_on_seed_client_and_step_only() -> None:
    offsets, flips = draw_params(0, 3, 7, 64)
    assert offsets.shape == (64, 2) and flips.shape == (64,) and flips.dtype == torch.bool
    assert int(offsets.min()) >= 0 and int(offsets.max()) <= 2 * PAD
    again = draw_params(0, 3, 7, 64)
    assert torch.equal(offsets, again[0]) and torch.equal(flips, again[1])
    for other in (draw_params(0, 3, 8, 64), draw_params(0, 4, 7, 64), draw_params(1, 3, 7, 64)):
        assert not torch.equal(offsets, other[0])
    assert 0 < int(flips.sum()) < 64  # both outcomes occur


def test_stacked_clients_equal_each_client_alone() -> None:
    """A rank hosting clients 2, 5 and 6 augments each exactly as a rank hosting it alone
    would (the layout invariance the runtime relies on), and steps differ."""
    x = torch.randn(3, 4, 3, 32, 32, generator=torch.Generator().manual_seed(1))  # (K, B, ...)
    fill = torch.tensor([-1.0, -2.0, -3.0])
    together = augment_clients(x, [2, 5, 6], step=11, seed=0, fill=fill)
    assert together.shape == x.shape
    for row, client in enumerate([2, 5, 6]):
        alone = augment_clients(x[row : row + 1], [client], step=11, seed=0, fill=fill)
        assert torch.equal(together[row], alone[0])
    assert not torch.equal(together, augment_clients(x, [2, 5, 6], step=12, seed=0, fill=fill))
    assert not torch.equal(together, x)
    empty = torch.empty(0, 4, 3, 32, 32)  # a dedicated server rank hosts no client
    assert augment_clients(empty, [], step=0, seed=0).shape == empty.shape
