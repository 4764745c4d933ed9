"""An experiment's finished runs in one file, ``runs.jsonl`` in its results folder.

One JSON line per run: its folder relative to the results folder (``psl.sgd0.05/seed0``),
the overrides it was made with, exit code, seconds, host, its summary (``null`` when it
wrote none), the end of its log when it failed, and the 8 reconstructed pool images of a
leakage evaluation (8-bit, for the picture). The comparison tool reads the record before
it runs anything: a run with a summary there is done, so a grid resumes from the record
alone, on another machine. Run folders (logs, checkpoints, partition files, W&B) stay out
of git. Lines are appended as runs finish; a later line for a run replaces an earlier one
(a crashed run is retried).

    python -m lightning_gapsl.record RESULTS_DIR [RESULTS_DIR ...]
    python -m lightning_gapsl.record --drop 'psl.*/seed1' RESULTS_DIR

The first adds the run folders found under each results folder to its record
(``*/seed*/`` holding run.json or summary.json), for folders made before the record
existed; ``--drop GLOB`` removes the matching runs' lines, so the next comparison reruns
them (with the overrides the experiment now gives).
"""

from __future__ import annotations

import base64
import fnmatch
import json
import sys
import threading
from pathlib import Path

import torch

RECORD = "runs.jsonl"
LOG_TAIL = 50  # lines of train.log kept for a run that wrote no summary
PICTURE_KEYS = ("original", "0/conv", "0/ridge")  # what the reconstruction picture shows


class RecordError(ValueError):
    """A record file that cannot be read (names the file, the line and what to do)."""


def encode_images(images: torch.Tensor) -> dict:
    """(N, C, H, W) in [0, 1] -> 8-bit pixels, base64 (for the picture, not for analysis)."""
    pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).contiguous()
    return {"shape": list(pixels.shape), "uint8": base64.b64encode(pixels.numpy()).decode()}


def decode_images(data: dict) -> torch.Tensor:
    """The inverse of `encode_images`: (N, C, H, W) float32 in [0, 1], to 1/255."""
    raw = bytearray(base64.b64decode(data["uint8"]))
    pixels = torch.frombuffer(raw, dtype=torch.uint8).reshape(data["shape"])
    return pixels.float() / 255


def decode_recon(recon: dict | None) -> dict[str, torch.Tensor] | None:
    """A record line's ``recon`` as the images `privacy.report` draws (None: none)."""
    return {k: decode_images(v) for k, v in recon.items()} if recon else None


def entry_from_folder(key: str, out: Path) -> dict | None:
    """A record line from a run folder (None when the run never started)."""
    meta = json.loads((out / "run.json").read_text()) if (out / "run.json").is_file() else {}
    summary_file = out / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else None
    if summary is None and not meta:
        return None
    entry = {"run": key, **{k: meta.get(k) for k in ("overrides", "returncode", "host")}}
    entry.update(proc_wall_s=meta.get("proc_wall_s"), cpu_s=meta.get("cpu_s"), summary=summary)
    if summary is None:
        log = out / "train.log"
        lines = log.read_text(errors="replace").splitlines() if log.is_file() else []
        entry["log_tail"] = lines[-LOG_TAIL:]
    recon = out / "privacy_recon.pt"
    if recon.is_file():
        images = torch.load(recon, weights_only=True)
        entry["recon"] = {k: encode_images(images[k]) for k in PICTURE_KEYS if k in images}
    return entry


class Record:
    """The runs.jsonl of one results folder; safe to add to from several threads."""

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / RECORD
        self._lock = threading.Lock()
        self.entries: dict[str, dict] = {}
        lines = self.path.read_text().splitlines() if self.path.is_file() else []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as err:
                if number == len(lines):  # a write cut off by an interruption: rerun it
                    print(f"warning: {self.path} ends in a cut-off line; ignored", file=sys.stderr)
                    continue
                raise RecordError(
                    f"{self.path} line {number} is not JSON ({err.msg}); restore the file "
                    "from git, or delete the line (that run is then rerun)"
                ) from None
            self.entries[entry["run"]] = entry

    def key(self, out: Path) -> str:
        return Path(out).relative_to(self.out_dir).as_posix()

    def get(self, out: Path) -> dict | None:
        """The run's latest line, or None."""
        return self.entries.get(self.key(out))

    def done(self, out: Path) -> bool:
        """Whether the run wrote a summary (in the record, or in its folder not yet added)."""
        entry = self.get(out)
        return (entry is not None and entry["summary"] is not None) or (
            Path(out) / "summary.json"
        ).is_file()

    def add_folder(self, out: Path) -> dict | None:
        """Add the run folder's outcome (a new line) and return it; None if it never ran."""
        entry = entry_from_folder(self.key(out), Path(out))
        if entry is not None and entry != self.get(out):
            with self._lock:
                self.entries[entry["run"]] = entry
                with open(self.path, "a") as f:
                    f.write(json.dumps(entry, separators=(",", ":")) + "\n")
        return entry

    def fetch(self, out: Path) -> dict | None:
        """The run's outcome: the record's line, else its folder's (then added)."""
        entry = self.get(out)
        if entry is not None and (entry["summary"] is not None or not Path(out).is_dir()):
            return entry
        return self.add_folder(out) if Path(out).is_dir() else entry

    def summaries(self, pattern: str) -> dict[str, dict]:
        """Run key -> summary for the runs whose key matches the glob (record lines, and
        run folders not added yet), in key order; runs without a summary left out."""
        found = {k: e["summary"] for k, e in self.entries.items() if e["summary"] is not None}
        for path in self.out_dir.glob(f"{pattern}/summary.json"):
            found.setdefault(self.key(path.parent), json.loads(path.read_text()))
        return {k: found[k] for k in sorted(found) if fnmatch.fnmatchcase(k, pattern)}

    def drop(self, pattern: str) -> list[str]:
        """Remove the lines of the runs whose key matches the glob; the keys removed."""
        with self._lock:
            gone = [k for k in self.entries if fnmatch.fnmatchcase(k, pattern)]
            for key in gone:
                del self.entries[key]
            lines = [json.dumps(e, separators=(",", ":")) + "\n" for e in self.entries.values()]
            self.path.write_text("".join(lines))
        return gone


USAGE = "usage: python -m lightning_gapsl.record [--drop GLOB] RESULTS_DIR [RESULTS_DIR ...]"


def main(argv: list[str]) -> int:
    pattern = None
    if argv[:1] == ["--drop"]:
        pattern, argv = (argv[1] if len(argv) > 1 else ""), argv[2:]
    if not argv or pattern == "":
        print(USAGE, file=sys.stderr)
        return 2
    for folder in map(Path, argv):
        if not folder.is_dir():
            print(f"error: {folder} is not a folder", file=sys.stderr)
            return 2
        record = Record(folder)
        if pattern is not None:
            gone = record.drop(pattern)
            print(f"{record.path}: {len(gone)} runs dropped ({', '.join(gone) or 'none matched'})")
            continue
        runs = sorted(
            {p.parent for p in folder.glob("*/seed*/*") if p.name in ("run.json", "summary.json")}
        )
        added = sum(record.add_folder(run) is not None for run in runs if not record.get(run))
        print(f"{record.path}: {added} runs added, {len(record.entries)} in all")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
