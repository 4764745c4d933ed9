"""Cutting a block model into client and server segments, with seeded initialisation.

Every segment is built under its own seed, ``derive_seed(seed, "client", init_id)`` or
``derive_seed(seed, "server")``, inside ``torch.random.fork_rng`` so construction neither
reads nor advances the global RNG: a client's initial weights are the same whichever
process hosts it and whatever was built before it.

``model.client_init`` (`init_id`) picks ``init_id``: ``shared`` gives every client id 0,
so all client segments are copies of one model's lower part (the one `build_full_model`
starts from); ``independent`` gives each client its own id, hence its own seed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lightning_gapsl.models import BlockFactory, ModelError, block_factories
from lightning_gapsl.seeding import derive_seed

CLIENT_INITS = ("shared", "independent")


def init_id(client_id: int, client_init: str) -> int:
    """The id whose seed initialises client ``client_id``'s parts under ``client_init``.

    ``shared``: 0 for every client (one model, copied to all: layout-invariant because it
    depends on no rank). ``independent``: ``client_id``. Use it for every per-client
    module (segment, auxiliary model, decoder) with that module's own role key, e.g.
    ``derive_seed(seed, "aux", init_id(c, client_init))``.

    Raises:
        ModelError: naming ``model.client_init`` for any other value.
    """
    if client_init not in CLIENT_INITS:
        raise ModelError(
            f"model.client_init={client_init!r} is not valid; choose one of "
            f"{', '.join(CLIENT_INITS)}"
        )
    if client_id < 0:
        raise ModelError(f"client_id must be >= 0, got {client_id}")
    return 0 if client_init == "shared" else int(client_id)


def check_cut(cut_layer: int, num_blocks: int) -> None:
    """Raise ModelError unless ``1 <= cut_layer <= num_blocks - 1``."""
    if not isinstance(cut_layer, int) or not 1 <= cut_layer <= num_blocks - 1:
        raise ModelError(
            f"model.cut_layer={cut_layer!r} is out of range; valid range is "
            f"1..{num_blocks - 1} for a model of {num_blocks} blocks"
        )


def split(module: nn.Module, cut: str | int) -> tuple[nn.Sequential, nn.Sequential]:
    """(client, server) segments of ``module``'s children, cut after the child named (or at
    the index) ``cut``: the client holds every child up to and including it. Modules are
    shared, not copied."""
    from lightning_gapsl.models import children_of, cut_position

    blocks = children_of(module, type(module).__name__)
    at = cut_position([n for n, _ in module.named_children()], str(cut), type(module).__name__)
    check_cut(at, len(blocks))
    return nn.Sequential(*blocks[:at]), nn.Sequential(*blocks[at:])


def split_blocks(blocks: nn.Sequential, cut_layer: int) -> tuple[nn.Sequential, nn.Sequential]:
    """``(blocks[:cut_layer], blocks[cut_layer:])`` (client, server); modules are shared."""
    check_cut(cut_layer, len(blocks))
    return blocks[:cut_layer], blocks[cut_layer:]


def _build_seeded(factories: list[BlockFactory], seed: int) -> nn.Sequential:
    """Construct ``factories`` in order with the CPU generator seeded by ``seed``, on a
    forked RNG (the weights ``torch.manual_seed(seed)`` would give)."""
    # devices=[]: fork only the CPU generator; construction never draws on CUDA RNGs and
    # forking them would initialise CUDA needlessly. Seeding the CPU generator alone:
    # torch.manual_seed also queues a lazy seed for CUDA, XPU and MTIA, each recording a
    # Python stack trace (~0.1 ms per call; more under a profiler).
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return nn.Sequential(*(make() for make in factories))


def build_client_segment(
    name: Any,  # the model config (`ModelConfig`) or a registered model name
    input_shape: tuple[int, ...],
    num_classes: int,
    cut_layer: int,
    seed: int,
    client_id: int,
    client_init: str = "independent",
) -> nn.Sequential:
    """Blocks ``[0, cut_layer)`` of model ``name``, initialised from (seed, `init_id`).

    Only the client's own blocks are constructed, so block ``i``'s weights are the same
    for every ``cut_layer > i``. ``client_init`` (``model.client_init``): ``shared``
    builds client 0's weights for every client; the default ``independent`` keeps the
    per-client seed of callers written before the option existed.
    """
    factories = block_factories(name, input_shape, num_classes)
    check_cut(cut_layer, len(factories))
    seed_id = init_id(client_id, client_init)
    return _build_seeded(factories[:cut_layer], derive_seed(seed, "client", seed_id))


def build_server_segment(
    name: Any,  # the model config (`ModelConfig`) or a registered model name
    input_shape: tuple[int, ...],
    num_classes: int,
    cut_layer: int,
    seed: int,
) -> nn.Sequential:
    """Blocks ``[cut_layer, n)`` of model ``name``, initialised from (seed, "server")."""
    factories = block_factories(name, input_shape, num_classes)
    check_cut(cut_layer, len(factories))
    return _build_seeded(factories[cut_layer:], derive_seed(seed, "server"))


def build_full_model(
    name: Any,  # the model config (`ModelConfig`) or a registered model name
    input_shape: tuple[int, ...],
    num_classes: int,
    cut_layer: int,
    seed: int,
) -> nn.Sequential:
    """Unsplit model for centralized training: client 0's segment followed by the server's.

    Flattened into one ``nn.Sequential`` of blocks (same indices and state-dict keys as
    `build_blocks`), so centralized training and 1-client PSL start from identical weights.
    """
    client = build_client_segment(name, input_shape, num_classes, cut_layer, seed, client_id=0)
    server = build_server_segment(name, input_shape, num_classes, cut_layer, seed)
    return nn.Sequential(*client, *server)


def activation_shape(
    client_segment: nn.Module, input_shape: tuple[int, int, int]
) -> tuple[int, ...]:
    """Per-sample shape of the cut-layer activation (what a client sends the server).

    A dry run on one zero sample; GroupNorm normalises per sample so batch 1 is fine.
    """
    param = next(client_segment.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.get_default_dtype()
    with torch.no_grad():
        out = client_segment(torch.zeros((1, *input_shape), device=device, dtype=dtype))
    return tuple(out.shape[1:])
