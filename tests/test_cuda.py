"""The reference geometry runs on CUDA tensors and agrees with the float64 CPU result.

Marked `gpu`: skipped without a CUDA device (see tests/conftest.py), run on the lent GPU by
bench/run_gpu.sh.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from resnetbk.geometry import lorentz, poincare

pytestmark = pytest.mark.gpu

C = 0.8


def _ball(n: int, d: int, gen: torch.Generator) -> torch.Tensor:
    return poincare.expmap0(torch.randn(n, d, dtype=torch.float64, generator=gen) * 0.3, c=C)


def _hyperboloid(n: int, d: int, gen: torch.Generator) -> torch.Tensor:
    u = torch.randn(n, d + 1, dtype=torch.float64, generator=gen) * 0.3
    u[:, 0] = 0
    return lorentz.expmap0(u, c=C)


CASES: dict[str, tuple[Callable[..., torch.Tensor], str]] = {
    "poincare.mobius_add": (lambda x, y: poincare.mobius_add(x, y, c=C), "pp"),
    "poincare.dist": (lambda x, y: poincare.dist(x, y, c=C), "pp"),
    "poincare.logmap": (lambda x, y: poincare.logmap(x, y, c=C), "pp"),
    "poincare.expmap0": (lambda x, y: poincare.expmap0(poincare.logmap0(x, c=C), c=C), "pp"),
    "lorentz.dist": (lambda x, y: lorentz.dist(x, y, c=C), "ll"),
    "lorentz.logmap": (lambda x, y: lorentz.logmap(x, y, c=C), "ll"),
    "lorentz.cdist": (lambda x, y: lorentz.cdist(x, y, c=C), "ll"),
}

# Relative Frobenius error against float64 (METHOD: float32 far under 1e-3, half types 1e-2).
TOL = {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 1e-2}


@pytest.mark.parametrize("dtype", list(TOL))
@pytest.mark.parametrize("name", list(CASES))
def test_cuda_matches_float64_reference(
    name: str, dtype: torch.dtype, gen: torch.Generator
) -> None:
    fn, kind = CASES[name]
    make = _ball if kind == "pp" else _hyperboloid
    x, y = make(256, 32, gen), make(256, 32, gen)
    ref = fn(x, y)
    out = fn(x.to("cuda", dtype), y.to("cuda", dtype))
    assert out.dtype == dtype and out.device.type == "cuda"
    assert bool(torch.isfinite(out).all())
    err = (out.double().cpu() - ref).norm() / ref.norm()
    assert err < TOL[dtype], f"{name} {dtype}: relative error {err:.3g}"


def test_cuda_tensor_curvature_gets_gradient(gen: torch.Generator) -> None:
    c = torch.tensor(0.5, device="cuda", requires_grad=True)
    x = _ball(64, 8, gen).float().cuda()
    poincare.dist0(x, c=c).sum().backward()
    assert c.grad is not None and bool(torch.isfinite(c.grad)) and c.grad.abs().item() > 0
