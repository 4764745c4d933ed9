"""The GPU check's dry run (tens of seconds): ``scripts/gpu_check.sh --dry-run`` runs every
section on the CPU with tiny sizes and writes the result files the device run writes; bad
input stops it with one line naming what is valid; a section that fails says so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
SECTIONS = ("env", "smoke", "throughput", "nccl", "numerics", "precision", "bench", "pytest")
# Sections every item of which needs CUDA: the dry run may skip them whole, saying why.
CUDA_ONLY = {"pytest"}

pytestmark = pytest.mark.slow


def _gpu_check(tmp_path: Path, *args: str, timeout: float = 150, **env: str):
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in ("ONLY", "DEVICE", "BUDGET_S", "OMP_NUM_THREADS")
    }
    environ.update(
        OUT=str(tmp_path / "out"), W=str(tmp_path / "work"), PYTHON=sys.executable, **env
    )
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _skips(items: dict) -> dict[str, str]:
    return {k: v["skipped"] for k, v in items.items() if isinstance(v, dict) and "skipped" in v}


def test_dry_run_passes_every_section(tmp_path):
    proc = _gpu_check(tmp_path, "--dry-run")
    out = tmp_path / "out"
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    records = {}
    for name in SECTIONS:
        path = out / f"{name}.json"
        assert path.is_file(), f"no {path.name}"
        rec = records[name] = json.loads(path.read_text())
        assert (rec["section"], rec["device"], rec["rc"]) == (name, "cpu", 0), rec
        assert rec["failures"] == [], (name, rec["failures"])
        if name in CUDA_ONLY:
            assert rec["status"] == "skipped" and rec["reason"].startswith("no CUDA"), rec
        else:
            assert rec["status"] == "passed", (name, rec["status"], rec["reason"])
        # an item left out is left out for want of CUDA, never for want of time
        for key, why in _skips(rec["items"]).items():
            assert why.startswith("no CUDA"), (name, key, why)
    summary = (out / "summary.md").read_text()
    assert all(f"| {name} | " in summary for name in SECTIONS), summary
    assert (out / "run.log").is_file() and (out / "pytest.txt").is_file()

    # OMP_NUM_THREADS=1 by default in the dry run, and every section runs with it
    assert records["env"]["items"]["torch_threads"] == 1
    assert records["throughput"]["items"]["setup"]["threads"] == 1
    items = records["throughput"]["items"]
    assert items["client_exec_auto"]["auto_picks"] == "loop"  # auto on the CPU
    for run in (
        "central_NxB_loop",
        "psl_grouped",
        "psl_loop",
        "psl_auto",
        "psl_vmap",
        "psl_grouped_bf16",
        "gapsl_grouped",
    ):
        assert items[run]["samples_per_s"] > 0 and items[run]["estimate_bytes"] > 0, run
    assert items["throughput_vs_centralized"]["reference_samples_per_s"] > 0
    nccl = records["nccl"]["items"]
    assert nccl["subgroup backend"]["value"] == "gloo"
    assert nccl["all_reduce_sum_ float64 (FedAvg)"]["ok"]
    kernels = [k for k in records["numerics"]["items"] if k.startswith("kernels/")]
    assert {k.split("/")[1] for k in kernels} == {"lenet_cut1", "resnet18_cut2"}
    assert {k.split("/")[-1] for k in kernels} == {"loop", "grouped", "vmap"}
    assert records["numerics"]["items"]["digits_psl/diffs"]["deterministic_rerun_equal"]
    assert records["precision"]["items"]["resume/gapsl/cpu"]["equal"] is True
    bench = records["bench"]["items"]["result"]
    assert bench["samples_per_s"]["psl_in_process"] > 0
    assert (
        records["pytest"]["items"]["test_functions"][
            "tests/unit/test_client_exec.py::test_grouped_and_vmap_equal_loop_on_cuda"
        ]
        == 1
    )


@pytest.mark.parametrize(
    "args, env, message",
    [
        (
            (),
            {"ONLY": "smoke,nosuchsection"},
            "unknown section 'nosuchsection' in ONLY; valid sections: env, smoke, throughput, nccl, "
            "numerics, precision, bench, pytest",
        ),
        (("--dry-run",), {"ONLY": "nosuchsection"}, "unknown section 'nosuchsection'"),
        ((), {"DEVICE": "tpu"}, "DEVICE='tpu' is not valid; use cuda"),
        (("--fast",), {}, "unknown argument '--fast'"),
    ],
)
def test_bad_input_stops_before_anything_runs(tmp_path, args, env, message):
    proc = _gpu_check(tmp_path, *args, timeout=30, **env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert not (tmp_path / "out").exists()  # nothing written


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the run without a GPU")
def test_the_device_check_without_a_gpu_fails_at_env(tmp_path):
    proc = _gpu_check(tmp_path, timeout=60, ONLY="env,smoke")
    assert proc.returncode == 1, (proc.stdout + proc.stderr)[-3000:]
    env = json.loads((tmp_path / "out" / "env.json").read_text())
    assert env["status"] == "failed" and "torch sees no CUDA device" in env["reason"]
    smoke = json.loads((tmp_path / "out" / "smoke.json").read_text())
    assert smoke["status"] == "skipped" and smoke["reason"].startswith("env failed")
    assert not (tmp_path / "out" / "throughput.json").exists()  # not wanted (ONLY)
    assert "failed sections: env" in proc.stdout
