"""GPU benchmark of the fused hyperbolic linear layers: Möbius matvec and LorentzLinear.

bfloat16, batch 8192, 4096 -> 4096 (``poincare.mobius_matvec``) and 4096 + 1 -> 4096 (+ 1)
coordinates (``nn.LorentzLinear``, time first), median time of the forward and of
forward+backward (grads of the input, the weight and, for LorentzLinear, the bias) for:

* ``gemm``: a plain ``F.linear`` of the same shape in bfloat16 (cuBLAS, Tensor Cores): the
  ceiling; forward+backward is its three GEMMs;
* ``gemm_f32_out``: the same GEMM writing float32 (``torch.mm(..., out_dtype=float32)``, torch
  >= 2.8), which is what the fused forward runs (forward only);
* ``fused``: ``kernels.poincare_linear.mobius_matvec`` / ``kernels.lorentz_linear.lorentz_linear``
  (cuBLAS GEMM + one Triton row epilogue; analytic backward: Triton row kernel + cuBLAS GEMMs);
  ``fused_bound``: LorentzLinear with ``max_distance`` set;
* ``eager``: the torch reference under ``backend("torch")`` (it upcasts to float32, so its GEMMs
  run in float32);
* ``compiled``: ``torch.compile`` of that reference.

Reported: ms, TFLOP/s (2 B d_in d_out flops forward, 3x that forward+backward) and the time as a
multiple of ``gemm`` (target, issue: fused forward of mobius_matvec within 1.3x). ``max_abs_diff``
is the largest difference of the fused output from the eager reference's, as a sanity check.

Usage: ``python bench/linear_gpu.py`` (CUDA; writes bench/results/linear_gpu_<gpu>.json),
``--quick`` for a small smoke run without JSON.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
import torch.nn.functional as F
from common import time_ms, write_results

from resnetbk.geometry import lorentz, poincare
from resnetbk.kernels import backend
from resnetbk.kernels.lorentz_linear import lorentz_linear
from resnetbk.kernels.poincare_linear import mobius_matvec
from resnetbk.nn import LorentzLinear

C = 1.0
MAX_DISTANCE = 4.0
DTYPE = torch.bfloat16


def runner(fn: Callable[..., torch.Tensor], tensors: list[torch.Tensor], train: bool,
           mode: str) -> Callable[[], torch.Tensor]:
    """One call of fn on copies of ``tensors`` (leaves needing grad when ``train``), under
    the backend ``mode``; with ``train`` a backward with a fixed random output gradient."""
    leaves = [t.detach().clone().requires_grad_(train) for t in tensors]
    grad: torch.Tensor | None = None

    def run() -> torch.Tensor:
        nonlocal grad
        with backend(mode):
            out = fn(*leaves)
            if train:
                if grad is None:
                    grad = torch.randn_like(out)
                out.backward(grad)
                for t in leaves:
                    t.grad = None
        return out

    return run


def ball_points(rows: int, d: int) -> torch.Tensor:
    u = torch.randn(rows, d, device="cuda") * (1.5 / d**0.5)
    with backend("torch"):
        return poincare.expmap0(u, c=C).to(DTYPE)


def hyperboloid_points(rows: int, d: int) -> torch.Tensor:
    u = torch.randn(rows, d + 1, device="cuda") * (1.5 / d**0.5)
    u[:, 0] = 0
    with backend("torch"):
        return lorentz.expmap0(u, c=C).to(DTYPE)


def bench(name: str, peers: dict[str, tuple[Callable[..., torch.Tensor], str, bool]],
          tensors: list[torch.Tensor], flops: float, reps: int) -> dict:
    """Time every peer (fn, backend mode, forward only?) forward and forward+backward."""
    row: dict = {"op": name, "flops_forward": flops}
    outs = {}
    for peer, (fn, mode, fwd_only) in peers.items():
        for train in (False,) if fwd_only else (False, True):
            key = f"{peer}_{'fwd_bwd' if train else 'fwd'}"
            try:
                run = runner(fn, tensors, train, mode)
                if not train:
                    outs[peer] = run().detach()
                # the float32 reference is 10-30x slower: fewer repetitions
                ms = time_ms(run, reps=reps if peer.startswith(("gemm", "fused")) else 5)
            except Exception as exc:  # a failing peer is reported, not fatal
                row[key] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
                continue
            row[key] = {"ms": ms, "TFLOPs": (3 if train else 1) * flops / (ms * 1e-3) / 1e12}
    for key, val in row.items():
        gemm = row.get("gemm_fwd_bwd" if key.endswith("fwd_bwd") else "gemm_fwd", {})
        if isinstance(val, dict) and "ms" in val and "ms" in gemm:
            val["x_gemm"] = val["ms"] / gemm["ms"]
    if "fused" in outs and "eager" in outs:
        row["max_abs_diff"] = (outs["fused"].float() - outs["eager"].float()).abs().max().item()
    return row


def poincare_case(rows: int, d: int, reps: int) -> dict:
    x = ball_points(rows, d)
    m = (torch.randn(d, d, device="cuda") / d**0.5).to(DTYPE)

    def reference(m_: torch.Tensor, x_: torch.Tensor) -> torch.Tensor:
        return poincare.mobius_matvec(m_, x_, c=C)

    peers = {
        "gemm": (lambda m_, x_: F.linear(x_, m_), "torch", False),
        "gemm_f32_out": (lambda m_, x_: torch.mm(x_, m_.t(), out_dtype=torch.float32), "torch",
                         True),
        "fused": (lambda m_, x_: mobius_matvec(m_, x_, C), "torch", False),
        "eager": (reference, "torch", False),
        "compiled": (torch.compile(reference), "torch", False),
    }
    return bench(f"mobius_matvec {rows} x {d} -> {d}", peers, [m, x], 2.0 * rows * d * d, reps)


def lorentz_case(rows: int, d: int, reps: int) -> dict:
    x = hyperboloid_points(rows, d)
    layer = LorentzLinear(d, d, c=C).to("cuda", DTYPE)
    with torch.no_grad():
        layer.bias.normal_()
    w, b = layer.weight.detach(), layer.bias.detach()

    def reference(x_: torch.Tensor, w_: torch.Tensor, b_: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(layer, {"weight": w_, "bias": b_}, (x_,))

    peers = {
        "gemm": (lambda x_, w_, b_: F.linear(x_, w_, b_), "torch", False),
        "fused": (lambda x_, w_, b_: lorentz_linear(x_, w_, b_, C, None), "torch", False),
        "fused_bound": (lambda x_, w_, b_: lorentz_linear(x_, w_, b_, C, MAX_DISTANCE), "torch",
                        False),
        "eager": (reference, "torch", False),
        "compiled": (torch.compile(reference), "torch", False),
    }
    return bench(f"LorentzLinear {rows} x ({d}+1) -> ({d}+1)", peers, [x, w, b],
                 2.0 * rows * (d + 1) * d, reps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="batch 1024, 1024 features, no JSON")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("linear_gpu.py needs a CUDA device")
    rows, d, reps = (1024, 1024, 5) if args.quick else (8192, 4096, 30)
    print(f"{torch.cuda.get_device_name()}, bfloat16, batch {rows}, {d} -> {d}")
    results = [poincare_case(rows, d, reps), lorentz_case(rows, d, reps)]
    header = f"{'':<14}{'fwd ms':>10}{'TFLOP/s':>9}{'x gemm':>8}{'f+b ms':>10}{'TFLOP/s':>9}"
    for row in results:
        print(f"\n{row['op']}  (max |fused - eager| = {row.get('max_abs_diff', float('nan')):.3g})")
        print(header + f"{'x gemm':>8}")
        peers = dict.fromkeys(k.rsplit("_fwd", 1)[0] for k in row if k.endswith("_fwd"))
        for peer in peers:
            line = f"{peer:<14}"
            for kind in ("fwd", "fwd_bwd"):
                val = row.get(f"{peer}_{kind}", {})
                if "ms" in val:
                    line += (f"{val['ms']:>10.3f}{val['TFLOPs']:>9.1f}"
                             f"{val.get('x_gemm', float('nan')):>8.2f}")
                else:
                    line += f"{val.get('error', '-')[:27]:>27}"
            print(line)
    if not args.quick:
        print(f"wrote {write_results('linear_gpu', {'rows': rows, 'd': d, 'results': results})}")


if __name__ == "__main__":
    main()
