"""Unit tests (seconds): Lightning's and Hydra's log lines go to the stream of the moment.

Lightning binds its stderr handlers when it is imported, Hydra its console handler when
a run configures logging; a host that swaps the stream later (pytest's capture, a
notebook) then saw "Logging error: I/O operation on closed file". tests/conftest.py
fails any test during which a handler reports such an error.
"""

from __future__ import annotations

import io
import logging
import os
import sys

import pytest

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


def test_a_second_in_process_run_logs_to_the_current_stdout(tmp_path, monkeypatch):
    """Hydra's console handler, configured during an in-process run under one stdout,
    keeps working after that stdout closes (pytest's capfd, a notebook cell)."""
    from lightning_gapsl import train

    for var in [v for v in os.environ if v.startswith(("SLURM", "TORCHELASTIC"))]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("SLURM_NTASKS", "2")  # stops in our code, after Hydra set up logging
    monkeypatch.setenv("SLURM_JOB_NAME", "lgapsl")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "lgapsl-train",
            "data=digits",
            "logger=none",
            "trainer.devices=3",
            f"output_dir={tmp_path / 'out'}",
        ],
    )
    during = io.StringIO()
    monkeypatch.setattr(sys, "stdout", during)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with pytest.raises(SystemExit):
        train.main()
    during.close()
    after_out, after_err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", after_out)
    monkeypatch.setattr(sys, "stderr", after_err)
    logging.getLogger("lightning_gapsl.check").info("after the run")
    assert "Logging error" not in after_err.getvalue()
    assert "after the run" in after_out.getvalue()
