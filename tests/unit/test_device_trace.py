"""Unit tests (milliseconds, a few builds of a digits state): device and availability
traces (``latency.trace``) on values checkable by hand.

The trace's speeds and bandwidths feed the latency model (a parallel step waits for its
slowest client) and the deadline; its windows drop exactly the clients outside them;
a trace holding the default model's values gives the default model's numbers.
"""

from __future__ import annotations

import json
import re

import pytest
import torch

from lightning_gapsl.checks import ConfigError
from lightning_gapsl.config import LatencyConfig
from lightning_gapsl.data.participation import Draws, covers, online
from lightning_gapsl.device_trace import load_trace
from lightning_gapsl.federated import build_federated_data
from lightning_gapsl.latency import (
    Devices,
    client_devices,
    client_speeds,
    parallel_step_latency,
    sequential_step_latency,
)
from lightning_gapsl.layout import Layout
from lightning_gapsl.methods import get_method
from lightning_gapsl.methods.base import (
    draw_compute_seconds,
    step_cost,
    step_latency_model,
    with_defaults,
)

N = 3


def write_trace(path, flops, up, down, available=None) -> str:
    """A trace file of clients 0..len(flops)-1; ``available``: id -> windows."""
    clients = [
        {"id": i, "flops": f, "uplink_bps": u, "downlink_bps": d}
        for i, (f, u, d) in enumerate(zip(flops, up, down, strict=True))
    ]
    for i, windows in (available or {}).items():
        clients[i]["available"] = windows
    path.write_text(json.dumps({"clients": clients[::-1]}))  # any order: ids decide
    return str(path)


def _f64(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_a_trace_is_read_in_id_order_and_extra_ids_are_ignored(tmp_path) -> None:
    path = write_trace(
        tmp_path / "t.json", [1e9, 2e9, 4e9], [1e6, 2e6, 3e6], [5e6, 6e6, 7e6], {1: [[0, 4]]}
    )
    trace = load_trace(path, 2)  # a 3-device trace for 2 clients: its first two
    assert trace.flops == (1e9, 2e9) and trace.uplink_bps == (1e6, 2e6)
    assert trace.downlink_bps == (5e6, 6e6)
    assert trace.available == (None, ((0, 4),)) and trace.has_windows
    assert not load_trace(path, 1).has_windows  # client 0 has no windows: always online


def test_parallel_step_waits_for_the_slowest_client_by_hand() -> None:
    cfg = LatencyConfig(server_flops=1e12)
    devices = Devices(_f64(1e9, 2e9, 4e9), _f64(1e6, 1e6, 1e5), _f64(1e7, 1e7, 1e7))
    # 1e9 FLOPs, 1000 bytes up (8000 bits), 100 bytes down (800 bits) per client:
    # client 0: 1.0 + 0.008 + 0.00008; client 1: 0.5 + 0.008 + 0.00008;
    # client 2: 0.25 + 0.08 + 0.00008. The slowest is client 0; the server adds 1e12 / 1e12.
    got = parallel_step_latency(cfg, devices, 1e9, 1e12, 1000, 100)
    assert got == pytest.approx(1.00808 + 1.0, rel=1e-12)
    # Without client 0, client 1 (0.50808 s) is the slowest.
    rest = devices.of(torch.tensor([False, True, True]))
    assert parallel_step_latency(cfg, rest, 1e9, 0.0, 1000, 100) == pytest.approx(0.50808)
    # Sequential: the turns add up, each with the server's share (1e9 / 1e12 s).
    turns = 1.00808 + 0.50808 + 0.33008 + 3 * 1e-3
    assert sequential_step_latency(cfg, devices, 1e9, 1e9, 1000, 100) == pytest.approx(turns)


def _state(compose_cfg, *overrides: str):
    cfg = compose_cfg(*overrides, "algorithm=psl", f"data.num_clients={N}", "trainer.devices=1")
    method = with_defaults(get_method("psl"))
    return method, method.build(cfg, build_federated_data(cfg), Layout(0, 1, N))


def test_a_step_with_trace_devices_costs_the_hand_computed_max(compose_cfg, tmp_path) -> None:
    flops, up, down = [1e9, 3e9, 2e9], [1e6, 1e5, 1e6], [1e7, 1e7, 1e6]
    trace = write_trace(tmp_path / "t.json", flops, up, down)
    method, state = _state(compose_cfg, f"latency.trace={trace}")
    cost = step_cost(method, state)
    # 3 clients, 3000 bytes up and 300 down in all: 1000 / 100 bytes per client.
    per_client = [
        cost.client / f + 8000 / u + 800 / d for f, u, d in zip(flops, up, down, strict=True)
    ]
    expected = max(per_client) + cost.server / state.cfg.latency.server_flops
    assert step_latency_model(method, state)(3000, 300) == pytest.approx(expected, rel=1e-12)
    # The deadline's measure: FLOPs per step / the trace's speeds.
    want = _f64(*(cost.client / f for f in flops))
    assert torch.allclose(draw_compute_seconds(method, state), want, rtol=1e-12)


def test_a_trace_of_the_default_model_gives_the_default_numbers(compose_cfg, tmp_path) -> None:
    cfg = LatencyConfig()
    speeds = client_speeds(cfg, N, 0).tolist()  # the log-normal model of seed 0
    trace = write_trace(tmp_path / "t.json", speeds, [cfg.uplink_bps] * N, [cfg.downlink_bps] * N)
    default = step_latency_model(*_state(compose_cfg))
    traced = step_latency_model(*_state(compose_cfg, f"latency.trace={trace}"))
    some = torch.tensor([True, False, True])
    for up, down, active in ((3000, 300, None), (2000, 200, some), (7, 5, None)):
        assert traced(up, down, active) == default(up, down, active)  # exactly
    devices = client_devices(LatencyConfig(trace=trace), N, 0)
    assert torch.equal(devices.flops, client_speeds(cfg, N, 0))


def test_union_of_windows_covers_a_draw_only_without_a_gap() -> None:
    assert covers(None, 5, 9)  # no windows: always online
    assert not covers((), 0, 1)  # []: never online
    assert covers(((0, 2),), 1, 2) and not covers(((0, 2),), 1, 3)  # [start, end)
    assert covers(((3, 5), (1, 3)), 1, 5)  # abutting windows, any order
    assert not covers(((0, 2), (3, 5)), 1, 4)  # step 2 is missing
    assert online([None, ((0, 1),), ()], 0, 1).tolist() == [True, True, False]


def test_availability_drops_exactly_the_clients_outside_their_windows() -> None:
    windows = (None, ((0, 2),), (), ((1, 3), (3, 5)))
    every_step = Draws(seed=0, num_clients=4, count=4, per=1, windows=windows)
    offline = {s: every_step.draw(s).offline.nonzero().flatten().tolist() for s in range(6)}
    assert offline == {0: [2, 3], 1: [2], 2: [1, 2], 3: [1, 2], 4: [1, 2], 5: [1, 2, 3]}
    for s in range(6):  # offline clients deliver nothing; the others all deliver
        d = every_step.draw(s)
        assert torch.equal(d.delivering, ~d.offline) and not d.dropped.any()
    # Rounds of 2 steps: online only when both of the round's steps are covered.
    rounds = Draws(seed=0, num_clients=4, count=4, per=2, windows=windows)
    assert rounds.draw(0).offline.tolist() == [False, False, True, True]  # steps 0-1
    assert rounds.draw(3).offline.tolist() == [False, True, True, False]  # steps 2-3


def test_offline_clients_are_not_counted_again_as_dropouts_or_late() -> None:
    windows = (None, (), None, ())
    draws = Draws(0, 4, 4, 1, dropout=0.5, deadline_s=1.0, times_s=_f64(2, 2, 0.5, 0.5))
    with_trace = Draws(0, 4, 4, 1, 0.5, 1.0, _f64(2, 2, 0.5, 0.5), windows)
    for s in range(5):
        plain, d = draws.draw(s), with_trace.draw(s)
        assert d.offline.tolist() == [False, True, False, True]
        assert torch.equal(d.dropped, plain.dropped & ~d.offline)  # same draw of fates
        assert not (d.offline & (d.dropped | d.late)).any()  # each counted once


@pytest.mark.parametrize(
    "text, message",
    [
        (None, "no such file"),
        ("{not json", "is not a readable JSON file"),
        ('{"devices": []}', "is not a device trace: it needs"),
        ('{"clients": [{"id": 0, "flops": 1, "uplink_bps": 1, "downlink_bps": 1}]}', "ids 1, 2"),
        ('{"clients": [{"id": 0}, {"id": 0}]}', "client id 0 appears twice"),
        ('{"clients": [{"id": "a"}]}', "entry 0 has id='a'"),
    ],
)
def test_a_bad_trace_names_the_key_and_what_is_valid(tmp_path, text, message) -> None:
    path = tmp_path / "t.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        load_trace(str(path), 3)
    assert str(err.value).startswith(f"latency.trace={path}")


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("flops", 0, "client 1 has flops=0; it must be a finite number > 0 (FLOP/s)"),
        ("uplink_bps", -1e6, "client 1 has uplink_bps=-1000000.0; it must be a finite number"),
        ("downlink_bps", None, "client 1 has downlink_bps=None"),
        ("available", [[3, 3]], "client 1 has available=[[3, 3]]; give a list of [start, end]"),
        ("available", [[0, 2.5]], "with 0 <= start < end"),
    ],
)
def test_a_bad_client_entry_names_the_client(tmp_path, field, value, message) -> None:
    path = write_trace(tmp_path / "t.json", [1e9] * 3, [1e6] * 3, [1e7] * 3)
    record = json.loads(open(path).read())
    next(c for c in record["clients"] if c["id"] == 1)[field] = value
    (tmp_path / "t.json").write_text(json.dumps(record))
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_trace(path, 3)
