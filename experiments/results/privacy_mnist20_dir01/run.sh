#!/bin/bash
# How results/privacy_mnist20_dir01 was made (issue 25): every method on MNIST, 20 clients,
# Dirichlet 0.1, 1 epoch, seed 0, one process, privacy=fast, each method's own optimizer.
# About 15 minutes on 2 shared cores. Run from the repository root.
set -e
methods="psl gapsl epsl sglr sfl_v1 sfl_v2 fedavg locfedmix cse_fsl fsl_sage sl centralized"
for m in $methods; do
  python -m lightning_gapsl.train algorithm=$m data=mnist data.num_clients=20 \
    data.partition=dirichlet data.alpha=0.1 trainer.devices=1 trainer.max_epochs=1 \
    logger=csv trainer.progress_bar=false privacy=fast seed=0 output_dir=outputs/privacy_mnist20/$m
done
python -m lightning_gapsl.privacy.report results/privacy_mnist20_dir01 \
  $(for m in $methods; do echo outputs/privacy_mnist20/$m; done)
