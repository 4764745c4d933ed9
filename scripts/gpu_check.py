"""The GPU check's driver and section programs (scripts/gpu_check.sh runs them; read its
header first).

    python scripts/gpu_check.py run        # every section (ONLY=...), each in its own process
    python scripts/gpu_check.py SECTION    # one section in this process (env, smoke, ...)

``run`` imports torch and the trainer once, then forks one process per section, so no
section pays Lightning's import again (seconds each on 2 cores), and kills a section's
whole process group at its time limit.

Every section writes OUT/<section>.json after each result it gets, so a section cut short
by its time limit still leaves what it measured:

    {"section", "device", "status": passed | failed | skipped | incomplete | running,
     "reason", "failures": [one line per broken claim], "items": {name: result},
     "rc", "seconds"}

A failure is a claim of the project that this machine contradicts: a run that crashes, a
client kernel off by more than float32 rounding, a resumed run that differs from the
uninterrupted one, a deterministic run that is not reproducible, a start-up memory bound
above the real peak. Speeds, and what NCCL does when a collective times out, are measured
and recorded, never failed on: measuring them is what the check is for. ``incomplete``:
nothing failed, but the section's time ran out before every item ran.

Environment: OUT (results), W (scratch), DEVICE (cuda, or cpu: the dry run, every section
with tiny sizes), SECTION_LIMIT (this section's seconds). The top of this file imports only
the standard library: the record keeping costs no torch import.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time

SECTIONS = ("env", "smoke", "throughput", "nccl", "numerics", "precision", "bench", "pytest")
OUT = os.environ.get("OUT", "")
W = os.environ.get("W", "")
DEVICE = os.environ.get("DEVICE", "cuda")
CUDA = DEVICE == "cuda"
ACCEL = "gpu" if CUDA else "cpu"
LIMIT = float(os.environ.get("SECTION_LIMIT", "600"))
T0 = time.time()
NO_CUDA = "no CUDA (dry run on the CPU)"
THREADS = 8 if CUDA else int(os.environ.get("OMP_NUM_THREADS", "1") or 1)

# The device check's sizes, and the dry run's: the same items, small enough for 2 cores.
SIZE = {
    "cuda": {
        "clients": 100,
        "batch": 32,
        "model": "resnet18",
        "cut": 2,
        "shape": "[3,32,32]",
        "train": 16000,
        "steps": 4,
        "many": 300,
        "kernel_k": 5,
        "kernel_b": 32,
        "kernel_split": 3,
        "kernel_shapes": {"lenet": (1, 28, 28), "resnet18": (3, 32, 32)},
        "digits_clients": 8,
        "digits_steps": 6,
        "steps4": 4,
        "grouped_model": [
            "model=resnet18",
            "model.cut_layer=2",
            "data.shape=[3,32,32]",
            "data.num_train=4000",
            "data.num_clients=10",
        ],
        "methods": ("psl", "gapsl", "epsl", "sfl_v1", "fsl_sage", "sl", "centralized"),
    },
    "cpu": {
        "clients": 3,
        "batch": 2,
        "model": "lenet",
        "cut": 1,
        "shape": "[1,8,8]",
        "train": 200,
        "steps": 2,
        "many": 6,
        "kernel_k": 3,
        "kernel_b": 4,
        "kernel_split": 2,
        "kernel_shapes": {"lenet": (1, 8, 8), "resnet18": (3, 8, 8)},
        "digits_clients": 3,
        "digits_steps": 2,
        "steps4": 2,
        # ResNet-18 costs the dry run seconds per run; its kernels are checked above
        "grouped_model": [
            "model=lenet",
            "model.cut_layer=1",
            "data.shape=[1,8,8]",
            "data.num_train=200",
            "data.num_clients=3",
        ],
        "methods": ("psl", "fsl_sage"),
    },
}[DEVICE]

BASE = ["optim=sgd", "logger=none", "trainer.progress_bar=false", "trainer.timeout_s=60"]
DIGITS = ["data=digits", *BASE]
# float32 against a float64 reference: relative error norms; measured ~1e-6 on CPU.
OUT_TOL, GRAD_TOL = 1e-5, 1e-4
LOOP_TOL = 1e-4  # grouped vs loop training loss, as tests/gpu asserts
HISTORY_TOL = 1e-6  # resumed vs uninterrupted, as tests/e2e/test_resume_faults.py


# ------------------------------------------------------------------------ records
class Record:
    """OUT/<section>.json, rewritten after every item."""

    def __init__(self, section: str):
        self.path = os.path.join(OUT, f"{section}.json")
        self.data = {
            "section": section,
            "device": DEVICE,
            "status": "running",
            "reason": "",
            "failures": [],
            "items": {},
        }
        self._write()

    def _write(self) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f, indent=1, default=str)
        os.replace(tmp, self.path)

    def put(self, key: str, value) -> None:
        self.data["items"][key] = value
        self._write()
        print(
            f"[{key}] (t={time.time() - T0:.1f} s) {json.dumps(value, default=str)[:600]}",
            flush=True,
        )

    def skip(self, key: str, reason: str) -> None:
        self.put(key, {"skipped": reason})

    def check(self, ok: bool, message: str) -> bool:
        if not ok:
            self.data["failures"].append(message)
            self._write()
            print(f"FAILED: {message}", flush=True)
        return ok

    def done(self, status: str | None = None, reason: str = "") -> None:
        def cut_short(value) -> int:
            if not isinstance(value, dict):
                return 0
            if value.get("skipped") == TIME_SPENT:
                return 1
            return sum(cut_short(v) for v in value.values())

        cut = cut_short(self.data["items"])
        if status is None:
            if self.data["failures"]:
                status, reason = "failed", "; ".join(self.data["failures"])[:400]
            elif cut:
                status, reason = "incomplete", f"{cut} item(s) not run: {TIME_SPENT}"
            else:
                status = "passed"
        self.data["status"], self.data["reason"] = status, reason
        self._write()


TIME_SPENT = "section time spent"


def time_left(margin: float = 20) -> bool:
    return time.time() - T0 < LIMIT - margin


def err(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())[:400]}"


def ov(*parts) -> list[str]:
    """Hydra overrides, later keys replacing earlier ones (Hydra rejects duplicates)."""
    out: dict[str, str] = {}
    for part in parts:
        for item in part:
            out[item.split("=", 1)[0]] = item
    return list(out.values())


def _load(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def record(section: str, status: str, reason: str) -> None:
    rec = Record(section)
    rec.done(status, reason)
    _summary_row(rec.data)


def finish(section: str, code: int, seconds: float) -> str:
    """After a section's process ended: what its exit says that its record may not."""
    path = os.path.join(OUT, f"{section}.json")
    data = _load(path) or {
        "section": section,
        "device": DEVICE,
        "status": "running",
        "reason": "",
        "failures": [],
        "items": {},
    }
    why = "its time limit" if code == 124 else f"exit code {code}"
    if data["status"] == "running":
        data["status"], data["reason"] = "failed", f"stopped by {why} before it finished"
    elif code != 0 and data["status"] != "failed":
        data["status"], data["reason"] = "failed", f"{why} after its record was written"
    data["rc"], data["seconds"] = code, round(seconds)
    with open(path, "w") as f:
        json.dump(data, f, indent=1, default=str)
    _summary_row(data)
    print(f"----- {section}: {data['status'].upper()} {data['reason'][:300]}", flush=True)
    return data["status"]


def _summary_row(data: dict) -> None:
    reason = str(data.get("reason", "")).replace("|", "/")[:160]
    with open(os.path.join(OUT, "summary.md"), "a") as f:
        f.write(
            f"| {data['section']} | {data['status']} | {reason} | {data.get('seconds', '')} |\n"
        )


# ------------------------------------------------------------------------ env
def env() -> None:
    from importlib import metadata

    rec = Record("env")
    if CUDA:
        try:
            smi = subprocess.run(
                [
                    "nvidia-smi",
                    "--query-gpu=name,driver_version,memory.total",
                    "--format=csv,noheader",
                ],
                capture_output=True,
                text=True,
                timeout=20,
            )
            rec.put("nvidia-smi", smi.stdout.strip() or smi.stderr.strip())
        except (OSError, subprocess.TimeoutExpired) as e:
            rec.put("nvidia-smi", err(e))
    import torch

    versions = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda_build": torch.version.cuda,
    }
    for dist in (
        "lightning",
        "torchmetrics",
        "hydra-core",
        "omegaconf",
        "antlr4-python3-runtime",
        "numpy",
    ):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    rec.put("versions", versions)
    for dist in ("lightning", "hydra-core", "omegaconf", "antlr4-python3-runtime"):
        rec.check(versions[dist] is not None, f"{dist} is not installed")
    rec.put("torch_threads", torch.get_num_threads())
    rec.put("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS"))
    rec.put("cuda_available", torch.cuda.is_available())
    if not CUDA:
        rec.skip("gpu", NO_CUDA)
        rec.done()
        return
    if not rec.check(torch.cuda.is_available(), "torch sees no CUDA device"):
        rec.done()
        return
    rec.put(
        "gpu",
        {
            "name": torch.cuda.get_device_name(0),
            "capability": torch.cuda.get_device_capability(0),
            "count": torch.cuda.device_count(),
            "bf16": torch.cuda.is_bf16_supported(),
            "free_total_gib": [round(b / 2**30, 1) for b in torch.cuda.mem_get_info(0)],
        },
    )
    rec.put(
        "libraries",
        {
            "nccl": torch.cuda.nccl.version(),
            "cudnn": torch.backends.cudnn.version(),
            "cudnn.benchmark": torch.backends.cudnn.benchmark,
            "cudnn.deterministic": torch.backends.cudnn.deterministic,
        },
    )
    tf32 = {}
    for name in (
        "torch.backends.cuda.matmul.allow_tf32",
        "torch.backends.cudnn.allow_tf32",
        "torch.get_float32_matmul_precision()",
    ):
        try:
            tf32[name] = eval(name)  # noqa: S307 -- fixed names above
        except Exception as e:  # noqa: BLE001 -- record what this torch says
            tf32[name] = err(e)
    rec.put("tf32_defaults", tf32)
    rec.done()


# ------------------------------------------------------------------------ smoke
def smoke() -> None:
    """The command line (Hydra) on the device: GAPSL, digits, 4 clients, 4 steps."""
    rec = Record("smoke")
    out = os.path.join(W, "smoke")
    cmd = [
        sys.executable,
        "-m",
        "lightning_gapsl.train",
        *DIGITS,
        "algorithm=gapsl",
        f"trainer.accelerator={ACCEL}",
        "trainer.devices=1",
        "data.num_clients=4",
        "trainer.max_epochs=1",
        "data.steps_per_epoch=4",
        f"output_dir={out}",
    ]
    rec.put("command", " ".join(cmd[1:]))
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=max(10, LIMIT - 10))
    except subprocess.TimeoutExpired:
        rec.check(False, "the command line run did not finish in time")
        rec.done()
        return
    sys.stdout.write(p.stdout[-2000:])
    sys.stdout.write(p.stderr[-3000:])
    rec.put("rc", p.returncode)
    if not rec.check(
        p.returncode == 0,
        f"the command line exited {p.returncode}: "
        f"{(p.stderr.strip().splitlines() or [''])[-1][:300]}",
    ):
        rec.done()
        return
    printed = (p.stdout.strip().splitlines() or [""])[-1]
    rec.check(
        printed == os.path.realpath(os.path.join(out, "summary.json")),
        f"the last line printed is not the summary's path: {printed!r}",
    )
    summary = _load(os.path.join(out, "summary.json")) or {}
    rec.put("summary", {k: summary.get(k) for k in ("train_loss_final", "test_acc_mean", "steps")})
    rec.check(
        math.isfinite(summary.get("train_loss_final") or math.nan),
        "summary.json has no finite train_loss_final",
    )
    device_line = next(
        (ln for ln in (p.stdout + p.stderr).splitlines() if ln.startswith("GPU available")), ""
    )
    rec.put("lightning_device_line", device_line)
    if CUDA:
        rec.check("used: True" in device_line, f"Lightning did not use the GPU: {device_line!r}")
    rec.done()


# ------------------------------------------------------------------------ shared by runs
def _train():
    from lightning_gapsl.train import compose, run

    return compose, run


def go(tag: str, overrides: list[str]) -> dict:
    """One in-process run; its summary.json as a dict."""
    import gc

    compose, run = _train()
    gc.collect()
    path = run(compose(overrides, os.path.join(W, tag)))
    if path is None:
        raise RuntimeError("the run was pre-empted (no summary.json)")
    with open(path) as f:
        return json.load(f)


def brief(summary: dict) -> dict:
    return {
        k: summary.get(k)
        for k in ("train_loss_final", "test_acc_mean", "test_acc_min", "bytes_up", "bytes_down")
    }


def finite(summary: dict) -> bool:
    loss = summary.get("train_loss_final")
    return isinstance(loss, (int, float)) and math.isfinite(loss)


def undo_deterministic() -> None:
    """``trainer.deterministic`` changes process-wide torch state; the runs after a
    deterministic one in the same process must not inherit it."""
    import torch

    torch.use_deterministic_algorithms(False)
    if CUDA:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = TF32_DEFAULT
        torch.backends.cudnn.benchmark = False


TF32_DEFAULT: tuple[bool, bool] = (False, True)


def _remember_tf32() -> None:
    global TF32_DEFAULT
    import torch

    # cuBLAS reads it when its handle is made: set before this process's first matmul, so
    # a deterministic run later in this process is as reproducible as a fresh one.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    TF32_DEFAULT = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)


# ------------------------------------------------------------------------ throughput
def throughput() -> None:
    """N virtual clients (ResNet-18 stem + stage 1 each) vs centralized at batch N*B."""
    import torch

    from lightning_gapsl.federated import build_federated_data
    from lightning_gapsl.layout import Layout
    from lightning_gapsl.memory_estimate import GIB, rank_step_memory
    from lightning_gapsl.models.grouped import grouped_supported
    from lightning_gapsl.models.split import build_client_segment
    from lightning_gapsl.models.stacked import resolve_mode

    compose, run = _train()
    rec, s = Record("throughput"), SIZE
    n, b = s["clients"], s["batch"]
    rec.put(
        "setup",
        {
            "model": s["model"],
            "cut_layer": s["cut"],
            "shape": s["shape"],
            "clients": n,
            "batch_per_client": b,
            "steps_per_epoch": s["steps"],
            "epochs": 2,
            "timed": "the last epoch",
            "threads": THREADS,
        },
    )
    common = [
        "data=synthetic",
        f"data.shape={s['shape']}",
        f"data.num_train={s['train']}",
        "data.num_test=50",
        "data.partition=iid",
        f"model={s['model']}",
        f"model.cut_layer={s['cut']}",
        *BASE,
        "trainer.eval_every=0",
        "trainer.ckpt_every=0",
        f"trainer.accelerator={ACCEL}",
        "trainer.devices=1",
        f"trainer.threads={THREADS}",
        "trainer.max_epochs=2",
        f"data.steps_per_epoch={s['steps']}",
    ]
    cen = ["algorithm=centralized", f"data.num_clients={n}", f"data.batch_size={n * b}"]

    def psl(k, *extra):
        return ["algorithm=psl", f"data.num_clients={k}", f"data.batch_size={b}", *extra]

    bf16 = "trainer.precision=bf16-mixed"
    runs = [  # most informative first: the time limit may cut the list
        ("central_NxB_loop", [*cen, "model.client_exec=loop"], False),
        ("psl_grouped", psl(n, "model.client_exec=grouped"), False),
        ("psl_loop", psl(n, "model.client_exec=loop"), False),
        ("psl_auto", psl(n), False),  # model.client_exec=auto, the default
        ("central_NxB_auto", cen, False),
        ("psl_vmap", psl(n, "model.client_exec=vmap"), False),
        ("psl_grouped_cudnn_benchmark", psl(n, "model.client_exec=grouped"), True),
        ("central_NxB_loop_bf16", [*cen, "model.client_exec=loop", bf16], False),
        ("psl_grouped_bf16", psl(n, "model.client_exec=grouped", bf16), False),
        (
            "gapsl_grouped",
            [
                "algorithm=gapsl",
                f"data.num_clients={n}",
                f"data.batch_size={b}",
                "model.client_exec=grouped",
            ],
            False,
        ),
        (
            f"psl_grouped_{s['many']}_clients",
            psl(s["many"], "model.client_exec=grouped", "data.steps_per_epoch=3"),
            False,
        ),
    ]

    def measure(name, overrides, benchmark):
        import gc

        cfg = compose(ov(common, overrides), os.path.join(W, f"tp_{name}"))
        gc.collect()
        if CUDA:
            torch.backends.cudnn.benchmark = benchmark
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        with open(run(cfg)) as f:
            hist = json.load(f)["history"]
        wall = time.perf_counter() - t0
        last = hist[-1]
        steps = cfg.data.steps_per_epoch
        row = {
            "samples_per_s": round(last["samples_per_s"], 1),
            "ms_per_step": round(1e3 * last["train_s"] / steps, 2),
            "first_epoch_s": round(hist[0]["train_s"], 2),
            "wall_s": round(wall, 1),
            "train_loss": last["train_loss"],
        }
        # The start-up bound check_fits compares with the GPU's free memory (the same call
        # the module makes, one process: every client hosted by the server rank).
        data = build_federated_data(cfg)
        need = rank_step_memory(cfg, data, Layout(0, 1, data.num_clients)).total
        row["estimate_bytes"], row["estimate_gib"] = need, round(need / GIB, 3)
        if CUDA:
            peak = torch.cuda.max_memory_allocated()
            row["peak_bytes"], row["peak_gib"] = peak, round(peak / GIB, 3)
        return cfg, row

    for name, overrides, benchmark in runs:
        if not time_left(25):
            rec.skip(name, TIME_SPENT)
            continue
        if benchmark and not CUDA:
            rec.skip(name, f"{NO_CUDA}: cudnn.benchmark is a CUDA setting")
            continue
        try:
            cfg, row = measure(name, overrides, benchmark)
            rec.put(name, row)
            rec.check(math.isfinite(row["train_loss"]), f"{name}: training loss not finite")
            if CUDA and cfg.trainer.precision == "32-true":
                rec.check(
                    row["estimate_bytes"] <= row["peak_bytes"],
                    f"{name}: the start-up memory bound ({row['estimate_gib']} GiB) is "
                    f"above the measured peak ({row['peak_gib']} GiB): check_fits could "
                    "refuse a run that fits",
                )
        except Exception as e:  # noqa: BLE001 -- out of memory included: record, go on
            rec.put(name, {"error": err(e)})
            rec.check(False, f"{name}: {err(e)[:200]}")
        finally:
            if CUDA:
                torch.backends.cudnn.benchmark = False

    def sps(key):
        v = rec.data["items"].get(key)
        return v.get("samples_per_s") if isinstance(v, dict) else None

    ref = max([x for x in (sps("central_NxB_loop"), sps("central_NxB_auto")) if x] or [0])
    ratios = {
        k: round(sps(k) / ref, 3)
        for k in rec.data["items"]
        if k.startswith(("psl", "gapsl"))
        and "bf16" not in k
        and "clients" not in k
        and sps(k)
        and ref
    }
    if sps("psl_grouped_bf16") and sps("central_NxB_loop_bf16"):
        ratios["psl_grouped_bf16_vs_central_bf16"] = round(
            sps("psl_grouped_bf16") / sps("central_NxB_loop_bf16"), 3
        )
    best = max(
        (v for k, v in ratios.items() if k.startswith("psl_") and "bf16" not in k), default=None
    )
    rec.put(
        "throughput_vs_centralized",
        {
            "reference_samples_per_s": ref,
            "target": 0.7,
            **ratios,
            "target_met": None if best is None else best >= 0.7,
        },
    )
    segment = build_client_segment(s["model"], tuple(json.loads(s["shape"])), 10, s["cut"], 0, 0)
    picks = resolve_mode(torch.device("cuda" if CUDA else "cpu"), grouped_supported(segment))
    modes = {m: sps(f"psl_{m}") for m in ("loop", "grouped", "vmap")}
    timed = {m: v for m, v in modes.items() if v}
    fastest = max(timed, key=timed.get) if timed else None
    rec.put(
        "client_exec_auto",
        {
            "auto_picks": picks,
            "samples_per_s": modes,
            "fastest": fastest,
            "auto_is_fastest": None if fastest is None else picks == fastest,
        },
    )
    rec.done()


# ------------------------------------------------------------------------ nccl
def _init_group(timeout_s: float) -> None:
    import socket
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if CUDA:
        torch.cuda.set_device(0)
    dist.init_process_group(
        "nccl" if CUDA else "gloo", rank=0, world_size=1, timeout=timedelta(seconds=timeout_s)
    )


def _transport(timeout_s: float):
    import torch

    from lightning_gapsl.layout import Layout
    from lightning_gapsl.transport import DistTransport

    return DistTransport(Layout(0, 1, 4), torch.device("cuda:0" if CUDA else "cpu"), timeout_s)


def nccl_child(kind: str) -> None:
    """One exchange that cannot finish in time, then stay alive 3 s if the process may."""
    import torch
    import torch.distributed as dist

    _init_group(120)
    t = _transport(float(os.environ.get("PROBE_TIMEOUT_S", "3")))
    t.check_agreement(1)

    def event(**k):
        print(json.dumps(k), flush=True)

    t0 = time.time()
    try:
        if kind == "slow":  # the GPU busy past the timeout: a slow, not dead, peer
            torch.cuda._sleep(int(12 * 2.0e9))
            t.all_reduce_sum_(torch.ones(1024, device=t.device))
        elif kind == "unmatched":  # a receive nobody sends to: a peer that never posts
            t._run([("recv", torch.empty(16, device=t.device), 0)], "unmatched receive")
        else:  # "cputensor": a CPU tensor handed to the NCCL-only subgroup
            dist.broadcast(torch.zeros(3), 0, group=t.group)
        event(event="returned", s=round(time.time() - t0, 2))
    except Exception as e:  # noqa: BLE001
        event(
            event="raised",
            type=type(e).__name__,
            s=round(time.time() - t0, 2),
            cause=type(e.__cause__).__name__ if e.__cause__ else None,
            msg=str(e)[:240],
        )
    for _ in range(3):  # naming the silent rank takes the transport 1.5-2.5 s from here
        time.sleep(1)
        event(event="alive", after_s=round(time.time() - t0, 1))
    os._exit(0)


def _timeout_children(rec: Record) -> None:
    """What a timed-out NCCL exchange does to its process, per error-handling mode."""
    from lightning_gapsl.cluster import NCCL_ERROR_HANDLING

    key = "TORCH_NCCL_ASYNC_ERROR_HANDLING"
    ours = NCCL_ERROR_HANDLING[key]
    cases = [
        ("slow", None),
        ("slow", ours),
        ("slow", "1"),
        ("unmatched", ours),
        ("cputensor", ours),
    ]
    procs, t0 = [], time.time()
    for kind, mode in cases:
        child_env = {k: v for k, v in os.environ.items() if k != key}
        if mode is not None:
            child_env[key] = mode
        procs.append(
            (
                kind,
                mode,
                subprocess.Popen(
                    [sys.executable, __file__, "nccl-child", kind],
                    env=child_env,
                    text=True,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                ),
            )
        )
    keys = (
        "Watchdog",
        "terminate",
        "abort",
        "Abort",
        "DistBackendError",
        "timed out",
        "SIGABRT",
        "Fatal",
        "entire process down",
        "No backend",
        "device type",
    )
    for kind, mode, p in procs:
        try:
            so, se = p.communicate(timeout=max(5.0, 40 - (time.time() - t0)))
            rc = p.returncode
        except subprocess.TimeoutExpired:
            p.kill()
            so, se = p.communicate()
            rc = "killed after 40 s (hung)"
        events = [json.loads(ln) for ln in so.splitlines() if ln.startswith("{")]
        raised = [e for e in events if e.get("event") == "raised"]
        alive = sum(e.get("event") == "alive" for e in events)
        label = f"{mode} (the trainer's policy)" if mode == ours else (mode or "unset")
        rec.put(
            f"timeout {kind}, {key}={label}",
            {
                "rc (negative: signal)": rc,
                "wall_s": round(time.time() - t0, 1),
                "alive_seconds_after_raise": alive,
                # what the transport needs to name a silent peer: an exception, then time
                "raised_and_stayed_alive_2s": bool(raised) and alive >= 2,
                "events": [e for e in events if e.get("event") != "alive"],
                "stderr_keylines": [
                    ln[:260] for ln in se.splitlines() if any(k in ln for k in keys)
                ][-6:],
            },
        )


def nccl() -> None:
    """DistTransport's collectives and P2P calls in a world of one rank (NCCL refuses two
    ranks on one GPU); the dry run uses gloo on the CPU for what gloo can do."""
    import torch
    import torch.distributed as dist

    from lightning_gapsl.cluster import NCCL_ERROR_HANDLING
    from lightning_gapsl.transport import TransportError

    rec = Record("nccl")
    if CUDA:  # first, before this process touches the GPU: their busy kernels would skew
        _timeout_children(rec)  # the latencies measured below
    else:
        rec.skip("timeout probes", f"{NO_CUDA}: they time a busy GPU under NCCL's error handling")
    os.environ.update(NCCL_ERROR_HANDLING)  # what train.run sets before its process group
    _init_group(60)
    t = _transport(10)
    dev = t.device

    def item(name, fn, expect=None):
        t0 = time.perf_counter()
        try:
            out = {"ok": True, "value": fn()}
        except Exception as e:  # noqa: BLE001
            out = {"ok": False, "error": err(e)}
        out["s"] = round(time.perf_counter() - t0, 4)
        rec.put(name, out)
        if expect is not None:
            rec.check(
                out["ok"] and out["value"] == expect,
                f"{name}: expected {expect!r}, got {out.get('value', out.get('error'))!r}",
            )
        return out

    item(
        "subgroup backend",
        lambda: str(dist.get_backend(t.group)),
        expect="nccl" if CUDA else "gloo",
    )
    item(
        "check_agreement (all_gather int64, first op on the group)",
        lambda: t.check_agreement(12345) or "ok",
        expect="ok",
    )

    def bcast():
        f = torch.tensor([1.0], device=dev)
        t.broadcast_(f)
        return f.item()

    item("broadcast_ float32 (the per-step pre-emption flag)", bcast, expect=1.0)

    def allreduce():
        x = torch.arange(6, dtype=torch.float64, device=dev)
        t.all_reduce_sum_(x, per_client_bytes=8)
        return x.tolist()

    item("all_reduce_sum_ float64 (FedAvg)", allreduce, expect=[0.0, 1.0, 2.0, 3.0, 4.0, 5.0])

    def gather_rows():
        rows = torch.randn(4, 21, dtype=torch.float64, device=dev)
        return bool(torch.equal(t.all_gather_rows(rows), rows))

    item("all_gather_rows float64 (evaluation rows)", gather_rows, expect=True)

    def bool_header():
        try:
            t._header(1, "mask", [torch.ones(3, dtype=torch.bool, device=dev)], [0])
        except TransportError:
            return "TransportError"
        return "accepted"

    item("bool tensor through the header (refused)", bool_header, expect="TransportError")

    p2p_names = [
        f"p2p to self, header + payload {dt}"
        for dt in ("float32", "bfloat16", "float16", "int64", "int32", "float64")
    ]
    if not CUDA:
        for name in [
            *p2p_names,
            "p2p to self, zero-size tensor",
            "batch_isend_irecv works",
            "wait(timeout) semantics",
        ]:
            rec.skip(name, f"{NO_CUDA}: gloo cannot send to its own rank; NCCL can")
    else:

        def p2p(dt):
            def f():
                pay = (torch.randn(3, 5, device=dev) * 10).to(dt)
                hdr = t._header(7, "probe", [pay], [0, 1, 2, 3])
                hin, buf = torch.empty_like(hdr), torch.empty_like(pay)
                t._run([("send", hdr, 0), ("recv", hin, 0)], "probe header")
                specs = t._read_header(hin, 0, 7, "probe", [0, 1, 2, 3])
                t._run([("send", pay, 0), ("recv", buf, 0)], "probe payload")
                return bool(torch.equal(buf, pay)) and specs == [(dt, [3, 5])]

            return f

        dtypes = (
            torch.float32,
            torch.bfloat16,
            torch.float16,
            torch.int64,
            torch.int32,
            torch.float64,
        )
        for name, dt in zip(p2p_names, dtypes, strict=True):
            item(name, p2p(dt), expect=True)
        item(
            "p2p to self, zero-size tensor",
            lambda: (
                t._run(
                    [
                        ("send", torch.empty(0, 5, device=dev), 0),
                        ("recv", torch.empty(0, 5, device=dev), 0),
                    ],
                    "empty",
                )
                or "ok"
            ),
            expect="ok",
        )

        def works():
            a = [torch.ones(4, device=dev) for _ in range(2)]
            c = [torch.empty(4, device=dev) for _ in range(2)]
            ops = [dist.P2POp(dist.isend, x, 0, t.group) for x in a] + [
                dist.P2POp(dist.irecv, y, 0, t.group) for y in c
            ]
            handles = dist.batch_isend_irecv(ops)
            for h in handles:
                h.wait()
            return {"ops": len(ops), "works_returned": len(handles)}

        # _work_peers pairs handles with peers: one per op (gloo) or one per batch (NCCL)
        item("batch_isend_irecv works", works)

        def wait_semantics():
            from datetime import timedelta

            x, out, cycles = torch.ones(1, device=dev), {}, int(0.5 * 1.5e9)
            for label, timeout in (("wait(timeout)", timedelta(seconds=30)), ("wait()", None)):
                torch.cuda.synchronize()
                torch.cuda._sleep(cycles)
                w = dist.all_reduce(x, group=t.group, async_op=True)
                t0 = time.perf_counter()
                w.wait(timeout) if timeout else w.wait()
                out[f"{label} returned after s"] = round(time.perf_counter() - t0, 3)
                torch.cuda.synchronize()
            return out

        item("wait(timeout) semantics (the GPU busy ~0.5 s first)", wait_semantics)

    def latency():
        f = torch.zeros(1, device=dev)
        for _ in range(20):
            t.broadcast_(f)
        t0 = time.perf_counter()
        for _ in range(200):
            t.broadcast_(f)
            f.item()
        out = {"broadcast_+item_us": round(1e6 * (time.perf_counter() - t0) / 200, 1)}
        if CUDA:
            t0 = time.perf_counter()
            for _ in range(100):
                hdr = t._header(1, "x", [f], [0])
                hin = torch.empty_like(hdr)
                t._run([("send", hdr, 0), ("recv", hin, 0)], "latency")
                hin.tolist()
            out["header_roundtrip_us"] = round(1e6 * (time.perf_counter() - t0) / 100, 1)
        return out

    item("per-exchange latency to self (a lower bound)", latency)
    t.close()
    dist.destroy_process_group()
    rec.done()


# ------------------------------------------------------------------------ numerics
def _rel(a, b) -> float:
    a, b = a.double().cpu(), b.double().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def _fwd_bwd(segs, mode, x, g, device, dtype=None):
    import torch

    from lightning_gapsl.models.stacked import StackedSegments

    dtype = dtype or torch.float32
    st = StackedSegments(segs, mode=mode).to(device=device, dtype=dtype)
    out = st(x.to(device=device, dtype=dtype))
    (out * g.to(device=device, dtype=dtype)).sum().backward()
    return out.detach(), {n: p.grad.detach().clone() for n, p in st.stacked_params().items()}


def _same(out, grads, out2, grads2) -> bool:
    import torch

    return bool(torch.equal(out, out2) and all(torch.equal(grads[n], grads2[n]) for n in grads))


def _tf32(on: bool) -> None:  # legacy flags: Lightning 2.6 reads the legacy getter
    import torch

    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def kernels(rec: Record) -> None:
    """Client kernels (loop, grouped, vmap) against a CPU float64 reference; K clients at
    once vs the same clients split over two processes' worth of segments."""
    import torch

    from lightning_gapsl.models.split import build_client_segment
    from lightning_gapsl.module import make_deterministic

    k, b, split = SIZE["kernel_k"], SIZE["kernel_b"], SIZE["kernel_split"]
    split_key = f"K{k}_vs_K{split}+{k - split}_bitwise"
    dev = torch.device("cuda" if CUDA else "cpu")
    # (label, TF32, deterministic): IEEE float32 is held to rounding; TF32 only recorded
    settings = (
        [("tf32=off", False, False), ("tf32=on", True, False), ("deterministic", False, True)]
        if CUDA
        else [("cpu", None, False)]
    )
    for case, (name, cut) in {"lenet_cut1": ("lenet", 1), "resnet18_cut2": ("resnet18", 2)}.items():
        shape = SIZE["kernel_shapes"][name]
        segs = [build_client_segment(name, shape, 10, cut, 0, c) for c in range(k)]
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(k, b, *shape, generator=gen)
        with torch.no_grad():
            g = torch.randn(k, *segs[0](x[0]).shape, generator=gen)
        ref_out, ref_g = _fwd_bwd(segs, "loop", x, g, torch.device("cpu"), torch.float64)
        for label, tf32, det in settings:
            if not time_left():
                rec.skip(f"kernels/{case}/{label}", TIME_SPENT)
                continue
            if tf32 is not None:
                _tf32(tf32)
            if det:
                make_deterministic()
            for mode in ("loop",) if det else ("loop", "grouped", "vmap"):
                key = f"kernels/{case}/{label}/{mode}"
                try:
                    out, gr = _fwd_bwd(segs, mode, x, g, dev)
                    out2, gr2 = _fwd_bwd(segs, mode, x, g, dev)
                    oa, ga = _fwd_bwd(segs[:split], mode, x[:split], g[:split], dev)
                    ob, gb = _fwd_bwd(segs[split:], mode, x[split:], g[split:], dev)
                    so, sg = torch.cat([oa, ob]), {n: torch.cat([ga[n], gb[n]]) for n in gr}
                    row = {
                        "out_rel_err_vs_f64": _rel(out, ref_out),
                        "grad_rel_err_vs_f64": max(_rel(gr[n], ref_g[n]) for n in gr),
                        "rerun_bitwise": _same(out, gr, out2, gr2),
                        split_key: _same(out, gr, so, sg),
                    }
                    rec.put(key, row)
                    if tf32 is not True:
                        rec.check(
                            row["out_rel_err_vs_f64"] <= OUT_TOL
                            and row["grad_rel_err_vs_f64"] <= GRAD_TOL,
                            f"{key}: float32 off the float64 reference by more than "
                            f"rounding ({row['out_rel_err_vs_f64']:.1e} out, "
                            f"{row['grad_rel_err_vs_f64']:.1e} grads)",
                        )
                    if mode == "loop" and (det or not CUDA):
                        # the loop's promise: client k's numbers whatever else is stacked
                        rec.check(
                            row["rerun_bitwise"] and row[split_key],
                            f"{key}: the loop is not bitwise reproducible across "
                            "reruns and client groupings",
                        )
                except Exception as e:  # noqa: BLE001
                    rec.put(key, {"error": err(e)})
                    rec.check(False, f"{key}: {err(e)[:200]}")
            if det:
                undo_deterministic()
        if CUDA:
            _tf32(TF32_DEFAULT[0])
            torch.backends.cudnn.allow_tf32 = TF32_DEFAULT[1]


def whole_runs(rec: Record) -> None:
    """Whole PSL runs on the device: reruns, grouped vs loop, deterministic vs the CPU."""
    s = SIZE
    base = [
        *DIGITS,
        "algorithm=psl",
        "trainer.devices=1",
        f"data.num_clients={s['digits_clients']}",
        "trainer.max_epochs=1",
        f"data.steps_per_epoch={s['digits_steps']}",
        "trainer.threads=1",
    ]
    dev = [*base, f"trainer.accelerator={ACCEL}", "model.client_exec=loop"]
    det = [*dev, "trainer.deterministic=true"]
    plan = [
        ("dev_loop_a", dev),
        ("dev_loop_b", dev),
        ("dev_grouped", ov(dev, ["model.client_exec=grouped"])),
        ("dev_deterministic_a", det),
        ("dev_deterministic_b", det),
        ("cpu_loop", [*base, "trainer.accelerator=cpu", "model.client_exec=loop"]),
    ]
    runs: dict[str, dict] = {}
    for tag, overrides in plan:
        if tag == "cpu_loop" and not CUDA:
            rec.skip(f"digits_psl/{tag}", f"{NO_CUDA}: the runs above ran on the CPU already")
            continue
        if not time_left():
            rec.skip(f"digits_psl/{tag}", TIME_SPENT)
            continue
        try:
            runs[tag] = brief(go(f"num_{tag}", overrides))
            rec.put(f"digits_psl/{tag}", runs[tag])
        except Exception as e:  # noqa: BLE001
            rec.put(f"digits_psl/{tag}", {"error": err(e)})
            rec.check(False, f"digits_psl/{tag}: {err(e)[:200]}")
        finally:
            undo_deterministic()

    def diff(a, c, key="train_loss_final"):
        try:
            return abs(runs[a][key] - runs[c][key])
        except (KeyError, TypeError):
            return None

    diffs = {
        "rerun_equal": runs.get("dev_loop_a") == runs.get("dev_loop_b"),
        "grouped_vs_loop_loss": diff("dev_grouped", "dev_loop_a"),
        "deterministic_rerun_equal": runs.get("dev_deterministic_a")
        == runs.get("dev_deterministic_b"),
        "deterministic_vs_cpu_loss": diff("dev_deterministic_a", "cpu_loop"),
        "default_vs_cpu_loss": diff("dev_loop_a", "cpu_loop"),
        "deterministic_vs_cpu_test_acc": diff("dev_deterministic_a", "cpu_loop", "test_acc_mean"),
    }
    rec.put("digits_psl/diffs", diffs)
    if "dev_grouped" in runs and "dev_loop_a" in runs:
        rec.check(
            diffs["grouped_vs_loop_loss"] <= LOOP_TOL,
            f"grouped vs loop training loss differs by {diffs['grouped_vs_loop_loss']}",
        )
    if "dev_deterministic_b" in runs:
        rec.check(diffs["deterministic_rerun_equal"], "two trainer.deterministic=true runs differ")
    if "cpu_loop" in runs and "dev_deterministic_a" in runs:
        rec.check(
            diffs["deterministic_vs_cpu_loss"] <= LOOP_TOL,
            f"deterministic device run vs CPU: loss differs by "
            f"{diffs['deterministic_vs_cpu_loss']}",
        )

    res = grouped_run("algorithm=gapsl", "trainer.deterministic=true")
    key = "grouped_gapsl_deterministic_rerun"
    if not time_left():
        rec.skip(key, TIME_SPENT)
        return
    try:  # grouped BasicBlocks under deterministic kernels, evaluation of every client
        a = brief(go("num_res_a", res))
        undo_deterministic()
        c = brief(go("num_res_b", res))
        rec.put(key, {"model": SIZE["grouped_model"][0], "a": a, "b": c, "equal": a == c})
        rec.check(a == c and finite(a), f"{key}: the two runs differ or diverged")
    except Exception as e:  # noqa: BLE001
        rec.put(key, {"error": err(e)})
        rec.check(False, f"{key}: {err(e)[:200]}")
    finally:
        undo_deterministic()


def grouped_run(*extra: str) -> list[str]:
    """Synthetic images through grouped client kernels on the device (ResNet-18 there)."""
    return [
        *BASE,
        "data=synthetic",
        "data.num_test=100",
        *SIZE["grouped_model"],
        f"trainer.accelerator={ACCEL}",
        "trainer.devices=1",
        "trainer.max_epochs=1",
        f"data.steps_per_epoch={SIZE['steps4']}",
        "trainer.ckpt_every=0",
        "model.client_exec=grouped",
        *extra,
    ]


def new_tf32_api(rec: Record) -> None:
    """The new TF32 switches set by a user before a run; torch refuses mixing old and new."""
    for label, extra in (("plain", []), ("deterministic", ["trainer.deterministic=true"])):
        key = f"new_tf32_api_then_run/{label}"
        if not CUDA:
            rec.skip(key, f"{NO_CUDA}: TF32 is a CUDA setting")
            continue
        overrides = [
            *DIGITS,
            "algorithm=psl",
            "trainer.devices=1",
            "data.num_clients=4",
            "trainer.accelerator=gpu",
            "trainer.max_epochs=1",
            "data.steps_per_epoch=2",
            *extra,
        ]
        code = (
            "import torch\n"
            "torch.backends.cuda.matmul.fp32_precision = 'ieee'\n"
            "torch.backends.cudnn.conv.fp32_precision = 'ieee'\n"
            "from lightning_gapsl.train import compose, run\n"
            f"print('RUN_OK', run(compose({overrides!r}, {os.path.join(W, 'tf32_' + label)!r})))\n"
        )
        try:
            p = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
            )
            lines = [
                ln[:300]
                for ln in (p.stdout + p.stderr).splitlines()
                if any(k in ln for k in ("RUN_OK", "mix of", "legacy", "Error", "fp32_precision"))
            ]
            rec.put(key, {"rc": p.returncode, "lines": lines[-8:]})
        except Exception as e:  # noqa: BLE001
            rec.put(key, {"error": err(e)})


def numerics() -> None:
    _remember_tf32()
    rec = Record("numerics")
    for part in (kernels, whole_runs, new_tf32_api):
        if time_left():
            part(rec)
        else:
            rec.skip(part.__name__, TIME_SPENT)
    rec.done()


# ------------------------------------------------------------------------ precision
def _extra() -> dict:
    from tests.gpu.test_gpu_paths import EXTRA  # the GPU tests' per-method overrides

    return EXTRA


def precision() -> None:
    """bf16-mixed vs 32-true per method; resume on the device equals the uninterrupted run."""
    _remember_tf32()
    rec, s, extra = Record("precision"), SIZE, _extra()
    for algo in s["methods"]:
        row = {}
        for prec in ("32-true", "bf16-mixed"):
            if not time_left(35):
                row[prec] = {"skipped": TIME_SPENT}
                continue
            try:
                row[prec] = brief(
                    go(
                        f"prec_{algo}_{prec}",
                        [
                            *DIGITS,
                            f"algorithm={algo}",
                            "trainer.devices=1",
                            "data.num_clients=4",
                            f"trainer.accelerator={ACCEL}",
                            "trainer.max_epochs=1",
                            f"data.steps_per_epoch={s['steps4']}",
                            f"trainer.precision={prec}",
                            *extra.get(algo, []),
                        ],
                    )
                )
                rec.check(finite(row[prec]), f"digits/{algo}/{prec}: loss not finite")
            except Exception as e:  # noqa: BLE001
                row[prec] = {"error": err(e)}
                rec.check(False, f"digits/{algo}/{prec}: {err(e)[:200]}")
        if all("train_loss_final" in row.get(p, {}) for p in ("32-true", "bf16-mixed")):
            row["bf16_minus_32_loss"] = (
                row["bf16-mixed"]["train_loss_final"] - row["32-true"]["train_loss_final"]
            )
        rec.put(f"digits/{algo}", row)
    key = "grouped_psl_bf16"
    if time_left(35):
        try:
            out = brief(
                go("prec_res_bf16", grouped_run("algorithm=psl", "trainer.precision=bf16-mixed"))
            )
            rec.put(key, {"model": SIZE["grouped_model"][0], **out})
            rec.check(finite(out), f"{key}: loss not finite")
        except Exception as e:  # noqa: BLE001
            rec.put(key, {"error": err(e)})
            rec.check(False, f"{key}: {err(e)[:200]}")
    else:
        rec.skip(key, TIME_SPENT)
    resume(rec, extra)
    rec.done()


def _resumed_vs_full(tag: str, common: list[str]) -> tuple[dict, dict]:
    """(uninterrupted 2 epochs, 1 epoch then resumed to 2) summaries."""
    try:
        full = go(f"{tag}_full", [*common, "trainer.max_epochs=2"])
        undo_deterministic()
        go(f"{tag}_half", [*common, "trainer.max_epochs=1"])
        undo_deterministic()
        ckpt = os.path.join(W, f"{tag}_half", "checkpoints", "last.ckpt")
        return full, go(f"{tag}_resumed", [*common, "trainer.max_epochs=2", f"ckpt_path={ckpt}"])
    finally:
        undo_deterministic()


def _history_diff(a: dict, b: dict) -> float:
    if len(a["history"]) != len(b["history"]):
        return math.inf
    return max(
        abs(ha[k] - hb[k])
        for ha, hb in zip(a["history"], b["history"], strict=True)
        for k in ("train_loss", "test_acc_mean", "test_acc_min", "bytes_up")
    )


def resume(rec: Record, extra: dict) -> None:
    """Stop after epoch 1, resume to epoch 2: the history must equal an uninterrupted run.
    GAPSL's leader EMA and FSL-SAGE's buffers come back from the checkpoint on the CPU and
    are moved to the modules' device. Deterministic kernels make equality exact; where the
    device has no deterministic kernel for an op of the run (numerics says which), the
    default kernels are compared to the grouped-vs-loop tolerance instead."""
    # dry run: one case (the CPU resumes of every method are tests/e2e's)
    cases = (
        [("gapsl", "gpu"), ("fsl_sage", "gpu"), ("gapsl", "cpu")] if CUDA else [("gapsl", "cpu")]
    )
    for algo, accel in cases:
        key = f"resume/{algo}/{accel}"
        if not time_left(12):
            rec.skip(key, TIME_SPENT)
            continue
        common = [
            *DIGITS,
            f"algorithm={algo}",
            "trainer.devices=1",
            "data.num_clients=4",
            f"trainer.accelerator={accel}",
            f"data.steps_per_epoch={SIZE['steps4']}",
            "trainer.ckpt_every=1",
            *extra.get(algo, []),
        ]
        tag, row, tol = f"res_{algo}_{accel}", {}, HISTORY_TOL
        try:
            try:
                full, again = _resumed_vs_full(tag, [*common, "trainer.deterministic=true"])
            except RuntimeError as e:
                if "deterministic" not in str(e).lower():
                    raise
                row["deterministic_unavailable"], tol = err(e), LOOP_TOL
                full, again = _resumed_vs_full(f"{tag}_default", common)
            worst = _history_diff(full, again)
            row.update(
                {
                    "resumed": brief(again),
                    "uninterrupted": brief(full),
                    "max_history_diff": worst,
                    "tolerance": tol,
                    "equal": worst <= tol,
                }
            )
            rec.put(key, row)
            rec.check(
                worst <= tol,
                f"{key}: the resumed run differs from the uninterrupted "
                f"one by {worst} (tolerance {tol})",
            )
        except Exception as e:  # noqa: BLE001
            rec.put(key, {**row, "error": err(e)})
            rec.check(False, f"{key}: {err(e)[:200]}")


# ------------------------------------------------------------------------ bench
# The gpu preset's structure at the dry run's size, on the CPU, in one process.
DRY_PRESET = {
    "data": ["data=synthetic", "data.shape=[1,8,8]", "data.num_train=200", "data.num_test=50"],
    "model": "lenet",
    "clients": 3,
    "batch": 2,
    "steps": 2,
    "accelerator": "cpu",
    "devices": 1,
}


def _last_json(text: str):
    """The JSON object the bench prints last (run output may come before it)."""
    starts = [m.start() for m in re.finditer(r"(?m)^\{$", text)]
    for start in reversed(starts):
        try:
            return json.loads(text[start:])
        except ValueError:
            continue
    return None


def bench() -> None:
    import contextlib
    import io

    rec = Record("bench")
    argv = (
        ["lightning_gapsl.bench", "--preset", "gpu"]
        if CUDA
        else ["lightning_gapsl.bench", "--preset", "dry", "--epochs", "1"]
    )
    rec.put(
        "command",
        "python -m "
        + " ".join(argv)
        + ("" if CUDA else "   (a tiny CPU preset shaped as the gpu preset)"),
    )
    from lightning_gapsl import bench as bench_module

    if not CUDA:
        bench_module.PRESETS["dry"] = DRY_PRESET
    text, saved = io.StringIO(), sys.argv
    try:
        sys.argv = argv
        with contextlib.redirect_stdout(text):
            bench_module.main()
        problem = None
    except Exception as e:  # noqa: BLE001
        problem = err(e)
    finally:
        sys.argv = saved
    with open(os.path.join(W, "bench.out"), "w") as f:
        f.write(text.getvalue())
    result = _last_json(text.getvalue())
    if not rec.check(
        problem is None and result is not None,
        f"the benchmark failed: {problem or 'no JSON printed'}",
    ):
        rec.done()
        return
    rec.put("result", result)
    ratio = result.get("time_per_sample_vs_centralized", {}).get("psl_in_process")
    target = result.get("target_psl_in_process")
    rec.put(
        "psl_in_process_vs_target",
        {
            "time_per_sample_vs_centralized": ratio,
            "target_at_most": target,
            "met": None if ratio is None else ratio <= target,
        },
    )
    rec.done()


# ------------------------------------------------------------------------ pytest
GPU_TESTS = [
    "tests/gpu",
    "tests/unit/test_client_exec.py::test_grouped_and_vmap_equal_loop_on_cuda",
]


def pytest_section() -> None:
    import importlib.util

    rec = Record("pytest")
    if not CUDA:
        _pytest_targets(rec)
        return
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        *GPU_TESTS,
        "-p",
        "no:cacheprovider",
        "--durations=12",
        "-rA",
    ]
    if importlib.util.find_spec("pytest_timeout"):
        cmd.append("--timeout=110")
    rec.put("command", " ".join(cmd[1:]))
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=max(10, LIMIT - 10))
        text, rc = p.stdout + p.stderr, p.returncode
    except subprocess.TimeoutExpired as e:
        text, rc = str(e.stdout or "") + str(e.stderr or ""), 124
    with open(os.path.join(OUT, "pytest.txt"), "w") as f:
        f.write(text)
    sys.stdout.write(text[-3000:])
    rec.put("rc", rc)
    tail = text.strip().splitlines()[-1] if text.strip() else ""
    rec.put(
        "counts",
        {
            word: int(num)
            for num, word in re.findall(
                r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)", tail
            )
        },
    )
    rec.check(rc == 0, f"pytest exited {rc}: {tail[:300]}")
    rec.done()


def _pytest_targets(rec: Record) -> None:
    """Dry run: the GPU tests exist by the names the device run gives pytest (collecting
    them would cost the dry run a Lightning import; every one of them needs CUDA)."""
    found, lines = {}, []
    for target in GPU_TESTS:
        path, _, name = target.partition("::")
        files = (
            [
                os.path.join(path, f)
                for f in sorted(os.listdir(path))
                if f.startswith("test_") and f.endswith(".py")
            ]
            if os.path.isdir(path)
            else [path]
            if os.path.isfile(path)
            else []
        )
        tests = []
        for file in files:
            with open(file) as f:
                tests += [f"{file}::{t}" for t in re.findall(r"(?m)^def (test_\w+)\(", f.read())]
        if name:
            tests = [t for t in tests if t.endswith(f"::{name}")]
        found[target] = len(tests)
        lines += tests
        rec.check(bool(tests), f"no test named by {target!r}")
    with open(os.path.join(OUT, "pytest.txt"), "w") as f:
        f.write("dry run: test functions the device run would give pytest (not run)\n")
        f.write("\n".join(lines) + "\n")
    rec.put("test_functions", found)
    if rec.data["failures"]:
        rec.done()
    else:
        rec.done(
            "skipped",
            f"{NO_CUDA}: every test here needs CUDA; "
            f"{sum(found.values())} test functions found, none run",
        )


# ------------------------------------------------------------------------ digest
def digest() -> int:
    """The short table printed last (what comes back first is the end of the output)."""
    lines, failed = ["", "## digest", ""], []
    for name in SECTIONS:
        data = _load(os.path.join(OUT, f"{name}.json"))
        if data is None:
            continue
        lines.append(f"- **{name}**: {data['status']} {data.get('reason', '')[:300]}")
        if data["status"] == "failed":
            failed.append(name)
        for key, value in data.get("items", {}).items():
            if key in (
                "throughput_vs_centralized",
                "client_exec_auto",
                "digits_psl/diffs",
                "psl_in_process_vs_target",
                "counts",
                "test_functions",
            ) or key.startswith(("timeout ", "resume/", "new_tf32")):
                lines.append(f"  - {key}: {json.dumps(value, default=str)[:300]}")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(OUT, "summary.md"), "a") as f:
        f.write(text)
    print(text)
    print("failed sections: " + (", ".join(failed) if failed else "none"))
    return 1 if failed else 0


PROGRAMS = {
    "env": env,
    "smoke": smoke,
    "throughput": throughput,
    "nccl": nccl,
    "numerics": numerics,
    "precision": precision,
    "bench": bench,
    "pytest": pytest_section,
}


# Seconds each section may take at most; BUDGET_S cuts the last ones.
CAPS = {
    "cuda": {
        "env": 40,
        "smoke": 60,
        "throughput": 150,
        "nccl": 70,
        "numerics": 80,
        "precision": 90,
        "bench": 170,
        "pytest": 120,
    },
    "cpu": {name: 60 for name in SECTIONS},
}


def _preload(trainer: bool) -> None:
    """Import torch (and with ``trainer`` the trainer) once; every section is a fork of
    this process, so none pays the seconds of these imports again. Nothing here touches
    CUDA: a process that initialised it cannot fork children that use it."""
    try:
        import torch

        if trainer:
            import lightning_gapsl.train  # noqa: F401
    except Exception as e:  # noqa: BLE001 -- each section then imports, and fails, itself
        print(f"preload failed ({err(e)}); each section imports for itself", flush=True)
        return
    global FORK
    if torch.cuda.is_initialized():  # a forked section could not use the GPU
        print(
            "importing the trainer initialised CUDA: sections start as fresh processes", flush=True
        )
        FORK = False


FORK = True  # False: each section a fresh interpreter (pays the imports again)


def _run_forked(name: str, limit: float) -> int:
    """Run section ``name`` in a child process within ``limit`` seconds; its exit code
    (124: killed at the limit, 128 + N: killed by signal N)."""
    import signal
    import traceback

    sys.stdout.flush()
    sys.stderr.flush()
    if not FORK:
        child_env = {**os.environ, "SECTION_LIMIT": str(round(limit))}
        pid = subprocess.Popen(
            [sys.executable, __file__, name], env=child_env, start_new_session=True
        ).pid
    else:
        pid = os.fork()
    if pid == 0:  # the section: its own process group, so its subprocesses end with it
        global LIMIT, T0
        code = 1
        try:
            os.setpgid(0, 0)
            LIMIT, T0 = limit, time.time()
            os.environ["SECTION_LIMIT"] = str(round(limit))
            PROGRAMS[name]()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:  # noqa: BLE001 -- reported, then the record says failed
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    try:
        os.setpgid(pid, pid)
    except OSError:  # the child did it first
        pass
    deadline = time.time() + limit
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            return code if code >= 0 else 128 - code
        if time.time() > deadline:
            break
        time.sleep(0.1)
    reaped = False
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:  # the whole group: the section and whatever it started
            os.killpg(pid, sig)
        except ProcessLookupError:  # nobody left
            break
        end = time.time() + grace
        while not reaped and time.time() < end:
            reaped = os.waitpid(pid, os.WNOHANG)[0] != 0
            if not reaped:
                time.sleep(0.1)
    if not reaped:
        os.waitpid(pid, 0)
    return 124


def drive() -> int:
    """Every wanted section in order, each within min(its cap, the budget left)."""
    only = [n for n in os.environ.get("ONLY", "").split(",") if n]
    bad = [n for n in only if n not in SECTIONS]
    if bad:
        print(
            f"error: unknown section {bad[0]!r} in ONLY; valid sections: {', '.join(SECTIONS)}",
            file=sys.stderr,
        )
        return 2
    budget = float(os.environ.get("BUDGET_S") or (450 if CUDA else 240))
    start = time.time()
    with open(os.path.join(OUT, "summary.md"), "w") as f:
        f.write(
            f"# gpu_check {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}, "
            f"DEVICE={DEVICE}\n\n| section | result | reason | seconds |\n|---|---|---|---|\n"
        )
    wanted = [n for n in SECTIONS if not only or n in only]
    _preload(trainer=False)
    preloaded = False
    for i, name in enumerate(wanted):
        if name != "env" and not preloaded:  # after env: a machine that fails it pays less
            _preload(trainer=True)
            preloaded = True
        left = budget - (time.time() - start)
        limit = min(CAPS[DEVICE][name], left)
        if limit < 20:
            record(name, "skipped", f"budget spent: {left:.0f} s of BUDGET_S={budget:.0f} left")
            continue
        print(
            f"\n===== {name} (limit {limit:.0f} s, {time.strftime('%H:%M:%S', time.gmtime())} UTC)",
            flush=True,
        )
        t0 = time.time()
        status = finish(name, _run_forked(name, limit), time.time() - t0)
        if name == "env" and status != "passed":
            for rest in wanted[i + 1 :]:
                record(rest, "skipped", "env failed (see env.json)")
            break
    code = digest()
    print(f"total {time.time() - start:.0f} s of a {budget:.0f} s budget")
    return code


def main(argv: list[str]) -> int:
    if not OUT or not os.path.isdir(OUT):
        print("error: set OUT to an existing folder", file=sys.stderr)
        return 2
    if argv == ["run"]:
        return drive()
    if argv[:1] == ["nccl-child"] and len(argv) == 2:
        nccl_child(argv[1])
        return 0
    if len(argv) == 1 and argv[0] in PROGRAMS:  # one section in this process (debugging)
        PROGRAMS[argv[0]]()
        return 0
    print(
        f"error: unknown command {' '.join(argv)!r}; use run, or one of: {', '.join(SECTIONS)}",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
