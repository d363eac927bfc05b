"""Fused Lorentz linear layer (kernels.lorentz_linear) against ``nn.LorentzLinear``.

The kernel path (cuBLAS GEMM + Triton row epilogue, analytic backward) is compared with the
module's torch forward: in float64 to 1e-10, and in float32 / bfloat16 / float16 within 2x the
error of the same-dtype module plus a floor of 4 ulp of the largest value, for y, grad_x,
grad_weight and grad_bias; with and without the distance bound, weights small, large and huge
enough for the rapidity cap (float16: its own finite-range cap), rapidities from 1e-6 to 9,
and rows at the origin with a zero time column and bias (W x + b = 0). The module's weights are
rounded to the dtype first, so kernel and module multiply the same numbers (the fused path runs
the GEMM in the input dtype). Both epilogue variants run (``max_block=8`` forces tiles).
Output buffers are NaN-poisoned. GPU only: torch.compile and the bench's width 4096 + 1.
"""

from __future__ import annotations

import math

import pytest
import torch

from resnetbk.geometry import lorentz
from resnetbk.geometry.numerics import max_rapidity
from resnetbk.kernels import backend
from resnetbk.kernels import lorentz_linear as ll
from resnetbk.nn import LorentzLinear

C = 0.7
ROWS, D_IN, D_OUT = 37, 23, 19  # points of 24 coordinates -> 20
F64 = torch.float64
NAMES = ("y", "grad_x", "grad_weight", "grad_bias")


def _points(gen: torch.Generator, n: int = ROWS, d: int = D_IN,
            max_rapidity: float = 9.0) -> torch.Tensor:
    """Points on the hyperboloid with rapidities 1e-6 .. ``max_rapidity``; rows 0, 1: origin."""
    rap = torch.logspace(-6, math.log10(max_rapidity), n, dtype=F64)[:, None]
    u = torch.randn(n, d, dtype=F64, generator=gen)
    u = u / u.norm(dim=-1, keepdim=True) * rap / C**0.5
    u[:2] = 0
    with backend("torch"):
        return lorentz.expmap0(torch.cat([torch.zeros(n, 1, dtype=F64), u], -1), c=C)


def _layer(gen: torch.Generator, max_distance: float | None, scale: float, dtype: torch.dtype,
           d_in: int = D_IN, d_out: int = D_OUT, init: bool = False) -> LorentzLinear:
    """A float64 module with weights ~ N(0, scale^2 / d_in) rounded to ``dtype`` (``init``:
    time column and bias 0, as the module's initialisation: W x + b = 0 at the origin)."""
    layer = LorentzLinear(d_in, d_out, c=C, max_distance=max_distance).double()
    with torch.no_grad():
        layer.weight.copy_(torch.randn(d_out, d_in + 1, dtype=F64, generator=gen)
                           * (scale / d_in**0.5))
        layer.bias.copy_(torch.randn(d_out, dtype=F64, generator=gen))
        if init:
            layer.weight[:, 0] = 0
            layer.bias.zero_()
        layer.weight.copy_(layer.weight.to(dtype))
    return layer


def _module(layer: LorentzLinear, x: torch.Tensor, grad: torch.Tensor) -> list[torch.Tensor]:
    layer.zero_grad()
    x = x.clone().requires_grad_()
    with backend("torch"):
        y = layer(x)
    y.backward(grad)
    return [y.detach(), x.grad, layer.weight.grad.clone(), layer.bias.grad.clone()]


def _autograd(layer: LorentzLinear, x: torch.Tensor, grad: torch.Tensor) -> list[torch.Tensor]:
    w = layer.weight.detach().clone().requires_grad_()
    b = layer.bias.detach().clone().requires_grad_()
    x = x.clone().requires_grad_()
    y = ll.lorentz_linear(x, w, b, C, layer.max_distance)
    y.backward(grad)
    return [y.detach(), x.grad, w.grad, b.grad]


def _kernel(layer: LorentzLinear, x: torch.Tensor, grad: torch.Tensor,
            max_block: int | None) -> list[torch.Tensor]:
    """Through the launch functions (``max_block`` picks the tiled variant)."""
    w, b, d = layer.weight.detach(), layer.bias.detach(), layer.max_distance
    y, stats = ll.lorentz_linear_forward(x, w, b, C, d, max_block=max_block)
    gx, gw, gb = ll.lorentz_linear_backward(grad, x, w, b, y, stats, C, d, max_block=max_block)
    return [y, gx, gw, gb]


# (max_distance, weight scale): scale 1e150 exceeds float64's cap sinh(350)/sqrt(c).
CASES_F64 = [(None, 1.0), (None, 1e150), (2.0, 1.0), (2.0, 30.0), (0.3, 1e150)]


@pytest.mark.parametrize(("max_distance", "scale"), CASES_F64)
@pytest.mark.parametrize("max_block", [None, 8])
def test_float64_equals_reference(max_distance: float | None, scale: float,
                                  max_block: int | None, device: str,
                                  gen: torch.Generator) -> None:
    layer = _layer(gen, max_distance, scale, F64, init=scale == 1.0).to(device)
    x = _points(gen).to(device)
    grad = torch.randn(ROWS, D_OUT + 1, dtype=F64, generator=gen).to(device)
    want = _module(layer, x, grad)
    for got in (_kernel(layer, x, grad, max_block), _autograd(layer, x, grad)):
        for name, a, b in zip(NAMES, got, want, strict=True):
            assert torch.isfinite(a).all(), name
            err = ((a - b).abs().max() / b.abs().max()).item()
            assert err < 1e-10, f"{name}: relative error {err:.3g}"


@pytest.mark.parametrize("max_distance", [None, 1.5])
@pytest.mark.parametrize("init", [False, True])
def test_gradcheck(max_distance: float | None, init: bool, device: str,
                   gen: torch.Generator) -> None:
    layer = _layer(gen, max_distance, 2.0, F64, d_in=4, d_out=3, init=init)
    x = _points(gen, 6, 4, max_rapidity=3.0)
    inputs = tuple(t.detach().to(device).requires_grad_()
                   for t in (x, layer.weight, layer.bias))
    assert torch.autograd.gradcheck(
        lambda a, w, b: ll.lorentz_linear(a, w, b, C, max_distance), inputs)


def _exact(layer: LorentzLinear, x: torch.Tensor, grad: torch.Tensor,
           dtype: torch.dtype) -> list[torch.Tensor]:
    """The float64 reference with the rapidity cap of ``dtype`` (the float64 module caps at
    float64's own range): without a bound the layer is v = W x + b, s = v min(1, L / |v|),
    y = (sqrt(1/c + |s|^2), s). With the bound (D = 2 here) no cap is reached: the module."""
    if layer.max_distance is not None:
        return _module(layer, x, grad)
    w, b = (p.detach().clone().requires_grad_() for p in (layer.weight, layer.bias))
    x = x.clone().requires_grad_()
    v = x @ w.t() + b
    cap = min(math.sinh(max_rapidity(dtype)) / C**0.5, torch.finfo(dtype).max / 4)
    s = v * (cap / v.norm(dim=-1, keepdim=True).clamp_min(cap))
    y = torch.cat([torch.sqrt(1 / C + (s * s).sum(-1, keepdim=True)), s], -1)
    y.backward(grad)
    return [y.detach(), x.grad, w.grad, b.grad]


# (max_distance, weight scale) per dtype: 1e16 reaches the float32/bfloat16 cap sinh(43)/sqrt(c),
# 30 the float16 cap finfo.max / 4.
CASES = [(None, 1.0), (2.0, 1.0), (2.0, 30.0), (None, 30.0), (None, 1e16)]


@pytest.mark.parametrize(("max_distance", "scale"), CASES)
def test_within_twice_torch_error(max_distance: float | None, scale: float, device: str,
                                  gen: torch.Generator) -> None:
    """Errors against the float64 reference. Under the interpreter a float32 -> bfloat16 cast
    truncates (the GPU rounds to nearest), so CPU bfloat16 errors reach 1 ulp, within the floor."""
    x64 = _points(gen)
    grad64 = torch.randn(ROWS, D_OUT + 1, dtype=F64, generator=gen)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        if dtype == torch.float16 and scale > 1e4:
            continue  # W itself would overflow float16
        exact_layer = _layer(gen, max_distance, scale, dtype,
                             init=max_distance is None and scale == 1.0).to(device)
        layer = LorentzLinear(D_IN, D_OUT, c=C, max_distance=max_distance).to(device)
        layer.load_state_dict(exact_layer.state_dict())  # float32 parameters, as in training
        x, grad = x64.to(device, dtype), grad64.to(device, dtype)
        exact = _exact(exact_layer, x.double(), grad.double(), dtype)
        torch_same = _module(layer, x, grad)
        kernel = _autograd(layer, x, grad)
        eps = torch.finfo(dtype).eps
        for name, k, t, e in zip(NAMES, kernel, torch_same, exact, strict=True):
            assert k.dtype == t.dtype and torch.isfinite(k).all(), f"{dtype} {name}"
            k_err = (k.double() - e).abs().max().item()
            # The module's float32 backward can overflow at the cap (d/dn of limit / n, n ~ 1e19:
            # inf, then NaN from the GEMM): there the kernel must meet the floor alone.
            t_err = (t.double() - e).abs().max().item() if torch.isfinite(t).all() else 0.0
            floor = 4 * eps * e.abs().max().item()
            assert k_err <= 2 * t_err + floor, (
                f"{dtype} {name}: kernel error {k_err:.3g} > 2 x torch {t_err:.3g} + {floor:.3g}")


@pytest.mark.parametrize("max_distance", [None, 2.0])
@pytest.mark.parametrize("max_block", [None, 8])
def test_outputs_fully_written(max_distance: float | None, max_block: int | None, device: str,
                               gen: torch.Generator) -> None:
    """Every element of the NaN-poisoned buffers is written (forward, backward rows)."""
    layer = _layer(gen, max_distance, 1.0, torch.float32).float().to(device)
    x = _points(gen).to(device, torch.float32)
    w, b = layer.weight.detach(), layer.bias.detach()
    y, stats = ll.lorentz_linear_forward(
        x, w, b, C, max_distance, max_block=max_block,
        out=torch.full((ROWS, D_OUT + 1), float("nan"), device=device))
    assert torch.isfinite(y).all() and torch.isfinite(stats).all()
    gv = ll.lorentz_linear_backward_rows(
        torch.randn(ROWS, D_OUT + 1, generator=gen).to(device), y, stats, C, max_distance,
        max_block=max_block, out=torch.full((ROWS, D_OUT), float("nan"), device=device))
    assert torch.isfinite(gv).all()


def test_partial_gradients_shapes_and_no_bias(device: str, gen: torch.Generator) -> None:
    """Leading axes are flattened; bias None; grads only for inputs that need them; an empty
    batch works."""
    layer = _layer(gen, None, 1.0, F64)
    layer.bias = None
    layer = layer.to(device)
    x = _points(gen, 12).view(3, 4, D_IN + 1).to(device)
    grad = torch.randn(3, 4, D_OUT + 1, dtype=F64, generator=gen).to(device)
    xr = x.clone().requires_grad_()
    with backend("torch"):
        y_ref = layer(xr)
    y_ref.backward(grad)
    w = layer.weight.detach().clone().requires_grad_()
    y = ll.lorentz_linear(x, w, None, C, None)
    assert y.shape == (3, 4, D_OUT + 1)
    assert (y - y_ref).abs().max() < 1e-10 * y_ref.abs().max()
    y.backward(grad)
    assert (w.grad - layer.weight.grad).abs().max() < 1e-10 * layer.weight.grad.abs().max()
    xg = x.clone().requires_grad_()
    ll.lorentz_linear(xg, layer.weight.detach(), None, C, None).backward(grad)
    assert (xg.grad - xr.grad).abs().max() < 1e-10 * xr.grad.abs().max()
    assert ll.lorentz_linear(x[:0], w, None, C, None).shape == (0, 4, D_OUT + 1)


def test_bad_inputs_raise(device: str) -> None:
    x = torch.ones(5, D_IN + 1, device=device)
    w = torch.zeros(D_OUT, D_IN + 1, device=device)
    b = torch.zeros(D_OUT, device=device)
    with pytest.raises(ValueError, match="weight must be"):
        ll.lorentz_linear(x[:, 1:], w, b, C, None)
    with pytest.raises(ValueError, match="bias must have shape"):
        ll.lorentz_linear(x, w, b[1:], C, None)
    with pytest.raises(ValueError, match="c must be"):
        ll.lorentz_linear(x, w, b, 0.0, None)
    with pytest.raises(ValueError, match="max_distance must be"):
        ll.lorentz_linear(x, w, b, C, -1.0)
    with pytest.raises(ValueError, match="out must be"):
        ll.lorentz_linear_forward(x, w, b, C, None, out=torch.empty(5, D_OUT, device=device))


@pytest.mark.gpu
@pytest.mark.parametrize("max_distance", [None, 2.0])
def test_torch_compile(max_distance: float | None, device: str, gen: torch.Generator) -> None:
    layer = _layer(gen, max_distance, 1.0, torch.bfloat16).to(device, torch.bfloat16)
    x = _points(gen, 64).to(device, torch.bfloat16)
    grad = torch.randn(64, D_OUT + 1, generator=gen).to(device, torch.bfloat16)
    eager = _autograd(layer, x, grad)
    fn = torch.compile(lambda a, w, b: ll.lorentz_linear(a, w, b, C, max_distance),
                       fullgraph=True)
    xc, w, b = (t.detach().clone().requires_grad_() for t in (x, layer.weight, layer.bias))
    y = fn(xc, w, b)
    y.backward(grad)
    for a, e in zip((y.detach(), xc.grad, w.grad, b.grad), eager, strict=True):
        assert torch.equal(a, e)


@pytest.mark.gpu
@pytest.mark.parametrize(("d_in", "d_out"), [(4096, 4096), (512, 9000)])
def test_wide_rows_on_gpu(d_in: int, d_out: int, device: str, gen: torch.Generator) -> None:
    """The bench's width (4096 + 1 -> 4096 + 1: one tile) and a row wider than one tile."""
    x64 = _points(gen, 300, d_in)
    grad64 = torch.randn(300, d_out + 1, dtype=F64, generator=gen)
    exact_layer = _layer(gen, 2.0, 1.0, torch.bfloat16, d_in, d_out).to(device)
    layer = LorentzLinear(d_in, d_out, c=C, max_distance=2.0).to(device)
    layer.load_state_dict(exact_layer.state_dict())
    x, grad = x64.to(device, torch.bfloat16), grad64.to(device, torch.bfloat16)
    exact = _module(exact_layer, x.double(), grad.double())
    torch_same = _module(layer, x, grad)
    for name, k, t, e in zip(NAMES, _autograd(layer, x, grad), torch_same, exact, strict=True):
        k_err = (k.double() - e).abs().max().item()
        t_err = (t.double() - e).abs().max().item()
        floor = 4 * torch.finfo(torch.bfloat16).eps * e.abs().max().item()
        assert k_err <= 2 * t_err + floor, f"{name}: {k_err:.3g} vs torch {t_err:.3g}"


@pytest.mark.parametrize("max_distance", [None, 2.0])
def test_opcheck(max_distance: float | None, device: str, gen: torch.Generator) -> None:
    """torch.library.opcheck: schema, fake tensor and autograd registration (torch.compile)."""
    layer = _layer(gen, max_distance, 1.0, torch.float32).float().to(device)
    x = _points(gen, 6).to(device, torch.float32).requires_grad_()
    args = (x, layer.weight.detach().requires_grad_(), layer.bias.detach().requires_grad_(), C,
            max_distance)
    torch.library.opcheck(torch.ops.resnetbk.lorentz_linear.default, args)
