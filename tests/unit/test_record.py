"""The experiment record (lightning_gapsl/record.py): one JSON line per run, read back as
the grid runner resumes from it."""

from __future__ import annotations

import json

import pytest
import torch

from lightning_gapsl.record import (
    RECORD,
    Record,
    RecordError,
    decode_images,
    encode_images,
    main,
)


def _folder(root, key, summary=None, returncode=0, log="", recon=None):
    out = root / key
    out.mkdir(parents=True)
    meta = {"overrides": ["a=1"], "returncode": returncode, "proc_wall_s": 2.0, "cpu_s": 1.5}
    (out / "run.json").write_text(json.dumps({**meta, "host": {"torch": "x"}}))
    if summary is not None:
        (out / "summary.json").write_text(json.dumps(summary))
    (out / "train.log").write_text(log)
    if recon is not None:
        torch.save(recon, out / "privacy_recon.pt")
    return out


def test_images_survive_to_one_step_of_255():
    images = torch.rand(8, 1, 28, 28)
    back = decode_images(json.loads(json.dumps(encode_images(images))))
    assert back.shape == images.shape
    assert (back - images).abs().max() <= 0.5 / 255 + 1e-6


def test_a_run_is_read_back_from_the_record_without_its_folder(tmp_path):
    images = {"original": torch.rand(8, 1, 4, 4), "0/ridge": torch.rand(8, 1, 4, 4)}
    out = _folder(tmp_path, "psl.a/seed0", {"test_acc_mean": 0.9}, recon=images)
    record = Record(tmp_path)
    assert record.done(out) and record.get(out) is None  # a folder not yet added
    entry = record.fetch(out)
    assert entry["summary"] == {"test_acc_mean": 0.9} and entry["returncode"] == 0
    assert set(entry["recon"]) == {"original", "0/ridge"}
    for path in out.iterdir():
        path.unlink()
    out.rmdir()
    again = Record(tmp_path)  # another machine: the record alone
    assert again.done(out) and again.fetch(out) == entry
    assert len((tmp_path / RECORD).read_text().splitlines()) == 1  # no line added twice


def test_a_crash_keeps_its_log_tail_and_a_retry_replaces_it(tmp_path):
    log = "\n".join(f"line {i}" for i in range(80)) + "\nboom\n"
    out = _folder(tmp_path, "psl.a/seed0", returncode=1, log=log)
    record = Record(tmp_path)
    entry = record.fetch(out)
    assert entry["summary"] is None and not record.done(out)
    assert len(entry["log_tail"]) == 50 and entry["log_tail"][-1] == "boom"
    (out / "summary.json").write_text(json.dumps({"test_acc_mean": 0.5}))
    assert record.done(out) and record.fetch(out)["summary"] == {"test_acc_mean": 0.5}
    assert Record(tmp_path).get(out)["summary"] == {"test_acc_mean": 0.5}  # last line wins


def test_a_cut_off_last_line_is_rerun_and_a_broken_middle_line_is_named(tmp_path):
    _folder(tmp_path, "psl.a/seed0", {"test_acc_mean": 0.9})
    _folder(tmp_path, "psl.a/seed1", {"test_acc_mean": 0.8})
    assert main([str(tmp_path)]) == 0
    path = tmp_path / RECORD
    first, second = path.read_text().splitlines()
    path.write_text(first + "\n" + second[:20])
    assert list(Record(tmp_path).entries) == ["psl.a/seed0"]
    path.write_text(second[:20] + "\n" + first + "\n")
    with pytest.raises(RecordError, match=rf"{RECORD} line 1 is not JSON"):
        Record(tmp_path)


def test_drop_removes_matching_runs(tmp_path, capsys):
    for key in ("psl.a/seed0", "psl.a/seed1", "sl.b/seed1"):
        _folder(tmp_path, key, {"test_acc_mean": 0.9})
    assert main([str(tmp_path)]) == 0
    assert main(["--drop", "*/seed1", str(tmp_path)]) == 0
    assert list(Record(tmp_path).entries) == ["psl.a/seed0"]
    assert "2 runs dropped" in capsys.readouterr().out
    assert main(["--drop"]) == 2 and main([str(tmp_path / "nowhere")]) == 2
