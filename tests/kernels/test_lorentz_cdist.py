"""Fused Lorentz cdist (``resnetbk.kernels.lorentz_cdist``) against the float64 reference.

Points: radii up to 3 from the origin, the origin itself, and partners built by expmap of
tangent vectors whose lengths span 1e-3 .. 30 (0 for an exact duplicate), so the distances
cover the cancellation regime (close pairs far from the origin), the ordinary one and the
large-t branch of arcosh.

Error rule (flash-attention's, on the quantity that carries the error): every float GEMM form
of cdist errs through its inner products, by eta * c * S_ij with S_ij = sum_k |x_ik| |y_jk|; eta
of the same-dtype torch reference (its float32 GEMM) is measured, and each kernel distance must
lie in the interval of distances that an inner-product error of 2 * eta * c * S_ij allows, widened
by a floor of a few output ulp (the rounding of the output and the epilogue's last bits). The
precision modes are held to a worst-case bound of their operand rounding instead. Gradients:
max error <= 2x torch's (same dtype) + a floor, on well-separated points. Output buffers are
poisoned with NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from resnetbk.geometry import lorentz
from resnetbk.kernels import lorentz_cdist as lc

C = 0.7
SQRT_C = math.sqrt(C)
ROWS, COLS = 37, 29  # neither a multiple of the tile: exercises the row and column masks
DIMS = (5, 64)  # spatial dimensions (d + 1 = 6 and 65 coordinates)
# Worst-case relative error of one product x_k y_k with the operands rounded as the mode rounds
# them: u = 2^-11 (tf32), 2^-8 (bfloat16) per operand, 2u + u^2; x3 modes: both parts rounded,
# the remainder of each operand <= u^2 and the dropped lo * lo <= u^2, 3 u^2.
MODE_PRODUCT_ERROR = {"ieee": 0.0, "tf32": 2 * 2.0**-11 + 2.0**-22, "tf32x3": 3 * 2.0**-22,
                      "bf16": 2 * 2.0**-8 + 2.0**-16, "bf16x3": 3 * 2.0**-16}


def _from_space(space: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.sqrt(1 / C + space.pow(2).sum(-1, keepdim=True)), space], -1)


def _cloud(gen: torch.Generator, n: int, d: int, max_radius: float) -> torch.Tensor:
    """float64 points with radii uniform in [0, max_radius]; row 0 is the origin."""
    u = torch.randn(n, d, dtype=torch.float64, generator=gen)
    u = u / u.norm(dim=-1, keepdim=True)
    r = torch.rand(n, 1, dtype=torch.float64, generator=gen) * max_radius
    r[0] = 0
    return _from_space(torch.sinh(SQRT_C * r) / SQRT_C * u)


def _pairs(gen: torch.Generator, d: int, max_dist: float = 30.0, n: int = ROWS, m: int = COLS
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """x (n, d+1), y (m, d+1) in float64: y[j] = exp_{x[j]}(v_j) with |v_j| from 1e-3 to
    max_dist for j < m - 3, y[m - 3] = x[m - 3] (d = 0), y[m - 2] the origin (as x[0]), the
    rest independent points."""
    x, y = _cloud(gen, n, d, 3.0), _cloud(gen, m, d, 3.0)
    k = m - 3
    lengths = torch.logspace(-3, math.log10(max_dist), k, dtype=torch.float64).unsqueeze(-1)
    lengths = lengths * (1 + 0.1 * torch.rand(k, 1, dtype=torch.float64, generator=gen))
    v = torch.randn(k, d + 1, dtype=torch.float64, generator=gen)
    v = lorentz.proju(x[:k], v, c=C)
    v = v / lorentz.norm(v, keepdim=True) * lengths
    y[:k] = lorentz.expmap(x[:k], v, c=C)
    y[k] = x[k]
    y[k + 1] = x[0]
    return x, y


def _separated(gen: torch.Generator, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Well-conditioned x, y (float64): radii in [0.2, 1.5], every pair at distance >= 0.3
    (y drawn from a pool of candidates, keeping those far from every x)."""
    x = _cloud(gen, ROWS + 1, d, 1.5)[1:]
    pool = _cloud(gen, 20 * COLS, d, 1.5)
    keep = (lorentz.cdist(pool, x, c=C).min(-1).values >= 0.3) & (lorentz.dist0(pool, c=C) > 0.2)
    y = pool[keep][:COLS]
    assert y.shape[0] == COLS, "too few well-separated candidates"
    return x, y


def _compute_eps(dtype: torch.dtype) -> float:
    return torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32).eps


def _dtypes(device: str) -> list[torch.dtype]:
    if device == "cuda":
        return [torch.float32, torch.bfloat16, torch.float16]
    return [torch.float32, torch.bfloat16, torch.float16, torch.float64]


def _max_dist(dtype: torch.dtype) -> float:
    # float16 stores cosh of the rapidity: the partners must stay below 65504.
    return 6.0 if dtype == torch.float16 else 30.0


def _minkowski(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """<x_i, y_j>_L as the reference forms it (one GEMM with the time sign folded into y)."""
    return x @ torch.cat([-y[..., :1], y[..., 1:]], -1).transpose(-1, -2)


def _scale(x64: torch.Tensor, y64: torch.Tensor) -> torch.Tensor:
    """S_ij = sum_k |x_ik| |y_jk|: the size of the terms the inner product cancels."""
    return x64.abs() @ y64.abs().transpose(-1, -2)


def _torch_eta(x: torch.Tensor, y: torch.Tensor) -> float:
    """Inner-product error of the same-dtype torch reference, relative to S (its max)."""
    x64, y64 = x.double(), y.double()
    xc = x.float() if x.dtype != torch.float64 else x
    yc = y.float() if y.dtype != torch.float64 else y
    err = (_minkowski(xc, yc).double() - _minkowski(x64, y64)).abs()
    return (err / _scale(x64, y64)).max().item()


def _assert_within(got: torch.Tensor, x: torch.Tensor, y: torch.Tensor, eta: float,
                   what: str) -> None:
    """Each distance within those an inner-product error eta * c * S allows, + the floor."""
    x64, y64 = x.double(), y.double()
    s = -C * _minkowski(x64, y64)
    ds = C * eta * _scale(x64, y64)
    lo = torch.acosh((s - ds).clamp_min(1)) / SQRT_C
    hi = torch.acosh((s + ds).clamp_min(1)) / SQRT_C
    ref = lorentz.cdist(x64, y64, c=C)
    floor = 4 * torch.finfo(got.dtype).eps * ref + 4 * _compute_eps(got.dtype) / SQRT_C
    g = got.double()
    assert torch.isfinite(g).all(), f"{what}: non-finite distances"
    excess = torch.maximum(lo - floor - g, g - hi - floor)
    if (excess > 0).any():
        i = int(excess.argmax())
        raise AssertionError(
            f"{what}: distance {g.flatten()[i].item():.6g} outside [{lo.flatten()[i].item():.6g},"
            f" {hi.flatten()[i].item():.6g}] +- {floor.flatten()[i].item():.3g} (reference "
            f"{ref.flatten()[i].item():.6g}, eta {eta:.3g})")


def _with_grads(fn: Callable[..., torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                grad: torch.Tensor) -> list[torch.Tensor]:
    xl, yl = x.clone().requires_grad_(), y.clone().requires_grad_()
    out = fn(xl, yl)
    out.backward(grad)
    return [out.detach(), xl.grad, yl.grad]


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("precision", ["auto", "ieee"])
def test_within_twice_torch_error(d: int, precision: str, device: str, fast_modes: tuple,
                                  gen: torch.Generator) -> None:
    """Default (and ieee) precision: distances within 2x the float32 torch GEMM's error."""
    for dtype in _dtypes(device):
        x64, y64 = _pairs(gen, d, _max_dist(dtype))
        x, y = x64.to(device, dtype), y64.to(device, dtype)
        if dtype == torch.float64:  # no exact reference to measure torch's error against
            eta = (d + 3) * _compute_eps(dtype)
        else:
            eta = 2 * _torch_eta(x, y) + _compute_eps(dtype) / 64
        for fast in fast_modes:
            got = lc.forward(x, y, C, precision, fast=fast)
            assert got.dtype == dtype and got.shape == (ROWS, COLS)
            _assert_within(got.cpu(), x.cpu(), y.cpu(), eta, f"{dtype} {precision} fast={fast}")


@pytest.mark.parametrize("precision", list(MODE_PRODUCT_ERROR))
def test_precision_modes(precision: str, device: str, gen: torch.Generator) -> None:
    """Each mode within the worst-case error of its operand rounding plus float32 accumulation
    (accumulation bounded by (K + 2) 2^-23, allowing truncating tensor-core adders)."""
    for d in DIMS:
        x64, y64 = _pairs(gen, d)
        x, y = x64.to(device, torch.float32), y64.to(device, torch.float32)
        eta = MODE_PRODUCT_ERROR[precision] + (d + 3) * 2.0**-23
        got = lc.forward(x, y, C, precision)
        _assert_within(got.cpu(), x.cpu(), y.cpu(), eta, f"{precision} d={d}")


@pytest.mark.parametrize("d", DIMS)
def test_gradients_within_twice_torch_error(d: int, device: str, gen: torch.Generator) -> None:
    x64, y64 = _separated(gen, d)
    grad64 = torch.randn(ROWS, COLS, dtype=torch.float64, generator=gen)
    for dtype in _dtypes(device):
        if dtype == torch.float64:
            continue
        x, y, grad = (t.to(device, dtype) for t in (x64, y64, grad64))
        exact = _with_grads(lambda a, b: lorentz.cdist(a, b, c=C), x.double(), y.double(),
                            grad.double())
        kernel = _with_grads(lambda a, b: lc.lorentz_cdist(a, b, C), x, y, grad)
        torch_same = _with_grads(lambda a, b: lorentz.cdist(a, b, c=C), x, y, grad)
        eps = torch.finfo(dtype).eps
        for name, k, t, e in zip(("out", "grad_x", "grad_y"), kernel, torch_same, exact,
                                 strict=True):
            assert k.dtype == dtype and torch.isfinite(k).all(), f"{dtype} {name}"
            k_err = (k.double().cpu() - e.cpu()).abs().max().item()
            t_err = (t.double().cpu() - e.cpu()).abs().max().item()
            floor = 8 * eps * e.abs().max().item()
            assert k_err <= 2 * t_err + floor, (
                f"{dtype} {name}: kernel error {k_err:.3g} > 2 x torch {t_err:.3g} + {floor:.3g}")


def test_close_and_coincident_pairs_finite_gradients(device: str, gen: torch.Generator) -> None:
    """Duplicates, the origin with itself and pairs at 1e-6 .. 1e-3: finite values and
    gradients (the derivative is infinite at d = 0; the reference's subgradient is finite)."""
    x64, y64 = _pairs(gen, 5, max_dist=6.0)  # float16 holds the coordinates
    y64[:4] = lorentz.expmap(x64[:4], 1e-6 * lorentz.proju(
        x64[:4], torch.randn(4, 6, dtype=torch.float64, generator=gen), c=C), c=C)
    for dtype in _dtypes(device):
        x, y = x64.to(device, dtype), y64.to(device, dtype)
        out, gx, gy = _with_grads(lambda a, b: lc.lorentz_cdist(a, b, C), x, y,
                                  torch.ones(ROWS, COLS, dtype=dtype, device=device))
        for name, t in (("out", out), ("grad_x", gx), ("grad_y", gy)):
            assert torch.isfinite(t).all(), f"{dtype} {name}: non-finite"


def test_zero_distance_subgradient_matches_reference(device: str) -> None:
    """At s = -c<x, x>_L = 1 exactly (origins, c = 4: x_0 = 1/2) the reference's arcosh
    takes the derivative 1 (its floored sqrt): the kernel's gradient is the same."""
    c = 4.0
    x = torch.zeros(3, 4, dtype=torch.float64)
    x[:, 0] = 0.5
    grad = torch.tensor([[1.0, -2.0], [0.5, 3.0], [-1.0, 0.25]], dtype=torch.float64)
    want = _with_grads(lambda a, b: lorentz.cdist(a, b, c=c), x, x[:2], grad)
    got = _with_grads(lambda a, b: lc.lorentz_cdist(a, b, c), x.float().to(device),
                      x[:2].float().to(device), grad.float().to(device))
    for name, g, w in zip(("out", "grad_x", "grad_y"), got, want, strict=True):
        assert torch.allclose(g.double().cpu(), w, atol=1e-6), f"{name}: {g} vs {w}"


def test_gradcheck_float64(device: str, gen: torch.Generator) -> None:
    if device == "cuda":
        pytest.skip("float64 runs under the interpreter only")
    x64, y64 = _separated(gen, 3)
    x = x64[:4].reshape(2, 2, 4).clone().requires_grad_()  # batch axes, broadcast against y
    y = y64[:3].unsqueeze(0).clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: lc.lorentz_cdist(a, b, C), (x, y))


def test_batch_broadcast(device: str, gen: torch.Generator) -> None:
    """Batch axes broadcast; each batch element is the 2-D result of its slices, bit for bit."""
    x64 = _cloud(gen, 2 * 9, 5, 3.0).reshape(2, 1, 9, 6)
    y64 = _cloud(gen, 3 * 7, 5, 3.0).reshape(3, 7, 6)
    x, y = x64.to(device, torch.float32), y64.to(device, torch.float32)
    got = lc.lorentz_cdist(x, y, C)
    assert got.shape == (2, 3, 9, 7)
    for i in range(2):
        for j in range(3):
            assert torch.equal(got[i, j], lc.lorentz_cdist(x[i, 0], y[j], C))


def test_outputs_fully_written(device: str, gen: torch.Generator) -> None:
    """Every element of the NaN-poisoned output buffers is written, forward and weights."""
    x64, y64 = _pairs(gen, 5)
    x, y = x64.to(device, torch.float32), y64.to(device, torch.float32)
    nan = torch.full((ROWS, COLS), float("nan"), device=device)
    out = lc.forward(x, y, C, out=nan.clone())
    assert torch.isfinite(out).all()
    assert torch.equal(out, lc.forward(x, y, C))
    grad = torch.randn(ROWS, COLS, generator=gen).to(device)
    w = lc.weights(x, y, grad, C, out=nan.clone())
    assert torch.isfinite(w).all()


def test_validation(device: str) -> None:
    x = torch.zeros(4, 6, device=device)
    x[:, 0] = 1 / SQRT_C
    cases = [
        ((x[0], x), "needs"),
        ((x, x[:, :5]), "last .manifold. dimensions differ"),
        ((x[:, :1], x[:, :1]), "at least 2 coordinates"),
        ((x.int(), x.int()), "floating dtype"),
        ((x, x.double()), "same dtype"),
        ((x.expand(2, 4, 6), x.expand(3, 4, 6)), "batch shapes do not broadcast"),
    ]
    for args, match in cases:
        with pytest.raises(ValueError, match=match):
            lc.forward(*args, C)
    with pytest.raises(ValueError, match="c must be > 0"):
        lc.forward(x, x, -1.0)
    with pytest.raises(ValueError, match="precision must be one of"):
        lc.forward(x, x, C, "fp8")
    with pytest.raises(ValueError, match="precision must be one of"):
        lc.lorentz_cdist(x, x, C, "tf32x6")
    with pytest.raises(ValueError, match="out must be"):
        lc.forward(x, x, C, out=torch.empty(4, 5, device=device))
    assert lc.forward(x[:0], x, C).shape == (0, 4)


def test_opcheck(device: str, gen: torch.Generator) -> None:
    """torch.library.opcheck: schema, fake (meta) kernel, autograd registration, and the AOT
    dispatch torch.compile uses; batch axes included."""
    x64, y64 = _separated(gen, 5)
    x = x64[:6].reshape(2, 3, 6).to(device, torch.float32).requires_grad_()
    y = y64[:4].to(device, torch.float32).requires_grad_()
    torch.library.opcheck(torch.ops.resnetbk.lorentz_cdist.default, (x, y, C, "auto"))


@pytest.mark.gpu
def test_torch_compile(gen: torch.Generator) -> None:
    x64, y64 = _separated(gen, 64)
    x, y = x64.float().cuda(), y64.float().cuda()
    grad = torch.randn(ROWS, COLS, generator=gen).cuda()

    def loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (lc.lorentz_cdist(a, b, C) * grad).sum()

    eager = _with_grads(lambda a, b: lc.lorentz_cdist(a, b, C), x, y, grad)
    compiled = torch.compile(loss, fullgraph=True)
    xl, yl = x.clone().requires_grad_(), y.clone().requires_grad_()
    value = compiled(xl, yl)
    value.backward()
    assert torch.allclose(value, (eager[0] * grad).sum(), rtol=1e-5)
    assert torch.allclose(xl.grad, eager[1], rtol=1e-5, atol=1e-6)
    assert torch.allclose(yl.grad, eager[2], rtol=1e-5, atol=1e-6)
