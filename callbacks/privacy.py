"""Runs the leakage evaluation (`lightning_gapsl.privacy`) when training ends, on every
rank (each evaluates the clients it hosts), before summary.json is written.

The server keeps the ``privacy`` block on the module for `callbacks.summary`, logs the
headline numbers as ``privacy/<metric>`` through the run's loggers (CSV, W&B) and saves
the reconstructions of the first 8 pool images in ``<output_dir>/privacy_recon.pt``.
"""

from __future__ import annotations

import os

import lightning as L
import torch

from lightning_gapsl.privacy.evaluate import evaluate_run

LOGGED = ("leakage", "leakage_worst", "leakage_ssim", "psnr", "ssim", "dcor")


class PrivacyCallback(L.Callback):
    def __init__(self, cfg):
        self.cfg = cfg

    def on_train_end(self, trainer, pl_module) -> None:
        if self.cfg.privacy.mode == "off" or pl_module.preempted_at is not None:
            return  # a pre-empted run is evaluated by its resumed run
        global_model = pl_module.method.global_model
        last_epoch = self.cfg.trainer.max_epochs - 1
        one_model = bool(global_model and global_model(pl_module.state, last_epoch))
        result = evaluate_run(pl_module.state, pl_module.transport, one_model)
        if result is None:
            return
        pl_module.privacy, images = result
        torch.save(images, os.path.join(self.cfg.output_dir, "privacy_recon.pt"))
        metrics = {f"privacy/{k}": float(pl_module.privacy[k]) for k in LOGGED}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
            logger.save()
