"""GPU benchmark of ``nn.LNSLinear`` (LNS-coded weights) against a bfloat16 ``nn.Linear``.

Shapes tokens x in -> out: 8192 x 4096 -> 4096, 8192 x 1024 -> 4096, 2048 x 4096 -> 16384 (many
rows: Tensor-Core bound) and 16 / 256 x 4096 -> 4096 (few rows: bound by reading the weights).
bfloat16 activations. Peers, forward and forward+backward (grads of x, the weight and the bias;
grads set to None after each backward, as a training step would consume them):

* ``bf16``: ``F.linear`` with a bfloat16 weight and bias (cuBLAS): the ceiling;
* ``lns16_*`` / ``lns8_*``: 16-bit (frac 10) and 8-bit (frac 3) codes through the custom op
  ``resnetbk::lns_linear`` (what the layer runs on CUDA), three variants: ``fused_fast``
  (decode inside the GEMM with MUFU ex2, the default on the GPU), ``fused_exact`` (the table
  decode), ``decode_fast`` (decode kernel + cuBLAS); ``auto`` in the JSON names the path the
  layer picks at that row count (``lns_matmul.FUSED_MAX_ROWS``).

Reported per timing: ms, TFLOP/s (2 M K N forward, 3x that forward+backward), the time as a
multiple of ``bf16``, and for the forward the bytes a weight-bound product must move (weights
as stored, x, y) as a percentage of the measured copy bandwidth. Also: a small sweep of the
fused kernel's tiles per shape (forward, default decode), so that ``launch_config`` and
``FUSED_MAX_ROWS`` can be set from it; weight memory (codes, gradient carrier, bfloat16
weight); accuracy (i): forward error vs float64 of the decoded weights (max |error| / max |y|)
next to torch's bfloat16 F.linear on the same decoded weights and the weight-encoding error of
each format (RMS relative to the weights' RMS, and the fraction of weights outside the
format's range, which saturate); (ii) scikit-learn's digits (64-32-10 MLP, 300 steps, batch
128, bf16 autocast): test accuracy of LNSLinear + LNS-Madam (biases by Adam) vs nn.Linear +
Adam, mean of 3 seeds (skipped with a note when scikit-learn is not installed).

Usage: ``python bench/lns_linear_gpu.py`` (CUDA; writes bench/results/lns_linear_gpu_<gpu>.json),
``--quick`` for a small smoke run without JSON.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
import torch.nn.functional as F
from common import copy_bandwidth, time_ms, write_results
from torch import nn

from resnetbk.kernels import lns_matmul as lm
from resnetbk.nn.lns_linear import LNSLinear
from resnetbk.optim.lns_madam import LNSMadam, split_lns_parameters

DTYPE = torch.bfloat16
FULL_SHAPES = [(8192, 4096, 4096), (8192, 1024, 4096), (2048, 4096, 16384), (16, 4096, 4096),
               (256, 4096, 4096)]
QUICK_SHAPES = [(1024, 1024, 1024), (16, 1024, 1024)]
FORMATS = {"lns16": (16, 10), "lns8": (8, 3)}
VARIANTS = {"fused_fast": ("fused", True), "fused_exact": ("fused", False),
            "decode_fast": ("decode", True)}
SWEEP = [lm.LaunchConfig(128, 128, 64, 8, 3), lm.LaunchConfig(128, 128, 64, 8, 4),
         lm.LaunchConfig(128, 256, 64, 8, 3), lm.LaunchConfig(64, 128, 64, 4, 4),
         lm.LaunchConfig(64, 64, 64, 4, 4), lm.LaunchConfig(16, 64, 64, 4, 4),
         lm.LaunchConfig(16, 32, 128, 4, 4)]
DIGITS_STEPS = 300


def timed(step: Callable[[], object], reps: int) -> dict:
    try:
        return {"ms": time_ms(step, reps=reps)}
    except Exception as exc:  # a failing peer is reported, not fatal
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}


def trainer(forward: Callable[[], torch.Tensor], leaves: list[torch.Tensor]
            ) -> Callable[[], None]:
    """forward + backward with a fixed random output gradient; grads dropped afterwards."""
    grad: list[torch.Tensor] = []

    def step() -> None:
        out = forward()
        if not grad:
            grad.append(torch.randn_like(out))
        out.backward(grad[0])
        for t in leaves:
            t.grad = None

    return step


def forward(x: torch.Tensor, layer: LNSLinear, path: str, fast: bool | None,
            config: lm.LaunchConfig | None = None) -> Callable[[], torch.Tensor]:
    """The layer's product on x by ``lns_matmul`` (no autograd)."""
    def run() -> torch.Tensor:
        return lm.lns_matmul(x, layer.codes, layer.bits, layer.frac_bits, layer.scale_log2,
                             bias=layer.bias.detach(), path=path, fast=fast, config=config)

    return run


def training_step(x: torch.Tensor, layer: LNSLinear, path: str, fast: bool
                  ) -> Callable[[], None]:
    """Forward + backward through the custom op (grads of x, the carrier and the bias)."""
    xt = x.clone().requires_grad_()
    return trainer(lambda: lm.lns_linear(xt, layer.codes, layer.lns_weight, layer.bias,
                                         layer.bits, layer.frac_bits, layer.scale_log2, path,
                                         fast), [xt, layer.lns_weight, layer.bias])


def shape_case(m: int, k: int, n: int, reps: int, bandwidth: float) -> dict:
    linear = nn.Linear(k, n, device="cuda")
    x = torch.randn(m, k, device="cuda").to(DTYPE)
    flops = 2.0 * m * k * n
    row: dict = {"tokens": m, "in": k, "out": n, "flops_forward": flops,
                 "auto_path": "fused" if m <= lm.FUSED_MAX_ROWS else "decode"}
    w16, b16 = linear.weight.detach().to(DTYPE), linear.bias.detach().to(DTYPE)
    xl, wl, bl = (t.clone().requires_grad_() for t in (x, w16, b16))
    row["bf16_fwd"] = timed(lambda: F.linear(x, w16, b16), reps)
    row["bf16_fwd_bwd"] = timed(trainer(lambda: F.linear(xl, wl, bl), [xl, wl, bl]), reps)
    row["bf16_weight_bytes"] = 2 * k * n
    for name, (bits, frac_bits) in FORMATS.items():
        layer = LNSLinear.from_linear(linear, bits, frac_bits)
        row[f"{name}_code_bytes"] = layer.codes.numel() * layer.codes.element_size()
        row[f"{name}_carrier_bytes"] = layer.lns_weight.numel() * layer.lns_weight.element_size()
        for variant, (path, fast) in VARIANTS.items():
            key = f"{name}_{variant}"
            row[f"{key}_fwd"] = timed(forward(x, layer, path, fast), reps)
            row[f"{key}_fwd_bwd"] = timed(training_step(x, layer, path, fast), reps)
            stored = row[f"{name}_code_bytes"] + 2 * m * (k + n)
            fwd_ms = row[f"{key}_fwd"].get("ms")
            if fwd_ms:
                row[f"{key}_fwd"]["pct_copy_bw"] = 100 * stored / (fwd_ms * 1e-3) / bandwidth
        sweep = {}
        for cfg in SWEEP:
            sweep["x".join(map(str, cfg))] = timed(forward(x, layer, "fused", None, cfg), reps)
        row[f"{name}_sweep"] = sweep
    for key, val in row.items():
        if not (isinstance(val, dict) and "ms" in val):
            continue
        train = key.endswith("fwd_bwd")
        val["TFLOPs"] = (3 if train else 1) * flops / (val["ms"] * 1e-3) / 1e12
        base = row["bf16_fwd_bwd" if train else "bf16_fwd"].get("ms")
        if base:
            val["x_bf16"] = val["ms"] / base
    bf16_ms = row["bf16_fwd"].get("ms")
    if bf16_ms:
        row["bf16_fwd"]["pct_copy_bw"] = 100 * (2 * k * n + 2 * m * (k + n)) / (
            bf16_ms * 1e-3) / bandwidth
    return row


def forward_accuracy(m: int, k: int, n: int) -> dict:
    """Max |error| / max |y| vs float64 of the decoded weights, per format and path, next to
    torch's bfloat16 F.linear on the same decoded weights; the weights' encoding error."""
    linear = nn.Linear(k, n, device="cuda")
    x = torch.randn(m, k, device="cuda").to(DTYPE)
    w_float = linear.weight.detach().double()
    out: dict = {"shape": [m, k, n]}
    for name, (bits, frac_bits) in FORMATS.items():
        layer = LNSLinear.from_linear(linear, bits, frac_bits)
        w64 = layer.decoded_weight(torch.float64)
        b64 = layer.bias.detach().double()
        exact = x.double() @ w64.t() + b64
        scale = exact.abs().max().item()

        def rel(y: torch.Tensor, exact: torch.Tensor = exact, scale: float = scale) -> float:
            return (y.double() - exact).abs().max().item() / scale

        scaled = w_float.abs() * 2.0**-layer.scale_log2
        outside = (scaled < layer.fmt.min_value) | (scaled > layer.fmt.max_value)
        entry = {"torch_bf16_same_weights": rel(F.linear(x, w64.to(DTYPE), b64.to(DTYPE))),
                 "weight_encoding_rms_rel": ((w64 - w_float).pow(2).mean().sqrt()
                                             / w_float.pow(2).mean().sqrt()).item(),
                 "weights_saturated_fraction": outside.double().mean().item()}
        for variant, (path, fast) in VARIANTS.items():
            entry[variant] = rel(lm.lns_matmul(x, layer.codes, bits, frac_bits,
                                               layer.scale_log2, bias=layer.bias.detach(),
                                               path=path, fast=fast))
        out[name] = entry
    return out


def digits_accuracy(kind: str, seed: int, bits: int, lr: float) -> float:
    """Test accuracy after DIGITS_STEPS steps (see the module docstring)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32, device="cuda") / 16.0
    y = torch.tensor(digits.target, device="cuda")
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(x), generator=gen).cuda()
    train, test = perm[:1437], perm[1437:]
    torch.manual_seed(seed)
    if kind == "adam":
        model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).cuda()
        opts: list[torch.optim.Optimizer] = [torch.optim.Adam(model.parameters(), lr=1e-2)]
    else:
        model = nn.Sequential(LNSLinear(64, 32, bits=bits), nn.ReLU(),
                              LNSLinear(32, 10, bits=bits)).cuda()
        lns, other = split_lns_parameters(model)
        opts = [LNSMadam(lns, lr=lr), torch.optim.Adam(other, lr=1e-2)]
    for _ in range(DIGITS_STEPS):
        idx = train[torch.randint(0, len(train), (128,), generator=gen).cuda()]
        with torch.autocast("cuda", dtype=DTYPE):
            loss = F.cross_entropy(model(x[idx]).float(), y[idx])
        for opt in opts:
            opt.zero_grad()
        loss.backward()
        for opt in opts:
            opt.step()
    with torch.no_grad(), torch.autocast("cuda", dtype=DTYPE):
        return (model(x[test]).argmax(-1) == y[test]).float().mean().item()


def digits_task() -> dict:
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return {"skipped": "scikit-learn is not installed (its wheel is not in bench/.whl)"}
    runs = {"adam_bf16_autocast": ("adam", 0, 0.0), "lns16_madam_lr2^-5": ("lns", 16, 2**-5),
            "lns8_madam_lr2^-4": ("lns", 8, 2**-4)}
    out: dict = {"steps": DIGITS_STEPS, "seeds": [0, 1, 2]}
    for name, (kind, bits, lr) in runs.items():
        accs = [digits_accuracy(kind, seed, bits, lr) for seed in range(3)]
        out[name] = {"mean": statistics.mean(accs), "per_seed": accs}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, no JSON")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("lns_linear_gpu.py needs a CUDA device")
    torch.manual_seed(0)
    shapes, reps = (QUICK_SHAPES, 5) if args.quick else (FULL_SHAPES, 20)
    bandwidth = copy_bandwidth()
    print(f"{torch.cuda.get_device_name()}, bfloat16; copy bandwidth {bandwidth / 1e9:.0f} GB/s")
    results = []
    for m, k, n in shapes:
        row = shape_case(m, k, n, reps, bandwidth)
        results.append(row)
        print(f"\n{m} x {k} -> {n}  (auto path: {row['auto_path']})")
        print(f"{'':<20}{'fwd ms':>9}{'x bf16':>8}{'%copy':>7}{'f+b ms':>9}{'x bf16':>8}")
        for peer in ["bf16"] + [f"{f}_{v}" for f in FORMATS for v in VARIANTS]:
            line = f"{peer:<20}"
            fwd, both = row[f"{peer}_fwd"], row[f"{peer}_fwd_bwd"]
            line += (f"{fwd['ms']:>9.3f}{fwd.get('x_bf16', 1.0):>8.2f}"
                     f"{fwd.get('pct_copy_bw', float('nan')):>7.1f}" if "ms" in fwd
                     else f"{fwd['error'][:24]:>24}")
            line += (f"{both['ms']:>9.3f}{both.get('x_bf16', 1.0):>8.2f}" if "ms" in both
                     else f"{both['error'][:17]:>17}")
            print(line)
        for name in FORMATS:
            sweep = {c: v["ms"] for c, v in row[f"{name}_sweep"].items() if "ms" in v}
            if sweep:
                best = min(sweep, key=sweep.get)
                print(f"{name} fused tiles: best {best} {sweep[best]:.3f} ms of {len(sweep)}")
    accuracy = forward_accuracy(*((256, 1024, 1024) if args.quick else (2048, 4096, 4096)))
    print(f"\nforward error (max |err| / max |y|) vs float64 of the decoded weights: {accuracy}")
    digits = digits_task()
    print(f"digits: {digits}")
    if not args.quick:
        payload = {"copy_bandwidth_Bps": bandwidth, "results": results,
                   "forward_accuracy": accuracy, "digits": digits}
        print(f"wrote {write_results('lns_linear_gpu', payload)}")


if __name__ == "__main__":
    main()
