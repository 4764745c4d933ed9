"""One training step of the PSL family (DESIGN section 3), the same code on every rank.

A rank plays the roles it has: client (hosts K >= 1 clients), server (rank 0), or
both (one process). Each phase below runs the part of the role this rank plays, and
the transport carries tensors between the phases, so in-process and multi-process
runs execute the same arithmetic in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from lightning_gapsl.algorithms.gapsl import (
    GapslConfig,
    batch_mean_flat,
    cut_layer_shift,
    gapsl_step,
)
from lightning_gapsl.algorithms.locfedmix import (
    draw_lambda,
    mix_partners,
    mixup_smashed,
    reconstruction_loss,
    soft_cross_entropy,
)
from lightning_gapsl.algorithms.psl import weighted_client_loss
from lightning_gapsl.algorithms.sglr import averaged_clients, averaging_active, split_avg
from lightning_gapsl.config import AlgorithmConfig, OptimConfig
from lightning_gapsl.layout import Layout
from lightning_gapsl.models.stacked import StackedSegments
from lightning_gapsl.seeding import generator


def make_optimizer(params, cfg: OptimConfig, lr: float | None = None) -> torch.optim.Optimizer:
    """One optimizer per party; elementwise rules, so a stacked one is K independent ones."""
    params, lr = list(params), cfg.lr if lr is None else lr
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def gapsl_config(cfg: AlgorithmConfig) -> GapslConfig:
    return GapslConfig(
        rho=cfg.rho,
        tau=cfg.tau,
        normalize_leader=cfg.normalize_leader,
        beta=cfg.beta,
        lam=cfg.lam,
        mode=cfg.align_mode,
    )


@dataclass
class Parties:
    """The models and optimizers that live on this rank."""

    layout: Layout
    clients: StackedSegments | None  # hosted client segments, params (K, ...)
    server: nn.Module  # the server segment (an evaluation copy on client ranks)
    client_opt: torch.optim.Optimizer | None
    server_opt: torch.optim.Optimizer | None  # server rank only
    loss_weights: torch.Tensor  # (N,) n_i / n, the server's per-client loss weights
    decoders: StackedSegments | None = None  # LocFedMix: hosted clients' decoders
    seed: int = 0  # run seed: per-step random choices (SGLR's averaged clients)
    total_steps: int = 1  # steps of the whole run (SGLR's phased schedule)
    leader_ema: torch.Tensor | None = None  # GAPSL's smoothed leader gradient (server)
    step_diagnostics: dict = field(default_factory=dict)  # name -> float or (N,) tensor


@dataclass
class StepOutput:
    loss: float | None  # server loss (server rank only)
    client_losses: torch.Tensor | None  # (N,) per-client mean CE (server rank only)


def _align(parties: Parties, algo: AlgorithmConfig, g: torch.Tensor) -> torch.Tensor:
    """GAPSL on per-client gradient rows g (N, D): returns the aligned rows (N, D)."""
    aligned, parties.leader_ema, diag = gapsl_step(g, parties.leader_ema, gapsl_config(algo))
    parties.step_diagnostics = {
        "gapsl/leaders": float(diag["leader_count"]),
        "gapsl/cos_before": float(diag["cos_before_mean"]),
        "gapsl/cos_after": float(diag["cos_after_mean"]),
        "gapsl/leader_mask": diag["leader_mask"].detach().float().cpu(),  # (N,)
    }
    return aligned


def _server_forward_backward(
    parties: Parties, algo: AlgorithmConfig, acts: torch.Tensor, labels: torch.Tensor, step: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Server segment on all clients at once; returns loss, per-client losses, cut grads."""
    if algo.name == "sfl_v2":
        return _server_sequential(parties, acts, labels, step)
    num_clients, batch = labels.shape
    acts = acts.detach().requires_grad_(True)  # (N, B, *F) leaf: its .grad = cut grads
    if algo.name == "sfl_v1":
        # One server copy per client, run on that client's activations only; the plain
        # sum of client losses gives each copy exactly its own client's gradient.
        logits = parties.server(acts)  # (N, B, C)
        train_weights = torch.ones_like(parties.loss_weights)
    else:
        logits = parties.server(acts.flatten(0, 1)).unflatten(0, (num_clients, batch))
        train_weights = parties.loss_weights
    loss, client_losses = weighted_client_loss(logits, labels, train_weights)
    parties.server_opt.zero_grad(set_to_none=True)
    loss.backward()
    cut_grads = acts.grad  # (N, B, *F) = w_i * d(own loss_i)/dz_i
    if algo.name == "locfedmix" and algo.num_partners > 0:
        _mixup_server_loss(parties, algo, acts, labels, logits.shape[-1], step).backward()
    if algo.client_grad == "own" and algo.name != "sfl_v1":
        # Each client gets the gradient of its own mean loss: the server loss scales
        # client i by w_i ~ 1/N, which would silently cut client learning rates by N.
        shape = (num_clients,) + (1,) * (cut_grads.dim() - 1)
        cut_grads = cut_grads / parties.loss_weights.view(shape)
    parties.server_opt.step()
    reported = (client_losses * parties.loss_weights.to(client_losses.dtype)).sum()
    return reported, client_losses, cut_grads


def _mixup_server_loss(parties: Parties, algo: AlgorithmConfig, acts: torch.Tensor,
                       labels: torch.Tensor, num_classes: int, step: int) -> torch.Tensor:
    """LocFedMix: the server's loss on smashed data mixed across clients.

    Built from detached activations, so it adds to the server's gradients only; the
    cut-layer gradients the clients receive are already computed and unchanged.
    """
    n = labels.shape[0]
    partners = mix_partners(n, algo.num_partners, parties.seed, step)  # (N, P)
    lam = draw_lambda(n, algo.num_partners, algo.mix_alpha, parties.seed, step)  # (N, P)
    onehot = nn.functional.one_hot(labels, num_classes).float()  # (N, B, C)
    mixed, targets = mixup_smashed(acts, onehot, partners, lam)  # (N*P, B, *F), (N*P, B, C)
    logits = parties.server(mixed.flatten(0, 1))  # (N*P*B, C)
    return soft_cross_entropy(logits, targets.flatten(0, 1))


def _server_sequential(
    parties: Parties, acts: torch.Tensor, labels: torch.Tensor, step: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SplitFed V2: the server serves clients one at a time in a random order, stepping
    its optimizer after each; the order is drawn from (seed, step), not from ranks."""
    num_clients = labels.shape[0]
    order = torch.randperm(num_clients, generator=generator(parties.seed, "sfl_v2", step))
    cut_grads = torch.empty_like(acts)  # (N, B, *F)
    client_losses = torch.empty(num_clients, device=acts.device)
    for c in order.tolist():
        a = acts[c].detach().requires_grad_(True)  # (B, *F)
        loss = nn.functional.cross_entropy(parties.server(a), labels[c])
        parties.server_opt.zero_grad(set_to_none=True)
        loss.backward()
        parties.server_opt.step()
        cut_grads[c] = a.grad
        client_losses[c] = loss.detach()
    reported = (client_losses * parties.loss_weights.to(client_losses.dtype)).sum()
    return reported, client_losses, cut_grads


def local_train_step(parties: Parties, transport, step: int, x: torch.Tensor, y: torch.Tensor
                     ) -> StepOutput:
    """FedAvg: each hosted client trains its full model on its own batch.

    The only exchange is telemetry: per-client losses go to the server (not counted as
    communication), which reports their size-weighted mean like every other method.
    """
    client_losses = None
    if parties.clients is not None:
        logits = parties.clients(x)  # (K, B, C)
        client_losses = nn.functional.cross_entropy(
            logits.flatten(0, 1), y.flatten(), reduction="none"
        ).view(y.shape).mean(1)  # (K,)
        parties.client_opt.zero_grad(set_to_none=True)
        client_losses.sum().backward()  # each client's own mean loss: independent models
        parties.client_opt.step()
        client_losses = client_losses.detach()
    rows = [client_losses.view(-1, 1)] if client_losses is not None else []
    received = transport.gather(step, "losses", rows, count=False)
    if not parties.layout.is_server:
        return StepOutput(None, None)
    all_losses = received[0].view(-1)  # (N,)
    return StepOutput(float((all_losses * parties.loss_weights).sum()), all_losses)


def split_train_step(
    parties: Parties, transport, algo: AlgorithmConfig, step: int, x: torch.Tensor, y: torch.Tensor
) -> StepOutput:
    """One PSL/GAPSL/SGLR step. x (K, B, C, H, W), y (K, B) for this rank's hosted clients."""
    layout, has_clients = parties.layout, parties.clients is not None
    out = StepOutput(None, None)

    # 1-2. clients: forward their segments and send activations + labels up.
    acts = parties.clients(x) if has_clients else None  # (K, B, *F)
    sent = [acts, y] if has_clients else []
    received = transport.gather(step, "activations", sent)

    # 3-4. server: one forward/backward on every client's activations, then transform.
    cut_grads = None
    if layout.is_server:
        loss, client_losses, cut_grads = _server_forward_backward(parties, algo, *received, step)
        out = StepOutput(float(loss), client_losses)
        if algo.name == "gapsl" and algo.reading == "cut":
            g = batch_mean_flat(cut_grads)  # (N, D)
            cut_grads = cut_layer_shift(cut_grads, g, _align(parties, algo, g))
        elif algo.name == "sglr" and averaging_active(step, parties.total_steps, algo.avg_phase):
            mask = averaged_clients(layout.num_clients, algo.avg_fraction, parties.seed, step)
            cut_grads = split_avg(cut_grads, mask.to(cut_grads.device))

    # 5. scatter each client its gradient; clients back-propagate it.
    mine = transport.scatter(step, "cut_grads", [cut_grads] if layout.is_server else None)
    if has_clients:
        parties.client_opt.zero_grad(set_to_none=True)
        if parties.decoders is not None:  # LocFedMix: + the local reconstruction loss
            _backward_with_reconstruction(parties, algo, acts, mine[0], x)
        else:
            acts.backward(mine[0])

    if algo.name == "gapsl" and algo.reading == "client":
        _align_client_gradients(parties, transport, algo, step)

    if has_clients:
        parties.client_opt.step()
    return out


def _backward_with_reconstruction(parties: Parties, algo: AlgorithmConfig, acts: torch.Tensor,
                                  cut_grads: torch.Tensor, x: torch.Tensor) -> None:
    """Back-propagate the server's gradient plus rec_weight * MSE(decoder(z), x) per client."""
    decoded = parties.decoders(acts)  # (K, B, C, H, W)
    rec = torch.stack([reconstruction_loss(decoded[k], x[k]) for k in range(x.shape[0])])
    # (acts * g).sum() has gradient g w.r.t. acts: the server's signal, unchanged.
    ((acts * cut_grads).sum() + algo.rec_weight * rec.sum()).backward()


def _align_client_gradients(parties: Parties, transport, algo: AlgorithmConfig, step: int) -> None:
    """GAPSL 'client' reading: segment gradients go up, aligned ones come back.

    Routed through the server rather than an all-gather among clients: 2*N*D floats
    per step instead of N*(N-1)*D, and the EMA leader state lives in one place.
    """
    has_clients = parties.clients is not None
    rows = [parties.clients.flat_grads()] if has_clients else []  # (K, D)
    received = transport.gather(step, "client_grads", rows)
    aligned = [_align(parties, algo, received[0])] if parties.layout.is_server else None
    mine = transport.scatter(step, "aligned_grads", aligned)
    if has_clients:
        parties.clients.set_flat_grads(mine[0])


@torch.no_grad()
def evaluate_hosted(
    clients: StackedSegments, server: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """Every hosted client's model on one test batch: (K, 3) = correct, loss sum, count.

    One client at a time: stacking K copies of a 1000-sample batch would allocate
    K times the activations at once (hundreds of MB for 20 clients) for no speed gain.
    """
    rows = []
    for k in range(clients.num_segments):
        acts = clients.forward_one(k, x)  # (b, *F)
        logits = server(acts)  # (b, C)
        loss = nn.functional.cross_entropy(logits, y, reduction="sum")
        correct = (logits.argmax(-1) == y).sum()
        rows.append(torch.stack([correct.double(), loss.double(), torch.tensor(float(len(y)))]))
    return torch.stack(rows)  # (K, 3)
