"""FedAvg of client segments across ranks (SplitFed, FedAvg and friends).

Each rank sums its hosted clients' parameters weighted by data size, one all-reduce
adds the sums of all ranks (the server rank adds zeros when it hosts no client), and
every hosted client gets the average. Sums are taken in float64 so the result does not
depend on how clients are grouped per rank (float32 partial sums would round
differently for 20 clients in one process than for 2 x 10).

Communication is counted as the method would spend it between real devices: every
client uploads its segment and downloads the average (N x P parameters each way),
whatever the physical route of the collective.
"""

from __future__ import annotations

import torch

from lightning_gapsl.models.stacked import StackedSegments


def fedavg_clients_(
    clients: StackedSegments | None,
    hosted_weights: torch.Tensor,
    template: dict[str, torch.Size],
    transport,
    count_bytes: bool = True,
) -> None:
    """Set every hosted client's parameters to the size-weighted average over all clients.

    clients: this rank's stacked segments (None on a dedicated server rank);
    hosted_weights: (K,) data sizes of the hosted clients; template: parameter name ->
    per-client shape, identical on every rank (fixes the order of the flat vector).
    """
    sizes = [shape.numel() for shape in template.values()]
    total = sum(sizes)
    flat = torch.zeros(total + 1, dtype=torch.float64, device=transport_device(transport))
    if clients is not None:
        stacked = clients.stacked_params()
        w = hosted_weights.to(flat.device, torch.float64)  # (K,)
        parts = [torch.einsum("k,kd->d", w, stacked[n].detach().flatten(1).double())
                 for n in template]
        flat[:total] = torch.cat(parts)
        flat[total] = w.sum()
    transport.all_reduce_sum_(flat)
    average = flat[:total] / flat[total]
    if clients is not None:
        with torch.no_grad():
            offset = 0
            for (name, shape), size in zip(template.items(), sizes):
                param = clients.stacked_params()[name]
                value = average[offset : offset + size].view(shape).to(param.dtype)
                param.copy_(value.unsqueeze(0).expand_as(param))
                offset += size
    if count_bytes and transport.layout.is_server:
        n, bytes_each = transport.layout.num_clients, total * 4  # float32 parameters
        transport.counter.bytes_up += n * bytes_each
        transport.counter.bytes_down += n * bytes_each


def transport_device(transport) -> torch.device:
    return getattr(transport, "device", torch.device("cpu"))


def round_ends(step: int, round_steps: int) -> bool:
    """True after the last step of a round (rounds of ``round_steps`` steps from step 0)."""
    return (step + 1) % round_steps == 0
