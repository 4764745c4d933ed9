"""StackedAdam: Adam over (K, ...) client stacks with one step count per client."""

from __future__ import annotations

import pytest
import torch

from lightning_gapsl.models.stacked_adam import StackedAdam
from lightning_gapsl.models.stacked import masked_step_

K = 3


def _grads(steps: int, shape=(K, 4, 2)) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(shape, generator=gen) for _ in range(steps)]


def test_every_client_stepping_is_torch_adam_bit_for_bit():
    start = torch.randn(K, 4, 2, generator=torch.Generator().manual_seed(1))
    ours, ref = start.clone().requires_grad_(), start.clone().requires_grad_()
    opt = StackedAdam([ours], lr=0.01, weight_decay=0.1)
    ref_opt = torch.optim.Adam([ref], lr=0.01, weight_decay=0.1)
    for g in _grads(5):
        ours.grad, ref.grad = g.clone(), g.clone()
        opt.step(), ref_opt.step()
        assert torch.equal(ours, ref)


def test_each_client_is_its_own_adam_when_only_some_step():
    """Client k's row after masked steps equals a torch Adam on that row alone that stepped
    only when k was active; an idle client's row and moments do not move."""
    masks = [[1, 1, 0], [0, 1, 0], [0, 1, 1], [1, 0, 0], [1, 1, 1]]
    start = torch.randn(K, 4, 2, generator=torch.Generator().manual_seed(2))
    ours = start.clone().requires_grad_()
    opt = StackedAdam([ours], lr=0.05)
    alone = [start[k].clone().requires_grad_() for k in range(K)]
    alone_opts = [torch.optim.Adam([a], lr=0.05) for a in alone]
    for g, mask in zip(_grads(len(masks)), masks, strict=False):
        active = torch.tensor(mask, dtype=torch.bool)
        before = ours.detach().clone()
        moments = opt.state[ours]["exp_avg"].clone() if opt.state[ours] else None
        ours.grad = g.clone()
        masked_step_(opt, active)  # the runtime's entry point dispatches to StackedAdam
        for k in range(K):
            if mask[k]:
                alone[k].grad = g[k].clone()
                alone_opts[k].step()
            else:
                assert torch.equal(ours[k], before[k])
                if moments is not None:
                    assert torch.equal(opt.state[ours]["exp_avg"][k], moments[k])
            assert torch.equal(ours[k], alone[k]), (mask, k)
    assert opt.state[ours]["step"].tolist() == [3, 4, 2]


def test_a_shared_count_would_differ():
    """The reason for the class: torch's one count per tensor corrects a late client's
    first step as if it had stepped before (the update is not lr-sized)."""
    p = torch.zeros(K, 1, requires_grad=True)
    opt = torch.optim.Adam([p], lr=1.0)
    for _ in range(50):  # client 0 steps alone for 50 steps
        p.grad = torch.tensor([[1.0], [0.0], [0.0]])
        masked_step_(opt, torch.tensor([True, False, False]))
    p.grad = torch.tensor([[0.0], [1.0], [0.0]])
    masked_step_(opt, torch.tensor([False, True, False]))
    # Corrected with count 51: (0.1 / (1 - 0.9**51)) / sqrt(0.001 / (1 - 0.999**51)), not 1.
    late = (0.1 / (1 - 0.9**51)) / (0.001 / (1 - 0.999**51)) ** 0.5
    assert abs(float(p[1].detach())) == pytest.approx(late, rel=1e-4)
    assert late < 0.75
    q = torch.zeros(K, 1, requires_grad=True)
    ours = StackedAdam([q], lr=1.0)
    q.grad = torch.tensor([[0.0], [1.0], [0.0]])
    masked_step_(ours, torch.tensor([False, True, False]))
    assert float(q[1].detach()) == pytest.approx(-1.0, abs=1e-6)  # Adam's first step: lr * sign


def test_bad_mask_names_the_shape():
    p = torch.zeros(K, 2, requires_grad=True)
    p.grad = torch.ones(K, 2)
    with pytest.raises(ValueError, match=r"active must be \(K=3,\)"):
        StackedAdam([p]).step(active=torch.ones(2, dtype=torch.bool))
