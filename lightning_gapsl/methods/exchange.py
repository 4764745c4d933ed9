"""The PSL-family exchange (docs/explanations/architecture.md), shared by every method that sends
activations up and cut-layer gradients down each step: psl, gapsl, sglr, epsl, sfl_v1,
sfl_v2, locfedmix. They differ only by the hooks they pass, never by an ``if`` on a name.

Every rank runs the roles it has (client, server, or both in one process) and the
transport carries tensors between the phases, so in-process and multi-process runs
execute the same arithmetic in the same order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from lightning_gapsl.methods.base import (
    RankState,
    StepOutput,
    client_forward,
    client_step,
    hosted_active,
    step_weights,
)
from lightning_gapsl.methods.shared.losses import weighted_client_loss
from lightning_gapsl.privacy.defense import add_activation_noise, nopeek_losses
from lightning_gapsl.transport import Transport

# (state, acts (N, B, *F) leaf, labels (N, B), logits, step) -> an extra server loss.
ExtraServerLoss = Callable[[RankState, torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]
# (state, cut_grads (N, B, *F), step) -> what each client receives (N, B, *F).
Transform = Callable[[RankState, torch.Tensor, int], torch.Tensor]
# (state, acts (K, B, *F), received grads (K, B, *F), x (K, B, ...)) -> backward done.
ClientBackward = Callable[[RankState, torch.Tensor, torch.Tensor, torch.Tensor], None]
# (state, transport, step): between the client backward and the client step.
AfterBackward = Callable[[RankState, Transport, int], None]
# (state, transport, step, cut grads (N, B, *F) on the server, else None) -> this rank's
# clients' gradients (K, B, *F) (an empty list on a dedicated server rank).
Downlink = Callable[[RankState, Transport, int, torch.Tensor | None], list[torch.Tensor]]
# (state, acts (N, B, *F), labels (N, B), step) -> (loss, client losses (N,), cut grads).
ServerPass = Callable[
    [RankState, torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]
]
# (state, acts (K, B, *F), y (K, B)) -> per-client local losses (K,), after the backward.
LocalBackward = Callable[[RankState, torch.Tensor, torch.Tensor], torch.Tensor]
# (state, acts (N, B, *F), labels (N, B)) -> after the server's step (FSL-SAGE buffers).
AfterServerStep = Callable[[RankState, torch.Tensor, torch.Tensor], None]
# (state, transport, step) -> after the uploads, before any client update (alignment).
BeforeClientUpdate = Callable[[RankState, Transport, int], None]


@dataclass(frozen=True)
class Hooks:
    """How a method's step differs from its exchange's plain form: the one vocabulary of
    both step exchanges. `split_exchange` (the PSL family) reads the first six fields,
    each defaulting to PSL; `methods.auxiliary.aux_exchange` (CSE-FSL, FSL-SAGE) reads
    the last three, ``local_backward`` being required there."""

    server_pass: ServerPass | None = None  # None: `batched_server_pass`
    extra_server_loss: ExtraServerLoss | None = None  # server update only (LocFedMix mixup)
    transform: Transform | None = None  # GAPSL 'cut', SGLR's SplitAvg
    client_backward: ClientBackward | None = None  # None: acts.backward(grads)
    after_backward: AfterBackward | None = None  # GAPSL 'client'
    downlink: Downlink | None = None  # None: `scatter_down` (EPSL: part broadcast)
    local_backward: LocalBackward | None = None  # the client update from a local model
    after_server_step: AfterServerStep | None = None  # FSL-SAGE: buffer the uploads
    before_client_update: BeforeClientUpdate | None = None  # FSL-SAGE: align at round start


def split_exchange(
    state: RankState,
    transport: Transport,
    step: int,
    x: torch.Tensor,
    y: torch.Tensor,
    hooks: Hooks,
) -> StepOutput:
    """One step. x (K, B, C, H, W), y (K, B) for this rank's hosted clients."""
    layout, has_clients = state.layout, state.clients is not None
    out = StepOutput(None, None)

    # 1-2. clients: forward their segments and send activations + labels up.
    acts = client_forward(state, x) if has_clients else None  # (K, B, *F)
    sent = smashed(state, acts, layout.hosted, step) if has_clients else None
    received = transport.gather(
        step, "activations", [sent, y] if has_clients else [], active=state.active
    )

    # 3-4. server: one forward/backward on every client's activations, then transform.
    cut_grads = None
    if layout.is_server:
        server_pass = hooks.server_pass or batched_server_pass
        if hooks.extra_server_loss is not None:
            server_pass = _with_extra_loss(hooks.extra_server_loss)
        acts_all, labels_all = received  # (N, B, *F), (N, B)
        loss, client_losses, cut_grads = server_pass(state, acts_all, labels_all, step)
        out = StepOutput(float(loss), client_losses)
        if hooks.transform is not None:
            cut_grads = hooks.transform(state, cut_grads, step)

    # 5. scatter each client its gradient; clients back-propagate it.
    mine = (hooks.downlink or scatter_down)(state, transport, step, cut_grads)
    if has_clients:
        state.client_opt.zero_grad(set_to_none=True)
        nopeek_backward(state, x, acts, hosted_active(state))
        if hooks.client_backward is not None:
            hooks.client_backward(state, acts, mine[0], x)
        else:
            acts.backward(mine[0])
    if hooks.after_backward is not None:
        hooks.after_backward(state, transport, step)
    if has_clients:
        client_step(state)
    return out


def smashed(state: RankState, acts: torch.Tensor, client_ids: list[int], step: int) -> torch.Tensor:
    """What the clients send: their activations (K, B, *F), plus Gaussian noise under
    ``defense.activation_noise`` (the same tensor when the defense is off)."""
    return add_activation_noise(
        acts, state.cfg.defense.activation_noise, state.seed, client_ids, step
    )


def nopeek_backward(
    state: RankState, x: torch.Tensor, acts: torch.Tensor, active: torch.Tensor | None = None
) -> None:
    """``defense.nopeek`` > 0: back-propagate weight x each client's distance correlation
    between its batch x (K, B, ...) and its activations (K, B, *F), keeping the graph for
    the cut-gradient backward that follows. Nothing when the defense is off. ``active``
    (K,) bool: only these clients (an idle client's rows are constant zeros, whose
    distance correlation is 0/0)."""
    weight = state.cfg.defense.nopeek
    if weight > 0:
        if active is not None:
            x, acts = x[active], acts[active]  # (K', B, ...), (K', B, *F)
        (weight * nopeek_losses(x, acts).sum()).backward(retain_graph=True)


def scatter_down(
    state: RankState, transport: Transport, step: int, cut_grads: torch.Tensor | None
) -> list[torch.Tensor]:
    """Each client receives its own rows of the server's (N, B, *F) gradients."""
    return transport.scatter(
        step, "cut_grads", [cut_grads] if state.layout.is_server else None, active=state.active
    )


def batched_server_pass(
    state: RankState,
    acts: torch.Tensor,
    labels: torch.Tensor,
    step: int,
    extra_loss: ExtraServerLoss | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The server segment on all clients at once; returns loss, per-client losses, cut grads.

    Server loss: size-weighted sum of per-client mean losses. With ``client_grad=own``
    each client receives the gradient of its own mean loss: the server loss scales
    client i by w_i ~ 1/N, which would silently cut client learning rates by N.

    With partial participation the server runs the active clients' rows only, so a step
    costs what its participants cost, not N (and a batch-norm server segment does not
    count idle rows in its statistics); idle clients get zero cut gradients and losses.
    An extra server loss sees every row (it may mix clients).
    """
    num_clients, batch = labels.shape
    weights = step_weights(state)  # (N,); idle clients (local-pass rounds) weigh 0
    rows = active_rows(state) if extra_loss is None else None  # (M,) or None: every row
    z = acts.detach() if rows is None else acts.detach()[rows]  # (M, B, *F)
    w = weights if rows is None else weights[rows]  # (M,)
    y = labels if rows is None else labels[rows]  # (M, B)
    z.requires_grad_(True)  # leaf: its .grad = cut grads
    logits = state.server(z.flatten(0, 1)).unflatten(0, (z.shape[0], batch))  # (M, B, C)
    loss, losses = weighted_client_loss(logits, y, w)
    state.server_opt.zero_grad(set_to_none=True)
    loss.backward()
    grads = z.grad  # (M, B, *F) = w_i * d(own loss_i)/dz_i
    if extra_loss is not None:
        extra = extra_loss(state, z, labels, logits, step)
        if extra is not None:
            extra.backward()
    if state.cfg.algorithm.client_grad == "own":
        shape = (w.shape[0],) + (1,) * (grads.dim() - 1)
        own = grads / w.view(shape)
        idle_rows = state.active is not None and rows is None  # zero weights among the rows
        grads = torch.where(w.view(shape) > 0, own, 0) if idle_rows else own
    state.server_opt.step()
    if rows is not None:
        grads = acts.new_zeros(acts.shape).index_copy_(0, rows, grads)  # (N, B, *F)
        losses = losses.new_zeros(num_clients).index_copy_(0, rows, losses)  # (N,)
    return reported_loss(state, losses), losses, grads


def active_rows(state: RankState) -> torch.Tensor | None:
    """(M,) indices of this step's active clients, or None when every client is active."""
    if state.active is None or bool(state.active.all()):
        return None
    return state.active.to(torch.bool).nonzero().flatten()


def _with_extra_loss(extra: ExtraServerLoss) -> ServerPass:
    def server_pass(state, acts, labels, step):
        return batched_server_pass(state, acts, labels, step, extra_loss=extra)

    return server_pass


def reported_loss(state: RankState, client_losses: torch.Tensor) -> torch.Tensor:
    """The size-weighted mean of per-client losses: the training loss every method reports."""
    return (client_losses * step_weights(state).to(client_losses.dtype)).sum()


def one_client_exchange(
    state: RankState,
    transport: Transport,
    step: int,
    client: int,
    x: torch.Tensor,
    y: torch.Tensor,
    slot: int,
    step_client: Callable[[], None],
    tag: str,
) -> torch.Tensor | None:
    """One client's turn of a sequential method (SL, SplitFed V2 with whole-epoch turns):
    its batch through its segment (row ``slot`` of this rank's stack), the server's
    forward, backward and step on those activations alone, the gradient back, the
    client's backward and ``step_client()``. x (K, B, ...), y (K, B) hosted batches.
    Returns the client's loss (0-d) on the server rank, else None."""
    hosted = state.layout.hosted
    mine = client in hosted
    acts = state.clients.forward_one(slot, x[hosted.index(client)]) if mine else None  # (B, *F)
    sent = smashed(state, acts[None], [client], step)[0] if mine else None
    got = transport.to_server(
        step, f"{tag}_acts/{client}", client, [sent, y[hosted.index(client)]] if mine else None
    )
    grads, loss = None, None
    if state.layout.is_server:
        z = got[0].detach().requires_grad_(True)  # (B, *F)
        loss = torch.nn.functional.cross_entropy(state.server(z), got[1])
        state.server_opt.zero_grad(set_to_none=True)
        loss.backward()
        state.server_opt.step()
        grads, loss = [z.grad], loss.detach()
    back = transport.to_client(step, f"{tag}_grads/{client}", client, grads)
    if mine:
        state.client_opt.zero_grad(set_to_none=True)
        nopeek_backward(state, x[hosted.index(client)][None], acts[None])
        acts.backward(back[0])
        step_client()
    return loss
