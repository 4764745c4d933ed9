#!/bin/bash
# SGLR's claim (PRIVACY.md protocol, on MNIST: fmnist is not loadable on this branch):
# 6 clients IID, Adam 1e-3, constant server rate (lr_exponent=0), phi sweep, 3 paired seeds,
# 1 epoch, every client evaluated (privacy=fast privacy.all_clients=true). Prediction stated
# before running: leakage at phi=1 below phi=0.
# Run from the repository root.
for seed in 0 1 2; do for phi in 0 0.25 0.5 0.75 1; do
  mkdir -p outputs/privacy_sglr; out=outputs/privacy_sglr/phi${phi}_s${seed}
  [ -f $out/summary.json ] && continue
  python -m lightning_gapsl.train \
    algorithm=sglr algorithm.avg_fraction=$phi algorithm.lr_exponent=0 optim=adam optim.lr=0.001 \
    data=mnist data.num_clients=6 data.partition=iid trainer.devices=1 trainer.max_epochs=1 \
    logger=csv trainer.progress_bar=false privacy=fast privacy.all_clients=true seed=$seed \
    output_dir=$out > $out.log 2>&1
  echo "phi=$phi seed=$seed rc=$? $(date +%T)"
done; done
echo done
