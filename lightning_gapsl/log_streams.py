"""Log handlers that write to the standard stream of the moment.

Lightning binds its stderr handlers when it is imported, and Hydra binds its console
handler to the stdout of the moment it configures logging. A host that swaps the stream
later (pytest's capture, a notebook, a second in-process run) then saw "Logging error:
I/O operation on closed file". These handlers look the stream up on every record.
"""

from __future__ import annotations

import logging
import sys


class CurrentStream(logging.StreamHandler):
    """A StreamHandler for ``sys.stdout`` or ``sys.stderr`` as they are when a record
    comes. Built with the stream of the moment (as Hydra's ``ext://sys.stdout`` passes
    it), it follows that name; anything else it does not know is refused."""

    def __init__(self, stream=None) -> None:
        if stream is None or stream is sys.stderr:
            self._std_name = "stderr"
        elif stream is sys.stdout:
            self._std_name = "stdout"
        else:
            raise ValueError(f"CurrentStream follows sys.stdout or sys.stderr, not {stream!r}")
        super().__init__()

    @property
    def stream(self):
        return getattr(sys, self._std_name)

    @stream.setter
    def stream(self, _value) -> None:  # StreamHandler.__init__ assigns it
        pass


def rebind_lightning_handlers() -> None:
    """Replace the plain stderr handlers Lightning attached at import."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if type(h) is logging.StreamHandler]:
            new = CurrentStream()
            new.setLevel(old.level)
            new.setFormatter(old.formatter)
            logger.removeHandler(old)
            logger.addHandler(new)
