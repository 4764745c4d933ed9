"""Make a tuning run's choices each method's defaults: its optimizer (`Method.optim`, the
``TUNED_OPTIM`` of lightning_gapsl/methods/<method>.py) and its conf/algorithm/<method>.yaml
keys (whose dataclass defaults must then follow: a test checks that they agree).

    python experiments/tools/apply_chosen.py experiments/results/tune_mnist20_dir01/chosen.yaml

For every method in ``chosen.yaml`` (written by ``lightning_gapsl.compare`` stage tune):
its ``optim=`` / ``optim.*`` overrides become the method's ``TUNED_OPTIM`` (the optimizer
``optim=method`` runs it with) and each ``algorithm.<key>=<value>`` replaces that key's
yaml line. A key the yaml does not have is an error: the grid tuned something the method file
does not document.

A method name keeps meaning its published algorithm: where the chosen point changes the
method's regime (``algorithm.rounds``/``round_steps``: averaging every step instead of once
per local pass; ``algorithm.turns``: one-batch turns instead of whole epochs), the defaults
take instead the best validation point of the reference regime (same rule as the tuning,
from ``tuning.csv`` beside ``chosen.yaml``), and the yaml's comment names both. The
regime that won stays one override away, printed in the tables.
"""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

import yaml

from lightning_gapsl import tuning

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
REGIME_KEYS = ("algorithm.rounds=", "algorithm.round_steps=", "algorithm.turns=")


def changes_regime(overrides: list[str]) -> bool:
    return any(o.startswith(REGIME_KEYS) for o in overrides)


def reference_regime_choices(tuning_csv: Path) -> dict[str, tuning.Run]:
    """Per method, the tuning stage's choice among the points that keep the reference
    regime (tuning.select on the rows of tuning.csv)."""
    points: dict[str, list[tuning.Run]] = {}
    with open(tuning_csv, newline="") as f:
        for row in csv.DictReader(f):
            overrides = row["overrides"].split()
            if "tune" not in row["stages"] or changes_regime(overrides):
                continue
            summary = (
                None
                if row["status"] in ("crashed", "missing")
                else {
                    key: float(row[key])
                    for key in ("val_acc_mean", "val_acc_min", "train_loss_final")
                    if row[key]
                }
            )
            points.setdefault(row["method"], []).append(
                tuning.Run(
                    row["method"],
                    row["point"],
                    int(row["seed"]),
                    overrides,
                    summary=summary,
                    cause=row["cause"] or None,
                )
            )
    return {method: tuning.select(runs)[0] for method, runs in points.items()}


def optim_entry(overrides: list[str]) -> dict:
    """The optimizer a chosen point ran with: its optim group file plus its optim.* keys."""
    name = next((o.split("=", 1)[1] for o in overrides if o.startswith("optim=")), "sgd")
    entry = yaml.safe_load((CONF / "optim" / f"{name}.yaml").read_text())
    for o in overrides:
        if o.startswith("optim."):
            key, value = o[len("optim.") :].split("=", 1)
            entry[key] = yaml.safe_load(value)
    return entry


def apply(method: str, overrides: list[str], point: str, source: str, note: str = "") -> None:
    path = CONF / "algorithm" / f"{method}.yaml"
    text = path.read_text()
    for o in overrides:
        if not o.startswith("algorithm."):
            continue
        key, value = o[len("algorithm.") :].split("=", 1)
        text, count = re.subn(rf"(?m)^{re.escape(key)}: .*$", f"{key}: {value}", text)
        if count != 1:
            raise SystemExit(f"{path}: no single line '{key}: ...' to set from {o}")
    path.write_text(text)
    entry = optim_entry(overrides)
    line = (
        f'TUNED_OPTIM = OptimConfig("{entry["name"]}", lr={entry["lr"]}, '
        f"momentum={entry['momentum']}, weight_decay={entry['weight_decay']})"
    )
    comment = (
        "# The optimizer this method runs with unless optim=sgd|adam or optim.* is given:\n"
        f"# chosen by the tuning grid on validation, point {point} of\n# {source}.\n"
        + (f"# {note}\n" if note else "")
    )
    module = ROOT / "lightning_gapsl" / "methods" / f"{method}.py"
    block = r"(?m)^# The optimizer this method runs with.*\n(?:#.*\n)*TUNED_OPTIM = .*$"
    code, count = re.subn(block, (comment + line).replace("\\", "\\\\"), module.read_text())
    if count != 1:
        raise SystemExit(f"{module}: no TUNED_OPTIM to replace")
    module.write_text(code)
    print(f"{method}: {point}" + (f" ({note.replace(chr(10) + '# ', ' ')})" if note else ""))


def main(chosen_path: str) -> None:
    text = Path(chosen_path).read_text()
    points = dict(re.findall(r"(?m)^# (\w+): (\S+)$", text))
    source = str(Path(chosen_path).resolve().relative_to(ROOT))
    reference = None
    for method, overrides in yaml.safe_load(text).items():
        point, note = points.get(method, "?"), ""
        if changes_regime(overrides):
            if reference is None:
                reference = reference_regime_choices(Path(chosen_path).parent / "tuning.csv")
            note = (
                f"The best point of the reference regime; the grid chose {point},\n"
                "# which changes the regime (README, tuned comparison)."
            )
            point, overrides = reference[method].point, reference[method].overrides
        apply(method, list(overrides), point, source, note)


if __name__ == "__main__":
    main(*sys.argv[1:])
