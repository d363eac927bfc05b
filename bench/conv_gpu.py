"""GPU benchmark of ``causal_conv``: FFT against direct convolution, and against the memory floor.

BKMixer-like shapes on one CUDA device, float32: x of shape (B, C, N) = (8, 256, N), filter h of
shape (C, K) (one filter per channel, broadcast over the batch), both ``method="fft"`` and
``method="direct"`` of ``resnetbk.bk.causal_conv``, forward and forward+backward (gradients
for h and x, as in training):

1. full-length filters K = N, N in {64, 256, 1K, 4K, 16K, 64K}: the crossover N;
2. N = 4096 and K in {4, 16, 64, 256, 1024, 4096}: the crossover K, i.e. the GPU counterpart of
   ``DIRECT_CONV_MAX_TAPS`` (measured on CPU only). ``causal_conv`` accepts h shorter than x
   (the FFT pads both to L >= N + K - 1, conv1d left-pads x by K - 1), so h is passed as
   (C, K), not zero-padded to N;
3. the memory floor: an FFT convolution must at least read x and h and write y, i.e.
   4 B x (2 B C N + C K) forward and 4 B x (5 B C N + 3 C K) forward+backward (also read the
   output gradient and x, h again; write both gradients). Achieved GB/s = floor bytes / time,
   compared with ``torch.empty_like(x).copy_(x)`` timed in the same run (the copy rate the floor
   could at best be moved at). Eager torch runs the convolution as separate kernels with
   full-size intermediates (padded x, its spectrum, the product, the padded output: each
   written and read again), so a fraction of the copy rate is expected. FlashFFTConv (Fu et
   al. 2023, arXiv 2311.05908) reports up to 7.93x over PyTorch's FFT convolution (fp16/bf16,
   fused kernels); it cannot run here, so the gap to the floor is the measured headroom;
4. ``torch.compile`` of the FFT path at N = K = 4096, forward only, against eager in the same
   process: run in a fresh child process that is killed (with its compile workers) after
   ``--compile-limit`` = 60 s, start-up included; one shape only, as each new shape would
   compile again. Inductor has no complex codegen, so the spectra product stays an aten call.

The direct convolution is O(N K): it is skipped once a call is predicted (last timed size
scaled by N K) or probed (one call) to take more than ``--direct-cap`` seconds, and so are all
larger sizes of that sweep (a failing call, e.g. out of memory, is recorded the same way). At
every size where direct runs, the FFT and direct outputs are compared (max difference relative
to max |y|, in the JSON; a warning is printed above 1e-2).

Timing: CUDA events, 3 warm-up calls, median of ``REPS`` = 20 calls (``green_table.time_ms``).
Crossover: the smallest size from which on the FFT is faster at every timed larger size
(``toeplitz_cpu.crossover``). Expected wall time on an H200 (not yet run on a GPU): about
1 minute, under 2: direct calls are capped, the compile child is killed after its limit, the
FFT calls take milliseconds. Writes ``bench/results/conv_gpu_<gpu>.json`` (every row, the
machine, the crossovers, the memory-floor summary, the compile result).

Usage:
    python bench/conv_gpu.py            # CUDA: full run, writes the JSON
    python bench/conv_gpu.py --quick    # small sizes, writes nothing; without CUDA (with or
                                        # without --quick) a CPU smoke run of the timing code
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from green_table import git_rev, time_ms
from toeplitz_cpu import crossover

from resnetbk.bk import causal_conv

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
REPS = 20
PASSES = ("forward", "forward+backward")
FLASHFFTCONV_SPEEDUP = 7.93  # "up to 7.93x over PyTorch" (arXiv 2311.05908, abstract)
DISAGREE = 1e-2  # FFT vs direct, relative to max |y|: above this it is a bug, not rounding


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn: Callable[[], object], device: torch.device, reps: int) -> float:
    """Median seconds per call (3 warm-ups, ``reps`` timed calls, CUDA events on a GPU)."""
    return time_ms(fn, reps, device) / 1e3


def runner(h: torch.Tensor, x: torch.Tensor, method: str, backward: bool) -> Callable[[], None]:
    """One forward (or forward+backward with gradients for h and x) of ``causal_conv``."""
    if not backward:
        return lambda: causal_conv(h, x, method=method)
    hg, xg = h.clone().requires_grad_(), x.clone().requires_grad_()
    grad_y = torch.ones_like(x)

    def run() -> None:
        hg.grad = xg.grad = None
        causal_conv(hg, xg, method=method).backward(grad_y)

    return run


def floor_bytes(shape: tuple[int, int], n: int, k: int, backward: bool) -> int:
    """Minimum bytes of the convolution (see the module docstring), float32."""
    b, c = shape
    return 4 * ((5 * b * c * n + 3 * c * k) if backward else (2 * b * c * n + c * k))


def time_direct(
    fn: Callable[[], object], predicted: float | None, device: torch.device, reps: int, cap: float
) -> tuple[float | None, str | None]:
    """(median seconds or None, why skipped): skip if predicted or one probe call exceeds cap,
    or if the probe call fails."""
    if predicted is not None and predicted > cap:
        return None, f"predicted {predicted:.2f} s > {cap} s"
    sync(device)
    start = time.perf_counter()
    try:
        fn()
        sync(device)
    except RuntimeError as exc:  # e.g. out of memory: record it, keep the other measurements
        return None, f"{type(exc).__name__}: {exc}"[:300]
    probe = time.perf_counter() - start
    if probe > cap:
        return None, f"one call took {probe:.2f} s > {cap} s"
    return seconds(fn, device, reps), None


def sweep(name: str, cases: list[tuple[int, int]], shape: tuple[int, int],
          device: torch.device, reps: int, cap: float) -> list[dict]:
    """FFT and direct, forward and forward+backward, for each (N, K); one row per pass."""
    gen = torch.Generator(device=device).manual_seed(0)
    rows: list[dict] = []
    last: dict[str, tuple[int, float] | None] = dict.fromkeys(PASSES)  # (N K, s) of direct
    stopped = dict.fromkeys(PASSES, False)
    for n, k in cases:
        x = torch.randn(*shape, n, generator=gen, device=device)
        h = torch.randn(shape[1], k, generator=gen, device=device) / k**0.5
        copy_s = seconds(lambda x=x: torch.empty_like(x).copy_(x), device, reps)
        copy_bps = 2 * x.numel() * x.element_size() / copy_s
        err = None
        for backward, pas in enumerate(PASSES):
            fft_s = seconds(runner(h, x, "fft", bool(backward)), device, reps)
            direct_s, note = None, "stopped: a smaller size was skipped"
            if not stopped[pas]:
                prev = last[pas]
                predicted = None if prev is None else prev[1] * n * k / prev[0]
                direct_s, note = time_direct(runner(h, x, "direct", bool(backward)), predicted,
                                             device, reps, cap)
                stopped[pas] = direct_s is None
                last[pas] = None if direct_s is None else (n * k, direct_s)
            if direct_s is not None and err is None:
                y_direct = causal_conv(h, x, method="direct")
                err = float((causal_conv(h, x, method="fft") - y_direct).abs().max()
                            / y_direct.abs().max())
            nbytes = floor_bytes(shape, n, k, bool(backward))
            row = {"sweep": name, "n": n, "k": k, "pass": pas, "fft_s": fft_s,
                   "direct_s": direct_s, "direct_skipped": note if direct_s is None else None,
                   "direct_over_fft": None if direct_s is None else direct_s / fft_s,
                   "floor_bytes": nbytes, "copy_GBps": copy_bps / 1e9,
                   "floor_s_at_copy_rate": nbytes / copy_bps,
                   "fft_GBps": nbytes / fft_s / 1e9,
                   "fft_pct_of_copy": 100 * nbytes / fft_s / copy_bps,
                   "fft_over_floor": fft_s * copy_bps / nbytes,
                   "direct_pct_of_copy":
                       None if direct_s is None else 100 * nbytes / direct_s / copy_bps,
                   "max_rel_diff_fft_vs_direct": err}
            rows.append(row)
            print_row(row)
        if err is not None and not err < DISAGREE:
            print(f"WARNING: fft and direct disagree at N={n}, K={k}: {err:.3g} of max |y|")
    return rows


def print_row(row: dict) -> None:
    direct = "skipped" if row["direct_s"] is None else f"{row['direct_s'] * 1e3:.3f}"
    ratio = "" if row["direct_over_fft"] is None else f"{row['direct_over_fft']:.2f}"
    print(f"{row['sweep']:<6} {row['n']:>6} {row['k']:>6} {row['pass']:<16} "
          f"{row['fft_s'] * 1e3:>10.3f} {direct:>11} {ratio:>8} {row['fft_GBps']:>9.1f} "
          f"{row['fft_pct_of_copy']:>8.1f}% {row['fft_over_floor']:>9.1f}x")


def compiled_fft_child(shape: tuple[int, int], n: int, reps: int) -> None:
    """In the child process: compile the FFT path at K = N, time it and eager; print a JSON row."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gen = torch.Generator(device=device).manual_seed(1)
    x = torch.randn(*shape, n, generator=gen, device=device)
    h = torch.randn(shape[1], n, generator=gen, device=device) / n**0.5
    compiled = torch.compile(lambda h, x: causal_conv(h, x, method="fft"))
    start = time.perf_counter()
    y = compiled(h, x)
    sync(device)
    compile_s = time.perf_counter() - start
    ref = causal_conv(h, x, method="fft")
    eager_s = seconds(lambda: causal_conv(h, x, method="fft"), device, reps)
    compiled_s = seconds(lambda: compiled(h, x), device, reps)
    print(json.dumps({"n": n, "k": n, "pass": "forward", "compile_s": compile_s,
                      "eager_fft_s": eager_s, "compiled_fft_s": compiled_s,
                      "eager_over_compiled": eager_s / compiled_s,
                      "max_rel_diff_vs_eager": float((y - ref).abs().max() / ref.abs().max())}))


def compiled_fft(shape: tuple[int, int], n: int, reps: int, limit_s: float) -> dict:
    """``torch.compile`` of the FFT path in a fresh process (``--compile-child``), killed with
    its compile workers if it takes more than ``limit_s`` (start-up, compile and timing)."""
    cmd = [sys.executable, __file__, "--compile-child", str(n), "--batch", str(shape[0]),
           "--channels", str(shape[1]), "--reps", str(reps)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=limit_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        out, err = "", f"more than {limit_s} s (start-up, compile, timing): killed"
    if proc.returncode != 0 or not out.strip():
        why = (err.strip().splitlines() or ["no output"])[-1][:300]
        print(f"torch.compile fft N=K={n}: {why}")
        return {"n": n, "k": n, "skipped": why}
    row = json.loads(out.strip().splitlines()[-1])
    print(f"torch.compile fft N=K={n}: compile {row['compile_s']:.1f} s, eager "
          f"{row['eager_fft_s'] * 1e3:.3f} ms, compiled {row['compiled_fft_s'] * 1e3:.3f} ms "
          f"(eager / compiled {row['eager_over_compiled']:.2f}x)")
    return row


def gap_summary(rows: list[dict], shape: tuple[int, int]) -> dict:
    """The FFT path against the memory floor for full-length filters, and a verdict in words."""
    full = [r for r in rows if r["sweep"] == "full"]
    summary: dict[str, object] = {
        pas: [{"n": r["n"], "fft_pct_of_copy": r["fft_pct_of_copy"],
               "fft_over_floor": r["fft_over_floor"]} for r in full if r["pass"] == pas]
        for pas in PASSES
    }
    fwd = [r for r in full if r["pass"] == "forward"]
    best = min(fwd, key=lambda r: r["fft_over_floor"])
    worst = max(fwd, key=lambda r: r["fft_over_floor"])
    room = [r["n"] for r in fwd if r["fft_over_floor"] >= FLASHFFTCONV_SPEEDUP]
    summary["statement"] = (
        f"Eager torch FFT causal_conv (float32, x of {shape[0]} x {shape[1]} x N, K = N, "
        f"forward) moves its minimum bytes at {best['fft_pct_of_copy']:.1f}% (N = {best['n']}) "
        f"down to {worst['fft_pct_of_copy']:.1f}% (N = {worst['n']}) of the copy rate measured "
        f"in the same run: a kernel at the memory floor would be {best['fft_over_floor']:.1f}x "
        f"to {worst['fft_over_floor']:.1f}x faster. FlashFFTConv's reported 'up to "
        f"{FLASHFFTCONV_SPEEDUP}x over PyTorch' (fp16/bf16, not run here) fits under this "
        f"float32 headroom at N = {room if room else 'none of the sizes'}."
    )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes; writes nothing")
    parser.add_argument("--direct-cap", type=float, default=0.5,
                        help="skip direct conv once one call would take this long (s)")
    parser.add_argument("--compile-limit", type=float, default=60.0,
                        help="skip torch.compile if start-up, compile and timing take longer (s)")
    parser.add_argument("--compile-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=8, help=argparse.SUPPRESS)
    parser.add_argument("--channels", type=int, default=256, help=argparse.SUPPRESS)
    parser.add_argument("--reps", type=int, default=REPS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.compile_child:
        compiled_fft_child((args.batch, args.channels), args.compile_child, args.reps)
        return
    cuda = torch.cuda.is_available()
    if not cuda:
        print("no CUDA: nothing measured (CPU smoke run of the timing code at small sizes)")
    quick = args.quick or not cuda
    device = torch.device("cuda" if cuda else "cpu")
    shape = (2, 4) if quick else (8, 256)
    full_n = [64, 256] if quick else [4**e for e in range(3, 9)]  # 64 ... 64K
    fixed_n = 256 if quick else 4096
    taps = [4, 16, 256] if quick else [4**e for e in range(1, 7)]  # 4 ... 4096
    reps = 3 if quick else REPS
    start = time.perf_counter()
    meta = {"device": torch.cuda.get_device_name(device) if cuda else "cpu",
            "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if cuda else None,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "python": sys.version.split()[0], "git": git_rev(),
            "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
            "shape": {"x": [*shape, "N"], "h": [shape[1], "K"]}, "dtype": "float32",
            "timing": f"CUDA events, 3 warm-up calls, median of {reps}",
            "direct_cap_s": args.direct_cap,
            "short_filters": "h passed as (C, K); causal_conv pads internally, no zero-padding",
            "floor_bytes": {"forward": "4 B x (2 B C N + C K)",
                            "forward+backward": "4 B x (5 B C N + 3 C K)"}}
    print(f"{meta['device']}, torch {meta['torch']}, x {shape} x N, float32, {reps} reps")
    print(f"{'sweep':<6} {'N':>6} {'K':>6} {'pass':<16} {'fft ms':>10} {'direct ms':>11} "
          f"{'dir/fft':>8} {'fft GB/s':>9} {'% copy':>9} {'vs floor':>10}")
    rows = sweep("full", [(n, n) for n in full_n], shape, device, reps, args.direct_cap)
    rows += sweep("taps", [(fixed_n, k) for k in taps], shape, device, reps, args.direct_cap)
    crossovers = {f"{sweep_name}_{pas}": crossover(
        [r for r in rows if r["sweep"] == sweep_name and r["pass"] == pas], key)
        for sweep_name, key in (("full", "n"), ("taps", "k")) for pas in PASSES}
    print("crossover (FFT faster from here on, None: not within the timed sizes): "
          + ", ".join(f"{name} {value}" for name, value in crossovers.items())
          + f" (full: N with K = N; taps: K at N = {fixed_n})")
    gap = gap_summary(rows, shape)
    print(gap["statement"])
    compiled = None if quick else compiled_fft(shape, 4096, reps, args.compile_limit)
    meta["wall_s"] = time.perf_counter() - start
    print(f"total {meta['wall_s']:.0f} s")
    if quick:
        return
    slug = "".join(c if c.isalnum() else "_" for c in meta["device"].lower()).strip("_")
    path = RESULTS / f"conv_gpu_{slug}.json"
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine": meta, "rows": rows, "crossover": crossovers,
                                "memory_floor": gap, "torch_compile": compiled},
                               indent=2) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
