"""GPU benchmark of the geometry ops: fused path vs eager reference vs torch.compile vs geoopt.

For each op, dtype and point dimension d at 2^26 elements (``--log2n``), the median time of the
forward and of forward+backward for:

* ``fused``: the public ``resnetbk.geometry`` function under ``backend("triton")``, i.e. what
  a user gets (``kernels/dispatch.py``: for mobius_add / expmap0 / logmap0 / project the
  hand-written row kernel without autograd and ``torch.compile`` of the reference with it;
  the compiled reference for the others);
* ``kernel``: the hand-written row kernel's custom op called directly (forward and
  forward+backward through its analytic backward), for the four ops that have one;
* ``eager``: the same function under ``backend("torch")`` (the reference in eager PyTorch);
* ``compiled``: ``torch.compile`` of the eager reference (what a user could do themselves);
* ``geoopt``: geoopt 0.5.1's ``PoincareBall`` (Poincaré ops only; it computes in the input
  dtype, so it is timed in float32 only);

with bytes counted as the tensors the op must read and write once (forward: inputs + output;
backward additionally the incoming gradient and the input gradients), effective GB/s, and
percent of the device-to-device copy bandwidth measured in the same run. Targets (issue 5):
mobius_add, expmap0, logmap0 >= 85% of copy forward and forward+backward, >= 10x geoopt, no
slower than torch.compile.

Usage: ``python bench/geometry_gpu.py`` (CUDA; writes bench/results/geometry_gpu_<gpu>.json),
``--quick`` for a small smoke run without JSON.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from common import copy_bandwidth, time_ms, write_results

from resnetbk.geometry import lorentz, poincare
from resnetbk.kernels import dispatch

C = 1.0


def ball(n: int, d: int, dtype: torch.dtype) -> torch.Tensor:
    u = torch.randn(n, d, device="cuda")
    return poincare.expmap0(u * (0.5 / d**0.5), c=C).to(dtype)


def hyperboloid(n: int, d: int, dtype: torch.dtype) -> torch.Tensor:
    u = torch.randn(n, d + 1, device="cuda") * (0.5 / d**0.5)
    u[:, 0] = 0
    return lorentz.expmap0(u, c=C).to(dtype)


def tangent(n: int, d: int, dtype: torch.dtype) -> torch.Tensor:
    return (torch.randn(n, d, device="cuda") * (0.5 / d**0.5)).to(dtype)


def lorentz_tangent(n: int, d: int, dtype: torch.dtype) -> torch.Tensor:
    u = torch.randn(n, d + 1, device="cuda") * (0.5 / d**0.5)
    u[:, 0] = 0
    return u.to(dtype)


# op -> (function of the inputs, input makers, geoopt method name or None, scalar output?)
OPS: dict[str, tuple[Callable[..., torch.Tensor], tuple, str | None, bool]] = {
    "poincare.mobius_add": (lambda x, y: poincare.mobius_add(x, y, c=C), (ball, ball),
                            "mobius_add", False),
    "poincare.expmap0": (lambda u: poincare.expmap0(u, c=C), (tangent,), "expmap0", False),
    "poincare.logmap0": (lambda y: poincare.logmap0(y, c=C), (ball,), "logmap0", False),
    "poincare.project": (lambda x: poincare.project(x, c=C), (ball,), "projx", False),
    "poincare.expmap": (lambda x, u: poincare.expmap(x, u, c=C), (ball, tangent), "expmap",
                        False),
    "poincare.logmap": (lambda x, y: poincare.logmap(x, y, c=C), (ball, ball), "logmap", False),
    "poincare.dist": (lambda x, y: poincare.dist(x, y, c=C), (ball, ball), "dist", True),
    "lorentz.expmap0": (lambda u: lorentz.expmap0(u, c=C), (lorentz_tangent,), None, False),
    "lorentz.logmap0": (lambda y: lorentz.logmap0(y, c=C), (hyperboloid,), None, False),
    "lorentz.dist": (lambda x, y: lorentz.dist(x, y, c=C), (hyperboloid, hyperboloid), None,
                     True),
}
TARGETS = ("poincare.mobius_add", "poincare.expmap0", "poincare.logmap0")


def row_kernel(name: str) -> Callable[..., torch.Tensor] | None:
    """The custom op of the hand-written row kernel of ``name``, if it has one."""
    from resnetbk.kernels import mobius_add, poincare_radial

    ops = {"poincare.mobius_add": lambda x, y: mobius_add.mobius_add(x, y, C),
           "poincare.expmap0": lambda u: poincare_radial.expmap0(u, C),
           "poincare.logmap0": lambda y: poincare_radial.logmap0(y, C),
           "poincare.project": lambda x: poincare_radial.project(x, C)}
    return ops.get(name)


def traffic(inputs: list[torch.Tensor], scalar_out: bool) -> tuple[int, int]:
    """(forward bytes, forward+backward bytes) if every tensor moves through memory once."""
    size = inputs[0].element_size()
    elems = inputs[0].numel()
    out = inputs[0].shape[0] * size if scalar_out else elems * size
    ins = len(inputs) * elems * size
    return ins + out, 2 * ins + 2 * out + ins  # bwd: inputs, grad out, grads of the inputs


def geoopt_fn(method: str) -> Callable[..., torch.Tensor] | None:
    try:
        import geoopt
    except ImportError:
        return None
    ball_ = geoopt.PoincareBall(c=C)
    return getattr(ball_, method)


def runner(fn: Callable[..., torch.Tensor], inputs: list[torch.Tensor], train: bool,
           mode: str) -> Callable[[], None]:
    leaves = [t.detach().clone().requires_grad_(train) for t in inputs]
    grad = None

    def run() -> None:
        nonlocal grad
        with dispatch.backend(mode):
            out = fn(*leaves)
            if train:
                if grad is None:
                    grad = torch.randn_like(out)
                out.backward(grad)
                for t in leaves:
                    t.grad = None

    return run


def bench_op(name: str, d: int, dtype: torch.dtype, n_elems: int, copy_bps: float,
             with_compile: bool) -> dict:
    fn, makers, geo, scalar = OPS[name]
    rows = n_elems // d
    inputs = [make(rows, d, dtype) for make in makers]
    fwd_bytes, train_bytes = traffic(inputs, scalar)
    row: dict = {"op": name, "d": d, "dtype": str(dtype).removeprefix("torch."), "rows": rows}
    peers: dict[str, tuple[Callable[..., torch.Tensor], str]] = {
        "fused": (fn, "triton"), "eager": (fn, "torch")}
    kernel = row_kernel(name)
    if kernel is not None:
        peers["kernel"] = (kernel, "triton")
    if with_compile:
        peers["compiled"] = (torch.compile(fn), "torch")
    g = geoopt_fn(geo) if geo and dtype == torch.float32 else None
    if g is not None:
        peers["geoopt"] = (g, "torch")
    for peer, (f, mode) in peers.items():
        for train, nbytes in ((False, fwd_bytes), (True, train_bytes)):
            key = f"{peer}_{'fwd_bwd' if train else 'fwd'}"
            try:
                ms = time_ms(runner(f, inputs, train, mode), reps=10)
            except Exception as exc:  # a failing peer is reported, not fatal
                row[key] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
                continue
            bps = nbytes / (ms * 1e-3)
            row[key] = {"ms": ms, "GBps": bps / 1e9, "pct_copy": 100 * bps / copy_bps}
    for kind in ("fwd", "fwd_bwd"):
        fused = row.get(f"fused_{kind}", {}).get("ms")
        for peer in ("kernel", "eager", "compiled", "geoopt"):
            other = row.get(f"{peer}_{kind}", {}).get("ms")
            if fused and other:
                row[f"speedup_vs_{peer}_{kind}"] = other / fused
    return row


def cell(row: dict, key: str, field: str | None = None) -> str:
    v = row.get(key)
    if isinstance(v, dict):
        v = v.get(field) if field else None
    return f"{v:17.1f}" if isinstance(v, float) else f"{'-':>17}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2^20 elements, no JSON")
    parser.add_argument("--log2n", type=int, default=26)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("geometry_gpu.py needs a CUDA device")
    n = 2**20 if args.quick else 2**args.log2n
    copy_bps = copy_bandwidth(2 * n * 4)
    print(f"{torch.cuda.get_device_name()}: copy {copy_bps / 1e9:.0f} GB/s")
    results = []
    configs = [(op, d, dt) for op in TARGETS
               for d, dt in ((64, torch.float32), (256, torch.float32), (128, torch.bfloat16))]
    configs += [(op, 128, torch.float32) for op in OPS if op not in TARGETS]
    print(f"{'op':<22}{'d':>5} {'dtype':<9}" + "".join(
        f"{k:>17}" for k in ("fused fwd %copy", "fused f+b %copy", "x eager f+b",
                             "x compile f+b", "x geoopt f+b")))
    for op, d, dt in configs:
        row = bench_op(op, d, dt, n, copy_bps, with_compile=True)
        results.append(row)
        print(f"{op:<22}{d:>5} {row['dtype']:<9}" + cell(row, "fused_fwd", "pct_copy")
              + cell(row, "fused_fwd_bwd", "pct_copy") + cell(row, "speedup_vs_eager_fwd_bwd")
              + cell(row, "speedup_vs_compiled_fwd_bwd")
              + cell(row, "speedup_vs_geoopt_fwd_bwd"), flush=True)
    if not args.quick:
        path = write_results("geometry_gpu", {"elements": n, "copy_GBps": copy_bps / 1e9,
                                              "rows": results})
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
