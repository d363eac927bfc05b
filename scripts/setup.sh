#!/usr/bin/env bash
# Create .venv and install resnetbk with its dev extras, choosing the right torch build first:
# a bare `pip install torch` on Linux pulls the multi-GB CUDA build even on machines without
# a GPU. Override the choice with RESNETBK_TORCH_SPEC (e.g. "torch==2.11.0") and the index
# with RESNETBK_TORCH_INDEX; set PYTHON to choose the interpreter (>= 3.10).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || { echo "error: resnetbk needs Python >= 3.10 ($PYTHON is $("$PYTHON" -V 2>&1))" >&2; exit 1; }

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)

if ! "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
  spec=${RESNETBK_TORCH_SPEC:-"torch>=2.4"}
  if [ -n "${RESNETBK_TORCH_INDEX:-}" ]; then
    echo "setup: installing $spec from $RESNETBK_TORCH_INDEX"
    "${PIP[@]}" "$spec" --index-url "$RESNETBK_TORCH_INDEX"
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: NVIDIA GPU found: installing the CUDA build of $spec from PyPI"
    "${PIP[@]}" "$spec"
  elif "${PIP[@]}" --no-index --no-deps "$spec" 2>/dev/null; then
    # A wheel on local disk (pip's find-links) needs no download; its dependencies come below.
    echo "setup: no GPU: installed $("$VENV/bin/python" -m pip show torch | sed -n 's/^Version: //p') from a local wheel"
  else
    echo "setup: no GPU: installing the CPU build of $spec from download.pytorch.org"
    "${PIP[@]}" "$spec" --index-url https://download.pytorch.org/whl/cpu
  fi
fi

"${PIP[@]}" -e ".[dev]"
echo "setup: ready ($("$VENV/bin/python" -c 'import torch, resnetbk; print(f"resnetbk {resnetbk.__version__}, torch {torch.__version__}")'))"
