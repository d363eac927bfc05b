"""PoincareLinear and PoincareMLR (HNN++) against an independent float64 reference."""

from __future__ import annotations

import copy
import math

import mpmath as mp
import pytest
import torch
from geoopt.manifolds.stereographic import math as gmath

from resnetbk.geometry import poincare
from resnetbk.geometry.numerics import BALL_EPS
from resnetbk.nn import PoincareLinear, PoincareMLR

DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]
F64 = torch.float64


def rand_c(gen: torch.Generator) -> float:
    return float(torch.empty((), dtype=F64).uniform_(0.3, 3.0, generator=gen))


def ball_points(n: int, d: int, c: float, gen: torch.Generator, dtype: torch.dtype = F64,
                max_radius: float = 0.95, near_boundary: int = 0) -> torch.Tensor:
    """n random points of the ball (the origin first); the last ``near_boundary`` of them at
    sqrt(c)|x| = 1 - BALL_EPS[dtype], the farthest a geometry function returns in ``dtype``."""
    direction = torch.randn(n, d, dtype=F64, generator=gen)
    direction = direction / direction.norm(dim=-1, keepdim=True)
    radius = torch.rand(n, 1, dtype=F64, generator=gen) * max_radius
    radius[0] = 0
    if near_boundary:
        radius[-near_boundary:] = 1 - BALL_EPS[dtype]
    return poincare.project((direction * radius / math.sqrt(c)).to(dtype), c=c)


def assert_in_ball(y: torch.Tensor, c: float) -> None:
    yd = y.double()
    assert torch.isfinite(yd).all(), "non-finite output"
    assert (math.sqrt(c) * yd.norm(dim=-1) < 1).all(), "output outside the ball"


def randomize_(layer: torch.nn.Module, gen: torch.Generator, scale: float = 0.5) -> None:
    """Give every weight and bias a non-trivial value (HNN++ init has r = 0)."""
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if not name.startswith("manifold"):
                p.copy_(torch.randn(p.shape, dtype=F64, generator=gen) * scale)


# ----------------------------------------------------------------------------- reference
def reference_mlr(x: torch.Tensor, z: torch.Tensor, r: torch.Tensor, c: float) -> torch.Tensor:
    """HNN++ logits class by class from their geometric definition (Shimizu et al. 2021,
    Sec. 3.1): q_k = exp_0(r_k [z_k]), a_k = P_{0->q_k}(z_k), and
    v_k(x) = lambda_{q_k} |a_k| * signed distance of x to the hyperplane H(a_k, q_k),
    with geoopt's stereographic math at k = -c (Ganea et al. 2018's distance to a hyperplane).

    geoopt's arsinh is log(x + sqrt(1 + x^2)), which cancels for negative x, so the distance is
    taken unsigned (positive argument, accurate) and the sign from <(-q_k) ⊕ x, a_k>."""
    k = torch.tensor(-c, dtype=F64)
    cols = []
    for j in range(z.shape[1]):
        zj = z[:, j]
        q = gmath.expmap0(r[j] * zj / zj.norm(), k=k)
        a = gmath.parallel_transport0(q, zj, k=k)
        side = torch.sign((gmath.mobius_add(-q, x, k=k) * a).sum(-1))
        d = side * gmath.dist2plane(x, p=q, a=a, k=k, signed=False)
        cols.append(gmath.lambda_x(q, k=k) * a.norm() * d)
    return torch.stack(cols, dim=-1)


def reference_linear(x: torch.Tensor, z: torch.Tensor, r: torch.Tensor, c: float) -> torch.Tensor:
    """HNN++ eq. 8, written naively: w = sinh(sqrt(c) v)/sqrt(c), y = w/(1 + sqrt(1 + c|w|^2))."""
    v = reference_mlr(x, z, r, c)
    w = torch.sinh(math.sqrt(c) * v) / math.sqrt(c)
    return w / (1 + torch.sqrt(1 + c * w.pow(2).sum(-1, keepdim=True)))


def mp_linear(x: torch.Tensor, z: torch.Tensor, r: torch.Tensor, c: float) -> torch.Tensor:
    """``reference_linear`` in mpmath at 60 digits, v_k from the same geometric definition as
    ``reference_mlr``: the oracle where float64 forms lose digits (geoopt's distance to a
    hyperplane far from the origin, e.g. 2 sqrt(c) |r_k| ~ 10, loses ~1e-9 relative, which
    sinh of |v| ~ 300 turns into ~1e-6 in y)."""
    with mp.workdps(60):
        cm = mp.mpf(c)
        sc = mp.sqrt(cm)

        def dot(a: list, b: list) -> mp.mpf:
            return mp.fsum(p * q for p, q in zip(a, b, strict=True))

        def mobius_add(a: list, b: list) -> list:
            ab, a2, b2 = dot(a, b), dot(a, a), dot(b, b)
            den = 1 + 2 * cm * ab + cm * cm * a2 * b2
            return [((1 + 2 * cm * ab + cm * b2) * p + (1 - cm * a2) * q) / den
                    for p, q in zip(a, b, strict=True)]

        planes = []
        for k, rk in enumerate(r.tolist()):
            zk = [mp.mpf(t) for t in z[:, k].tolist()]
            zn = mp.sqrt(dot(zk, zk))
            q = [mp.tanh(sc * rk) / sc * t / zn for t in zk]  # exp_0(r_k z_k / |z_k|)
            lam_q = 2 / (1 - cm * dot(q, q))
            planes.append((q, [2 / lam_q * t for t in zk], lam_q))  # a_k = P_{0->q}(z_k)
        rows = []
        for row in x.tolist():
            w = []
            for q, a, lam_q in planes:
                m = mobius_add([-t for t in q], [mp.mpf(t) for t in row])
                an = mp.sqrt(dot(a, a))
                d = mp.asinh(2 * sc * dot(m, a) / ((1 - cm * dot(m, m)) * an)) / sc
                w.append(mp.sinh(sc * lam_q * an * d) / sc)
            scale = 1 + mp.sqrt(1 + cm * dot(w, w))
            rows.append([float(t / scale) for t in w])
    return torch.tensor(rows, dtype=F64)


def test_mlr_matches_reference(gen: torch.Generator) -> None:
    c = rand_c(gen)
    mlr = PoincareMLR(5, 4, c=c).double()
    randomize_(mlr, gen)
    x = ball_points(64, 5, c, gen, max_radius=0.99)
    out = mlr(x)
    ref = reference_mlr(x, mlr.weight.detach(), mlr.bias.detach(), c)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


def test_linear_matches_reference(gen: torch.Generator) -> None:
    c = rand_c(gen)
    lin = PoincareLinear(5, 3, c=c).double()
    randomize_(lin, gen)
    x = ball_points(64, 5, c, gen, max_radius=0.99)
    y = lin(x)
    z, r = lin.weight.detach(), lin.bias.detach()
    torch.testing.assert_close(y, reference_linear(x, z, r, c), rtol=1e-10, atol=1e-10)
    # The defining property (HNN++ Sec. 3.2): the signed distance of y to the hyperplane through
    # the origin orthogonal to the k-th axis is v_k(x).
    # Recovering v from y loses digits as y nears the boundary (1 - c|y|^2 cancels): check the
    # rows with sqrt(c)|y| < 1 - 1e-4, where float64 leaves better than 1e-9.
    keep = math.sqrt(c) * y.norm(dim=-1) < 1 - 1e-4
    k = torch.tensor(-c, dtype=F64)
    v = reference_mlr(x, z, r, c)[keep]
    for j in range(3):
        e = torch.zeros(3, dtype=F64)
        e[j] = 1
        d = gmath.dist2plane(y[keep], p=torch.zeros(3, dtype=F64), a=e, k=k, signed=False)
        torch.testing.assert_close(torch.sign(y[keep, j]) * d, v[:, j], rtol=1e-9, atol=1e-9)


def test_linear_without_bias_is_reference_with_zero_bias(gen: torch.Generator) -> None:
    c = rand_c(gen)
    lin = PoincareLinear(4, 6, c=c, bias=False).double()
    randomize_(lin, gen)
    assert lin.bias is None
    x = ball_points(16, 4, c, gen)
    ref = reference_linear(x, lin.weight.detach(), torch.zeros(6, dtype=F64), c)
    torch.testing.assert_close(lin(x), ref, rtol=1e-10, atol=1e-10)


def test_linear_no_overflow_for_large_distances(gen: torch.Generator) -> None:
    """sqrt(c)|v| of a few hundred: sinh overflows float32, the naive formula gives NaN. The
    float64 layer matches the 60-digit oracle to 1e-10."""
    c = rand_c(gen)
    lin = PoincareLinear(4, 5, c=c).double()
    randomize_(lin, gen, scale=1.0)
    x = ball_points(32, 4, c, gen, max_radius=0.99)[1:]
    # v_k is proportional to |z_k| at fixed direction and r_k: scale each column so that its
    # largest sqrt(c)|v_k| over the batch is in [150, 340]: float32 sinh overflows beyond 89, the
    # naive float64 reference (|w|^2 = sinh^2) beyond 354.
    with torch.no_grad():
        s = math.sqrt(c) * reference_mlr(x, lin.weight, lin.bias, c)
        target = torch.empty(5, dtype=F64).uniform_(150, 340, generator=gen)
        lin.weight.mul_(target / s.abs().amax(0))
    v = reference_mlr(x, lin.weight.detach(), lin.bias.detach(), c)
    s_max = (math.sqrt(c) * v).abs().amax(-1)
    assert (s_max > 89).any() and (s_max < 350).all(), "test setup: wrong range"
    ref = mp_linear(x, lin.weight.detach(), lin.bias.detach(), c)
    torch.testing.assert_close(lin(x), poincare.project(ref, c=c), rtol=1e-10, atol=1e-10)
    y32 = copy.deepcopy(lin).float()(x.float())
    assert_in_ball(y32, c)
    unit = ref / ref.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(y32.double() / y32.double().norm(dim=-1, keepdim=True), unit,
                               rtol=0, atol=2e-3)


# ----------------------------------------------------------------------------- dtypes
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layer_dtype", ["same", "float32"])
def test_outputs_in_ball_all_dtypes(dtype: torch.dtype, layer_dtype: str,
                                    gen: torch.Generator) -> None:
    c = rand_c(gen)
    lin = PoincareLinear(6, 5, c=c, learnable_c=layer_dtype == "float32")
    # A learnable c is exp(log c) with log c stored in float32: use the layer's actual c (a
    # float64 point at 1 - 1e-12 of the nominal ball may lie outside the layer's ball).
    c_lin = float(lin.manifold.c_detached())
    mlr = PoincareMLR(6, 3, c=c_lin)
    randomize_(lin, gen, scale=0.5)
    randomize_(mlr, gen, scale=0.5)
    if layer_dtype == "same":
        lin, mlr = lin.to(dtype), mlr.to(dtype)
    x = ball_points(200, 6, c_lin, gen, dtype=dtype, near_boundary=50)
    y = lin(x)
    assert y.dtype == dtype
    assert_in_ball(y, c_lin)
    logits = mlr(x)
    assert logits.dtype == dtype
    assert torch.isfinite(logits).all()
    # Accuracy of the float32 internal computation: compare with a float64 copy of the same
    # (rounded) parameters on the same (rounded) inputs, away from the boundary (there
    # lambda_x = 2/(1 - c|x|^2) computed in float32 loses digits to cancellation). Outputs are
    # compared with the float64 result projected to the output dtype's margin from the boundary.
    xm = x[:150].double()
    y64 = copy.deepcopy(lin).double()(xm)
    max_norm = (1 - BALL_EPS[dtype]) / math.sqrt(c_lin)
    y64 = y64 * (max_norm / y64.norm(dim=-1, keepdim=True)).clamp_max(1)
    tols = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 1e-2,
            torch.float16: 2e-3}
    # A float32 layer's learnable c is exp(float32 log c) evaluated in float32; its float64
    # copy evaluates exp in float64, so they differ at float32 precision.
    tol = max(tols[dtype], tols[torch.float32]) if layer_dtype == "float32" else tols[dtype]
    torch.testing.assert_close(y[:150].double(), y64, rtol=0, atol=tol / math.sqrt(c_lin))
    lg64 = copy.deepcopy(mlr).double()(xm)
    torch.testing.assert_close(logits[:150].double(), lg64, rtol=tol, atol=tol)


# ----------------------------------------------------------------------------- gradients
def _gradcheck_layer(layer: torch.nn.Module, x: torch.Tensor) -> None:
    names = [n for n, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_() for _, p in layer.named_parameters()]

    def f(inp: torch.Tensor, *ps: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(layer, dict(zip(names, ps, strict=True)), (inp,))

    assert torch.autograd.gradcheck(f, (x.requires_grad_(), *params))


@pytest.mark.parametrize("learnable_c", [False, True])
def test_gradcheck(learnable_c: bool, gen: torch.Generator) -> None:
    c = rand_c(gen)
    lin = PoincareLinear(3, 4, c=c, learnable_c=learnable_c).double()
    mlr = PoincareMLR(3, 2, c=c, learnable_c=learnable_c).double()
    randomize_(lin, gen)
    randomize_(mlr, gen)
    x = ball_points(5, 3, c, gen, max_radius=0.9)[1:]
    _gradcheck_layer(lin, x.clone())
    _gradcheck_layer(mlr, x.clone())


@pytest.mark.parametrize("learnable_c", [False, True])
def test_every_parameter_gets_gradient(learnable_c: bool, gen: torch.Generator) -> None:
    c = rand_c(gen)
    net = torch.nn.Sequential(PoincareLinear(4, 6, c=c, learnable_c=learnable_c),
                              PoincareMLR(6, 3, c=c, learnable_c=learnable_c))
    names = {n for n, _ in net.named_parameters()}
    assert any(n.endswith("manifold.log_c") for n in names) == learnable_c
    x = ball_points(32, 4, c, gen, dtype=torch.float32)  # HNN++ init: r = 0
    (net(x) * torch.randn(32, 3, generator=gen)).sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} got a zero gradient"


def test_gradient_through_origin(gen: torch.Generator) -> None:
    """At x = 0 with r = 0 all v_k are exactly 0: the layer must still pass gradients."""
    lin = PoincareLinear(3, 4)
    x = torch.zeros(2, 3, requires_grad=True)
    (lin(x) * torch.randn(2, 4, generator=gen)).sum().backward()
    assert x.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- modules
@pytest.mark.parametrize("cls", [PoincareLinear, PoincareMLR])
@pytest.mark.parametrize("learnable_c", [False, True])
def test_deepcopy_and_state_dict(cls: type, learnable_c: bool, gen: torch.Generator) -> None:
    c = rand_c(gen)
    layer = cls(4, 3, c=c, learnable_c=learnable_c)
    randomize_(layer, gen)
    x = ball_points(8, 4, c, gen, dtype=torch.float32)
    out = layer(x)
    twin = copy.deepcopy(layer)
    assert torch.equal(twin(x), out)
    with torch.no_grad():
        twin.weight.add_(1.0)
    assert torch.equal(layer(x), out), "deepcopy shares storage with the original"
    fresh = cls(4, 3, c=2 * c + 1, learnable_c=learnable_c)
    fresh.load_state_dict(layer.state_dict())
    assert float(fresh.manifold.c_detached()) == pytest.approx(c, rel=1e-6)
    assert torch.equal(fresh(x), out)


def test_repr() -> None:
    assert "in_features=3, out_features=4, bias=False" in repr(PoincareLinear(3, 4, bias=False))
    assert "in_features=3, num_classes=7" in repr(PoincareMLR(3, 7))
    assert "learnable=True" in repr(PoincareLinear(3, 4, learnable_c=True))


def test_input_errors() -> None:
    lin, mlr = PoincareLinear(3, 4), PoincareMLR(3, 2)
    for layer in (lin, mlr):
        with pytest.raises(ValueError, match="in_features"):
            layer(torch.zeros(2, 4))
        with pytest.raises(ValueError, match="floating"):
            layer(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="out_features"):
        PoincareLinear(3, 0)
    with pytest.raises(ValueError, match="num_classes"):
        PoincareMLR(3, 2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="c must be > 0"):
        PoincareLinear(3, 4, c=-1.0)


# ----------------------------------------------------------------------------- learning
def test_two_layer_network_fits_blobs(gen: torch.Generator) -> None:
    """PoincareLinear + PoincareMLR, trained with Adam, separates 3 hyperbolic blobs."""
    n_per, c = 60, 1.0
    angles = torch.tensor([0.0, 2 * math.pi / 3, 4 * math.pi / 3])
    centers = 1.5 * torch.stack([angles.cos(), angles.sin()], dim=-1)
    labels = torch.arange(3).repeat_interleave(n_per)
    tangent = centers[labels] + 0.3 * torch.randn(3 * n_per, 2, generator=gen)
    x = poincare.expmap0(tangent, c=c)
    net = torch.nn.Sequential(PoincareLinear(2, 8, c=c), PoincareMLR(8, 3, c=c))
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), labels)
        loss.backward()
        opt.step()
    accuracy = (net(x).argmax(-1) == labels).float().mean().item()
    assert accuracy > 0.9, f"training accuracy {accuracy:.3f}, final loss {loss.item():.3f}"
