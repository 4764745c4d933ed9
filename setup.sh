#!/usr/bin/env bash
# Command 1: set everything up and run the default job (GAPSL on MNIST, 10 clients,
# Dirichlet alpha=0.3, 1 server + 2 client processes). Extra arguments are Hydra
# overrides, e.g. ./setup.sh trainer.max_epochs=1
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/install.sh
exec .venv/bin/python -m lightning_gapsl.train "$@"
