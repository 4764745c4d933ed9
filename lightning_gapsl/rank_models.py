"""What each rank builds for each algorithm: its clients, the server, auxiliary models.

Every random initialisation is seeded by (run seed, role, client id), never by rank,
so a client's model is the same whichever process hosts it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from lightning_gapsl.algorithms.fsl_sage import ActivationBuffer, aux_model_for
from lightning_gapsl.algorithms.locfedmix import decoder_for
from lightning_gapsl.config import FEDAVG_ALGORITHMS, RunConfig
from lightning_gapsl.federated import FederatedData
from lightning_gapsl.layout import Layout
from lightning_gapsl.models.split import (
    build_client_segment,
    build_full_model,
    build_server_segment,
)
from lightning_gapsl.models.stacked import StackedSegments
from lightning_gapsl.seeding import derive_seed


@dataclass
class RankModels:
    clients: StackedSegments | None = None  # hosted clients' segments (K, ...)
    server: nn.Module | None = None  # trained server (SplitFed V1: stacked copies)
    eval_server: nn.Module | None = None  # the single server clients evaluate with
    full_model: nn.Module | None = None  # centralized only
    decoders: StackedSegments | None = None  # LocFedMix: hosted clients' decoders
    client_aux: StackedSegments | None = None  # CSE-FSL heads / FSL-SAGE estimators
    server_aux: nn.ModuleList | None = None  # FSL-SAGE: the server's copy of each estimator
    act_buffers: list[ActivationBuffer] = field(default_factory=list)  # FSL-SAGE (server)


def seeded(make, seed: int, *key) -> nn.Module:
    """Build a module under its own seed without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, *key))
        return make()


def _model_args(cfg: RunConfig, data: FederatedData) -> tuple:
    ds = data.dataset
    return cfg.model.name, ds.input_shape, ds.num_classes, cfg.model.cut_layer


def cut_shape(cfg: RunConfig, data: FederatedData) -> tuple[int, ...]:
    """Per-sample shape of the cut-layer activations."""
    name, shape, classes, cut = _model_args(cfg, data)
    client = build_client_segment(name, shape, classes, cut, cfg.seed, 0)
    with torch.no_grad():
        return tuple(client(torch.zeros(1, *shape)).shape[1:])


def client_template(cfg: RunConfig, data: FederatedData) -> dict[str, torch.Size]:
    """Per-client parameter shapes in a fixed order, the same on every rank (FedAvg)."""
    name, shape, classes, cut = _model_args(cfg, data)
    if cfg.algorithm.name == "fedavg":
        model = build_full_model(name, shape, classes, cut, cfg.seed)
    else:
        model = build_client_segment(name, shape, classes, cut, cfg.seed, 0)
    return {n: p.shape for n, p in model.named_parameters()}


def aux_template(cfg: RunConfig, data: FederatedData) -> dict[str, torch.Size]:
    model = aux_model_for(cut_shape(cfg, data), data.dataset.num_classes)
    return {n: p.shape for n, p in model.named_parameters()}


def build_rank_models(cfg: RunConfig, data: FederatedData, layout: Layout) -> RankModels:
    """The models this rank holds for ``cfg.algorithm``."""
    name, shape, classes, cut = _model_args(cfg, data)
    algo, seed, hosted = cfg.algorithm.name, cfg.seed, layout.hosted
    if algo == "centralized":
        return RankModels(full_model=build_full_model(name, shape, classes, cut, seed))
    m = RankModels()

    def build(client_id: int) -> nn.Module:
        if algo == "fedavg":
            return build_full_model(name, shape, classes, cut, seed)
        # FedAvg-family methods start every client from one global model (the fed
        # server sends it out); PSL-family clients start independently.
        init_id = 0 if algo in FEDAVG_ALGORITHMS else client_id
        return build_client_segment(name, shape, classes, cut, seed, init_id)

    if hosted and algo == "sl":  # one travelling segment: a physical copy per rank
        m.clients = StackedSegments([build_client_segment(name, shape, classes, cut, seed, 0)])
    elif hosted:
        m.clients = StackedSegments([build(c) for c in hosted], mode=cfg.model.client_exec)
    if hosted and algo in ("cse_fsl", "fsl_sage"):
        # CSE-FSL heads are averaged: one shared initialisation; FSL-SAGE estimators
        # are per client, and the server's copy starts equal to the client's.
        act = cut_shape(cfg, data)
        m.client_aux = StackedSegments([
            seeded(lambda: aux_model_for(act, classes), seed, "aux",
                   0 if algo == "cse_fsl" else c)
            for c in hosted])
    if hosted and algo == "locfedmix":
        act = cut_shape(cfg, data)
        m.decoders = StackedSegments([
            seeded(lambda: decoder_for(act, shape), seed, "decoder", c) for c in hosted])
    if algo == "fedavg":
        m.server = m.eval_server = nn.Identity()  # no server segment
        return m
    m.server = m.eval_server = build_server_segment(name, shape, classes, cut, seed)
    if algo == "sfl_v1" and layout.is_server:
        m.server = StackedSegments([build_server_segment(name, shape, classes, cut, seed)
                                    for _ in range(data.num_clients)])  # a copy per client
    if algo == "fsl_sage" and layout.is_server:
        act = cut_shape(cfg, data)
        m.server_aux = nn.ModuleList([
            seeded(lambda: aux_model_for(act, classes), seed, "aux", c)
            for c in range(data.num_clients)])
        m.act_buffers = [ActivationBuffer(cfg.algorithm.buffer_size)
                         for _ in range(data.num_clients)]
    return m
