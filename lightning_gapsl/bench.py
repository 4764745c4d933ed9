"""Training throughput: centralized vs PSL in-process vs PSL with several processes.

    python -m lightning_gapsl.bench                    # CPU: MNIST, LeNet, 20 clients
    python -m lightning_gapsl.bench --preset gpu       # GPU: synthetic 3x32x32, ResNet-18,
                                                       #      100 clients, NCCL

Every measurement is the real train entry (`run`) on the same model and data, with
evaluation off; samples/s is read from the last epoch (the first one warms up).
Centralized is measured twice: with the per-client batch B, and with N*B, the samples
one PSL step processes; the ratios use the N*B run, the stricter reference (same
samples per optimizer step, so PSL's overhead is the splitting alone). The JSON gives
time per sample of each PSL run divided by centralized's: 1.0 = as fast, 1.3 = 30%
slower. Target on CPU: in-process PSL <= 1.3.
"""

from __future__ import annotations

import argparse
import json
import tempfile

from lightning_gapsl.train import compose, run

PRESETS = {
    "cpu": {"data": ["data=mnist"], "model": "lenet", "clients": 20, "batch": 32, "steps": 30,
            "accelerator": "cpu", "devices": 3},
    "gpu": {"data": ["data=synthetic", "data.shape=[3,32,32]", "data.num_train=64000",
                     "data.num_test=1000"],
            "model": "resnet18", "clients": 100, "batch": 32, "steps": 10,
            "accelerator": "gpu", "devices": 2},
}


def _throughput(overrides: list[str], workdir: str, name: str) -> float:
    cfg = compose(overrides, f"{workdir}/{name}")
    with open(run(cfg)) as f:
        history = json.load(f)["history"]
    return history[-1]["samples_per_s"]


def bench(preset: str, epochs: int = 2) -> dict:
    p = PRESETS[preset]
    n, b = p["clients"], p["batch"]
    common = [*p["data"], f"model={p['model']}", "logger=none", "trainer.progress_bar=false",
              f"trainer.max_epochs={epochs}", "trainer.eval_every=0",
              f"trainer.accelerator={p['accelerator']}", f"data.num_clients={n}"]
    with tempfile.TemporaryDirectory() as tmp:
        central_nb = _throughput([*common, "algorithm=centralized", "trainer.devices=1",
                                  f"data.batch_size={n * b}", f"data.steps_per_epoch={p['steps']}"],
                                 tmp, "central_nb")
        central_b = _throughput([*common, "algorithm=centralized", "trainer.devices=1",
                                 f"data.batch_size={b}", f"data.steps_per_epoch={p['steps'] * n}"],
                                tmp, "central_b")
        psl_local = _throughput([*common, "algorithm=psl", "trainer.devices=1",
                                 f"data.batch_size={b}", f"data.steps_per_epoch={p['steps']}"],
                                tmp, "psl_local")
        psl_dist = _throughput([*common, "algorithm=psl", f"trainer.devices={p['devices']}",
                                f"data.batch_size={b}", f"data.steps_per_epoch={p['steps']}"],
                               tmp, "psl_dist")
    return {
        "preset": preset,
        "model": p["model"],
        "clients": n,
        "batch_per_client": b,
        "samples_per_s": {
            "centralized_batch_NxB": round(central_nb, 1),
            "centralized_batch_B": round(central_b, 1),
            "psl_in_process": round(psl_local, 1),
            f"psl_{p['devices']}_processes": round(psl_dist, 1),
        },
        "time_per_sample_vs_centralized": {
            "psl_in_process": round(central_nb / psl_local, 3),
            f"psl_{p['devices']}_processes": round(central_nb / psl_dist, 3),
        },
        "target_psl_in_process": 1.3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--epochs", type=int, default=2, help="epochs; the last one is timed")
    args = parser.parse_args()
    print(json.dumps(bench(args.preset, args.epochs), indent=2))


if __name__ == "__main__":
    main()
