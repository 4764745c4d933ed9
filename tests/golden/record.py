"""Golden numbers of every method on a small fixed setting, kept to prove refactors exact.

    python -m tests.golden.record [CASE ...]   # rewrites tests/golden/methods_digits.json

Recorded once before a refactor of the runtime; `tests/distributed/test_layout_invariance.py`
re-runs the same cases in 1 and 3 processes and requires every recorded number to be
equal to the last bit (JSON keeps Python floats exactly). Regenerate only when numbers
change on purpose, and say so in the commit.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

GOLDEN = Path(__file__).with_name("methods_digits.json")

# Per-epoch keys compared to the last bit (timing keys are left out: they vary).
EXACT_KEYS = ("train_loss", "test_acc_mean", "test_acc_min", "test_acc_global", "bytes_up",
              "bytes_down", "sim_latency_s", "client_acc", "client_test_loss", "leader_freq",
              "gapsl/leaders", "gapsl/cos_before", "gapsl/cos_after")

# Every method, with settings that exercise its round and schedule logic in 2 epochs.
# The options pinned here keep the conventions in force when the numbers were recorded
# (the defaults moved to each method's reference later: README, fidelity table).
INDEPENDENT = "model.client_init=independent"
LOCKSTEP = "algorithm.rounds=lockstep"
CASES = {
    "psl": ["algorithm=psl", INDEPENDENT],
    "gapsl_cut": ["algorithm=gapsl", "algorithm.reading=cut", "algorithm.align_mode=norm",
                  INDEPENDENT],
    "gapsl_client": ["algorithm=gapsl", "algorithm.reading=client", "algorithm.align_mode=norm",
                     INDEPENDENT],
    "sglr": ["algorithm=sglr", "algorithm.avg_phase=0.5", INDEPENDENT,
             "algorithm.avg_phase_where=first", "algorithm.server_loss=weighted"],
    "sfl_v1": ["algorithm=sfl_v1", LOCKSTEP, "algorithm.round_steps=5"],
    "sfl_v2": ["algorithm=sfl_v2", "algorithm.turns=batch", LOCKSTEP, "algorithm.round_steps=5"],
    "fedavg": ["algorithm=fedavg", LOCKSTEP, "algorithm.round_steps=5"],
    "locfedmix": ["algorithm=locfedmix", LOCKSTEP, "algorithm.round_steps=5", "algorithm.fedavg_interval=2",
                  "algorithm.rec_weight=0.1", "algorithm.mix_alpha=2.0",
                  "algorithm.average_decoders=false"],
    "cse_fsl": ["algorithm=cse_fsl", LOCKSTEP, "algorithm.round_steps=5", "algorithm.server_interval=3",
                "algorithm.server_steps=averaged"],
    "fsl_sage": ["algorithm=fsl_sage", LOCKSTEP, "algorithm.round_steps=5",
                 "algorithm.server_interval=5", "algorithm.align_interval=2",
                 "algorithm.server_steps=averaged", "algorithm.align_when=end",
                 "algorithm.align_epochs=5", "algorithm.align_batch=128",
                 "algorithm.align_optimizer=fresh"],
    "sl": ["algorithm=sl", "algorithm.turns=batch"],
    # Whole-epoch turns (recorded when they were added): an epoch is every client's pass.
    "sl_epoch_turns": ["algorithm=sl", "data.steps_per_epoch=null"],
    "sfl_v2_epoch_turns": ["algorithm=sfl_v2", "data.steps_per_epoch=null", "optim=adam",
                           "optim.lr=0.001"],
}
# Small and fast; equal threads per process so 1 and 3 processes agree bitwise.
COMMON = ["data=digits", "optim=sgd", "logger=none", "trainer.progress_bar=false",
          "trainer.timeout_s=60", "data.num_clients=5", "trainer.max_epochs=2", "trainer.threads=1",
          "data.steps_per_epoch=15", "data.val_fraction=0"]
LAYOUTS = {"one": ["trainer.devices=1"], "three": ["trainer.devices=3"]}


def exact_fields(summary: dict) -> list[dict]:
    """The per-epoch numbers a refactor must not change."""
    return [{k: h[k] for k in EXACT_KEYS if k in h} for h in summary["history"]]


def record(cases: list[str]) -> dict:
    from lightning_gapsl.train import compose, run

    golden = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            overrides = CASES[case]
            for layout, extra in LAYOUTS.items():
                cfg = compose([*COMMON, *overrides, *extra], f"{tmp}/{case}-{layout}")
                golden[f"{case}/{layout}"] = exact_fields(json.loads(Path(run(cfg)).read_text()))
                print(case, layout, file=sys.stderr)
    return golden


if __name__ == "__main__":
    # Optional case names: re-record only those (numbers that changed on purpose).
    golden = json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else {}
    golden.update(record(sys.argv[1:] or list(CASES)))
    GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
    print(GOLDEN)
