#!/usr/bin/env bash
# The one-GPU device check: the kit on a GPU machine as it comes (its own Python
# with a CUDA torch, no network), in under 8 minutes, everything in one folder.
#
#   bench/device_check.sh [--out DIR] [--python PY] [--wheels DIR] [-k EXPR]
#   bench/device_check.sh --cpu ...      # the same plan on CPU: checks this script
#
# Steps (each a pytest run with its own JUnit XML under DIR/<step>/):
#   install        pip install the kit from this checkout: --no-deps, --no-index
#   cuda-1gpu      the conformance cell: pool ranks, backend nccl at world size 1
#   cuda-8sim      the conformance suite simulated at world size 8 (LocalTensor on cuda)
#   threads-4      the threads base on cuda at world size 4, every rank on the one GPU
#   certify        `harness certify cuda-1gpu`: report.json/.md/.html and SHA256SUMS
# With --cpu the cells are cpu-1rank (gloo) and cpu-8sim and the threads run on cpu,
# so CI proves the plumbing (install, folders, JUnit, report, summary, budget).
#
# DIR/summary.tsv has one line per step (step, outcome, exit code, seconds);
# DIR/env.txt what the machine has. Exit 0 when every step passed, 1 when one
# failed, 2 when the machine cannot run the check (the line says why).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=""
PY=${PYTHON:-python3}
WHEELS=""
SELECT=""
MODE=cuda
BUDGET=${DEVICE_CHECK_BUDGET:-470} # seconds for every step together (8 min, less a margin)

usage() { sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die() { echo "device_check: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=${2:?--out needs a folder}; shift 2 ;;
    --python) PY=${2:?--python needs an interpreter}; shift 2 ;;
    --wheels) WHEELS=${2:?--wheels needs a folder}; shift 2 ;;
    -k) SELECT=${2:?-k needs an expression}; shift 2 ;;
    --cpu) MODE=cpu; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1'; see --help" ;;
  esac
done

OUT=${OUT:-$ROOT/results/device-check-$MODE}
command -v "$PY" >/dev/null 2>&1 || die "no Python '$PY'; pass --python PATH"
[ -z "$WHEELS" ] || [ -d "$WHEELS" ] || die "--wheels $WHEELS is not a folder"
mkdir -p "$OUT" || die "cannot create $OUT"
OUT=$(cd "$OUT" && pwd)
rm -f "$OUT/summary.tsv"
START=$SECONDS
FAILED=0

# --- what the machine has; refuse once, before anything runs -------------------------------
[ -z "$WHEELS" ] || "$PY" -m pip install -q --no-index --no-deps "$WHEELS"/*.whl \
  || die "installing the wheels in $WHEELS failed"
"$PY" - "$MODE" >"$OUT/env.txt" 2>"$OUT/preflight.err" <<'EOF'
import importlib.metadata, importlib.util, platform, sys
mode = sys.argv[1]
missing = [m for m in ("torch", "pytest", "expecttest") if importlib.util.find_spec(m) is None]


def release(name):
    try:
        return tuple(int(p) for p in importlib.metadata.version(name).split(".")[:2])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return None


# the offline install builds the kit with this Python's setuptools (--no-build-isolation):
# bdist_wheel is in setuptools from 70.1, before that in the wheel package (a stock
# Python 3.11 venv has setuptools 65.5 and no wheel: "invalid command 'bdist_wheel'")
tools = release("setuptools")
if tools is None or tools < (68, 0) or (tools < (70, 1) and release("wheel") is None):
    missing.append("setuptools >= 70.1 (or >= 68 with wheel)")
if missing:
    sys.exit(f"missing Python packages: {', '.join(missing)}; carry their wheels and pass "
             "--wheels DIR (pip download --no-deps NAME -d DIR on a machine with a network)")
import torch
print(f"python {platform.python_version()} {sys.executable}")
print(f"torch {torch.__version__} cuda {torch.version.cuda}")
if mode == "cuda":
    if not torch.cuda.is_available():
        sys.exit(f"torch {torch.__version__} sees no CUDA device; run with --cpu to check the "
                 "script itself")
    print(f"gpu {torch.cuda.get_device_name(0)} count {torch.cuda.device_count()}")
    print(f"nccl {'.'.join(map(str, torch.cuda.nccl.version()))}")
EOF
[ $? -eq 0 ] || die "$(tail -n 1 "$OUT/preflight.err")"
rm -f "$OUT/preflight.err"
cat "$OUT/env.txt"

# --- one step: its own folder, its own log, a share of the budget ---------------------------
step() {
  local name=$1; shift
  local left=$((BUDGET - (SECONDS - START)))
  mkdir -p "$OUT/$name"
  if [ "$left" -le 10 ]; then
    printf '%s\tnot-run\t-\t0\n' "$name" >>"$OUT/summary.tsv"
    echo "device_check: $name not run: the ${BUDGET}s budget is spent"; FAILED=1; return
  fi
  echo "== $name (${left}s left): $*"
  local t0=$SECONDS code
  timeout -k 10 "$left" "$@" >"$OUT/$name/output.log" 2>&1
  code=$?
  local outcome=passed
  case $code in 0) ;; 124|137) outcome=timeout; FAILED=1 ;; *) outcome=failed; FAILED=1 ;; esac
  printf '%s\t%s\t%s\t%s\n' "$name" "$outcome" "$code" "$((SECONDS - t0))" >>"$OUT/summary.tsv"
  tail -n 3 "$OUT/$name/output.log"
}

if [ "$MODE" = cuda ]; then
  NATIVE=cuda-1gpu SIM=cuda-8sim DEVICE=cuda BACKEND=nccl
else
  NATIVE=cpu-1rank SIM=cpu-8sim DEVICE=cpu BACKEND=gloo
fi
K=(); [ -z "$SELECT" ] || K=(-k "$SELECT")
H=("$PY" -m harness)
M=(--matrix "$ROOT/matrix.toml")

step install "$PY" -m pip install -q --no-deps --no-index --no-build-isolation -e "$ROOT"
step "$NATIVE" "${H[@]}" run "$NATIVE" "${M[@]}" --results "$OUT/$NATIVE" -- -q "${K[@]}"
step "$SIM" "${H[@]}" run "$SIM" "${M[@]}" --results "$OUT/$SIM" -- -q "${K[@]}"
step threads-4 env HARNESS_CELL="$DEVICE-threads-4" HARNESS_DEVICE="$DEVICE" \
  HARNESS_BACKEND="$BACKEND" HARNESS_WORLD_SIZE=4 HARNESS_MODE=native \
  "$PY" -m pytest -q -p no:cacheprovider "$ROOT/bench/device_check_threads.py" \
  --junitxml="$OUT/threads-4/junit.xml" -o junit_suite_name=threads-4 "${K[@]}"
step certify "${H[@]}" certify "$NATIVE" "${M[@]}" --out "$OUT/certify" -- "${K[@]}"

echo "== summary ($((SECONDS - START))s of ${BUDGET}s): $OUT/summary.tsv"
column -t "$OUT/summary.tsv" 2>/dev/null || cat "$OUT/summary.tsv"
exit "$FAILED"
