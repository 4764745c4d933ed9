"""Start ``world_size`` gloo ranks with fork and collect what each returns (or raised)."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import queue as queue_module
import socket
import time
import traceback


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world_size, port, fn, queue):
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    try:
        dist.init_process_group("gloo", rank=rank, world_size=world_size)
        # Pickled by value here: the queue's own pickler shares tensors through file
        # descriptors of this process, which the parent can no longer open once we exit.
        queue.put((rank, "ok", pickle.dumps(fn(rank, world_size))))
    except BaseException as err:  # noqa: BLE001 -- report every failure, never hang the parent
        queue.put((rank, "error", f"{type(err).__name__}: {err}\n{traceback.format_exc()}"))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_ranks(world_size: int, fn, timeout: float = 60.0) -> dict[int, tuple[str, object]]:
    """Run ``fn(rank, world_size)`` on each rank; returns {rank: ("ok"|"error", value)}."""
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    port = _free_port()
    procs = [
        ctx.Process(target=_worker, args=(r, world_size, port, fn, queue))
        for r in range(world_size)
    ]
    for p in procs:
        p.start()
    results = {}
    deadline = time.time() + timeout
    try:
        # Stop early once every still-living rank has reported (a rank may die silently).
        while len(results) < world_size and time.time() < deadline:
            try:
                rank, status, value = queue.get(timeout=0.5)
                results[rank] = (status, pickle.loads(value) if status == "ok" else value)
            except queue_module.Empty:
                alive = [r for r, p in enumerate(procs) if p.is_alive() and r not in results]
                if not alive and queue.empty():
                    break
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
    return results
