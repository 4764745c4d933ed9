"""The plain statement under each tuned table: ranking and GAPSL's per-seed gaps.

    python experiments/tools/who_wins.py experiments/results/tune_mnist20_dir01 [--long]

Reads chosen.yaml and the chosen points' summaries from the folder's record (runs.jsonl;
seeds 0-2; --long: the 10-epoch runs, `seed<k>_e10`) and prints each method's test mean
and worst-client accuracy (mean ± std over seeds, failed seeds included and counted),
the ranking among the distributed methods (centralized is the yardstick), and, for each
GAPSL row (its best variant and the aggregation-free one), the per-seed difference to each of
the four first, and from the aggregation-free row to GAPSL's best.
"""

from __future__ import annotations

import argparse
import re
import statistics
from pathlib import Path

from lightning_gapsl.record import Record
from lightning_gapsl.tuning import failure_cause


def num_classes(summary: dict, path: Path) -> int:
    """Classes of the run's data: the width of its per-client, per-class accuracy map."""
    class_acc = summary.get("client_class_acc")
    if not class_acc:
        raise SystemExit(
            f"{path}: no client_class_acc, so the chance level (1.5 / classes) "
            "that marks a failed seed is unknown"
        )
    return len(class_acc[0])


def load(out_dir: Path, suffix: str) -> dict[str, dict[int, dict]]:
    """method -> seed -> summary row (point, test_acc_mean, test_acc_min, status)."""
    points = dict(re.findall(r"(?m)^# (\w+): (\S+)$", (out_dir / "chosen.yaml").read_text()))
    runs: dict[str, dict[int, dict]] = {}
    record = Record(out_dir)
    for method, point in points.items():
        for key, summary in record.summaries(f"{method}.{point}/seed[0-9]{suffix}").items():
            path = out_dir / key
            seed = int(path.name.removeprefix("seed").removesuffix(suffix))
            failed = failure_cause(summary, 0, [], num_classes(summary, path))  # the tables' rule
            runs.setdefault(method, {})[seed] = {
                "point": point,
                "test_acc_mean": summary["test_acc_mean"],
                "test_acc_min": summary["test_acc_min"],
                "status": "failed" if failed else "ok",
            }
    return runs


def pct(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.2f} ± {100 * std:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--long", action="store_true", help="the 10-epoch runs")
    args = parser.parse_args()
    runs = load(args.out_dir, "_e10" if args.long else "")
    if not runs:
        raise SystemExit(f"{args.out_dir}: no final runs of the chosen points")
    means = {
        m: statistics.mean(float(r["test_acc_mean"]) for r in seeds.values())
        for m, seeds in runs.items()
    }
    order = sorted((m for m in runs if m != "centralized"), key=lambda m: -means[m])
    for rank, method in enumerate(order, 1):
        seeds = runs[method]
        failed = [s for s, r in seeds.items() if r["status"] != "ok"]
        print(
            f"{rank:2d}. {method:12s} test {pct([float(r['test_acc_mean']) for r in seeds.values()])}"
            f"  worst {pct([float(r['test_acc_min']) for r in seeds.values()])}"
            f"  point {next(iter(seeds.values()))['point']}"
            + (f"  FAILED seeds {failed}" if failed else "")
        )
    if "centralized" in runs:
        print(
            f"    centralized  test {pct([float(r['test_acc_mean']) for r in runs['centralized'].values()])}"
        )
    for gapsl_row in ("gapsl", "gapsl_aggregation_free"):
        if gapsl_row not in runs:
            continue
        gapsl = runs[gapsl_row]
        others = [m for m in order[:4] if m != gapsl_row]
        if gapsl_row == "gapsl_aggregation_free" and "gapsl" in runs:
            others.append("gapsl")
        for other in others:
            common = sorted(set(gapsl) & set(runs[other]))
            diffs = [
                100 * (float(gapsl[s]["test_acc_mean"]) - float(runs[other][s]["test_acc_mean"]))
                for s in common
            ]
            print(f"{gapsl_row} - {other}: per seed {', '.join(f'{d:+.2f}' for d in diffs)}")


if __name__ == "__main__":
    main()
