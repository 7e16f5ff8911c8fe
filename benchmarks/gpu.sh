#!/usr/bin/env bash
# GPU throughput of the training code on one H100/H200-class GPU, in at most 8 minutes:
# training images/s of ResNet-50 and HRNet-W32 at 256x192 (fp32/TF32, bf16, bf16 +
# channels-last, compiled) with peak memory, the loader's samples/s with N workers, end to
# end images/s and evaluation crops/s in fp32, bf16 and fp16. See benchmarks/gpu.py;
# `--smoke` checks it on a CPU.
#
#   benchmarks/gpu.sh [--steps 30] [--workers 4 8 14]
#
# Needs the project's environment (`uv sync --frozen`); PYTHON overrides the interpreter
# (e.g. PYTHON=/opt/venv/bin/python inside the train image).
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
read -r -a python <<< "${PYTHON:-uv run --frozen python}"
exec timeout --signal=INT --kill-after=20 480 "${python[@]}" benchmarks/gpu.py "$@"
