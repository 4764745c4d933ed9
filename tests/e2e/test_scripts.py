"""The diagnosis script the README cites (FSL-SAGE's failed seeds) runs and reports."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_probe_server_prints_one_line_per_step():
    out = subprocess.run(
        [
            sys.executable,
            "scripts/probe_server.py",
            "3",
            "data=digits",
            "optim=sgd",
            "data.num_clients=4",
            "algorithm=fsl_sage",
            "trainer.progress_bar=false",
        ],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [line for line in out.stdout.splitlines() if line.startswith("step")]
    assert [int(line.split()[1]) for line in lines] == [0, 1, 2]
    totals = set()
    for line in lines:
        live = re.search(r"live units ([\d. ]+)  acc", line).group(1).split()
        assert live and all(0.0 <= float(f) <= 1.0 for f in live)
        counts = [int(c) for c in re.search(r"predicted \[(.*)\]", line).group(1).split(",")]
        assert len(counts) == 10
        totals.add(sum(counts))
    (total,) = totals  # every step: the 4 clients' pooled batch, each sample predicted once
    assert total > 0 and total % 4 == 0


def test_probe_server_refuses_methods_without_one_server():
    out = subprocess.run(
        [sys.executable, "scripts/probe_server.py", "3", "data=digits", "algorithm=sfl_v1"],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0 and "needs one server segment" in out.stderr
