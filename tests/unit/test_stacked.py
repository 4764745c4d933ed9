"""Unit tests (milliseconds): StackedSegments equals K separate client segments."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from lightning_gapsl.models.split import build_client_segment
from lightning_gapsl.models.stacked import StackedSegments

SHAPE = (1, 8, 8)  # digits-sized lenet keeps these tests in milliseconds
MODES = ["loop", "vmap"]


def _segments(k: int, cut: int = 2, first_id: int = 0) -> list[nn.Module]:
    """``k`` lenet client segments with distinct seeded weights."""
    return [
        build_client_segment("lenet", SHAPE, 10, cut, seed=0, client_id=first_id + i)
        for i in range(k)
    ]


def _inputs(k: int, batch: int = 4) -> tuple[Tensor, Tensor]:
    """Inputs (K, B, 1, 8, 8) and upstream gradients (K, B, 16, 2, 2) for cut 2."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(k, batch, *SHAPE, generator=gen)  # (K, B, 1, 8, 8)
    upstream = torch.randn(k, batch, 16, 2, 2, generator=gen)  # (K, B, 16, 2, 2)
    return x, upstream


def _flat_grad(module: nn.Module) -> Tensor:
    """(D,) one module's gradients flattened in parameter order."""
    return torch.cat([p.grad.reshape(-1) for p in module.parameters()])


def _assert_same(a: Tensor, b: Tensor, mode: str) -> None:
    """Bitwise for the loop; float32 rounding for vmap (grouped kernels reorder sums)."""
    if mode == "loop":
        assert torch.equal(a, b)
    else:
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_forward_and_grads_equal_separate_segments(mode: str) -> None:
    segs = _segments(3)
    stacked = StackedSegments(segs, mode=mode)
    x, upstream = _inputs(3)

    out = stacked(x)  # (K, B, 16, 2, 2)
    out.backward(upstream)
    expected_out, expected_grads = [], []
    for k, seg in enumerate(segs):
        y = seg(x[k])
        y.backward(upstream[k])
        expected_out.append(y.detach())
        expected_grads.append(_flat_grad(seg))

    _assert_same(out.detach(), torch.stack(expected_out), mode)
    _assert_same(stacked.flat_grads(), torch.stack(expected_grads), mode)


def test_loop_result_does_not_depend_on_grouping() -> None:
    """Clients 2..4 computed in a group of 6 or of 3: bitwise identical outputs and grads."""
    x, upstream = _inputs(6)
    big = StackedSegments(_segments(6))
    small = StackedSegments(_segments(3, first_id=2))
    big(x).backward(upstream)
    small(x[2:5]).backward(upstream[2:5])
    assert torch.equal(big(x)[2:5], small(x[2:5]))
    assert torch.equal(big.flat_grads()[2:5], small.flat_grads())


def test_set_flat_grads_round_trip() -> None:
    stacked = StackedSegments(_segments(2))
    dim = sum(p[0].numel() for p in stacked.parameters())
    grads = torch.randn(2, dim)
    stacked.set_flat_grads(grads)
    assert torch.equal(stacked.flat_grads(), grads)
    stacked.set_flat_grads(2 * grads)  # overwrite existing .grad in place
    assert torch.equal(stacked.flat_grads(), 2 * grads)
    with pytest.raises(ValueError):
        stacked.set_flat_grads(torch.zeros(3, dim))


def test_flat_grads_zero_without_backward() -> None:
    stacked = StackedSegments(_segments(2))
    assert not stacked.flat_grads().any()


def _run_optimizer_equivalence(
    make_opt: Callable[[list[nn.Parameter]], torch.optim.Optimizer],
) -> None:
    """3 steps of K separate optimizers vs one optimizer over the stacked parameters."""
    segs = _segments(3)
    stacked = StackedSegments(segs)  # copies the weights before the separate ones train
    opts = [make_opt(list(seg.parameters())) for seg in segs]
    stacked_opt = make_opt(list(stacked.parameters()))
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        x = torch.randn(3, 4, *SHAPE, generator=gen)
        target = torch.randn(3, 4, 16, 2, 2, generator=gen)
        for k, (seg, opt) in enumerate(zip(segs, opts, strict=False)):
            opt.zero_grad()
            ((seg(x[k]) - target[k]) ** 2).sum().backward()
            opt.step()
        stacked_opt.zero_grad()
        # Sum over clients: each client's gradient only flows into its own slice.
        ((stacked(x) - target) ** 2).sum().backward()
        stacked_opt.step()
    for k, seg in enumerate(segs):
        for name, value in seg.state_dict().items():
            torch.testing.assert_close(stacked.segment_state(k)[name], value, rtol=0, atol=1e-6)


def test_sgd_momentum_equals_per_client_optimizers() -> None:
    _run_optimizer_equivalence(
        lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4)
    )


def test_adam_equals_per_client_optimizers() -> None:
    _run_optimizer_equivalence(lambda params: torch.optim.Adam(params, lr=1e-2))


def test_segment_is_an_independent_copy() -> None:
    segs = _segments(2)
    stacked = StackedSegments(segs)
    copy1 = stacked.segment(1)
    x, _ = _inputs(2)
    assert torch.equal(copy1(x[1]), segs[1](x[1]))
    with torch.no_grad():
        for p in copy1.parameters():
            p.add_(1.0)
    assert torch.equal(stacked(x)[1], segs[1](x[1])), "editing the copy must not leak back"


def test_segment_state_round_trip() -> None:
    segs = _segments(3)
    stacked = StackedSegments(segs)
    assert stacked.segment_state(2).keys() == segs[2].state_dict().keys()
    other = _segments(1, first_id=9)[0]
    stacked.load_segment_state(1, other.state_dict())
    x, _ = _inputs(3)
    out = stacked(x)
    assert torch.equal(out[1], other(x[1]))
    assert torch.equal(out[0], segs[0](x[0])) and torch.equal(out[2], segs[2](x[2]))
    with pytest.raises(KeyError):
        stacked.load_segment_state(0, {"nope": torch.zeros(1)})


def test_parameters_are_registered_with_escaped_names() -> None:
    stacked = StackedSegments(_segments(4, cut=1))
    names = [n for n, _ in stacked.named_parameters()]
    assert names == ["0__0__weight", "0__0__bias", "0__1__weight", "0__1__bias"]
    assert stacked.get_parameter("0__0__weight").shape == (4, 8, 1, 5, 5)
    assert list(stacked.stacked_params()) == ["0.0.weight", "0.0.bias", "0.1.weight", "0.1.bias"]


@pytest.mark.parametrize("mode", MODES)
def test_buffers_are_stacked(mode: str) -> None:
    """BatchNorm (eval mode) has running-stat buffers; each client keeps its own."""
    segs = []
    for k in range(2):
        seg = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).eval()
        seg[1].running_mean.fill_(float(k))
        segs.append(seg)
    stacked = StackedSegments(segs, mode=mode).eval()
    assert stacked.get_buffer("1__running_mean").shape == (2, 4)
    x = torch.randn(2, 5, 3)
    expected = torch.stack([seg(x[k]) for k, seg in enumerate(segs)])
    _assert_same(stacked(x).detach(), expected.detach(), mode)
    assert torch.equal(stacked.segment_state(1)["1.running_mean"], torch.ones(4))


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        StackedSegments([])
    with pytest.raises(ValueError):
        StackedSegments([_segments(1, cut=1)[0], _segments(1, cut=2)[0]])
    with pytest.raises(ValueError):
        StackedSegments(_segments(2), mode="threads")
    with pytest.raises(ValueError):
        StackedSegments(_segments(2))(torch.zeros(3, 4, *SHAPE))


def test_resnet_segment_with_residual_blocks() -> None:
    """Custom modules (BasicBlock with a shortcut) run through functional_call too."""
    segs = [
        build_client_segment("resnet18", (3, 8, 8), 10, 3, seed=0, client_id=k) for k in range(2)
    ]
    stacked = StackedSegments(segs)
    x = torch.randn(2, 2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    out = stacked(x)  # (K, B, 128, 4, 4)
    out.sum().backward()
    for k, seg in enumerate(segs):
        y = seg(x[k])
        y.sum().backward()
        assert torch.equal(out[k], y)
    assert torch.equal(stacked.flat_grads(), torch.stack([_flat_grad(seg) for seg in segs]))


def test_train_eval_reaches_the_template() -> None:
    """Dropout in the segment must follow stacked.train() / stacked.eval()."""
    segs = [nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5)) for _ in range(2)]
    stacked = StackedSegments(segs).eval()
    x = torch.ones(2, 4, 3)
    assert torch.equal(stacked(x), stacked(x))
    assert not stacked.segment(0).training
    stacked.train()
    assert stacked.segment(0).training


def _masked_vs_separate(make_opt, masks: list[list[bool]]) -> tuple[Tensor, list[Tensor]]:
    """Stacked params (3, 4) stepped with `masked_step_` vs 3 separate per-client
    optimizers that step only when active; the same gradients for both."""
    from lightning_gapsl.models.stacked import masked_step_

    gen = torch.Generator().manual_seed(0)
    start = torch.randn(3, 4, generator=gen)
    stacked = nn.Parameter(start.clone())
    separate = [nn.Parameter(start[k].clone()) for k in range(3)]
    opt = make_opt([stacked])
    opts = [make_opt([p]) for p in separate]
    for mask in masks:
        grad = torch.randn(3, 4, generator=gen)
        active = torch.tensor(mask)
        stacked.grad = torch.where(active[:, None], grad, 0.0)  # idle clients: no loss
        masked_step_(opt, active)
        for k in range(3):
            if mask[k]:
                separate[k].grad = grad[k].clone()
                opts[k].step()
    return stacked.detach(), [p.detach() for p in separate]


def test_masked_step_equals_per_client_sgd_that_skips_idle_steps() -> None:
    masks = [[True, False, True], [True, True, False], [False, True, True], [True] * 3]

    def sgd(params):
        return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.01)

    stacked, separate = _masked_vs_separate(sgd, masks)
    for k in range(3):
        assert torch.allclose(stacked[k], separate[k], rtol=0, atol=1e-7)


def test_masked_step_adam_keeps_idle_clients_and_their_moments() -> None:
    # Client 1 idle at the first step only; clients 0 and 2 always active, so they
    # match per-client Adams exactly; client 1 shares the step count (documented).
    masks = [[True, False, True], [True, True, True], [True, True, True]]
    stacked, separate = _masked_vs_separate(lambda p: torch.optim.Adam(p, lr=0.1), masks)
    for k in (0, 2):
        assert torch.allclose(stacked[k], separate[k], rtol=0, atol=1e-7)
    from lightning_gapsl.models.stacked import masked_step_

    p = nn.Parameter(torch.ones(2, 3))
    opt = torch.optim.Adam([p], lr=0.1)
    p.grad = torch.ones(2, 3)
    masked_step_(opt, torch.tensor([True, False]))
    assert torch.equal(p[1].detach(), torch.ones(3))  # idle: unchanged
    assert torch.equal(opt.state[p]["exp_avg"][1], torch.zeros(3))  # its moments untouched
    assert not torch.equal(p[0].detach(), torch.ones(3))
    with pytest.raises(ValueError, match="stacked"):
        masked_step_(
            torch.optim.SGD([nn.Parameter(torch.ones(3))], lr=0.1), torch.tensor([True, False])
        )


def test_all_equal_needs_every_parameter_and_buffer_bit_identical() -> None:
    same = [copy.deepcopy(_segments(1)[0]) for _ in range(3)]
    assert StackedSegments(same).all_equal()
    assert not StackedSegments(_segments(3)).all_equal()  # distinct seeded weights
    nudged = StackedSegments(same)
    with torch.no_grad():
        next(iter(nudged.stacked_params().values()))[2].view(-1)[0] += 1e-7
    assert not nudged.all_equal()
    norms = [nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)) for _ in range(2)]
    norms[1][0].load_state_dict(norms[0][0].state_dict())
    norms[1][1].running_mean.fill_(1.0)  # equal weights, different running statistics
    assert not StackedSegments(norms).all_equal()


def test_evaluating_one_of_identical_segments_gives_every_row() -> None:
    from lightning_gapsl.evaluation import evaluate_clients
    from lightning_gapsl.models.split import build_server_segment

    stacked = StackedSegments([copy.deepcopy(_segments(1)[0]) for _ in range(3)])
    server = build_server_segment("lenet", SHAPE, 10, 2, seed=0)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, *SHAPE, generator=gen), torch.randint(0, 10, (16,), generator=gen)
    every = evaluate_clients(stacked, server, x, y, 10, only_first=False)  # (3, 21)
    one = evaluate_clients(stacked, server, x, y, 10, only_first=True)  # (1, 21)
    assert torch.equal(every, one.expand_as(every))


def test_backward_each_equals_one_forward_and_one_backward_of_the_summed_losses() -> None:
    """One segment at a time gives the loop forward's gradients bit for bit: parameters,
    the input, and a frozen parameter left without gradient; losses weighted per k."""
    k = 3
    whole, each = (StackedSegments(_segments(k)) for _ in range(2))
    for stacked in (whole, each):
        stacked.get_parameter("0__0__bias").requires_grad_(False)  # frozen: no .grad
    x, upstream = _inputs(k)  # (K, B, 1, 8, 8), (K, B, 16, 2, 2)
    weights = torch.tensor([0.5, 2.0, 0.0])  # 0: a client whose loss does not count

    x_whole = x.clone().requires_grad_(True)
    out = whole(x_whole)  # (K, B, 16, 2, 2)
    (weights * (out * upstream).flatten(1).sum(1)).sum().backward()

    seen = []

    def loss_of(i: int, out_i: Tensor) -> Tensor:
        seen.append(i)
        return weights[i] * (out_i * upstream[i]).sum()

    x_grad = each.backward_each(x, loss_of)
    assert seen == [0, 1, 2]
    assert torch.equal(x_grad, x_whole.grad)
    for (name, p_whole), p_each in zip(whole.named_parameters(), each.parameters(), strict=True):
        if name == "0__0__bias":
            assert p_whole.grad is None and p_each.grad is None
        else:
            assert torch.equal(p_each.grad, p_whole.grad), name
    with pytest.raises(ValueError, match="zero_grad"):
        each.backward_each(x, loss_of)  # .grad is set: it would be overwritten
