#!/usr/bin/env bash
# Prepare a GPU session (issue 18), on THIS machine, before the one device call:
#   1. download the wheels the device image lacks (pycocotools, at the version pinned in
#      constraints.txt, for CPython 3.12 manylinux x86_64) into the ignored folder .whl/;
#   2. check that they install for the device's Python (pip --dry-run for cp312 manylinux);
#   3. print the exact arguments of the device tool's `run` call: command, carry, timeout_s.
# Usage: bash benchmarks/gpu_prepare.sh [--budget SECONDS (default 540)]
# Checkpoints of an unfinished earlier session (toy_resume.tar.gz / detection_resume.tar.gz,
# extracted at the repository root into .gpu-resume/) are carried too, so the grids continue.
set -euo pipefail
BUDGET=540
while [ $# -gt 0 ]; do
  case "$1" in
    --budget) BUDGET="${2:?--budget needs a value}"; shift ;;
    --budget=*) BUDGET="${1#*=}" ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "gpu_prepare.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
case "$BUDGET" in ''|*[!0-9]*) echo "gpu_prepare.sh: --budget must be whole seconds" >&2; exit 2 ;; esac
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PIP=(python3 -m pip)
"${PIP[@]}" --version >/dev/null 2>&1 || PIP=(.venv/bin/python -m pip)
VERSION=$(sed -n 's/^pycocotools==\([^ ]*\).*/\1/Ip' constraints.txt | head -n 1)
[ -n "$VERSION" ] || { echo "gpu_prepare.sh: no pycocotools pin in constraints.txt" >&2; exit 1; }
PLATFORMS=(--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
mkdir -p .whl
if ! ls .whl/pycocotools-"$VERSION"-cp312-*.whl >/dev/null 2>&1; then
  "${PIP[@]}" download --disable-pip-version-check --no-deps --only-binary=:all: \
      "${PLATFORMS[@]}" -d .whl "pycocotools==$VERSION"
fi
# installable for the device's CPython 3.12 (resolves from .whl only, installs nothing)
"${PIP[@]}" install --disable-pip-version-check --dry-run --quiet --no-index --no-deps \
    --find-links .whl --only-binary=:all: "${PLATFORMS[@]}" --target "$(mktemp -d)" \
    "pycocotools==$VERSION"
ls -l .whl/*.whl >&2

CARRY='[".whl"]'
if [ -d .gpu-resume ]; then CARRY='[".whl", ".gpu-resume"]'; fi
SIZE=$(du -sm .whl $( [ -d .gpu-resume ] && echo .gpu-resume) | awk '{s += $1} END {print s}')
[ "$SIZE" -lt 64 ] || { echo "gpu_prepare.sh: carry is ${SIZE} MiB (> 64 MiB)" >&2; exit 1; }
COMMIT=$(git rev-parse HEAD)
[ -z "$(git status --porcelain --untracked-files=no)" ] || COMMIT="$COMMIT-dirty"
TIMEOUT=$((BUDGET + 50)); [ "$TIMEOUT" -le 600 ] || TIMEOUT=600
cat <<EOF
ready: .whl/ holds pycocotools $VERSION for cp312 (carry ${SIZE} MiB)
device tool call (one call; it returns manifest.json, results.tar.gz, logs.tar.gz, session.log):
  command:   KLHUBER_GIT_COMMIT=$COMMIT bash benchmarks/gpu_session.sh --budget $BUDGET
  carry:     $CARRY
  timeout_s: $TIMEOUT
first the device tool's status: budget_left_s must cover timeout_s plus the machine's start
(minutes); if it does not, pass a smaller --budget (the steps' limits shrink with it).
EOF
