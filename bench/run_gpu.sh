#!/usr/bin/env bash
# One call on the lent GPU machine: info, the whole test suite (GPU tests included) and the
# GPU benchmarks, with logs under $OUT. Uses the machine's torch; carry .whl (geoopt wheel,
# the test oracle the GPU image lacks): see docs/PERFORMANCE.md.
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
python3 -m resnetbk.cli info | tee "$OUT/info.txt"
python3 -m pytest -q -m "" -p no:cacheprovider 2>&1 | tee "$OUT/pytest.txt"
status=${PIPESTATUS[0]}
echo "pytest exit code: $status"
exit "$status"
