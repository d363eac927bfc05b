"""CPU benchmark: Toeplitz solves and causal convolution against the peers a user would pick.

1. ``solve_toeplitz`` (batched Levinson, float64) against ``scipy.linalg.solve_toeplitz``
   (compiled Levinson, no batch: a Python loop over the batch), N in {256, 1024, 4096},
   batch 1 and 64. Outputs are compared first (the script stops if they disagree).
2. ``causal_conv``: FFT against direct ``torch.nn.functional.conv1d`` (depthwise), float32,
   x of shape (8, 16, N):
   a. full-length filters K = N, N = 64 .. 65536: the crossover length;
   b. N = 4096 and K = 4 .. 4096 taps: the crossover filter length behind
      ``DIRECT_CONV_MAX_TAPS`` (what ``method="auto"`` uses).
   Direct timings are skipped once one call exceeds ``--direct-cap`` seconds (it is O(N K)).

Timing: ``--threads`` sets torch's thread count (recorded); warm-up, then the median of up to
15 wall-clock runs (``time.perf_counter``), fewer for slow calls. The machine's load average
is recorded before and after: on a loaded machine each parallel torch op of the Levinson loop
can wait for a descheduled thread (measured: 0.6 s with 1 thread vs 3-30 s with 2 threads for
N = 1024, batch 64), so ``--threads 1`` gives the stable numbers there.

Usage:
    python bench/toeplitz_cpu.py            # full run (about 2-3 minutes), writes the JSON
    python bench/toeplitz_cpu.py --quick    # small sizes, smoke test, writes nothing
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy
import scipy.linalg as sl
import torch

from resnetbk.bk import causal_conv, solve_toeplitz

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "toeplitz_cpu.json"


def cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def timeit(fn: Callable[[], object], budget_s: float = 1.0, max_repeats: int = 15) -> float:
    """Median seconds per call: one warm-up, then as many runs as fit in ``budget_s`` (>= 3)."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    repeats = max(3, min(max_repeats, int(budget_s / max(first, 1e-6))))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def levinson_cases(sizes: list[int], batches: list[int], gen: torch.Generator) -> list[dict]:
    rows = []
    for n in sizes:
        for batch in batches:
            c = torch.randn(batch, n, generator=gen, dtype=torch.float64)
            r = torch.randn(batch, n, generator=gen, dtype=torch.float64)
            b = torch.randn(batch, n, generator=gen, dtype=torch.float64)
            c[:, 0] = r[:, 0] = 3 * n**0.5  # well conditioned, every leading block too
            cn, rn, bn = c.numpy(), r.numpy(), b.numpy()

            def scipy_loop(cn: np.ndarray = cn, rn: np.ndarray = rn,
                           bn: np.ndarray = bn) -> np.ndarray:
                return np.stack([sl.solve_toeplitz((ci, ri), bi)
                                 for ci, ri, bi in zip(cn, rn, bn, strict=True)])

            ours = solve_toeplitz(c, r, b).numpy()
            ref = scipy_loop()
            err = float(np.abs(ours - ref).max() / np.abs(ref).max())
            if err > 1e-10:
                raise SystemExit(f"solve_toeplitz disagrees with scipy at N={n}: {err:.3g}")
            t_ours = timeit(lambda c=c, r=r, b=b: solve_toeplitz(c, r, b), budget_s=2.0)
            t_scipy = timeit(scipy_loop, budget_s=2.0)
            rows.append({"n": n, "batch": batch, "ours_s": t_ours, "scipy_s": t_scipy,
                         "ours_over_scipy": t_ours / t_scipy, "max_rel_diff": err})
            print(f"levinson N={n:5d} batch={batch:3d}: ours {t_ours * 1e3:9.2f} ms  "
                  f"scipy {t_scipy * 1e3:9.2f} ms  ours/scipy {t_ours / t_scipy:6.2f}")
    return rows


def conv_case(n: int, k: int, shape: tuple[int, int], gen: torch.Generator,
              direct_cap: float, direct_ok: bool) -> dict:
    x = torch.randn(*shape, n, generator=gen)
    h = torch.randn(shape[1], k, generator=gen) / k**0.5
    t_fft = timeit(lambda: causal_conv(h, x, method="fft"))
    t_direct = None
    if direct_ok:
        y_fft, y_direct = causal_conv(h, x, method="fft"), causal_conv(h, x, method="direct")
        err = float((y_fft - y_direct).abs().max() / y_direct.abs().max())
        if err > 1e-4:
            raise SystemExit(f"causal_conv fft and direct disagree at N={n}, K={k}: {err:.3g}")
        t_direct = timeit(lambda: causal_conv(h, x, method="direct"))
    row = {"n": n, "k": k, "fft_s": t_fft, "direct_s": t_direct,
           "direct_over_fft": None if t_direct is None else t_direct / t_fft}
    direct = "skipped" if t_direct is None else f"{t_direct * 1e3:9.3f} ms"
    ratio = "" if t_direct is None else f"  direct/fft {t_direct / t_fft:7.2f}"
    print(f"conv N={n:6d} K={k:6d}: fft {t_fft * 1e3:9.3f} ms  direct {direct}{ratio}")
    row["direct_too_slow"] = t_direct is not None and t_direct > direct_cap
    return row


def crossover(rows: list[dict], key: str) -> int | None:
    """Smallest ``key`` from which on the FFT is faster at every measured larger size."""
    timed = [r for r in rows if r["direct_s"] is not None]
    for i, row in enumerate(timed):
        if all(r["fft_s"] < r["direct_s"] for r in timed[i:]):
            return row[key]
    return None


def conv_sweeps(quick: bool, gen: torch.Generator, direct_cap: float) -> dict:
    shape = (8, 16)
    full, taps = [], []
    direct_ok = True
    for n in [2**e for e in range(6, 11 if quick else 17)]:
        row = conv_case(n, n, shape, gen, direct_cap, direct_ok)
        direct_ok = direct_ok and not row.pop("direct_too_slow")
        full.append(row)
    n = 512 if quick else 4096
    for k in [2**e for e in range(2, n.bit_length())]:
        row = conv_case(n, k, shape, gen, direct_cap, True)
        row.pop("direct_too_slow")
        taps.append(row)
    return {"shape": [*shape, "N"], "dtype": "float32",
            "full_length": full, "crossover_n_full_length": crossover(full, "n"),
            "fixed_n": n, "taps": taps, "crossover_taps": crossover(taps, "k")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes; writes nothing")
    parser.add_argument("--direct-cap", type=float, default=0.5,
                        help="stop timing direct conv1d once one call takes this long (s)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    meta = {"torch": torch.__version__, "scipy": scipy.__version__, "numpy": np.__version__,
            "threads": torch.get_num_threads(), "cpu": cpu_model(),
            "python": platform.python_version(), "loadavg_before": os.getloadavg()}
    print(f"torch {meta['torch']}, scipy {meta['scipy']}, {meta['threads']} threads, "
          f"{meta['cpu']}, load average {meta['loadavg_before'][0]:.2f}")
    start = time.perf_counter()
    sizes = [64, 256] if args.quick else [256, 1024, 4096]
    levinson = levinson_cases(sizes, [1, 64], gen)
    conv = conv_sweeps(args.quick, gen, args.direct_cap)
    meta["loadavg_after"] = os.getloadavg()
    meta["wall_s"] = time.perf_counter() - start
    print(f"causal_conv crossover: full-length filters from N = {conv['crossover_n_full_length']}"
          f", at N = {conv['fixed_n']} from K = {conv['crossover_taps']} taps "
          f"(FFT faster from there on); total {meta['wall_s']:.0f} s")
    if not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({"meta": meta, "levinson": levinson, "causal_conv": conv},
                                      indent=2) + "\n")
        print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
