"""In-use memory of every training step of one run, sampled from glibc (Linux only).

    python experiments/tools/step_memory.py algorithm=sfl_v1 data=mnist \
        data.num_clients=16 data.partition=iid trainer.devices=1 trainer.max_epochs=1 logger=none

Runs the train entry in this process with a thread that reads ``mallinfo2`` (heap in
use + mmapped chunks) every 0.2 ms. For every training step it keeps the highest value
and the package frames running at that moment; at exit it prints (to stderr) the
median rise above a step's start, the highest step and where the tops fell. Resident
memory also holds freed-but-kept heap pages, so this is the work's share of the peak,
not the peak itself (that is `/usr/bin/time -f %M`).
"""

from __future__ import annotations

import atexit
import collections
import ctypes
import os
import runpy
import sys
import threading
import time
import traceback

FIELDS = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in FIELDS.split()]


_libc = ctypes.CDLL("libc.so.6")
_libc.mallinfo2.restype = _MallInfo2


def in_use_mib() -> float:
    """Heap bytes in use plus mmapped chunks, MiB."""
    info = _libc.mallinfo2()
    return (info.uordblks + info.hblkhd) / 2**20


def main() -> None:
    main_thread = threading.get_ident()
    top = {"mib": 0.0, "where": ""}
    steps: list[tuple[float, float, str]] = []  # (rise over the step's start, top, where)

    def where() -> str:
        frame = sys._current_frames().get(main_thread)
        ours = [f for f in traceback.extract_stack(frame) if "lightning_gapsl" in f.filename]
        return " <- ".join(f"{os.path.basename(f.filename)}:{f.lineno}" for f in ours[::-1][:4])

    def sample() -> None:
        while True:
            now = in_use_mib()
            if now > top["mib"]:
                top.update(mib=now, where=where())
            time.sleep(0.0002)

    import lightning_gapsl.module as module

    training_step = module.SplitLearningModule.training_step

    def measured_step(self, batch, batch_idx):
        start = in_use_mib()
        top.update(mib=0.0, where="")
        out = training_step(self, batch, batch_idx)
        steps.append((top["mib"] - start, top["mib"], top["where"]))
        return out

    def report() -> None:
        rises = sorted(rise for rise, _, _ in steps)
        print(f"steps {len(steps)}, median rise {rises[len(rises) // 2]:.1f} MiB", file=sys.stderr)
        rise, mib, at = max(steps, key=lambda s: s[1])
        print(f"highest step top {mib:.1f} MiB (rise {rise:.1f}) at {at}", file=sys.stderr)
        for at, count in collections.Counter(s[2] for s in steps).most_common(3):
            print(f"  {count} steps topped at {at}", file=sys.stderr)

    module.SplitLearningModule.training_step = measured_step
    threading.Thread(target=sample, daemon=True).start()
    atexit.register(report)
    sys.argv = ["lightning_gapsl.train", *sys.argv[1:]]
    runpy.run_module("lightning_gapsl.train", run_name="__main__")


if __name__ == "__main__":
    main()
