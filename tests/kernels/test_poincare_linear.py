"""Fused Möbius matrix-vector product (kernels.poincare_linear) against the reference.

The kernel path (cuBLAS GEMM + Triton row epilogue, analytic backward) is compared with
``poincare.mobius_matvec`` run by torch: in float64 to 1e-10, and in float32 / bfloat16 /
float16 within 2x the error of the same-dtype torch reference plus a floor of 4 ulp of the
largest value (flash-attention's rule) and of the exact change under a half-ulp radial
perturbation of x (the boundary rows' conditioning), for y, grad_x and grad_m. Inputs:
points spread from the origin to sqrt(c)|x| = 1 - 1e-4, a zero row (Mx = 0), a tiny row,
points past the read radius, matrices small and large enough for the output guard to hold.
Both epilogue variants run: rows kept whole in registers and rows swept in tiles
(``max_block=8``). Output buffers are NaN-poisoned. GPU only: torch.compile of the op and the
bench-like width 4096.
"""

from __future__ import annotations

import pytest
import torch

from resnetbk.geometry import poincare
from resnetbk.kernels import backend
from resnetbk.kernels import poincare_linear as pl

C = 0.7
ROWS, D_IN, D_OUT = 37, 24, 19  # not powers of two: row and column masks
F64 = torch.float64


def _points(gen: torch.Generator, n: int = ROWS, d: int = D_IN) -> torch.Tensor:
    u = torch.randn(n, d, dtype=F64, generator=gen)
    u = u / u.norm(dim=-1, keepdim=True)
    r = torch.rand(n, 1, dtype=F64, generator=gen) ** 0.25 * (1 - 1e-4)
    r[:3] = 1 - 1e-4  # sqrt(c)|x| = 1 - 1e-4
    x = u * r / C**0.5
    x[3] = 0  # Mx = 0
    x[4] *= 1e-6
    x[5:7] = u[5:7] * (1 + 1e-7) / C**0.5  # past the read radius: read on that sphere
    return x


def _matrix(gen: torch.Generator, scale: float, n: int = D_OUT, d: int = D_IN) -> torch.Tensor:
    """Random M; ``scale`` 10 puts most rows under the output guard."""
    m = torch.randn(n, d, dtype=F64, generator=gen) * (scale / d**0.5)
    m[1] = 0
    return m


def _reference(m: torch.Tensor, x: torch.Tensor, grad: torch.Tensor) -> list[torch.Tensor]:
    m, x = m.clone().requires_grad_(), x.clone().requires_grad_()
    with backend("torch"):
        y = poincare.mobius_matvec(m, x, c=C)
    y.backward(grad)
    return [y.detach(), x.grad, m.grad]


def _kernel(m: torch.Tensor, x: torch.Tensor, grad: torch.Tensor,
            max_block: int | None = None) -> list[torch.Tensor]:
    """Through the launch functions (``max_block`` picks the tiled variant)."""
    y, stats = pl.mobius_matvec_forward(m, x, C, max_block=max_block)
    grad_m, grad_x = pl.mobius_matvec_backward(grad, m, x, y, stats, C, max_block=max_block)
    return [y, grad_x, grad_m]


def _autograd(m: torch.Tensor, x: torch.Tensor, grad: torch.Tensor) -> list[torch.Tensor]:
    m, x = m.clone().requires_grad_(), x.clone().requires_grad_()
    y = pl.mobius_matvec(m, x, C)
    y.backward(grad)
    return [y.detach(), x.grad, m.grad]


@pytest.mark.parametrize("scale", [1.0, 10.0])
@pytest.mark.parametrize("max_block", [None, 8])
def test_float64_equals_reference(scale: float, max_block: int | None, device: str,
                                  gen: torch.Generator) -> None:
    x, m = _points(gen).to(device), _matrix(gen, scale).to(device)
    grad = torch.randn(ROWS, D_OUT, dtype=F64, generator=gen).to(device)
    want = _reference(m, x, grad)
    for got in (_kernel(m, x, grad, max_block), _autograd(m, x, grad)):
        for name, a, b in zip(("y", "grad_x", "grad_m"), got, want, strict=True):
            assert torch.isfinite(a).all(), name
            err = ((a - b).abs().max() / b.abs().max()).item()
            assert err < 1e-10, f"{name}: relative error {err:.3g}"


@pytest.mark.parametrize("scale", [1.0, 10.0])
def test_gradcheck(scale: float, device: str, gen: torch.Generator) -> None:
    x = _points(gen, 10, 5)[[0, 3, 4, 7, 8, 9]]  # boundary, zero and tiny rows
    m = _matrix(gen, scale, 4, 5)
    inputs = (m.to(device).requires_grad_(), x.to(device).requires_grad_())
    assert torch.autograd.gradcheck(lambda a, b: pl.mobius_matvec(a, b, C), inputs)


def _dtypes() -> list[torch.dtype]:
    return [torch.float32, torch.bfloat16, torch.float16]


@pytest.mark.parametrize("scale", [1.0, 10.0])
def test_within_twice_torch_error(scale: float, device: str, gen: torch.Generator) -> None:
    x64, m64 = _points(gen), _matrix(gen, scale)
    grad64 = torch.randn(ROWS, D_OUT, dtype=F64, generator=gen)
    for dtype in _dtypes():
        x, m, grad = (t.to(device, dtype) for t in (x64, m64, grad64))
        exact = _reference(m.double(), x.double(), grad.double())
        torch_same = _reference(m, x, grad)
        kernel = _autograd(m, x, grad)
        eps = torch.finfo(dtype).eps
        # Rows at sqrt(c)|x| = 1 - 1e-4 amplify one rounding of 1 - c|x|^2 ~1e4-fold, and the
        # kernel and torch round it differently: the exact change under a half-ulp radial
        # perturbation of x (what any backward-stable evaluation may show) joins the floor.
        nudged = [_reference(m.double(), x.double() * (1 + sign * eps / 2), grad.double())
                  for sign in (-1, 1)]
        for i, (name, k, t, e) in enumerate(zip(("y", "grad_x", "grad_m"), kernel, torch_same,
                                                exact, strict=True)):
            assert k.dtype == dtype and torch.isfinite(k).all(), f"{dtype} {name}"
            k_err = (k.double() - e).abs().max().item()
            t_err = (t.double() - e).abs().max().item()
            floor = 4 * eps * e.abs().max().item() + max(
                (n[i] - e).abs().max().item() for n in nudged)
            assert k_err <= 2 * t_err + floor, (
                f"{dtype} {name}: kernel error {k_err:.3g} > 2 x torch {t_err:.3g} + {floor:.3g}")


@pytest.mark.parametrize("max_block", [None, 8])
def test_outputs_fully_written(max_block: int | None, device: str, gen: torch.Generator) -> None:
    """Every element of the NaN-poisoned buffers is written (forward, backward rows)."""
    x, m = _points(gen).to(device, torch.float32), _matrix(gen, 3.0).to(device, torch.float32)
    grad = torch.randn(ROWS, D_OUT, generator=gen).to(device)
    y, stats = pl.mobius_matvec_forward(m, x, C, max_block=max_block,
                                        out=torch.full((ROWS, D_OUT), float("nan"),
                                                       device=device))
    assert torch.isfinite(y).all() and torch.isfinite(stats).all()
    gv, bx = pl.mobius_matvec_backward_rows(
        grad, x, y, stats, C, max_block=max_block,
        out=(torch.full((ROWS, D_OUT), float("nan"), device=device), torch.full_like(x, torch.nan)))
    assert torch.isfinite(gv).all() and torch.isfinite(bx).all()


def test_partial_gradients_and_shapes(device: str, gen: torch.Generator) -> None:
    """Leading axes are flattened; grads are computed only for inputs that need them; an empty
    batch works."""
    x = (_points(gen, 12) * 0.5).view(3, 4, D_IN).to(device)
    m = _matrix(gen, 1.0).to(device)
    grad = torch.randn(3, 4, D_OUT, dtype=F64, generator=gen).to(device)
    y_ref, gx_ref, gm_ref = _reference(m, x, grad)
    mg = m.clone().requires_grad_()
    y = pl.mobius_matvec(mg, x, C)
    assert y.shape == (3, 4, D_OUT)
    assert (y - y_ref).abs().max() < 1e-10 * y_ref.abs().max()
    y.backward(grad)
    assert (mg.grad - gm_ref).abs().max() < 1e-10 * gm_ref.abs().max()
    xg = x.clone().requires_grad_()
    pl.mobius_matvec(m, xg, C).backward(grad)
    assert (xg.grad - gx_ref).abs().max() < 1e-10 * gx_ref.abs().max()
    empty = pl.mobius_matvec(m, x[:0], C)
    assert empty.shape == (0, 4, D_OUT)


def test_bad_inputs_raise(device: str) -> None:
    x = torch.zeros(5, D_IN, device=device)
    m = torch.zeros(D_OUT, D_IN, device=device)
    with pytest.raises(ValueError, match="shape"):
        pl.mobius_matvec(m[:, :-1], x, C)
    with pytest.raises(ValueError, match="c must be"):
        pl.mobius_matvec(m, x, -1.0)
    with pytest.raises(ValueError, match="c must be"):
        pl.mobius_matvec(m, x, float("inf"))
    with pytest.raises(ValueError, match="float64/float32/bfloat16/float16"):
        pl.mobius_matvec(m, x.int(), C)
    with pytest.raises(ValueError, match="out must be"):
        pl.mobius_matvec_forward(m, x, C, out=torch.empty(5, D_OUT + 1, device=device))


@pytest.mark.gpu
def test_torch_compile(device: str, gen: torch.Generator) -> None:
    x = (_points(gen, 64) * 0.9).to(device, torch.bfloat16)
    m = _matrix(gen, 3.0, 48).to(device, torch.bfloat16)
    grad = torch.randn(64, 48, generator=gen).to(device, torch.bfloat16)
    eager = _autograd(m, x, grad)
    compiled_fn = torch.compile(lambda a, b: pl.mobius_matvec(a, b, C), fullgraph=True)
    mc, xc = m.clone().requires_grad_(), x.clone().requires_grad_()
    y = compiled_fn(mc, xc)
    y.backward(grad)
    for a, b in zip((y.detach(), xc.grad, mc.grad), eager, strict=True):
        assert torch.equal(a, b)


@pytest.mark.gpu
@pytest.mark.parametrize(("d_in", "d_out"), [(4096, 4096), (512, 9000)])
def test_wide_rows_on_gpu(d_in: int, d_out: int, device: str, gen: torch.Generator) -> None:
    """The bench's width (one tile of 4096, 8 warps) and a row wider than one tile (9000)."""
    x64 = _points(gen, 300, d_in)
    m64 = _matrix(gen, 3.0, d_out, d_in)
    grad64 = torch.randn(300, d_out, dtype=F64, generator=gen)
    x, m, grad = (t.to(device, torch.bfloat16) for t in (x64, m64, grad64))
    exact = _reference(m.double(), x.double(), grad.double())
    torch_same = _reference(m, x, grad)
    for name, k, t, e in zip(("y", "grad_x", "grad_m"), _autograd(m, x, grad), torch_same, exact,
                             strict=True):
        k_err = (k.double() - e).abs().max().item()
        t_err = (t.double() - e).abs().max().item()
        floor = 4 * torch.finfo(torch.bfloat16).eps * e.abs().max().item()
        assert k_err <= 2 * t_err + floor, f"{name}: {k_err:.3g} vs torch {t_err:.3g}"


def test_opcheck(device: str, gen: torch.Generator) -> None:
    """torch.library.opcheck: schema, fake tensor and autograd registration (torch.compile)."""
    x = _points(gen, 6).to(device, torch.float32).requires_grad_()
    m = _matrix(gen, 1.0).to(device, torch.float32).requires_grad_()
    torch.library.opcheck(torch.ops.resnetbk.mobius_matvec.default, (m, x, C))
