#!/usr/bin/env bash
# CI's rehearsal of the GPU check on the CPU, as the lent GPU machine would run it.
#
#   bash benchmarks/gpu_rehearsal.sh        # .ci/run runs it before `make test`; needs .venv (make install)
#
# 1. A stand-in for the image's python3: a venv holding only the image's packages that the project uses
#    (benchmarks/gpu_image/constraints.txt is the image's list, rehearsal.txt the part used here), linked
#    from .venv by benchmarks/gpu_image/stand_in.py: no download, a few seconds.
# 2. The carried wheels, downloaded by benchmarks/gpu_wheels.sh for this machine's Python into a fresh
#    folder (pip's cache keeps the repeat small: about 32 MB the first time).
# 3. GPU_CHECK_DRY_RUN=1 bash benchmarks/gpu_check.sh with that python and those wheels: it makes its own
#    venv on top of the stand-in, as on the GPU machine, and runs every step in its reduced CPU form.
# Fails when a step fails, e.g. when the library imports a package that is neither on the image nor
# carried. Versions are the project's pins, not the image's (see rehearsal.txt); the image's Python is
# 3.12, this one 3.11.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
if [ ! -x .venv/bin/python ]; then
  echo "gpu_rehearsal: no .venv (run make install first): the stand-in image is linked from it" >&2
  exit 2
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_rehearsal.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
.venv/bin/python benchmarks/gpu_image/stand_in.py "$WORK/image" >"$WORK/stand_in.log" || {
  cat "$WORK/stand_in.log"
  exit 1
}
tail -1 "$WORK/stand_in.log"
PYV=$("$WORK/image/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
GPU_PYTHON=$PYV bash benchmarks/gpu_wheels.sh "$WORK/wheels" >/dev/null
echo "gpu_rehearsal: $(ls "$WORK"/wheels/*.whl | wc -l) wheels for Python $PYV; dry run of benchmarks/gpu_check.sh"
rc=0
PYTHON="$WORK/image/bin/python" GPU_WHEELS="$WORK/wheels" GPU_CHECK_VENV="$WORK/venv" GPU_CHECK_DRY_RUN=1 \
  OUT="$WORK/out" bash benchmarks/gpu_check.sh || rc=$?
echo "gpu_rehearsal: $([ $rc = 0 ] && echo passed || echo FAILED) in $(($(date +%s) - t0)) s"
exit $rc
