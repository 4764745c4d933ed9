"""Make a tuning run's choices each method's defaults in conf/algorithm/<method>.yaml.

    python scripts/apply_chosen.py results/tune_mnist20_dir01/chosen.yaml

For every method in ``chosen.yaml`` (written by ``lightning_gapsl.compare`` stage tune):
its ``optim=`` / ``optim.*`` overrides become the yaml's ``optim:`` entry (the optimizer
``optim=method`` runs it with) and each ``algorithm.<key>=<value>`` replaces that key's
line. A key the yaml does not have is an error: the grid tuned something the method file
does not document.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def optim_entry(overrides: list[str]) -> dict:
    """The optimizer a chosen point ran with: its optim group file plus its optim.* keys."""
    name = next((o.split("=", 1)[1] for o in overrides if o.startswith("optim=")), "sgd")
    entry = yaml.safe_load((CONF / "optim" / f"{name}.yaml").read_text())
    for o in overrides:
        if o.startswith("optim."):
            key, value = o[len("optim."):].split("=", 1)
            entry[key] = yaml.safe_load(value)
    return entry


def apply(method: str, overrides: list[str], point: str, source: str) -> None:
    path = CONF / "algorithm" / f"{method}.yaml"
    text = path.read_text()
    for o in overrides:
        if not o.startswith("algorithm."):
            continue
        key, value = o[len("algorithm."):].split("=", 1)
        text, count = re.subn(rf"(?m)^{re.escape(key)}: .*$", f"{key}: {value}", text)
        if count != 1:
            raise SystemExit(f"{path}: no single line '{key}: ...' to set from {o}")
    entry = optim_entry(overrides)
    line = "optim: {" + ", ".join(f"{k}: {entry[k]}" for k in
                                  ("name", "lr", "momentum", "weight_decay")) + "}"
    comment = (f"# The optimizer this method runs with unless optim=sgd|adam or optim.* is given\n"
               f"# (optim=method, the default): chosen by the tuning grid on validation, point\n"
               f"# {point} of {source}.\n")
    text, count = re.subn(r"(?ms)^# The optimizer this method runs with.*?^optim: \{.*?\}$",
                          (comment + line).replace("\\", "\\\\"), text)
    if count != 1:
        raise SystemExit(f"{path}: no 'optim:' entry to replace")
    path.write_text(text)
    print(f"{method}: {point}")


def main(chosen_path: str) -> None:
    text = Path(chosen_path).read_text()
    points = dict(re.findall(r"(?m)^# (\w+): (\S+)$", text))
    source = str(Path(chosen_path).resolve().relative_to(ROOT))
    for method, overrides in yaml.safe_load(text).items():
        apply(method, list(overrides), points.get(method, "?"), source)


if __name__ == "__main__":
    main(*sys.argv[1:])
