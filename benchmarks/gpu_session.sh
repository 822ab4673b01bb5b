#!/usr/bin/env bash
# One prepared GPU session (issue 18): the CUDA tests, the CUDA rows of every benchmark, the
# engine's AMP on CUDA, the toy's full GD grid on the GPU and the detection grid's `gpu` profile,
# in priority order, each under a time limit derived from --budget, so that the whole script
# stops by itself inside the budget.  Everything it makes is packed into at most 8 files under
# $OUT (the device tool returns at most 8 files of at most 16 MiB):
#
#   manifest.json            what ran: per step the command, time limit, wall time, exit code and
#                            status; the image's versions; the files packed (also inside
#                            results.tar.gz as results/gpu_session/manifest*.json)
#   results.tar.gz           results/... (result JSONs with provenance, toy figures), to extract
#                            at the repository root and commit
#   logs.tar.gz              one log per step
#   session.log              this script's own output
#   toy_resume.tar.gz        (only if the toy grid stopped early) .gpu-resume/toy/... checkpoints
#   detection_resume.tar.gz  (only if a detection run was interrupted) .gpu-resume/detection/...
#
# Step limits (share of the budget; time a step leaves unused goes to the later ones; at 540 s):
# check_image 120 s, install_wheels 60 s, pytest_cuda 18% (97 s), bench_losses 11% (59 s),
# bench_detection 15% (81 s), bench_toy 10% (54 s), detect_amp 9% (48 s), toy_full 28% (151 s,
# no new GD chunk after 3/4 of it), detection: the rest (no new run later than
# KLHUBER_GPU_DET_RUN_S before its end); 25 s are kept for packing.  A step past its limit gets
# SIGTERM (detection runs write a checkpoint), then SIGKILL 15 s later.
#
# Usage (see README, "GPU session"; benchmarks/gpu_prepare.sh prints the exact device call):
#   bash benchmarks/gpu_session.sh [--budget SECONDS]        # on the device machine, default 540
#   bash benchmarks/gpu_session.sh --dry-run [--budget S]    # CPU, tiny sizes, no CUDA needed
# Options: --out DIR (default $OUT), --python PY (default $PYTHON, else python3; in a dry run
# the checkout's .venv/bin/python when it exists), --skip STEP[,STEP...] (steps an earlier
# session already did, e.g. --skip pytest_cuda,bench_losses,bench_detection,bench_toy,detect_amp
# to give the grids the whole budget; the step names are those of manifest.json).  Environment: KLHUBER_GPU_WORK (scratch
# folder; default /tmp/klhuber-gpu-session, a fresh temporary folder in a dry run),
# KLHUBER_GPU_DET_RUN_S (expected seconds of one detection run, default 150: no run starts
# later than that before the detection step's limit), KLHUBER_GIT_COMMIT (recorded in every
# provenance block when the copy of the tree has no .git).
set -uo pipefail
{  # the whole script is one compound command: bash parses it before running it, so an edit of
   # this file during a run cannot change what the run does

DRY_RUN=0
BUDGET=540
OUT_DIR="${OUT:-}"
PY="${PYTHON:-}"
SKIP_STEPS=","
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --budget) BUDGET="${2:?--budget needs a value}"; shift ;;
    --budget=*) BUDGET="${1#*=}" ;;
    --out) OUT_DIR="${2:?--out needs a value}"; shift ;;
    --out=*) OUT_DIR="${1#*=}" ;;
    --python) PY="${2:?--python needs a value}"; shift ;;
    --skip) SKIP_STEPS="$SKIP_STEPS${2:?--skip needs a value},"; shift ;;
    --skip=*) SKIP_STEPS="$SKIP_STEPS${1#*=}," ;;
    -h|--help) awk 'NR > 1 && /^#/ {print; next} NR > 1 {exit}' "$0"; exit 0 ;;
    *) echo "gpu_session.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$BUDGET" in ''|*[!0-9]*) echo "gpu_session.sh: --budget must be whole seconds, got $BUDGET" >&2; exit 2 ;; esac
if [ "$BUDGET" -lt 60 ]; then echo "gpu_session.sh: --budget must be >= 60 s" >&2; exit 2; fi
if [ -z "$OUT_DIR" ]; then echo "gpu_session.sh: no output folder: set \$OUT or pass --out DIR" >&2; exit 2; fi

T0=$(date +%s)
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO" || exit 2
mkdir -p "$OUT_DIR" && OUT_DIR="$(cd "$OUT_DIR" && pwd)"
exec > >(tee -a "$OUT_DIR/session.log") 2>&1

if [ -z "$PY" ]; then
  if [ "$DRY_RUN" = 1 ] && [ -x "$REPO/.venv/bin/python" ]; then PY="$REPO/.venv/bin/python"; else PY=python3; fi
fi
if [ "$DRY_RUN" = 1 ]; then
  WORK="${KLHUBER_GPU_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/klhuber-gpu-dry.XXXXXX")}"
  DEV=cpu
else
  # a fixed path: checkpoints record absolute data paths, so a later session resumes them
  WORK="${KLHUBER_GPU_WORK:-/tmp/klhuber-gpu-session}"
  DEV=cuda
fi
RES="$WORK/results"      # mirrors the repository's results/ (what gets committed)
LOGS="$WORK/logs"
rm -rf "$RES" "$LOGS" "$WORK/steps.tsv" "$WORK/notes.txt"
mkdir -p "$RES/gpu_session" "$RES/benchmarks" "$LOGS" "$WORK/mpl"
STEPS="$WORK/steps.tsv"
: > "$STEPS"

export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 MPLBACKEND=Agg MPLCONFIGDIR="$WORK/mpl"
export TQDM_DISABLE=1 TORCHINDUCTOR_CACHE_DIR="$WORK/inductor"
if [ -z "${KLHUBER_GIT_COMMIT:-}" ] && ! git -C "$REPO" rev-parse HEAD >/dev/null 2>&1; then
  echo "note: no .git in this copy and KLHUBER_GIT_COMMIT unset: provenance will have no commit"
fi

RESERVE=25              # seconds kept for packing at the end
KILL_AFTER=15           # grace after SIGTERM before SIGKILL (checkpoints are written then)
DEADLINE=$((T0 + BUDGET - RESERVE))
MIN_STEP=10
echo "== gpu_session: $([ "$DRY_RUN" = 1 ] && echo 'DRY RUN (CPU, tiny sizes)' || echo 'device run') budget ${BUDGET}s, python $PY, work $WORK, out $OUT_DIR"

now() { date +%s; }
# LIMIT for a step: its share of the budget (PCT% of BUDGET; 100: all that is left), never past
# the deadline minus the two SIGTERM graces of `run`; 0 when fewer than MIN_STEP seconds are left.
step_limit() {
  local pct=$1 cap left
  cap=$((BUDGET * pct / 100))
  # a dry run only checks that every step works: on a loaded CPU any step may take a third
  if [ "$DRY_RUN" = 1 ] && [ "$cap" -lt $((BUDGET / 3)) ]; then cap=$((BUDGET / 3)); fi
  left=$((DEADLINE - $(now) - 2 * KILL_AFTER))
  if [ "$pct" -ge 100 ] || [ "$cap" -gt "$left" ]; then cap=$left; fi
  if [ "$cap" -lt "$MIN_STEP" ]; then cap=0; fi
  LIMIT=$cap
}
record() {  # name limit wall rc status command (one line of steps.tsv)
  local cmd=${6//$'\n'/ }
  cmd=${cmd//$'\t'/ }
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$(echo "$cmd" | tr -s ' ')" >> "$STEPS"
  printf '== %-18s %-8s rc %-4s %5ss (limit %ss)\n' "$1" "$5" "$4" "$3" "$2"
}
skip() { record "$1" 0 0 - "skipped" "$2"; }
note() { echo "$*" >> "$WORK/notes.txt"; echo "   note: $*"; }
# run NAME CMD...: run under `timeout` with $LIMIT (from step_limit), log to $LOGS/NAME.log.
# timeout puts the command in its own process group; after it returns, the group (workers of
# `detect experiment --jobs`) gets the same grace to write checkpoints, then SIGKILL.
run() {
  local name=$1 t start rc status pid
  shift
  case "$SKIP_STEPS" in *",$name,"*) record "$name" 0 0 - "skipped (--skip)" "$*"; return 0 ;; esac
  if [ "$LIMIT" -le 0 ]; then record "$name" 0 0 - "skipped (no time left)" "$*"; return 0; fi
  start=$(now)
  echo "-- $name (limit ${LIMIT}s): $*" >> "$LOGS/$name.log"
  timeout --kill-after="$KILL_AFTER" "$LIMIT" "$@" < /dev/null >> "$LOGS/$name.log" 2>&1 &
  pid=$!
  wait "$pid"; rc=$?
  for t in $(seq "$KILL_AFTER"); do  # kill -0 -PGID: does a process of the group remain?
    kill -0 -- "-$pid" 2>/dev/null || break
    sleep 1
  done
  kill -0 -- "-$pid" 2>/dev/null && kill -KILL -- "-$pid" 2>/dev/null
  case $rc in
    0) status=ok ;;
    124|137) status=timeout ;;
    *) status=failed ;;
  esac
  record "$name" "$LIMIT" "$(( $(now) - start ))" "$rc" "$status" "$*"
  if [ "$status" != ok ]; then tail -n 8 "$LOGS/$name.log" | sed 's/^/   | /'; fi
  return 0
}
step_ok() { awk -F'\t' -v n="$1" '$1 == n && $5 == "ok" {f = 1} END {exit !f}' "$STEPS"; }
step_ran() { awk -F'\t' -v n="$1" '$1 == n && $5 !~ /^skipped/ {f = 1} END {exit !f}' "$STEPS"; }

# ---------------------------------------------------------------------------------------------
# 1. the image: versions, CUDA, what klhuber needs; then the carried wheels (.whl/)
export CHECK_DEV=$DEV CHECK_OUT="$RES/gpu_session/environment_$DEV.json" CHECK_DRY=$DRY_RUN
cat > "$WORK/check_image.py" <<'EOF'
import importlib, json, os, platform, shutil, subprocess, sys
from importlib import metadata

def version_tuple(text):
    out = []
    for part in text.split("+")[0].split(".")[:3]:
        digits = "".join(c for c in part if c.isdigit())
        out.append(int(digits or 0))
    return tuple(out)

need = {"python": (3, 10), "torch": (2, 4), "torchvision": (0, 19), "numpy": (1, 24),
        "scipy": (1, 10), "sympy": (1, 12), "mpmath": (1, 3), "matplotlib": (3, 7),
        "tqdm": (4, 60), "pycocotools": (2, 0, 7), "pytest": (7, 4), "hypothesis": (6, 80)}
report = {"python": platform.python_version(), "executable": sys.executable, "modules": {},
          "problems": [], "warnings": []}
if version_tuple(report["python"]) < need["python"]:
    report["problems"].append(f"python {report['python']} < 3.10")
for name in [n for n in need if n != "python"]:
    try:
        mod = importlib.import_module(name)
        ver = getattr(mod, "__version__", None)
        if ver is None:
            try:
                ver = metadata.version(name)
            except metadata.PackageNotFoundError:
                ver = "unknown"
        report["modules"][name] = {"version": ver, "file": getattr(mod, "__file__", None)}
        if ver != "unknown" and version_tuple(ver) < need[name]:
            report["problems"].append(f"{name} {ver} < {'.'.join(map(str, need[name]))}")
    except Exception as error:  # noqa: BLE001
        report["modules"][name] = None
        msg = f"{name} not importable ({type(error).__name__}: {error})"
        (report["warnings"] if name in ("pycocotools", "hypothesis") else report["problems"]).append(msg)
import torch

report["torch_cuda_build"] = torch.version.cuda
report["cuda_available"] = torch.cuda.is_available()
report["cpu_count"] = os.cpu_count()
report["torch_threads"] = torch.get_num_threads()
report["c_compiler"] = shutil.which("cc") or shutil.which("gcc")
if report["cuda_available"]:
    props = torch.cuda.get_device_properties(0)
    report["gpu"] = {"name": props.name, "capability": f"{props.major}.{props.minor}",
                     "memory_gib": round(props.total_memory / 2**30, 1),
                     "count": torch.cuda.device_count(),
                     "bf16": torch.cuda.is_bf16_supported()}
    x = torch.randn(1024, 1024, device="cuda")
    report["gpu"]["matmul_ok"] = bool(torch.isfinite(x @ x).all())
elif os.environ["CHECK_DEV"] == "cuda":
    report["problems"].append("CUDA is not available to torch")
if not report["c_compiler"]:
    report["warnings"].append("no C compiler: torch.compile (inductor) cannot build its launchers")
try:
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                          "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
    report["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
except Exception as error:  # noqa: BLE001
    report["nvidia_smi"] = f"unavailable ({type(error).__name__})"
try:
    import klhuber
    from klhuber import losses, toy  # noqa: F401
    from klhuber.detection import experiments
    from klhuber.results import git_commit, save_results

    report["klhuber"] = {"version": klhuber.__version__, "file": klhuber.__file__,
                         "git_commit": git_commit(),
                         "gpu_profile": "gpu" in experiments.PROFILES}
except Exception as error:  # noqa: BLE001
    report["problems"].append(f"klhuber not importable ({type(error).__name__}: {error})")
    save_results = None
print(json.dumps(report, indent=1))
report["dry_run"] = os.environ["CHECK_DRY"] == "1"
if save_results is not None:
    save_results(os.environ["CHECK_OUT"], {"environment": report},
                 command="benchmarks/gpu_session.sh (image check)", device=os.environ["CHECK_DEV"]
                 if report["cuda_available"] or os.environ["CHECK_DEV"] == "cpu" else "cpu")
else:
    with open(os.environ["CHECK_OUT"], "w") as fh:
        json.dump({"environment": report}, fh, indent=1)
for p in report["problems"]:
    print("PROBLEM:", p)
for w in report["warnings"]:
    print("warning:", w)
sys.exit(3 if report["problems"] else 0)
EOF
LIMIT=120
run check_image "$PY" "$WORK/check_image.py"
if ! step_ok check_image; then
  echo "== the image lacks what klhuber needs (see logs/check_image.log): no further steps"
  ABORT=1
else
  ABORT=0
fi

SITE="$WORK/site"
shopt -s nullglob
WHEELS=("$REPO"/.whl/*.whl)
shopt -u nullglob
# the device image's Python (the wheels are built for it; benchmarks/gpu_prepare.sh)
DEVICE_TAGS=(--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
             --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
if [ "$ABORT" = 0 ] && [ "${#WHEELS[@]}" -gt 0 ] && [ "$DRY_RUN" = 1 ] \
   && ! "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
  # a dry run on another Python: check that the wheels install on the device's (installs nothing)
  LIMIT=60
  run install_wheels "$PY" -m pip install -q --disable-pip-version-check --dry-run --no-index \
      --no-deps --only-binary=:all: "${DEVICE_TAGS[@]}" --target "$SITE" "${WHEELS[@]}"
elif [ "$ABORT" = 0 ] && [ "${#WHEELS[@]}" -gt 0 ]; then
  LIMIT=60
  run install_wheels "$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps \
      --no-compile --no-cache-dir --upgrade --target "$SITE" "${WHEELS[@]}"
  if step_ok install_wheels; then export PYTHONPATH="$PYTHONPATH:$SITE"; fi
elif [ "$ABORT" = 0 ]; then
  skip install_wheels "no .whl/*.whl carried (benchmarks/gpu_prepare.sh downloads them)"
fi
HAVE_COCO=0
if "$PY" -c 'import pycocotools.coco, pycocotools.cocoeval' >/dev/null 2>&1; then HAVE_COCO=1; fi
[ "$HAVE_COCO" = 1 ] || echo "warning: pycocotools not importable: the detection steps are skipped"

# ---------------------------------------------------------------------------------------------
# 2. pytest -m cuda (in a dry run the same selection, all skipped without CUDA)
if [ "$ABORT" = 0 ]; then
  mapfile -t CUDA_TESTS < <(grep -l "pytest.mark.cuda" "$REPO"/tests/test_*.py)
  step_limit 18
  rm -f "$WORK/pytest_cuda.xml"
  run pytest_cuda "$PY" -m pytest -p no:cacheprovider -m cuda -v -rA \
      --junitxml="$WORK/pytest_cuda.xml" "${CUDA_TESTS[@]}"
  export JUNIT="$WORK/pytest_cuda.xml" JUNIT_JSON="$RES/gpu_session/pytest_cuda_$DEV.json" DEV \
         JUNIT_LOG="$LOGS/pytest_cuda.log"
  cat > "$WORK/junit_json.py" <<'EOF'
import os
import re
import xml.etree.ElementTree as ET

from klhuber.results import save_results

tests, counts = [], {}
if not os.path.exists(os.environ["JUNIT"]) and os.path.exists(os.environ["JUNIT_LOG"]):
    # no XML (the step was killed): the -v lines of the tests that finished
    for line in open(os.environ["JUNIT_LOG"], errors="replace"):
        m = re.match(r"(tests/\S+::\S+) (PASSED|FAILED|SKIPPED|ERROR)", line)
        if m:
            outcome = {"PASSED": "passed", "FAILED": "failure", "SKIPPED": "skipped",
                       "ERROR": "error"}[m.group(2)]
            counts[outcome] = counts.get(outcome, 0) + 1
            tests.append({"test": m.group(1), "outcome": outcome, "time_s": None,
                          "message": "from the log (no junit XML: the step was stopped)"})
if os.path.exists(os.environ["JUNIT"]):
    for case in ET.parse(os.environ["JUNIT"]).getroot().iter("testcase"):
        outcome, message = "passed", None
        for kind in ("failure", "error", "skipped"):
            node = case.find(kind)
            if node is not None:
                outcome, message = kind, (node.get("message") or "")[:500]
        counts[outcome] = counts.get(outcome, 0) + 1
        tests.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                      "time_s": float(case.get("time") or 0), "message": message})
save_results(os.environ["JUNIT_JSON"], {"pytest": "-m cuda", "counts": counts, "tests": tests},
             command="python -m pytest -m cuda", device=os.environ["DEV"])
print("pytest -m cuda:", counts)
EOF
  if step_ran pytest_cuda; then
    "$PY" "$WORK/junit_json.py" || echo "warning: could not convert the pytest report"
  fi
fi

# ---------------------------------------------------------------------------------------------
# 3. the CUDA rows of every benchmark (with --json); in a dry run CPU rows at tiny sizes
if [ "$ABORT" = 0 ]; then
  step_limit 11
  if [ "$DRY_RUN" = 1 ]; then
    run bench_losses "$PY" benchmarks/bench_losses.py --device cpu --size 20000 --repeats 2 \
        --warmup 1 --no-compile --threads 1 --json "$RES/benchmarks/bench_losses_$DEV.json"
  else
    run bench_losses "$PY" benchmarks/bench_losses.py --device cuda \
        --json "$RES/benchmarks/bench_losses_$DEV.json"
  fi
  step_limit 15
  if [ "$DRY_RUN" = 1 ]; then
    run bench_detection "$PY" benchmarks/bench_detection.py --no-cuda --repeats 1 --warmup 0 \
        --arch retinanet --backbone convnet4_fpn --preset experiment_c --threads 1 --json "$RES/benchmarks/bench_detection_$DEV.json"
  else  # the CPU rows come first (64 px, batch 2), then the CUDA rows (128 px, batch 16, bf16)
    run bench_detection "$PY" benchmarks/bench_detection.py --repeats 12 --threads 8 \
        --json "$RES/benchmarks/bench_detection_$DEV.json"
  fi
  step_limit 10
  if [ "$DRY_RUN" = 1 ]; then
    run bench_toy "$PY" benchmarks/bench_toy.py --device cpu --n 200 --iterations 5 \
        --loop-configs 1 --repeats 1 --json "$RES/benchmarks/bench_toy_$DEV.json"
  else
    run bench_toy "$PY" benchmarks/bench_toy.py --device cuda \
        --json "$RES/benchmarks/bench_toy_$DEV.json"
  fi
fi

# ---------------------------------------------------------------------------------------------
# 4. the detection engine's AMP (bf16) on CUDA: train + evaluate both architectures briefly
if [ "$ABORT" = 0 ] && [ "$HAVE_COCO" = 1 ]; then
  step_limit 9
  if [ "$DRY_RUN" = 1 ]; then AMP=none AMP_ITERS=2 AMP_ARCHS=retinanet AMP_N="16 8" AMP_W=0
  else AMP=bf16 AMP_ITERS=40 AMP_ARCHS="retinanet fasterrcnn" AMP_N="64 16" AMP_W=4; fi
  export PY WORK RES DEV AMP AMP_ITERS AMP_ARCHS AMP_N AMP_W
  run detect_amp bash -c '
    set -e
    set -- $AMP_N
    "$PY" -m klhuber detect synth "$WORK/amp_data" --image-size 64 --num-train "$1" \
        --num-val "$2" --noise-scale 0.05 --max-objects 3 --workers "$AMP_W"
    for arch in $AMP_ARCHS; do
      "$PY" -m klhuber detect train --data-root "$WORK/amp_data" --out "$WORK/amp_runs/$arch" \
          --overwrite --arch "$arch" --backbone convnet4_fpn --box-loss experiment_c \
          --iters "$AMP_ITERS" --batch-size 8 --lr 0.01 --warmup-iters 5 --amp "$AMP" \
          --device "$DEV" --min-size 64 --max-size 64 --workers 0 --cache-images \
          --no-progress --log-every 10 --eval --eval-batch-size 16 \
          --output "$RES/gpu_session/detect_amp_${arch}_$DEV.json"
    done'
elif [ "$ABORT" = 0 ]; then
  skip detect_amp "pycocotools missing"
fi

# ---------------------------------------------------------------------------------------------
# 5. the toy's full GD grid on the GPU (quick profile, few iterations, in a dry run).  Resumes
# checkpoints carried in .gpu-resume/toy/ (a toy_resume.tar.gz of an earlier session).
if [ "$DRY_RUN" = 1 ]; then TOY_PROFILE=quick; TOY_ARGS=(--iterations 4 --seeds 1 --families laplace); else TOY_PROFILE=full; TOY_ARGS=(); fi
TOY_OUT="$WORK/toy_out"
if [ "$ABORT" = 0 ] && [ "$DRY_RUN" = 0 ] && [ -f "$REPO/results/toy/toy_full.json" ]; then
  skip toy_full "results/toy/toy_full.json is already committed"
elif [ "$ABORT" = 0 ]; then
  rm -f "$TOY_OUT"/toy_*.json "$TOY_OUT"/fig2_*
  if [ -d "$REPO/.gpu-resume/toy/checkpoints/$TOY_PROFILE" ]; then
    mkdir -p "$TOY_OUT/checkpoints"
    cp -r "$REPO/.gpu-resume/toy/checkpoints/$TOY_PROFILE" "$TOY_OUT/checkpoints/"
    echo "resuming the toy grid from .gpu-resume/toy/checkpoints/$TOY_PROFILE"
  fi
  step_limit 28
  # start no new GD chunk in the last quarter (a chunk, the summary and the figures follow)
  TOY_STOP=$((LIMIT - LIMIT / 4 - 10)); [ "$TOY_STOP" -ge 1 ] || TOY_STOP=1
  run toy_full "$PY" -m klhuber toy --profile "$TOY_PROFILE" --device "$DEV" --out "$TOY_OUT" \
      --no-progress --stop-after-s "$TOY_STOP" "${TOY_ARGS[@]}"
  mkdir -p "$RES/toy"
  for f in "$TOY_OUT"/toy_"$TOY_PROFILE".json "$TOY_OUT"/fig2_*"$TOY_PROFILE".*; do
    [ -f "$f" ] && cp "$f" "$RES/toy/"
  done
  if [ -f "$RES/toy/toy_$TOY_PROFILE.json" ]; then note "toy: toy_$TOY_PROFILE.json written"
  elif step_ran toy_full; then note "toy: the $TOY_PROFILE GD grid did not finish (--stop-after-s $TOY_STOP or the limit): its checkpoints go to toy_resume.tar.gz"; fi
fi

# ---------------------------------------------------------------------------------------------
# 6. the detection grid's GPU variant: profile `gpu` (seeds 3-8 of the cpu grid), 8 jobs on one
# GPU, continuing from the committed results/detection/gpu/ and from carried checkpoints.
DET_RES="$WORK/det_results"
DET_RUNS="$WORK/det_runs"
if [ "$DRY_RUN" = 1 ]; then
  DET_PROFILE=quick
  DET_ARGS=(--jobs 2 --arch fasterrcnn --preset implementation --preset experiment_a
            --overrides '{"iters": 2, "eval_max_images": 4, "threads": 1}')
  DET_RUN_S=${KLHUBER_GPU_DET_RUN_S:-5}
else
  DET_PROFILE=gpu
  DET_ARGS=(--jobs 8)
  DET_RUN_S=${KLHUBER_GPU_DET_RUN_S:-150}
fi
if [ "$ABORT" = 0 ] && [ "$HAVE_COCO" = 1 ]; then
  rm -rf "$DET_RES"
  mkdir -p "$DET_RES/$DET_PROFILE" "$DET_RUNS"
  if [ "$DRY_RUN" = 0 ] && [ -d "$REPO/results/detection/$DET_PROFILE" ]; then
    cp "$REPO/results/detection/$DET_PROFILE"/*.json "$DET_RES/$DET_PROFILE/" 2>/dev/null
  fi
  if [ -d "$REPO/.gpu-resume/detection/runs/$DET_PROFILE" ]; then
    cp -r "$REPO/.gpu-resume/detection/runs/$DET_PROFILE" "$DET_RUNS/"
    echo "resuming detection runs from .gpu-resume/detection/runs/$DET_PROFILE"
  fi
  step_limit 100
  DET_STOP=$((LIMIT - DET_RUN_S)); [ "$DET_STOP" -ge 1 ] || DET_STOP=1
  run detection "$PY" -m klhuber detect experiment --profile "$DET_PROFILE" --device "$DEV" \
      --results-dir "$DET_RES" --data-dir "$WORK/det_data" --work-dir "$DET_RUNS" \
      --stop-after-s "$DET_STOP" "${DET_ARGS[@]}"
  mkdir -p "$RES/detection/$DET_PROFILE"
  for f in "$DET_RES/$DET_PROFILE"/*.json; do
    [ -f "$f" ] || continue
    [ -f "$REPO/results/detection/$DET_PROFILE/$(basename "$f")" ] && [ "$DRY_RUN" = 0 ] && continue
    cp "$f" "$RES/detection/$DET_PROFILE/"
  done
  step_ran detection && note "detection: $(find "$RES/detection/$DET_PROFILE" -name '*.json' | wc -l) new run(s) of profile $DET_PROFILE ($(find "$DET_RES/$DET_PROFILE" -name '*.json' | wc -l) done in all; --stop-after-s $DET_STOP)"
elif [ "$ABORT" = 0 ]; then
  skip detection "pycocotools missing"
fi

# ---------------------------------------------------------------------------------------------
# 7. pack: manifest, results.tar.gz, logs.tar.gz, resume tarballs (<= 8 files, <= 16 MiB each)
rm -rf "$WORK/resume"
mkdir -p "$WORK/resume/.gpu-resume"
if [ -d "$TOY_OUT/checkpoints/$TOY_PROFILE" ] && [ ! -f "$RES/toy/toy_$TOY_PROFILE.json" ] \
   && [ -n "$(ls -A "$TOY_OUT/checkpoints/$TOY_PROFILE" 2>/dev/null)" ]; then
  mkdir -p "$WORK/resume/.gpu-resume/toy/checkpoints"
  cp -r "$TOY_OUT/checkpoints/$TOY_PROFILE" "$WORK/resume/.gpu-resume/toy/checkpoints/"
  tar -C "$WORK/resume" -czf "$OUT_DIR/toy_resume.tar.gz" .gpu-resume/toy
fi
# interrupted detection runs (a checkpoint, no results JSON), smallest first, up to 15 MiB
if [ -d "$DET_RUNS/$DET_PROFILE" ]; then
  KEPT=0
  while read -r kib dir; do
    [ -f "$DET_RES/$DET_PROFILE/$(basename "$dir").json" ] && continue
    [ -n "$(find "$dir" -name 'checkpoint*' | head -n 1)" ] || continue
    [ $((KEPT + kib)) -le $((15 * 1024)) ] || { note "detection: checkpoint of $(basename "$dir") not packed (over 15 MiB)"; continue; }
    mkdir -p "$WORK/resume/.gpu-resume/detection/runs/$DET_PROFILE"
    cp -r "$dir" "$WORK/resume/.gpu-resume/detection/runs/$DET_PROFILE/"
    KEPT=$((KEPT + kib))
  done < <(du -sk "$DET_RUNS/$DET_PROFILE"/*/ 2>/dev/null | sort -n)
  if [ -d "$WORK/resume/.gpu-resume/detection" ]; then
    tar -C "$WORK/resume" -czf "$OUT_DIR/detection_resume.tar.gz" .gpu-resume/detection
  fi
fi
export MANIFEST_STEPS="$STEPS" MANIFEST_RES="$RES" MANIFEST_OUT="$OUT_DIR" MANIFEST_T0="$T0" \
       MANIFEST_BUDGET="$BUDGET" MANIFEST_DRY="$DRY_RUN" MANIFEST_WORK="$WORK" DEV
cat > "$WORK/manifest.py" <<'EOF'
import datetime as dt, json, os, platform, sys, time

env = os.environ
steps = []
with open(env["MANIFEST_STEPS"]) as fh:
    for line in fh:
        name, limit, wall, rc, status, command = line.rstrip("\n").split("\t", 5)
        steps.append({"name": name, "status": status, "exit_code": None if rc == "-" else int(rc),
                      "limit_s": int(limit), "wall_s": int(wall), "command": command,
                      "log": f"logs/{name}.log"})
res = env["MANIFEST_RES"]
results = sorted(os.path.relpath(os.path.join(d, f), os.path.dirname(res))
                 for d, _, files in os.walk(res) for f in files)
environment = None
path = os.path.join(res, "gpu_session", f"environment_{env['DEV']}.json")
if os.path.exists(path):
    with open(path) as fh:
        environment = json.load(fh).get("environment")
out = env["MANIFEST_OUT"]
files = {f: os.path.getsize(os.path.join(out, f)) for f in sorted(os.listdir(out))
         if os.path.isfile(os.path.join(out, f))}
t0 = int(env["MANIFEST_T0"])
manifest = {
    "session": "benchmarks/gpu_session.sh",
    "dry_run": env["MANIFEST_DRY"] == "1",
    "device": env["DEV"],
    "budget_s": int(env["MANIFEST_BUDGET"]),
    "started_utc": dt.datetime.fromtimestamp(t0, dt.timezone.utc).isoformat(timespec="seconds"),
    "finished_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    "wall_s": int(time.time()) - t0,
    "git_commit": (environment or {}).get("klhuber", {}).get("git_commit")
    or env.get("KLHUBER_GIT_COMMIT"),
    "host": platform.node(),
    "versions": None if environment is None else {
        "python": environment.get("python"),
        **{k: (v or {}).get("version") for k, v in environment.get("modules", {}).items()},
        "torch_cuda_build": environment.get("torch_cuda_build")},
    "gpu": None if environment is None else environment.get("gpu"),
    "steps": steps,
    "notes": open(os.path.join(env["MANIFEST_WORK"], "notes.txt")).read().splitlines()
    if os.path.exists(os.path.join(env["MANIFEST_WORK"], "notes.txt")) else [],
    "ok": all(s["status"] in ("ok",) or s["status"].startswith("skipped") for s in steps),
    "results": results,
    "out_files": files,
    "how_to_commit": "tar -xzf results.tar.gz -C <repository root>; git add results/",
}
with open(sys.argv[1], "w") as fh:
    json.dump(manifest, fh, indent=1)
    fh.write("\n")
EOF
write_manifest() { "$PY" "$WORK/manifest.py" "$1"; }
# the manifest inside results/ (per device: a dry run never overwrites a GPU session's)
write_manifest "$RES/gpu_session/manifest_$DEV.json" || echo "warning: manifest failed"
tar -C "$WORK" -czf "$OUT_DIR/results.tar.gz" results
tar -C "$WORK" -czf "$OUT_DIR/logs.tar.gz" logs
echo "== summary ($(( $(now) - T0 ))s of ${BUDGET}s)"
awk -F'\t' '{printf "   %-18s %-24s rc %-4s %5ss / %ss\n", $1, $5, $4, $3, $2}' "$STEPS"
# the device tool returns files of at most 16 MiB: split any larger one (cat the parts back)
for f in "$OUT_DIR"/*; do
  if [ -f "$f" ] && [ "$(stat -c %s "$f")" -gt $((15 * 1024 * 1024)) ]; then
    split -b 15M -d "$f" "$f.part-" && rm -f "$f"
    note "$(basename "$f") split into 15 MiB parts: cat $(basename "$f").part-* > $(basename "$f")"
  fi
done
# ... and at most 8 files (with manifest.json): the resume tarballs go first
for drop in detection_resume toy_resume; do
  [ "$(ls "$OUT_DIR" | grep -vc '^manifest.json$')" -le 7 ] && break
  note "more than 8 files: $drop.tar.gz* dropped"
  rm -f "$OUT_DIR/$drop".tar.gz*
done
write_manifest "$OUT_DIR/manifest.json" || echo "warning: manifest failed"
echo "== out: $(ls "$OUT_DIR" | tr '\n' ' ')"
# 0 when every step passed (or was skipped on purpose), else 1: the results are packed either way
awk -F'\t' '$5 != "ok" && $5 !~ /^skipped/ {bad = 1} END {exit bad}' "$STEPS"
STATUS=$?
if [ "$DRY_RUN" = 1 ] && [ -z "${KLHUBER_GPU_WORK:-}" ]; then rm -rf "$WORK"; fi
exit $STATUS
}
