"""trainer.deterministic: the switch that makes GPU runs reproducible sets its flags in
the rank that trains, and changes no number on the CPU."""

from __future__ import annotations

import pytest
import torch

from lightning_gapsl.train import run
from tests.conftest import load_summary


@pytest.fixture
def torch_flags_restored():
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cudnn.benchmark,
    )
    yield
    torch.use_deterministic_algorithms(before[0])
    (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cudnn.benchmark,
    ) = before[1:]


def test_deterministic_sets_its_flags_and_keeps_the_cpu_numbers(compose_cfg, torch_flags_restored):
    tiny = [
        "algorithm=psl",
        "trainer.devices=1",
        "trainer.max_epochs=1",
        "data.steps_per_epoch=4",
        "trainer.threads=1",
    ]
    torch.use_deterministic_algorithms(False)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    plain = load_summary(run(compose_cfg(*tiny, name="plain")))
    assert not torch.are_deterministic_algorithms_enabled()
    strict = load_summary(run(compose_cfg(*tiny, "trainer.deterministic=true", name="strict")))
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    for key in ("test_acc_mean", "train_loss_final", "bytes_up"):
        assert plain[key] == strict[key], key
