"""GPU benchmark of BK-Core's causal Green's function: Triton backend vs torch backend.

All on one CUDA device, float32 inputs (complex64 G), one energy per channel:

1. **Headline** (M = 4096 channels x N = 8192): the backend functions themselves
   (``forward(a, k, z)``, ``backward(a, k, z, G, grad_G)``) for ``triton`` and ``torch``, and
   the public ``causal_green`` with autograd (adds input validation: two reductions and a device
   sync). Bytes moved (the minimum for the contract):
     forward  reads a, k (4 B each), writes G (8 B)                              = 16 B/elem
     backward reads k (4 B), G (8 B), grad_G (8 B), writes grad_a, grad_k (4 B each) = 28 B/elem
   (a and z are not read by the backward; grad_z is M values). GB/s = bytes / time, compared
   with the measured copy bandwidth ``torch.empty_like(x).copy_(x)`` of a tensor whose read +
   write equals the kernel's bytes.
2. **Launch-configuration sweep** of the Triton kernels (BLOCK_M, BLOCK_N, num_warps) at the
   headline size: the defaults in ``causal_green_triton._launch_config`` were chosen by
   reasoning, not measurement; this records the data to choose them.
3. **Time vs N at fixed M x N = 2^25** (N = 1K ... 1M, M = 2^25 / N = 32768 ... 32): the
   row-parallel kernel needs rows to fill the GPU, so it slows down as M shrinks; the torch
   backend's chunked scan launches O(sqrt N) ops.
4. **Peers at M = 4096, N = 4096**: the float64 sequential loop (``causal_green_reference``: N
   steps of a few tiny launches each) and a dense inverse (``torch.linalg.inv`` of ONE (N, N)
   complex64 matrix H - z, times M: extrapolated, and it yields only the non-causal diagonal,
   so it is a lower bound for a dense causal peer).

Timing: CUDA events around each call, warm-up calls first, median over ``reps`` calls (>= 20;
fewer only for entries slower than 50 ms per call, recorded as ``reps`` in the JSON). Results:
``bench/results/bk_gpu_<gpu>.json`` and, when matplotlib is installed,
``bench/results/bk_gpu_time_vs_n.png``. The whole run takes about 1-2 minutes on an H200.

Usage:
    python bench/bk_gpu.py            # CUDA: full run
    python bench/bk_gpu.py --quick    # smoke test; on a machine without CUDA it runs the
                                      # kernels under Triton's interpreter and exits 0
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
M_HEAD, N_HEAD = 4096, 8192
FIXED_ELEMS = 2**25
SWEEP_N = [2**p for p in range(10, 21)]  # 1K ... 1M
FWD_BYTES, BWD_BYTES = 16, 28  # per element, see the module docstring
SLOW_CALL_S = 0.05
# (BLOCK_M, BLOCK_N, num_warps) tried at the headline size; the first is the default.
CONFIGS = [(8, 16, 1), (16, 16, 1), (32, 16, 1), (8, 32, 1), (16, 8, 1), (32, 4, 1), (32, 16, 4)]


def git_rev() -> str:
    out = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True,
        check=False,
    )
    return out.stdout.strip() or "unknown"


def inputs(m: int, n: int, device: str, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """a ~ N(0, 1), k in [0, 1), z with Im z in [0.05, 1], grad_G ~ complex normal."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(m, n, generator=g)
    k = torch.rand(m, n, generator=g)
    z = torch.complex(
        torch.rand(m, 1, generator=g) * 2 - 1, 0.05 + 0.95 * torch.rand(m, 1, generator=g)
    )
    gg = torch.complex(torch.randn(m, n, generator=g), torch.randn(m, n, generator=g))
    return tuple(x.to(device) for x in (a, k, z, gg))


def cuda_time(fn: Callable[[], object], reps: int = 20, warmup: int = 2) -> tuple[float, int]:
    """(median seconds per call, calls timed) with CUDA events; fewer reps for slow calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times: list[float] = []
    while len(times) < reps:
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
        if times[0] > SLOW_CALL_S:
            reps = min(reps, 5)
    return statistics.median(times), len(times)


def copy_bandwidth(total_bytes: int) -> float:
    """Bytes/s of a device-to-device copy that reads and writes total_bytes / 2 each."""
    x = torch.empty(total_bytes // 2, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    sec, _ = cuda_time(lambda: y.copy_(x), reps=30, warmup=3)
    return total_bytes / sec


def quick_smoke() -> None:
    """Tiny forward/backward against the torch backend (interpreter on a CPU-only machine)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"  # before the kernels' module is first imported
    from resnetbk.bk import causal_green_triton as tri
    from resnetbk.bk.green import _backward_torch, _forward_torch

    a, k, z, gg = inputs(5, 37, device)
    g = tri.forward(a, k, z)
    err = float((g - _forward_torch(a, k, z)).abs().max() * z.imag.min())
    grads = tri.backward(a, k, z, g, gg)
    want = _backward_torch(a, k, z, g, gg)
    gerr = max(float((x - y).abs().max() / y.abs().max()) for x, y in zip(grads, want, strict=True))
    print(f"quick smoke on {device} (interpreted={tri._INTERPRETED}): forward error * Im z "
          f"{err:.2e}, gradient relative error {gerr:.2e}")
    if not (err < 1e-4 and gerr < 1e-4):
        raise SystemExit("quick smoke: triton and torch backends disagree")


Backends = dict[str, tuple[Callable[..., torch.Tensor], Callable[..., tuple]]]


def bench_headline(backends: Backends) -> dict[str, object]:
    """Backend functions and the public entry point at M = 4096, N = 8192."""
    from resnetbk.bk import causal_green

    m, n = M_HEAD, N_HEAD
    a, k, z, gg = inputs(m, n, "cuda")
    copy_bw = copy_bandwidth(FWD_BYTES * m * n)
    rows: list[dict[str, object]] = []
    for name, (fwd, bwd) in backends.items():
        g = fwd(a, k, z)
        t_f, r_f = cuda_time(lambda fwd=fwd: fwd(a, k, z))
        t_b, r_b = cuda_time(lambda bwd=bwd, g=g: bwd(a, k, z, g, gg))
        for what, sec, reps, nbytes in (
            ("forward", t_f, r_f, FWD_BYTES), ("backward", t_b, r_b, BWD_BYTES),
            ("forward+backward", t_f + t_b, min(r_f, r_b), FWD_BYTES + BWD_BYTES),
        ):
            gbps = nbytes * m * n / sec / 1e9
            rows.append({"backend": name, "what": what, "ms": sec * 1e3, "reps": reps,
                         "GBps": gbps, "pct_of_copy": 100 * gbps * 1e9 / copy_bw})
    # The public entry point with autograd: adds validation (two reductions, a device sync),
    # autograd bookkeeping and the loss's elementwise backward.
    for name in backends:
        xs = [x.clone().requires_grad_() for x in (a, k, z)]

        def step(name: str = name, xs: list[torch.Tensor] = xs) -> None:
            out = causal_green(*xs, backend=name)
            torch.autograd.grad((out * gg.conj()).real.sum(), xs)

        sec, reps = cuda_time(step)
        rows.append({"backend": name, "what": "causal_green fwd+bwd (autograd, validated)",
                     "ms": sec * 1e3, "reps": reps})
    print(f"copy bandwidth {copy_bw / 1e9:.0f} GB/s")
    for row in rows:
        extra = (f"{row['GBps']:7.0f} GB/s {row['pct_of_copy']:5.1f}% of copy"
                 if "GBps" in row else "")
        print(f"{row['backend']:7s} {row['what']:45s} {row['ms']:9.3f} ms {extra}")
    return {"M": m, "N": n, "copy_GBps": copy_bw / 1e9, "rows": rows}


def bench_configs() -> dict[str, object]:
    """The Triton kernels under each launch configuration at the headline size."""
    from resnetbk.bk import causal_green_triton as tri

    m, n = M_HEAD, N_HEAD
    a, k, z, gg = inputs(m, n, "cuda")
    g = tri.forward(a, k, z)
    rows = []
    for bm, bn, warps in CONFIGS:
        cfg = {"block_m": bm, "block_n": bn, "num_warps": warps}
        t_f, _ = cuda_time(lambda cfg=cfg: tri.forward(a, k, z, **cfg))
        t_b, _ = cuda_time(lambda cfg=cfg: tri.backward(a, k, z, g, gg, **cfg))
        rows.append(cfg | {"forward_ms": t_f * 1e3, "backward_ms": t_b * 1e3})
        print(f"config {bm:3d} x {bn:3d}, {warps} warp(s): forward {t_f * 1e3:.3f} ms, "
              f"backward {t_b * 1e3:.3f} ms")
    return {"M": m, "N": n, "rows": rows}


def bench_vs_n(backends: Backends) -> list[dict[str, float]]:
    """Forward and backward time of both backends for N = 1K ... 1M at M x N = 2^25."""
    rows = []
    for n in SWEEP_N:
        m = FIXED_ELEMS // n
        a, k, z, gg = inputs(m, n, "cuda")
        row: dict[str, float] = {"M": m, "N": n}
        for name, (fwd, bwd) in backends.items():
            g = fwd(a, k, z)
            row[f"{name}_forward_ms"] = cuda_time(lambda fwd=fwd, a=a, k=k, z=z: fwd(a, k, z))[0]
            row[f"{name}_backward_ms"] = cuda_time(
                lambda bwd=bwd, a=a, k=k, z=z, g=g, gg=gg: bwd(a, k, z, g, gg)
            )[0]
        for key in [key for key in row if key.endswith("_ms")]:
            row[key] *= 1e3
        rows.append(row)
        print(f"M {m:6d} N {n:8d}: " + ", ".join(
            f"{key} {val:.3f}" for key, val in row.items() if key.endswith("_ms")))
    return rows


def bench_peers() -> dict[str, object]:
    """Triton forward vs the float64 loop and a dense inverse at M = N = 4096."""
    from resnetbk.bk import causal_green_triton as tri
    from resnetbk.bk.green import causal_green_reference

    m = n = 4096
    a, k, z, _ = inputs(m, n, "cuda")
    t_tri, _ = cuda_time(lambda: tri.forward(a, k, z))
    a64, k64, z64 = a.double(), k.double(), z.to(torch.complex128)
    t_loop, r_loop = cuda_time(lambda: causal_green_reference(a64, k64, z64), reps=3, warmup=1)
    off = k[0, :-1].to(torch.complex64)
    h = torch.diag_embed(a[0] - z[0]) + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)
    t_inv1, r_inv = cuda_time(lambda: torch.linalg.inv(h), reps=5, warmup=1)
    print(f"M = N = 4096: triton forward {t_tri * 1e3:.3f} ms, float64 loop "
          f"{t_loop * 1e3:.1f} ms ({t_loop / t_tri:.0f}x), dense inverse x M (extrapolated) "
          f"{t_inv1 * m * 1e3:.0f} ms ({t_inv1 * m / t_tri:.0f}x)")
    return {
        "M": m, "N": n, "triton_forward_ms": t_tri * 1e3,
        "loop_f64_forward_ms": t_loop * 1e3, "loop_reps": r_loop,
        "speedup_vs_loop_f64": t_loop / t_tri,
        "dense_inv_c64_one_matrix_ms": t_inv1 * 1e3, "dense_reps": r_inv,
        "dense_inv_c64_extrapolated_ms": t_inv1 * m * 1e3,
        "dense_note": "one (N, N) inverse timed, multiplied by M; non-causal diagonal only",
        "speedup_vs_dense_extrapolated": t_inv1 * m / t_tri,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke test only")
    args = parser.parse_args()
    if args.quick:
        quick_smoke()
        return
    if not torch.cuda.is_available():
        raise SystemExit("bench/bk_gpu.py needs a CUDA device (use --quick for a CPU smoke test)")

    import triton

    from resnetbk.bk import causal_green_triton as tri
    from resnetbk.bk.green import _backward_torch, _forward_torch

    t_start = time.perf_counter()
    gpu = torch.cuda.get_device_name()
    backends: Backends = {
        "triton": (tri.forward, tri.backward), "torch": (_forward_torch, _backward_torch),
    }
    result: dict[str, object] = {
        "gpu": gpu, "torch": torch.__version__, "triton": triton.__version__,
        "python": sys.version.split()[0], "git": git_rev(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "bytes_per_elem": {"forward": FWD_BYTES, "backward": BWD_BYTES},
        "timing": "CUDA events, 2 warm-up calls, median of 20 (5 when a call exceeds 50 ms)",
        "headline": bench_headline(backends),
        "config_sweep": bench_configs(),
    }
    vs_n = bench_vs_n(backends)
    result["time_vs_n"] = {"fixed": "M x N = 2^25", "rows": vs_n}
    result["peers"] = bench_peers()
    result["wall_s"] = time.perf_counter() - t_start
    RESULTS.mkdir(parents=True, exist_ok=True)
    slug = "".join(c if c.isalnum() else "_" for c in gpu.lower()).strip("_")
    path = RESULTS / f"bk_gpu_{slug}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path} ({result['wall_s']:.0f} s)")
    plot(vs_n, gpu)


def plot(rows: list[dict[str, float]], gpu: str) -> None:
    """Time vs N (log-log) for both backends, if matplotlib is installed."""
    if importlib.util.find_spec("matplotlib") is None:
        print("matplotlib not installed: no plot")
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = [r["N"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for key, style in (("triton_forward_ms", "o-"), ("triton_backward_ms", "o--"),
                       ("torch_forward_ms", "s-"), ("torch_backward_ms", "s--")):
        ax.loglog(ns, [r[key] for r in rows], style, label=key.removesuffix("_ms"))
    ax.set_xlabel("N (positions); M = 2^25 / N rows")
    ax.set_ylabel("time per call (ms)")
    ax.set_title(f"causal_green, float32, M x N = 2^25, {gpu}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    out = RESULTS / "bk_gpu_time_vs_n.png"
    fig.savefig(out, dpi=120, bbox_inches="tight")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
