"""GPU benchmark of BK-Core's causal Green's function: Triton backend vs torch backend.

All on one CUDA device, float32 inputs (complex64 G), one energy per channel. The Triton
backend appears three times: ``triton`` (its dispatcher, ``variant="auto"``: what
``causal_green`` runs), ``triton_row`` (row-parallel kernels forced) and ``triton_chunked``
(chunked, parallel-over-N kernels forced, default chunk length).

1. **Headline** (M = 4096 channels x N = 8192): the backend functions themselves
   (``forward(a, k, z)``, ``backward(a, k, z, G, grad_G)``), and the public ``causal_green``
   with autograd for the registered backends (adds input validation: two reductions and a
   device sync). Ideal bytes (the minimum for the contract; ``GBps``, ``pct_of_copy``):
     forward  reads a, k (4 B each), writes G (8 B)                              = 16 B/elem
     backward reads k (4 B), G (8 B), grad_G (8 B), writes grad_a, grad_k (4 B each) = 28 B/elem
   (a and z are not read by the backward; grad_z is M values). The chunked variant reads its
   inputs twice (pass 1: chunk maps, pass 3: the recurrence), so it moves 24 B (forward) and
   48 B (backward) per element (``*_moved`` keys; the per-chunk maps and boundary values,
   1/L of that, are left out). GB/s = bytes / time, compared with the measured copy bandwidth
   ``torch.empty_like(x).copy_(x)`` of a tensor whose read + write equals 16 B/elem.
   The headline runs twice: row-major inputs ((M, N) contiguous) and time-major ones
   ((1, M, N) views of (1, N, M) tensors: channels adjacent, the layout ``BKMixer`` passes),
   which the kernels read in place with a different thread layout.
2. **Launch-configuration sweeps** at the headline size (time-major: chunked only): the
   row-parallel kernels over (BLOCK_M, BLOCK_N, num_warps); the chunked ones over the chunk
   length (default launch configuration) and over (BLOCK_M, BLOCK_N, num_warps) at the default
   chunk length. The defaults in ``causal_green_triton`` (``_launch_config``, ``CHUNK``) are
   to be set from them.
3. **Time vs N at fixed M x N = 2^25** (N = 1K ... 1M, M = 2^25 / N = 32768 ... 32; the
   dispatcher also on time-major inputs, ``triton_time_major``, in the JSON only): the
   row-parallel kernel needs rows to fill the GPU, so it slows down as M shrinks; the chunked
   one splits N over programs; the dispatcher (``triton``) should follow the faster of the two
   (``CHUNKED_MIN_N``, ``CHUNKED_MAX_M`` are to be set from this); the torch backend's chunked
   scan launches O(sqrt N) ops.
4. **Peers at M = 4096, N = 4096**: the float64 sequential loop (``causal_green_reference``: N
   steps of a few tiny launches each) and a dense inverse (``torch.linalg.inv`` of ONE (N, N)
   complex64 matrix H - z, times M: extrapolated, and it yields only the non-causal diagonal,
   so it is a lower bound for a dense causal peer).

Timing: CUDA events around each call, warm-up calls first, median over ``reps`` calls (>= 20;
fewer only for entries slower than 50 ms per call, recorded as ``reps`` in the JSON). Results:
``bench/results/bk_gpu_<gpu>.json`` and, when matplotlib is installed,
``bench/results/bk_gpu_time_vs_n.png``. The whole run is expected to take about 2-3 minutes
on an H200 (mostly compiling the kernels of each configuration).

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
from functools import partial
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
M_HEAD, N_HEAD = 4096, 8192
FIXED_ELEMS = 2**25
SWEEP_N = [2**p for p in range(10, 21)]  # 1K ... 1M
FIXED_M = 256  # rows of the fixed-M sweep (time linear in N)
FWD_BYTES, BWD_BYTES = 16, 28  # per element, see the module docstring
# Bytes actually moved by the chunked variant (inputs read twice), see the module docstring.
MOVED_BYTES = {"triton_chunked": (24, 48)}
SLOW_CALL_S = 0.05
# (BLOCK_M, BLOCK_N, num_warps) tried at the headline size; the first is the default.
CONFIGS = [(8, 16, 1), (16, 16, 1), (32, 16, 1), (8, 32, 1), (16, 8, 1), (32, 4, 1), (32, 16, 4)]
# Chunked variant: chunk lengths (default launch configuration), then launch configurations at
# the default chunk length (each costs a compile of 4 kernels, hence fewer than above).
CHUNKS = [32, 64, 128, 256, 512]
CHUNKED_CONFIGS = [(8, 16, 1), (16, 16, 1), (8, 32, 1), (32, 16, 4)]
# Time-major inputs: (BLOCK_M, BLOCK_N, num_warps) with the lanes along rows (BLOCK_M a
# multiple of 32 x num_warps), and chunk lengths.
TM_CONFIGS = [(128, 8, 1), (64, 4, 1), (128, 4, 1), (128, 2, 1), (32, 8, 1), (64, 8, 1)]
TM_CHUNKS = [64, 128, 256, 512]


def git_rev() -> str:
    out = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True,
        check=False,
    )
    return out.stdout.strip() or "unknown"


def inputs(m: int, n: int, device: str, seed: int = 0,
           time_major: bool = False) -> tuple[torch.Tensor, ...]:
    """a ~ N(0, 1), k in [0, 1), z with Im z in [0.05, 1], grad_G ~ complex normal: (M, N)
    contiguous and z (M, 1), or time-major (1, M, N) views of (1, N, M) tensors (BKMixer's
    layout) and z (1, M, 1)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(m, n, generator=g)
    k = torch.rand(m, n, generator=g)
    z = torch.complex(
        torch.rand(m, 1, generator=g) * 2 - 1, 0.05 + 0.95 * torch.rand(m, 1, generator=g)
    )
    gg = torch.complex(torch.randn(m, n, generator=g), torch.randn(m, n, generator=g))
    if time_major:
        a, k, gg = (x.t().contiguous().t()[None] for x in (a, k, gg))
        z = z[None]
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
    for opts in ({"variant": "row"}, {"variant": "chunked", "chunk": 16}):
        g = tri.forward(a, k, z, **opts)
        err = float((g - _forward_torch(a, k, z)).abs().max() * z.imag.min())
        grads = tri.backward(a, k, z, g, gg, **opts)
        want = _backward_torch(a, k, z, g, gg)
        gerr = max(float((x - y).abs().max() / y.abs().max())
                   for x, y in zip(grads, want, strict=True))
        print(f"quick smoke {opts} on {device} (interpreted={tri._INTERPRETED}): forward "
              f"error * Im z {err:.2e}, gradient relative error {gerr:.2e}")
        if not (err < 1e-4 and gerr < 1e-4):
            raise SystemExit(f"quick smoke {opts}: triton and torch backends disagree")


Backends = dict[str, tuple[Callable[..., torch.Tensor], Callable[..., tuple]]]


def bench_headline(backends: Backends, time_major: bool = False) -> dict[str, object]:
    """Backend functions and the public entry point at M = 4096, N = 8192 (row-major or
    time-major inputs)."""
    from resnetbk.bk import causal_green
    from resnetbk.bk.green import _BACKENDS

    m, n = M_HEAD, N_HEAD
    a, k, z, gg = inputs(m, n, "cuda", time_major=time_major)
    print(f"{'time-major' if time_major else 'row-major'} inputs")
    copy_bw = copy_bandwidth(FWD_BYTES * m * n)
    rows: list[dict[str, object]] = []
    for name, (fwd, bwd) in backends.items():
        g = fwd(a, k, z)
        t_f, r_f = cuda_time(lambda fwd=fwd: fwd(a, k, z))
        t_b, r_b = cuda_time(lambda bwd=bwd, g=g: bwd(a, k, z, g, gg))
        f_moved, b_moved = MOVED_BYTES.get(name, (FWD_BYTES, BWD_BYTES))
        for what, sec, reps, nbytes, moved in (
            ("forward", t_f, r_f, FWD_BYTES, f_moved), ("backward", t_b, r_b, BWD_BYTES, b_moved),
            ("forward+backward", t_f + t_b, min(r_f, r_b), FWD_BYTES + BWD_BYTES,
             f_moved + b_moved),
        ):
            gbps = nbytes * m * n / sec / 1e9
            gbps_moved = moved * m * n / sec / 1e9
            rows.append({"backend": name, "what": what, "ms": sec * 1e3, "reps": reps,
                         "GBps": gbps, "pct_of_copy": 100 * gbps * 1e9 / copy_bw,
                         "bytes_per_elem_moved": moved, "GBps_moved": gbps_moved,
                         "pct_of_copy_moved": 100 * gbps_moved * 1e9 / copy_bw})
    # The public entry point with autograd: adds validation (two reductions, a device sync),
    # autograd bookkeeping and the loss's elementwise backward.
    for name in [name for name in backends if name in _BACKENDS]:
        xs = [x.clone().requires_grad_() for x in (a, k, z)]

        def step(name: str = name, xs: list[torch.Tensor] = xs) -> None:
            out = causal_green(*xs, backend=name)
            torch.autograd.grad((out * gg.conj()).real.sum(), xs)

        sec, reps = cuda_time(step)
        rows.append({"backend": name, "what": "causal_green fwd+bwd (autograd, validated)",
                     "ms": sec * 1e3, "reps": reps})
    print(f"copy bandwidth {copy_bw / 1e9:.0f} GB/s")
    for row in rows:
        extra = (f"{row['GBps']:7.0f} GB/s {row['pct_of_copy']:5.1f}% of copy (moved: "
                 f"{row['GBps_moved']:5.0f} GB/s {row['pct_of_copy_moved']:5.1f}%)"
                 if "GBps" in row else "")
        print(f"{row['backend']:14s} {row['what']:45s} {row['ms']:9.3f} ms {extra}")
    return {"M": m, "N": n, "time_major": time_major, "copy_GBps": copy_bw / 1e9, "rows": rows}


def bench_configs(variant: str, cfgs: list[dict[str, int]],
                  time_major: bool = False) -> dict[str, object]:
    """The Triton kernels of one variant under each launch option set at the headline size."""
    from resnetbk.bk import causal_green_triton as tri

    m, n = M_HEAD, N_HEAD
    a, k, z, gg = inputs(m, n, "cuda", time_major=time_major)
    g = tri.forward(a, k, z)
    rows = []
    for cfg in cfgs:
        t_f, _ = cuda_time(lambda cfg=cfg: tri.forward(a, k, z, variant=variant, **cfg))
        t_b, _ = cuda_time(lambda cfg=cfg: tri.backward(a, k, z, g, gg, variant=variant, **cfg))
        rows.append(cfg | {"forward_ms": t_f * 1e3, "backward_ms": t_b * 1e3})
        print(f"{variant}{' time-major' if time_major else ''} {cfg}: forward {t_f * 1e3:.3f} ms "
              f"({FWD_BYTES * m * n / t_f / 1e9:.0f} GB/s ideal), backward {t_b * 1e3:.3f} ms "
              f"({BWD_BYTES * m * n / t_b / 1e9:.0f} GB/s ideal)")
    return {"M": m, "N": n, "variant": variant, "time_major": time_major, "rows": rows}


def _launch(bm: int, bn: int, warps: int) -> dict[str, int]:
    return {"block_m": bm, "block_n": bn, "num_warps": warps}


def bench_vs_n(backends: Backends) -> list[dict[str, float]]:
    """Forward and backward time of both backends for N = 1K ... 1M at M x N = 2^25."""
    rows = []
    for n in SWEEP_N:
        m = FIXED_ELEMS // n
        a, k, z, gg = inputs(m, n, "cuda")
        row: dict[str, float] = {"M": m, "N": n}
        runs = [(name, fns, (a, k, z, gg)) for name, fns in backends.items()]
        # The dispatcher on time-major inputs (BKMixer's layout) as well.
        runs.append(("triton_time_major", backends["triton"],
                     inputs(m, n, "cuda", time_major=True)))
        for name, (fwd, bwd), (a, k, z, gg) in runs:
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


def bench_fixed_m(fwd: Callable, bwd: Callable) -> list[dict[str, float]]:
    """Forward and backward time of the dispatcher at M = FIXED_M for N = 1K ... 1M."""
    rows = []
    for n in SWEEP_N:
        a, k, z, gg = inputs(FIXED_M, n, "cuda")
        g = fwd(a, k, z)
        row = {"M": FIXED_M, "N": n,
               "forward_ms": 1e3 * cuda_time(partial(fwd, a, k, z))[0],
               "backward_ms": 1e3 * cuda_time(partial(bwd, a, k, z, g, gg))[0]}
        rows.append(row)
        print(f"M {FIXED_M} N {n:8d}: forward {row['forward_ms']:.3f} ms, "
              f"backward {row['backward_ms']:.3f} ms")
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
        "triton": (tri.forward, tri.backward),
        "triton_row": (partial(tri.forward, variant="row"), partial(tri.backward, variant="row")),
        "triton_chunked": (partial(tri.forward, variant="chunked"),
                           partial(tri.backward, variant="chunked")),
        "torch": (_forward_torch, _backward_torch),
    }
    result: dict[str, object] = {
        "gpu": gpu, "torch": torch.__version__, "triton": triton.__version__,
        "python": sys.version.split()[0], "git": git_rev(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "bytes_per_elem": {"forward": FWD_BYTES, "backward": BWD_BYTES},
        "timing": "CUDA events, 2 warm-up calls, median of 20 (5 when a call exceeds 50 ms)",
        "variants": "triton = dispatcher (variant='auto'), triton_row / triton_chunked forced",
        "dispatcher": {"chunk": tri.CHUNK, "chunked_min_n": tri.CHUNKED_MIN_N,
                       "chunked_max_m": tri.CHUNKED_MAX_M,
                       "chunked_max_m_time_major": tri.CHUNKED_MAX_M_TIME_MAJOR},
        "headline": bench_headline(backends),
        "config_sweep": bench_configs("row", [_launch(*cfg) for cfg in CONFIGS]),
        "chunk_sweep": bench_configs("chunked", [{"chunk": c} for c in CHUNKS]),
        "chunked_config_sweep": bench_configs(
            "chunked", [_launch(*cfg) for cfg in CHUNKED_CONFIGS]),
        "headline_time_major": bench_headline(
            {key: val for key, val in backends.items() if key != "torch"}, time_major=True),
        "time_major_chunk_sweep": bench_configs(
            "chunked", [{"chunk": c} for c in TM_CHUNKS], time_major=True),
        "time_major_chunked_config_sweep": bench_configs(
            "chunked", [_launch(*cfg) for cfg in TM_CONFIGS], time_major=True),
    }
    vs_n = bench_vs_n(backends)
    result["time_vs_n"] = {"fixed": "M x N = 2^25", "rows": vs_n}
    fixed_m = bench_fixed_m(*backends["triton"])
    result["time_vs_n_fixed_m"] = {"fixed": f"M = {FIXED_M}", "rows": fixed_m}
    result["peers"] = bench_peers()
    result["wall_s"] = time.perf_counter() - t_start
    RESULTS.mkdir(parents=True, exist_ok=True)
    slug = "".join(c if c.isalnum() else "_" for c in gpu.lower()).strip("_")
    path = RESULTS / f"bk_gpu_{slug}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path} ({result['wall_s']:.0f} s)")
    plot(vs_n, fixed_m, gpu)


def plot(rows: list[dict[str, float]], fixed_m: list[dict[str, float]], gpu: str) -> None:
    """Time vs N (log-log): at fixed M x N (all variants) and at fixed M (dispatcher)."""
    if importlib.util.find_spec("matplotlib") is None:
        print("matplotlib not installed: no plot")
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = [r["N"] for r in rows]
    fig, (ax, ax_m) = plt.subplots(1, 2, figsize=(13, 4.5))
    for key, style in (("triton_row_forward_ms", "o-"), ("triton_row_backward_ms", "o--"),
                       ("triton_chunked_forward_ms", "^-"),
                       ("triton_chunked_backward_ms", "^--"),
                       ("triton_forward_ms", "kx"), ("triton_backward_ms", "k+"),
                       ("torch_forward_ms", "s-"), ("torch_backward_ms", "s--")):
        label = key.removesuffix("_ms").replace("triton_f", "dispatcher f").replace(
            "triton_b", "dispatcher b")
        ax.loglog(ns, [r[key] for r in rows], style, label=label)
    ax.set_xlabel("N (positions); M = 2^25 / N rows")
    ax.set_ylabel("time per call (ms)")
    ax.set_title(f"causal_green, float32, M x N = 2^25, {gpu}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ns_m = [r["N"] for r in fixed_m]
    for key, style in (("forward_ms", "kx-"), ("backward_ms", "k+--")):
        ax_m.loglog(ns_m, [r[key] for r in fixed_m], style, label=f"dispatcher {key[:-3]}")
    # Linear-in-N guide through the largest N.
    last = fixed_m[-1]["forward_ms"]
    ax_m.loglog(ns_m, [last * n / ns_m[-1] for n in ns_m], ":", color="gray", label="slope 1")
    ax_m.set_xlabel(f"N (positions); M = {FIXED_M} rows")
    ax_m.set_title(f"causal_green, float32, fixed M = {FIXED_M}")
    ax_m.grid(True, which="both", alpha=0.3)
    ax_m.legend()
    out = RESULTS / "bk_gpu_time_vs_n.png"
    fig.savefig(out, dpi=120, bbox_inches="tight")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
