"""Unit test (milliseconds): Lightning's log lines go to the stderr of the moment.

Lightning binds its stderr handlers when it is imported; a host that swaps stderr later
(pytest's capture, a notebook) then saw "Logging error: I/O operation on closed file".
"""

from __future__ import annotations

import io
import logging
import sys

import lightning_gapsl.train  # noqa: F401  (rebinds Lightning's handlers)


def test_lightning_logs_follow_the_current_stderr(monkeypatch):
    log = logging.getLogger("lightning.pytorch")
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    log.warning("first line")
    first.close()  # the host's stream ends, as pytest's capture does after a test
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    log.warning("second line")
    assert "second line" in second.getvalue()
    assert "first line" not in second.getvalue()
