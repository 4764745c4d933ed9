"""Unit tests (milliseconds): one split-learning step on tiny models, in process.

Checks update rules that are about who receives what: LocFedMix's mixup changes the
server's update but not the gradients the clients receive.
"""

from __future__ import annotations

import copy
import dataclasses

import torch

from lightning_gapsl.algorithms.locfedmix import decoder_for
from lightning_gapsl.algorithms.psl import client_loss_weights
from lightning_gapsl.config import AlgorithmConfig, OptimConfig
from lightning_gapsl.layout import Layout
from lightning_gapsl.models.split import build_client_segment, build_server_segment
from lightning_gapsl.models.stacked import StackedSegments
from lightning_gapsl.split_step import Parties, make_optimizer, split_train_step
from lightning_gapsl.transport import LocalTransport

SHAPE, N, B = (1, 8, 8), 3, 4


def _parties(algo: AlgorithmConfig) -> Parties:
    clients = StackedSegments([build_client_segment("lenet", SHAPE, 10, 1, 0, c) for c in range(N)])
    server = build_server_segment("lenet", SHAPE, 10, 1, 0)
    decoders = None
    if algo.name == "locfedmix":
        torch.manual_seed(0)
        decoders = StackedSegments([decoder_for((8, 4, 4), SHAPE) for _ in range(N)])
    optim = OptimConfig(name="sgd", lr=0.1, momentum=0.0)
    params = [*clients.parameters(), *(decoders.parameters() if decoders else [])]
    return Parties(Layout(0, 1, N), clients, server, make_optimizer(params, optim),
                   make_optimizer(server.parameters(), optim),
                   client_loss_weights(torch.tensor([10.0, 20.0, 30.0])), decoders=decoders)


def _batch():
    gen = torch.Generator().manual_seed(1)
    return torch.randn(N, B, *SHAPE, generator=gen), torch.randint(0, 10, (N, B), generator=gen)


def _one_step_each(cfg_a: AlgorithmConfig, cfg_b: AlgorithmConfig) -> tuple[Parties, Parties]:
    """Two identical parties, one step each on the same batch under two configs."""
    a = _parties(cfg_a)
    b = copy.deepcopy(a)
    x, y = _batch()
    for parties, cfg in ((a, cfg_a), (b, cfg_b)):
        split_train_step(parties, LocalTransport(Layout(0, 1, N)), cfg, 0, x, y)
    return a, b


def _same(modules_a, modules_b) -> bool:
    return all(torch.equal(pa, pb) for pa, pb in zip(modules_a.parameters(),
                                                    modules_b.parameters()))


def test_locfedmix_mixup_moves_server_not_client_gradients():
    with_mix = AlgorithmConfig(name="locfedmix", num_partners=1, rec_weight=0.1)
    a, b = _one_step_each(with_mix, dataclasses.replace(with_mix, num_partners=0))
    # Clients received the same cut-layer gradients, so they took the same step ...
    assert _same(a.clients, b.clients)
    # ... while the server's update included the mixup loss.
    assert not _same(a.server, b.server)


def test_locfedmix_reconstruction_changes_only_the_client_side():
    with_rec = AlgorithmConfig(name="locfedmix", num_partners=0, rec_weight=1.0)
    a, b = _one_step_each(with_rec, dataclasses.replace(with_rec, rec_weight=0.0))
    assert _same(a.server, b.server)
    assert not _same(a.clients, b.clients)
