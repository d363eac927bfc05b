"""Property tests (hypothesis, float64): identities every correct implementation satisfies.

Each example draws a seed, a curvature and a dimension; points are drawn at rapidity (sqrt(c)
times the distance from the origin) up to 4, the regime where float64 keeps ~13 digits through
every op, so the tolerances (1e-9 relative unless noted) are far above rounding and far below
any formula error.
"""

from __future__ import annotations

import math

import _geo as G
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from resnetbk.geometry import convert, lorentz, poincare

seeds = st.integers(0, 2**62)
curvatures = st.sampled_from(G.CURVATURES)
dims = st.integers(2, 6)
N = 8
RTOL = 1e-9


def close(a: torch.Tensor, b: torch.Tensor, rtol: float = RTOL, atol: float = 1e-11) -> None:
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------- Poincaré


@G.PROPS
@given(seeds, curvatures, dims)
def test_left_cancellation(seed: int, c: float, d: int) -> None:
    g = G.generator(seed)
    a, b = G.ball(g, N, d, c), G.ball(g, N, d, c)
    close(poincare.mobius_add(-a, poincare.mobius_add(a, b, c=c), c=c), b)
    close(poincare.mobius_sub(a, a, c=c), torch.zeros_like(a), atol=1e-15)


@G.PROPS
@given(seeds, curvatures, dims)
def test_gyrocommutativity(seed: int, c: float, d: int) -> None:
    g = G.generator(seed)
    a, b = G.ball(g, N, d, c), G.ball(g, N, d, c)
    ab = poincare.mobius_add(a, b, c=c)
    ba = poincare.mobius_add(b, a, c=c)
    close(ab, poincare.gyration(a, b, ba, c=c))


@G.PROPS
@given(seeds, curvatures, dims)
def test_gyration_matches_its_definition(seed: int, c: float, d: int) -> None:
    g = G.generator(seed)
    a, b, u = G.ball(g, N, d, c), G.ball(g, N, d, c), G.ball(g, N, d, c)
    add = lambda p, q: poincare.mobius_add(p, q, c=c)  # noqa: E731
    by_definition = add(-add(a, b), add(a, add(b, u)))
    close(poincare.gyration(a, b, u, c=c), by_definition)
    # A gyration is an orthogonal linear map: it preserves the Euclidean norm.
    close(poincare.gyration(a, b, u, c=c).norm(dim=-1), u.norm(dim=-1))


@G.PROPS
@given(seeds, curvatures, dims)
def test_poincare_log_inverts_exp(seed: int, c: float, d: int) -> None:
    g = G.generator(seed)
    x = G.ball(g, N, d, c)
    # Tangent vectors of Riemannian norm up to ~3 / sqrt(c).
    u = torch.randn(N, d, generator=g, dtype=G.F64) / poincare.lambda_x(x, c=c, keepdim=True)
    u = u / math.sqrt(c)
    close(poincare.logmap(x, poincare.expmap(x, u, c=c), c=c), u, rtol=1e-8, atol=1e-12)
    y = G.ball(g, N, d, c)
    close(poincare.expmap(x, poincare.logmap(x, y, c=c), c=c), y)
    close(poincare.logmap0(poincare.expmap0(u, c=c), c=c), u, rtol=1e-8, atol=1e-12)


@G.PROPS
@given(seeds, curvatures, dims)
def test_poincare_dist_is_riemannian_norm_of_log(seed: int, c: float, d: int) -> None:
    g = G.generator(seed)
    x, y = G.ball(g, N, d, c), G.ball(g, N, d, c)
    u = poincare.logmap(x, y, c=c)
    riemannian = poincare.lambda_x(x, c=c) * u.norm(dim=-1)
    close(poincare.dist(x, y, c=c), riemannian)
    close(poincare.inner(x, u, u, c=c).sqrt(), riemannian)
    close(poincare.dist0(y, c=c), poincare.dist(torch.zeros_like(y), y, c=c))


@G.PROPS
@given(seeds, curvatures, dims)
def test_poincare_metric_axioms(seed: int, c: float, d: int) -> None:
    g = G.generator(seed)
    x, y, z = (G.ball(g, N, d, c) for _ in range(3))
    dxy, dyx = poincare.dist(x, y, c=c), poincare.dist(y, x, c=c)
    close(dxy, dyx)
    assert bool((dxy >= 0).all())
    assert bool((poincare.dist(x, x, c=c) == 0).all())
    slack = 1e-12 * (1 + dxy)
    assert bool((dxy <= poincare.dist(x, z, c=c) + poincare.dist(z, y, c=c) + slack).all())
    # Möbius addition is an isometry (left translation).
    close(poincare.dist(poincare.mobius_add(z, x, c=c), poincare.mobius_add(z, y, c=c), c=c), dxy)


@G.PROPS
@given(seeds, curvatures, dims)
def test_poincare_parallel_transport_is_an_isometry(seed: int, c: float, d: int) -> None:
    g = G.generator(seed)
    x, y = G.ball(g, N, d, c), G.ball(g, N, d, c)
    u, v = (torch.randn(N, d, generator=g, dtype=G.F64) for _ in range(2))
    pu, pv = (poincare.parallel_transport(x, y, t, c=c) for t in (u, v))
    close(poincare.inner(y, pu, pv, c=c), poincare.inner(x, u, v, c=c), atol=1e-10)
    # It moves log_x(y) to -log_y(x), and back again.
    close(poincare.parallel_transport(x, y, poincare.logmap(x, y, c=c), c=c),
          -poincare.logmap(y, x, c=c))
    close(poincare.parallel_transport(y, x, pu, c=c), u)
    zero = torch.zeros_like(x)
    close(poincare.parallel_transport0(y, u, c=c), poincare.parallel_transport(zero, y, u, c=c))


@G.PROPS
@given(seeds, curvatures, dims, st.floats(-3, 3))
def test_scalar_mul_and_matvec_are_conjugated_linear_maps(seed: int, c: float, d: int,
                                                        r: float) -> None:
    g = G.generator(seed)
    x = G.ball(g, N, d, c)
    close(poincare.mobius_scalar_mul(r, x, c=c),
          poincare.expmap0(r * poincare.logmap0(x, c=c), c=c))
    close(poincare.mobius_scalar_mul(1.0, x, c=c), x)
    close(poincare.mobius_scalar_mul(2.0, x, c=c), poincare.mobius_add(x, x, c=c))
    m = torch.randn(d + 1, d, generator=g, dtype=G.F64)
    close(poincare.mobius_matvec(m, x, c=c),
          poincare.expmap0(poincare.logmap0(x, c=c) @ m.T, c=c))
    close(poincare.mobius_matvec(torch.eye(d, dtype=G.F64), x, c=c), x)
    assert bool((poincare.mobius_matvec(torch.zeros(3, d, dtype=G.F64), x, c=c) == 0).all())


@G.PROPS
@given(seeds, curvatures, dims, st.integers(1, 5))
def test_midpoint(seed: int, c: float, d: int, k: int) -> None:
    g = G.generator(seed)
    x = G.ball(g, N, d, c)
    same = x.unsqueeze(-2).expand(N, k, d)
    close(poincare.midpoint(same, c=c), x, rtol=1e-12, atol=1e-14)
    pts = G.ball(g, N * k, d, c).reshape(N, k, d)
    w = torch.rand(N, k, generator=g, dtype=G.F64) + 0.1
    m = poincare.midpoint(pts, c=c, weights=w)
    # The gyromidpoint equals the Lorentz (Einstein) centroid with the same weights.
    lor = convert.poincare_to_lorentz(pts, c=c)
    close(m, convert.lorentz_to_poincare(lorentz.centroid(lor, c=c, weights=w), c=c))
    # Midpoint of two points: on the geodesic, halfway.
    two = G.ball(g, 2 * N, d, c).reshape(N, 2, d)
    mid = poincare.midpoint(two, c=c)
    dist = poincare.dist(two[:, 0], two[:, 1], c=c)
    close(poincare.dist(two[:, 0], mid, c=c), dist / 2)
    close(poincare.dist(mid, two[:, 1], c=c), dist / 2)
    # Scaling the weights changes nothing; keepdim and dim work.
    close(poincare.midpoint(pts, c=c, weights=3 * w), m)
    close(poincare.midpoint(pts.transpose(0, 1), c=c, weights=w.T, dim=0, keepdim=True),
          m.unsqueeze(0))


@G.PROPS
@given(seeds, curvatures, dims)
def test_poincare_egrad2rgrad_and_lambda(seed: int, c: float, d: int) -> None:
    g = G.generator(seed)
    x = G.ball(g, N, d, c)
    e = torch.randn(N, d, generator=g, dtype=G.F64)
    lam = poincare.lambda_x(x, c=c, keepdim=True)
    close(lam, 2 / (1 - c * x.pow(2).sum(-1, keepdim=True)))
    close(poincare.egrad2rgrad(x, e, c=c), e / lam**2)
    # <rgrad, v>_x = <egrad, v> for every v: the defining property of the Riemannian gradient.
    v = torch.randn(N, d, generator=g, dtype=G.F64)
    close(poincare.inner(x, poincare.egrad2rgrad(x, e, c=c), v, c=c), (e * v).sum(-1))


# ----------------------------------------------------------------------------- Lorentz


def hyperboloid_err(x: torch.Tensor, c: float) -> float:
    return G.on_hyperboloid_err(x, c)


@G.PROPS
@given(seeds, curvatures, dims)
def test_lorentz_log_inverts_exp(seed: int, c: float, d: int) -> None:
    g = G.generator(seed)
    x = G.hyperboloid(g, N, d, c)
    u = G.lorentz_tangent(g, x, c, scale=1 / math.sqrt(c))
    y = lorentz.expmap(x, u, c=c)
    assert hyperboloid_err(y, c) < 1e-14
    close(lorentz.logmap(x, y, c=c), u, rtol=1e-8, atol=1e-10)
    z = G.hyperboloid(g, N, d, c)
    close(lorentz.expmap(x, lorentz.logmap(x, z, c=c), c=c), z)
    u0 = G.lorentz_tangent(g, lorentz.origin(d, c=c, dtype=G.F64).expand(N, d + 1), c)
    y0 = lorentz.expmap0(u0, c=c)
    assert hyperboloid_err(y0, c) < 1e-14
    close(lorentz.logmap0(y0, c=c), u0)
    close(y0, lorentz.expmap(lorentz.origin(d, c=c, dtype=G.F64), u0, c=c))
    close(lorentz.logmap0(z, c=c), lorentz.logmap(lorentz.origin(d, c=c, dtype=G.F64), z, c=c))


@G.PROPS
@given(seeds, curvatures, dims)
def test_lorentz_dist_is_norm_of_log_and_a_metric(seed: int, c: float, d: int) -> None:
    g = G.generator(seed)
    x, y, z = (G.hyperboloid(g, N, d, c) for _ in range(3))
    dxy = lorentz.dist(x, y, c=c)
    close(dxy, lorentz.norm(lorentz.logmap(x, y, c=c)))
    close(dxy, lorentz.dist(y, x, c=c))
    close(dxy, torch.arccosh(-c * lorentz.inner(x, y)) / math.sqrt(c))
    assert bool((lorentz.dist(x, x, c=c) == 0).all())
    slack = 1e-12 * (1 + dxy)
    assert bool((dxy <= lorentz.dist(x, z, c=c) + lorentz.dist(z, y, c=c) + slack).all())
    close(lorentz.dist0(y, c=c),
          lorentz.dist(lorentz.origin(d, c=c, dtype=G.F64).expand_as(y), y, c=c))


@G.PROPS
@given(seeds, curvatures, dims)
def test_cdist_equals_pairwise_dist(seed: int, c: float, d: int) -> None:
    g = G.generator(seed)
    x, y = G.hyperboloid(g, 5, d, c), G.hyperboloid(g, 7, d, c)
    pair = lorentz.dist(x.unsqueeze(-2), y.unsqueeze(-3), c=c)
    # cdist uses arcosh(-c<x,y>) (one GEMM); it is accurate where the pairs are not nearly
    # coincident, which random pairs at these rapidities are not (distance >~ 1e-3).
    close(lorentz.cdist(x, y, c=c), pair, rtol=1e-7, atol=1e-7)
    batch = torch.stack([x, x.flip(0)])
    close(lorentz.cdist(batch, y, c=c)[1], pair.flip(0), rtol=1e-7, atol=1e-7)
    # Mixed dtypes promote like elementwise ops: float32 x against float64 y is float64.
    mixed = lorentz.cdist(x.float(), y, c=c)
    assert mixed.dtype == G.F64
    close(mixed, lorentz.cdist(x.float().double(), y, c=c), rtol=0, atol=0)


@G.PROPS
@given(seeds, curvatures, dims)
def test_lorentz_parallel_transport(seed: int, c: float, d: int) -> None:
    g = G.generator(seed)
    x, y = G.hyperboloid(g, N, d, c), G.hyperboloid(g, N, d, c)
    u, v = G.lorentz_tangent(g, x, c), G.lorentz_tangent(g, x, c)
    pu, pv = (lorentz.parallel_transport(x, y, t, c=c) for t in (u, v))
    close(lorentz.inner(pu, pv), lorentz.inner(u, v), atol=1e-9)
    # Tangent at y: <y, P v>_L = 0 (relative to the sizes of the terms).
    scale = (y.norm(dim=-1) * pu.norm(dim=-1))
    assert float((lorentz.inner(y, pu).abs() / scale).max()) < 1e-13
    close(lorentz.parallel_transport(x, y, lorentz.logmap(x, y, c=c), c=c),
          -lorentz.logmap(y, x, c=c), atol=1e-9)
    close(lorentz.parallel_transport(y, x, pu, c=c), u, atol=1e-9)


@G.PROPS
@given(seeds, curvatures, dims)
def test_lorentz_projections_give_points_and_tangents(seed: int, c: float, d: int) -> None:
    g = G.generator(seed)
    x = G.hyperboloid(g, N, d, c)
    off = x + 0.1 * torch.randn(N, d + 1, generator=g, dtype=G.F64)
    p = lorentz.project(off, c=c)
    assert hyperboloid_err(p, c) < 1e-15
    assert torch.equal(p[..., 1:], off[..., 1:])
    e = torch.randn(N, d + 1, generator=g, dtype=G.F64)
    for t in (lorentz.proju(x, e, c=c), lorentz.egrad2rgrad(x, e, c=c)):
        rel = lorentz.inner(x, t).abs() / (x.norm(dim=-1) * t.norm(dim=-1))
        assert float(rel.max()) < 1e-13
    # proju is idempotent; egrad2rgrad satisfies <rgrad, v>_L = <egrad, v> for tangent v.
    pu = lorentz.proju(x, e, c=c)
    close(lorentz.proju(x, pu, c=c), pu)
    v = G.lorentz_tangent(g, x, c)
    close(lorentz.inner(lorentz.egrad2rgrad(x, e, c=c), v), (e * v).sum(-1), atol=1e-9)


@G.PROPS
@given(seeds, curvatures, dims, st.integers(1, 5))
def test_centroid(seed: int, c: float, d: int, k: int) -> None:
    g = G.generator(seed)
    x = G.hyperboloid(g, N, d, c)
    close(lorentz.centroid(x.unsqueeze(-2).expand(N, k, d + 1), c=c), x, rtol=1e-13, atol=1e-14)
    pts = G.hyperboloid(g, N * k, d, c).reshape(N, k, d + 1)
    w = torch.rand(N, k, generator=g, dtype=G.F64) + 0.1
    m = lorentz.centroid(pts, c=c, weights=w)
    assert hyperboloid_err(m, c) < 1e-15
    # Against the textbook formula a / sqrt(-c<a,a>_L), fine at these rapidities.
    a = (w.unsqueeze(-1) * pts).sum(-2)
    close(m, a / torch.sqrt(-c * lorentz.inner(a, a, keepdim=True)))
    close(lorentz.centroid(pts, c=c, weights=5 * w), m)


# ----------------------------------------------------------------------------- conversions


@G.PROPS
@given(seeds, curvatures, dims)
def test_conversions_round_trip_and_commute(seed: int, c: float, d: int) -> None:
    g = G.generator(seed)
    x = G.hyperboloid(g, N, d, c)
    p = convert.lorentz_to_poincare(x, c=c)
    k = convert.lorentz_to_klein(x, c=c)
    for y in (convert.poincare_to_lorentz(p, c=c), convert.klein_to_lorentz(k, c=c)):
        assert hyperboloid_err(y, c) < 1e-15
        close(y, x)
    close(convert.klein_to_poincare(convert.poincare_to_klein(p, c=c), c=c), p)
    close(convert.poincare_to_klein(p, c=c), k)
    close(convert.klein_to_poincare(k, c=c), p)
    close(convert.lorentz_to_poincare(convert.klein_to_lorentz(k, c=c), c=c), p)
    close(convert.lorentz_to_klein(convert.poincare_to_lorentz(p, c=c), c=c), k)
    # The maps are isometries: distances agree across models.
    y = G.hyperboloid(g, N, d, c)
    close(poincare.dist(p, convert.lorentz_to_poincare(y, c=c), c=c), lorentz.dist(x, y, c=c))
    # The Klein radius is tanh of the rapidity; the Poincaré radius tanh of half of it.
    rapidity = math.sqrt(c) * lorentz.dist0(x, c=c)
    close(math.sqrt(c) * k.norm(dim=-1), torch.tanh(rapidity))
    close(math.sqrt(c) * p.norm(dim=-1), torch.tanh(rapidity / 2))


# ----------------------------------------------------------------------------- curvature


@G.PROPS
@given(seeds, dims, st.floats(0.05, 5.0))
def test_curvature_scaling(seed: int, d: int, c: float) -> None:
    """Curvature -c is curvature -1 with lengths scaled by 1/sqrt(c): ball points scale by
    1/sqrt(c), distances by 1/sqrt(c)."""
    g = G.generator(seed)
    x1, y1 = G.ball(g, N, d, 1.0), G.ball(g, N, d, 1.0)
    s = 1 / math.sqrt(c)
    close(poincare.dist(s * x1, s * y1, c=c), s * poincare.dist(x1, y1, c=1.0))
    close(poincare.mobius_add(s * x1, s * y1, c=c), s * poincare.mobius_add(x1, y1, c=1.0))
    close(poincare.logmap(s * x1, s * y1, c=c), s * poincare.logmap(x1, y1, c=1.0))
    X1, Y1 = G.hyperboloid(g, N, d, 1.0), G.hyperboloid(g, N, d, 1.0)
    close(lorentz.dist(s * X1, s * Y1, c=c), s * lorentz.dist(X1, Y1, c=1.0))
    close(lorentz.logmap(s * X1, s * Y1, c=c), s * lorentz.logmap(X1, Y1, c=1.0))


POINCARE_BINARY = ["mobius_add", "dist", "logmap", "expmap"]


@G.PROPS
@given(seeds, dims)
def test_tensor_curvature_matches_per_row_floats(seed: int, d: int) -> None:
    g = G.generator(seed)
    cs = [0.1, 1.0, 3.7, 0.5]
    ct = torch.tensor(cs, dtype=G.F64).unsqueeze(-1)
    x = torch.stack([G.ball(g, 1, d, c)[0] for c in cs])
    y = torch.stack([G.ball(g, 1, d, c)[0] for c in cs])
    for name in POINCARE_BINARY:
        f = getattr(poincare, name)
        rows = torch.stack([f(x[i], y[i], c=c) for i, c in enumerate(cs)])
        close(f(x, y, c=ct), rows)
    per_row = [poincare.midpoint(torch.stack([x[i], y[i]]), c=c) for i, c in enumerate(cs)]
    close(poincare.midpoint(torch.stack([x, y], -2), c=ct.unsqueeze(-1)), torch.stack(per_row))
    X = torch.stack([G.hyperboloid(g, 1, d, c)[0] for c in cs])
    Y = torch.stack([G.hyperboloid(g, 1, d, c)[0] for c in cs])
    for f in (lorentz.dist, lorentz.logmap):
        close(f(X, Y, c=ct), torch.stack([f(X[i], Y[i], c=c) for i, c in enumerate(cs)]))
    close(lorentz.cdist(X, Y, c=ct),
          torch.stack([lorentz.cdist(X[i:i + 1], Y, c=c)[0] for i, c in enumerate(cs)]),
          rtol=1e-7, atol=1e-7)
    close(convert.lorentz_to_poincare(X, c=ct),
          torch.stack([convert.lorentz_to_poincare(X[i], c=c) for i, c in enumerate(cs)]))


@pytest.mark.parametrize("c", G.CURVATURES)
def test_origin_and_zero_vectors(c: float) -> None:
    o = lorentz.origin(3, c=c, dtype=G.F64)
    assert hyperboloid_err(o, c) < 1e-15
    zero = torch.zeros(4, dtype=G.F64)
    assert torch.equal(lorentz.expmap(o, zero, c=c), o)
    assert torch.equal(lorentz.expmap0(zero, c=c), o)
    assert torch.equal(lorentz.logmap(o, o, c=c), zero)
    p0 = torch.zeros(3, dtype=G.F64)
    assert torch.equal(poincare.expmap0(p0, c=c), p0)
    assert torch.equal(poincare.logmap(p0, p0, c=c), p0)
    assert torch.equal(convert.lorentz_to_poincare(o, c=c), p0)
    assert torch.equal(convert.poincare_to_lorentz(p0, c=c), o)


def test_from_spatial_is_project_of_any_time(gen: torch.Generator) -> None:
    """from_spatial(s) lies on the hyperboloid and equals project of (anything, s)."""
    s = 3 * torch.randn(16, 4, generator=gen, dtype=torch.float64)
    x = lorentz.from_spatial(s, c=0.7)
    assert torch.equal(x[..., 1:], s)
    torch.testing.assert_close(lorentz.inner(x, x), torch.full((16,), -1 / 0.7,
                                                               dtype=torch.float64))
    junk_time = torch.randn(16, 1, generator=gen, dtype=torch.float64)
    assert torch.equal(x, lorentz.project(torch.cat([junk_time, s], -1), c=0.7))


def test_lorentz_dist_mixes_ambient_and_polar_rows(gen: torch.Generator) -> None:
    """On the CPU, dist takes the one-pass arcosh form on well-conditioned rows and the polar
    form on the others: a batch mixing both (nearby far-out pairs, separated pairs, identical
    pairs) matches the polar form on every row, with Riemannian gradients."""
    c = 0.7
    x = G.hyperboloid_at(12.0, G.unit(gen, 9, 4), c)
    y = torch.cat([G.near(gen, x[:3], c, 1e-3), G.hyperboloid(gen, 3, 4, c, rmax=3.0), x[6:]])
    polar = lambda a, b: lorentz._dist_from_half_chord2(  # noqa: E731
        lorentz._half_chord2(a, b, c), c).squeeze(-1)
    xr, yr = x.clone().requires_grad_(), y.clone().requires_grad_()
    d = lorentz.dist(xr, yr, c=c)
    torch.testing.assert_close(d, polar(x, y), rtol=1e-12, atol=0)
    assert (d[6:] == 0).all()
    gx, gy = torch.autograd.grad(d[:6].sum(), (xr, yr))
    xp, yp = x.clone().requires_grad_(), y.clone().requires_grad_()
    ex, ey = torch.autograd.grad(polar(xp, yp)[:6].sum(), (xp, yp))
    # The two forms extend d differently off the hyperboloid, so the ambient gradients differ
    # by normal components; the Riemannian gradients (what optimizers and any on-manifold
    # parametrisation see) agree.
    rg = lambda p, g: lorentz.egrad2rgrad(p, g, c=c)  # noqa: E731
    torch.testing.assert_close(rg(x, gx), rg(x, ex), rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(rg(y, gy), rg(y, ey), rtol=1e-7, atol=1e-9)
