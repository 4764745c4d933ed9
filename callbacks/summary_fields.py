"""What each summary.json field holds: the one source that docs/reference.md is generated
from (`scripts/config_reference.py`) and that the tests check every real summary against.

Keys are exact names, or patterns with ``<name>`` standing for any word (a registered
metric's name, a method's diagnostic).
"""

from __future__ import annotations

import re

SUMMARY = {
    "algorithm": "The method's `algorithm=` key.",
    "num_clients": "Clients N (1 for centralized).",
    "devices": "Processes of the run (`trainer.devices`), server included.",
    "epochs": "Epochs trained (entries in `history`).",
    "steps": "Training steps taken.",
    "seed": "The run seed.",
    "test_acc_mean": "Mean over clients of each client's model (its segment + the server) on the "
    "whole test set.",
    "test_acc_min": "The worst client's test accuracy.",
    "test_acc_global": "Test accuracy of the one model that serves every client, where one exists "
    "(centralized, SL, FedAvg-family runs evaluated right after averaging); null otherwise.",
    "val_acc_mean": "`test_acc_mean` on the validation split carved from the training data "
    "(every tuning choice is made on it); null without a validation split.",
    "val_acc_min": "The worst client's validation accuracy.",
    "client_class_acc": "Each client's accuracy on each class of the test set (N x C, torchmetrics); "
    "null for a class absent from the split.",
    "train_loss_final": "Mean training loss of the last epoch.",
    "bytes_up": "Payload bytes client -> server over the run, counted from the real tensors "
    "(activations + labels, models for averaging, hand-offs; headers, telemetry and evaluation not counted).",
    "bytes_down": "Payload bytes server -> client (gradients, averaged models; a broadcast counted "
    "once).",
    "sim_latency_s": "Simulated wall clock of the run from the latency model (`latency.*`).",
    "wall_s": "Real seconds of the whole fit, evaluation included.",
    "samples_per_s": "Training samples (every participating client's slot of a step) per second of "
    "training time, evaluation excluded.",
    "history": "One entry per evaluated epoch: the fields of the `history[]` table below.",
    "privacy": "The leakage evaluation (`privacy=fast|full`; absent with `off`): the `privacy.` "
    "table below.",
    "test_<name>_mean": "A registered metric's mean over clients on the test set (`register_metric`)."
    "A registered metric's mean over clients on the test set (`register_metric`).",
    "val_<name>_mean": "The same on the validation split.",
}

HISTORY = {
    "epoch": "Epoch index (0-based).",
    "steps": "Training steps so far.",
    "train_loss": "Mean training loss of the epoch.",
    "test_acc_mean": "As in the summary, after this epoch.",
    "test_acc_min": "As in the summary, after this epoch.",
    "test_acc_global": "As in the summary, after this epoch.",
    "val_acc_mean": "As in the summary, after this epoch.",
    "val_acc_min": "As in the summary, after this epoch.",
    "bytes_up": "Uplink bytes so far.",
    "bytes_down": "Downlink bytes so far.",
    "bytes_up_epoch": "Uplink bytes of this epoch.",
    "bytes_down_epoch": "Downlink bytes of this epoch.",
    "sim_latency_s": "Simulated seconds so far.",
    "wall_s": "Real seconds so far.",
    "samples_per_s": "Training throughput of this epoch.",
    "train_s": "Training seconds of this epoch (evaluation excluded).",
    "samples": "Training samples of this epoch.",
    "client_acc": "Each client's test accuracy (N,).",
    "client_test_loss": "Each client's test loss (N,).",
    "client_val_acc": "Each client's validation accuracy (N,).",
    "client_class_acc": "Each client's per-class test accuracy (N x C).",
    "participants": "Participant slots of this epoch (`participation.*`; with partial participation "
    "only).",
    "dropped_dropout": "Participants dropped by `participation.dropout` this epoch.",
    "dropped_deadline": "Participants dropped by `participation.deadline_s` this epoch.",
    "test_<name>_mean": "A registered metric's mean over clients on the test set.",
    "val_<name>_mean": "The same on the validation split.",
    "client_test_<name>": "A registered metric per client on the test set (N,).",
    "client_val_<name>": "The same on the validation split.",
    "<name>/<name>": "A method's diagnostic, averaged over the epoch's steps (GAPSL: "
    "`gapsl/leaders`, `gapsl/cos_before`, `gapsl/cos_after`, `gapsl/leader_freq` per client).",
}

PRIVACY = {
    "mode": "`fast` or `full`.",
    "leakage": "Leakage index, mean over evaluated clients: 0 = a constant client, 1 = the "
    "identity, stronger attacker per client.",
    "leakage_worst": "The most exposed client's leakage index.",
    "leakage_ssim": "The same index on SSIM instead of PSNR.",
    "psnr": "PSNR (dB) of the reconstructions, mean over evaluated clients.",
    "ssim": "SSIM of the reconstructions (torchmetrics), mean over evaluated clients.",
    "dcor": "Bias-corrected distance correlation of inputs and smashed data (Euclidean, "
    "float64), mean over evaluated clients.",
    "threat": "`realistic` (the server receives client weights: white-box attack) or `bound` "
    "(a worst-case bound).",
    "exposure": "What reaches the server: smashed data, labels, cut gradient, client weights, "
    "auxiliary models, defenses.",
    "clients_evaluated": "The clients whose segments were attacked.",
    "mean": "Every metric (leakage, leakage_ssim, psnr, ssim, mse, dcor, leakage_ridge) "
    "averaged over evaluated clients.",
    "worst": "The most exposed client and its metrics.",
    "reference": "The constant and identity clients under the same attackers (the index's 0 and "
    "1).",
    "clients": "Per evaluated client: each attacker's scores and the distance correlation.",
    "eval_s": "Seconds the evaluation took.",
}

TABLES = {"": SUMMARY, "history[].": HISTORY, "privacy.": PRIVACY}


def _matches(key: str, documented: dict[str, str]) -> bool:
    for pattern in documented:
        regex = re.escape(pattern).replace(re.escape("<name>"), r"\w+")
        if re.fullmatch(regex, key):
            return True
    return False


def undocumented(summary: dict) -> list[str]:
    """Keys of a real summary (its history and privacy block included) with no entry here."""
    missing = [k for k in summary if not _matches(k, SUMMARY)]
    for entry in summary.get("history", []):
        missing += [f"history[].{k}" for k in entry if not _matches(k, HISTORY)]
    missing += [f"privacy.{k}" for k in summary.get("privacy", {}) if not _matches(k, PRIVACY)]
    return sorted(set(missing))
