"""Roles and client placement: which process is the server and which clients each rank hosts.

Pure functions of (world size, number of clients): no torch.distributed here, so the
same answer is computed on every rank, in tests, and in the SLURM environment check.
"""

from __future__ import annotations

from dataclasses import dataclass

SERVER_RANK = 0


def client_blocks(num_clients: int, num_client_ranks: int) -> list[list[int]]:
    """Contiguous blocks of client ids, one per client rank, sizes differing by at most one.

    The first ``num_clients % num_client_ranks`` ranks get one extra client, so the
    assignment is fixed by the two counts alone.
    """
    if not 1 <= num_client_ranks <= num_clients:
        raise ValueError(
            f"{num_client_ranks} client ranks cannot host {num_clients} clients "
            "(need 1 <= client ranks <= clients)"
        )
    base, extra = divmod(num_clients, num_client_ranks)
    blocks, start = [], 0
    for r in range(num_client_ranks):
        size = base + (1 if r < extra else 0)
        blocks.append(list(range(start, start + size)))
        start += size
    return blocks


@dataclass(frozen=True)
class Layout:
    """Where everything lives for one run.

    With one process, rank 0 is the server and hosts every client. With W > 1
    processes, rank 0 is the server only and ranks 1..W-1 host the client blocks.
    """

    rank: int
    world_size: int
    num_clients: int

    @property
    def in_process(self) -> bool:
        return self.world_size == 1

    @property
    def is_server(self) -> bool:
        return self.rank == SERVER_RANK

    @property
    def client_ranks(self) -> list[int]:
        return [0] if self.in_process else list(range(1, self.world_size))

    def clients_of(self, rank: int) -> list[int]:
        """Client ids hosted by ``rank`` (empty for a dedicated server rank)."""
        if self.in_process:
            return list(range(self.num_clients))
        if rank == SERVER_RANK:
            return []
        return client_blocks(self.num_clients, self.world_size - 1)[rank - 1]

    @property
    def hosted(self) -> list[int]:
        return self.clients_of(self.rank)

    def rank_of(self, client_id: int) -> int:
        """The rank hosting ``client_id``."""
        for rank in self.client_ranks:
            if client_id in self.clients_of(rank):
                return rank
        raise ValueError(f"client id {client_id} out of range 0..{self.num_clients - 1}")
