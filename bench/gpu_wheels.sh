#!/usr/bin/env bash
# Download into .whl/ the wheels bench/run_gpu.sh installs on a GPU machine without network
# (Python 3.12, x86_64 Linux): resnetbk's run-time dependencies beyond torch/numpy and the
# test-only ones. Run on a machine with network, then carry .whl to the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP=(python3 -m pip download -q --no-deps -d .whl)
"${PIP[@]}" geoopt==0.5.1 mpmath sortedcontainers attrs tomli-w tqdm
"${PIP[@]}" --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
  hypothesis scipy safetensors pyyaml scikit-learn joblib threadpoolctl
ls .whl
