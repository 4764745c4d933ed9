"""SplitFed V1 as the plain serial loop that reference implementations are: a baseline.

    python -m lightning_gapsl.serial_loop KEY=VALUE ...      # same overrides as train
    python -m lightning_gapsl.bench --preset serial          # this loop vs the project

For each step, for each client in turn: client forward, its server copy's forward and
backward, the client's backward, both optimizers step; next client. At the end of each
round (one epoch, as the project's default) FedAvg of the client segments and of the
server copies, weighted by client data size. No Lightning, no stacking, no transport:
what a researcher writes by hand (as in the public SplitFed code, one client at a time).

It uses the project's data, partition, batch streams, initialisation and optimizer
settings, so both run exactly the same arithmetic up to float reduction order; the
test in tests/e2e/test_serial_loop.py checks that, and the bench compares the times.
"""

from __future__ import annotations

import json
import math
import resource
import subprocess
import sys
import tempfile
import time

import torch
from torch import nn

from lightning_gapsl.bench_memory import peak_rss_mib
from lightning_gapsl.methods.shared.losses import client_loss_weights
from lightning_gapsl.config import RunConfig
from lightning_gapsl.data.sampling import ClientBatches
from lightning_gapsl.federated import build_federated_data
from lightning_gapsl.methods.base import make_optimizer
from lightning_gapsl.models.split import build_client_segment, build_server_segment


@torch.no_grad()
def fedavg_(models: list[nn.Module], weights: torch.Tensor) -> None:
    """Every model's parameters := the ``weights``-weighted average (float64 sums)."""
    w = weights.double() / weights.double().sum()  # (N,)
    for params in zip(*(m.parameters() for m in models), strict=False):
        average = sum(wi * p.double() for wi, p in zip(w, params, strict=False))
        for p in params:
            p.copy_(average.to(p.dtype))


@torch.no_grad()
def evaluate(
    client: nn.Module,
    server: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch: int,
    prepare=lambda x: x,
) -> float:
    """Test accuracy of one client + server model (``prepare``: stored images -> inputs)."""
    correct = 0
    for i in range(0, len(y), batch):
        logits = server(client(prepare(x[i : i + batch])))
        correct += int((logits.argmax(-1) == y[i : i + batch]).sum())
    return correct / len(y)


def serial_splitfed_v1(cfg: RunConfig, evaluate_every_round: bool = False) -> dict:
    """Train ``cfg`` (algorithm sfl_v1 semantics) with the serial loop; per-round records."""
    if cfg.trainer.threads is not None:
        torch.set_num_threads(cfg.trainer.threads)
    data = build_federated_data(cfg)
    ds, m, n = data.dataset, cfg.model, data.num_clients
    args = (m, ds.input_shape, ds.num_classes, m.cut_layer)
    # FedAvg-family: every client starts from the one global model (client 0's init).
    clients = [build_client_segment(*args, cfg.seed, 0) for _ in range(n)]
    servers = [build_server_segment(*args, cfg.seed) for _ in range(n)]
    client_opts = [make_optimizer(c.parameters(), cfg.optim) for c in clients]
    server_opts = [make_optimizer(s.parameters(), cfg.optim) for s in servers]
    steps = data.steps_per_epoch
    round_steps = cfg.algorithm.round_steps or steps
    batches = ClientBatches(
        ds.train_x,
        ds.train_y,
        dict(enumerate(data.client_indices)),
        data.batch_size,
        cfg.seed,
        steps * cfg.trainer.max_epochs,
        prepare=ds.prepare,
    )
    loss_weights = client_loss_weights(data.client_sizes)  # (N,) the reported mean's weights
    history = []
    for epoch in range(cfg.trainer.max_epochs):
        start, cpu_start, losses = time.perf_counter(), time.process_time(), []
        for step in range(epoch * steps, (epoch + 1) * steps):
            x, y, _ = batches[step]  # (N, B, C, H, W), (N, B)
            step_losses = torch.empty(n)
            for k in range(n):
                client_opts[k].zero_grad(set_to_none=True)
                server_opts[k].zero_grad(set_to_none=True)
                acts = clients[k](x[k])  # (B, *F)
                received = acts.detach().requires_grad_(True)  # what the server gets
                loss = nn.functional.cross_entropy(servers[k](received), y[k])
                loss.backward()
                server_opts[k].step()
                acts.backward(received.grad)  # the cut gradient sent back
                client_opts[k].step()
                step_losses[k] = loss.detach()
            losses.append(float((step_losses * loss_weights).sum()))
            if (step + 1) % round_steps == 0:
                fedavg_(clients, data.client_sizes)
                fedavg_(servers, data.client_sizes)
        train_s, train_cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
        acc = (
            evaluate(
                clients[0], servers[0], ds.test_x, ds.test_y, cfg.data.eval_batch_size, ds.prepare
            )
            if evaluate_every_round
            else math.nan
        )
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": sum(losses) / len(losses),
                "train_s": train_s,
                "train_cpu_s": train_cpu_s,
                "round_s": time.perf_counter() - start,
                "round_cpu_s": time.process_time() - cpu_start,
                "test_acc": acc,
            }
        )
    return {"num_clients": n, "steps_per_epoch": steps, "history": history}


def main() -> None:
    """Print the loop's JSON for Hydra-style ``KEY=VALUE`` overrides (plus ``--eval``).

    Composes the config without `lightning_gapsl.train`, so this process never imports
    Lightning: its peak memory is the plain loop's, as a hand-written script's would be.
    """
    from lightning_gapsl.cli import compose

    argv = sys.argv[1:]
    evaluate_rounds = "--eval" in argv
    overrides = [a for a in argv if a != "--eval"]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose(["algorithm=sfl_v1", "trainer.devices=1", *overrides], tmp)
        result = serial_splitfed_v1(cfg, evaluate_rounds)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["process_cpu_s"] = usage.ru_utime + usage.ru_stime
    result["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(result))


# The comparison: MNIST, LeNet cut 1, 20 clients (Dirichlet 0.3, the default), batch 32,
# one round = one epoch, 2 rounds (the second timed), one thread on both sides (CPU time
# is then the work done; wall time on a shared machine swings with the load). Each side
# is a fresh process.
SERIAL_BENCH = [
    "data=mnist",
    "model=lenet",
    "data.num_clients=20",
    "data.batch_size=32",
    "algorithm.rounds=lockstep",  # the plain loop steps every client every step
    "trainer.max_epochs=2",
    "trainer.threads=1",
]


def _loop_process(evaluation: bool) -> tuple[float, dict]:
    cmd = [
        sys.executable,
        "-m",
        "lightning_gapsl.serial_loop",
        *SERIAL_BENCH,
        *(["--eval"] if evaluation else []),
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"serial loop failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start, json.loads(proc.stdout.strip().splitlines()[-1])


def bench_serial(evaluation: bool = False) -> dict:
    """Project (sfl_v1, one process) vs this loop: per round (wall and CPU), whole process."""
    from lightning_gapsl.bench_scaling import run_point

    project_common = [
        "algorithm=sfl_v1",
        *SERIAL_BENCH,
        "trainer.devices=1",
        "logger=none",
        "trainer.progress_bar=false",
        "trainer.ckpt_every=0",
        f"trainer.eval_every={1 if evaluation else 0}",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        project = run_point([], tmp, common=project_common)
    loop_wall, loop = _loop_process(evaluation)
    last = loop["history"][-1]
    # The last round: training only with evaluation off; training + evaluation with it on.
    # The loop evaluates the averaged model once per round (every client holds it).
    if evaluation:
        p_wall, p_cpu = project["round_wall_s"], project["epoch_cpu_s"]
        l_wall, l_cpu = last["round_s"], last["round_cpu_s"]
    else:
        p_wall, p_cpu = project["epoch_wall_s"], project["epoch_cpu_s"]
        l_wall, l_cpu = last["train_s"], last["train_cpu_s"]
    return {
        "evaluation": evaluation,
        "round": {
            "project": {"wall_s": round(p_wall, 2), "cpu_s": round(p_cpu, 2)},
            "serial_loop": {"wall_s": round(l_wall, 2), "cpu_s": round(l_cpu, 2)},
        },
        "process_wall_s": {
            "project": round(project["process_wall_s"], 2),
            "serial_loop": round(loop_wall, 2),
        },
        "process_cpu_s": {
            "project": round(project["process_cpu_s"], 2),
            "serial_loop": round(loop["process_cpu_s"], 2),
        },
        "project_vs_loop": {
            "per_round_wall": round(p_wall / l_wall, 3),
            "per_round_cpu": round(p_cpu / l_cpu, 3),
            "whole_process_wall": round(project["process_wall_s"] / loop_wall, 3),
            "whole_process_cpu": round(project["process_cpu_s"] / loop["process_cpu_s"], 3),
        },
        # Whole process, each side in its own (VmHWM): imports, data, training.
        "peak_rss_mib": {
            "project": round(project["peak_rss_mib"], 1),
            "serial_loop": round(loop["peak_rss_mib"], 1),
        },
        "train_loss_last_round": {
            "project": project["train_loss"],
            "serial_loop": last["train_loss"],
        },
        "target_per_round": 1.0,
    }


if __name__ == "__main__":
    main()
