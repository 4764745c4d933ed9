"""FSL-SAGE: clients train on a gradient estimated by a small auxiliary model.

FSL-SAGE (docs/explanations/methods.md) removes the per-step gradient download of split learning.
Each client holds a small auxiliary model ``a`` from its smashed data to class logits
and trains its segment on the estimate ``d CE(a(z), y) / dz`` (`estimated_cut_grad`)
instead of the server's true cut-layer gradient. Activations still go up every ``q``
steps (`server_step_due`): the server steps on them and keeps the last samples of each
client in a FIFO (`ActivationBuffer`). Every ``l`` rounds (`alignment_due`) the server
recomputes the true cut-layer gradients on the buffer with its current segment
(`server_cut_grads`) and fits each client's auxiliary model so that the model's input
gradient matches them (`alignment_loss`, `align_aux_`), then sends it down.

Gradient scale convention. The alignment compares *per-sample* gradients
``d CE(f(z_j), y_j) / dz_j`` (the gradient of a sum-reduced loss): they do not depend
on how many samples are in a batch, so the buffer can be fitted in minibatches of any
size. `estimated_cut_grad` returns the gradient of the batch-*mean* loss, i.e. the
per-sample estimate divided by ``B``, which is what a client's local loss
``mean_b CE`` back-propagates.

Reference: the authors' code, ``srijith1996/FSL-SAGE`` (``src/algos/fsl_sage.py``
``FSLSAGE.client_step``; ``src/models/aux_models/__init__.py`` ``AuxiliaryModel`` /
``GradScalarAuxiliaryModel``; ``src/models/aux_models/resnet.py`` ``ResNetAuxiliary``;
``src/hydra_config/model/auxiliary/base_auxiliary.yaml``). What it does and what this
module offers for it:

* schedule: client i aligns at ITS first local iteration of rounds 0, l, 2l, ... (``t %
  align_interval == 0 and local_iter == 0``), after that iteration's upload and server
  step and before its own client update: `alignment_due` with ``when="start"``
  (``when="end"``, rounds l-1, 2l-1, ... at their end, is the earlier convention here).
* fit: ``align_epochs = 100`` epochs of Adam (lr 1e-3) over the whole 1000-sample buffer
  in ONE batch (``align_batch_size = max_dataset_size = 1000``), with the optimizer the
  client got at start-up and keeps across alignments: `align_aux_` with
  ``batch_size=None`` and a persistent ``optimizer`` from `alignment_optimizer`.
* auxiliary models: equal at start (``main.py`` loads client 0's auxiliary state into
  every client); for ResNet-18, cut after ``layer2``, a new module with the architecture
  of the server's next stage (``layer3``, its own initialisation) + global average
  pool + linear: `next_stage_aux`.
* uploads: client i uploads when its local iteration within the round is a multiple of
  q (``local_iter % server_update_interval == 0``; the count restarts each round), and
  the server steps once per uploaded batch: `uploads_due`.

Pure functions over modules and tensors: no process groups, no Lightning, no globals;
only `align_aux_` (name ending in ``_``) modifies its arguments, as documented.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_gapsl.methods.shared.intervals import server_step_due
from lightning_gapsl.methods.shared.losses import per_client_cross_entropy

__all__ = [
    "ALIGN_WHEN",
    "AUX_INITS",
    "ActivationBuffer",
    "align_aux_",
    "alignment_due",
    "alignment_loss",
    "alignment_optimizer",
    "aux_model_for",
    "estimated_cut_grad",
    "estimated_cut_grads",
    "next_stage_aux",
    "server_cut_grads",
    "server_step_due",
    "uploads_due",
]

ALIGN_WHEN = ("start", "end")
AUX_INITS = ("fresh", "copy")


# --------------------------------------------------------------------------- models


def aux_model_for(
    activation_shape: Sequence[int], num_classes: int, max_features: int = 16384
) -> nn.Module:
    """A small auxiliary head from smashed data ``(B, *activation_shape)`` to logits ``(B, C)``.

    ``Flatten`` + ``Linear``: a softmax-linear head whose input gradient
    ``W^T (softmax(Wz + b) - y)`` still depends on ``z`` and the label, has a distinct
    weight row per position (so the estimate keeps the spatial structure of the true
    gradient, which a global pool would flatten to a constant per channel), and is cheap
    to send down. For image activations with more than ``max_features`` values, a
    ``s x s`` average pool (``ceil_mode``, smallest ``s`` that fits) comes first to bound
    the head's size (e.g. ResNet's ``(64, 32, 32)`` -> ``s = 2``). No normalisation layer
    (it would couple samples or add state); no adaptive pooling (no deterministic CUDA
    backward).
    """
    shape = tuple(int(s) for s in activation_shape)
    if not shape or min(shape) < 1:
        raise ValueError(f"activation_shape must be non-empty and positive, got {shape}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    layers: list[nn.Module] = []
    features = math.prod(shape)
    if len(shape) == 3 and features > max_features:
        c, h, w = shape
        s = 2
        while c * math.ceil(h / s) * math.ceil(w / s) > max_features and s < max(h, w):
            s += 1
        layers.append(nn.AvgPool2d(kernel_size=s, stride=s, ceil_mode=True))
        features = c * math.ceil(h / s) * math.ceil(w / s)
    layers += [nn.Flatten(), nn.Linear(features, num_classes)]
    return nn.Sequential(*layers)


class _GlobalAvgPool(nn.Module):
    """``(B, C, H, W) -> (B, C)`` mean over space: deterministic on CUDA, unlike
    ``AdaptiveAvgPool2d``'s backward, and with the same value for any input size."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(2, 3))


def next_stage_aux(
    server: nn.Sequential,
    activation_shape: Sequence[int],
    num_classes: int,
    init: str = "fresh",
    seed: int = 0,
) -> nn.Sequential:
    """FSL-SAGE's auxiliary model for deep models: the server's next block + pool + linear.

    As the reference's ``ResNetAuxiliary`` (ResNet-18 cut after ``layer2``: a
    ``layer3`` + ``AdaptiveAvgPool2d`` + ``Linear(256, C)``), built from our own server
    segment so the architecture always matches the model: ``copy.deepcopy(server[0])``
    (e.g. ResNet stage 3 for ``model.cut_layer=3``), a global average pool when that block
    outputs images, ``Flatten`` and ``Linear(features, num_classes)``.

    Args:
        server: the server segment (blocks ``[cut, n)``); only ``server[0]`` is used and
            it is copied, never shared or changed.
        activation_shape: per-sample cut-layer shape, for a dry run that sizes the head.
        num_classes: ``C``.
        init: ``fresh`` (default, as the reference: its ``layer3`` is a new module with
            its own initialisation) re-initialises the copied block's parameters;
            ``copy`` keeps the server's current weights (the aux then starts as the
            server's own next stage).
        seed: seeds every random draw (re-initialisation and the linear layer) on a
            forked RNG, so the global RNG is neither read nor advanced; give every client
            the same seed for the shared start the reference uses.

    Raises:
        ValueError: when ``server[0]`` is the last block (nothing would be left for the
            server to differ from; use `aux_model_for`) or on a bad ``init``.
    """
    if init not in AUX_INITS:
        raise ValueError(f"aux init must be one of {', '.join(AUX_INITS)}, got {init!r}")
    if len(server) < 2:
        raise ValueError(
            "the server segment has a single block: its next block is the head; use the "
            "linear auxiliary model (aux_model_for) for this cut"
        )
    shape = tuple(int(s) for s in activation_shape)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        block: nn.Module = copy.deepcopy(server[0]).cpu()
        if init == "fresh":
            for module in block.modules():
                reset = getattr(module, "reset_parameters", None)
                if callable(reset) and module is not block:
                    reset()
        with torch.no_grad():
            out = block(torch.zeros(1, *shape))  # (1, *G)
        layers: list[nn.Module] = [block]
        if out.dim() == 4:
            layers.append(_GlobalAvgPool())
            features = out.shape[1]
        else:
            features = math.prod(out.shape[1:])
        layers += [nn.Flatten(), nn.Linear(features, num_classes)]
        return nn.Sequential(*layers)


# --------------------------------------------------------------------------- gradients


def estimated_cut_grads(estimators, acts: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Every hosted client's gradient estimate: ``d mean_b CE(a_k(z_kb), y_kb) / dz_k``.

    Args:
        estimators: the clients' auxiliary models, stacked: ``(K, B, *F) -> (K, B, C)``.
        acts: ``(K, B, *F)`` the clients' cut-layer activations (used detached).
        labels: ``(K, B)`` int64 class indices.

    Returns:
        ``(K, B, *F)`` detached gradients, to back-propagate through the client segments
        with ``acts.backward(grads)``, and the ``(K,)`` detached mean losses. Client k's
        rows depend on its own loss only (the gradient of the sum of per-client means).
        Only the activations are differentiated (``torch.autograd.grad``), so the
        estimators' parameters' ``.grad`` are neither created nor changed.
    """
    with torch.enable_grad():  # also correct when called under no_grad
        leaf = acts.detach().requires_grad_(True)  # (K, B, *F) a fresh leaf
        losses = per_client_cross_entropy(estimators(leaf), labels)  # (K,)
        (grads,) = torch.autograd.grad(losses.sum(), leaf)  # (K, B, *F)
    return grads, losses.detach()


def estimated_cut_grad(aux: nn.Module, acts: Tensor, labels: Tensor) -> Tensor:
    """One client's `estimated_cut_grads`: ``(B, *F)``, ``(B,)`` -> ``(B, *F)``."""
    grads, _ = estimated_cut_grads(lambda z: aux(z[0])[None], acts[None], labels[None])
    return grads[0]


def server_cut_grads(server: nn.Module, acts: Tensor, labels: Tensor) -> Tensor:
    """True per-sample cut-layer gradients ``d CE(server(z_j), y_j) / dz_j``: ``(M, *F)``.

    The alignment target. Computed from a sum-reduced loss so each row is one sample's
    gradient, independent of ``M`` (valid as long as ``server`` treats samples
    independently: GroupNorm yes, BatchNorm in train mode no). The server's parameters'
    ``.grad`` are not touched.
    """
    with torch.enable_grad():
        z = acts.detach().requires_grad_(True)  # (M, *F)
        loss = F.cross_entropy(server(z), labels, reduction="sum")  # ()
        (grad,) = torch.autograd.grad(loss, z)  # (M, *F)
    return grad


def alignment_loss(aux: nn.Module, acts: Tensor, labels: Tensor, true_grads: Tensor) -> Tensor:
    """MSE between the aux model's per-sample input gradient and the true one.

    Args:
        aux: the auxiliary model being fitted.
        acts: ``(M, *F)`` buffered activations.
        labels: ``(M,)`` their labels.
        true_grads: ``(M, *F)`` per-sample true cut-layer gradients (`server_cut_grads`;
            a batch-mean gradient from a training step must be multiplied by its batch
            size, and divided by the client's loss weight, to be comparable).

    Returns:
        A scalar differentiable w.r.t. ``aux``'s parameters: the input gradient is taken
        with ``create_graph=True`` so that ``loss.backward()`` differentiates through it
        (a second-order term, cheap for a linear head).
    """
    if true_grads.shape != acts.shape:
        raise ValueError(
            f"true_grads {tuple(true_grads.shape)} must match acts {tuple(acts.shape)}"
        )
    with torch.enable_grad():
        z = acts.detach().requires_grad_(True)  # (M, *F)
        loss = F.cross_entropy(aux(z), labels, reduction="sum")  # () per-sample scale
        (grad,) = torch.autograd.grad(loss, z, create_graph=True)  # (M, *F)
        return F.mse_loss(grad, true_grads.detach().to(grad.dtype))


def align_aux_(
    aux: nn.Module,
    acts: Tensor,
    labels: Tensor,
    true_grads: Tensor,
    epochs: int,
    lr: float,
    batch_size: int | None,
    generator: torch.Generator | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> list[float]:
    """Fit ``aux`` IN PLACE so its input gradient matches ``true_grads`` (`alignment_loss`).

    Args:
        aux: the auxiliary model; its parameters are MODIFIED in place, and their
            ``.grad`` are cleared (``None``) on return.
        acts, labels, true_grads: ``(M, *F)``, ``(M,)``, ``(M, *F)``, see
            `alignment_loss`; ``M >= 1``.
        epochs: passes over the ``M`` samples, ``>= 0`` (reference: 100).
        lr: Adam learning rate of a fresh optimizer; ignored when ``optimizer`` is given.
            Adam rather than SGD because the alignment loss is a second-order quantity
            whose scale varies a lot with the model and data.
        batch_size: minibatch size ``>= 1``; ``None`` = the whole buffer in one batch
            (full-batch, the reference's ``align_batch_size = 1000 = buffer size``).
        generator: shuffles the samples every epoch when given (seed it by
            ``(seed, "fsl_sage", client, round)`` for layout invariance); ``None`` keeps
            buffer order. Full-batch fitting does not depend on the order.
        optimizer: the client's persistent alignment optimizer (`alignment_optimizer`,
            over ``aux``'s parameters), kept by the caller across alignments and
            checkpointed with it, as the reference does; its state is UPDATED in place.
            ``None``: a fresh Adam at ``lr`` for this call only (no state carried over;
            the earlier convention).

    Returns:
        One float per epoch: the sample-weighted mean alignment loss over the epoch's
        minibatches (each measured before its step). One host synchronisation per epoch.
    """
    m = acts.shape[0]
    if m < 1 or labels.shape != (m,) or true_grads.shape != acts.shape:
        raise ValueError(
            f"need M >= 1 and shapes acts (M, *F), labels (M,), true_grads (M, *F); got "
            f"{tuple(acts.shape)}, {tuple(labels.shape)}, {tuple(true_grads.shape)}"
        )
    batch_size = m if batch_size is None else batch_size
    if epochs < 0 or batch_size < 1 or not lr > 0.0:
        raise ValueError(
            f"need epochs >= 0, batch_size >= 1, lr > 0; got {epochs}, {batch_size}, {lr}"
        )
    opt = optimizer if optimizer is not None else torch.optim.Adam(aux.parameters(), lr=lr)
    losses: list[float] = []
    for _ in range(epochs):
        order = torch.randperm(m, generator=generator) if generator is not None else None
        total = torch.zeros((), device=acts.device)
        for start in range(0, m, batch_size):
            stop = min(start + batch_size, m)
            idx = order[start:stop].to(acts.device) if order is not None else slice(start, stop)
            loss = alignment_loss(aux, acts[idx], labels[idx], true_grads[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total = total + loss.detach() * (stop - start)
        losses.append(float(total) / m)
    opt.zero_grad(set_to_none=True)  # leave no stale gradients on the aux model
    return losses


def alignment_optimizer(aux: nn.Module, lr: float = 1e-3) -> torch.optim.Adam:
    """The persistent alignment optimizer of one auxiliary model: ``Adam(lr)``.

    The reference builds it once per client at start-up (``Client.init_auxiliary``,
    ``base_auxiliary.yaml``: Adam, lr 1e-3) and reuses it for every alignment, so
    Adam's moments and step count carry over between alignments. The caller keeps one
    per client next to the server's copy of that client's auxiliary model and saves its
    ``state_dict`` in checkpoints.
    """
    if not lr > 0.0:
        raise ValueError(f"algorithm.align_lr must be > 0, got {lr}")
    return torch.optim.Adam(aux.parameters(), lr=lr)


# --------------------------------------------------------------------------- buffer


class ActivationBuffer:
    """One client's FIFO of its last ``capacity`` (activation, label) samples.

    ``add`` appends a batch and drops the oldest samples beyond ``capacity``; samples
    are stored detached and copied (later in-place changes of the caller's tensors do
    not reach the buffer), on the device they came from.
    """

    def __init__(self, capacity: int = 1000) -> None:
        if capacity < 1:
            raise ValueError(f"algorithm.buffer_size must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self._acts: Tensor | None = None  # (M, *F), oldest first
        self._labels: Tensor | None = None  # (M,)

    def __len__(self) -> int:
        return 0 if self._acts is None else int(self._acts.shape[0])

    def add(self, acts: Tensor, labels: Tensor) -> None:
        """Append ``acts (B, *F)`` and ``labels (B,)``; keep only the newest ``capacity``."""
        if acts.dim() < 1 or labels.shape != acts.shape[:1]:
            raise ValueError(
                f"need acts (B, *F) and labels (B,), got {tuple(acts.shape)}, {tuple(labels.shape)}"
            )
        if self._acts is not None and acts.shape[1:] != self._acts.shape[1:]:
            raise ValueError(
                f"activation shape {tuple(acts.shape[1:])} differs from the buffered "
                f"{tuple(self._acts.shape[1:])}"
            )
        acts, labels = acts.detach(), labels.detach()
        if self._acts is not None and self._labels is not None:
            acts = torch.cat([self._acts, acts.to(self._acts.device)])  # (M + B, *F)
            labels = torch.cat([self._labels, labels.to(self._labels.device)])  # (M + B,)
        # clone: own, compact storage of exactly the kept samples (a slice of the
        # concatenation would keep the dropped ones alive, and of the input would alias it)
        self._acts = acts[-self.capacity :].clone()
        self._labels = labels[-self.capacity :].clone()

    def tensors(self) -> tuple[Tensor, Tensor]:
        """``(acts (M, *F), labels (M,))``, oldest first (the stored tensors: read only)."""
        if self._acts is None or self._labels is None:
            raise ValueError("the activation buffer is empty")
        return self._acts, self._labels

    def state_dict(self) -> dict[str, object]:
        """Checkpoint state: capacity and the stored tensors (``None`` when empty)."""
        return {"capacity": self.capacity, "acts": self._acts, "labels": self._labels}

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore from `state_dict`; keeps this buffer's capacity (trims to it)."""
        acts, labels = state["acts"], state["labels"]
        if acts is not None and not (isinstance(acts, Tensor) and isinstance(labels, Tensor)):
            raise TypeError("state 'acts' and 'labels' must both be tensors or both None")
        self._acts = self._labels = None
        if isinstance(acts, Tensor) and isinstance(labels, Tensor):
            self.add(acts, labels)


# --------------------------------------------------------------------------- schedule


def alignment_due(round_index: int, l: int, when: str = "end") -> bool:  # noqa: E741 (the paper's l)
    """Whether the server aligns the aux models in round ``round_index`` (0-based).

    ``when="start"`` (the reference): at the START of rounds ``0, l, 2l, ...``, i.e. in
    the round's first step, after that step's uploads and server steps and before any
    client update, so round 0 is aligned on the first uploaded batches and every run of
    at least one round aligns. ``when="end"`` (this project's earlier convention): at
    the END of rounds ``l - 1, 2l - 1, ...``, after a full round of uploads, matching
    `lightning_gapsl.methods.locfedmix.math.fedavg_due`; a run shorter than ``l`` rounds
    never aligns. The default stays ``end`` so existing callers keep their meaning.
    """
    if l < 1:
        raise ValueError(f"algorithm.align_interval must be >= 1, got {l}")
    if round_index < 0:
        raise ValueError(f"round_index must be >= 0, got {round_index}")
    if when not in ALIGN_WHEN:
        raise ValueError(f"alignment 'when' must be one of {', '.join(ALIGN_WHEN)}, got {when!r}")
    if when == "start":
        return round_index % l == 0
    return (round_index + 1) % l == 0


def uploads_due(step_in_round: int, q: int, active: Tensor) -> Tensor:
    """Bool ``(N,)``: which clients upload (and get one server step each) at this step.

    As the reference counts it (``local_iter % server_update_interval == 0`` with the
    local iteration restarting every round): active clients whose step within the round
    is a multiple of ``q``, so every round starts with an upload of every client (the one
    `alignment_due` with ``when="start"`` aligns on). ``active``: ``(N,)`` bool, e.g.
    `lightning_gapsl.data.rounds.active_clients` (all True for lockstep rounds).
    """
    if active.dtype != torch.bool or active.dim() != 1:
        raise ValueError(
            f"active must be a bool (N,) tensor, got {active.dtype} {tuple(active.shape)}"
        )
    return active & server_step_due(step_in_round, q)
