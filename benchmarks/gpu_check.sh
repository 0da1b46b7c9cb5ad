#!/usr/bin/env bash
# The one-shot check of the CUDA path on a GPU machine: one command, under 8 minutes on one H100/H200.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]       # default OUT_DIR: benchmarks/results/
#   GPU_CHECK_DRY_RUN=1 bash benchmarks/gpu_check.sh /tmp/out   # on a CPU: small sizes, CUDA-only parts skipped
#
# Python: the project's .venv when there is one (a user's GPU box after `make install`); otherwise
# the machine's python3 (a lent, bare GPU image with torch already on it), into which the wheels
# that benchmarks/gpu_wheels.sh downloaded (carried in benchmarks/gpu_wheels/) are installed
# offline first. Then benchmarks/gpu_check.py runs the steps (CUDA tests, loss benchmark in bf16,
# ViT-B/32 training-step benchmark, a 200-step run killed and resumed, evaluation), writes
# OUT_DIR/gpu-check-<gpu name>.json and prints a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results}
WHEELS=${GPU_WHEELS:-benchmarks/gpu_wheels}
if [ -x .venv/bin/python ]; then
  PY=.venv/bin/python
else
  PY=${PYTHON:-python3}
  if ! "$PY" -c "import open_clip, faiss, pytest, hypothesis" 2>/dev/null; then
    if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
      echo "no .venv, and $PY lacks open_clip/faiss/pytest/hypothesis: run benchmarks/gpu_wheels.sh first and carry $WHEELS" >&2
      exit 2
    fi
    "$PY" -m pip install --quiet --disable-pip-version-check --no-index --no-deps --find-links "$WHEELS" "$WHEELS"/*.whl
  fi
fi
DRY=()
if [ "${GPU_CHECK_DRY_RUN:-0}" = 1 ]; then DRY=(--dry-run); fi
exec "$PY" -m benchmarks.gpu_check --out "$OUT" "${DRY[@]}"
