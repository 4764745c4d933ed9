"""Where the memory of a one-process run goes: peak RSS after each stage of start-up.

    python -m lightning_gapsl.bench --preset memory            # the table (JSON)
    python -m lightning_gapsl.bench_memory STAGE KEY=VALUE ...  # one stage, one process

Every stage runs in a fresh process that does everything up to and including that
stage, then reports its peak resident memory (``VmHWM``, see `peak_rss_mib`) and
what it still holds (``VmRSS``). A process's peak only ever grows, so
measuring stage k in the same process as stage k-1 would hide which stage set it;
separate processes make the difference between two rows that stage's own cost.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile

# The run the issue measures: SplitFed V1, MNIST, 16 IID clients, one epoch, one process.
RUN = [
    "algorithm=sfl_v1",
    "data=mnist",
    "data.num_clients=16",
    "data.partition=iid",
    "trainer.devices=1",
    "trainer.max_epochs=1",
    "logger=none",
    "trainer.progress_bar=false",
    "trainer.ckpt_every=0",
    "trainer.threads=1",
]

# (name, what it adds), cumulative: stage k does stages 1..k.
STAGES = (
    ("torch", "the interpreter and `import torch`"),
    (
        "lightning",
        (
            "`import lightning` as a run does it (`lean_import`: torch._dynamo and "
            "torchmetrics, without the scipy.signal and matplotlib it would add)"
        ),
    ),
    ("package", "`import lightning_gapsl.train` (Hydra, OmegaConf, the package)"),
    ("data", "the data set loaded, validation carved, partitioned (`build_federated_data`)"),
    ("train", "one epoch of training, evaluation off (`run`, trainer.eval_every=0)"),
    ("evaluate", "the same with every client evaluated on validation and test (`run`)"),
)


def _status_mib(field: str) -> float:
    """One ``kB`` line of ``/proc/self/status`` (``VmRSS``, ``VmHWM``), in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"/proc/self/status has no {field} line (not Linux?)")


def resident_now_mib() -> float:
    """Resident memory of this process now (``VmRSS``), MiB."""
    return _status_mib("VmRSS")


def peak_rss_mib() -> float:
    """This process's peak resident memory (``VmHWM``), MiB.

    Not ``ru_maxrss``: Linux carries that over ``exec`` from the process that forked,
    so a point started by a 400 MiB bench process would report at least 400 MiB
    whatever it did itself (measured: a bare interpreter started from a 410 MiB parent
    reports 411 through ``ru_maxrss``, 10.6 through ``VmHWM``).
    """
    return _status_mib("VmHWM")


def run_stage(stage: str, overrides: list[str]) -> dict:
    """Inside the stage's process: do the stages up to ``stage``; return its memory."""
    names = [name for name, _ in STAGES]
    upto = names.index(stage)
    import torch  # noqa: F401

    if upto >= names.index("lightning"):
        from lightning_gapsl.lean_import import import_lightning

        import_lightning()
    if upto >= names.index("package"):
        from lightning_gapsl.train import compose, run
    if upto >= names.index("data"):
        out = tempfile.mkdtemp()
        extra = ["trainer.eval_every=0"] if stage == "train" else []
        cfg = compose([*overrides, *extra], out)
        if stage == "data":
            from lightning_gapsl.federated import build_federated_data

            data = build_federated_data(cfg)
            del data
        else:
            run(cfg)
    return {
        "stage": stage,
        "peak_rss_mib": peak_rss_mib(),
        "rss_now_mib": resident_now_mib(),
        "modules": len(sys.modules),
    }


def stage_table(overrides: list[str] = RUN) -> dict:
    """Every stage in its own process; rows with the peak and the step from the row above."""
    rows, previous = [], 0.0
    for stage, what in STAGES:
        cmd = [sys.executable, "-m", "lightning_gapsl.bench_memory", stage, *overrides]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"stage {stage} failed:\n{proc.stderr[-2000:]}")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        row["added_mib"] = round(row["peak_rss_mib"] - previous, 1)
        row["what"] = what
        previous = row["peak_rss_mib"]
        rows.append(row)
    return {"overrides": overrides, "stages": rows, "peak_rss_mib": previous}


def main() -> None:
    stage, overrides = sys.argv[1], sys.argv[2:]
    print(json.dumps(run_stage(stage, overrides or RUN)))


if __name__ == "__main__":
    main()
