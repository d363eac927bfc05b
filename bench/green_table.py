"""Benchmark of GreenTable lookups: is a LUT of the H^3 heat kernel faster than computing it?

2^24 float32 distances, uniform on [0, d_max] (random table indices), heat kernel of H^3 at
t = 1 (d_max = 10.5). Peers, each timed on the same input:

* ``lut triton``: ``GreenTable(d, backend="triton")``, tables of 1024 and 65536 entries (4 KB
  fits in L1; 256 KB does not), and forward+backward (analytic segment-slope backward);
* ``analytic triton``: ``heat3_triton``, the closed form computed inside a Triton kernel (two
  ``exp``, one division per element): "look up vs compute in the same kernel";
* ``torch gather``: ``GreenTable(d, backend="torch")`` (eager: about 10 elementwise kernels),
  and its forward+backward through torch autograd;
* ``torch exact``: the float32 closed form in eager torch (``heat_kernel(1.0)``), and the same
  function under ``torch.compile`` (what a user would write instead of a table);
* ``copy``: ``d.clone()`` of the same bytes, the memory-bandwidth ceiling.

A forward reads 4 B and writes 4 B per element (the table stays in cache), the same bytes as
the copy; fwd+bwd moves 8 + 12 B (backward reads d and the incoming gradient, writes the
gradient). Reported per entry: median time (CUDA events, warm-up, ``reps`` runs), ns/element,
effective GB/s (bytes above / time), percent of the copy's bandwidth, and max abs / max
relative (where K > 1e-30) error against the float64 closed form on the first 2^20 elements.

Usage (the GPU run writes bench/results/green_table_<device>.json):
    python bench/green_table.py            # CUDA: full run
    python bench/green_table.py --quick    # small size, no JSON; on a CPU-only machine a
                                           # smoke test (Triton peers with TRITON_INTERPRET=1)
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch

from resnetbk.bk import GreenTable
from resnetbk.bk import green_table as gt

ROOT = Path(__file__).resolve().parent.parent
T = 1.0
ERR_ELEMS = 2**20


def git_rev() -> str:
    out = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True,
        check=False,
    )
    return out.stdout.strip() or "unknown"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def time_ms(fn: Callable[[], object], reps: int, device: torch.device) -> float:
    """Median milliseconds of ``reps`` calls after 3 warm-up calls (CUDA events on a GPU)."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def fwd_bwd(op: Callable[[torch.Tensor], torch.Tensor], d: torch.Tensor) -> Callable[[], None]:
    x = d.clone().requires_grad_()
    grad = torch.ones_like(d)

    def run() -> None:
        x.grad = None
        op(x).backward(grad)

    return run


def peers(d: torch.Tensor, use_triton: bool, use_compile: bool) -> list[dict]:
    """(name, table size, bytes per element, forward fn, fwd+bwd?) of each peer."""
    tabs = {size: GreenTable.heat(T, size=size) for size in (1024, 65536)}
    exact32 = gt.heat_kernel(T)
    rows: list[dict] = []
    if use_triton:
        for size, tab in tabs.items():
            rows.append({"name": "lut triton", "table": size, "bytes": 8,
                         "fn": lambda tab=tab: tab(d, backend="triton")})
        rows.append({"name": "lut triton fwd+bwd", "table": 1024, "bytes": 20,
                     "run": fwd_bwd(lambda x: tabs[1024](x, backend="triton"), d)})
        rows.append({"name": "analytic triton", "table": None, "bytes": 8,
                     "fn": lambda: gt.heat3_triton(d, T)})
    for size, tab in tabs.items():
        rows.append({"name": "torch gather", "table": size, "bytes": 8,
                     "fn": lambda tab=tab: tab(d, backend="torch")})
    rows.append({"name": "torch gather fwd+bwd", "table": 1024, "bytes": 20,
                 "run": fwd_bwd(lambda x: tabs[1024](x, backend="torch"), d)})
    rows.append({"name": "torch exact", "table": None, "bytes": 8, "fn": lambda: exact32(d)})
    if use_compile:
        compiled = torch.compile(exact32)
        rows.append({"name": "torch.compile exact", "table": None, "bytes": 8,
                     "fn": lambda: compiled(d)})
    return rows


def errors(out: torch.Tensor, d: torch.Tensor) -> tuple[float, float]:
    """Max abs and max relative (where K > 1e-30: float32 underflows below) error vs float64."""
    ref = gt.heat_kernel(T)(d[:ERR_ELEMS].double())
    err = (out[:ERR_ELEMS].double() - ref).abs()
    keep = ref > 1e-30
    return err.max().item(), (err[keep] / ref[keep]).max().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2^16 (CPU: 2^13) elements, no JSON")
    parser.add_argument("--log2n", type=int, default=24)
    parser.add_argument("--reps", type=int, default=50)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and not args.quick:
        parser.error("no CUDA device: only the --quick smoke test runs on a CPU")
    n = 2**args.log2n if not args.quick else 2**16 if device.type == "cuda" else 2**13
    reps = 5 if args.quick else args.reps
    # on a CPU, the Triton peers run (slowly) only under TRITON_INTERPRET=1: a smoke test
    use_triton = gt.triton is not None and (device.type == "cuda" or gt._INTERPRETED)
    g = torch.Generator().manual_seed(0)
    d_max = GreenTable.heat(T).d_max
    d = (d_max * torch.rand(n, generator=g)).to(device)

    copy_ms = time_ms(d.clone, reps, device)
    copy_gbs = 8 * n / copy_ms / 1e6
    results = []
    for row in peers(d, use_triton, use_compile=use_triton and not args.quick):
        run = row.get("run") or row["fn"]
        ms = time_ms(run, reps, device)
        entry = {
            "name": row["name"], "table_size": row["table"], "ms": ms,
            "ns_per_elem": ms * 1e6 / n, "GBps": row["bytes"] * n / ms / 1e6,
            "pct_copy_bandwidth": 100 * (row["bytes"] * n / ms / 1e6) / copy_gbs,
        }
        if "fn" in row:
            entry["max_abs_err"], entry["max_rel_err"] = errors(row["fn"](), d)
        results.append(entry)

    print(f"{device_name(device)}: n = {n}, copy {copy_ms:.4f} ms = {copy_gbs:.1f} GB/s")
    head = ("peer", "table", "ms", "ns/el", "GB/s", "%copy", "max abs", "max rel")
    print("{:24} {:>6} {:>9} {:>8} {:>8} {:>6} {:>9} {:>9}".format(*head))
    for e in results:
        errs = (
            f"{e['max_abs_err']:9.2e} {e['max_rel_err']:9.2e}" if "max_abs_err" in e else ""
        )
        print(f"{e['name']:24} {e['table_size'] or '-':>6} {e['ms']:9.4f} {e['ns_per_elem']:8.4f}"
              f" {e['GBps']:8.1f} {e['pct_copy_bandwidth']:6.1f} {errs}")
    if args.quick:
        return
    report = {
        "machine": {"device": device_name(device), "torch": torch.__version__,
                    "triton": gt.triton.__version__ if gt.triton else None, "git": git_rev()},
        "config": {"n": n, "dtype": "float32", "kernel": f"heat H^3 t={T}", "d_max": d_max,
                   "reps": reps, "distances": "uniform on [0, d_max]"},
        "copy": {"ms": copy_ms, "GBps": copy_gbs},
        "results": results,
    }
    tag = device_name(device).lower().replace(" ", "_")
    path = ROOT / "bench" / "results" / f"green_table_{tag}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
