#!/usr/bin/env bash
# Wheels for bench/gpu_check.py on a GPU machine without network whose Python (3.12) already holds torch,
# numpy, click, attrs, certifi, pyparsing and tqdm: segment-anything, rasterio and rasterio's small
# dependencies, downloaded here into .whl/ (ignored by git). On the GPU machine, from the repository root:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && \
#       PYTHONPATH=/tmp/site:. python3 bench/gpu_check.py --json "$OUT/gpu_check.json"
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON_VERSION="${PYTHON_VERSION:-3.12}"
mkdir -p .whl .git/info
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
PIP="${PIP:-.venv/bin/python -m pip}"
$PIP download --quiet --no-deps --only-binary=:all: --python-version "$PYTHON_VERSION" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl \
    segment-anything==1.0 rasterio==1.4.4 "affine==2.4.0" cligj==0.7.2 click-plugins==1.1.1.2
ls -l .whl
