"""Run an experiment file's methods on one setting and tabulate the results.

    python -m lightning_gapsl.compare experiment=mnist20_dir01 [jobs=2]
    python -m lightning_gapsl.compare experiment=tune_mnist20_dir01 [stage=tune|final|all|long]

Each run is the ordinary train entry point in its own process (`jobs` at a time, `threads`
torch threads each) writing `<out_dir>/<run>/seed<k>/summary.json`; runs whose summary
exists are skipped, so an interrupted comparison resumes (a crashed run is retried).

An experiment file has one of two forms:

- ``variants:`` (label -> overrides) x ``seeds``: `results.csv` (one row per run),
  `results.md` (mean and std per variant) and PNG plots.
- ``grid:`` (method -> {point -> overrides}): the tuning protocol of `tuning.py`. Stage
  `tune` runs every point with `tune_seed` at `epochs` epochs and chooses each method's
  point on validation (`tuning.{csv,md}`, `chosen.yaml`); stage `final` runs the chosen
  points over `seeds` (`results.{csv,md}`, `runs.csv`, plots); `all` does both; `long`
  (after them) runs the best methods on validation at `long_epochs` (`results_long.*`).
"""

from __future__ import annotations

import csv
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path

import hydra
import yaml
from omegaconf import DictConfig, OmegaConf

from lightning_gapsl import tuning
from lightning_gapsl.cli import config_dir
from lightning_gapsl.paired import EXPECT, paired_markdown
from lightning_gapsl.record import Record, decode_recon
from lightning_gapsl.tuning import GridError, Run

METRICS = (
    "test_acc_mean",
    "test_acc_min",
    "val_acc_mean",
    "val_acc_min",
    "train_loss_final",
    "bytes_up",
    "bytes_down",
    "sim_latency_s",
    "wall_s",
    "samples_per_s",
)


def train_command(overrides: list[str], seed: int, out: Path, threads: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "lightning_gapsl.train",
        *overrides,
        f"seed={seed}",
        f"hydra.run.dir={out}",
        f"trainer.threads={threads}",
        "trainer.progress_bar=false",
    ]


def execute(cmd: list[str], out: Path) -> tuple[int, float, float]:
    """Run ``cmd`` logging to out/train.log: (exit code, wall s, CPU s of it and its children)."""
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(out / "train.log", "w") as log:
        log.write(shlex.join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)  # wait4: this child's own CPU time
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.perf_counter() - start, usage.ru_utime + usage.ru_stime


def run_one(
    base: list[str], overrides: list[str], seed: int, out: Path, threads: int, record: Record
) -> dict:
    """Train one (variant, seed) in a fresh process unless the record (or its folder) has
    its summary already; its record line."""
    check_not_stale(out, [*base, *overrides], record)
    if not record.done(out):
        code, wall, cpu = execute(train_command([*base, *overrides], seed, out, threads), out)
        write_run_meta(out, [*base, *overrides], code, wall, cpu)
    entry = record.fetch(out)
    if entry is None or entry["summary"] is None:
        raise RuntimeError(f"run failed; see {out / 'train.log'}")
    return entry


# ---------------------------------------------------------------- variants x seeds


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
        (
            "| variant | runs | test_acc_mean | test_acc_min | MB up | MB down | sim latency s | "
            "samples/s |"
        ),
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


def write_results(
    rows: list[dict], entries: list[dict], out_dir: Path, title: str, command: str
) -> None:
    """results.csv, results.md, the plots and (runs with privacy) privacy.md."""
    from lightning_gapsl.privacy.report import privacy_columns, write_privacy

    summaries = [e["summary"] for e in entries]
    # Runs with privacy != off add their leakage columns (privacy/report.py).
    leak = [{f"privacy_{k}": v for k, v in privacy_columns(s).items()} for s in summaries]
    extra = list(dict.fromkeys(k for row in leak for k in row))
    with open(out_dir / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["variant", "seed", *METRICS, *extra])
        writer.writeheader()
        writer.writerows({**r, **p} for r, p in zip(rows, leak, strict=False))
    (out_dir / "results.md").write_text(markdown(aggregate(rows), title, command))
    from lightning_gapsl.plots import plot_class_acc, plot_comparison

    labels = [r["variant"] for r in rows]
    plot_comparison(summaries, labels, out_dir)
    for variant in dict.fromkeys(labels):
        plot_class_acc(
            variant, [s for s, v in zip(summaries, labels, strict=False) if v == variant], out_dir
        )
    recons = [decode_recon(e.get("recon")) for e in entries]
    write_privacy(summaries, labels, recons, out_dir, title)


def compare_variants(exp: DictConfig, out_dir: Path, jobs: int, threads: int, command: str) -> int:
    base, record = list(exp.base), Record(out_dir)
    todo = [(label, list(ovr), seed) for label, ovr in exp.variants.items() for seed in exp.seeds]

    def work(job):
        label, overrides, seed = job
        try:
            return run_one(base, overrides, seed, out_dir / label / f"seed{seed}", threads, record)
        except RuntimeError as err:  # keep going: one failed run must not cost the others
            return err

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        outcomes = list(pool.map(work, todo))
    failed = [
        (job, out) for job, out in zip(todo, outcomes, strict=False) if isinstance(out, Exception)
    ]
    for (label, _, seed), err in failed:
        print(f"error: {label} seed {seed}: {err}", file=sys.stderr)
    todo = [job for job, out in zip(todo, outcomes, strict=False) if not isinstance(out, Exception)]
    entries = [out for out in outcomes if not isinstance(out, Exception)]
    summaries = [e["summary"] for e in entries]
    rows = [
        {"variant": label, "seed": seed, **{m: s.get(m) for m in METRICS}}
        for (label, _, seed), s in zip(todo, summaries, strict=True)
    ]
    write_results(rows, entries, out_dir, exp.title, command)
    if exp.get("paired"):
        labels = [r["variant"] for r in rows]
        checks = OmegaConf.to_container(exp.paired, resolve=True)
        section = paired_markdown(checks, summaries, labels, list(exp.seeds))
        with open(out_dir / "results.md", "a") as f:
            f.write(section)
    print(OmegaConf.to_yaml({"results": str(out_dir / "results.md")}).strip())
    print((out_dir / "results.md").read_text())
    return 1 if failed else 0


# ---------------------------------------------------------------- tuning protocol


def registered_algorithms() -> tuple[str, ...]:
    """The `algorithm=` names the train entry point accepts: the method registry."""
    from lightning_gapsl.methods import method_names

    return method_names()


def load_run(run: Run, out: Path, num_classes: int, record: Record) -> Run:
    """Fill ``run`` from its record line (else its folder): summary, exit code, seconds,
    the end of the log of a run that wrote no summary, the reconstruction images."""
    entry = record.fetch(out)
    if entry is None:
        return run  # never ran
    run.returncode, run.proc_wall_s, run.cpu_s = (
        entry["returncode"],
        entry["proc_wall_s"],
        entry["cpu_s"],
    )
    run.summary, run.recon = entry["summary"], entry.get("recon")
    run.cause = tuning.failure_cause(
        run.summary, run.returncode, entry.get("log_tail") or [], num_classes
    )
    return run


def check_not_stale(out: Path, overrides: list[str], record: Record) -> None:
    """A run is reused only for the overrides it was made with."""
    entry = record.get(out)
    if entry is None and (out / "run.json").is_file():
        entry = json.loads((out / "run.json").read_text())
    if entry is not None and entry.get("overrides") not in (None, overrides):
        raise GridError(
            f"{out} was run with other overrides than the experiment now gives; "
            f"rerun it after `python -m lightning_gapsl.record --drop "
            f"'{record.key(out)}' {record.out_dir}` (and deleting the folder), or rename "
            "the grid point"
        )


def host() -> dict:
    """Where a run was made: its seconds and last digits depend on the machine and torch."""
    return {
        "torch": version("torch"),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "processor": platform.machine(),
    }


def write_run_meta(out: Path, overrides: list[str], code: int, wall: float, cpu: float) -> None:
    """run.json: how the run was made and how it ended (the record copies it)."""
    meta = {"overrides": overrides, "returncode": code, "proc_wall_s": wall, "cpu_s": cpu}
    (out / "run.json").write_text(json.dumps({**meta, "host": host()}, indent=1))


def run_point(
    run: Run, overrides: list[str], out: Path, threads: int, num_classes: int, record: Record
) -> Run:
    """Train one grid point at one seed unless its summary exists already (resume)."""
    if not record.done(out):
        code, wall, cpu = execute(train_command(overrides, run.seed, out, threads), out)
        write_run_meta(out, overrides, code, wall, cpu)
    return load_run(run, out, num_classes, record)


Job = tuple[Run, Path, list[str]]  # a run, its folder, its overrides (seed aside)


class Tuner:
    """The runs of one tuning experiment, each created once per (method, point, seed, epochs)."""

    def __init__(self, exp: dict, out_dir: Path, threads: int):
        self.grid = tuning.experiment_grid(exp)
        self.size = tuning.check_grid(self.grid)
        self.algorithm_of = dict(exp.get("algorithm_of") or {})  # row -> algorithm= name
        # Added to the final stage's runs only (e.g. privacy=fast: the leakage columns come
        # from the reported seeds; evaluating after training does not change training).
        self.final_overrides = [str(o) for o in exp.get("final_overrides") or []]
        self.methods, self.skipped = tuning.active_methods(
            self.grid,
            exp.get("optional") or [],
            registered_algorithms(),
            self.algorithm_of,
            exp.get("not_run"),
        )
        self.epochs, self.tune_seed = int(exp["epochs"]), int(exp["tune_seed"])
        self.seeds = [int(s) for s in exp["seeds"]]
        self.num_classes = int(exp.get("num_classes", 10))
        if not exp.get("setting"):
            raise GridError(
                f"experiment {exp['name']} has no setting: it is the shared part of "
                "the tune_* files; pick one of them"
            )
        self.setting = [*exp.get("common", []), *exp["setting"]]
        self.out_dir, self.threads = out_dir, threads
        self.runs: dict[Path, Run] = {}
        self.record = Record(out_dir)

    def base(self, epochs: int) -> list[str]:
        """The setting and the budget: evaluated after the last epoch only (evaluation
        does not change training)."""
        return [*self.setting, f"trainer.max_epochs={epochs}", f"trainer.eval_every={epochs}"]

    def job(self, method: str, point: str, seed: int, stage: str, epochs: int | None = None) -> Job:
        epochs = epochs or self.epochs
        suffix = "" if epochs == self.epochs else f"_e{epochs}"
        if stage == "final" and self.final_overrides and seed == self.tune_seed:
            suffix += "_final"  # its own run: the tuning run at this seed lacks the overrides
        out = self.out_dir / f"{method}.{point}" / f"seed{seed}{suffix}"
        run = self.runs.setdefault(out, Run(method, point, seed, self.grid[method][point]))
        run.stages.add(stage)
        extra = self.final_overrides if stage == "final" else []
        return run, out, [*self.base(epochs), self.algorithm(method), *run.overrides, *extra]

    def algorithm_name(self, method: str) -> str:
        """The registered method a table row runs (``algorithm_of``, else the row's name)."""
        return self.algorithm_of.get(method, method)

    def algorithm(self, method: str) -> str:
        """The ``algorithm=`` override of a table row."""
        return f"algorithm={self.algorithm_name(method)}"

    def execute(self, jobs: list[Job], workers: int, train: bool) -> list[Run]:
        """Train (or, with ``train=False``, only read) the given runs, `workers` at a time."""
        for _, out, overrides in jobs:
            check_not_stale(out, overrides, self.record)

        def work(job: Job) -> Run:
            run, out, overrides = job
            if train:
                return run_point(run, overrides, out, self.threads, self.num_classes, self.record)
            return load_run(run, out, self.num_classes, self.record)

        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(work, jobs))

    def notes(self, epochs: int | None = None) -> list[str]:
        def n(k: int) -> str:
            return f"{k} epoch{'s' if k != 1 else ''}"

        grid = (
            f"{self.size} grid points per method at {n(self.epochs)}, tuning seed "
            f"{self.tune_seed}; final seeds {self.seeds}"
        )
        budget = (
            f"Budget: {n(self.epochs)} for every method, tuning and final runs; {grid}."
            if epochs in (None, self.epochs)
            else f"Budget: {n(epochs)} for every method listed (the longer budget); each "
            f"method's point was chosen with {grid}."
        )
        return [
            budget,
            (
                "Chosen by validation mean client accuracy (ties: validation worst-client "
                "accuracy); the test set only reports."
            ),
            f"Setting: `{' '.join(self.base(epochs or self.epochs))}`",
            *self.skipped,
        ]


def tune(exp: dict, out_dir: Path, stage: str, workers: int, threads: int, command: str) -> int:
    """The tuning protocol; returns the exit code (1 if any run crashed).

    stage: tune (stage 1), final (stage 2, after tune), all (both), long (the longer
    budget `long_epochs` for `long_methods`, default the `long_top` best on validation)."""
    if stage not in ("tune", "final", "all", "long", "plan"):
        raise GridError(
            f"stage={stage!r} is not valid; choose one of: tune, final, all, long, plan"
        )
    t = Tuner(exp, out_dir, threads)
    for message in t.skipped:
        print(message, file=sys.stderr)
    if stage == "plan":
        print(plan(t, exp))
        return 0
    tuned = t.execute(
        [t.job(m, p, t.tune_seed, "tune") for m in t.methods for p in t.grid[m]],
        workers,
        train=stage in ("tune", "all"),
    )
    needs_done(tuned, stage, "tune")
    choices = {m: tuning.select([r for r in tuned if r.method == m]) for m in t.methods}
    chosen = {m: run for m, (run, _) in choices.items() if run is not None}
    notes = [
        f"{m}: chosen on {c}"
        for m, (_, c) in choices.items()
        if not c.startswith(("val_acc_mean", "none"))
    ]
    notes += [
        f"{m}: no grid point finished (see tuning.md), so no final runs"
        for m in t.methods
        if m not in chosen
    ]
    title = exp.get("title", exp["name"])
    if stage in ("tune", "all"):
        write_tuning(t, tuned, chosen, title, command, t.notes() + notes)
    done = tuned
    if stage != "tune":
        final = t.execute(
            [t.job(m, r.point, s, "final") for m, r in chosen.items() for s in t.seeds],
            workers,
            train=stage != "long",
        )
        needs_done(final, stage, "final")
        rows = final_rows(chosen, final)
        if stage != "long":
            write_final(t, rows, final, "", title, command, t.notes() + notes)
        done = done + final
    if stage == "long":
        epochs = int(exp["long_epochs"])
        from lightning_gapsl.methods import get_method

        references = [m for m in t.methods if get_method(t.algorithm_name(m)).pools_data]
        methods = exp.get("long_methods") or tuning.top_by_val(
            rows, int(exp.get("long_top", 4)), references
        )
        unknown = [m for m in methods if m not in chosen]
        if unknown:
            raise GridError(
                f"long_methods: {', '.join(unknown)} has no chosen point "
                f"(chosen: {', '.join(chosen)})"
            )
        long = t.execute(
            [t.job(m, chosen[m].point, s, "long", epochs) for m in methods for s in t.seeds],
            workers,
            train=True,
        )
        write_final(
            t,
            final_rows({m: chosen[m] for m in methods}, long),
            long,
            "_long",
            title.replace(f"{t.epochs} epochs", f"{epochs} epochs"),
            command,
            t.notes(epochs) + notes,
        )
        done = done + long
    crashed = [r for r in {id(r): r for r in done}.values() if r.status == "crashed"]
    for r in crashed:
        print(f"error: {r.method}/{r.point} seed {r.seed}: {r.cause}", file=sys.stderr)
    return 1 if crashed else 0


def plan(t: Tuner, exp: dict) -> str:
    """How many runs each stage makes and how many are done already; runs nothing."""
    tune_jobs = [t.job(m, p, t.tune_seed, "tune") for m in t.methods for p in t.grid[m]]
    done = sum(t.record.done(out) for _, out, _ in tune_jobs)
    reused = set() if t.final_overrides else {t.tune_seed}  # a tuning run is a final one
    final = len(t.methods) * len(set(t.seeds) - reused)
    top = len(exp.get("long_methods") or []) or int(exp.get("long_top", 4))
    return (
        f"{len(t.methods)} methods x {t.size} grid points at {t.epochs} epochs: "
        f"{len(tune_jobs)} tuning runs ({done} done); final: {final} more runs "
        f"({len(t.seeds)} seeds per method); long: {top * len(t.seeds)} runs at "
        f"{exp.get('long_epochs')} epochs"
    )


def needs_done(runs: list[Run], stage: str, earlier: str) -> None:
    missing = [f"{r.method}/{r.point}/seed{r.seed}" for r in runs if r.status == "missing"]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise GridError(
            f"stage={stage} needs every {earlier} run; missing: "
            f"{', '.join(missing[:5])}{more} (run stage={earlier} first)"
        )


def write_tuning(
    t: Tuner, tuned: list[Run], chosen: dict[str, Run], title: str, command: str, notes: list[str]
) -> None:
    """tuning.{csv,md} (every grid point, the choice marked) and chosen.yaml."""
    tuning.write_csv(t.out_dir / "tuning.csv", [tuning.run_row(r, chosen) for r in tuned])
    (t.out_dir / "tuning.md").write_text(
        tuning.tuning_markdown(tuned, chosen, f"Tuning: {title}", command, notes)
        + "\nSeconds spent on tuning:\n"
        + tuning.cost_markdown(tuned, t.methods)
    )
    (t.out_dir / "chosen.yaml").write_text(
        f"# {command}\n# method -> chosen overrides (grid point in the comment)\n"
        + "".join(f"# {m}: {r.point}\n" for m, r in chosen.items())
        + yaml.safe_dump(
            {m: [t.algorithm(m), *r.overrides] for m, r in chosen.items()}, sort_keys=False
        )
    )
    print(f"tuning: {t.out_dir / 'tuning.md'}")


def final_rows(chosen: dict[str, Run], final: list[Run]) -> list[dict]:
    """One `tuning.final_stats` row per method: its chosen point over the seeds."""
    return [
        tuning.final_stats(m, run, [r for r in final if r.method == m]) for m, run in chosen.items()
    ]


def write_final(
    t: Tuner,
    rows: list[dict],
    final: list[Run],
    suffix: str,
    title: str,
    command: str,
    notes: list[str],
) -> None:
    """results{suffix}.{csv,md}, runs.csv (every run so far) and the plots."""
    from lightning_gapsl.plots import plot_class_acc, plot_tradeoff

    chosen = {row["method"]: row["chosen"] for row in rows}
    tuning.write_csv(t.out_dir / f"results{suffix}.csv", [tuning.stats_row(row) for row in rows])
    every = list(t.runs.values())
    tuning.write_csv(t.out_dir / "runs.csv", [tuning.run_row(r, chosen) for r in every])
    md = t.out_dir / f"results{suffix}.md"
    md.write_text(
        tuning.results_markdown(rows, title, command, notes)
        + "\nSeconds spent (every run so far, each counted once):\n"
        + tuning.cost_markdown(every, t.methods)
    )
    summaries = {
        m: [r.summary for r in final if r.method == m and r.summary is not None] for m in chosen
    }
    plot_tradeoff(summaries, t.out_dir, suffix)
    for m, found in summaries.items():
        plot_class_acc(m, found, t.out_dir, suffix)
    if not suffix:  # the leakage table, plot and pictures of the final runs (privacy=...)
        from lightning_gapsl.privacy.report import write_privacy

        runs = [r for r in final if r.summary is not None]
        recons = [decode_recon(r.recon) for r in runs]
        write_privacy([r.summary for r in runs], [r.method for r in runs], recons, t.out_dir, title)
    print(f"results: {md}")
    print(md.read_text())


def planned_runs(exp: dict, out_dir: Path, stage: str = "all") -> dict[str, list[str]]:
    """label -> overrides of every distinct configuration the experiment can start: each
    variant or grid point once (at the long budget too for stage `long`), and each seed."""
    if "grid" not in exp:
        runs = {
            label: [*exp["base"], *ovr, f"seed={exp['seeds'][0]}"]
            for label, ovr in exp["variants"].items()
        }
        first = next(iter(runs.values()))
        return runs | {f"seed={seed}": [*first, f"seed={seed}"] for seed in exp["seeds"][1:]}
    t = Tuner(exp, out_dir, threads=1)
    budgets = [t.epochs] + ([int(exp["long_epochs"])] if stage == "long" else [])
    runs = {
        f"{m}.{p} ({epochs} epochs)": [
            *t.job(m, p, t.tune_seed, "plan", epochs)[2],
            f"seed={t.tune_seed}",
        ]
        for m in t.methods
        for p in t.grid[m]
        for epochs in budgets
    }
    finals = {
        f"{m} (final)": [*t.job(m, next(iter(t.grid[m])), t.tune_seed, "final")[2]]
        for m in t.methods
        if t.final_overrides
    }
    first = next(iter(runs.values()))
    seeds = {f"seed={seed}": [*first, f"seed={seed}"] for seed in t.seeds}
    return runs | finals | seeds


def check_paired(exp: dict) -> None:
    """An experiment's ``paired:`` checks name two of its variants, a key and a direction."""
    for i, check in enumerate(exp.get("paired") or []):
        where = f"experiment {exp['name']}, paired[{i}]"
        missing = [k for k in ("a", "b", "key", "expect") if k not in check]
        if missing:
            raise GridError(f"{where} lacks {', '.join(missing)} (needs a, b, key, expect)")
        for side in ("a", "b"):
            if check[side] not in (exp.get("variants") or {}):
                raise GridError(
                    f"{where}: {side}={check[side]!r} is not a variant; choose one of: "
                    + ", ".join(exp.get("variants") or {})
                )
        if check["expect"] not in EXPECT:
            raise GridError(f"{where}: expect={check['expect']!r}; choose lower or higher")


def check_runs(exp: dict, out_dir: Path, stage: str = "all") -> None:
    """Validate every planned run before the first one starts, so a variant that a moved
    default made invalid stops the comparison at once, naming it, not after hours."""
    from lightning_gapsl.cli import compose_each
    from lightning_gapsl.config import ConfigError

    runs = planned_runs(exp, out_dir, stage)
    labels = iter(runs)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for _ in compose_each(runs.values(), tmp):
                next(labels)
        except ConfigError as err:
            raise GridError(f"experiment {exp['name']}, run {next(labels)}: {err}") from None


# Where experiment files live, relative to the folder compare runs from (compare.yaml's
# hydra.searchpath): the repository's research, which the installed package does not ship.
EXPERIMENTS_CONF = Path("experiments/conf")


def experiment_search_dirs(argv: list[str]) -> list[Path]:
    """The config folders compare looks in for ``experiment/<name>.yaml``: the default
    ``experiments/conf`` and any ``hydra.searchpath=[file://...]`` given on the command line."""
    dirs = [EXPERIMENTS_CONF]
    for arg in argv:
        if arg.startswith(("hydra.searchpath=", "+hydra.searchpath=", "++hydra.searchpath=")):
            listed = arg.split("=", 1)[1].strip("[]")
            dirs += [
                Path(e.strip().removeprefix("file://")) for e in listed.split(",") if e.strip()
            ]
    return dirs


def missing_experiment(argv: list[str]) -> str | None:
    """One line saying why ``experiment=`` cannot be found, or None when it can."""
    names = [a.split("=", 1)[1] for a in argv if a.startswith("experiment=")]
    dirs = experiment_search_dirs(argv)
    known = sorted({f.stem for d in dirs for f in (d / "experiment").glob("*.yaml")})
    where = ", ".join(str(d.resolve() / "experiment") for d in dirs)
    hint = (
        f"valid here: {', '.join(known)}"
        if known
        else "run compare from the repository's root, or add "
        "hydra.searchpath=[file:///path/to/conf] holding experiment/<name>.yaml"
    )
    if not names:
        return f"experiment= is required (an experiment file's name); {hint}"
    if names[-1] not in known:
        return f"experiment={names[-1]}: no {names[-1]}.yaml in {where}; {hint}"
    return None


def main() -> None:
    """`python -m lightning_gapsl.compare experiment=<name> ...` (also `lgapsl-compare`)."""
    if "--help" not in sys.argv and "-h" not in sys.argv:
        problem = missing_experiment(sys.argv[1:])
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            sys.exit(2)
    run_compare()


@hydra.main(version_base=None, config_path=config_dir(), config_name="compare")
def run_compare(cfg: DictConfig) -> None:
    exp = cfg.experiment
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "-m", "lightning_gapsl.compare", *sys.argv[1:]])
    try:
        check_paired(OmegaConf.to_container(exp, resolve=True))
        if cfg.stage != "plan":
            check_runs(OmegaConf.to_container(exp, resolve=True), out_dir, cfg.stage)
    except GridError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    code = 0
    if "grid" in exp:
        try:
            code = tune(
                OmegaConf.to_container(exp, resolve=True),
                out_dir,
                cfg.stage,
                cfg.jobs,
                cfg.threads,
                command,
            )
        except GridError as err:
            print(f"error: {err}", file=sys.stderr)
            code = 2
    elif cfg.stage == "plan":
        todo = [out_dir / v / f"seed{s}" for v in exp.variants for s in exp.seeds]
        record = Record(out_dir)
        done = sum(record.done(out) for out in todo)
        print(
            f"{len(exp.variants)} variants x {len(exp.seeds)} seeds: {len(todo)} runs ({done} done)"
        )
    elif cfg.stage != "all":
        print(
            f"error: stage={cfg.stage} is for tuning experiments (a grid:); experiment "
            f"{exp.name} has variants: use stage=all (the default) or stage=plan",
            file=sys.stderr,
        )
        code = 2
    else:
        code = compare_variants(exp, out_dir, cfg.jobs, cfg.threads, command)
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
