"""End-to-end test (about 30 s on 2 cores, mostly process start-up): the tuning protocol
as a user runs it, `python -m lightning_gapsl.compare experiment=tune_digits_smoke`:
digits, 4 clients, 2 methods x 2 grid points, 1 epoch, stage all with 2 seeds (the tuning
seed is final seed 0, so 6 training runs), then a resume that trains nothing, then the
final stage again with the leakage evaluation (``final_overrides``: 4 more runs). A
comparison resumes from its record (runs.jsonl) alone."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _compare(out: Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "lightning_gapsl.compare",
        "experiment=tune_digits_smoke",
        f"out_dir={out}",
        "jobs=2",
        *overrides,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)


def test_tune_then_final_on_digits_and_resume(tmp_path):
    out = tmp_path / "tune"
    proc = _compare(out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted(p.parent.relative_to(out).as_posix() for p in out.glob("*/seed*/summary.json"))
    assert len(runs) == 6 and sum(r.endswith("seed1") for r in runs) == 2  # 4 tune + 2 final
    tuning_md = (out / "tuning.md").read_text()
    assert tuning_md.count("**yes**") == 2 and tuning_md.count("| ok |") == 4
    assert f"out_dir={out}" in tuning_md.splitlines()[2]  # the exact command
    results = (out / "results.md").read_text()
    assert "| psl |" in results and "| sglr |" in results and "2/2" in results
    chosen = (out / "chosen.yaml").read_text()
    assert "psl:\n- algorithm=psl\n" in chosen and "sglr:\n- algorithm=sglr\n" in chosen
    meta = json.loads(next(out.glob("*/seed1/run.json")).read_text())
    assert meta["returncode"] == 0 and meta["host"]["torch"] == version("torch")  # provenance
    for name in ("tuning.csv", "results.csv", "runs.csv", "acc_vs_bytes.png", "acc_vs_latency.png"):
        assert (out / name).is_file(), name

    logs = {p: p.stat().st_mtime_ns for p in out.glob("*/seed*/train.log")}
    again = _compare(out, "stage=final")
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/seed*/train.log")} == logs

    # Another machine: the record (runs.jsonl) alone, no run folder. Nothing is trained,
    # the tables come back the same.
    record = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert len(record) == 6 and all(e["summary"] and e["overrides"] for e in record)
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(out / "runs.jsonl", bare / "runs.jsonl")
    proc = _compare(bare, "stage=final")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not list(bare.glob("*/seed*")), "a recorded run was trained again"
    for name in ("results.md", "results.csv"):
        ours = (bare / name).read_text().replace(str(bare), str(out))
        assert ours == (out / name).read_text(), name

    # The final stage with privacy=fast: its own runs (seed 0's is not the tuning run any
    # more), the leakage columns in results.md, privacy.md with both methods.
    leak = tmp_path / "leak"
    shutil.copytree(out, leak)
    for folder in leak.glob("*/seed1"):
        shutil.rmtree(folder)
    stale = _compare(leak, "stage=final", "+experiment.final_overrides=['privacy=fast']")
    assert stale.returncode == 2 and "lightning_gapsl.record --drop" in stale.stderr
    drop = [sys.executable, "-m", "lightning_gapsl.record", "--drop", "*/seed1", str(leak)]
    assert "2 runs dropped" in subprocess.run(drop, capture_output=True, text=True).stdout
    proc = _compare(leak, "stage=final", "+experiment.final_overrides=['privacy=fast']")
    assert proc.returncode == 0, proc.stderr[-3000:]
    finals = sorted(p.parent.name for p in leak.glob("*/seed*/summary.json"))
    assert finals.count("seed0_final") == 2 and finals.count("seed1") == 2
    results = (leak / "results.md").read_text()
    assert "| leakage | leakage worst | dcor | threat |" in results
    rows = [line for line in results.splitlines() if line.startswith(("| psl | ", "| sglr | "))]
    rows = rows[:2]  # the results table's rows (the cost table below starts the same way)
    assert (
        rows[0].startswith("| psl |")
        and rows[1].startswith("| sglr |")
        and all(" ± " in r.split("|")[11] for r in rows)
    )  # 2 seeds each
    assert all("| bound |" in r for r in rows)  # neither sends client weights
    privacy = (leak / "privacy.md").read_text()
    assert "| psl | 2 |" in privacy and "| sglr | 2 |" in privacy
    assert (leak / "privacy_acc_vs_leakage.png").is_file()
