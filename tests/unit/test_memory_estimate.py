"""The start-up memory bound: counted by hand on a small model, and the refusal names the
keys to change."""

from __future__ import annotations

import pytest
from torch import nn

from lightning_gapsl.checks import ConfigError
from lightning_gapsl.memory_estimate import (
    GIB,
    StepMemory,
    activation_elements,
    check_fits,
    rank_step_memory,
    step_memory,
)


def test_activation_elements_count_every_leaf_output():
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Sequential(nn.Linear(3, 2)))
    assert activation_elements(net, (4,)) == 3 + 3 + 2


def test_step_memory_by_hand():
    client = nn.Linear(4, 3)  # 15 parameters, 3 activations per sample
    server = nn.Linear(3, 2)  # 8 parameters, 2 activations per sample
    sgd = step_memory(
        client,
        server,
        (4,),
        (3,),
        hosted=5,
        num_clients=10,
        batch_size=8,
        is_server=True,
        optimizer="sgd",
    )
    # weights + gradients + momentum: 3 copies of 5 x 15 + 8 parameters, float32
    assert sgd.parameters == 3 * (5 * 15 + 8) * 4
    # 5 clients x 8 samples x 3 through the client, 10 x 8 x 2 through the server
    assert sgd.activations == (5 * 8 * 3 + 10 * 8 * 2) * 4
    adam = step_memory(client, server, (4,), (3,), 5, 10, 8, is_server=False, optimizer="adam")
    assert adam.parameters == 4 * 5 * 15 * 4 and adam.activations == 5 * 8 * 3 * 4


def test_a_run_that_cannot_fit_is_refused_naming_the_keys():
    check_fits(StepMemory(GIB, GIB), 3 * GIB, rank=0)  # fits: nothing raised
    with pytest.raises(
        ConfigError,
        match=r"rank 2 needs at least 2\.0 GiB .* but 1\.0 GiB "
        r"are free; lower data\.batch_size",
    ):
        check_fits(StepMemory(GIB, GIB), GIB, rank=2)


def test_the_bound_of_a_real_run_grows_with_its_clients(compose_cfg):
    from lightning_gapsl.federated import build_federated_data
    from lightning_gapsl.layout import Layout

    cfg = compose_cfg("algorithm=psl", "data.num_clients=6", "trainer.devices=1")
    data = build_federated_data(cfg)
    one = rank_step_memory(cfg, data, Layout(0, 1, 6))
    client_rank = rank_step_memory(cfg, data, Layout(1, 3, 6))  # 3 of the 6 clients
    assert one.total > client_rank.total > 0
