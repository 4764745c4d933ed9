"""Parallel split learning (PSL): the server loss and the (identity) gradient transform.

In PSL every client ``i`` runs its own client segment on a batch of ``B`` samples and
sends the cut-layer activations to the server, which runs one shared server segment on
all ``N`` clients' batches at once. The server loss is the size-weighted sum of the
per-client mean losses, ``L = sum_i w_i * L_i`` with ``w_i = n_i / sum_j n_j``, so that
the server segment follows the gradient of the population loss whatever the split of
the data. The cut-layer gradients go back to the clients unchanged: PSL's gradient
transform is the identity (GAPSL replaces it, see `lightning_gapsl.methods.gapsl.math`).

Everything here is a pure function over tensors: no process groups, no Lightning, no
module state, and no input is modified in place.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["client_loss_weights", "per_client_cross_entropy", "weighted_client_loss"]


def client_loss_weights(client_sizes: Tensor) -> Tensor:
    """Return ``w_i = n_i / sum_j n_j`` as a float32 tensor of shape ``(N,)``.

    Args:
        client_sizes: ``(N,)`` number of training samples held by each client (any
            real or integer dtype). All must be ``>= 0`` and at least one ``> 0``.

    Returns:
        ``(N,)`` float32 weights that sum to 1 (up to float32 rounding).

    Raises:
        ValueError: on a wrong shape, a negative size, or an all-zero vector.

    The division is done in float64 and only then rounded to float32: client sizes can
    reach millions, where float32 integers are no longer exact, and rounding once at the
    end keeps ``sum(w)`` within one float32 ulp of 1.
    """
    if client_sizes.dim() != 1 or client_sizes.numel() == 0:
        raise ValueError(
            f"client_sizes must be a non-empty 1-D tensor (N,), got shape "
            f"{tuple(client_sizes.shape)}"
        )
    sizes = client_sizes.detach().to(torch.float64)  # (N,)
    if bool((sizes < 0).any()):
        raise ValueError(f"client_sizes must be >= 0, got {client_sizes.tolist()}")
    total = sizes.sum()  # ()
    if not bool(total > 0):
        raise ValueError("client_sizes must contain at least one positive size")
    return (sizes / total).to(torch.float32)  # (N,)


def weighted_client_loss(logits: Tensor, labels: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """The server's PSL loss: ``sum_i w_i * mean_b CE(logits[i, b], labels[i, b])``.

    Args:
        logits: ``(N, B, C)`` server-segment outputs, client ``i``'s batch in row ``i``.
        labels: ``(N, B)`` integer class indices in ``[0, C)`` (no ``ignore_index``:
            every sample counts in its client's mean).
        weights: ``(N,)`` per-client loss weights, normally `client_loss_weights`.

    Returns:
        ``(loss, per_client)``: ``loss`` is a differentiable scalar; ``per_client`` is
        the ``(N,)`` per-client mean cross-entropy, detached (it is for logging and
        diagnostics, and must not keep the graph alive).

    The cross-entropy is ONE call over the flattened ``N * B`` batch with
    ``reduction="none"`` and is then reshaped, rather than a Python loop over clients:
    one kernel launch instead of ``N``, and the per-sample values are exactly those of
    ``F.cross_entropy`` on each client's batch, so with ``N = 1`` and ``w = [1]`` the
    loss is the plain ``F.cross_entropy(logits[0], labels[0])`` up to the summation
    order of the batch mean (a few float32 ulps; exact to ~1e-16 in float64).
    """
    if logits.dim() != 3:
        raise ValueError(f"logits must be (N, B, C), got shape {tuple(logits.shape)}")
    n, b, _ = logits.shape
    if tuple(labels.shape) != (n, b):
        raise ValueError(
            f"labels must be (N, B) = {(n, b)} to match logits, got {tuple(labels.shape)}"
        )
    if tuple(weights.shape) != (n,):
        raise ValueError(f"weights must be (N,) = ({n},), got {tuple(weights.shape)}")
    if b == 0:
        raise ValueError("every client batch must hold at least one sample (B >= 1)")

    per_client = per_client_cross_entropy(logits, labels)  # (N,)
    # Weights are data (client sizes), not parameters: cast to the loss dtype so a
    # float64 model is not silently downcast, and never differentiate through them.
    loss = (weights.detach().to(per_client.dtype) * per_client).sum()  # ()
    return loss, per_client.detach()


def per_client_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Each client's mean cross-entropy, differentiable: (N, B, C), (N, B) -> (N,).

    One ``F.cross_entropy`` call over the flattened N*B samples, then a per-client mean.
    """
    n, b, c = logits.shape
    per_sample = F.cross_entropy(
        logits.reshape(n * b, c), labels.reshape(n * b), reduction="none"
    )  # (N*B,)
    return per_sample.reshape(n, b).mean(dim=1)
