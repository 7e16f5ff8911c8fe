#!/usr/bin/env bash
# GPU throughput of the training code on one H100/H200-class GPU, in at most 8 minutes:
# training images/s of ResNet-50 and HRNet-W32 at 256x192 (bf16 + channels-last, fp32,
# bf16, compiled) with peak memory, end-to-end images/s with decoding on the CPU and on the
# GPU, the loader's samples/s with N workers and evaluation crops/s in fp32, bf16 and fp16.
# Each row is printed as it finishes and appended to --out. See benchmarks/gpu.py;
# `--smoke` checks every row on a CPU.
#
#   PYTHON=python3 benchmarks/gpu.sh [--smoke] [--steps 30] [--workers 4 8 14] [--out FILE]
#
# Needs no uv and installs nothing: it runs $PYTHON (default python3) with this checkout on
# PYTHONPATH. Packages that interpreter lacks (benchmarks/gpu-wheels.txt, downloaded by
# scripts/gpu-wheels.sh) are installed from the folder $WHEELS (default .gpu-wheels) into a
# temporary folder, when it holds any. docs/benchmarks.md gives the whole command.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
python=${PYTHON:-python3}
wheels=${WHEELS:-.gpu-wheels}
site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT
if compgen -G "$wheels/*.whl" >/dev/null; then
    "$python" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir \
        --target "$site" "$wheels"/*.whl
fi
export PYTHONPATH="$root:$site${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
timeout --signal=INT --kill-after=20 480 "$python" benchmarks/gpu.py "$@"
