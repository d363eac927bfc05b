"""GPU microbenchmark of tanh implementations: calls/s in a compute-bound loop, and max error.

Question: how much faster than libdevice's ``tanhf`` are the MUFU paths of
``resnetbk.kernels.fastmath`` (``tanh.approx.f32``, the seed's ex2.approx + rcp.approx software
tanh, the packed ``tanh.approx.bf16x2`` / ``f16x2`` of sm_90), and what does the accurate
portable tanh (FAST=False) cost? SPEC.md 3.2 records an H200 run: tanh.approx 4.03e12 calls/s
vs libdevice 1.57e12 (2.56x; the seed claims 2.25x), ex2 + rcp 2.00e12 (1.27x; seed 1.27x).

Kernel: each element runs a dependent loop of ``iters`` steps ``y = f(y * a + b)``, with
``a = 0.5`` and ``b`` uniform in [-2.5, 2.5] per element, so the arguments cover [-3, 3]
(both branches of a branching tanh occur inside a warp) and no step can be folded away. One
program per 1024 elements, 4 warps (8 independent chains per thread, enough to hide latency),
2^21 elements x 2048 steps = 4.3e9 calls per launch. The packed variants run the same loop in
bfloat16 / float16 (the multiply-add too); one instruction yields two results, and a "call"
below is one result. ``fma_*`` variants run the loop with f = identity: their time is the loop
overhead, subtracted for the ``net`` columns (f32 variants minus ``fma_f32``, packed ones minus
their own dtype's loop).

Errors: the same kernel with one step, a = 1, b = 0 (y = f(x) exactly) on 2^20 points of
[-10, 10] rounded to the variant's dtype, against float64 torch.tanh of those rounded inputs:
max absolute and max relative error.

Timing: CUDA events, median of 20 launches after 3 warm-up launches (``bench.common.time_ms``).
Results: ``bench/results/fastmath_gpu_<gpu>.json`` (full runs only) and a table on stdout. A
full run takes well under a minute on an H200 (mostly compiling nine kernels).

Usage:
    python bench/fastmath_gpu.py            # CUDA: full run
    python bench/fastmath_gpu.py --quick    # smoke test (small sizes, no result file)
On a machine without CUDA it prints a message and exits 0 (inline PTX and libdevice do not run
under Triton's interpreter).
"""

from __future__ import annotations

import argparse

import torch
import triton
import triton.language as tl
from common import time_ms, write_results
from triton.language.extra import libdevice

from resnetbk.kernels import fastmath

# variant -> (loop dtype, baseline variant subtracted for the net rate)
VARIANTS: dict[str, tuple[torch.dtype, str | None]] = {
    "fma_f32": (torch.float32, None),
    "fma_bf16": (torch.bfloat16, None),
    "fma_f16": (torch.float16, None),
    "libdevice_tanhf": (torch.float32, "fma_f32"),
    "tanh_approx_f32": (torch.float32, "fma_f32"),
    "tanh_ex2_rcp": (torch.float32, "fma_f32"),
    "tanh_portable": (torch.float32, "fma_f32"),
    "tanh_approx_bf16x2": (torch.bfloat16, "fma_bf16"),
    "tanh_approx_f16x2": (torch.float16, "fma_f16"),
}
REFERENCE = "libdevice_tanhf"
SPEC_H200 = {"tanh_approx_f32": 4.03e12, "libdevice_tanhf": 1.57e12, "tanh_ex2_rcp": 2.00e12}
SEED_CLAIMS = {"tanh_approx_f32": 2.25, "tanh_ex2_rcp": 1.27}  # speedups over libdevice
BLOCK, NUM_WARPS = 1024, 4
A, B_RANGE = 0.5, 2.5


# iters is not specialised on: the error pass (iters = 1) reuses the timed kernel's compile.
@triton.jit(do_not_specialize=["iters"])
def _loop_kernel(x_ptr, b_ptr, y_ptr, n, iters, a, FN: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    y = tl.load(x_ptr + offs, mask=mask, other=0.0)
    b = tl.load(b_ptr + offs, mask=mask, other=0.0)
    a = a.to(y.dtype)
    for _ in range(iters):
        v = y * a + b
        if FN == "libdevice_tanhf":
            y = libdevice.tanh(v)
        elif FN == "tanh_approx_f32":
            y = fastmath.tanh(v, True)
        elif FN == "tanh_ex2_rcp":
            y = fastmath.tanh_ex2_rcp(v, True)
        elif FN == "tanh_portable":
            y = fastmath.tanh(v, False)
        elif FN == "tanh_approx_bf16x2":
            y = fastmath.tanh_bf16x2(v)
        elif FN == "tanh_approx_f16x2":
            y = fastmath.tanh_f16x2(v)
        else:  # fma_*: the loop alone
            y = v
    tl.store(y_ptr + offs, y, mask=mask)


def _launch(name: str, x: torch.Tensor, b: torch.Tensor, y: torch.Tensor, iters: int,
            a: float) -> None:
    n = x.numel()
    _loop_kernel[(triton.cdiv(n, BLOCK),)](x, b, y, n, iters, a, FN=name, BLOCK=BLOCK,
                                           num_warps=NUM_WARPS)


def _errors(name: str, points: int) -> dict[str, float]:
    """Max abs / rel error of one call on [-10, 10] against float64, inputs in the loop dtype."""
    dtype = VARIANTS[name][0]
    x = torch.linspace(-10, 10, points, device="cuda").to(dtype)
    y = torch.empty_like(x)
    _launch(name, x, torch.zeros_like(x), y, 1, 1.0)
    ref = torch.tanh(x.double())
    err = (y.double() - ref).abs()
    return {"max_abs_err": err.max().item(),
            "max_rel_err": (err / ref.abs().clamp_min(1e-300)).max().item()}


def run(n: int, iters: int, reps: int, points: int) -> dict[str, dict[str, float]]:
    gen = torch.Generator(device="cuda")
    gen.manual_seed(0)
    rows: dict[str, dict[str, float]] = {}
    for name, (dtype, _) in VARIANTS.items():
        x = (torch.rand(n, device="cuda", generator=gen) * 2 - 1).to(dtype)
        b = ((torch.rand(n, device="cuda", generator=gen) * 2 - 1) * B_RANGE).to(dtype)
        y = torch.empty_like(x)
        ms = time_ms(lambda name=name, x=x, b=b, y=y: _launch(name, x, b, y, iters, A),
                     reps=reps)
        assert torch.isfinite(y).all(), f"{name}: non-finite loop output"
        rows[name] = {"ms": ms, "calls_per_s": n * iters / (ms * 1e-3)}
        if not name.startswith("fma_"):
            rows[name].update(_errors(name, points))
    calls = n * iters
    for name, row in rows.items():
        base = VARIANTS[name][1]
        if base is not None:
            net_ms = row["ms"] - rows[base]["ms"]
            row["net_calls_per_s"] = calls / (net_ms * 1e-3) if net_ms > 0 else float("inf")
    for row in rows.values():
        if "net_calls_per_s" in row:
            row["speedup_vs_libdevice"] = row["calls_per_s"] / rows[REFERENCE]["calls_per_s"]
            row["net_speedup_vs_libdevice"] = (row["net_calls_per_s"]
                                               / rows[REFERENCE]["net_calls_per_s"])
    return rows


def _fmt(row: dict[str, float], key: str, spec: str) -> str:
    return format(row[key], spec) if key in row else "-"


def _table(rows: dict[str, dict[str, float]]) -> str:
    cols = [("ms", ".3f"), ("calls_per_s", ".3e"), ("net_calls_per_s", ".3e"),
            ("speedup_vs_libdevice", ".2f"), ("net_speedup_vs_libdevice", ".2f"),
            ("max_abs_err", ".2e"), ("max_rel_err", ".2e")]
    heads = ["ms", "calls/s", "net calls/s", "x libdev", "net x", "max abs err", "max rel err"]
    lines = [f"{'variant':20s}" + "".join(f"{h:>13s}" for h in heads)]
    lines.append("-" * len(lines[0]))
    for name, row in rows.items():
        lines.append(f"{name:20s}" + "".join(f"{_fmt(row, k, f):>13s}" for k, f in cols))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: small sizes, no file")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("fastmath_gpu: needs a CUDA GPU (inline PTX and libdevice do not run under "
              "Triton's interpreter); nothing measured.")
        return 0
    if args.quick:
        n, iters, reps, points = 2**16, 64, 3, 2**14
    else:
        n, iters, reps, points = 2**21, 2048, 20, 2**20
    rows = run(n, iters, reps, points)
    print(f"{torch.cuda.get_device_name()}: {n} elements x {iters} steps of y = f({A} y + b), "
          f"b in [-{B_RANGE}, {B_RANGE}]; packed variants count one call per result")
    print(_table(rows))
    print(f"SPEC.md (H200): {SPEC_H200}; seed claims (x libdevice): {SEED_CLAIMS}")
    if not args.quick:
        path = write_results("fastmath_gpu", {
            "config": {"elements": n, "iters": iters, "reps": reps, "a": A, "b_range": B_RANGE,
                       "block": BLOCK, "num_warps": NUM_WARPS, "error_points": points,
                       "error_range": [-10, 10]},
            "variants": rows,
            "spec_h200_calls_per_s": SPEC_H200,
            "seed_claimed_speedups": SEED_CLAIMS,
        })
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
