#!/usr/bin/env bash
# One call on the lent GPU machine: info, the whole test suite (GPU tests included) and the
# GPU benchmarks, with logs under $OUT. Uses the machine's torch; carry .whl (wheels of the
# other run-time and test dependencies for Python 3.12, made by bench/gpu_wheels.sh).
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
# Test-only dependencies the GPU image may lack, from wheels carried in .whl/ (the machine has
# no network): install each one whose module does not import.
mkdir -p /tmp/site
for whl in .whl/*.whl; do
  [ -e "$whl" ] || continue
  dist=$(basename "$whl" | cut -d- -f1)
  mod=$dist; [ "$dist" = attrs ] && mod=attr; [ "$dist" = pyyaml ] && mod=yaml
  [ "$dist" = scikit_learn ] && mod=sklearn
  if ! python3 -c "import $mod" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$whl"
    echo "installed $dist from .whl"
  fi
done
export PYTHONPATH=/tmp/site
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
touch /tmp/run_gpu.start  # results written after this moment are copied to $OUT
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
python3 -m resnetbk.cli info | tee "$OUT/info.txt"
# Default selection (slow tests excluded; GPU tests run here); extra pytest arguments pass through.
# PYTEST_LOG names the log (several calls in one device command must not overwrite each other).
python3 -m pytest -q -p no:cacheprovider "$@" 2>&1 | tee "$OUT/${PYTEST_LOG:-pytest.txt}"
status=${PIPESTATUS[0]}
echo "pytest exit code: $status"
# GPU benchmarks (each writes bench/results/<name>_<gpu>.json); logs and results go to $OUT.
# BENCHES overrides the list, e.g. BENCHES=bench/lm_gpu.py (the language-model comparison,
# ~8 minutes: not in the default list, which must fit one 10-minute device call); where its
# step time goes, Lorentz vs Euclidean: BENCHES=bench/lm_profile.py (~1 minute; add
# "--compile" by running it directly for the whole-loss-compiled variant). The fused
# geometry kernels (issue 5, ~6 minutes): BENCHES="bench/geometry_gpu.py bench/linear_gpu.py
# bench/lorentz_cdist_gpu.py bench/fastmath_gpu.py", then `python bench/gpu_tables.py`.
# LNS and 2:4 sparsity (issue 6, ~2 minutes each): BENCHES="bench/lns_add_gpu.py
# bench/lns_linear_gpu.py bench/sparse_gpu.py". SpecProp on one GPU (issue 8, ~4 minutes):
# BENCHES=bench/specprop_gpu.py; on two GPUs (nvidia-h200-x2) run it directly:
# torchrun --nproc-per-node 2 bench/specprop_gpu.py --two-gpu.
# BENCH_TIMEOUT (seconds, default 600) caps each benchmark so that one slow benchmark cannot
# take the results of the others with it.
for bench in ${BENCHES-bench/bk_gpu.py bench/green_table.py bench/conv_gpu.py}; do
  echo "== $bench" | tee -a "$OUT/bench.txt"
  timeout "${BENCH_TIMEOUT:-600}" python3 $bench 2>&1 | tee -a "$OUT/bench.txt"
done
find bench/results -newer /tmp/run_gpu.start -type f -exec cp {} "$OUT/" \;
exit "$status"
