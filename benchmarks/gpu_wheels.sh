#!/usr/bin/env bash
# Download the wheels benchmarks/gpu_check.sh needs on a bare GPU image, into a git-ignored folder.
#
#   bash benchmarks/gpu_wheels.sh [DEST]        # default DEST: benchmarks/gpu_wheels/ (git-ignored)
#   GPU_PYTHON=3.11 bash benchmarks/gpu_wheels.sh /tmp/wheels311   # for a CPU dry run on this machine's Python
#
# Run it on a machine that reaches PyPI. The lent GPU machines have no network and carry at most
# 64 MiB of files; their python3 (3.12) already has torch 2.11 + CUDA 13, torchvision, timm,
# tensorboard, pandas, pyarrow, scipy and pillow (and what those pull in: numpy, huggingface_hub,
# safetensors, PyYAML, tqdm, packaging). What the check needs beyond that, at the versions
# requirements.txt pins, is below: open_clip and its tokenizer's two libraries, faiss for the
# evaluation's search, shapely for the demo world it evaluates on, pillow-heif (swclip.data reads
# HEIC photos) and threadpoolctl (swclip.analysis limits BLAS threads), and pytest + hypothesis for
# the CUDA tests. benchmarks/gpu_image/constraints.txt is the image's list; a library import of a
# package on neither list fails the CI rehearsal (benchmarks/gpu_rehearsal.sh). Not carried: scikit-gstat (with numba and llvmlite, ~60 MB), so the check's
# training-step benchmark times the semivariogram loss with a fixed variogram. Binary wheels only, cp312,
# manylinux x86_64, no dependencies resolved (the list is complete; gpu_check.sh installs it
# with --no-deps, so nothing the image has is replaced).
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-benchmarks/gpu_wheels}
PYV=${GPU_PYTHON:-3.12}
pin() { grep -i -E "^$1==" requirements.txt | head -1; }
PKGS=(
  "$(pin open_clip_torch)" ftfy wcwidth regex      # model + tokenizer
  "$(pin faiss-cpu)"                               # evaluation: gallery search
  "$(pin shapely)"                                 # the small demo world the evaluation step renders
  "$(pin pillow-heif)" "$(pin threadpoolctl)"      # imported by swclip.data and swclip.analysis
  "$(pin pytest)" iniconfig pluggy pygments        # step 1: the CUDA tests
  "$(pin hypothesis)" attrs sortedcontainers
)
mkdir -p "$DEST"
rm -f "$DEST"/*.whl  # one version of each, and none that the list no longer names
python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version "$PYV" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any \
  -d "$DEST" "${PKGS[@]}"
du -sh "$DEST"
ls "$DEST"
