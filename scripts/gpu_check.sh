#!/usr/bin/env bash
# GPU readiness check: one run on a GPU machine (one H200), at most 8 minutes; or its dry
# run on the CPU (same sections, tiny sizes, well under a minute on 2 cores).
#
#   OUT=/path/to/results bash scripts/gpu_check.sh             # the device check
#   OUT=/path/to/results bash scripts/gpu_check.sh --dry-run   # the same on the CPU (DEVICE=cpu)
#
# Sections, in this order (the programs are scripts/gpu_check.py; its docstring says what
# fails a section and what is only recorded). Each is time-boxed, later ones are skipped
# once the budget is spent, and each writes OUT/<section>.json as soon as it has results:
#   env        nvidia-smi; torch / CUDA / NCCL / cuDNN / Lightning versions; TF32 defaults
#   smoke      the command line (Hydra) on the device: gapsl, digits, 4 clients, 4 steps
#   throughput 100 virtual ResNet-18 clients (cut 2) vs centralized at batch N*B (target
#              >= 70% of its samples/s): loop, grouped, vmap, auto (what it picks and
#              whether that is the fastest), cudnn.benchmark, bf16-mixed, gapsl, 300
#              clients; peak memory against the start-up bound of memory_estimate.py
#   nccl       NCCL in a world of ONE rank (NCCL refuses two ranks on one GPU): every
#              collective and P2P call of DistTransport, and what a timed-out exchange
#              does to its process with TORCH_NCCL_ASYNC_ERROR_HANDLING unset / 2 (the
#              trainer's policy) / 1. Dry run: gloo, collectives only (gloo cannot send to
#              its own rank), timeout probes skipped
#   numerics   client kernels on the device vs a CPU float64 reference (TF32 on / off /
#              deterministic), K clients at once vs split in two; whole runs: reruns,
#              grouped vs loop, trainer.deterministic=true reruns and vs the CPU; the new
#              TF32 API set before a run
#   precision  bf16-mixed vs 32-true for 7 methods and ResNet-18; resume on the device:
#              GAPSL and FSL-SAGE method state is moved to the modules' device on load
#              (methods/base.load_method_state), so both are expected to PASS, resumed ==
#              uninterrupted
#   bench      python -m lightning_gapsl.bench --preset gpu (the BENCHMARKS.md command;
#              1000 LeNet clients, client kernels). Dry run: bench.main on a tiny CPU preset
#   pytest     tests/gpu + the CUDA client-kernel unit test. Dry run: every test named
#              is found in its file, none is run (each needs CUDA)
# The dry run's sizes: 3 clients of LeNet on 8x8 inputs, 2 steps, 2 methods in precision;
# ResNet-18 only in the kernel numerics. One thread (OMP_NUM_THREADS, default 1).
#
# Prepare in the project root (what travels to the GPU machine is the checkout; '/.whl/'
# is ignored by git, so send it along explicitly). The image has torch, Lightning,
# torchmetrics, numpy, pytest, pytest-timeout but not Hydra:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_17_x86_64 -d .whl \
#       hydra-core==1.3.8 omegaconf==2.3.1
#   python3 -m pip wheel --no-deps -w .whl antlr4-python3-runtime==4.9.3   # sdist only
# Never pip-install the project WITH dependencies there: pyproject pins another torch and
# nothing can be downloaded. Run there as: bash scripts/gpu_check.sh, time limit 540 s.
#
# Knobs: OUT (required: results), W (scratch; default a new temporary folder), DEVICE
# (cuda | cpu; --dry-run = cpu), BUDGET_S (seconds for all sections; 450 on the device,
# 240 dry), ONLY=nccl,numerics,... (a rerun of some sections), PYTHON (default python3).
# Back in $OUT: run.log summary.md pytest.txt and one JSON per section (env.json ...
# pytest.json). Exit code: 0 when no section failed, 1 when one did, 2 for bad input,
# 3 when Hydra cannot be installed.
set -u -o pipefail

SECTIONS=(env smoke throughput nccl numerics precision bench pytest)
DEVICE=${DEVICE:-cuda}
for arg in "$@"; do
  case $arg in
    --dry-run) DEVICE=cpu ;;
    -h|--help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument '$arg' (use --dry-run, or none)" >&2; exit 2 ;;
  esac
done
case $DEVICE in
  cuda|cpu) ;;
  *) echo "error: DEVICE='$DEVICE' is not valid; use cuda (the GPU check) or cpu (the dry run)" >&2
     exit 2 ;;
esac
ONLY=${ONLY:-}
valid=$(IFS=,; echo "${SECTIONS[*]}")
for name in ${ONLY//,/ }; do
  if [[ ",$valid," != *",$name,"* ]]; then
    echo "error: unknown section '$name' in ONLY; valid sections: ${valid//,/, }" >&2
    exit 2
  fi
done
[ -n "${OUT:-}" ] || { echo "error: set OUT to the folder that results go to" >&2; exit 2; }

cd "$(dirname "$0")/.." || exit 2
[ -f lightning_gapsl/train.py ] || { echo "error: no lightning_gapsl/train.py in $PWD" >&2; exit 2; }
PY=${PYTHON:-python3}
if [ "$DEVICE" = cpu ]; then
  BUDGET=${BUDGET_S:-240}
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
else
  BUDGET=${BUDGET_S:-450}
fi
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
W=${W:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")}
mkdir -p "$W" || exit 2
GC="$PWD/scripts/gpu_check.py"
echo "scratch folder (checkpoints, run folders): $W"
export OUT W DEVICE PYTHONUNBUFFERED=1 WANDB_MODE=offline WANDB_SILENT=true HYDRA_FULL_ERROR=1
for name in "${SECTIONS[@]}"; do rm -f "$OUT/$name.json"; done
rm -f "$OUT/summary.md" "$OUT/pytest.txt" "$OUT/run.log"
exec > >(tee -a "$OUT/run.log") 2>&1

# ---------------------------------------------------------------- set-up
# Hydra, omegaconf and antlr4 from .whl/ when the interpreter lacks them (the GPU image).
if ! "$PY" -c "import hydra, omegaconf, antlr4" 2>/dev/null; then
  if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$W/site" .whl/*.whl || { echo "error: installing .whl/*.whl failed"; exit 3; }
    export PYTHONPATH="$W/site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  if ! "$PY" -c "import hydra, omegaconf, antlr4"; then
    echo "error: hydra-core, omegaconf or antlr4 missing: prepare .whl/ (see this script's header)"
    exit 3
  fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# setup.py maps the top-level callbacks/ to lightning_gapsl.callbacks; a plain checkout
# has no such folder, so give it the link an editable install would.
[ -e lightning_gapsl/callbacks ] || ln -s ../callbacks lightning_gapsl/callbacks

# ---------------------------------------------------------------- the sections
# One Python process imports the trainer once and forks each section from it, within
# min(its cap, the budget left) seconds (gpu_check.py drive).
export ONLY BUDGET_S=$BUDGET
"$PY" "$GC" run
rc=$?
exit $rc
