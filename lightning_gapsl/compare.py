"""Run a list of algorithm variants x seeds on one setting and tabulate the results.

    python -m lightning_gapsl.compare experiment=mnist20_dir01 [jobs=2]

The experiment file (`conf/experiment/*.yaml`) pins the setting (`base` overrides), the
variants (label -> overrides) and the seeds. Each run is the ordinary train entry point
in its own process (`jobs` at a time, one torch thread each), writing
`<out_dir>/<variant>/seed<k>/summary.json`; runs whose summary already exists are
skipped, so an interrupted comparison resumes. At the end: `results.csv` (one row per
run), `results.md` (mean and std per variant) and PNG plots.
"""

from __future__ import annotations

import csv
import json
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

METRICS = ("test_acc_mean", "test_acc_min", "val_acc_mean", "val_acc_min", "train_loss_final",
           "bytes_up", "bytes_down", "sim_latency_s", "wall_s", "samples_per_s")


def run_one(base: list[str], overrides: list[str], seed: int, out: Path, threads: int) -> dict:
    """Train one (variant, seed) in a fresh process unless its summary exists already."""
    summary = out / "summary.json"
    if not summary.is_file():
        cmd = [sys.executable, "-m", "lightning_gapsl.train", *base, *overrides, f"seed={seed}",
               f"hydra.run.dir={out}", f"trainer.threads={threads}", "trainer.progress_bar=false"]
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "train.log", "w") as log:
            log.write(" ".join(cmd) + "\n")
            log.flush()
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"run failed ({proc.returncode}); see {out / 'train.log'}")
    return json.loads(summary.read_text())


def aggregate(rows: list[dict]) -> list[dict]:
    """Mean and sample std per variant for each metric, in first-seen variant order."""
    table = []
    for variant in dict.fromkeys(r["variant"] for r in rows):
        runs = [r for r in rows if r["variant"] == variant]
        entry = {"variant": variant, "runs": len(runs)}
        for m in METRICS:
            values = [r[m] for r in runs if r[m] is not None]
            entry[m] = statistics.mean(values) if values else None
            entry[m + "_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        table.append(entry)
    return table


def markdown(table: list[dict], title: str, command: str) -> str:
    lines = [
        f"### {title}",
        "",
        f"Command: `{command}`",
        "",
        ("| variant | runs | test_acc_mean | test_acc_min | MB up | MB down | sim latency s | "
         "samples/s |"),
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in table:
        lines.append(
            f"| {e['variant']} | {e['runs']} "
            f"| {100 * e['test_acc_mean']:.2f} ± {100 * e['test_acc_mean_std']:.2f} "
            f"| {100 * e['test_acc_min']:.2f} ± {100 * e['test_acc_min_std']:.2f} "
            f"| {e['bytes_up'] / 1e6:.0f} | {e['bytes_down'] / 1e6:.0f} "
            f"| {e['sim_latency_s']:.1f} | {e['samples_per_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def write_results(rows: list[dict], summaries: list[dict], out_dir: Path, title: str, command: str):
    with open(out_dir / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["variant", "seed", *METRICS])
        writer.writeheader()
        writer.writerows(rows)
    (out_dir / "results.md").write_text(markdown(aggregate(rows), title, command))
    from lightning_gapsl.plots import plot_comparison

    plot_comparison(summaries, [r["variant"] for r in rows], out_dir)


@hydra.main(version_base=None, config_path="../conf", config_name="compare")
def main(cfg: DictConfig) -> None:
    exp = cfg.experiment
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = list(exp.base)
    jobs = [(label, list(ovr), seed) for label, ovr in exp.variants.items() for seed in exp.seeds]

    def work(job):
        label, overrides, seed = job
        try:
            return run_one(base, overrides, seed, out_dir / label / f"seed{seed}", cfg.threads)
        except RuntimeError as err:  # keep going: one failed run must not cost the others
            return err

    with ThreadPoolExecutor(max_workers=cfg.jobs) as pool:
        outcomes = list(pool.map(work, jobs))
    failed = [(job, out) for job, out in zip(jobs, outcomes) if isinstance(out, Exception)]
    for (label, _, seed), err in failed:
        print(f"error: {label} seed {seed}: {err}", file=sys.stderr)
    jobs = [job for job, out in zip(jobs, outcomes) if not isinstance(out, Exception)]
    summaries = [out for out in outcomes if not isinstance(out, Exception)]
    rows = [{"variant": label, "seed": seed, **{m: s.get(m) for m in METRICS}}
            for (label, _, seed), s in zip(jobs, summaries)]
    command = f"python -m lightning_gapsl.compare experiment={exp.name}"
    write_results(rows, summaries, out_dir, exp.title, command)
    print(OmegaConf.to_yaml({"results": str(out_dir / "results.md")}).strip())
    print((out_dir / "results.md").read_text())
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
