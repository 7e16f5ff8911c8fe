#!/usr/bin/env bash
# Download the wheels benchmarks/gpu-wheels.txt lists (CPython 3.12, manylinux x86-64) into
# .gpu-wheels/ (git-ignored), for a GPU machine that has no network: benchmarks/gpu.sh
# installs them there. Needs pip ($PYTHON -m pip) and PyPI; older wheels in the folder are
# removed first, since two versions of one package stop the install. WHEELS names another
# folder, PYTHON_VERSION another CPython (the CI test fetches its own).
#
#   scripts/gpu-wheels.sh      # then carry .gpu-wheels to the machine (docs/benchmarks.md)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${WHEELS:-.gpu-wheels}
mkdir -p "$out"
rm -f "$out"/*.whl
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 \
    manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$tag")
done
"${PYTHON:-python3}" -m pip download --quiet --no-deps --only-binary=:all: \
    --python-version "${PYTHON_VERSION:-3.12}" --implementation cp "${platforms[@]}" -d "$out" \
    -r benchmarks/gpu-wheels.txt
ls -1 "$out"
