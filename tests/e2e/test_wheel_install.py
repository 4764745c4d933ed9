"""End-to-end test (about 30 s): the package as a wheel, installed into a fresh venv.

Builds the wheel from a copy of the files the package is made of, installs it with
``--no-deps`` into a new virtual environment (torch and the other dependencies come
from this environment through a ``.pth`` path entry: nothing is downloaded), and runs
the console scripts from an empty temporary folder, with a user config folder added
through ``hydra.searchpath``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "setup.py", "README.md", "lightning_gapsl", "callbacks", "conf")
# Research beside the library in the source tree; the wheel must leave it out.
RESEARCH = ("experiments/conf", "experiments/tools")


def _sh(*cmd, cwd=None, env=None) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(c) for c in cmd],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"{cmd}: {proc.stderr[-3000:]}"
    return proc


def test_wheel_runs_from_any_folder(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in (*SOURCES, *RESEARCH):
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=skip)
        else:
            shutil.copy(REPO / name, src / name)
    _sh(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        tmp_path / "dist",
        src,
    )
    (wheel,) = (tmp_path / "dist").glob("lightning_gapsl-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "lightning_gapsl/conf/config.yaml" in names
    assert "lightning_gapsl/callbacks/logging.py" in names
    assert not any(n.startswith("callbacks/") for n in names)  # no top-level `callbacks`
    assert not any("experiment" in n for n in names), [n for n in names if "experiment" in n]

    env_dir = tmp_path / "fresh"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    _sh(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q", wheel)
    site = Path(
        _sh(
            python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"
        ).stdout.strip()
    )
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    work = tmp_path / "elsewhere"
    (work / "myconf" / "data").mkdir(parents=True)
    (work / "myconf" / "data" / "tiny.yaml").write_text(
        "name: digits\nnum_clients: 4\nbatch_size: 16\neval_batch_size: 400\n"
        "max_train: 320\nmax_test: 100\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(WANDB_MODE="offline", PATH=f"{env_dir / 'bin'}:{env['PATH']}")
    where = _sh(
        python,
        "-c",
        "import lightning_gapsl, importlib.util as u; "
        "print(lightning_gapsl.__file__); print(u.find_spec('callbacks'))",
        cwd=work,
        env=env,
    ).stdout.split()
    assert where[0].startswith(str(site)) and where[1] == "None", where
    proc = _sh(
        env_dir / "bin" / "lgapsl-train",
        "data=tiny",
        "trainer.max_epochs=1",
        "trainer.progress_bar=false",
        f"hydra.searchpath=[file://{work / 'myconf'}]",
        cwd=work,
        env=env,
    )
    summary = json.loads(Path(proc.stdout.strip().splitlines()[-1]).read_text())
    assert summary["epochs"] == 1 and summary["num_clients"] == 4 and summary["devices"] == 3
    assert summary["test_acc_mean"] > 0
    for script in ("lgapsl-compare", "lgapsl-bench"):
        _sh(env_dir / "bin" / script, "--help", cwd=work, env=env)
