"""Every command the docs show is one the project accepts (`scripts/check_docs.py`), and the
check rejects the commands a stale page would hold."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("check_docs", ROOT / "scripts" / "check_docs.py")
check_docs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_docs)

PAGE = """
```bash
python -m lightning_gapsl.train algorithm=psl data.alpha=0.1   # a comment
python -m lightning_gapsl.train data.alpha=0 \\
  algorithm=psl
```

    python -m lightning_gapsl.bench --preset nope

Inline: `python -m lightning_gapsl.compare experiment=tune_mnist20_dir01
stage=sideways`, `python experiments/tools/gone.py`, `lgapsl-compare`.
"""


def test_commands_are_found_in_fences_indented_blocks_and_wrapped_inline_code():
    found = check_docs.commands(PAGE)
    assert "python -m lightning_gapsl.train algorithm=psl data.alpha=0.1" in found
    assert "python -m lightning_gapsl.train data.alpha=0 algorithm=psl" in found
    assert "python -m lightning_gapsl.bench --preset nope" in found
    assert "python -m lightning_gapsl.compare experiment=tune_mnist20_dir01 stage=sideways" in found
    assert len(found) == 6


@pytest.mark.parametrize(
    ("command", "why"),
    [
        ("python -m lightning_gapsl.train data.alpha=0 algorithm=psl", "data.alpha"),
        ("python -m lightning_gapsl.train algorithm=nope", "algorithm='nope' is not valid"),
        ("python -m lightning_gapsl.compare experiment=nope", "no nope.yaml"),
        ("python -m lightning_gapsl.compare experiment=tune_mnist20_dir01 stage=x", "stage=x"),
        ("python -m lightning_gapsl.bench --preset nope", "--preset nope"),
        ("python experiments/tools/gone.py", "no file"),
        ("python experiments/tools/who_wins.py experiments/results/gone", "no folder"),
        ("python -m lightning_gapsl.gone", "no module"),
    ],
)
def test_a_stale_command_is_rejected(command, why):
    assert why in (check_docs.problem(command) or "")


@pytest.mark.parametrize(
    "command",
    [
        "python -m lightning_gapsl.train algorithm=gapsl data=fmnist data.alpha=0.1",
        "python -m lightning_gapsl.train algorithm=METHOD seed=S",  # placeholders
        "python -m lightning_gapsl.compare experiment=<experiment> stage=all",
        "python experiments/tools/who_wins.py experiments/results/tune_mnist20_dir01 --long",
        "lgapsl-compare",
    ],
)
def test_a_current_command_is_accepted(command):
    assert check_docs.problem(command) is None


def test_every_command_in_the_docs_is_accepted():
    assert check_docs.failures() == []
