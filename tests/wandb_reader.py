"""Read an offline W&B run file (``run-<id>.wandb``) back: its history rows and records.

The file is a LevelDB-style log (the W&B SDK's ``datastore`` format): a 7-byte file
header (``:W&B``, magic 0xBEE1, version 0), then 32 KiB blocks of records, each with a
7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last); a record's
payload is a serialized ``wandb_internal_pb2.Record``. Blocks end with zero padding
when fewer than 7 bytes are left. Small and strict: a torn record raises.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: str | Path) -> list:
    """Every record in the file, in order (``wandb_internal_pb2.Record`` objects)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:HEADER])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), f"{path}: not a W&B run file"
    out, pos, parts = [], HEADER, []
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # block trailer padding
            pos += left
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if kind == 0 and length == 0:  # zero padding up to the next block
            pos += left
            continue
        payload = data[pos + HEADER : pos + HEADER + length]
        assert len(payload) == length, f"{path}: record torn at byte {pos}"
        assert zlib.crc32(payload, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF == crc, (
            f"{path}: bad checksum at byte {pos}"
        )
        pos += HEADER + length
        parts.append(payload)
        if kind in (FULL, LAST):
            rec = pb.Record()
            rec.ParseFromString(b"".join(parts))
            out.append(rec)
            parts = []
    return out


def history(path: str | Path) -> list[dict]:
    """The logged history rows: {key: value} per ``wandb.log`` call."""
    rows = []
    for rec in records(path):
        if rec.WhichOneof("record_type") == "history":
            row = {}
            for item in rec.history.item:
                key = item.key or "/".join(item.nested_key)
                row[key] = json.loads(item.value_json)
            rows.append(row)
    return rows


def kinds(path: str | Path) -> list[str]:
    """The record types in order (``run``, ``config``, ``history``, ..., ``exit``)."""
    return [rec.WhichOneof("record_type") for rec in records(path)]
