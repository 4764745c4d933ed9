"""Client execution modes timed: loop vs vmap vs grouped kernels on this machine's device.

    python -m lightning_gapsl.bench --preset exec            # CPU (or the GPU if one is seen)

One timed call = forward + backward of K stacked client segments on (K, B, *in)
inputs, the client side of one PSL step; the median of ``repeats`` calls after
``warmup`` untimed ones. On CPU the clock is this process's CPU time (run it with one
thread: then it is the work done, stable on a shared machine); on CUDA, wall time
after synchronising.
"""

from __future__ import annotations

import statistics
import time

import torch

from lightning_gapsl.models.grouped import grouped_supported
from lightning_gapsl.models.split import build_client_segment
from lightning_gapsl.models.stacked import StackedSegments, resolve_mode

# (model, input shape, cut layer): the LeNet of the CPU benchmarks (MNIST) and the
# ResNet-18 cut after its first stage of the GPU target.
CASES = {
    "lenet_mnist_cut1": ("lenet", (1, 28, 28), 1),
    "resnet18_cifar_cut2": ("resnet18", (3, 32, 32), 2),
}

# (case, K, B) per device: CPU sizes a 2-core machine times in seconds.
EXEC_POINTS = {
    "cpu": [
        ("lenet_mnist_cut1", 20, 32),
        ("lenet_mnist_cut1", 100, 32),
        ("resnet18_cifar_cut2", 4, 32),
    ],
    "cuda": [
        ("lenet_mnist_cut1", 100, 32),
        ("lenet_mnist_cut1", 1000, 32),
        ("resnet18_cifar_cut2", 100, 32),
    ],
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_mode(
    case: str,
    mode: str,
    k: int,
    batch: int,
    device: torch.device,
    repeats: int = 5,
    warmup: int = 2,
) -> float:
    """Median seconds of one forward + backward of ``k`` clients in ``mode``."""
    name, shape, cut = CASES[case]
    segments = [build_client_segment(name, shape, 10, cut, 0, c) for c in range(k)]
    stacked = StackedSegments(segments, mode=mode).to(device)
    x = torch.randn(k, batch, *shape, device=device)
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    times = []
    for i in range(warmup + repeats):
        _sync(device)
        start = clock()
        out = stacked(x)
        out.backward(torch.ones_like(out))
        _sync(device)
        if i >= warmup:
            times.append(clock() - start)
        stacked.zero_grad(set_to_none=True)
    return statistics.median(times)


def bench_exec(device: torch.device, points: list[tuple[str, int, int]], repeats: int = 5) -> dict:
    """ms per forward+backward for every mode at each (case, K, B), and what auto picks."""
    rows = []
    for case, k, batch in points:
        name, shape, cut = CASES[case]
        template = build_client_segment(name, shape, 10, cut, 0, 0)
        row = {"case": case, "clients": k, "batch": batch}
        for mode in ("loop", "vmap", "grouped"):
            row[f"{mode}_ms"] = round(1e3 * time_mode(case, mode, k, batch, device, repeats), 2)
        row["auto_picks"] = resolve_mode(device, grouped_supported(template))
        rows.append(row)
    return {"device": str(device), "threads": torch.get_num_threads(), "rows": rows}
