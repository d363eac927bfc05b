"""CPU benchmark of BK-Core's causal Green's function (resnetbk.bk.causal_green).

64 channels x N positions, N in {1K, 8K, 64K}, forward and forward+backward (a real loss
``Re sum G``, gradients for a, k, z), with torch.set_num_threads(1) and with the default
thread count. Peers:

* ``scan f32`` / ``scan f64``: the chunked scan with its adjoint-scan backward (ours);
* ``loop f64``: the float64 sequential loop (``causal_green_reference``; backward by autograd
  through its O(N)-node tape), i.e. what one writes first;
* ``dense c64``: torch.linalg.inv of the full (N, N) complex64 matrix H - z, then its diagonal
  (that is the *non-causal* resolvent_diag; the causal G needs one inverse per leading block, so
  this is a lower bound for a dense causal peer). At N = 1K only, timed on ONE channel and
  multiplied by 64 (a 64-channel run takes minutes); marked ``extrapolated`` in the JSON.
  Its like-for-like peer is ``resolvent_diag f32`` (ours, two causal scans), at the same N.

Each entry is the median of ``reps`` timed calls after one warm-up call (reps shrink for slow
entries so the whole run stays under ~3 minutes). Results: bench/results/bk_cpu.json.

Usage:
    python bench/bk_cpu.py           # full run, writes the JSON
    python bench/bk_cpu.py --quick   # small sizes, no JSON (smoke test)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch

from resnetbk.bk import causal_green, resolvent_diag
from resnetbk.bk.green import causal_green_reference

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "bk_cpu.json"
CHANNELS = 64
SLOW_CALL_S = 0.5  # entries slower than this get a single timed call
LOOP_BACKWARD_MAX_N = 8192


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def git_rev() -> str:
    out = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True,
        check=False,
    )
    return out.stdout.strip() or "unknown"


def inputs(n: int, channels: int, dtype: torch.dtype, g: torch.Generator) -> list[torch.Tensor]:
    """a ~ N(0, 1), k in [0, 1), one z per channel with Im z in [0.05, 1]."""
    cdt = torch.complex64 if dtype == torch.float32 else torch.complex128
    a = torch.randn(channels, n, generator=g, dtype=torch.float64).to(dtype)
    k = torch.rand(channels, n, generator=g, dtype=torch.float64).to(dtype)
    re = torch.rand(channels, 1, generator=g, dtype=torch.float64) * 2 - 1
    im = 0.05 + 0.95 * torch.rand(channels, 1, generator=g, dtype=torch.float64)
    return [a, k, torch.complex(re, im).to(cdt)]


def dense_diag(a: torch.Tensor, k: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """diag((H - z)^{-1}) with off-diagonals b = c = k[:-1], by a dense inverse."""
    off = k[..., :-1].to(z.dtype)
    h = torch.diag_embed(a - z) + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)
    return torch.linalg.inv(h).diagonal(dim1=-2, dim2=-1)


def scan_diag(a: torch.Tensor, k: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The same diagonal by resolvent_diag (two causal scans): the fair peer of dense_diag."""
    return resolvent_diag(a, k[..., :-1], k[..., :-1], z)


def time_call(fn: Callable[[], object], reps: int) -> float:
    fn()  # warm-up (and the first estimate of the cost)
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    if first > SLOW_CALL_S or reps <= 1:
        return first
    times = [first]
    for _ in range(reps - 1):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def fwd_bwd(op: Callable[..., torch.Tensor], xs: list[torch.Tensor]) -> Callable[[], None]:
    def run() -> None:
        leaves = [x.detach().requires_grad_() for x in xs]
        torch.autograd.grad(op(*leaves).real.sum(), leaves)

    return run


def bench(sizes: list[int], dense_sizes: list[int], reps: int) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    rows = []
    default_threads = torch.get_num_threads()
    for threads in sorted({1, default_threads}):
        torch.set_num_threads(threads)
        for n in sizes:
            x32 = inputs(n, CHANNELS, torch.float32, g)
            x64 = inputs(n, CHANNELS, torch.float64, g)
            peers: list[tuple[str, Callable[..., torch.Tensor], list[torch.Tensor], int]] = [
                ("scan f32", causal_green, x32, CHANNELS),
                ("scan f64", causal_green, x64, CHANNELS),
                ("loop f64", causal_green_reference, x64, CHANNELS),
            ]
            if n in dense_sizes:
                peers.append(("resolvent_diag f32", scan_diag, x32, CHANNELS))
                peers.append(("dense c64", dense_diag, [x[:1] for x in x32], 1))
            for name, op, xs, measured in peers:
                fwd = time_call(lambda op=op, xs=xs: op(*xs), reps)
                # Autograd through the loop's 64K-node tape takes ~35 s: measured once in
                # development (docs/BK.md), skipped here to keep the run short.
                skip = name == "loop f64" and n > LOOP_BACKWARD_MAX_N
                both = float("nan") if skip else time_call(fwd_bwd(op, xs), reps)
                scale = CHANNELS / measured
                rows.append({
                    "peer": name, "n": n, "channels": CHANNELS, "threads": threads,
                    "forward_s": fwd * scale,
                    "forward_backward_s": None if skip else both * scale,
                    "extrapolated_from_channels": measured if measured != CHANNELS else None,
                })
                print(f"  threads={threads} n={n:>6} {name:<18} fwd {fwd * scale * 1e3:10.1f} ms"
                      f"  fwd+bwd {both * scale * 1e3:10.1f} ms", flush=True)  # nan: skipped
    torch.set_num_threads(default_threads)
    return rows


def ms(seconds: float | None) -> str:
    return "skipped" if seconds is None else f"{seconds * 1e3:.1f}"


def table(rows: list[dict]) -> str:
    lines = ["| threads | N | peer | forward (ms) | fwd+bwd (ms) | fwd vs scan f32 |",
             "|---|---|---|---|---|---|"]
    base = {(r["threads"], r["n"]): r["forward_s"] for r in rows if r["peer"] == "scan f32"}
    for r in rows:
        note = " (x64 from 1 ch)" if r["extrapolated_from_channels"] else ""
        ratio = r["forward_s"] / base[(r["threads"], r["n"])]
        lines.append(
            f"| {r['threads']} | {r['n']} | {r['peer']}{note} | {r['forward_s'] * 1e3:.1f} | "
            f"{ms(r['forward_backward_s'])} | {ratio:.1f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, no JSON")
    args = parser.parse_args()
    sizes = [256, 1024] if args.quick else [1024, 8192, 65536]
    dense_sizes = [256] if args.quick else [1024]
    start = time.perf_counter()
    load0 = os.getloadavg()
    rows = bench(sizes, dense_sizes, reps=5)
    print(table(rows))
    if args.quick:
        return
    report = {
        "machine": {
            "git": git_rev(), "cpu": cpu_model(), "cores": os.cpu_count(),
            "default_torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "loadavg_start": load0, "loadavg_end": os.getloadavg(),
        },
        "config": {
            "channels": CHANNELS, "sizes": sizes, "dense_sizes": dense_sizes,
            "timing": "median of up to 5 calls after a warm-up; a single call when slower than "
                      f"{SLOW_CALL_S} s; dense timed on 1 channel and scaled by 64",
            "loss": "Re sum G; gradients for a, k, z",
            "total_run_s": time.perf_counter() - start,
        },
        "results": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
