"""Autograd: gradcheck (float64) on every op w.r.t. every tensor input and, for a few ops, a
tensor curvature; finite, non-vanishing gradients at the ball boundary in low precision."""

from __future__ import annotations

import math
from collections.abc import Callable

import _geo as G
import pytest
import torch
from torch.autograd import gradcheck

from resnetbk.geometry import convert, lorentz, poincare

C = 0.8
N, D = 3, 3


def inputs(gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Moderate points (rapidity <= 3), pairwise distinct, and tangent vectors."""
    x, y, z = (G.ball(gen, N, D, C, rmax=3.0) for _ in range(3))
    X, Y, Z = (G.hyperboloid(gen, N, D, C, rmax=3.0) for _ in range(3))
    return {
        "x": x, "y": y, "z": z,
        "u": 0.5 * torch.randn(N, D, generator=gen, dtype=G.F64),
        "v": 0.5 * torch.randn(N, D, generator=gen, dtype=G.F64),
        "r": torch.randn(N, 1, generator=gen, dtype=G.F64),
        "m": torch.randn(D + 1, D, generator=gen, dtype=G.F64),
        "mlr_z": torch.randn(D, 4, generator=gen, dtype=G.F64),
        "mlr_r": 0.3 * torch.randn(4, generator=gen, dtype=G.F64),
        "w": torch.rand(N, generator=gen, dtype=G.F64) + 0.2,
        "X": X, "Y": Y, "Z": Z,
        "U": G.lorentz_tangent(gen, X, C, scale=0.7),
        "V": G.lorentz_tangent(gen, X, C, scale=0.7),
        "T0": torch.cat([torch.zeros(N, 1, dtype=G.F64),
                         torch.randn(N, D, generator=gen, dtype=G.F64)], -1),
        "E": torch.randn(N, D + 1, generator=gen, dtype=G.F64),
        "K": convert.poincare_to_klein(y, c=C),
    }


P, L, CV = poincare, lorentz, convert
OPS: dict[str, tuple[Callable, tuple[str, ...]]] = {
    "p.mobius_add": (lambda x, y: P.mobius_add(x, y, c=C), ("x", "y")),
    "p.mobius_sub": (lambda x, y: P.mobius_sub(x, y, c=C), ("x", "y")),
    "p.mobius_scalar_mul": (lambda r, x: P.mobius_scalar_mul(r, x, c=C), ("r", "x")),
    "p.mobius_matvec": (lambda m, x: P.mobius_matvec(m, x, c=C), ("m", "x")),
    "p.gyration": (lambda a, b, u: P.gyration(a, b, u, c=C), ("x", "y", "u")),
    "p.expmap": (lambda x, u: P.expmap(x, u, c=C), ("x", "u")),
    "p.logmap": (lambda x, y: P.logmap(x, y, c=C), ("x", "y")),
    "p.expmap0": (lambda u: P.expmap0(u, c=C), ("u",)),
    "p.logmap0": (lambda y: P.logmap0(y, c=C), ("y",)),
    "p.dist": (lambda x, y: P.dist(x, y, c=C), ("x", "y")),
    "p.dist0": (lambda x: P.dist0(x, c=C), ("x",)),
    "p.project": (lambda u: P.project(u, c=C), ("u",)),
    "p.lambda_x": (lambda x: P.lambda_x(x, c=C), ("x",)),
    "p.inner": (lambda x, u, v: P.inner(x, u, v, c=C), ("x", "u", "v")),
    "p.parallel_transport": (lambda x, y, v: P.parallel_transport(x, y, v, c=C),
                             ("x", "y", "v")),
    "p.parallel_transport0": (lambda y, v: P.parallel_transport0(y, v, c=C), ("y", "v")),
    "p.egrad2rgrad": (lambda x, g: P.egrad2rgrad(x, g, c=C), ("x", "u")),
    "p.midpoint": (lambda x, y, z, w: P.midpoint(torch.stack([x, y, z]), c=C, weights=w,
                                                dim=0), ("x", "y", "z", "w")),
    "p.unidirectional_mlr": (lambda x, z, r: P.unidirectional_mlr(x, z, r, c=C),
                             ("x", "mlr_z", "mlr_r")),
    "l.inner": (lambda u, v: L.inner(u, v), ("U", "E")),
    "l.norm": (lambda u: L.norm(u), ("U",)),
    "l.expmap": (lambda x, u: L.expmap(x, u, c=C), ("X", "U")),
    "l.expmap0": (lambda u: L.expmap0(u, c=C), ("T0",)),
    "l.logmap": (lambda x, y: L.logmap(x, y, c=C), ("X", "Y")),
    "l.logmap0": (lambda y: L.logmap0(y, c=C), ("Y",)),
    "l.dist": (lambda x, y: L.dist(x, y, c=C), ("X", "Y")),
    "l.dist0": (lambda x: L.dist0(x, c=C), ("X",)),
    "l.cdist": (lambda x, y: L.cdist(x, y, c=C), ("X", "Y")),
    "l.project": (lambda x: L.project(x, c=C), ("E",)),
    "l.from_spatial": (lambda s: L.from_spatial(s, c=C), ("u",)),
    "l.proju": (lambda x, u: L.proju(x, u, c=C), ("X", "E")),
    "l.parallel_transport": (lambda x, y, v: L.parallel_transport(x, y, v, c=C),
                             ("X", "Y", "V")),
    "l.egrad2rgrad": (lambda x, g: L.egrad2rgrad(x, g, c=C), ("X", "E")),
    "l.centroid": (lambda x, y, z, w: L.centroid(torch.stack([x, y, z]), c=C, weights=w,
                                                dim=0), ("X", "Y", "Z", "w")),
    "cv.lorentz_to_poincare": (lambda x: CV.lorentz_to_poincare(x, c=C), ("X",)),
    "cv.poincare_to_lorentz": (lambda p: CV.poincare_to_lorentz(p, c=C), ("x",)),
    "cv.lorentz_to_klein": (lambda x: CV.lorentz_to_klein(x, c=C), ("X",)),
    "cv.klein_to_lorentz": (lambda k: CV.klein_to_lorentz(k, c=C), ("K",)),
    "cv.poincare_to_klein": (lambda p: CV.poincare_to_klein(p, c=C), ("x",)),
    "cv.klein_to_poincare": (lambda k: CV.klein_to_poincare(k, c=C), ("K",)),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_gradcheck(gen: torch.Generator, name: str) -> None:
    fn, args = OPS[name]
    data = inputs(gen)
    if name == "p.project":
        data["u"] = 2 * data["u"] + G.unit(gen, N, D) * 2 / math.sqrt(C)  # outside the ball
    tensors = tuple(data[a].clone().requires_grad_() for a in args)
    assert gradcheck(fn, tensors)


CURVATURE_OPS: dict[str, tuple[Callable, tuple[str, ...]]] = {
    "p.mobius_add": (lambda x, y, c: P.mobius_add(x, y, c=c), ("x", "y")),
    "p.dist": (lambda x, y, c: P.dist(x, y, c=c), ("x", "y")),
    "p.logmap": (lambda x, y, c: P.logmap(x, y, c=c), ("x", "y")),
    "p.expmap": (lambda x, u, c: P.expmap(x, u, c=c), ("x", "u")),
    "p.midpoint": (lambda x, y, c: P.midpoint(torch.stack([x, y], -2), c=c.unsqueeze(-1)),
                   ("x", "y")),
    "l.dist": (lambda x, y, c: L.dist(x, y, c=c), ("X", "Y")),
    "l.expmap0": (lambda u, c: L.expmap0(u, c=c), ("T0",)),
    "l.logmap": (lambda x, y, c: L.logmap(x, y, c=c), ("X", "Y")),
    "l.cdist": (lambda x, y, c: L.cdist(x, y, c=c), ("X", "Y")),
    "cv.lorentz_to_poincare": (lambda x, c: CV.lorentz_to_poincare(x, c=c), ("X",)),
}


@pytest.mark.parametrize("shape", [(), (N, 1)], ids=["scalar", "per-row"])
@pytest.mark.parametrize("name", sorted(CURVATURE_OPS))
def test_gradcheck_curvature(gen: torch.Generator, name: str, shape: tuple[int, ...]) -> None:
    """Learnable curvature: gradients w.r.t. a tensor c (and the other inputs) are exact. The
    points stay fixed in their coordinates while c varies (they stay inside the ball)."""
    fn, args = CURVATURE_OPS[name]
    data = inputs(gen)
    c = (C * (1 + 0.1 * torch.rand(shape, generator=gen, dtype=G.F64))).requires_grad_()
    tensors = (*(data[a].clone().requires_grad_() for a in args), c)
    assert gradcheck(fn, tensors)
    out = fn(*tensors)
    (grad,) = torch.autograd.grad(out.sum(), c)
    assert bool((grad != 0).all())


@pytest.mark.parametrize("name", ["p.logmap", "l.logmap", "p.expmap0", "l.dist_origin",
                                  "l.logmap_origin", "l.expmap_zero", "p.midpoint_same",
                                  "l.centroid_same", "l.expmap0_zero", "l.project_origin",
                                  "p.project_origin"])
def test_gradcheck_at_special_points(gen: torch.Generator, name: str) -> None:
    """Points where a naive formula divides 0 by 0 but the function is smooth: log_x(y) at
    y = x, exp_0 at 0, distances from the origin, exp_x(0), means of identical points."""
    data = inputs(gen)
    x, X = data["x"], data["X"]
    o = L.origin(D, c=C, dtype=G.F64).expand(N, D + 1).clone()
    cases = {
        "p.logmap": (lambda a, b: P.logmap(a, b, c=C), (x, x)),
        "l.logmap": (lambda a, b: L.logmap(a, b, c=C), (X, X)),
        "p.expmap0": (lambda u: P.expmap0(u, c=C), (torch.zeros(N, D, dtype=G.F64),)),
        "l.dist_origin": (lambda a, b: L.dist(a, b, c=C), (o, X)),
        "l.logmap_origin": (lambda a, b: L.logmap(a, b, c=C), (o, X)),
        "l.expmap_zero": (lambda a, u: L.expmap(a, u, c=C), (X, torch.zeros_like(X))),
        "p.midpoint_same": (lambda a, b: P.midpoint(torch.stack([a, b], -2), c=C), (x, x)),
        "l.centroid_same": (lambda a, b: L.centroid(torch.stack([a, b], -2), c=C), (X, X)),
        # the range caps must not put 0 * Inf into the gradient at the origin
        "l.expmap0_zero": (lambda u: L.expmap0(u, c=C), (torch.zeros(N, D + 1, dtype=G.F64),)),
        "l.project_origin": (lambda a: L.project(a, c=C), (o,)),
        "p.project_origin": (lambda a: P.project(a, c=C), (torch.zeros(N, D, dtype=G.F64),)),
    }
    fn, args = cases[name]
    assert gradcheck(fn, tuple(a.clone().requires_grad_() for a in args))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_boundary_gradients_are_finite_and_not_cut(gen: torch.Generator, dtype: torch.dtype
                                                  ) -> None:
    """At the ball boundary (1 - 1e-6, beyond the read radius in every low dtype) gradients
    are finite; at points on the output guard (what ``project`` returns) the read guard does not
    cut the radial gradient (dist0 still pulls inward)."""
    c = 1.3
    x = (G.ball_boundary(gen, 16, 4, c)).to(dtype).requires_grad_()
    y = (G.ball_boundary(gen, 16, 4, c)).to(dtype).requires_grad_()
    u = (1e-3 * torch.randn(16, 4, generator=gen, dtype=G.F64)).to(dtype).requires_grad_()
    outs = [P.dist(x, y, c=c), P.dist0(x, c=c), P.logmap(x, y, c=c), P.mobius_add(x, y, c=c),
            P.expmap(x, u, c=c), P.parallel_transport(x, y, u, c=c), P.lambda_x(x, c=c),
            P.midpoint(torch.stack([x, y], -2), c=c), P.mobius_scalar_mul(0.5, x, c=c),
            CV.poincare_to_lorentz(x, c=c)]
    loss = sum(o.float().sum() for o in outs)
    loss.backward()
    for t in (x, y, u):
        assert t.grad is not None and bool(torch.isfinite(t.grad).all())
    guard = P.project(x.detach() * 2, c=c).requires_grad_()
    P.dist0(guard, c=c).sum().backward()
    radial = (guard.grad.float() * guard.detach().float()).sum(-1)
    assert bool((radial > 0).all())
    far = G.hyperboloid_at(30.0 if dtype != torch.float16 else 8.0, G.unit(gen, 16, 4), c)
    X = far.to(dtype).requires_grad_()
    Y = G.hyperboloid_at(2.0, G.unit(gen, 16, 4), c).to(dtype).requires_grad_()
    loss = L.dist(X, Y, c=c).float().sum() + L.logmap(X, Y, c=c).float().sum()
    loss.backward()
    assert bool(torch.isfinite(X.grad).all()) and bool(torch.isfinite(Y.grad).all())


def test_minkowski_dot_backward(gen: torch.Generator) -> None:
    """The custom backward of the one-pass Minkowski product used by lorentz.dist, including
    second derivatives (its backward is made of differentiable ops)."""
    x, y = (torch.randn(N, 3, D + 1, generator=gen, dtype=G.F64).requires_grad_()
            for _ in range(2))
    assert gradcheck(L._MinkowskiDot.apply, (x, y))
    assert torch.autograd.gradgradcheck(L._MinkowskiDot.apply, (x, y))
    torch.testing.assert_close(L._MinkowskiDot.apply(x, y), L.inner(x, y, keepdim=True))


@pytest.mark.parametrize("name", ["asinhc", "tanhc"])
def test_series_helpers_have_finite_gradients_at_huge_inputs(name: str) -> None:
    """The Taylor branch of a ``where`` must not see huge inputs: its inf times where's 0 is a
    NaN gradient (seen as NaN training steps through lorentz.logmap0 at rapidity > ~12)."""
    from resnetbk.geometry import numerics

    f = getattr(numerics, name)
    x = torch.tensor([0.0, 1e-3, 0.5, 30.0, 1e7, 1e30], requires_grad=True)
    f(x).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_logmap0_gradient_is_finite_far_from_the_origin() -> None:
    space = (torch.randn(4, 3) * 1e6).requires_grad_()
    lorentz.logmap0(lorentz.from_spatial(space, c=1.0), c=1.0).sum().backward()
    assert torch.isfinite(space.grad).all()


@pytest.mark.parametrize("name", ["mobius_add", "dist", "logmap", "expmap"])
def test_gradients_finite_at_the_origin(name: str, gen: torch.Generator) -> None:
    """x = 0 (a zero-initialised bias, the origin) is an ordinary point: finite gradients.
    Regression: sqrt(|x|^2) in the input reading gave 0 * inf = NaN there."""
    from resnetbk.geometry import poincare

    x = torch.zeros(3, 4, dtype=torch.float64, requires_grad=True)
    y = (0.1 * torch.randn(3, 4, dtype=torch.float64, generator=gen)).requires_grad_()
    out = getattr(poincare, name)(x, y, c=1.0)
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()
