"""Unit test (milliseconds): seeding only the CPU generator (fast start-up for 1000
clients) gives exactly the weights ``torch.manual_seed`` gave, and leaves the global RNG
untouched."""

from __future__ import annotations

import torch
from torch import nn

from lightning_gapsl.models import block_factories
from lightning_gapsl.models.split import build_client_segment
from lightning_gapsl.seeding import derive_seed


def test_client_segment_weights_equal_torch_manual_seed():
    before = torch.random.get_rng_state()
    built = build_client_segment("resnet18", (3, 8, 8), 10, 2, seed=7, client_id=3)
    assert torch.equal(torch.random.get_rng_state(), before)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(7, "client", 3))
        expected = nn.Sequential(
            *(make() for make in block_factories("resnet18", (3, 8, 8), 10)[:2])
        )
    for (name, a), (_, b) in zip(
        built.state_dict().items(), expected.state_dict().items(), strict=False
    ):
        assert torch.equal(a, b), name
