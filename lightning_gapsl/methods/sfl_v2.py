"""SplitFed V2 (Thapa et al.): one server; each step it serves the clients one at a time
in a random order, stepping after each; FedAvg of the client segments every round."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lightning_gapsl.methods.base import Method, split_state
from lightning_gapsl.methods.configs import RoundConfig, local_pass_epoch
from lightning_gapsl.methods.exchange import Hooks, reported_loss, split_exchange
from lightning_gapsl.methods.rounds import every_round_global, fedavg_after_round, segment_shapes
from lightning_gapsl.seeding import generator


@dataclass(frozen=True)
class SflV2Config(RoundConfig):
    name: str = "sfl_v2"
    """The method's registry name (``algorithm=``)."""


def _sequential_server_pass(state, acts, labels, step):
    """Clients served one at a time; the order is drawn from (seed, step), not from ranks."""
    num_clients = labels.shape[0]
    order = torch.randperm(num_clients, generator=generator(state.seed, "sfl_v2", step))
    cut_grads = torch.zeros_like(acts)  # (N, B, *F); idle clients get nothing
    client_losses = torch.zeros(num_clients, device=acts.device)
    for c in order.tolist():
        if state.active is not None and not bool(state.active[c]):
            continue  # idle in this step of a local-pass round
        a = acts[c].detach().requires_grad_(True)  # (B, *F)
        loss = nn.functional.cross_entropy(state.server(a), labels[c])
        state.server_opt.zero_grad(set_to_none=True)
        loss.backward()
        state.server_opt.step()
        cut_grads[c] = a.grad
        client_losses[c] = loss.detach()
    return reported_loss(state, client_losses), client_losses, cut_grads


def build(cfg, data, layout):
    state = split_state(cfg, data, layout)
    state.extras["client_shapes"] = segment_shapes(cfg, data)
    return state


def train_step(state, transport, step, x, y):
    return split_exchange(state, transport, step, x, y,
                          Hooks(server_pass=_sequential_server_pass))


METHOD = Method("sfl_v2", SflV2Config, build, train_step, after_step=fedavg_after_round,
                global_model=every_round_global,
                epoch_steps=local_pass_epoch)
