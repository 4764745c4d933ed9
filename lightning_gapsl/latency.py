"""Simulated wall clock (``sim_latency_s``): what a step would take on real devices.

Compute time = FLOPs counted from the models / device speed; link time = counted
payload bytes / bandwidth. Client speeds are spread log-normally around the median
(seeded by run seed and client id, so the same for every layout). A parallel step
waits for its slowest client: max_i(client compute_i + upload_i + download_i) plus the
server's compute on all clients' activations; sequential SL sums the clients' turns.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lightning_gapsl.config import LatencyConfig
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


def parallel_step_latency(
    cfg: LatencyConfig,
    speeds: torch.Tensor,
    client_flops: float,
    server_flops: float,
    up_bytes: float,
    down_bytes: float,
) -> float:
    """Seconds of one parallel step.

    speeds (N,) client FLOP/s; client_flops: FLOPs one client spends in the step;
    server_flops: FLOPs the server spends on all clients; up/down_bytes: per client.
    """
    links = up_bytes * 8 / cfg.uplink_bps + down_bytes * 8 / cfg.downlink_bps
    slowest = (client_flops / speeds + links).max().item()
    return slowest + server_flops / cfg.server_flops


def sequential_step_latency(
    cfg: LatencyConfig,
    speeds: torch.Tensor,
    client_flops: float,
    server_flops_per_client: float,
    up_bytes: float,
    down_bytes: float,
) -> float:
    """Seconds of one sequential (SL) step: the clients' turns add up.

    Per turn: client compute + its links + the server's compute on that client's batch.
    up/down_bytes: per client (activations, gradient, and the segment hand-off).
    """
    links = up_bytes * 8 / cfg.uplink_bps + down_bytes * 8 / cfg.downlink_bps
    turns = client_flops / speeds + links + server_flops_per_client / cfg.server_flops
    return turns.sum().item()
