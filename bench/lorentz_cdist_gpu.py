"""GPU benchmark of the fused Lorentz cdist (``resnetbk.kernels.lorentz_cdist``).

x, y: 8192 points each on the hyperboloid of curvature -1 (c = 1), d = 128 (129 coordinates,
time first), float32, radii uniform in [0, 3]; output 8192 x 8192 float32 (256 MiB). Timed
(CUDA events, median of ``bench.common.time_ms`` over samples of ``REPEAT`` back-to-back calls,
divided by ``REPEAT``: the steady-state time per call, in which the host's launch work for one
call overlaps the GPU work of the previous one):

* ``fused <precision>``: ``kernels.lorentz_cdist.forward`` for every precision mode (both
  launches: the operand split and the GEMM + arcosh kernel) with its default (FAST, PTX)
  epilogue and, marked ``portable``, the portable epilogue for two modes (its cost). Also
  ``latency_ms`` (one call timed alone: host work before the launches included) and
  ``kernels_us``, the device time of each of the two kernels (``torch.profiler``), which
  separates host overhead, the split pass and the GEMM + epilogue kernel;
* ``eager``: the reference ``geometry.lorentz.cdist`` under ``backend("torch")`` (one float32
  cuBLAS GEMM, then ~10 full-size elementwise passes of arcosh);
* ``compiled``: ``torch.compile`` of that reference (GEMM + one fused epilogue that reads the
  inner-product matrix back);
* ``cublas <fmt>``: the bare GEMM x_s @ y_s^T of the same shape writing float32 (ieee float32,
  TF32, bfloat16 inputs with float32 output), the speed-of-light for "a GEMM that writes this
  matrix" (TFLOP/s: 2 N M d flops per call).

Floor: the output written once, N M 4 B / copy bandwidth (``bench.common.copy_bandwidth``,
measured in the same run); reported as ``x_floor`` (time / floor) and ``pct_floor`` (floor /
time). Targets (issue): fused within 1.5x of the floor, >= 8x eager, >= 2x compiled.

Accuracy (float64 reference ``lorentz.cdist`` on the same float32 inputs): ``rel_err_random``,
the max relative error over pairs with d >= 1e-2 in the first ``SUB`` rows of the benchmark
matrix (random pairs: d ~ 2..6), and ``rel_err_close``, the max relative error per band of d
for ``CLOSE`` pairs y_i = exp_{x_i}(v_i) with |v_i| log-spaced in [1e-3, 30] at radii up to 3
(the test distribution: close pairs far from the origin, where every float32 GEMM form cancels;
see the kernel's docstring); the ``eager`` row's errors are torch's own float32 cdist's.

``--sweep`` also times a few tile configurations per mode (to set ``_GPU_CONFIGS``).
Expected wall time on an H200: ~40-60 s (mostly Triton and Inductor compiles).

Usage:
    python bench/lorentz_cdist_gpu.py            # CUDA: full run, writes the JSON
    python bench/lorentz_cdist_gpu.py --quick    # 1024 x 1024, no JSON; without CUDA a
                                                 # small run under Triton's interpreter
"""

from __future__ import annotations

import argparse
import math
import os
import time

import torch

if not torch.cuda.is_available():  # the interpreter must be on before triton is imported
    os.environ.setdefault("TRITON_INTERPRET", "1")

from common import copy_bandwidth, time_ms, write_results

from resnetbk.geometry import lorentz
from resnetbk.kernels import backend
from resnetbk.kernels import lorentz_cdist as lc

C = 1.0
MODES = ("ieee", "tf32", "tf32x3", "bf16", "bf16x3")
PORTABLE_MODES = ("tf32x3", "bf16x3")
REPEAT = 10  # calls per timed sample
SUB = 256  # rows of the benchmark matrix checked against float64
CLOSE = 4096  # close pairs of the accuracy check
BANDS = ((1e-3, 1e-2), (1e-2, 1e-1), (1e-1, 1.0), (1.0, 100.0))
SWEEP_MODES = ("tf32x3", "bf16x3", "tf32", "bf16")
SWEEP = [lc.LaunchConfig(*cfg) for cfg in (
    (128, 64, 32, 8, 2), (128, 64, 32, 8, 3), (128, 64, 64, 8, 2), (128, 64, 128, 8, 1),
    (128, 128, 32, 8, 2), (128, 128, 64, 8, 2), (64, 64, 64, 4, 3), (64, 128, 32, 4, 2),
    (256, 64, 32, 8, 2))]


def points(n: int, d: int, max_radius: float, device: str) -> torch.Tensor:
    """float64 points with radii uniform in [0, max_radius], isotropic directions."""
    u = torch.randn(n, d, dtype=torch.float64, device=device)
    u = u / u.norm(dim=-1, keepdim=True)
    r = torch.rand(n, 1, dtype=torch.float64, device=device) * max_radius * math.sqrt(C)
    return torch.cat([torch.cosh(r), torch.sinh(r) * u], -1) / math.sqrt(C)


def close_pairs(n: int, d: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """x_i at radii <= 3 and y_i = exp_{x_i}(v_i), |v_i| log-spaced in [1e-3, 30] (float64)."""
    x = points(n, d, 3.0, device)
    v = torch.randn(n, d + 1, dtype=torch.float64, device=device)
    with backend("torch"):
        v = lorentz.proju(x, v, c=C)
        lengths = torch.logspace(-3, math.log10(30), n, dtype=torch.float64, device=device)
        v = v / lorentz.norm(v, keepdim=True) * lengths.unsqueeze(-1)
        return x, lorentz.expmap(x, v, c=C)


def steady_ms(fn, reps: int, repeat: int) -> float:
    """Milliseconds per call of fn, from samples of ``repeat`` back-to-back calls."""

    def calls() -> None:
        for _ in range(repeat):
            fn()

    return time_ms(calls, reps=reps) / repeat


def kernel_us(fn, calls: int = 5) -> dict[str, float]:
    """Device microseconds per call of each Triton kernel fn launches (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    try:
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(calls):
                fn()
            torch.cuda.synchronize()
    except Exception as exc:  # no CUPTI: report, do not fail the run
        return {"error": f"{type(exc).__name__}: {exc}"[:100]}
    return {e.key: e.self_device_time_total / calls for e in prof.key_averages()
            if "_kernel" in e.key and e.self_device_time_total > 0}


def rel_err(got: torch.Tensor, ref: torch.Tensor, lo: float, hi: float) -> float:
    band = (ref >= lo) & (ref < hi)
    if not bool(band.any()):
        return float("nan")
    return ((got.double() - ref).abs() / ref)[band].max().item()


def reference(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with backend("torch"):
        return lorentz.cdist(x, y, c=C)


def accuracy(fn, x: torch.Tensor, y: torch.Tensor, xc: torch.Tensor, yc: torch.Tensor,
             ref_random: torch.Tensor, ref_close: torch.Tensor) -> dict:
    """Max relative errors of fn on the benchmark rows (d >= 1e-2) and the close pairs."""
    random_err = rel_err(fn(x[:SUB], y), ref_random, 1e-2, math.inf)
    diag = torch.cat([fn(xc[i:i + 512], yc[i:i + 512]).diagonal()
                      for i in range(0, xc.shape[0], 512)])
    return {"rel_err_random": random_err,
            "rel_err_close": {f"[{lo:g},{hi:g})": rel_err(diag, ref_close, lo, hi)
                              for lo, hi in BANDS}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1024 x 1024, no JSON")
    parser.add_argument("--sweep", action="store_true", help="also time tile configurations")
    args = parser.parse_args()
    t_start = time.time()
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    n, d, reps = (8192, 128, 30) if cuda and not args.quick else (1024, 128, 5)
    repeat = REPEAT
    if not cuda:
        n, d, reps, repeat = 96, 16, 1, 1
    x64, y64 = points(n, d, 3.0, device), points(n, d, 3.0, device)
    x, y = x64.float(), y64.float()
    xc64, yc64 = close_pairs(min(CLOSE, n), d, device)
    xc, yc = xc64.float(), yc64.float()
    ref_random = reference(x[:SUB].double(), y.double())
    ref_close = torch.cat([reference(xc[i:i + 512].double(), yc[i:i + 512].double()).diagonal()
                           for i in range(0, xc.shape[0], 512)])
    out_bytes = n * n * 4
    bw = copy_bandwidth() if cuda else float("nan")
    floor_ms = out_bytes / bw * 1e3
    flops = 2.0 * n * n * d
    print(f"{lc.__name__}: {torch.cuda.get_device_name() if cuda else 'CPU (interpreter)'}, "
          f"float32, {n} x {n}, d = {d}; copy bandwidth {bw / 1e9:.0f} GB/s, output-write floor "
          f"{floor_ms:.3f} ms")

    rows: dict[str, dict] = {}

    def record(name: str, fn, check: bool = True) -> None:
        try:
            ms = steady_ms(lambda: fn(x, y), reps, repeat)
            row = {"ms": ms, "x_floor": ms / floor_ms, "pct_floor": 100 * floor_ms / ms,
                   "TFLOPs": flops / (ms * 1e-3) / 1e12}
            if check:
                row.update(accuracy(fn, x, y, xc, yc, ref_random, ref_close))
        except Exception as exc:  # a failing variant is reported, not fatal
            row = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        rows[name] = row

    fused = {f"fused {mode}": lambda a, b, m=mode: lc.forward(a, b, C, m) for mode in MODES}
    if cuda:
        fused.update({f"fused {mode} portable":
                      lambda a, b, m=mode: lc.forward(a, b, C, m, fast=False)
                      for mode in PORTABLE_MODES})
    for name, fn in fused.items():
        record(name, fn)
        if cuda and "ms" in rows[name]:
            rows[name]["latency_ms"] = time_ms(lambda f=fn: f(x, y), reps=reps)
            rows[name]["kernels_us"] = kernel_us(lambda f=fn: f(x, y))
    record("eager", reference)
    if cuda:
        compiled = torch.compile(lambda a, b: lorentz.cdist(a, b, c=C))

        def run_compiled(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            with backend("torch"):
                return compiled(a, b)

        record("compiled", run_compiled, check=False)  # the eager reference's arithmetic
        xs, ys = x[:, 1:].contiguous(), y[:, 1:].contiguous()
        record("cublas ieee", lambda a, b: xs @ ys.T, check=False)
        torch.backends.cuda.matmul.allow_tf32 = True
        record("cublas tf32", lambda a, b: xs @ ys.T, check=False)
        torch.backends.cuda.matmul.allow_tf32 = False
        xb, yb = xs.bfloat16(), ys.bfloat16()
        record("cublas bf16", lambda a, b: torch.mm(xb, yb.T, out_dtype=torch.float32),
               check=False)
    for name, row in rows.items():
        if "ms" in row and name.startswith("fused"):
            for peer in ("eager", "compiled"):
                if "ms" in rows.get(peer, {}):
                    row[f"vs_{peer}"] = rows[peer]["ms"] / row["ms"]

    sweep: list[dict] = []
    if args.sweep and cuda:
        for mode in SWEEP_MODES:
            for cfg in SWEEP:
                try:
                    ms = steady_ms(lambda m=mode, k=cfg: lc.forward(x, y, C, m, config=k), reps,
                                   repeat)
                    sweep.append({"mode": mode, "config": cfg._asdict(), "ms": ms})
                except Exception as exc:
                    sweep.append({"mode": mode, "config": cfg._asdict(),
                                  "error": f"{type(exc).__name__}: {exc}"[:200]})
                last = sweep[-1]
                print(f"sweep {mode:7s} {tuple(cfg)}: {last.get('ms', last.get('error'))}")

    bands = [f"[{lo:g},{hi:g})" for lo, hi in BANDS]
    print(f"\n{'':<24}{'ms':>8}{'x floor':>8}{'TFLOP/s':>9}{'vs eager':>9}{'vs comp':>8}"
          f"{'err d>=.01':>12}" + "".join(f"{b:>14}" for b in bands)
          + f"{'latency ms':>12}  kernels (us)")
    for name, row in rows.items():
        if "ms" not in row:
            print(f"{name:<24}{row.get('error', '-')}")
            continue
        line = (f"{name:<24}{row['ms']:>8.3f}{row['x_floor']:>8.2f}{row['TFLOPs']:>9.1f}"
                f"{row.get('vs_eager', math.nan):>9.1f}{row.get('vs_compiled', math.nan):>8.1f}")
        if "rel_err_random" in row:
            line += f"{row['rel_err_random']:>12.1e}"
            line += "".join(f"{row['rel_err_close'][b]:>14.1e}" for b in bands)
        if "latency_ms" in row:
            line += f"{row['latency_ms']:>12.3f}  " + " ".join(
                f"{k.strip('_').replace('_kernel', '')} {v:.1f}" if isinstance(v, float)
                else f"{k} {v}" for k, v in row["kernels_us"].items())
        print(line)
    print(f"wall time {time.time() - t_start:.0f} s")
    if cuda and not args.quick:
        payload = {"n": n, "m": n, "d": d, "c": C, "dtype": "float32",
                   "copy_bandwidth_GBps": bw / 1e9, "floor_ms": floor_ms, "results": rows,
                   "sweep": sweep,
                   "targets": {"x_floor": 1.5, "vs_eager": 8.0, "vs_compiled": 2.0}}
        print(f"wrote {write_results('lorentz_cdist_gpu', payload)}")


if __name__ == "__main__":
    main()
