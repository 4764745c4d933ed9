"""Before/after table of the fidelity fixes (README): mean ± std over seeds per method.

    python experiments/tools/before_after.py experiments/results/baselines_dir01 experiments/results/fidelity_dir01

Reads the "before" folder's results.csv and the "after" folder's run summaries
(its record runs.jsonl and `<variant>/seed<k>/summary.json` folders, so runs of an
unfinished comparison count too). An
after-variant `<method>_<option>` is compared with `<method>`'s before.
"""

from __future__ import annotations

import csv
import statistics
import sys
from pathlib import Path

from lightning_gapsl.record import Record


def load(folder: str) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    with open(Path(folder) / "results.csv") as f:
        for row in csv.DictReader(f):
            rows.setdefault(row["variant"], []).append(row)
    return rows


def load_summaries(folder: str) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    for key, summary in Record(Path(folder)).summaries("*/seed*").items():
        rows.setdefault(key.split("/")[0], []).append(summary)
    return rows


def cell(runs: list[dict], key: str) -> str:
    values = [100 * float(r[key]) for r in runs if r.get(key) not in (None, "", "None")]
    if not values:
        return "n/a"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {std:.2f} ({len(values)})"


def main(before: str, after: str) -> None:
    old, new = load(before), load_summaries(after)
    print(
        "| method | test mean before | test mean after | worst client before | "
        "worst client after | val mean after | MB up+down after |"
    )
    print("|---|---|---|---|---|---|---|")
    for method in dict.fromkeys([*old, *new]):
        # `<method>_<option>` variants (e.g. sl_batch_turns) share <method>'s "before".
        base = next((m for m in old if method.startswith(m + "_")), method)
        b, a = old.get(base, []), new.get(method, [])
        mb = [(float(r["bytes_up"]) + float(r["bytes_down"])) / 1e6 for r in a]
        print(
            f"| {method} | {cell(b, 'test_acc_mean')} | {cell(a, 'test_acc_mean')} "
            f"| {cell(b, 'test_acc_min')} | {cell(a, 'test_acc_min')} "
            f"| {cell(a, 'val_acc_mean')} | {statistics.mean(mb):.0f} |"
            if mb
            else f"| {method} | {cell(b, 'test_acc_mean')} | n/a | {cell(b, 'test_acc_min')} "
            f"| n/a | n/a | n/a |"
        )


if __name__ == "__main__":
    main(*sys.argv[1:3])
