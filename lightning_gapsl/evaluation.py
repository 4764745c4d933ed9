"""Evaluation of every hosted client's model, counted with torchmetrics.

One row per client: per-class true positives (C), per-class support (C) and the loss
sum, all float64, so rows add up exactly over batches and ranks. Accuracy is
sum(tp) / sum(support); per-class accuracy tp_c / support_c (what non-IID users look
at: a client that never saw a class scores 0 on it).
"""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics.functional.classification import multiclass_stat_scores

from lightning_gapsl.models.stacked import StackedSegments

_TP, _SUPPORT = 0, 4  # columns of multiclass_stat_scores: tp, fp, tn, fn, support

# Samples per evaluation forward. The batch (``data.eval_batch_size``, 1000 by default)
# still sets how losses are summed; only its forward runs in pieces: LeNet's activations
# for 1000 MNIST images at once peak at ~80 MiB, for 256 at ~30 MiB.
FORWARD_CHUNK = 256


def row_width(num_classes: int) -> int:
    return 2 * num_classes + 1


@torch.no_grad()
def evaluate_clients(clients: StackedSegments, server: nn.Module, x: torch.Tensor,
                     y: torch.Tensor, num_classes: int, only_first: bool) -> torch.Tensor:
    """Every hosted client's model on one batch: (K, 2C + 1) rows (see module docstring).

    ``only_first``: the clients hold identical models (after a FedAvg round, or SL's one
    segment): evaluate segment 0 once and repeat its row. Otherwise one client at a
    time: stacking K copies of a 1000-sample batch would allocate K times the
    activations at once for no speed gain on CPU. The forward runs `FORWARD_CHUNK`
    samples at a time; a sample's logits do not depend on the piece it is in, so the
    rows equal a one-piece forward's.
    """
    count = 1 if only_first else clients.num_segments
    rows = []
    for k in range(count):
        logits = torch.cat([server(clients.forward_one(k, x[i:i + FORWARD_CHUNK]))
                            for i in range(0, x.shape[0], FORWARD_CHUNK)])  # (b, C)
        stats = multiclass_stat_scores(logits.argmax(-1), y, num_classes, average=None,
                                       validate_args=False)  # (C, 5)
        loss = nn.functional.cross_entropy(logits, y, reduction="sum")
        rows.append(torch.cat([stats[:, _TP].double(), stats[:, _SUPPORT].double(),
                               loss.double().view(1)]))
    return torch.stack(rows)  # (count, 2C + 1)


def summarize(rows: torch.Tensor, num_classes: int) -> dict[str, torch.Tensor]:
    """(N, 2C + 1) summed rows -> accuracy (N,), loss (N,), per-class accuracy (N, C)."""
    tp, support = rows[:, :num_classes], rows[:, num_classes:2 * num_classes]
    count = support.sum(1)
    return {
        "acc": (tp.sum(1) / count).cpu(),
        "loss": (rows[:, -1] / count).cpu(),
        "class_acc": (tp / support).cpu(),  # NaN where a class is absent from the split
    }
