"""Split-learning traffic between the server rank and the client ranks.

This is the one module that imports ``torch.distributed``. Step code talks to a
`Transport` and never knows whether the other side is in the same process
(`LocalTransport`, one process hosting the server and every client) or in other
processes (`DistTransport`, point-to-point on a dedicated process group so that our
traffic never interleaves with Lightning's own collectives).

Every exchange carries a small header (step, kind, first client id, row count, and
each tensor's dtype and shape). The receiver checks it, so ranks that fall out of
lockstep stop with a message naming the rank and the two steps instead of silently
pairing the wrong tensors.

Bytes are counted on the server side from the real payloads (headers excluded), per
client: the count is the same whichever process hosts which client.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

import torch
import torch.distributed as dist

from lightning_gapsl.layout import SERVER_RANK, Layout
from lightning_gapsl.liveness import Heartbeat, blame

_MAGIC = 0x5350_4C31  # "SPL1"
_MAX_TENSORS = 4
_MAX_DIMS = 6
_FIXED = 6  # magic, step, kind, first client, rows, tensor count
_PER_TENSOR = 2 + _MAX_DIMS  # dtype code, ndim, dims
HEADER_LEN = _FIXED + _MAX_TENSORS * _PER_TENSOR
_DTYPES = [torch.float32, torch.float64, torch.int64, torch.float16, torch.bfloat16, torch.int32]


class TransportError(RuntimeError):
    """A peer sent something unexpected, or stopped answering."""


@dataclass
class CommCounter:
    """Bytes of split-learning payload: up = clients to server, down = server to clients."""

    bytes_up: int = 0
    bytes_down: int = 0


def payload_bytes(tensors: list[torch.Tensor], active: torch.Tensor | None = None) -> int:
    """Bytes of ``tensors``; with ``active`` (N,) bool, only the rows of active clients
    (local-pass rounds: idle clients' rows are padding, nothing a deployment sends)."""
    if active is None:
        return sum(t.numel() * t.element_size() for t in tensors)
    rows = int(active.sum())
    return sum(t[0].numel() * t.element_size() * rows for t in tensors if t.shape[0])


def kind_code(kind: str) -> int:
    """A stable integer for an exchange name, carried in the header."""
    return zlib.crc32(kind.encode()) & 0x7FFF_FFFF


class Transport(Protocol):
    """What step code may ask of the transport; `LocalTransport` and `DistTransport` both
    satisfy it. Every byte of split-learning traffic is counted here and nowhere else."""

    layout: Layout
    counter: CommCounter
    device: torch.device

    def gather(
        self,
        step: int,
        kind: str,
        rows: list[torch.Tensor],
        count: bool = True,
        active: torch.Tensor | None = None,
    ) -> list[torch.Tensor] | None: ...

    def scatter(
        self,
        step: int,
        kind: str,
        rows: list[torch.Tensor] | None,
        active: torch.Tensor | None = None,
    ) -> list[torch.Tensor]: ...

    def to_server(
        self,
        step: int,
        kind: str,
        client_id: int,
        rows: list[torch.Tensor] | None,
        count: bool = True,
    ) -> list[torch.Tensor] | None: ...

    def to_client(
        self,
        step: int,
        kind: str,
        client_id: int,
        rows: list[torch.Tensor] | None,
        count: bool = True,
    ) -> list[torch.Tensor] | None: ...

    def client_to_client(
        self,
        step: int,
        kind: str,
        giver: int,
        taker: int,
        rows: list[torch.Tensor] | None,
        counted_bytes: int,
    ) -> list[torch.Tensor] | None: ...

    def broadcast_(self, tensor: torch.Tensor, count: bool = False) -> None: ...

    def all_gather_rows(self, rows: torch.Tensor) -> torch.Tensor: ...

    def all_reduce_sum_(
        self, tensor: torch.Tensor, per_client_bytes: int = 0, clients: int | None = None
    ) -> None: ...

    def check_agreement(self, fingerprint: int) -> None: ...

    def close(self) -> None: ...


def _count_fedavg(transport: Transport, per_client_bytes: int, clients: int | None = None) -> None:
    """A FedAvg round: every client (or the ``clients`` that took part) uploads its
    parameters and downloads the average."""
    senders = transport.layout.num_clients if clients is None else clients
    if per_client_bytes and transport.layout.is_server:
        transport.counter.bytes_up += senders * per_client_bytes
        transport.counter.bytes_down += senders * per_client_bytes


def _count_hand_off(transport: Transport, counted_bytes: int) -> None:
    """Client to client (SL's segment): it leaves one client and reaches another."""
    if transport.layout.is_server:
        transport.counter.bytes_up += counted_bytes
        transport.counter.bytes_down += counted_bytes


class LocalTransport:
    """Server and all clients in one process: tensors are passed, bytes still counted."""

    def __init__(self, layout: Layout, device: torch.device | None = None):
        assert layout.in_process
        self.layout = layout
        self.counter = CommCounter()
        self.device = device or torch.device("cpu")

    def gather(
        self,
        step: int,
        kind: str,
        rows: list[torch.Tensor],
        count: bool = True,
        active: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """Clients' rows (K, ...) -> server gets every client's rows (N, ...).

        ``count=False`` for telemetry (per-client losses) that a real deployment would
        not need to send; ``active`` (N,): count only those clients' rows.
        """
        if count:
            self.counter.bytes_up += payload_bytes(rows, active)
        return rows

    def scatter(
        self, step: int, kind: str, rows: list[torch.Tensor], active: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """Server's rows (N, ...) -> each rank gets the rows of the clients it hosts."""
        self.counter.bytes_down += payload_bytes(rows, active)
        return rows

    def to_server(
        self,
        step: int,
        kind: str,
        client_id: int,
        rows: list[torch.Tensor] | None,
        count: bool = True,
    ) -> list[torch.Tensor] | None:
        """One client's tensors to the server (sequential split learning)."""
        if count:
            self.counter.bytes_up += payload_bytes(rows)
        return rows

    def to_client(
        self,
        step: int,
        kind: str,
        client_id: int,
        rows: list[torch.Tensor] | None,
        count: bool = True,
    ) -> list[torch.Tensor] | None:
        """The server's tensors to one client (returned on the rank hosting it)."""
        if count:
            self.counter.bytes_down += payload_bytes(rows)
        return rows

    def client_to_client(
        self,
        step: int,
        kind: str,
        giver: int,
        taker: int,
        rows: list[torch.Tensor] | None,
        counted_bytes: int,
    ) -> list[torch.Tensor] | None:
        """One client's tensors to another (SL's travelling segment); ``counted_bytes``
        is what the method sends logically (a relay through the server is not doubled)."""
        _count_hand_off(self, counted_bytes)
        return rows

    def broadcast_(self, tensor: torch.Tensor, count: bool = False) -> None:
        """Overwrite ``tensor`` on every rank with the server's copy (nothing to do here).
        ``count``: a downlink broadcast every client receives, counted once (EPSL)."""
        if count:
            self.counter.bytes_down += payload_bytes([tensor])

    def all_gather_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Per-client rows (K, M) from every rank -> (N, M) on every rank."""
        return rows

    def all_reduce_sum_(
        self, tensor: torch.Tensor, per_client_bytes: int = 0, clients: int | None = None
    ) -> None:
        """Sum ``tensor`` over all ranks, in place (one rank: nothing to add).
        ``per_client_bytes``: counted as a FedAvg round of that many bytes per client."""
        _count_fedavg(self, per_client_bytes, clients)

    def check_agreement(self, fingerprint: int) -> None:
        """Raise if ranks were started with different configurations (one rank: nothing)."""

    def close(self) -> None:
        pass


class DistTransport:
    """Server rank 0 and client ranks 1..W-1, point-to-point on a dedicated group."""

    def __init__(self, layout: Layout, device: torch.device, timeout_s: float):
        self.layout = layout
        self.device = device
        self.counter = CommCounter()
        self.timeout = timedelta(seconds=timeout_s)
        backend = "nccl" if device.type == "cuda" else "gloo"
        # A group of its own: its sequence numbers and buffers are independent of
        # the default group that Lightning uses for barriers and reductions.
        self.group = dist.new_group(
            ranks=list(range(layout.world_size)), backend=backend, timeout=self.timeout
        )

    # -- header -----------------------------------------------------------------
    def _header(
        self, step: int, kind: str, rows: list[torch.Tensor], ids: list[int]
    ) -> torch.Tensor:
        """Step, exchange, the clients the rows belong to, each tensor's dtype and shape."""
        if len(rows) > _MAX_TENSORS:
            raise TransportError(f"at most {_MAX_TENSORS} tensors per exchange, got {len(rows)}")
        values = [_MAGIC, step, kind_code(kind), ids[0] if ids else -1, len(ids), len(rows)]
        for t in rows:
            if t.dim() > _MAX_DIMS or t.dtype not in _DTYPES:
                raise TransportError(f"cannot send {kind}: dtype {t.dtype}, {t.dim()} dims")
            dims = list(t.shape) + [0] * (_MAX_DIMS - t.dim())
            values += [_DTYPES.index(t.dtype), t.dim()] + dims
        values += [0] * (HEADER_LEN - len(values))
        return torch.tensor(values, dtype=torch.int64, device=self.device)

    def _read_header(
        self, header: torch.Tensor, peer: int, step: int, kind: str, expect_clients: list[int]
    ) -> list[tuple[torch.dtype, list[int]]]:
        h = header.tolist()
        if h[0] != _MAGIC:
            raise TransportError(
                f"rank {self.layout.rank}: garbage header from rank {peer} ({kind})"
            )
        first = expect_clients[0] if expect_clients else -1
        if h[1] != step or h[2] != kind_code(kind):
            raise TransportError(
                f"rank {self.layout.rank} expected '{kind}' of step {step} from rank {peer} but got "
                f"step {h[1]} (kind code {h[2]}): ranks are out of lockstep"
            )
        if peer != SERVER_RANK and (h[3] != first or h[4] != len(expect_clients)):
            raise TransportError(
                f"rank {peer} sent clients {h[3]}..{h[3] + h[4] - 1}, server expected "
                f"{first}..{first + len(expect_clients) - 1}: ranks disagree on the client layout"
            )
        specs = []
        for i in range(h[5]):
            base = _FIXED + i * _PER_TENSOR
            ndim = h[base + 1]
            specs.append((_DTYPES[h[base]], h[base + 2 : base + 2 + ndim]))
        return specs

    # -- point to point ---------------------------------------------------------
    def _run(self, ops: list[tuple[str, torch.Tensor, int]], what: str) -> None:
        """Post sends/receives, then wait for each, naming the peer that fails."""
        p2p = [
            dist.P2POp(dist.isend if op == "send" else dist.irecv, t, peer, self.group)
            for op, t, peer in ops
        ]
        watch = heartbeat()
        try:  # posting fails at once when a peer's connection is already closed
            works = dist.batch_isend_irecv(p2p) if p2p else []
        except RuntimeError as err:
            raise _fault(watch, None, what, self.timeout) from err
        for work, peer in _work_peers(works, [peer for _, _, peer in ops]):
            try:
                work.wait(self.timeout)
            except RuntimeError as err:
                raise _fault(watch, peer, what, self.timeout) from err

    def gather(
        self,
        step: int,
        kind: str,
        rows: list[torch.Tensor],
        count: bool = True,
        active: torch.Tensor | None = None,
    ) -> list[torch.Tensor] | None:
        """Client ranks send their rows (K, ...); the server returns all rows (N, ...)."""
        what = f"'{kind}' gather at step {step}"
        if not self.layout.is_server:
            self._send(SERVER_RANK, step, kind, rows, self.layout.hosted, what)
            return None
        ranks = self.layout.client_ranks
        headers = {r: torch.empty(HEADER_LEN, dtype=torch.int64, device=self.device) for r in ranks}
        self._run([("recv", headers[r], r) for r in ranks], what)
        buffers = {}
        for r in ranks:
            specs = self._read_header(headers[r], r, step, kind, self.layout.clients_of(r))
            buffers[r] = [torch.empty(shape, dtype=dt, device=self.device) for dt, shape in specs]
        self._run([("recv", b, r) for r in ranks for b in buffers[r]], what)
        out = [torch.cat([buffers[r][i] for r in ranks]) for i in range(len(buffers[ranks[0]]))]
        if count:
            self.counter.bytes_up += payload_bytes(out, active)
        return out

    def scatter(
        self,
        step: int,
        kind: str,
        rows: list[torch.Tensor] | None,
        active: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """The server sends each client rank the rows of its clients; they return them."""
        what = f"'{kind}' scatter at step {step}"
        if self.layout.is_server:
            assert rows is not None
            ops = []
            for r in self.layout.client_ranks:
                ids = self.layout.clients_of(r)
                part = [t[ids[0] : ids[-1] + 1].contiguous() for t in rows]
                ops.append(("send", self._header(step, kind, part, ids), r))
                ops += [("send", t, r) for t in part]
            self._run(ops, what)
            self.counter.bytes_down += payload_bytes(rows, active)
            return []
        return self._recv(SERVER_RANK, step, kind, self.layout.hosted, what)

    def _send(
        self, peer: int, step: int, kind: str, rows: list[torch.Tensor], ids: list[int], what: str
    ) -> None:
        """Header (naming clients ``ids``), then the tensors, to one peer."""
        header = self._header(step, kind, rows, ids)
        self._run(
            [("send", header, peer)] + [("send", t.detach().contiguous(), peer) for t in rows], what
        )

    def _recv(
        self, peer: int, step: int, kind: str, expect_clients: list[int], what: str
    ) -> list[torch.Tensor]:
        """The header from one peer, checked, then the tensors it announces."""
        header = torch.empty(HEADER_LEN, dtype=torch.int64, device=self.device)
        self._run([("recv", header, peer)], what)
        specs = self._read_header(header, peer, step, kind, expect_clients)
        out = [torch.empty(shape, dtype=dt, device=self.device) for dt, shape in specs]
        self._run([("recv", t, peer) for t in out], what)
        return out

    # -- one client at a time (sequential split learning) -------------------------
    def to_server(
        self,
        step: int,
        kind: str,
        client_id: int,
        rows: list[torch.Tensor] | None,
        count: bool = True,
    ) -> list[torch.Tensor] | None:
        """The rank hosting ``client_id`` sends ``rows``; the server returns them."""
        owner = self.layout.rank_of(client_id)
        what = f"'{kind}' of client {client_id} at step {step}"
        if self.layout.rank == owner:
            self._send(SERVER_RANK, step, kind, rows, [client_id], what)
            return None
        if not self.layout.is_server:
            return None
        out = self._recv(owner, step, kind, [client_id], what)
        if count:
            self.counter.bytes_up += payload_bytes(out)
        return out

    def to_client(
        self,
        step: int,
        kind: str,
        client_id: int,
        rows: list[torch.Tensor] | None,
        count: bool = True,
    ) -> list[torch.Tensor] | None:
        """The server sends ``rows`` to the rank hosting ``client_id``, which returns them."""
        owner = self.layout.rank_of(client_id)
        what = f"'{kind}' to client {client_id} at step {step}"
        if self.layout.is_server:
            self._send(owner, step, kind, rows, [client_id], what)
            if count:
                self.counter.bytes_down += payload_bytes(rows)
            return None
        if self.layout.rank != owner:
            return None
        return self._recv(SERVER_RANK, step, kind, [client_id], what)

    def client_to_client(
        self,
        step: int,
        kind: str,
        giver: int,
        taker: int,
        rows: list[torch.Tensor] | None,
        counted_bytes: int,
    ) -> list[torch.Tensor] | None:
        """``giver``'s rank sends ``rows``; ``taker``'s rank returns them (relayed through
        the server when the two clients live on different ranks)."""
        giver_rank, taker_rank = self.layout.rank_of(giver), self.layout.rank_of(taker)
        if giver_rank != taker_rank:
            got = self.to_server(step, kind, giver, rows, count=False)
            rows = self.to_client(step, kind, taker, got, count=False)
        _count_hand_off(self, counted_bytes)
        return rows if self.layout.rank == taker_rank else None

    # -- collectives ------------------------------------------------------------
    def broadcast_(self, tensor: torch.Tensor, count: bool = False) -> None:
        """Overwrite ``tensor`` on every rank with the server's copy; ``count``: a downlink
        broadcast every client receives, counted once (EPSL)."""
        self._wait(
            dist.broadcast(tensor, src=SERVER_RANK, group=self.group, async_op=True),
            "broadcast from the server",
        )
        if count and self.layout.is_server:
            self.counter.bytes_down += payload_bytes([tensor])

    def all_gather_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Per-client rows (K, M) from every rank -> all clients' rows (N, M) on every rank."""
        sizes = [len(self.layout.clients_of(r)) for r in range(self.layout.world_size)]
        width = rows.shape[1] if rows.dim() == 2 else 0
        padded = torch.zeros(max(sizes), width, dtype=rows.dtype, device=self.device)
        padded[: rows.shape[0]] = rows
        parts = [torch.empty_like(padded) for _ in sizes]
        self._wait(dist.all_gather(parts, padded, group=self.group, async_op=True), "all-gather")
        return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=False)])

    def all_reduce_sum_(
        self, tensor: torch.Tensor, per_client_bytes: int = 0, clients: int | None = None
    ) -> None:
        """Sum ``tensor`` over all ranks, in place (FedAvg's partial sums);
        ``per_client_bytes``: counted as a FedAvg round of that many bytes per client."""
        self._wait(
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=self.group, async_op=True),
            "all-reduce",
        )
        _count_fedavg(self, per_client_bytes, clients)

    def check_agreement(self, fingerprint: int) -> None:
        """Raise, naming the rank, if ranks were started with different configurations."""
        mine = torch.tensor([fingerprint], dtype=torch.int64, device=self.device)
        parts = [torch.empty_like(mine) for _ in range(self.layout.world_size)]
        self._wait(dist.all_gather(parts, mine, group=self.group, async_op=True), "handshake")
        for rank, p in enumerate(parts):
            if int(p) != fingerprint:
                raise TransportError(
                    f"rank {rank} runs a different configuration than rank {self.layout.rank} "
                    "(client count, model, algorithm or seed differ)"
                )

    def _wait(self, work, what: str) -> None:
        watch = heartbeat()
        try:
            work.wait(self.timeout)
        except RuntimeError as err:
            raise _fault(watch, None, what, self.timeout) from err

    def close(self) -> None:
        stop_heartbeat()
        if dist.is_initialized():
            dist.destroy_process_group(self.group)


# -- hung and dead ranks ----------------------------------------------------------
_HEARTBEAT: tuple[int, Heartbeat] | None = None  # (pid, heartbeat) of this process


def heartbeat() -> Heartbeat | None:
    """This process's heartbeat in the default group's store, started on first use."""
    global _HEARTBEAT
    if not dist.is_initialized() or dist.get_world_size() < 2:
        return None
    if _HEARTBEAT is None or _HEARTBEAT[0] != os.getpid():  # a forked rank starts its own
        store = dist.distributed_c10d._get_default_store()
        beat = Heartbeat(store, dist.get_rank(), dist.get_world_size(), dist.is_initialized)
        _HEARTBEAT = (os.getpid(), beat.start())
    return _HEARTBEAT[1]


def stop_heartbeat() -> None:
    """Stop this process's heartbeat and wait for its thread (before the process exits)."""
    global _HEARTBEAT
    if _HEARTBEAT is not None and _HEARTBEAT[0] == os.getpid():
        _HEARTBEAT[1].stop(join=True)
        _HEARTBEAT = None


def _store_host() -> int | None:
    """The rank whose process hosts the rendezvous store (None: torchrun's agent)."""
    return None if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True" else SERVER_RANK


def _work_peers(works: list, peers: list[int]) -> list[tuple[object, int | None]]:
    """Each work handle with the peer a failure of it names. Gloo returns one handle per
    operation; NCCL one for the whole batch, which names its peer only when every
    operation has the same one (else None: the heartbeat check finds the silent rank)."""
    if len(works) == len(peers):
        return list(zip(works, peers, strict=True))
    only = peers[0] if peers and len(set(peers)) == 1 else None
    return [(work, only) for work in works]


def _fault(
    watch: Heartbeat | None, peer: int | None, what: str, timeout: timedelta
) -> TransportError:
    """The error for a failed wait, naming the rank that stopped answering.

    A peer that died closes its connections, and the wait fails at once; one that hangs
    is found by the heartbeat check (a few seconds, after the timeout).
    """
    me = dist.get_rank() if dist.is_initialized() else -1
    silent = watch.silent() if watch is not None else []
    if watch is not None:
        watch.leaving()  # others checking now must not take this rank's exit for a hang
    return TransportError(blame(me, peer, what, timeout.total_seconds(), silent, _store_host()))


def collective_fault(what: str, timeout_s: float) -> TransportError:
    """The error for a failed Lightning collective (barrier, broadcast), naming the culprit."""
    return _fault(heartbeat(), None, what, timedelta(seconds=timeout_s))


def make_transport(num_clients: int, device: torch.device, timeout_s: float):
    """The transport for this process: distributed if a process group is up, else local."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        layout = Layout(dist.get_rank(), dist.get_world_size(), num_clients)
        return DistTransport(layout, device, timeout_s)
    return LocalTransport(Layout(0, 1, num_clients), device)
