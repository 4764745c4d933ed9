"""experiments/tools/apply_chosen.py: a point that changes a method's regime does not become its
default; the reference regime's best validation point does."""

import csv
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location(
    "apply_chosen", ROOT / "experiments/tools/apply_chosen.py"
)
apply_chosen = importlib.util.module_from_spec(spec)
spec.loader.exec_module(apply_chosen)

FIELDS = [
    "method",
    "point",
    "seed",
    "stages",
    "status",
    "cause",
    "val_acc_mean",
    "val_acc_min",
    "train_loss_final",
    "overrides",
]


def _row(method, point, val, overrides, stages="tune", status="ok", cause=""):
    return {
        "method": method,
        "point": point,
        "seed": 100,
        "stages": stages,
        "status": status,
        "cause": cause,
        "val_acc_mean": val,
        "val_acc_min": val,
        "train_loss_final": 0.1,
        "overrides": overrides,
    }


def test_reference_regime_choice_skips_regime_points(tmp_path):
    rows = [
        _row("sfl_v1", "sgd0.05", 0.90, "optim=sgd optim.lr=0.05"),
        _row("sfl_v1", "sgd0.01", 0.92, "optim=sgd optim.lr=0.01"),
        _row("sfl_v1", "sgd0.01", 0.99, "optim=sgd optim.lr=0.01", stages="final"),
        _row(
            "sfl_v1",
            "adam1e-3",
            0.95,
            "optim=adam optim.lr=0.001",
            status="failed",
            cause="at chance",
        ),
        _row(
            "sfl_v1",
            "every_step",
            0.98,
            "optim=sgd algorithm.rounds=lockstep algorithm.round_steps=1",
        ),
        _row("sl", "batch_turns", 0.97, "optim=sgd algorithm.turns=batch"),
        _row("sl", "sgd0.1_m0", 0.93, "optim=sgd optim.lr=0.1 optim.momentum=0.0"),
    ]
    path = tmp_path / "tuning.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    chosen = apply_chosen.reference_regime_choices(path)
    # the failed point ranks below finished ones; final-stage rows are not tuning points
    assert chosen["sfl_v1"].point == "sgd0.01"
    assert chosen["sfl_v1"].overrides == ["optim=sgd", "optim.lr=0.01"]
    assert chosen["sl"].point == "sgd0.1_m0"
    assert apply_chosen.changes_regime(["algorithm.turns=batch"])
    assert not apply_chosen.changes_regime(["algorithm.turn_order=id", "optim=sgd"])
