"""Launch-configuration sweep of the row-wise geometry kernels (mobius_add, expmap0, logmap0).

For each kernel (forward, backward), point dimension d and dtype at 2^26 elements, times every
(elements per program, warps) pair and reports the best, as percent of the copy bandwidth
measured in the same run. The chosen table goes into ``kernels/rowwise.py`` (``TUNED``);
results: bench/results/rowwise_tune_<gpu>.json.
"""

from __future__ import annotations

import argparse
import itertools

import torch
import triton
from common import copy_bandwidth, time_ms, write_results

from resnetbk.kernels import mobius_add as mk
from resnetbk.kernels import poincare_radial as rk

TILES = (1024, 2048, 4096, 8192)
WARPS = (2, 4, 8)


def config(tile: int, warps: int):
    def launch(kernel: str, t: torch.Tensor) -> tuple[tuple[int], int, int, int]:
        m, d = t.numel() // t.shape[-1], t.shape[-1]
        bd = triton.next_power_of_2(d)
        bm = max(1, min(tile // bd, triton.next_power_of_2(m)))
        return (triton.cdiv(m, bm),), bm, bd, warps
    return launch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--log2n", type=int, default=26)
    args = parser.parse_args()
    n = 2**args.log2n
    copy_bps = copy_bandwidth(2 * n * 4)
    rows = []
    for d, dtype in itertools.product((64, 256), (torch.float32, torch.bfloat16)):
        m = n // d
        x = (torch.rand(m, d, device="cuda") * 0.5 / d**0.5).to(dtype)
        y = (torch.rand(m, d, device="cuda") * 0.5 / d**0.5).to(dtype)
        g = torch.randn(m, d, device="cuda").to(dtype)
        size = x.element_size() * n
        kernels = {
            "mobius_add fwd": (lambda x=x, y=y: mk.forward(x, y, 1.0), 3 * size),
            "mobius_add bwd": (lambda x=x, y=y, g=g: mk.backward(x, y, g, 1.0), 5 * size),
            "expmap0 fwd": (lambda x=x: rk.radial("expmap0", x, 1.0), 2 * size),
            "expmap0 bwd": (lambda x=x, g=g: rk.radial("expmap0", x, 1.0, grad=g), 3 * size),
            "logmap0 fwd": (lambda x=x: rk.radial("logmap0", x, 1.0), 2 * size),
            "logmap0 bwd": (lambda x=x, g=g: rk.radial("logmap0", x, 1.0, grad=g), 3 * size),
        }
        for name, (fn, nbytes) in kernels.items():
            timings = {}
            for tile, warps in itertools.product(TILES, WARPS):
                mk.launch_config = rk.launch_config = config(tile, warps)
                timings[(tile, warps)] = time_ms(fn, reps=15)
            best = min(timings, key=timings.get)
            pct = {f"{t}x{w}": round(100 * nbytes / (ms * 1e-3) / copy_bps, 1)
                   for (t, w), ms in timings.items()}
            row = {"kernel": name, "d": d, "dtype": str(dtype).removeprefix("torch."),
                   "best_tile": best[0], "best_warps": best[1],
                   "best_pct_copy": pct[f"{best[0]}x{best[1]}"], "pct_copy": pct}
            rows.append(row)
            print(f"{name:<16}{d:>5} {row['dtype']:<9} best {best[0]:>5} x {best[1]} warps: "
                  f"{row['best_pct_copy']:5.1f}% of copy   " + " ".join(
                      f"{k}:{v}" for k, v in pct.items()), flush=True)
    write_results("rowwise_tune", {"elements": n, "copy_GBps": copy_bps / 1e9, "rows": rows})


if __name__ == "__main__":
    main()
