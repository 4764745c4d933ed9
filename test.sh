#!/usr/bin/env bash
# Command 2: run the test suite (installs first if needed). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/install.sh
export WANDB_MODE=offline WANDB_SILENT=true
.venv/bin/ruff format --check .  # formatting (ruff format; pyproject.toml)
.venv/bin/ruff check .           # lint: pyflakes, pycodestyle, bugbear, pyupgrade
.venv/bin/mypy                   # types of the methods and the config (pyproject.toml)
exec .venv/bin/python -m pytest -q "$@"
