"""A lower bound of what one rank's training step holds on its device, checked against the
GPU's free memory before the first step, so a run that cannot fit stops naming the keys to
change instead of failing with an out-of-memory error mid-epoch.

Counted: the parameters of the hosted client segments and of the server segment, their
gradients and optimizer state (SGD momentum: one copy; Adam: two), and the activations a
step keeps for its backward (every leaf layer's output, float32): K hosted clients x B
samples through the client segment, N x B through the server segment on the server rank.
Not counted: method extras (decoders, auxiliary models, FSL-SAGE's buffers), evaluation,
the CUDA context and the allocator's slack; so the bound refuses only runs that surely do
not fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lightning_gapsl.checks import ConfigError

FLOAT_BYTES = 4
GIB = 2**30


def activation_elements(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Elements of every leaf layer's output for one sample (what autograd keeps)."""
    total = 0

    def count(_module, _inputs, output) -> None:
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output[0].numel()

    leaves = [m for m in module.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.no_grad():
            module(torch.zeros(1, *input_shape))
    finally:
        for hook in hooks:
            hook.remove()
    return total


@dataclass(frozen=True)
class StepMemory:
    """Bytes of one rank's step, by what holds them."""

    parameters: int  # weights + gradients + optimizer state
    activations: int

    @property
    def total(self) -> int:
        return self.parameters + self.activations


def step_memory(
    client: nn.Module,
    server: nn.Module,
    input_shape: tuple[int, ...],
    cut_shape: tuple[int, ...],
    hosted: int,
    num_clients: int,
    batch_size: int,
    is_server: bool,
    optimizer: str,
) -> StepMemory:
    """The lower bound for a rank hosting ``hosted`` clients (the server rank also runs
    the server segment on all ``num_clients`` clients' batches)."""
    copies = 2 + (2 if optimizer == "adam" else 1)  # weights, gradients, optimizer state
    params = hosted * sum(p.numel() for p in client.parameters())
    acts = hosted * batch_size * activation_elements(client, input_shape)
    if is_server:
        params += sum(p.numel() for p in server.parameters())
        acts += num_clients * batch_size * activation_elements(server, cut_shape)
    return StepMemory(copies * params * FLOAT_BYTES, acts * FLOAT_BYTES)


def rank_step_memory(cfg, data, layout) -> StepMemory:
    """`step_memory` of this rank of a run (``cfg`` a RunConfig, ``data`` its
    FederatedData, ``layout`` the rank's Layout), from fresh segments on the CPU."""
    from lightning_gapsl.models.split import build_client_segment, build_server_segment

    ds, m = data.dataset, cfg.model
    client = build_client_segment(m, ds.input_shape, ds.num_classes, m.cut_layer, cfg.seed, 0)
    server = build_server_segment(m, ds.input_shape, ds.num_classes, m.cut_layer, cfg.seed)
    with torch.no_grad():
        cut = tuple(client(torch.zeros(1, *ds.input_shape)).shape[1:])
    return step_memory(
        client,
        server,
        ds.input_shape,
        cut,
        len(layout.hosted),
        data.num_clients,
        data.batch_size,
        layout.is_server,
        cfg.optim.name,
    )


def check_fits(need: StepMemory, free_bytes: int, rank: int) -> None:
    """ConfigError naming the keys to change when ``need`` exceeds ``free_bytes``."""
    if need.total <= free_bytes:
        return
    raise ConfigError(
        f"rank {rank} needs at least {need.total / GIB:.1f} GiB on its GPU for one step "
        f"({need.activations / GIB:.1f} GiB of activations, {need.parameters / GIB:.1f} GiB "
        f"of weights, gradients and optimizer state) but {free_bytes / GIB:.1f} GiB are free; "
        "lower data.batch_size, spread the clients over more processes (trainer.devices), "
        "cut earlier (model.cut_layer) or use trainer.precision=bf16-mixed"
    )
