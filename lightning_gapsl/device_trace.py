"""Device and availability traces (as FedScale's): each client's compute speed, link
bandwidths and the steps at which it is online, read from a JSON file (``latency.trace``).

The file::

    {"clients": [
      {"id": 0, "flops": 2e10, "uplink_bps": 1e7, "downlink_bps": 5e7,
       "available": [[0, 100], [250, 400]]},
      ...
    ]}

* ``id``: the client index; every id 0..N-1 exactly once. Ids >= N are ignored, so a
  trace of more devices than the run has clients serves its first N.
* ``flops`` (FLOP/s), ``uplink_bps`` and ``downlink_bps`` (bits/s): finite and > 0.
  They replace the log-normal model (``latency.client_flops``, ``client_hetero``,
  ``uplink_bps``, ``downlink_bps``); the server keeps ``latency.server_flops``.
* ``available`` (optional; absent: always online): half-open windows ``[start, end)``
  of global training steps (step ``s`` of epoch ``e`` is ``e * steps_per_epoch + s``).
  A client is online for a participation draw when every step of the draw (one step
  for the PSL family, the round's steps for the averaging methods) lies in its windows;
  otherwise it takes no part in that draw, like a dropout.

Windows count steps, not the simulated clock: the clock advances by latencies that
depend on who took part before, so availability on the clock would make each draw a
function of the run's history. In steps every draw is a pure function of (seed, index,
trace), the same in every process layout, and a resumed run draws what the first did.

This module reads and checks the file only (no torch): the config checks it once at
start-up, and the latency model and the participation schedule use what it returns.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning_gapsl.checks import ConfigError

__all__ = ["RATES", "DeviceTrace", "Window", "load_trace"]

RATES = ("flops", "uplink_bps", "downlink_bps")
Window = tuple[int, int]  # [start, end) in global training steps
FORMAT_HINT = (
    '{"clients": [{"id": 0, "flops": 2e10, "uplink_bps": 1e7, "downlink_bps": 5e7, '
    '"available": [[start, end], ...]}, ...]}'
)


@dataclass(frozen=True)
class DeviceTrace:
    """Clients 0..N-1 of a trace, in id order."""

    flops: tuple[float, ...]  # (N,) FLOP/s
    uplink_bps: tuple[float, ...]  # (N,) bits/s, client -> server
    downlink_bps: tuple[float, ...]  # (N,) bits/s, server -> client
    available: tuple[tuple[Window, ...] | None, ...]  # (N,) windows; None: always online

    @property
    def has_windows(self) -> bool:
        """Whether some client is ever offline (only then does the trace narrow who takes part)."""
        return any(w is not None for w in self.available)


def load_trace(path: str, num_clients: int) -> DeviceTrace:
    """Read and check the trace at ``path`` for clients 0..``num_clients``-1.

    Raises:
        ConfigError: naming ``latency.trace`` and what would be valid, when the file is
            missing, not JSON, not a trace, misses a client id, repeats one, or has a
            rate that is not a finite number > 0 or a malformed window.
    """
    key = f"latency.trace={path}"
    by_id = _entries_by_id(_read(path, key), num_clients, key)
    rows = [by_id[i] for i in range(num_clients)]
    rates = {name: tuple(_rate(row, i, name, key) for i, row in enumerate(rows)) for name in RATES}
    return DeviceTrace(
        flops=rates["flops"],
        uplink_bps=rates["uplink_bps"],
        downlink_bps=rates["downlink_bps"],
        available=tuple(_windows(row, i, key) for i, row in enumerate(rows)),
    )


def _read(path: str, key: str) -> list:
    """The ``clients`` list of the file; ConfigError if unreadable or shaped otherwise."""
    if not Path(path).is_file():
        raise ConfigError(f"{key}: no such file (give a JSON device trace {FORMAT_HINT})")
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(
            f"{key} is not a readable JSON file ({err}); give a device trace {FORMAT_HINT}"
        ) from None
    clients = record.get("clients") if isinstance(record, dict) else None
    if not isinstance(clients, list) or not all(isinstance(c, dict) for c in clients):
        raise ConfigError(f"{key} is not a device trace: it needs {FORMAT_HINT}")
    return clients


def _entries_by_id(clients: list, num_clients: int, key: str) -> dict[int, dict]:
    """id -> entry for every entry; ConfigError on a bad or repeated id or a missing one."""
    by_id: dict[int, dict] = {}
    for k, entry in enumerate(clients):
        cid = entry.get("id")
        if not _is_int(cid) or cid < 0:
            raise ConfigError(f"{key}: entry {k} has id={cid!r}; ids are integers 0, 1, ...")
        if cid in by_id:
            raise ConfigError(f"{key}: client id {cid} appears twice (one entry per id)")
        by_id[cid] = entry
    missing = [i for i in range(num_clients) if i not in by_id]
    if missing:
        shown = ", ".join(str(i) for i in missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise ConfigError(
            f"{key} does not cover client ids {shown} of data.num_clients={num_clients}; "
            f"it needs one entry for every id 0..{num_clients - 1}"
        )
    return by_id


def _rate(entry: dict, cid: int, name: str, key: str) -> float:
    value = entry.get(name)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (ok and math.isfinite(value) and value > 0):
        raise ConfigError(
            f"{key}: client {cid} has {name}={value!r}; it must be a finite number > 0"
            f" ({'FLOP/s' if name == 'flops' else 'bits/s'})"
        )
    return float(value)


def _windows(entry: dict, cid: int, key: str) -> tuple[Window, ...] | None:
    if "available" not in entry:
        return None
    raw: Any = entry["available"]
    pairs = raw if isinstance(raw, list) else [None]
    windows = []
    for pair in pairs:
        good = isinstance(pair, list) and len(pair) == 2 and all(_is_int(v) for v in pair)
        if not (good and 0 <= pair[0] < pair[1]):
            raise ConfigError(
                f"{key}: client {cid} has available={raw!r}; give a list of [start, end] "
                "windows of training steps, integers with 0 <= start < end ([] = never online)"
            )
        windows.append((pair[0], pair[1]))
    return tuple(windows)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
