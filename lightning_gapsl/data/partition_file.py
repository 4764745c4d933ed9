"""A run's partition (client -> training-sample indices) as a JSON file, and its replay.

Every run writes ``<output_dir>/partition.json``; ``data.partition_file=<that file>``
makes another run use exactly those clients instead of drawing a partition. Indices
count the training samples left after ``data.max_train`` and the validation carve, so
the file records how many there were and a checksum of their labels: a run whose
training set differs (another seed, ``data.val_fraction`` or data set) is refused
rather than silently given other samples.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import torch

from lightning_gapsl.data.datasets import DataError

FORMAT = "lightning_gapsl.partition/1"


def labels_checksum(labels: torch.Tensor) -> int:
    """CRC-32 of the int64 labels ``(n,)``: identifies the training set a partition indexes."""
    return zlib.crc32(labels.to(torch.int64).contiguous().numpy().tobytes())


def partition_record(
    parts: list[torch.Tensor], labels: torch.Tensor, dataset: str, num_classes: int
) -> dict:
    """The JSON-ready record of ``parts`` (one index tensor per client) over ``labels``."""
    counts = [torch.bincount(labels[p], minlength=num_classes).tolist() for p in parts]
    return {
        "format": FORMAT,
        "dataset": dataset,
        "num_train": int(labels.numel()),
        "labels_crc32": labels_checksum(labels),
        "num_clients": len(parts),
        "label_counts": counts,
        "clients": [p.tolist() for p in parts],
    }


def save_partition(path: str | Path, record: dict) -> None:
    """Write ``record`` (from `partition_record`) to ``path``, one client per line."""
    head = {k: v for k, v in record.items() if k not in ("clients", "label_counts")}
    lines = [json.dumps(head)[:-1] + ', "label_counts": [']
    lines += [f"  {json.dumps(c)}," for c in record["label_counts"]]
    lines[-1] = lines[-1].rstrip(",")
    lines.append('], "clients": [')
    lines += [f"  {json.dumps(c)}," for c in record["clients"]]
    lines[-1] = lines[-1].rstrip(",")
    lines.append("]}")
    Path(path).write_text("\n".join(lines) + "\n")


def load_partition(path: str | Path, labels: torch.Tensor, num_clients: int) -> list[torch.Tensor]:
    """The clients saved in ``path`` (``data.partition_file``), checked against this run.

    Raises `DataError` naming ``data.partition_file`` when the file is unreadable, not a
    partition, made for other training data, holds another number of clients, or has an
    index out of range, repeated, or a client without samples.
    """
    key = f"data.partition_file={path}"
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(
            f"{key} is not a readable JSON file ({err}); give a partition.json that a run wrote"
        ) from None
    if (
        not isinstance(record, dict)
        or record.get("format") != FORMAT
        or not isinstance(record.get("clients"), list)
    ):
        raise DataError(
            f"{key} is not a partition file (needs format {FORMAT!r} and "
            "'clients': a list of index lists); give a partition.json a run wrote"
        )
    n = int(labels.numel())
    if record.get("num_train") != n or record.get("labels_crc32") != labels_checksum(labels):
        raise DataError(
            f"{key} was written for other training data ({record.get('dataset')}, "
            f"{record.get('num_train')} samples), this run has {n}: use the same "
            "data, data.max_train, data.val_fraction and seed as the run that wrote it"
        )
    clients = record["clients"]
    if len(clients) != num_clients:
        raise DataError(
            f"{key} holds {len(clients)} clients but data.num_clients="
            f"{num_clients}; set data.num_clients={len(clients)}"
        )
    parts, seen = [], torch.zeros(n, dtype=torch.bool)
    for k, client in enumerate(clients):
        if (
            not isinstance(client, list)
            or not client
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in client)
        ):
            raise DataError(f"{key}: client {k} must be a non-empty list of sample indices")
        idx = torch.tensor(client, dtype=torch.int64)
        if int(idx.min()) < 0 or int(idx.max()) >= n:
            raise DataError(f"{key}: client {k} has an index outside 0..{n - 1}")
        if bool(seen[idx].any()) or idx.unique().numel() != idx.numel():
            raise DataError(
                f"{key}: client {k} repeats a sample index (each sample belongs "
                "to at most one client)"
            )
        seen[idx] = True
        parts.append(idx.sort().values)
    return parts
