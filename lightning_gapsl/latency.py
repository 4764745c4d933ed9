"""Simulated wall clock (``sim_latency_s``): what a step would take on real devices.

Compute time = FLOPs counted from the models / device speed; link time = counted
payload bytes / bandwidth. Each client's device (`Devices`) comes from a trace file
(``latency.trace``, `lightning_gapsl.device_trace`) or from the model: speeds spread
log-normally around the median (seeded by run seed and client id, so the same for every
layout) and one bandwidth each way for all. A parallel step waits for its slowest
client: max_i(client compute_i + upload_i + download_i) plus the server's compute on all
clients' activations; sequential SL sums the clients' turns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lightning_gapsl.config import LatencyConfig
from lightning_gapsl.device_trace import load_trace
from lightning_gapsl.seeding import generator

# Training costs about three forwards: the forward, and a backward with two matmul-sized
# products (gradient w.r.t. inputs and w.r.t. weights) per layer.
TRAIN_FLOPS_PER_FORWARD = 3.0


def forward_flops(module: nn.Module, input_shape: tuple[int, ...]) -> float:
    """FLOPs of one forward of ``module`` on one sample of ``input_shape``."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(torch.zeros(1, *input_shape))
    return float(counter.get_total_flops())


def client_speeds(cfg: LatencyConfig, num_clients: int, seed: int) -> torch.Tensor:
    """FLOP/s of each client (N,): median ``client_flops``, log-normal spread ``client_hetero``."""
    speeds = []
    for c in range(num_clients):
        z = torch.randn(1, generator=generator(seed, "latency", c)).item()
        speeds.append(cfg.client_flops * math.exp(cfg.client_hetero * z))
    return torch.tensor(speeds, dtype=torch.float64)


@dataclass(frozen=True)
class Devices:
    """Each client's device, float64 ``(N,)`` each (or ``(k,)`` after `of`)."""

    flops: torch.Tensor  # FLOP/s
    uplink_bps: torch.Tensor  # bits/s, client -> server
    downlink_bps: torch.Tensor  # bits/s, server -> client

    def of(self, clients: torch.Tensor) -> Devices:
        """The devices of ``clients``, an (N,) bool mask, in id order."""
        return Devices(self.flops[clients], self.uplink_bps[clients], self.downlink_bps[clients])

    def link_seconds(self, up_bytes: float, down_bytes: float) -> torch.Tensor:
        """(k,) seconds each client spends sending ``up_bytes`` and receiving ``down_bytes``."""
        return up_bytes * 8 / self.uplink_bps + down_bytes * 8 / self.downlink_bps


def client_devices(cfg: LatencyConfig, num_clients: int, seed: int) -> Devices:
    """Clients 0..N-1: from ``cfg.trace`` if set, else `client_speeds` and the configured
    bandwidths, the same for every client."""
    f64 = torch.float64
    if cfg.trace is not None:
        trace = load_trace(cfg.trace, num_clients)
        return Devices(
            torch.tensor(trace.flops, dtype=f64),
            torch.tensor(trace.uplink_bps, dtype=f64),
            torch.tensor(trace.downlink_bps, dtype=f64),
        )
    return Devices(
        client_speeds(cfg, num_clients, seed),
        torch.full((num_clients,), cfg.uplink_bps, dtype=f64),
        torch.full((num_clients,), cfg.downlink_bps, dtype=f64),
    )


def parallel_step_latency(
    cfg: LatencyConfig,
    devices: Devices,
    client_flops: float,
    server_flops: float,
    up_bytes: float,
    down_bytes: float,
) -> float:
    """Seconds of one parallel step.

    devices: the k clients taking part; client_flops: FLOPs one client spends in the
    step; server_flops: FLOPs the server spends on all of them; up/down_bytes: per client.
    """
    per_client = client_flops / devices.flops + devices.link_seconds(up_bytes, down_bytes)  # (k,)
    return per_client.max().item() + server_flops / cfg.server_flops


def sequential_step_latency(
    cfg: LatencyConfig,
    devices: Devices,
    client_flops: float,
    server_flops_per_client: float,
    up_bytes: float,
    down_bytes: float,
) -> float:
    """Seconds of one sequential (SL) step: the clients' turns add up.

    Per turn: client compute + its links + the server's compute on that client's batch.
    up/down_bytes: per client (activations, gradient, and the segment hand-off).
    """
    links = devices.link_seconds(up_bytes, down_bytes)  # (k,)
    turns = client_flops / devices.flops + links + server_flops_per_client / cfg.server_flops
    return turns.sum().item()
