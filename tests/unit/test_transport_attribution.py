"""Which peer a failed point-to-point exchange names: gloo gives one work handle per
operation, NCCL one for the whole batch (a shim stands in for NCCL here)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import torch

from lightning_gapsl import transport
from lightning_gapsl.transport import DistTransport, TransportError, _work_peers


class _FailingWork:
    def wait(self, timeout=None):
        raise RuntimeError("NCCL communicator was aborted")


class _Work:
    def wait(self, timeout=None):
        return True


def test_one_handle_per_operation_names_each_peer():
    works = [_Work(), _FailingWork()]
    assert _work_peers(works, [1, 2]) == list(zip(works, [1, 2], strict=True))


def test_a_merged_handle_names_a_peer_only_when_there_is_one():
    merged = _FailingWork()
    assert _work_peers([merged], [1, 2]) == [(merged, None)]
    assert _work_peers([merged], [2, 2, 2]) == [(merged, 2)]


def test_a_merged_batch_failure_does_not_blame_the_first_peer(monkeypatch):
    """NCCL's batch_isend_irecv returns one handle: a failure must not be pinned on the
    batch's first peer (rank 1 here) when rank 2 may be the one that stopped."""
    monkeypatch.setattr(transport.dist, "P2POp", lambda *args: args)
    monkeypatch.setattr(transport.dist, "batch_isend_irecv", lambda ops: [_FailingWork()])
    monkeypatch.setattr(transport, "heartbeat", lambda: None)  # no process group here
    dist_transport = DistTransport.__new__(DistTransport)
    dist_transport.group, dist_transport.timeout = None, timedelta(seconds=1)
    ops = [("recv", torch.zeros(1), 1), ("recv", torch.zeros(1), 2)]
    with pytest.raises(TransportError) as err:
        dist_transport._run(ops, "activations")
    assert "lost rank 1" not in str(err.value)
    assert "did not take part" in str(err.value)
