"""How the cost grows with the number of clients: time per sample and memory vs N.

    python -m lightning_gapsl.bench --preset scaling          # N = 10, 100, 1000 (CPU)
    python -m lightning_gapsl.bench --preset scaling --clients 1000   # one N only

Every point is the real train entry in a process of its own (``python -m
lightning_gapsl.train``, one process, evaluation off), so its peak resident memory
(``VmHWM``, `bench_memory.peak_rss_mib`) is its own. MNIST, LeNet cut 1, IID, batch 32
per client; centralized trains the same model with batch N*32 (the samples of one PSL step). Time per sample is
read from the last of 2 epochs (the first warms up), both as wall time and as the
process's CPU time (one thread per process, so CPU time is the work done: the stable
figure on a machine shared with other jobs). Memory: peak RSS per point, its
slope per client (a line through the smallest and largest N, checked against the
middle point), and the persistent state per client computed from the model (weights,
gradients, optimizer state).

At N = 1000 PSL and GAPSL also run with 10% participation (``participation.fraction=0.1``:
100 clients drawn per step), and the row reports time per step of the 10% run over the
full run's: with partial participation the step's cost should follow the participants,
not N.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time

import torch
from lightning.pytorch.callbacks import Callback

from lightning_gapsl.bench_memory import peak_rss_mib
from lightning_gapsl.methods.gapsl.math import GapslConfig, gapsl_step

# Steps per epoch per N: enough to time, few enough for a 2-core machine (N=1000 is
# 32000 samples per step).
STEPS = {10: 20, 100: 6, 1000: 2}
# N at which PSL and GAPSL also run with a share of the clients per step, and that share.
PARTIAL_AT, PARTIAL_FRACTION = 1000, 0.1
COMMON = [
    "data=mnist",
    "model=lenet",
    "data.partition=iid",
    "logger=none",
    "trainer.progress_bar=false",
    "trainer.eval_every=0",
    "trainer.ckpt_every=0",
    "trainer.devices=1",
    "trainer.max_epochs=2",
    # One thread per process on both sides: on a shared 2-core machine two OpenMP
    # threads spin at every barrier of every small per-client kernel, which measured
    # PSL 10-15x slower than centralized at N=10 under load; one thread is stable.
    "trainer.threads=1",
]


class EpochCpuTimer(Callback):
    """CPU seconds of this process per training epoch (``time.process_time``).

    With one thread per process the CPU time is the work done, so on a machine shared
    with other jobs it stays stable while wall time swings with the load.
    """

    def __init__(self) -> None:
        self.cpu_s: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.process_time()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.cpu_s.append(time.process_time() - self._start)


def measure(overrides: list[str]) -> dict:
    """Inside the point's process: train, return last-epoch samples/s (wall and CPU)."""
    from lightning_gapsl.train import compose, run

    out = tempfile.mkdtemp()
    timer = EpochCpuTimer()
    with open(run(compose(overrides, out), extra_callbacks=[timer])) as f:
        history = json.load(f)["history"]
    last = history[-1]
    steps = last["steps"] - (history[-2]["steps"] if len(history) > 1 else 0)
    return {
        "samples_per_s": last["samples_per_s"],
        # the whole last epoch, evaluation included (the timer spans it too)
        "round_wall_s": last["wall_s"] - (history[-2]["wall_s"] if len(history) > 1 else 0),
        "cpu_samples_per_s": last["samples"] / timer.cpu_s[-1],
        "epoch_wall_s": last["train_s"],
        "epoch_cpu_s": timer.cpu_s[-1],
        "step_wall_s": last["train_s"] / steps,
        "step_cpu_s": timer.cpu_s[-1] / steps,
        "train_loss": last["train_loss"],
    }


def run_point(overrides: list[str], workdir: str, common: list[str] = COMMON) -> dict:
    """One training process: last-epoch samples/s (wall, CPU), peak RSS (MiB), wall s."""
    cmd = [sys.executable, "-m", "lightning_gapsl.bench_scaling", *common, *overrides]
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=workdir
    )
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(overrides)} failed:\n{stderr[-2000:]}")
    return {**json.loads(stdout.strip().splitlines()[-1]), "process_wall_s": wall}


def client_state_bytes(optimizer_slots: int = 1) -> int:
    """Persistent bytes one LeNet cut-1 client costs: weights + gradients + ``optimizer_slots``
    buffers of the same size (SGD momentum: 1; Adam: 2)."""
    from lightning_gapsl.models.split import build_client_segment

    segment = build_client_segment("lenet", (1, 28, 28), 10, 1, 0, 0)
    weights = sum(p.numel() * p.element_size() for p in segment.parameters())
    return weights * (2 + optimizer_slots)


def scaling(clients: tuple[int, ...] = (10, 100, 1000), batch: int = 32) -> dict:
    """The scaling table: one row per N with centralized, PSL and GAPSL (and, at
    ``PARTIAL_AT``, PSL and GAPSL with ``PARTIAL_FRACTION`` of the clients per step)."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in clients:
            rows.append(scaling_row(n, batch, tmp))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return {
        "rows": rows,
        "memory": memory_fit(rows) if len(rows) >= 2 else None,  # a line needs two N
        "client_state_bytes": client_state_bytes(),
        "gapsl_cosine_matrix": [cosine_cost(n) for n in (1000, 10000)],
        "threads_per_process": 1,
        "target_psl_ratio_at_1000": 1.2,
    }


def scaling_row(n: int, batch: int, workdir: str) -> dict:
    """One N: centralized (batch N x ``batch``), PSL and GAPSL, each a process of its own."""
    steps = STEPS.get(n, 2)
    base = [f"data.num_clients={n}", f"data.steps_per_epoch={steps}"]
    central = run_point([*base, "algorithm=centralized", f"data.batch_size={n * batch}"], workdir)
    row = {"clients": n, "steps_per_epoch": steps, "centralized": central}
    for algo in ("psl", "gapsl"):
        point = run_point([*base, f"algorithm={algo}", f"data.batch_size={batch}"], workdir)
        point["time_per_sample_vs_centralized"] = {
            "wall": round(central["samples_per_s"] / point["samples_per_s"], 3),
            "cpu": round(central["cpu_samples_per_s"] / point["cpu_samples_per_s"], 3),
        }
        row[algo] = point
        if n == PARTIAL_AT:
            share = f"participation.fraction={PARTIAL_FRACTION}"
            part = run_point(
                [*base, f"algorithm={algo}", f"data.batch_size={batch}", share], workdir
            )
            part["fraction"] = PARTIAL_FRACTION
            part["time_per_step_vs_full"] = step_time_ratio(part, point)
            row[f"{algo}_partial"] = part
    return row


def step_time_ratio(part: dict, full: dict) -> dict:
    """Time per step of the partial-participation point over the full one's, wall and CPU
    (0.1 = a tenth of the time: the step costs what its participants cost)."""
    return {
        "wall": round(part["step_wall_s"] / full["step_wall_s"], 3),
        "cpu": round(part["step_cpu_s"] / full["step_cpu_s"], 3),
    }


def memory_fit(rows: list[dict]) -> dict:
    """Per-method RSS line through the smallest and largest N; the middle point's error."""
    fit = {}
    for algo in ("centralized", "psl", "gapsl"):
        first, last = rows[0], rows[-1]
        slope = (last[algo]["peak_rss_mib"] - first[algo]["peak_rss_mib"]) / (
            last["clients"] - first["clients"]
        )
        base = first[algo]["peak_rss_mib"] - slope * first["clients"]
        mids = [
            {
                "clients": r["clients"],
                "measured_mib": round(r[algo]["peak_rss_mib"], 1),
                "line_mib": round(base + slope * r["clients"], 1),
            }
            for r in rows[1:-1]
        ]
        fit[algo] = {
            "mib_per_client": round(slope, 3),
            "intercept_mib": round(base, 1),
            "middle_points": mids,
        }
    return fit


def cosine_cost(n: int, dim: int = 1568, repeats: int = 3) -> dict:
    """GAPSL's per-step server work on an (N, D) gradient matrix: `gapsl_step` (cosine
    matrix, leaders, EMA, alignment). D = 1568 is the cut reading's per-client gradient
    for LeNet cut 1 on MNIST (8 x 14 x 14); the client reading's D is 224."""
    g = torch.randn(n, dim, generator=torch.Generator().manual_seed(0))
    cfg = GapslConfig(rho=0.5, tau=None, normalize_leader=False, beta=0.9, lam=1.0, mode="norm")
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        gapsl_step(g, None, cfg)
        times.append(time.perf_counter() - start)
    return {
        "clients": n,
        "dim": dim,
        "seconds": round(sorted(times[1:])[len(times[1:]) // 2], 4),
        "matrix_mib": round(n * n * 4 / 2**20, 1),
    }


def main() -> None:
    """One point in a process of its own: JSON with samples/s and peak RSS on stdout."""
    point = measure(sys.argv[1:])
    usage = resource.getrusage(resource.RUSAGE_SELF)
    point["peak_rss_mib"] = peak_rss_mib()
    point["process_cpu_s"] = usage.ru_utime + usage.ru_stime
    print(json.dumps(point))


if __name__ == "__main__":
    main()
