"""Unit tests (milliseconds): model builders, cut-layer splitting, seeded segment init."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from lightning_gapsl.models import MODELS, ModelError, build_blocks, num_cut_choices
from lightning_gapsl.models.split import (
    activation_shape,
    build_client_segment,
    build_full_model,
    build_server_segment,
    init_id,
    split_blocks,
)

SHAPES = [(1, 28, 28), (1, 8, 8), (3, 32, 32)]


@pytest.mark.parametrize("shape", SHAPES)
def test_lenet_output_shape_and_block_count(shape: tuple[int, int, int]) -> None:
    model = build_blocks("lenet", shape, 10)
    assert len(model) == 4
    assert num_cut_choices("lenet", shape, 10) == 3
    assert model(torch.zeros(2, *shape)).shape == (2, 10)


def test_resnet18_blocks_and_shapes() -> None:
    model = build_blocks("resnet18", (3, 32, 32), 7)
    assert len(model) == 6 and num_cut_choices("resnet18", (3, 32, 32), 7) == 5
    # GroupNorm everywhere, never BatchNorm (no running statistics / buffers).
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert list(model.buffers()) == []
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 7)
    # The well-known CIFAR ResNet-18 count (11,173,962 for 10 classes; GroupNorm has the
    # same 2C affine parameters as BatchNorm) minus 3 classes' head rows (3 * 513).
    assert sum(p.numel() for p in model.parameters()) == 11_173_962 - 3 * 513


@pytest.mark.parametrize(
    ("name", "shape", "cut", "expected"),
    [
        ("lenet", (1, 28, 28), 1, (8, 14, 14)),
        ("lenet", (1, 28, 28), 2, (16, 7, 7)),
        ("lenet", (1, 8, 8), 3, (128,)),
        ("resnet18", (3, 32, 32), 3, (128, 16, 16)),
    ],
)
def test_activation_shape(
    name: str, shape: tuple[int, int, int], cut: int, expected: tuple[int, ...]
) -> None:
    client = build_client_segment(name, shape, 10, cut, seed=0, client_id=0)
    assert activation_shape(client, shape) == expected


def _check_split_equals_unsplit(
    name: str, shape: tuple[int, int, int], cut: int, batch: int
) -> None:
    """Client -> (detached activation) -> server -> grad back == unsplit model, exactly."""
    torch.manual_seed(0)
    full = build_blocks(name, shape, 10)
    client, server = (copy.deepcopy(seg) for seg in split_blocks(full, cut))
    x = torch.randn(batch, *shape)
    target = torch.randint(0, 10, (batch,))

    full_loss = nn.functional.cross_entropy(full(x), target)
    full_loss.backward()

    # What PSL does: the activation crosses the cut as a leaf, its gradient comes back.
    act = client(x)
    act_srv = act.detach().requires_grad_(True)
    split_logits = server(act_srv)
    split_loss = nn.functional.cross_entropy(split_logits, target)
    split_loss.backward()
    act.backward(act_srv.grad)

    assert torch.equal(split_loss, full_loss)
    # Parameters in order: the client's blocks then the server's == the full model's.
    # Bitwise: splitting runs the very same ops on the same shapes, only the graph is cut.
    split_params = list(client.parameters()) + list(server.parameters())
    full_named = list(full.named_parameters())
    assert len(split_params) == len(full_named)
    for (key, p_full), p_split in zip(full_named, split_params, strict=False):
        assert p_split.shape == p_full.shape, key
        assert torch.equal(p_split.grad, p_full.grad), key


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 8, 8)])
@pytest.mark.parametrize("cut", [1, 2, 3])
def test_lenet_split_equals_unsplit(shape: tuple[int, int, int], cut: int) -> None:
    _check_split_equals_unsplit("lenet", shape, cut, batch=4)


def test_resnet18_split_equals_unsplit() -> None:
    _check_split_equals_unsplit("resnet18", (3, 16, 16), cut=3, batch=2)


@pytest.mark.parametrize(("name", "bad_cut"), [("lenet", 0), ("lenet", 4), ("resnet18", 6)])
def test_cut_layer_out_of_range(name: str, bad_cut: int) -> None:
    last = num_cut_choices(name, (3, 32, 32), 10)
    with pytest.raises(ModelError, match=rf"model\.cut_layer.*1\.\.{last}"):
        build_client_segment(name, (3, 32, 32), 10, bad_cut, seed=0, client_id=0)
    with pytest.raises(ModelError, match=rf"model\.cut_layer.*1\.\.{last}"):
        build_server_segment(name, (3, 32, 32), 10, bad_cut, seed=0)
    with pytest.raises(ModelError, match=r"model\.cut_layer"):
        split_blocks(build_blocks("lenet", (1, 8, 8), 10), 0)


def test_unknown_model_lists_choices() -> None:
    with pytest.raises(ModelError, match="model") as err:
        build_blocks("vgg", (3, 32, 32), 10)
    assert all(name in str(err.value) for name in MODELS)


def test_lenet_rejects_tiny_inputs() -> None:
    with pytest.raises(ModelError):
        build_blocks("lenet", (1, 3, 3), 10)


def test_seeded_client_init() -> None:
    def weights(seed: int, client_id: int) -> list[torch.Tensor]:
        seg = build_client_segment("lenet", (1, 8, 8), 10, 2, seed=seed, client_id=client_id)
        return [p.detach() for p in seg.parameters()]

    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = weights(7, 3)
    assert torch.equal(torch.get_rng_state(), state), "building must not touch the global RNG"
    torch.manual_seed(456)  # different global state must not matter either
    b = weights(7, 3)
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=False))
    c = weights(7, 4)
    d = weights(8, 3)
    conv_weight = 0  # GroupNorm weights start at 1 for everyone; compare random ones
    assert not torch.equal(a[conv_weight], c[conv_weight])
    assert not torch.equal(a[conv_weight], d[conv_weight])


def test_client_block_weights_do_not_depend_on_cut() -> None:
    short = build_client_segment("lenet", (1, 28, 28), 10, 1, seed=0, client_id=2)
    long = build_client_segment("lenet", (1, 28, 28), 10, 3, seed=0, client_id=2)
    for key, value in short.state_dict().items():
        assert torch.equal(value, long.state_dict()[key])


def test_full_model_is_client0_plus_server() -> None:
    state = torch.get_rng_state()
    full = build_full_model("lenet", (1, 28, 28), 10, 2, seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    client0 = build_client_segment("lenet", (1, 28, 28), 10, 2, seed=5, client_id=0)
    server = build_server_segment("lenet", (1, 28, 28), 10, 2, seed=5)
    assert full.state_dict().keys() == build_blocks("lenet", (1, 28, 28), 10).state_dict().keys()
    expected = list(client0.parameters()) + list(server.parameters())
    assert all(torch.equal(p, q) for p, q in zip(full.parameters(), expected, strict=True))


def test_shared_client_init_copies_client0_for_every_client() -> None:
    def state(client_id: int, client_init: str) -> dict[str, torch.Tensor]:
        seg = build_client_segment(
            "lenet", (1, 8, 8), 10, 2, seed=3, client_id=client_id, client_init=client_init
        )
        return seg.state_dict()

    client0 = state(0, "independent")
    for c in (0, 1, 5):  # any client, hosted anywhere: the same tensors as client 0's
        shared = state(c, "shared")
        assert all(torch.equal(shared[k], client0[k]) for k in client0)
    # independent keeps a seed per client (conv weight 0 differs); the default is independent
    assert not torch.equal(state(1, "independent")["0.0.weight"], client0["0.0.weight"])
    default = build_client_segment("lenet", (1, 8, 8), 10, 2, seed=3, client_id=1).state_dict()
    assert torch.equal(default["0.0.weight"], state(1, "independent")["0.0.weight"])


def test_init_id_and_its_errors() -> None:
    assert [init_id(c, "shared") for c in range(4)] == [0, 0, 0, 0]
    assert [init_id(c, "independent") for c in range(4)] == [0, 1, 2, 3]
    with pytest.raises(ModelError, match=r"model\.client_init='copy'.*shared, independent"):
        init_id(1, "copy")
    with pytest.raises(ModelError, match="client_id"):
        init_id(-1, "shared")
