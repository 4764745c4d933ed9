"""Distributed tests (about a minute): partial participation through the real runtime.

PSL and FedAvg on digits with 5 clients: only the drawn clients' parameters move and
only their bytes are counted; 1 process and 3 gloo ranks (blocks of 3 and 2 clients)
agree; dropouts, the deadline and a device trace's availability windows drop exactly
the clients their rules name.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from lightning_gapsl.data.participation import dropouts, sample_participants
from lightning_gapsl.train import run
from tests.conftest import load_summary

pytestmark = pytest.mark.slow

COMMON = ["data.num_clients=5", "trainer.threads=1", "data.val_fraction=0", "seed=3"]
ONE_STEP = ["trainer.max_epochs=1", "data.steps_per_epoch=1", "trainer.devices=1"]


def _summary(compose_cfg, name: str, *overrides: str) -> dict:
    return load_summary(run(compose_cfg(*COMMON, *overrides, name=name)))


def _client_rows(compose_cfg, name: str) -> torch.Tensor:
    """(N, P) every client's segment parameters after the run, from its checkpoint."""
    ckpt = torch.load(
        compose_cfg(name=name).output_dir + "/checkpoints/last.ckpt",
        weights_only=False,
        map_location="cpu",
    )
    rows = [v.flatten(1) for k, v in ckpt["state_dict"].items() if k.startswith("models.clients.")]
    return torch.cat(rows, dim=1)


def test_only_the_drawn_clients_move_and_send(compose_cfg) -> None:
    part = sample_participants(3, 0, 5, 2)  # step 0's two participants, by hand
    full = _summary(compose_cfg, "full", "algorithm=psl", *ONE_STEP)
    two = _summary(compose_cfg, "two", "algorithm=psl", *ONE_STEP, "participation.clients=2")
    rows = _client_rows(compose_cfg, "two")  # (5, P); every client started as one copy
    start = rows[~part][0]
    assert all(torch.equal(r, start) for r in rows[~part])  # idle: untouched
    assert all(not torch.equal(r, start) for r in rows[part])  # drawn: stepped
    # Activations up and gradients down scale with the participants exactly.
    assert two["bytes_up"] * 5 == full["bytes_up"] * 2 and two["bytes_up"] > 0
    assert two["bytes_down"] * 5 == full["bytes_down"] * 2
    assert two["history"][0]["participants"] == 2
    assert two["samples_per_s"] is not None


ROUNDS_OF_TWO = ["algorithm.rounds=lockstep", "algorithm.round_steps=2"]
EXTRA = {"fedavg": ROUNDS_OF_TWO, "sfl_v2": ["algorithm.turns=batch", *ROUNDS_OF_TWO]}
EXTRA["sl"] = ["algorithm.turns=batch", "optim=sgd"]


@pytest.mark.parametrize("method", ["psl", "gapsl", "fedavg", "epsl", "sglr", "sl", "sfl_v2"])
def test_one_process_equals_three_with_partial_participation(compose_cfg, method) -> None:
    extra = ["data.steps_per_epoch=6", *EXTRA.get(method, [])]
    common = [
        f"algorithm={method}",
        "trainer.max_epochs=2",
        *extra,
        "participation.fraction=0.6",
        "participation.dropout=0.25",
    ]
    one = _summary(compose_cfg, "one", *common, "trainer.devices=1")
    three = _summary(compose_cfg, "three", *common, "trainer.devices=3")
    assert three["devices"] == 3
    for h1, h3 in zip(one["history"], three["history"], strict=True):
        for key in ("train_loss", "test_acc_mean", "test_acc_min"):
            assert math.isclose(h1[key], h3[key], abs_tol=1e-5), (method, key, h1[key], h3[key])
        for key in ("bytes_up", "bytes_down", "participants", "dropped_dropout"):
            assert h1[key] == h3[key], (method, key)
    # 3 of 5 per draw; the averaging methods draw once per 2-step round, the PSL family
    # and SL's one-batch turns every step.
    draws = 6 if method in ("fedavg", "sfl_v2") else 12
    assert sum(h["participants"] for h in one["history"]) == 3 * draws
    expected = sum(
        int(dropouts(3, i, sample_participants(3, i, 5, 3), 0.25).sum()) for i in range(draws)
    )
    assert sum(h["dropped_dropout"] for h in one["history"]) == expected


def test_sl_turns_pass_the_segment_only_among_the_drawn_clients(compose_cfg) -> None:
    """One-batch SL turns: A bytes up per turn, H per hand-off (from the last client that
    trained, across steps). 2 steps of 1 drawn client each: 2 turns, and a hand-off only if
    the two draws differ; 1 step of 2: 2 turns, 1 hand-off; all 5: 5 turns, 4 hand-offs."""
    base = ["algorithm=sl", "algorithm.turns=batch", "optim=sgd", "trainer.max_epochs=1"]
    base += ["trainer.devices=1"]

    def up(steps: int, *extra: str) -> int:
        name = f"sl{steps}{len(extra)}{extra[-1][-1] if extra else ''}"
        return _summary(compose_cfg, name, *base, f"data.steps_per_epoch={steps}", *extra)[
            "bytes_up"
        ]

    one, two, full = up(1, "participation.clients=1"), up(1, "participation.clients=2"), up(1)
    hand_off = two - 2 * one
    assert hand_off > 0 and full == 5 * one + 4 * hand_off
    first, second = (int(sample_participants(3, i, 5, 1).nonzero()) for i in (0, 1))
    assert up(2, "participation.clients=1") == 2 * one + hand_off * (first != second)


def test_fedavg_counts_only_the_participants_uploads(compose_cfg) -> None:
    base = [
        "algorithm=fedavg",
        "algorithm.rounds=lockstep",
        "algorithm.round_steps=2",
        "data.steps_per_epoch=2",
        "trainer.max_epochs=1",
        "trainer.devices=1",
    ]
    full = _summary(compose_cfg, "full", *base)
    two = _summary(compose_cfg, "two", *base, "participation.clients=2")
    assert two["bytes_up"] * 5 == full["bytes_up"] * 2 > 0  # k x P parameters up
    rows = _client_rows(compose_cfg, "two")  # after the round every client holds the mean
    assert all(torch.equal(r, rows[0]) for r in rows)


def test_deadline_drops_exactly_the_slow_clients(compose_cfg) -> None:
    from lightning_gapsl.config import LatencyConfig
    from lightning_gapsl.latency import client_speeds

    speeds = client_speeds(LatencyConfig(), 5, 3)  # (5,) FLOP/s of the seeded model
    # Every client's per-step compute is the same FLOPs, so time ranks by speed: a
    # deadline between the 2nd and 3rd slowest times drops exactly the 2 slowest.
    base = ["algorithm=psl", *ONE_STEP]
    ref = _summary(compose_cfg, "ref", *base)
    flops = _step_client_flops(compose_cfg)
    times = (flops / speeds).sort().values  # (5,) ascending
    deadline = float((times[2] + times[3]) / 2)
    late = _summary(compose_cfg, "late", *base, f"participation.deadline_s={deadline}")
    assert late["history"][0]["dropped_deadline"] == 2
    assert late["bytes_up"] * 5 == ref["bytes_up"] * 3
    rows = _client_rows(compose_cfg, "late")
    slow = (flops / speeds) > deadline  # (5,)
    start = rows[slow][0]
    assert all(torch.equal(r, start) for r in rows[slow])
    assert all(not torch.equal(r, start) for r in rows[~slow])


def _step_client_flops(compose_cfg) -> float:
    """One client's training FLOPs per PSL step, from the method's own cost model."""
    from lightning_gapsl.federated import build_federated_data
    from lightning_gapsl.layout import Layout
    from lightning_gapsl.methods import get_method
    from lightning_gapsl.methods.base import step_cost

    cfg = compose_cfg(*COMMON, "algorithm=psl", *ONE_STEP, name="cost")
    data = build_federated_data(cfg)
    method = get_method("psl")
    state = method.build(cfg, data, Layout(rank=0, world_size=1, num_clients=5))
    return step_cost(method, state).client


# Availability windows [start, end) of global steps for 5 clients over 2 epochs of 3
# steps. Offline per step: 0: {2, 3}; 1: {2, 3, 4}; 2: {2, 4}; 3: {1, 2, 4}; 4: {1, 2};
# 5: {1, 2}, so 7 dropped in each epoch.
WINDOWS = {1: [[0, 3]], 2: [], 3: [[2, 6]], 4: [[0, 1], [4, 6]]}


def _trace(path, flops, up, down, windows) -> str:
    clients = [
        {"id": i, "flops": f, "uplink_bps": u, "downlink_bps": d}
        for i, (f, u, d) in enumerate(zip(flops, up, down, strict=True))
    ]
    for i, w in windows.items():
        clients[i]["available"] = w
    path.write_text(json.dumps({"clients": clients}))
    return str(path)


def test_device_trace_default_values_and_availability_in_any_layout(compose_cfg, tmp_path):
    """A trace of the default model's values changes no number; a trace with its own
    speeds and windows gives the same numbers in 1 process and in 3."""
    from lightning_gapsl.config import LatencyConfig
    from lightning_gapsl.latency import client_speeds

    lat = LatencyConfig()
    base = ["algorithm=psl", "trainer.max_epochs=2", "data.steps_per_epoch=3"]
    same = _trace(
        tmp_path / "same.json",
        client_speeds(lat, 5, 3).tolist(),
        [lat.uplink_bps] * 5,
        [lat.downlink_bps] * 5,
        {},
    )
    default = _summary(compose_cfg, "default", *base, "trainer.devices=1")
    traced = _summary(compose_cfg, "same", *base, "trainer.devices=1", f"latency.trace={same}")
    for h0, h1 in zip(default["history"], traced["history"], strict=True):
        for key in ("train_loss", "test_acc_mean", "bytes_up", "bytes_down", "sim_latency_s"):
            assert h0[key] == h1[key], key
    assert "participants" not in traced["history"][0]  # no windows: no participation draws

    own = _trace(tmp_path / "own.json", [2e9, 5e9, 1e9, 8e9, 3e9], [1e6] * 5, [1e7] * 5, WINDOWS)
    runs = {
        d: _summary(compose_cfg, f"own{d}", *base, f"trainer.devices={d}", f"latency.trace={own}")
        for d in (1, 3)
    }
    assert runs[3]["devices"] == 3
    for h1, h3 in zip(runs[1]["history"], runs[3]["history"], strict=True):
        for key in ("train_loss", "test_acc_mean", "test_acc_min"):
            assert math.isclose(h1[key], h3[key], abs_tol=1e-5), (key, h1[key], h3[key])
        for key in ("bytes_up", "bytes_down", "participants", "dropped_unavailable"):
            assert h1[key] == h3[key], key
        assert math.isclose(h1["sim_latency_s"], h3["sim_latency_s"], rel_tol=1e-12)
    assert [h["dropped_unavailable"] for h in runs[1]["history"]] == [7, 7]
    assert [h["participants"] for h in runs[1]["history"]] == [15, 15]
    # 30 client-steps minus the 14 offline ones trained: bytes scale with them.
    assert runs[1]["bytes_up"] * 30 == default["bytes_up"] * 16
    assert runs[1]["sim_latency_s"] != default["sim_latency_s"]  # the trace's own speeds
