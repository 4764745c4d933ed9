"""Sequential split learning (SL): one client segment travels from client to client.

Each step the clients take turns in id order: client c receives the segment (with its
optimizer state) from client c-1, runs it on its batch, the server runs its segment on
those activations and steps, client c back-propagates the returned gradient, steps,
and passes the segment on (client N-1 hands it to client 0 of the next step). Every
rank walks the same sequence, so ranks stay in lockstep; a hand-off between clients on
different ranks is relayed through the server.

Each client rank holds one physical copy of the segment (`parties.clients`, a stack
of one), current whenever one of its clients has the turn.

Traffic counted per turn: activations + labels up, the gradient down, and the
segment's P parameters passed on (counted once up and once down: it leaves one client
and reaches another), whether or not the two clients share a process.
"""

from __future__ import annotations

import torch
from torch import nn

from lightning_gapsl.split_step import Parties, StepOutput


def _state_vector(parties: Parties) -> torch.Tensor:
    """Parameters and SGD momentum of the travelling segment, flat (2P,)."""
    params = list(parties.clients.parameters())
    state = parties.client_opt.state
    moments = [state.get(p, {}).get("momentum_buffer") for p in params]
    return torch.cat([p.detach().flatten() for p in params]
                     + [(m if m is not None else torch.zeros_like(p)).flatten()
                        for m, p in zip(moments, params)])


def _load_state_vector(parties: Parties, flat: torch.Tensor) -> None:
    params = list(parties.clients.parameters())
    offset = 0
    with torch.no_grad():
        for p in params:
            p.copy_(flat[offset : offset + p.numel()].view_as(p))
            offset += p.numel()
    for p in params:
        buf = flat[offset : offset + p.numel()].view_as(p).clone()
        parties.client_opt.state.setdefault(p, {})["momentum_buffer"] = buf
        offset += p.numel()


def hand_off(parties: Parties, transport, step: int, giver: int, taker: int,
             segment_numel: int) -> None:
    """The segment goes from client ``giver`` to client ``taker``, relayed if needed."""
    layout = parties.layout
    giver_rank, taker_rank = layout.rank_of(giver), layout.rank_of(taker)
    if giver_rank != taker_rank:
        rows = [_state_vector(parties)] if layout.rank == giver_rank else None
        got = transport.to_server(step, "sl_handoff", giver, rows, count=False)
        received = transport.to_client(step, "sl_handoff", taker, got, count=False)
        if layout.rank == taker_rank:
            _load_state_vector(parties, received[0])
    if layout.is_server:  # logically client to client: P float32 leave, P arrive
        transport.counter.bytes_up += 4 * segment_numel
        transport.counter.bytes_down += 4 * segment_numel


def sl_train_step(parties: Parties, transport, step: int, x: torch.Tensor, y: torch.Tensor,
                  segment_numel: int) -> StepOutput:
    """One SL step: every client's turn in order. x (K, B, ...), y (K, B) hosted batches."""
    layout = parties.layout
    n, hosted = layout.num_clients, layout.hosted
    losses = torch.zeros(n) if layout.is_server else None
    for c in range(n):
        if step > 0 or c > 0:  # at step 0 client 0 starts from the shared initialisation
            hand_off(parties, transport, step, (c - 1) % n, c, segment_numel)
        mine = c in hosted
        acts = parties.clients.forward_one(0, x[hosted.index(c)]) if mine else None  # (B, *F)
        sent = [acts, y[hosted.index(c)]] if mine else None
        got = transport.to_server(step, f"sl_acts/{c}", c, sent)
        grads = None
        if layout.is_server:
            z = got[0].detach().requires_grad_(True)  # (B, *F)
            loss = nn.functional.cross_entropy(parties.server(z), got[1])
            parties.server_opt.zero_grad(set_to_none=True)
            loss.backward()
            parties.server_opt.step()
            grads, losses[c] = [z.grad], loss.detach()
        back = transport.to_client(step, f"sl_grads/{c}", c, grads)
        if mine:
            parties.client_opt.zero_grad(set_to_none=True)
            acts.backward(back[0])
            parties.client_opt.step()
    if not layout.is_server:
        return StepOutput(None, None)
    return StepOutput(float((losses * parties.loss_weights.cpu()).sum()), losses)


def share_segment(parties: Parties, transport, step: int, segment_numel: int) -> None:
    """Before evaluation: every rank gets the current segment (held by client N-1's rank)."""
    layout = parties.layout
    last = layout.num_clients - 1
    rows = [_state_vector(parties)] if layout.rank == layout.rank_of(last) else None
    got = transport.to_server(step, "sl_share", last, rows, count=False)
    device = getattr(transport, "device", torch.device("cpu"))
    flat = got[0] if layout.is_server else torch.zeros(2 * segment_numel, device=device)
    transport.broadcast_(flat)
    if parties.clients is not None and layout.rank != layout.rank_of(last):
        _load_state_vector(parties, flat)
