#!/usr/bin/env bash
# The one-shot check of the CUDA path on a GPU machine: one command, about 7 minutes on one H100.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]       # OUT_DIR default: $OUT when set, else benchmarks/results/
#   GPU_CHECK_DRY_RUN=1 bash benchmarks/gpu_check.sh /tmp/out   # on a CPU: small sizes, CUDA-only parts skipped
#
# Python: $PYTHON when set; else the project's .venv when there is one (a user's GPU box after `make
# install`); else the machine's python3 (a lent, bare GPU image with torch already on it). For a python
# other than .venv's, a venv of the check's own ($GPU_CHECK_VENV, default under /tmp, made afresh) sees
# what that python sees, so torch stays the image's, and gets the wheels that benchmarks/gpu_wheels.sh
# downloaded (carried in $GPU_WHEELS, default benchmarks/gpu_wheels/) installed offline on top: nothing
# is installed into the image's own Python (a PEP 668 image would refuse). Then benchmarks/gpu_check.py
# runs the steps and rewrites OUT_DIR/gpu-check-<gpu name>.json after each (see its docstring).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-benchmarks/results}}
WHEELS=${GPU_WHEELS:-benchmarks/gpu_wheels}
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then
  PY=.venv/bin/python
else
  BASE=${PYTHON:-python3}
  if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    echo "no wheels in $WHEELS: run benchmarks/gpu_wheels.sh on a machine with network and carry that folder" >&2
    exit 2
  fi
  VENV=${GPU_CHECK_VENV:-${TMPDIR:-/tmp}/swclip-gpu-check-venv}
  # `venv --system-site-packages` chains to the base interpreter only. When $BASE is itself a venv (the
  # image's python3 is /opt/torch/.venv/bin/python3), its own site-packages come in through a .pth file;
  # the base interpreter's only if $BASE sees them too.
  # shellcheck disable=SC2016
  read -r SYSTEM CHAIN < <("$BASE" -c '
import site, sys
in_venv = sys.prefix != sys.base_prefix
base_sites = [p for p in sys.path if p.startswith(sys.base_prefix) and p.endswith(("site-packages", "dist-packages"))]
print("1" if (base_sites or not in_venv) else "0", repr(site.getsitepackages([sys.prefix]) if in_venv else []))')
  rm -rf "$VENV"
  if [ "$SYSTEM" = 1 ]; then "$BASE" -m venv --system-site-packages "$VENV"; else "$BASE" -m venv "$VENV"; fi
  "$VENV/bin/python" -c "
import site
open(site.getsitepackages()[0] + '/_gpu_image.pth', 'w').write(
    ''.join(f'import site; site.addsitedir({p!r})\n' for p in $CHAIN))"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-index --no-deps "$WHEELS"/*.whl
  PY=$VENV/bin/python
fi
DRY=()
if [ "${GPU_CHECK_DRY_RUN:-0}" = 1 ]; then DRY=(--dry-run); fi
exec "$PY" -m benchmarks.gpu_check --out "$OUT_DIR" "${DRY[@]}"
