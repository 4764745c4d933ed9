"""Unit tests (milliseconds): FSL-SAGE's auxiliary gradient estimate, the alignment of
the auxiliary model to the server's true cut-layer gradients, the per-client activation
buffer and the schedules.

The gradient estimate is checked against the closed form of a softmax-linear head's
input gradient, ``W^T (softmax(W z + b) - onehot(y)) / B``, written out by hand.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_gapsl.methods.fsl_sage.math import (
    ActivationBuffer,
    align_aux_,
    alignment_due,
    alignment_loss,
    alignment_optimizer,
    aux_model_for,
    estimated_cut_grad,
    next_stage_aux,
    server_cut_grads,
    server_step_due,
    uploads_due,
)
from lightning_gapsl.models.split import (
    activation_shape,
    build_client_segment,
    build_server_segment,
)


@pytest.fixture(autouse=True, scope="module")
def _one_intra_op_thread() -> Iterator[None]:
    """Tiny tensors: one intra-op thread. On a busy machine a multi-threaded kernel waits
    milliseconds for its worker threads (cross-entropy's backward went from 0.03 ms to
    2-24 ms with 2 threads here), far more than the work itself."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _linear(fan_in: int, fan_out: int, gen: torch.Generator) -> nn.Linear:
    """An ``nn.Linear`` with weights drawn from ``gen`` (the global RNG stays untouched)."""
    layer = nn.Linear(fan_in, fan_out)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(fan_out, fan_in, generator=gen) / fan_in**0.5)
        layer.bias.copy_(0.1 * torch.randn(fan_out, generator=gen))
    return layer


# --------------------------------------------------------------------------- aux model


@pytest.mark.parametrize(
    ("shape", "in_features"),
    [((128,), 128), ((8, 14, 14), 1568), ((16, 7, 7), 784), ((64, 32, 32), 16384)],
)
def test_aux_model_shapes_and_size(shape: tuple, in_features: int) -> None:
    aux = aux_model_for(shape, 10)
    assert aux(torch.zeros(3, *shape)).shape == (3, 10)
    linear = [m for m in aux.modules() if isinstance(m, nn.Linear)]
    assert len(linear) == 1 and linear[0].in_features == in_features  # (64,32,32): 2x2 pool


# --------------------------------------------------------------------------- estimate


def test_estimated_cut_grad_matches_the_closed_form() -> None:
    gen = torch.Generator().manual_seed(0)
    aux = _linear(3, 4, gen)  # z (B, 3) -> logits (B, 4)
    z = torch.randn(5, 3, generator=gen)  # (B, F)
    y = torch.tensor([0, 3, 1, 1, 2])
    probs = torch.softmax(z @ aux.weight.detach().T + aux.bias.detach(), dim=1)  # (B, C)
    expected = (probs - F.one_hot(y, 4).float()) @ aux.weight.detach() / 5  # (B, F)
    aux.weight.grad = torch.ones_like(aux.weight)  # must survive untouched
    grad = estimated_cut_grad(aux, z, y)
    assert grad.shape == (5, 3) and not grad.requires_grad
    assert torch.allclose(grad, expected, rtol=1e-5, atol=1e-7)
    assert torch.equal(aux.weight.grad, torch.ones_like(aux.weight))
    assert aux.bias.grad is None


def test_estimated_cut_grad_for_conv_activations_under_no_grad() -> None:
    gen = torch.Generator().manual_seed(1)
    aux = aux_model_for((8, 14, 14), 10)
    # An elementwise weight stands in for the client segment: acts = x * w, so the client
    # gradient is x * grad exactly. (A conv, or any broadcast, would pay a one-off lazy
    # import of ~0.3 s in its first backward, which is not what this test measures.)
    x = torch.randn(2, 8, 14, 14, generator=gen)
    w = nn.Parameter(torch.ones(2, 8, 14, 14))
    acts = x * w  # (B, C, H, W), attached to the client graph
    with torch.no_grad():
        grad = estimated_cut_grad(aux, acts, torch.tensor([1, 7]))
    assert grad.shape == (2, 8, 14, 14) and not grad.requires_grad
    acts.backward(grad)  # the client back-propagates the estimate
    assert torch.equal(w.grad, x * grad)
    assert all(p.grad is None for p in aux.parameters())


def test_server_cut_grads_are_per_sample() -> None:
    gen = torch.Generator().manual_seed(2)
    server = nn.Sequential(_linear(6, 8, gen), nn.Tanh(), _linear(8, 3, gen))
    z = torch.randn(4, 6, generator=gen)
    y = torch.tensor([0, 2, 1, 2])
    grads = server_cut_grads(server, z, y)  # (M, F)
    for j in range(4):  # row j depends on sample j only, not on M
        alone = server_cut_grads(server, z[j : j + 1], y[j : j + 1])
        assert torch.allclose(grads[j], alone[0], rtol=1e-6, atol=1e-7)
    # the batch-mean gradient a training step sees is the per-sample one over B
    assert torch.allclose(estimated_cut_grad(server, z, y), grads / 4, rtol=1e-6, atol=1e-7)
    assert all(p.grad is None for p in server.parameters())


# --------------------------------------------------------------------------- alignment


def test_alignment_loss_is_zero_for_the_true_model_and_differentiable() -> None:
    gen = torch.Generator().manual_seed(3)
    server = _linear(5, 3, gen)
    z = torch.randn(6, 5, generator=gen)
    y = torch.randint(0, 3, (6,), generator=gen)
    true = server_cut_grads(server, z, y)
    assert alignment_loss(server, z, y, true).item() < 1e-12
    aux = _linear(5, 3, gen)
    loss = alignment_loss(aux, z, y, true)
    assert loss.item() > 0
    loss.backward()  # second order: through the input gradient into aux's parameters
    assert aux.weight.grad is not None and aux.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="true_grads"):
        alignment_loss(aux, z, y, true[:, :2])


def test_align_aux_reduces_the_gradient_mismatch() -> None:
    gen = torch.Generator().manual_seed(4)
    client = torch.randn(20, 16, generator=gen) / 20**0.5  # a fixed linear "client"
    acts = torch.randn(64, 20, generator=gen) @ client  # (M, F) smashed data
    labels = torch.randint(0, 4, (64,), generator=gen)
    server = nn.Sequential(_linear(16, 32, gen), nn.Tanh(), _linear(32, 4, gen))
    true = server_cut_grads(server, acts, labels)  # (M, F)
    aux = _linear(16, 4, gen)
    before = alignment_loss(aux, acts, labels, true).item()
    losses = align_aux_(
        aux,
        acts,
        labels,
        true,
        epochs=30,
        lr=1e-2,
        batch_size=16,
        generator=torch.Generator().manual_seed(0),
    )
    after = alignment_loss(aux, acts, labels, true).item()
    assert len(losses) == 30
    assert after < 0.7 * before  # measured: 0.0039 vs 0.106 (a 96% reduction)
    assert losses[-1] < losses[0]
    assert all(p.grad is None for p in aux.parameters())


def test_align_aux_is_deterministic_and_validates() -> None:
    gen = torch.Generator().manual_seed(5)
    acts = torch.randn(10, 3, generator=gen)
    labels = torch.randint(0, 2, (10,), generator=gen)
    true = torch.randn(10, 3, generator=gen)
    runs = []
    for _ in range(2):
        aux = _linear(3, 2, torch.Generator().manual_seed(9))
        runs.append(
            align_aux_(aux, acts, labels, true, 3, 1e-2, 4, torch.Generator().manual_seed(1))
        )
    assert runs[0] == runs[1]
    with pytest.raises(ValueError):
        align_aux_(aux, acts, labels, true, epochs=1, lr=1e-2, batch_size=0)


# --------------------------------------------------------------------------- buffer


def test_buffer_keeps_the_last_capacity_samples_in_order() -> None:
    buf = ActivationBuffer(capacity=5)
    assert len(buf) == 0
    for start in (0, 3, 6):  # samples 0..8, values = sample index
        ids = torch.arange(start, start + 3)
        buf.add(ids.float()[:, None].repeat(1, 2), ids)  # acts (3, 2), labels (3,)
    acts, labels = buf.tensors()
    assert len(buf) == 5
    assert labels.tolist() == [4, 5, 6, 7, 8]
    assert acts[:, 0].tolist() == [4.0, 5.0, 6.0, 7.0, 8.0] and acts.shape == (5, 2)
    big = torch.arange(100, 107)
    buf.add(big.float()[:, None].repeat(1, 2), big)  # one batch larger than capacity
    assert buf.tensors()[1].tolist() == [102, 103, 104, 105, 106]


def test_buffer_copies_detaches_and_checks_shapes() -> None:
    buf = ActivationBuffer(capacity=4)
    with pytest.raises(ValueError, match="empty"):
        buf.tensors()
    x = torch.zeros(2, 3, requires_grad=True)
    acts = x * 1.0
    buf.add(acts, torch.tensor([1, 2]))
    with torch.no_grad():
        acts += 5.0  # the caller reuses its tensor: the buffer must not change
    assert not buf.tensors()[0].requires_grad
    assert torch.equal(buf.tensors()[0], torch.zeros(2, 3))
    with pytest.raises(ValueError, match="activation shape"):
        buf.add(torch.zeros(1, 4), torch.tensor([0]))
    with pytest.raises(ValueError):
        buf.add(torch.zeros(2, 3), torch.tensor([0]))


def test_buffer_state_dict_round_trip() -> None:
    buf = ActivationBuffer(capacity=6)
    buf.add(torch.arange(10.0).reshape(5, 2), torch.arange(5))
    restored = ActivationBuffer(capacity=6)
    restored.load_state_dict(buf.state_dict())
    assert torch.equal(restored.tensors()[0], buf.tensors()[0])
    assert torch.equal(restored.tensors()[1], buf.tensors()[1])
    smaller = ActivationBuffer(capacity=2)  # a smaller capacity keeps the newest samples
    smaller.load_state_dict(buf.state_dict())
    assert smaller.tensors()[1].tolist() == [3, 4]
    empty = ActivationBuffer()
    empty.load_state_dict(ActivationBuffer().state_dict())
    assert len(empty) == 0 and empty.capacity == 1000


# --------------------------------------------------------------------------- schedules


def test_schedules() -> None:
    assert [server_step_due(s, 5) for s in range(11)] == [
        True,
        False,
        False,
        False,
        False,
        True,
        False,
        False,
        False,
        False,
        True,
    ]
    assert all(server_step_due(s, 1) for s in range(4))
    assert [r for r in range(30) if alignment_due(r, 10)] == [9, 19, 29]
    with pytest.raises(ValueError, match="algorithm.server_interval"):
        server_step_due(0, 0)
    with pytest.raises(ValueError, match="algorithm.align_interval"):
        alignment_due(0, 0)


def test_alignment_at_the_start_of_rounds_0_l_2l() -> None:
    assert [r for r in range(7) if alignment_due(r, 3, when="start")] == [0, 3, 6]
    assert [r for r in range(7) if alignment_due(r, 3, when="end")] == [2, 5]
    assert alignment_due(0, 10, when="start")  # a run of one round still aligns
    assert not any(alignment_due(r, 10, when="end") for r in range(9))
    with pytest.raises(ValueError, match="start, end"):
        alignment_due(0, 2, when="middle")


def test_uploads_due_restart_every_round_and_skip_idle_clients() -> None:
    active = torch.tensor([True, True, False, True])
    assert uploads_due(0, 2, active).tolist() == [True, True, False, True]
    assert uploads_due(1, 2, active).tolist() == [False] * 4
    assert uploads_due(4, 2, active).tolist() == [True, True, False, True]
    with pytest.raises(ValueError, match="bool"):
        uploads_due(0, 2, torch.ones(4))


def _align_problem() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(6)
    acts = torch.randn(12, 5, generator=gen)
    labels = torch.randint(0, 3, (12,), generator=gen)
    server = nn.Sequential(_linear(5, 8, gen), nn.Tanh(), _linear(8, 3, gen))
    return acts, labels, server_cut_grads(server, acts, labels)


def test_full_batch_alignment_is_batch_size_none() -> None:
    acts, labels, true = _align_problem()
    runs = []
    for batch in (None, 12):
        aux = _linear(5, 3, torch.Generator().manual_seed(2))
        runs.append((align_aux_(aux, acts, labels, true, 4, 1e-2, batch), aux.weight.detach()))
    assert runs[0][0] == runs[1][0] and torch.equal(runs[0][1], runs[1][1])


def test_persistent_optimizer_carries_adam_state_across_alignments() -> None:
    """3 + 2 epochs with one kept Adam == 5 epochs in one call; != two fresh Adams
    (Adam's bias correction and moments restart)."""
    acts, labels, true = _align_problem()

    def fitted(schedule: list[int], persistent: bool) -> torch.Tensor:
        aux = _linear(5, 3, torch.Generator().manual_seed(2))
        opt = alignment_optimizer(aux, lr=1e-2) if persistent else None
        for epochs in schedule:
            align_aux_(aux, acts, labels, true, epochs, 1e-2, None, optimizer=opt)
        if persistent:
            assert opt.state[aux.weight]["step"].item() == sum(schedule)
        return aux.weight.detach().clone()

    one_go = fitted([5], persistent=True)
    assert torch.equal(fitted([3, 2], persistent=True), one_go)
    assert not torch.allclose(fitted([3, 2], persistent=False), one_go)
    with pytest.raises(ValueError, match="align_lr"):
        alignment_optimizer(nn.Linear(2, 2), lr=0.0)


def test_next_stage_aux_for_resnet_cut_after_the_second_stage() -> None:
    shape = (3, 8, 8)  # small images keep it fast; the blocks are ResNet-18's
    client = build_client_segment("resnet18", shape, 10, 3, seed=0, client_id=0)
    server = build_server_segment("resnet18", shape, 10, 3, seed=0)
    act = activation_shape(client, shape)
    assert act == (128, 4, 4)  # stem, stage 1, stage 2 on the client
    state = torch.get_rng_state()
    fresh = next_stage_aux(server, act, 10, init="fresh", seed=4)
    assert torch.equal(torch.get_rng_state(), state), "the global RNG must stay untouched"
    copied = next_stage_aux(server, act, 10, init="copy", seed=4)
    z = torch.randn(2, *act)
    assert fresh(z).shape == (2, 10) and copied[-1].in_features == 256  # stage 3 width
    conv = "0.0.conv1.weight"  # first conv of the copied stage 3
    assert torch.equal(copied.state_dict()[conv], server.state_dict()["0.0.conv1.weight"])
    assert not torch.equal(fresh.state_dict()[conv], copied.state_dict()[conv])
    again = next_stage_aux(server, act, 10, init="fresh", seed=4)  # shared start: one seed
    assert all(
        torch.equal(a, b)
        for a, b in zip(fresh.state_dict().values(), again.state_dict().values(), strict=True)
    )
    with torch.no_grad():
        copied[0][0].conv1.weight.add_(1.0)
    assert not torch.equal(copied.state_dict()[conv], server.state_dict()["0.0.conv1.weight"])
    # its input gradient is a valid estimate and the alignment loss is twice differentiable
    labels = torch.tensor([1, 7])
    assert estimated_cut_grad(fresh, z, labels).shape == z.shape
    loss = alignment_loss(fresh, z, labels, server_cut_grads(server, z, labels))
    loss.backward()
    assert fresh[-1].weight.grad is not None and fresh[0][0].conv1.weight.grad is not None


def test_next_stage_aux_for_lenet_and_its_errors() -> None:
    shape = (1, 8, 8)
    server = build_server_segment("lenet", shape, 10, 1, seed=0)
    aux = next_stage_aux(server, (8, 4, 4), 10)  # conv block 2 -> (16, 2, 2) -> pool -> 16
    assert aux(torch.zeros(3, 8, 4, 4)).shape == (3, 10) and aux[-1].in_features == 16
    flat = next_stage_aux(build_server_segment("lenet", shape, 10, 2, seed=0), (16, 2, 2), 10)
    assert flat[-1].in_features == 128  # the fully connected block: no pooling
    with pytest.raises(ValueError, match="linear auxiliary"):
        next_stage_aux(build_server_segment("lenet", shape, 10, 3, seed=0), (128,), 10)
    with pytest.raises(ValueError, match="fresh, copy"):
        next_stage_aux(server, (8, 4, 4), 10, init="zeros")
