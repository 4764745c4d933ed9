"""Equal-budget tuning (docs/how-to/tune.md): the pure part of `compare`'s tuning mode.

An experiment file with a ``grid:`` (method -> {point name -> overrides}) is tuned in two
stages. Stage 1 runs every grid point of every method with one tuning seed at the same
epoch budget; each method's point is chosen on the **validation** split (``val_acc_mean``,
ties broken by ``val_acc_min``, then by grid order); the test set only reports. Stage 2
runs each method's chosen point over the final seeds. Nothing here starts a process:
``compare.py`` runs the jobs, this module checks grids, classifies failures, selects and
tabulates, so each rule is unit-tested on hand-made summaries.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# Keys a grid point may not set: they are the setting and the budget, equal for every
# method (the runner sets `algorithm=<method>` itself).
RESERVED = ("algorithm=", "seed=", "data", "model", "trainer.max_epochs=", "trainer.eval_every=")
# What the tables report per run, in this order.
METRICS = (
    "val_acc_mean",
    "val_acc_min",
    "test_acc_mean",
    "test_acc_min",
    "bytes_up",
    "bytes_down",
    "sim_latency_s",
    "train_loss_final",
    "wall_s",
)
# The leakage evaluation's headline numbers (summary ``privacy``; docs/explanations/privacy.md):
# the leakage index over the evaluated clients and its worst client, distance correlation.
LEAKAGE = ("leakage", "leakage_worst", "dcor")


class GridError(ValueError):
    """The experiment's grid breaks the protocol; the message names the method."""


@dataclass
class Run:
    """One training run of a (method, grid point, seed) and what came of it."""

    method: str
    point: str
    seed: int
    overrides: list[str]
    summary: dict | None = None
    """summary.json, or None when the run crashed or has not run."""
    cause: str | None = None
    """Why the run counts as failed (crash or chance accuracy); None when it did not."""
    returncode: int | None = None
    proc_wall_s: float | None = None
    """Seconds of the whole process (start-up and data loading included)."""
    cpu_s: float | None = None
    """User + system CPU seconds of the process and its children."""
    stages: set[str] = field(default_factory=set)
    recon: dict | None = None
    """The record's reconstruction images of a leakage evaluation (record.encode_images)."""

    @property
    def status(self) -> str:
        if self.summary is None:
            return "crashed" if self.returncode is not None else "missing"
        return "failed" if self.cause else "ok"

    def get(self, key: str) -> float | None:
        value = (self.summary or {}).get(key)
        return value if isinstance(value, (int, float)) and math.isfinite(value) else None

    def leak(self, key: str) -> float | None:
        """A number of the run's leakage evaluation (summary ``privacy``), if it had one."""
        value = ((self.summary or {}).get("privacy") or {}).get(key)
        return value if isinstance(value, (int, float)) and math.isfinite(value) else None

    @property
    def wall_s(self) -> float:
        """The run's seconds: summary wall_s, or the process's for a crashed run."""
        return self.get("wall_s") or self.proc_wall_s or 0.0


def experiment_grid(exp: Mapping) -> dict[str, dict[str, list[str]]]:
    """The experiment's ``grid`` with its ``replace_grid`` rows in place of the inherited
    ones (Hydra merges a ``grid:`` row into the included file's, adding points, so a
    setting that must change every point of a row replaces the row)."""
    rows = {**exp["grid"], **(exp.get("replace_grid") or {})}
    return {m: {p: list(o) for p, o in points.items()} for m, points in rows.items()}


def check_grid(grid: Mapping[str, Mapping[str, Sequence[str]]]) -> int:
    """Equal effort: every method has the same number of grid points; returns that number.

    Raises ``GridError`` naming the methods whose size differs from the most common one,
    and any point that overrides the setting or the budget.
    """
    if not grid:
        raise GridError("the experiment's grid is empty")
    sizes = {method: len(points) for method, points in grid.items()}
    common = statistics.mode(sizes.values())
    odd = [f"{m} has {n}" for m, n in sizes.items() if n != common]
    if odd:
        raise GridError(
            f"grid sizes differ between methods (equal tuning effort is required): "
            f"{', '.join(odd)} grid points; the others have {common}"
        )
    for method, points in grid.items():
        for name, overrides in points.items():
            bad = [o for o in overrides if o.lstrip("+~").startswith(RESERVED)]
            if bad:
                raise GridError(
                    f"grid point {method}/{name} sets {bad[0]!r}: the setting, the seed and the "
                    "epoch budget are the experiment's, equal for every method"
                )
            if "/" in name:
                raise GridError(f"grid point name {method}/{name} may not contain '/'")
    return common


def active_methods(
    grid: Mapping,
    optional: Sequence[str],
    registered: Sequence[str],
    algorithm_of: Mapping[str, str] | None = None,
    not_run: Mapping[str, str] | None = None,
) -> tuple[list[str], list[str]]:
    """Methods (table rows) to run and messages for the rows skipped: optional ones not
    registered yet, and ``not_run`` rows (row -> why the setting cannot run it, printed
    under the table so a missing row is never silent).

    A row is its algorithm unless ``algorithm_of`` maps it to one (a restricted variant
    with its own grid, e.g. GAPSL without aggregation). A row whose algorithm is neither
    registered nor marked optional is an error before any run.
    """
    algorithm_of, not_run = algorithm_of or {}, not_run or {}
    for key, names in (("algorithm_of", algorithm_of), ("not_run", not_run)):
        for row in names:
            if row not in grid:
                raise GridError(f"{key} names row {row}, which has no grid")
    run, skipped = [], []
    for method in grid:
        algorithm = algorithm_of.get(method, method)
        if method in not_run:
            skipped.append(f"Not run in this setting: {method} ({not_run[method]}).")
        elif algorithm in registered:
            run.append(method)
        elif method in optional:
            skipped.append(
                f"skipping {method}: algorithm={algorithm} is not registered yet "
                f"(registered: {', '.join(registered)})"
            )
        else:
            raise GridError(
                f"grid method {method} is not a registered algorithm "
                f"(registered: {', '.join(registered)}); mark it optional to skip "
                "it, or map it to one under algorithm_of"
            )
    return run, skipped


def failure_cause(
    summary: dict | None, returncode: int | None, log_lines: Sequence[str], num_classes: int
) -> str | None:
    """Why a run counts as failed, or None: a crash, or a final accuracy at chance.

    At chance means test_acc_mean below 1.5 / num_classes. The cause names a non-finite
    loss where there was one, else the exit code and the log's last line.
    """
    if summary is None:
        lines = [line.strip() for line in log_lines if line.strip()]
        nonfinite = next((line for line in reversed(lines) if "loss became" in line), None)
        if nonfinite:
            return f"crashed (exit {returncode}): non-finite loss: {nonfinite}"
        return f"crashed (exit {returncode}): {lines[-1] if lines else 'no output'}"
    acc, chance = summary.get("test_acc_mean"), 1.5 / num_classes
    if acc is None or not math.isfinite(acc):
        return "no final test accuracy in summary.json"
    if acc < chance:
        loss = summary.get("train_loss_final")
        why = (
            "non-finite loss"
            if loss is None or not math.isfinite(loss)
            else f"final train loss {loss:.3f}"
        )
        return f"at chance: test acc {acc:.3f} < {chance:.3f}; {why}"
    return None


def select(points: Sequence[Run]) -> tuple[Run | None, str]:
    """The chosen point of one method and the criterion used.

    Validation mean accuracy, ties by validation worst-client accuracy, then grid order;
    a failed point ranks below every finished one, a crashed point is never chosen. Never
    test: if the summaries have no validation numbers (runs made before the validation
    split existed), the lowest final training loss decides and the criterion says so.
    """
    finished = [r for r in points if r.summary is not None]
    if not finished:
        return None, "none finished"
    if all(r.get("val_acc_mean") is not None for r in finished if r.cause is None):
        criterion = "val_acc_mean, then val_acc_min"

        def key(r: Run) -> tuple:
            val, val_min = r.get("val_acc_mean"), r.get("val_acc_min")
            return (
                r.cause is None,
                -math.inf if val is None else val,
                -math.inf if val_min is None else val_min,
            )
    else:
        criterion = "train_loss_final (no validation numbers in these summaries)"

        def key(r: Run) -> tuple:
            loss = r.get("train_loss_final")
            return (r.cause is None, -loss if loss is not None else -math.inf)

    return max(finished, key=key), criterion  # max keeps the first of equals: grid order


# ---------------------------------------------------------------- tables


def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else None


def final_stats(method: str, chosen: Run, runs: Sequence[Run]) -> dict:
    """Mean and std over seeds, with failed seeds included and, separately, without."""
    row = {
        "method": method,
        "chosen": chosen,
        "point": chosen.point,
        "overrides": " ".join(chosen.overrides),
        "seeds": len(runs),
        "ok": sum(r.status == "ok" for r in runs),
        "failed": [f"seed {r.seed}: {r.cause}" for r in runs if r.status != "ok"],
    }
    for m in METRICS[:-2]:
        row[m] = _mean_std([r.get(m) for r in runs if r.get(m) is not None])
        row[m + "_ok"] = _mean_std(
            [r.get(m) for r in runs if r.status == "ok" and r.get(m) is not None]
        )
    for key in LEAKAGE:  # runs with privacy != off (experiment final_overrides)
        row[key] = _mean_std([v for r in runs if (v := r.leak(key)) is not None])
    flags = next((r.summary["privacy"] for r in runs if r.leak("leakage") is not None), None)
    row["threat"] = flags["threat"] if flags else None
    return row


def top_by_val(rows: Sequence[dict], k: int, references: Sequence[str] = ()) -> list[str]:
    """The k methods with the best validation mean accuracy over their final seeds,
    leaving out ``references`` (centralized training on pooled data is the yardstick,
    not a contender for the longer budget) and any method whose validation numbers equal,
    to the last digit, those of a better-placed one: it computes the same function (FedAvg
    and SplitFed V1 do, tested), so a second slot for it would buy no information. Test
    numbers play no part."""
    rows = [row for row in rows if row["method"] not in references]
    lacking = [row["method"] for row in rows if row["val_acc_mean"][0] is None]
    if lacking:
        raise GridError(
            f"no validation accuracy for {', '.join(lacking)}: name the methods "
            "for the longer budget with experiment.long_methods=[...]"
        )
    picked, seen = [], set()
    for row in sorted(rows, key=lambda r: -r["val_acc_mean"][0]):
        numbers = (row["val_acc_mean"], row.get("val_acc_min"))
        if numbers not in seen and len(picked) < k:
            picked.append(row["method"])
        seen.add(numbers)
    return picked


def _pct(pair: tuple[float | None, float | None]) -> str:
    mean, std = pair
    if mean is None:
        return "n/a"
    return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")


def _acc(row: dict, m: str) -> str:
    """All seeds with a number; with failed seeds also the mean without them."""
    text = _pct(row[m])
    if row["failed"]:
        text += f" † (without failed: {_pct(row[m + '_ok'])})"
    return text


def _num(value: float | None, scale: float = 1.0, fmt: str = ".1f") -> str:
    return "n/a" if value is None else format(value / scale, fmt)


def _mb(value: float | None) -> str:
    """Megabytes: whole numbers where large, two digits where small (tests, digits)."""
    return _num(value, 1e6, ".0f" if value is None or value >= 1e8 else ".2f")


def header(title: str, command: str, notes: Sequence[str]) -> list[str]:
    return [f"### {title}", "", f"Command: `{command}`", "", *[f"{n}  " for n in notes], ""]


def tuning_markdown(
    runs: Sequence[Run], chosen: Mapping[str, Run], title: str, command: str, notes: Sequence[str]
) -> str:
    """Every grid point: validation and test numbers, cost, status; the choice marked."""
    lines = header(title, command, notes) + [
        (
            "| method | point | chosen | val mean | val min | test mean | test min | MB up | MB down "
            "| sim latency s | wall s | CPU s | status | overrides |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        pct = [_pct((r.get(m), None)) for m in METRICS[:4]]
        mark = "**yes**" if chosen.get(r.method) is r else ""
        status = r.cause or r.status  # a cause starts with "crashed" or "at chance"
        lines.append(
            f"| {r.method} | {r.point} | {mark} | {' | '.join(pct)} "
            f"| {_mb(r.get('bytes_up'))} | {_mb(r.get('bytes_down'))} "
            f"| {_num(r.get('sim_latency_s'))} | {_num(r.wall_s, 1, '.0f')} "
            f"| {_num(r.cpu_s, 1, '.0f')} | {status} | `{' '.join(r.overrides)}` |"
        )
    return "\n".join(lines) + "\n"


def _leak_cells(row: dict) -> str:
    """Leakage index (mean over evaluated clients, worst client), dcor, threat."""
    cells = [_num3(row[k]) for k in LEAKAGE]
    return " | ".join([*cells, row.get("threat") or "n/a"]) + " | "


def _num3(pair: tuple[float | None, float | None]) -> str:
    mean, std = pair
    if mean is None:
        return "n/a"
    return f"{mean:.3f}" + (f" ± {std:.3f}" if std is not None else "")


def results_markdown(rows: Sequence[dict], title: str, command: str, notes: Sequence[str]) -> str:
    """One row per method at its chosen point; failed seeds flagged (†) and listed; with
    the leakage columns when the final runs evaluated it (privacy.md has the flags)."""
    leaks = any(row.get("leakage", (None,))[0] is not None for row in rows)
    leak_head = "leakage | leakage worst | dcor | threat | " if leaks else ""
    lines = header(title, command, notes) + [
        (
            "| method | chosen point | seeds ok | test mean | test worst | val mean | val worst "
            f"| MB up | MB down | sim latency s | {leak_head}overrides |"
        ),
        "|---" * (11 + 4 * leaks) + "|",
    ]
    for row in rows:
        accs = " | ".join(
            _acc(row, m) for m in ("test_acc_mean", "test_acc_min", "val_acc_mean", "val_acc_min")
        )
        lines.append(
            f"| {row['method']} | {row['point']} | {row['ok']}/{row['seeds']} | {accs} "
            f"| {_mb(row['bytes_up'][0])} | {_mb(row['bytes_down'][0])} "
            f"| {_num(row['sim_latency_s'][0])} | {_leak_cells(row) if leaks else ''}"
            f"`{row['overrides']}` |"
        )
    failed = [(row["method"], f) for row in rows for f in row["failed"]]
    if failed:
        lines += ["", "† Failed seeds (included in the first number, excluded in the second):", ""]
        lines += [f"- {method}, {f}" for method, f in failed]
    return "\n".join(lines) + "\n"


def cost_markdown(runs: Sequence[Run], methods: Sequence[str]) -> str:
    """Seconds spent per method: the sum of its runs' wall_s (training and evaluation),
    and of their processes' wall and CPU seconds (start-up and data loading included)."""
    lines = [
        "",
        "| method | runs | wall s (sum of wall_s) | process wall s | process CPU s |",
        "|---|---|---|---|---|",
    ]
    for method in [*methods, None]:
        mine = [r for r in runs if method is None or r.method == method]
        proc, cpu = (
            [getattr(r, key) for r in mine if getattr(r, key) is not None]
            for key in ("proc_wall_s", "cpu_s")
        )  # None: runs made before run.json
        lines.append(
            f"| {method or '**total**'} | {len(mine)} | {sum(r.wall_s for r in mine):.0f} "
            f"| {_num(sum(proc) if proc else None, 1, '.0f')} "
            f"| {_num(sum(cpu) if cpu else None, 1, '.0f')} |"
        )
    return "\n".join(lines) + "\n"


def write_csv(path: Path, rows: Sequence[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["method"])
        writer.writeheader()
        writer.writerows(rows)


def run_row(r: Run, chosen: Mapping[str, Run]) -> dict:
    """One CSV row per run (tuning.csv, runs.csv)."""
    mine = chosen.get(r.method)
    return {
        "method": r.method,
        "point": r.point,
        "seed": r.seed,
        "stages": "+".join(sorted(r.stages)),
        "chosen": mine is not None and mine.point == r.point,
        "status": r.status,
        "cause": r.cause or "",
        **{m: r.get(m) for m in METRICS[:-1]},
        "wall_s": r.wall_s,
        "cpu_s": r.cpu_s,
        "overrides": " ".join(r.overrides),
    }


def stats_row(row: dict) -> dict:
    """Flatten `final_stats` for results.csv: mean and std columns, failed seeds as text."""
    flat = {k: row[k] for k in ("method", "point", "seeds", "ok")}
    for m in METRICS[:-2]:
        for suffix in ("", "_ok"):
            mean, std = row[m + suffix]
            flat[m + suffix], flat[m + suffix + "_std"] = mean, std
    for key in LEAKAGE:
        flat[key], flat[key + "_std"] = row.get(key, (None, None))
    flat["failed"] = "; ".join(row["failed"])
    flat["overrides"] = row["overrides"]
    return flat
