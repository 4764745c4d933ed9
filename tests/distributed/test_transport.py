"""Distributed tests (seconds): the torch.distributed transport on 3 gloo ranks (fork),
compared with the in-process transport. One launch checks several things."""

from __future__ import annotations

import os
import time

import pytest
import torch

from lightning_gapsl.layout import Layout
from lightning_gapsl.transport import DistTransport, LocalTransport, TransportError
from tests.distributed.launch import run_ranks

pytestmark = pytest.mark.slow

NUM_CLIENTS = 5  # over 2 client ranks: blocks [0, 1, 2] and [3, 4]
B, F = 2, 3


def _rows(client_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Hand-checkable rows: client c's activations are all c + 0.5, labels all c."""
    acts = torch.tensor(client_ids, dtype=torch.float32).view(-1, 1, 1) + 0.5
    acts = acts.expand(-1, B, F).contiguous()  # (K, B, F)
    labels = torch.tensor(client_ids).view(-1, 1).expand(-1, B).contiguous()  # (K, B)
    return acts, labels


def _exchange(transport) -> dict:
    """Gather, scatter back doubled rows, all-gather metrics, broadcast: report results."""
    hosted = transport.layout.hosted
    acts, labels = _rows(hosted)
    got = transport.gather(7, "activations", [acts, labels] if hosted else [])
    doubled = [got[0] * 2] if transport.layout.is_server else None
    back = transport.scatter(7, "grads", doubled)
    metrics = transport.all_gather_rows(torch.tensor([[float(c)] for c in hosted]).view(-1, 1))
    weights = torch.arange(4.0) if transport.layout.is_server else torch.zeros(4)
    transport.broadcast_(weights)
    return {
        "gathered": [t.clone() for t in got] if got else None,
        "back": back[0].clone() if hosted else None,
        "metrics": metrics.flatten().tolist(),
        "weights": weights.tolist(),
        "bytes": (transport.counter.bytes_up, transport.counter.bytes_down),
    }


def _dist_checks(rank: int, world_size: int) -> dict:
    transport = DistTransport(Layout(rank, world_size, NUM_CLIENTS), torch.device("cpu"), 20)
    result = _exchange(transport)
    # Out of lockstep: client rank 2 sends step 9 while the server expects step 8.
    step = 9 if rank == 2 else 8
    hosted = transport.layout.hosted
    try:
        transport.gather(step, "activations", list(_rows(hosted)) if hosted else [])
        result["lockstep"] = None
    except TransportError as err:
        result["lockstep"] = str(err)
    return result


def test_dist_transport_matches_local_and_checks_headers():
    local = _exchange(LocalTransport(Layout(0, 1, NUM_CLIENTS)))
    results = run_ranks(3, _dist_checks)
    assert all(status == "ok" for status, _ in results.values()), results
    server = results[0][1]
    # The server received every client's rows in client-id order, as in-process.
    for got, ref in zip(server["gathered"], local["gathered"], strict=False):
        assert torch.equal(got, ref)
    # Each client rank got back exactly its own clients' rows.
    assert torch.equal(results[1][1]["back"], local["back"][0:3])
    assert torch.equal(results[2][1]["back"], local["back"][3:5])
    for rank in range(3):
        assert results[rank][1]["metrics"] == [0.0, 1.0, 2.0, 3.0, 4.0]
        assert results[rank][1]["weights"] == [0.0, 1.0, 2.0, 3.0]
    # Bytes by hand: up = 5 clients * (B*F float32 + B int64) = 5 * (24 + 16) = 200;
    # down = 5 * B*F float32 = 120. Counted on the server, identical in-process.
    assert server["bytes"] == local["bytes"] == (200, 120)
    # The server noticed that rank 2 is a step ahead and said so.
    assert "rank 2" in server["lockstep"] and "lockstep" in server["lockstep"]


def _dead_peer(rank: int, world_size: int) -> dict:
    transport = DistTransport(Layout(rank, world_size, NUM_CLIENTS), torch.device("cpu"), 10)
    if rank == 2:
        os._exit(3)  # a client rank dies without a word
    hosted = transport.layout.hosted
    start = time.time()
    try:
        transport.gather(0, "activations", list(_rows(hosted)) if hosted else [])
        transport.scatter(0, "grads", [torch.zeros(NUM_CLIENTS, B, F)] if rank == 0 else None)
        return {"error": None}
    except TransportError as err:
        return {"error": str(err), "seconds": time.time() - start}


def test_dead_rank_is_named_within_timeout():
    results = run_ranks(3, _dead_peer, timeout=40)
    assert 2 not in results  # it died before reporting
    status, server = results[0]
    assert status == "ok" and server["error"] is not None, results
    assert "rank 2" in server["error"] and server["seconds"] < 15


def _fedavg(rank: int, world_size: int) -> dict:
    from lightning_gapsl.methods.rounds import fedavg_stacked_
    from lightning_gapsl.models.stacked import StackedSegments

    layout = Layout(rank, world_size, NUM_CLIENTS)
    transport = (
        DistTransport(layout, torch.device("cpu"), 20) if world_size > 1 else LocalTransport(layout)
    )
    # Client c's segment: a 2x3 linear layer whose weights are all c, bias all 10 c.
    segments = []
    for c in layout.hosted:
        seg = torch.nn.Linear(3, 2)
        torch.nn.init.constant_(seg.weight, float(c))
        torch.nn.init.constant_(seg.bias, 10.0 * c)
        segments.append(seg)
    stacked = StackedSegments(segments) if segments else None
    sizes = torch.tensor([1.0, 1.0, 2.0, 2.0, 4.0])  # data sizes of clients 0..4
    template = {"weight": torch.Size([2, 3]), "bias": torch.Size([2])}
    fedavg_stacked_(stacked, sizes[layout.hosted] if stacked else None, template, transport)
    return {
        "states": [stacked.segment_state(k) for k in range(len(layout.hosted))] if stacked else [],
        "bytes": (transport.counter.bytes_up, transport.counter.bytes_down),
    }


def test_fedavg_across_ranks_equals_weighted_average():
    expected = (0 * 1 + 1 * 1 + 2 * 2 + 3 * 2 + 4 * 4) / 10  # = 2.7
    local = _fedavg(0, 1)
    results = run_ranks(3, _fedavg)
    assert all(status == "ok" for status, _ in results.values()), results
    states = local["states"] + results[1][1]["states"] + results[2][1]["states"]
    assert len(states) == 2 * NUM_CLIENTS  # 5 in-process + 3 + 2 over two client ranks
    for state in states:  # every client now holds the weighted average
        assert torch.allclose(state["weight"], torch.full((2, 3), expected))
        assert torch.allclose(state["bias"], torch.full((2,), 10 * expected))
    # Each of 5 clients uploads and downloads 8 float32 parameters: 5 * 32 bytes each way.
    assert local["bytes"] == results[0][1]["bytes"] == (160, 160)
