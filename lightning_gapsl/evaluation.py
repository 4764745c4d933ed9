"""Evaluation of every hosted client's model, counted with torchmetrics.

One row per client: per-class true positives (C), per-class support (C) and the loss
sum, all float64, so rows add up exactly over batches and ranks. Accuracy is
sum(tp) / sum(support); per-class accuracy tp_c / support_c (what non-IID users look
at: a client that never saw a class scores 0 on it). Each registered metric
(`lightning_gapsl.registry.Metric`) appends its own additive statistics to the row.
"""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics.functional.classification import multiclass_stat_scores

from lightning_gapsl.models.stacked import StackedSegments
from lightning_gapsl.registry import METRICS, Metric

_TP, _SUPPORT = 0, 4  # columns of multiclass_stat_scores: tp, fp, tn, fn, support

# Samples per evaluation forward. The batch (``data.eval_batch_size``, 1000 by default)
# still sets how losses are summed; only its forward runs in pieces: LeNet's activations
# for 1000 MNIST images at once peak at ~80 MiB, for 256 at ~30 MiB.
FORWARD_CHUNK = 256


def metrics() -> list[Metric]:
    """The registered metrics, in registration order."""
    return [METRICS.get(name) for name in METRICS.names()]


def row_width(num_classes: int) -> int:
    return 2 * num_classes + 1 + sum(m.width(num_classes) for m in metrics())


def _metric_stats(logits: torch.Tensor, y: torch.Tensor, num_classes: int) -> list[torch.Tensor]:
    """Every registered metric's statistics of one batch, each float64 ``(width,)``."""
    out = []
    for m in metrics():
        stats = torch.as_tensor(m.batch(logits, y), dtype=torch.float64).reshape(-1)
        if stats.numel() != m.width(num_classes):
            raise ValueError(
                f"metric {m.name}: batch() gave {stats.numel()} statistics, "
                f"width() says {m.width(num_classes)}"
            )
        out.append(stats.to(logits.device))
    return out


@torch.no_grad()
def evaluate_clients(
    clients: StackedSegments,
    server: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    only_first: bool,
) -> torch.Tensor:
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
        logits = torch.cat(
            [
                server(clients.forward_one(k, x[i : i + FORWARD_CHUNK]))
                for i in range(0, x.shape[0], FORWARD_CHUNK)
            ]
        )  # (b, C)
        stats = multiclass_stat_scores(
            logits.argmax(-1), y, num_classes, average=None, validate_args=False
        )  # (C, 5)
        loss = nn.functional.cross_entropy(logits, y, reduction="sum")
        rows.append(
            torch.cat(
                [
                    stats[:, _TP].double(),
                    stats[:, _SUPPORT].double(),
                    loss.double().view(1),
                    *_metric_stats(logits, y, num_classes),
                ]
            )
        )
    return torch.stack(rows)  # (count, 2C + 1)


def summarize(rows: torch.Tensor, num_classes: int) -> dict[str, torch.Tensor]:
    """(N, row_width) summed rows -> accuracy (N,), loss (N,), per-class accuracy (N, C),
    and ``metric/<name>`` (N,) for every registered metric."""
    tp, support = rows[:, :num_classes], rows[:, num_classes : 2 * num_classes]
    count = support.sum(1)
    out = {
        "acc": (tp.sum(1) / count).cpu(),
        "loss": (rows[:, 2 * num_classes] / count).cpu(),
        "class_acc": (tp / support).cpu(),  # NaN where a class is absent from the split
    }
    start = 2 * num_classes + 1
    for m in metrics():  # (N,) per client from its summed statistics
        width = m.width(num_classes)
        out[f"metric/{m.name}"] = torch.as_tensor(
            m.finish(rows[:, start : start + width]), dtype=torch.float64
        ).cpu()
        start += width
    return out
