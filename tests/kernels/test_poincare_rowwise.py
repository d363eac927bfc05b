"""Row-wise Poincaré kernels (mobius_add, expmap0, logmap0, project) against the reference.

Each kernel is compared with the float64 torch reference (``resnetbk.geometry.poincare``) on
inputs rounded to the kernel's dtype, and its error must be within 2x the error of the
same-dtype torch reference plus a floor of a few ulp of the largest value (flash-attention's
rule), for outputs and for gradients. Inputs cover the interior, points within 1e-4 of the
boundary, y ~ -x (where a naive formula cancels), zero rows, and points past the read radius
(reachable only by rounding). Outputs are written into NaN-poisoned buffers.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from resnetbk.geometry import poincare
from resnetbk.kernels import mobius_add as mobius_kernel
from resnetbk.kernels import poincare_radial as radial_kernel

C = 0.7
ROWS, DIM = 41, 19  # neither a power of two: exercises the row and column masks


def _points(gen: torch.Generator, n: int = ROWS, d: int = DIM) -> torch.Tensor:
    """Ball points in float64: radii spread from the origin to 1 - 1e-4 of the boundary, plus
    a zero row and two rows past the read radius."""
    u = torch.randn(n, d, dtype=torch.float64, generator=gen)
    u = u / u.norm(dim=-1, keepdim=True)
    r = torch.rand(n, 1, dtype=torch.float64, generator=gen) ** 0.25 * (1 - 1e-4)
    r[:4] = 1 - 10.0 ** -torch.arange(1, 5, dtype=torch.float64).unsqueeze(-1)
    x = u * r / C**0.5
    x[4] = 0
    x[5:7] = u[5:7] * (1 + 1e-7) / C**0.5  # past the read radius: read on that sphere
    return x


def _pair(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _points(gen), _points(gen)
    y[7:10] = -x[7:10] * (1 - 1e-6)  # y ~ -x near the boundary
    y[10] = x[10]
    return x, y


def _tangent(gen: torch.Generator) -> torch.Tensor:
    u = torch.randn(ROWS, DIM, dtype=torch.float64, generator=gen)
    scale = 10.0 ** torch.empty(ROWS, 1, dtype=torch.float64).uniform_(-6, 1.3, generator=gen)
    u = u * scale
    u[0] = 0
    return u


REFERENCE: dict[str, Callable[..., torch.Tensor]] = {
    "mobius_add": lambda x, y: poincare.mobius_add(x, y, c=C),
    "expmap0": lambda u: poincare.expmap0(u, c=C),
    "logmap0": lambda y: poincare.logmap0(y, c=C),
    "project": lambda x: poincare.project(x, c=C),
}
KERNEL: dict[str, Callable[..., torch.Tensor]] = {
    "mobius_add": lambda x, y: mobius_kernel.mobius_add(x, y, C),
    "expmap0": lambda u: radial_kernel.expmap0(u, C),
    "logmap0": lambda y: radial_kernel.logmap0(y, C),
    "project": lambda x: radial_kernel.project(x, C),
}


def _inputs(op: str, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    if op == "mobius_add":
        return _pair(gen)
    if op == "expmap0":
        return (_tangent(gen),)
    if op == "project":
        x = _points(gen)
        return (x * (1 + torch.rand(ROWS, 1, dtype=torch.float64, generator=gen) * 1e-3),)
    return (_points(gen),)


def _with_grads(fn: Callable[..., torch.Tensor], inputs: tuple[torch.Tensor, ...],
                grad: torch.Tensor) -> list[torch.Tensor]:
    leaves = [t.clone().requires_grad_() for t in inputs]
    out = fn(*leaves)
    out.backward(grad)
    return [out.detach(), *(t.grad for t in leaves)]


def _dtypes(device: str) -> list[torch.dtype]:
    return [torch.float32, torch.bfloat16, torch.float16] if device == "cuda" else [torch.float32]


@pytest.mark.parametrize("op", list(KERNEL))
def test_float64_equals_reference(op: str, device: str, gen: torch.Generator) -> None:
    inputs = tuple(t.to(device) for t in _inputs(op, gen))
    grad = torch.randn(ROWS, DIM, dtype=torch.float64, generator=gen).to(device)
    got = _with_grads(KERNEL[op], inputs, grad)
    want = _with_grads(REFERENCE[op], inputs, grad)
    for name, a, b in zip(("out", "grad 0", "grad 1"), got, want, strict=False):
        assert torch.isfinite(a).all(), f"{op} {name}: non-finite"
        err = ((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).item()
        assert err < 1e-10, f"{op} {name}: relative error {err:.3g}"


@pytest.mark.parametrize("op", list(KERNEL))
def test_gradcheck(op: str, device: str, gen: torch.Generator) -> None:
    inputs = tuple(t[:6, :5].contiguous().to(device).requires_grad_()
                   for t in _inputs(op, gen))
    assert torch.autograd.gradcheck(KERNEL[op], inputs)


@pytest.mark.parametrize("op", list(KERNEL))
def test_within_twice_torch_error(op: str, device: str, gen: torch.Generator) -> None:
    inputs64 = _inputs(op, gen)
    grad64 = torch.randn(ROWS, DIM, dtype=torch.float64, generator=gen)
    for dtype in _dtypes(device):
        inputs = tuple(t.to(device, dtype) for t in inputs64)
        grad = grad64.to(device, dtype)
        exact = _with_grads(REFERENCE[op], tuple(t.double() for t in inputs), grad.double())
        kernel = _with_grads(KERNEL[op], inputs, grad)
        torch_same = _with_grads(REFERENCE[op], inputs, grad)
        eps = torch.finfo(dtype).eps
        for name, k, t, e in zip(("out", "grad 0", "grad 1"), kernel, torch_same, exact,
                                 strict=False):
            assert k.dtype == dtype and torch.isfinite(k).all(), f"{op} {dtype} {name}"
            k_err = (k.double() - e).abs().max().item()
            t_err = (t.double() - e).abs().max().item()
            floor = 4 * eps * e.abs().max().item()
            assert k_err <= 2 * t_err + floor, (
                f"{op} {dtype} {name}: kernel error {k_err:.3g} > 2 x torch {t_err:.3g} "
                f"+ {floor:.3g}")


def test_outputs_fully_written(device: str, gen: torch.Generator) -> None:
    """Every element of the (NaN-poisoned) output buffers is written, forward and backward."""
    x, y = (t.to(device, torch.float32) for t in _pair(gen))
    g = torch.randn_like(x)
    nan = lambda: torch.full_like(x, float("nan"))  # noqa: E731
    assert torch.isfinite(mobius_kernel.forward(x, y, C, out=nan())).all()
    gx, gy = mobius_kernel.backward(x, y, g, C, out=(nan(), nan()))
    assert torch.isfinite(gx).all() and torch.isfinite(gy).all()
    for op in radial_kernel.OPS:
        assert torch.isfinite(radial_kernel.radial(op, x, C, out=nan())).all()
        assert torch.isfinite(radial_kernel.radial(op, x, C, grad=g, out=nan())).all()


def test_large_and_odd_shapes(device: str, gen: torch.Generator) -> None:
    """Leading axes are flattened into rows; one row, one column and a wide row all work."""
    for shape in ((3, 4, 7), (1, 1), (2, 300)):
        x = (torch.rand(shape, dtype=torch.float64, generator=gen) - 0.5) / shape[-1]
        y = (torch.rand(shape, dtype=torch.float64, generator=gen) - 0.5) / shape[-1]
        x, y = x.to(device, torch.float32), y.to(device, torch.float32)
        ref = poincare.mobius_add(x.double(), y.double(), c=C)
        out = mobius_kernel.mobius_add(x, y, C)
        assert out.shape == x.shape
        assert (out.double() - ref).abs().max() < 1e-6


@pytest.mark.parametrize("op", list(KERNEL))
def test_opcheck(op: str, device: str, gen: torch.Generator) -> None:
    """The torch.library registration (schema, fake tensor, autograd) is consistent, so the
    ops trace under torch.compile: ``torch.library.opcheck``."""
    custom = {"mobius_add": mobius_kernel.mobius_add, "expmap0": radial_kernel.expmap0,
              "logmap0": radial_kernel.logmap0, "project": radial_kernel.project}[op]
    inputs = tuple(t[:6].to(device, torch.float32).requires_grad_() for t in _inputs(op, gen))
    torch.library.opcheck(custom, (*inputs, C))
