"""Which rank stopped answering: a heartbeat per rank in the rendezvous store.

When an exchange times out, the rank that notices knows only which peer it was waiting
for, and that peer is often a victim too (a client rank waits for the server, which
waits for the client rank that hangs). So every rank runs a daemon thread that bumps
its own counter ``lgapsl/heartbeat/<rank>`` in the store every `PERIOD_S` seconds. A
rank that times out reads all counters twice, `WINDOW_S` apart: ranks whose counter did
not move are the ones that stopped (SIGSTOP, a hung node, a stuck driver call). If
the store itself does not answer, its host stopped: rank 0 (under srun, fork, popen and
plain torchrun ranks, rank 0 hosts the store; torchrun's agent store is the exception).

The thread works without Python's GIL most of the time (store calls are C++), so a
rank busy computing still beats; only a stopped or wedged process goes silent. Nothing
here imports ``torch.distributed``: the store is passed in (anything with
``add(key, int) -> int``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

PERIOD_S = 0.5
"""Seconds between a rank's heartbeats."""
WINDOW_S = 1.5
"""Seconds between the two readings of the counters (several heartbeats)."""
STORE_DEADLINE_S = 2.5
"""Seconds one reading of all counters may take before the store counts as silent."""
KEY = "lgapsl/heartbeat/{rank}"
LEFT = "lgapsl/left/{rank}"


def silent_ranks(
    before: list[int], after: list[int], me: int, left: list[int] | None = None
) -> list[int]:
    """Ranks whose counter did not move between two readings.

    Never ``me``, nor a rank that said it is leaving (``left[r] > 0``: it noticed the
    fault itself and is exiting, so its heartbeat stops for a reason).
    """
    left = left or [0] * len(before)
    return [
        r
        for r, (a, b) in enumerate(zip(before, after, strict=False))
        if a == b and r != me and not left[r]
    ]


class Heartbeat:
    """This rank's heartbeat thread, and the check of everyone else's."""

    def __init__(self, store, rank: int, world_size: int, alive: Callable[[], bool] = lambda: True):
        self.store = store
        self.rank = rank
        self.world_size = world_size
        self._alive = alive  # False once the process group is gone: stop beating
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="lgapsl-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self.store.add(KEY.format(rank=self.rank), 1)  # exists before anyone checks
        self._thread.start()
        return self

    def stop(self, join: bool = False) -> None:
        """Stop beating; ``join``: also wait for the thread, so no store call is in flight
        when the process exits (a C++ store call interrupted by interpreter shutdown
        aborts the process: "terminate called without an active exception")."""
        self._stop.set()
        if join and self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(STORE_DEADLINE_S)

    def leaving(self) -> None:
        """Tell the others this rank exits on purpose (best effort: the store may be gone)."""

        def say() -> None:
            try:
                self.store.add(LEFT.format(rank=self.rank), 1)
            except RuntimeError:  # DistError: the store is gone, nobody is left to tell
                pass

        writer = threading.Thread(target=say, daemon=True)
        writer.start()
        writer.join(STORE_DEADLINE_S / 4)

    def _beat(self) -> None:
        key = KEY.format(rank=self.rank)
        while not self._stop.wait(PERIOD_S):
            if not self._alive():
                return
            try:
                self.store.add(key, 1)
            except RuntimeError:  # store gone or timed out (DistError): the check says so
                if self._stop.wait(PERIOD_S):
                    return

    def _read(self, key: str = KEY) -> list[int] | None:
        """All ranks' counters, or None when the store does not answer in time."""
        out: list = []

        def read() -> None:
            try:
                out.extend(self.store.add(key.format(rank=r), 0) for r in range(self.world_size))
            except RuntimeError:  # DistError: the store is gone
                out.clear()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(STORE_DEADLINE_S)
        return list(out) if not reader.is_alive() and len(out) == self.world_size else None

    def silent(self) -> list[int] | None:
        """Ranks that stopped beating (empty: everyone is alive; None: the store is silent).

        Takes about `WINDOW_S` seconds (up to ``WINDOW_S + 2 * STORE_DEADLINE_S``).
        """
        before = self._read()
        if before is None:
            return None
        time.sleep(WINDOW_S)
        after, left = self._read(), self._read(LEFT)
        if after is None or left is None:
            return None
        return silent_ranks(before, after, self.rank, left)


def blame(
    me: int,
    peer: int | None,
    what: str,
    timeout_s: float,
    silent: list[int] | None,
    store_host: int | None = 0,
) -> str:
    """One line naming the rank(s) at fault, from a heartbeat check after a timeout.

    ``peer`` is the rank ``me`` waited for (None: a collective), ``silent`` the check's
    result (None: the store did not answer either).
    """
    waited = f"rank {me} gave up on {what} after trainer.timeout_s={timeout_s:g}"
    if silent is None:
        if store_host is not None and store_host != me:
            return (
                f"rank {store_host} stopped answering (no exchange, and the rendezvous "
                f"store it hosts is silent); {waited}"
            )
        return f"the rendezvous store stopped answering; {waited}"
    if silent:
        names = ", ".join(str(r) for r in silent)
        who = f"rank {names}" if len(silent) == 1 else f"ranks {names}"
        return f"{who} stopped answering (no heartbeat for {WINDOW_S:g} s); {waited}"
    if peer is None:
        return f"{waited}: every rank is alive but one did not take part (out of lockstep)"
    return (
        f"rank {me} lost rank {peer} during {what} (timeout {timeout_s:g} s): rank {peer} "
        "is alive but did not take part (ranks out of lockstep)"
    )
