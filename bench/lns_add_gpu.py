"""GPU benchmark of LNS addition (four backends) and of LNS Möbius addition (issue 6).

Questions: how fast is an LNS add on an H200 with each way of evaluating the Gaussian
logarithms (exact float64 torch, Triton table gather, CUDA texture with hardware filtering,
MUFU ex2/lg2), as a standalone memory-bound op and inside a compute-bound loop, and what does
Möbius addition in LNS cost and lose against the float fused kernel? (SPEC 3.3: which is
fastest is a measured question; the seed's "several-fold speedup" is a claim to test.)

1. ``add``: ``lns.add`` on 2^26 int16 code pairs of the default format (16 bits, 10
   fractional), random magnitudes over the whole range and random signs. Bytes moved: two int16
   inputs + one int16 output = 6 B per element; percent of the device-to-device copy bandwidth
   (``bench.common.copy_bandwidth``). Timed twice per Triton backend: through ``lns.add``
   (which validates the codes: a reduction and a host sync) and the kernel alone
   (``kernels.lns_add.add``). Also the codes' agreement with the exact backend (max |code
   difference|, fraction off by one).
2. ``loop``: one kernel per variant in which each element performs ``iters`` dependent LNS adds
   in registers, alternately adding and subtracting its partner (so both sb and db run and the
   value stays in range), against the same loop of float32 fma (``acc = acc + s b``, s = +-1):
   adds per second, compute-bound (2^21 elements x 256 steps per launch).
3. ``mobius``: ``kernels.lns_mobius.mobius_add`` (frac_bits 10, each backend) against the float
   fused kernel (``kernels.mobius_add.forward``) on float32 points, 2^20 x 64 and 2^16 x 1024
   (rows x dim), c = 1: time, percent of copy bandwidth (12 B per element), and max errors
   against the float64 reference (eager torch on float64 copies of the same float32 inputs):
   max |out - ref| and max row |out - ref| / (|ref| + 1e-3).

Without CuPy the texture rows record that CuPy is missing instead of a time. Results:
``bench/results/lns_add_gpu_<gpu>.json`` (full runs) and a table on stdout. Meant to finish in
about two minutes on an H200, mostly compiling the kernels.

Usage:
    python bench/lns_add_gpu.py            # CUDA: full run
    python bench/lns_add_gpu.py --quick    # smoke test (small sizes, no result file)
On a machine without CUDA it prints a message and exits 0.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
import triton
import triton.language as tl
from common import copy_bandwidth, time_ms, write_results

import resnetbk.kernels
from resnetbk import lns
from resnetbk.geometry import poincare
from resnetbk.kernels import lns_add, lns_mobius, lut
from resnetbk.kernels import mobius_add as float_mobius
from resnetbk.lns import LNSFormat
from resnetbk.lns.codec import unpack

FMT = LNSFormat(16, 10)
LOOP_BLOCK, LOOP_WARPS = 1024, 4
MOBIUS_SHAPES = [(2**20, 64), (2**16, 1024)]


@triton.jit
def _loop_kernel(a_ptr, b_ptr, af_ptr, bf_ptr, out_ptr, outf_ptr, sb_ptr, t1_ptr, t2_ptr, tex,
                 n, iters, BITS: tl.constexpr, FRAC: tl.constexpr, BACKEND: tl.constexpr,
                 FAST: tl.constexpr, SB_LO: tl.constexpr, SB_STEPS: tl.constexpr,
                 SPLIT: tl.constexpr, T1_LAST: tl.constexpr, FLOAT: tl.constexpr,
                 BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    if FLOAT:
        acc = tl.load(af_ptr + offs, mask=mask, other=0.0)
        b = tl.load(bf_ptr + offs, mask=mask, other=0.0)
        for k in range(iters):
            acc = acc + (1.0 - 2.0 * (k % 2)) * b
        tl.store(outf_ptr + offs, acc, mask=mask)
    else:
        neg, log = lns_add.unpack(tl.load(a_ptr + offs, mask=mask, other=0), BITS)
        neg_b, log_b = lns_add.unpack(tl.load(b_ptr + offs, mask=mask, other=0), BITS)
        for k in range(iters):
            neg, log = lns_add.add_fields(neg, log, neg_b ^ (k % 2 == 1), log_b, sb_ptr, t1_ptr,
                                          t2_ptr, tex, BITS, FRAC, BACKEND, FAST, SB_LO,
                                          SB_STEPS, SPLIT, T1_LAST)
        tl.store(out_ptr + offs, lns_add.pack(neg, log, BITS).to(tl.int16), mask=mask)


def _texture_status() -> str | None:
    """None when the texture backend can run here, else why not."""
    try:
        lut.require_cupy()
    except ValueError as err:
        return str(err)
    return None


def _attempt(variant: str, texture_missing: str | None,
             measure: Callable[[], dict[str, float]]) -> dict:
    """``measure()``; a texture variant records why it did not run instead of ending the whole
    run (CuPy missing, or a failure of the one path that no CPU test can exercise: the texture
    object and its inline-PTX fetch)."""
    if "texture" not in variant:
        return measure()
    if texture_missing:
        return {"skipped": texture_missing}
    try:
        return measure()
    except Exception as err:  # recorded in the results; the other variants still run
        return {"error": f"{type(err).__name__}: {err}"}


def _random_codes(n: int, gen: torch.Generator) -> torch.Tensor:
    log = torch.randint(-FMT.max_log, FMT.max_log + 1, (n,), device="cuda", generator=gen)
    sign = torch.where(torch.rand(n, device="cuda", generator=gen) < 0.5, -1.0, 1.0)
    return lns.encode(sign.double() * torch.exp2(log.double() / FMT.scale))


def bench_add(n: int, reps: int, ceiling: float, texture_missing: str | None,
              gen: torch.Generator) -> dict[str, dict]:
    a, b = _random_codes(n, gen), _random_codes(n, gen)
    nbytes = 6 * n
    exact = lns.add(a, b)

    def measure(backend: str) -> dict[str, float]:
        ms = time_ms(lambda: lns.add(a, b, backend=backend), reps=reps)
        row = {"public_ms": ms, "public_pct_copy": 100 * nbytes / (ms * 1e-3) / ceiling}
        if backend != "exact":
            ms = time_ms(lambda: lns_add.add(a, b, FMT, backend), reps=reps)
            diff = (unpack(lns.add(a, b, backend=backend), FMT)[1] - unpack(exact, FMT)[1]).abs()
            row.update(kernel_ms=ms, kernel_gb_s=nbytes / (ms * 1e-3) / 1e9,
                       kernel_pct_copy=100 * nbytes / (ms * 1e-3) / ceiling,
                       max_code_diff=int(diff.max()),
                       frac_off_by_one=float((diff > 0).double().mean()))
        return row

    return {backend: _attempt(backend, texture_missing, lambda backend=backend: measure(backend))
            for backend in ("exact", "triton", "texture", "mufu")}


def bench_loop(n: int, iters: int, reps: int, texture_missing: str | None,
               gen: torch.Generator) -> dict[str, dict]:
    # partners 0..64 log-ulps below the accumulator's magnitude: sb and db both in their
    # tables' busy region
    a = _random_codes(n, gen)
    _, log_a, _ = unpack(a, FMT)
    gap = torch.randint(0, 8 << FMT.frac_bits, (n,), device="cuda", generator=gen)
    b = lns.encode(torch.exp2((log_a - gap).clamp(-FMT.max_log, FMT.max_log).double()
                              / FMT.scale))
    af, bf = lns.decode(a, dtype=torch.float32), lns.decode(b, dtype=torch.float32)
    out, outf = torch.empty_like(a), torch.empty_like(af)

    def measure(variant: str) -> dict[str, float]:
        backend = "triton" if variant == "float_fma" else variant
        tables, constexprs = lns_add.kernel_args(FMT.frac_bits, backend, a.device)

        def launch() -> None:
            _loop_kernel[(triton.cdiv(n, LOOP_BLOCK),)](
                a, b, af, bf, out, outf, *tables, n, iters, BITS=FMT.bits, **constexprs,
                FAST=variant == "mufu", FLOAT=variant == "float_fma", BLOCK=LOOP_BLOCK,
                num_warps=LOOP_WARPS)

        ms = time_ms(launch, reps=reps, group=1)
        return {"ms": ms, "adds_per_s": n * iters / (ms * 1e-3)}

    rows = {variant: _attempt(variant, texture_missing, lambda variant=variant: measure(variant))
            for variant in ("float_fma", "triton", "texture", "mufu")}
    base = rows["float_fma"]["adds_per_s"]
    for row in rows.values():
        if "adds_per_s" in row:
            row["vs_float_fma"] = row["adds_per_s"] / base
    return rows


def bench_mobius_shape(m: int, d: int, reps: int, ceiling: float,
                       texture_missing: str | None, gen: torch.Generator) -> dict[str, dict]:
    """The float fused kernel and the LNS kernels on m points of dimension d (c = 1): radii
    up to 0.999, y = 0.9 x of the previous row."""
    c = 1.0
    u = torch.randn(m, d, device="cuda", generator=gen)
    r = torch.rand(m, 1, device="cuda", generator=gen) ** 0.25 * 0.999
    x = u / u.norm(dim=-1, keepdim=True) * r
    y = torch.roll(x, 1, 0) * 0.9
    with resnetbk.kernels.backend("torch"):
        ref = poincare.mobius_add(x.double(), y.double(), c=c)
    nbytes = 12 * m * d
    variants = {"float_fused": lambda: float_mobius.forward(x, y, c)}
    for backend in lns_mobius.BACKENDS:
        variants[f"lns_{backend}"] = (lambda backend=backend:
                                      lns_mobius.mobius_add(x, y, c, backend=backend))

    def measure(fn: Callable[[], torch.Tensor]) -> dict[str, float]:
        out = fn()
        err = out.double() - ref
        ms = time_ms(fn, reps=reps)
        return {"ms": ms, "pct_copy": 100 * nbytes / (ms * 1e-3) / ceiling,
                "max_abs_err": float(err.abs().max()),
                "max_row_rel_err": float((err.norm(dim=-1) / (ref.norm(dim=-1) + 1e-3)).max()),
                "finite": bool(out.isfinite().all())}

    rows = {name: _attempt(name, texture_missing, lambda fn=fn: measure(fn))
            for name, fn in variants.items()}
    base = rows["float_fused"]["ms"]
    for row in rows.values():
        if "ms" in row:
            row["time_vs_float_fused"] = row["ms"] / base
    return rows


def _print(results: dict) -> None:
    print(f"copy bandwidth {results['copy_gb_s']:.0f} GB/s")
    for section in ("add", "loop"):
        print(f"-- {section}")
        for name, row in results[section].items():
            print(f"{name:>10}  " + "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else
                                               f"{k}={v}" for k, v in row.items()))
    for shape, shape_rows in results["mobius"].items():
        print(f"-- mobius {shape}")
        for name, row in shape_rows.items():
            print(f"{name:>12}  " + "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else
                                                 f"{k}={v}" for k, v in row.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, no result file")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("lns_add_gpu: no CUDA device; nothing to measure (the texture and MUFU paths "
              "need a GPU)")
        return
    gen = torch.Generator(device="cuda")
    gen.manual_seed(0)
    texture_missing = _texture_status()
    n_add, n_loop, iters, reps = (2**16, 2**12, 8, 3) if args.quick else (2**26, 2**21, 256, 20)
    shapes = [(2**10, 64), (2**6, 1024)] if args.quick else MOBIUS_SHAPES
    ceiling = copy_bandwidth()
    results = {
        "format": {"bits": FMT.bits, "frac_bits": FMT.frac_bits},
        "copy_gb_s": ceiling / 1e9,
        "texture": texture_missing or "available",
        "error_bounds_log_ulps": {b: lns_add.error_bound(b, FMT.frac_bits)
                                  for b in lns_add.BACKENDS},
        "add": bench_add(n_add, reps, ceiling, texture_missing, gen),
        "loop": bench_loop(n_loop, iters, reps, texture_missing, gen),
        "mobius": {f"{m}x{d}": bench_mobius_shape(m, d, reps, ceiling, texture_missing, gen)
                   for m, d in shapes},
        "sizes": {"add_elements": n_add, "loop_elements": n_loop, "loop_iters": iters,
                  "mobius_shapes": [list(s) for s in shapes]},
    }
    _print(results)
    if not args.quick:
        print(f"wrote {write_results('lns_add_gpu', results)}")


if __name__ == "__main__":
    main()
