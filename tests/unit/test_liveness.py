"""Unit tests (about 2 s): who stopped answering, from heartbeats in a real store.

The store is torch's in-memory `HashStore` (the same ``add`` API as the TCPStore the
ranks share), and the heartbeats are the real daemon threads.
"""

from __future__ import annotations

import torch.distributed as dist

from lightning_gapsl.liveness import Heartbeat, blame, silent_ranks


def test_silent_ranks_ignores_self_and_ranks_that_left():
    assert silent_ranks([3, 5, 7], [4, 5, 9], me=0) == [1]
    assert silent_ranks([3, 5, 7], [3, 5, 7], me=1) == [0, 2]
    assert silent_ranks([3, 5, 7], [3, 5, 7], me=1, left=[1, 0, 0]) == [2]


def test_blame_names_the_culprit_not_the_victim():
    line = blame(1, 0, "'activations' gather at step 8", 5.0, [2])
    assert line.startswith("rank 2 stopped answering") and "rank 1 gave up" in line
    assert "\n" not in line
    store_gone = blame(2, 0, "'cut_grads' scatter", 5.0, None, store_host=0)
    assert store_gone.startswith("rank 0 stopped answering")
    alive = blame(0, 2, "'activations' gather", 5.0, [])
    assert "rank 2 is alive" in alive and "lockstep" in alive
    assert blame(0, None, "all-gather", 5.0, [1, 2]).startswith("ranks 1, 2 stopped answering")


def test_heartbeat_finds_the_stopped_rank():
    store = dist.HashStore()
    beats = [Heartbeat(store, rank, 3).start() for rank in range(3)]
    beats[2].stop()  # rank 2 "hangs": its counter stops moving
    try:
        assert beats[0].silent() == [2]
        beats[1].leaving()  # a rank that exits on purpose is not blamed
        beats[1].stop()
        assert beats[0].silent() == [2]
    finally:
        for beat in beats:
            beat.stop()
