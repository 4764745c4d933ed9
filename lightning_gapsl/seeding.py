"""Seeds derived from (run seed, role, client id), never from the process rank.

Layout invariance (docs/explanations/architecture.md) needs every client's randomness to be the same
whichever process hosts it, so every generator in the project is seeded through
`derive_seed` with the run seed and a stable key such as ``("client", client_id)``.
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, *parts: int | str) -> int:
    """Return a 63-bit seed that depends only on ``seed`` and ``parts``.

    Uses a cryptographic hash so nearby inputs (client 1 vs client 2) give unrelated
    streams; Python's ``hash`` is salted per process and would break reproducibility.
    """
    key = ":".join([str(int(seed))] + [str(p) for p in parts]).encode()
    digest = hashlib.blake2b(key, digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def generator(seed: int, *parts: int | str) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``derive_seed(seed, *parts)``."""
    gen = torch.Generator()
    gen.manual_seed(derive_seed(seed, *parts))
    return gen
