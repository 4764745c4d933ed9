"""Benchmarks: throughput against centralized, scaling in N, client execution modes.

    python -m lightning_gapsl.bench                    # CPU: MNIST, LeNet, 20 clients
    python -m lightning_gapsl.bench --preset scaling   # N = 10, 100, 1000 in-process (CPU)
                                                       #   (--clients 1000: that N only)
    python -m lightning_gapsl.bench --preset serial    # SplitFed V1 vs a plain serial loop
                                                       #   (--eval: evaluation every round)
    python -m lightning_gapsl.bench --preset exec      # loop / vmap / grouped client kernels
    python -m lightning_gapsl.bench --preset memory    # peak RSS after each start-up stage
    python -m lightning_gapsl.bench --preset gpu       # GPU: synthetic 3x32x32, ResNet-18,
                                                       #      100 clients; fits the GPUs seen

Throughput presets (cpu, gpu) run the real train entry (`run`) on the same model and
data, with evaluation off; samples/s is read from the last epoch (the first one warms
up). Centralized is measured twice: with the per-client batch B, and with N*B, the
samples one PSL step processes; the ratios use the N*B run, the stricter reference
(same samples per optimizer step, so PSL's overhead is the splitting alone). The JSON
gives time per sample of each PSL run divided by centralized's: 1.0 = as fast, 1.3 =
30% slower. Target on CPU: in-process PSL <= 1.3. The gpu preset uses as many processes
as there are GPUs (one GPU: in-process only; NCCL cannot put two ranks on one GPU),
and adds 1000 LeNet clients in one process and the client execution modes.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile

import torch
from lightning.fabric.accelerators.cuda import num_cuda_devices

from lightning_gapsl.bench_memory import peak_rss_mib
from lightning_gapsl.train import compose, run

PRESETS = {
    "cpu": {
        "data": ["data=mnist"],
        "model": "lenet",
        "clients": 20,
        "batch": 32,
        "steps": 30,
        "accelerator": "cpu",
        "devices": 3,
    },
    # ResNet-18 cut after its first stage (stem + stage 1 on the clients), the GPU target.
    "gpu": {
        "data": [
            "data=synthetic",
            "data.shape=[3,32,32]",
            "data.num_train=64000",
            "data.num_test=1000",
        ],
        "model": "resnet18",
        "clients": 100,
        "batch": 32,
        "steps": 10,
        "accelerator": "gpu",
        "devices": None,
        "extra": ["model.cut_layer=2"],
    },
}
OTHER_PRESETS = ("scaling", "serial", "exec", "memory")


def gpu_processes(gpus: int) -> int:
    """Processes for the multi-process GPU row: one per GPU (server included); 1 = none."""
    return gpus if gpus >= 2 else 1


def _throughput(overrides: list[str], workdir: str, name: str) -> float:
    cfg = compose(overrides, f"{workdir}/{name}")
    with open(run(cfg)) as f:
        history = json.load(f)["history"]
    return history[-1]["samples_per_s"]


def bench(preset: str, epochs: int = 2) -> dict:
    p = PRESETS[preset]
    n, b = p["clients"], p["batch"]
    devices = p["devices"]
    if devices is None:  # gpu: as many processes as GPUs
        devices = gpu_processes(num_cuda_devices())  # counted without a CUDA context
    common = [
        *p["data"],
        f"model={p['model']}",
        "logger=none",
        "trainer.progress_bar=false",
        f"trainer.max_epochs={epochs}",
        "trainer.eval_every=0",
        f"trainer.accelerator={p['accelerator']}",
        f"data.num_clients={n}",
        *p.get("extra", []),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        # Multi-process first: forking GPU ranks is impossible once this process used CUDA.
        psl_dist = None
        if devices > 1:
            psl_dist = _throughput(
                [
                    *common,
                    "algorithm=psl",
                    f"trainer.devices={devices}",
                    f"data.batch_size={b}",
                    f"data.steps_per_epoch={p['steps']}",
                ],
                tmp,
                "psl_dist",
            )
        central_nb = _throughput(
            [
                *common,
                "algorithm=centralized",
                "trainer.devices=1",
                f"data.batch_size={n * b}",
                f"data.steps_per_epoch={p['steps']}",
            ],
            tmp,
            "central_nb",
        )
        central_b = _throughput(
            [
                *common,
                "algorithm=centralized",
                "trainer.devices=1",
                f"data.batch_size={b}",
                f"data.steps_per_epoch={p['steps'] * n}",
            ],
            tmp,
            "central_b",
        )
        psl_local = _throughput(
            [
                *common,
                "algorithm=psl",
                "trainer.devices=1",
                f"data.batch_size={b}",
                f"data.steps_per_epoch={p['steps']}",
            ],
            tmp,
            "psl_local",
        )
        extra = _gpu_extras(tmp, epochs) if preset == "gpu" else {}
    result = {
        "preset": preset,
        "model": p["model"],
        "clients": n,
        "batch_per_client": b,
        "samples_per_s": {
            "centralized_batch_NxB": round(central_nb, 1),
            "centralized_batch_B": round(central_b, 1),
            "psl_in_process": round(psl_local, 1),
        },
        "time_per_sample_vs_centralized": {"psl_in_process": round(central_nb / psl_local, 3)},
        "target_psl_in_process": 1.3 if preset == "cpu" else 1 / 0.7,  # gpu: >= 70% throughput
        **extra,
    }
    if psl_dist is not None:
        result["samples_per_s"][f"psl_{devices}_processes"] = round(psl_dist, 1)
        result["time_per_sample_vs_centralized"][f"psl_{devices}_processes"] = round(
            central_nb / psl_dist, 3
        )
    return result


def _gpu_extras(workdir: str, epochs: int) -> dict:
    """GPU only: 1000 LeNet clients in one process, and the client execution modes."""
    from lightning_gapsl.bench_exec import bench_exec

    lenet = [
        "data=synthetic",
        "data.shape=[1,28,28]",
        "data.num_train=64000",
        "model=lenet",
        "logger=none",
        "trainer.progress_bar=false",
        "trainer.eval_every=0",
        f"trainer.max_epochs={epochs}",
        "trainer.accelerator=gpu",
        "trainer.devices=1",
        "data.num_clients=1000",
        "data.batch_size=32",
        "data.steps_per_epoch=5",
        "data.partition=iid",
    ]
    modes = {}
    for mode in ("loop", "grouped"):
        modes[mode] = round(
            _throughput(
                [*lenet, "algorithm=psl", f"model.client_exec={mode}"], workdir, f"lenet1000_{mode}"
            ),
            1,
        )
    exec_rows = bench_exec(
        torch.device("cuda"), [("resnet18_cifar_cut2", 100, 32), ("lenet_mnist_cut1", 1000, 32)]
    )
    return {"lenet_1000_clients_samples_per_s": modes, "client_exec": exec_rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted([*PRESETS, *OTHER_PRESETS]), default="cpu")
    parser.add_argument("--epochs", type=int, default=2, help="epochs; the last one is timed")
    parser.add_argument(
        "--eval", action="store_true", help="serial preset: evaluate every round on both sides"
    )
    parser.add_argument(
        "--clients",
        type=lambda text: tuple(int(n) for n in text.split(",")),
        default=(10, 100, 1000),
        help="scaling preset: the N to run, comma-separated (default 10,100,1000)",
    )
    args = parser.parse_args()
    if args.preset == "scaling":
        from lightning_gapsl.bench_scaling import scaling

        result = scaling(args.clients)
    elif args.preset == "serial":
        from lightning_gapsl.serial_loop import bench_serial

        result = bench_serial(evaluation=args.eval)
    elif args.preset == "memory":
        from lightning_gapsl.bench_memory import stage_table

        result = stage_table()
    elif args.preset == "exec":
        from lightning_gapsl.bench_exec import EXEC_POINTS, bench_exec

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        result = bench_exec(device, EXEC_POINTS[device.type])
    else:
        result = bench(args.preset, args.epochs)
    # Every preset: this process's peak, and the largest of the processes it started
    # (rank processes, per-point processes); presets that run points in processes of
    # their own also give each point's peak beside it.
    result["bench_peak_rss_mib"] = {
        "this_process": peak_rss_mib(),
        # ru_maxrss of children: at least this process's size when it started them.
        "largest_child": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
