"""Parity with geoopt (the independent implementation) and with an mpmath oracle (float64).

Conventions: geoopt's stereographic model takes the sectional curvature k = -c; its Lorentz
model takes k = 1/c (<x,x>_L = -k). geoopt's math functions do not project their results.

Where the math is well-conditioned (rapidities up to 4) we agree with geoopt to 1e-10. Near the
boundary of the ball (sqrt(c)|x| = 1 - 1e-6) and far out on the hyperboloid (rapidity 30)
geoopt's formulas cancel or clamp (its artanh clamps at 1 - 1e-7, its Möbius denominator loses
eps/(1 - c|x|^2)^2, its Lorentz arcosh and Minkowski norms lose eps cosh(r)^2): there both are
compared with the 60-digit mpmath oracle and ours must be within a stated bound *and* at least
as accurate as geoopt. The bounds, from the measured errors (see docs/NUMERICS.md):
- boundary of the ball: 2e-9 relative. The conditioning of a point at gap a = 1 - c|x|^2 is
  eps/a = 1.1e-10 (rounding |x|^2 shifts a by ~eps); measured up to 6e-10.
- far on the hyperboloid (rapidity 30): the spatial coordinates are ~sinh(30) = 5e12, so
  splitting a vector into radial and angular parts loses eps sinh(30) = 1.2e-3 of its norm:
  tangent vectors and points get 1e-2 (measured up to 5e-3), distances of nearby points 1e-3
  (measured 2.3e-4), see ``test_lorentz_far_against_mpmath``. geoopt returns Inf/NaN or
  errors of 1e+17 and more there.
"""

from __future__ import annotations

import math
import warnings

import _geo as G
import pytest
import torch

with warnings.catch_warnings():
    # geoopt decorates its math with torch.jit.script, which torch 2.10+ deprecates.
    warnings.simplefilter("ignore", DeprecationWarning)
    import geoopt.manifolds.lorentz.math as glm
    import geoopt.manifolds.stereographic.math as gsm

from resnetbk.geometry import convert, lorentz, poincare

N, D = 12, 5
TOL = {"rtol": 1e-10, "atol": 1e-10}
BOUNDARY_BOUND = 2e-9
FAR_FLOOR_BOUND = 1e-2
FAR_NEAR_DIST_BOUND = 1e-3
FAR_RADIAL_DIST_BOUND = 5e-5
FAR_EXACT_BOUND = 1e-13


def close(a: torch.Tensor, b: torch.Tensor, **kw: float) -> None:
    torch.testing.assert_close(a, b, **(kw or TOL))


def curvature(c: float, kind: str, n: int = N) -> float | torch.Tensor:
    """c as a float, or as a (n, 1) tensor of per-row curvatures around c."""
    if kind == "float":
        return c
    return c * torch.linspace(0.5, 2.0, n, dtype=G.F64).unsqueeze(-1)


def rows(c: float | torch.Tensor, n: int = N) -> list[float]:
    return [float(v) for v in torch.as_tensor(c, dtype=G.F64).expand(n, 1).reshape(-1)]


# ============================================================================ geoopt, moderate

C_CASES = [(c, kind) for c in G.CURVATURES for kind in ("float", "tensor")]


@pytest.mark.parametrize(("c0", "kind"), C_CASES)
def test_poincare_matches_geoopt(gen: torch.Generator, c0: float, kind: str) -> None:
    c = curvature(c0, kind)
    k = -torch.as_tensor(c, dtype=G.F64)
    sc = torch.as_tensor(c, dtype=G.F64).sqrt()
    x, y, z = (G.ball(gen, N, D, 1.0) / sc for _ in range(3))
    u, v = (torch.randn(N, D, generator=gen, dtype=G.F64) / sc for _ in range(2))
    r = torch.randn(N, 1, generator=gen, dtype=G.F64)
    m = torch.randn(D + 2, D, generator=gen, dtype=G.F64)
    close(poincare.mobius_add(x, y, c=c), gsm.mobius_add(x, y, k=k))
    close(poincare.mobius_sub(x, y, c=c), gsm.mobius_sub(x, y, k=k))
    close(poincare.mobius_scalar_mul(r, x, c=c), gsm.mobius_scalar_mul(r, x, k=k))
    close(poincare.mobius_matvec(m, x, c=c), gsm.mobius_matvec(m, x, k=k))
    close(poincare.gyration(x, y, z, c=c), gsm.gyration(x, y, z, k=k))
    close(poincare.expmap(x, u, c=c), gsm.expmap(x, u, k=k))
    close(poincare.logmap(x, y, c=c), gsm.logmap(x, y, k=k))
    close(poincare.expmap0(u, c=c), gsm.expmap0(u, k=k))
    close(poincare.logmap0(y, c=c), gsm.logmap0(y, k=k))
    close(poincare.dist(x, y, c=c), gsm.dist(x, y, k=k, keepdim=True).squeeze(-1))
    close(poincare.dist0(x, c=c), gsm.dist0(x, k=k, keepdim=True).squeeze(-1))
    close(poincare.lambda_x(x, c=c), gsm.lambda_x(x, k=k, keepdim=True).squeeze(-1))
    close(poincare.inner(x, u, v, c=c), gsm.inner(x, u, v, k=k, keepdim=True).squeeze(-1))
    close(poincare.parallel_transport(x, y, u, c=c), gsm.parallel_transport(x, y, u, k=k))
    close(poincare.parallel_transport0(y, u, c=c), gsm.parallel_transport0(y, u, k=k))
    close(poincare.egrad2rgrad(x, u, c=c), gsm.egrad2rgrad(x, u, k=k))
    outside = 3 * u
    close(poincare.project(outside, c=c), gsm.project(outside, k=k, eps=1e-12))
    close(poincare.project(x, c=c), x)
    # Midpoints over an axis of 4 points (curvature per row of the output).
    pts = torch.stack([x, y, z, -x / 2], dim=-2)
    w = torch.rand(N, 4, generator=gen, dtype=G.F64) + 0.1
    kk = k.unsqueeze(-1) if kind == "tensor" else k
    cc = c.unsqueeze(-1) if kind == "tensor" else c
    close(poincare.midpoint(pts, c=cc),
          gsm.weighted_midpoint(pts, k=kk, reducedim=[-2], keepdim=False))
    close(poincare.midpoint(pts, c=cc, weights=w),
          gsm.weighted_midpoint(pts, w, k=kk, reducedim=[-2], keepdim=False))


@pytest.mark.parametrize(("c0", "kind"), C_CASES)
def test_lorentz_matches_geoopt(gen: torch.Generator, c0: float, kind: str) -> None:
    c = curvature(c0, kind)
    k = 1 / torch.as_tensor(c, dtype=G.F64)
    cs = rows(c)
    x = torch.cat([G.hyperboloid(gen, 1, D, ci) for ci in cs])
    y = torch.cat([G.hyperboloid(gen, 1, D, ci) for ci in cs])
    u = torch.cat([G.lorentz_tangent(gen, x[i:i + 1], ci) for i, ci in enumerate(cs)])
    u = u / torch.as_tensor(c, dtype=G.F64).sqrt()
    amb = torch.randn(N, D + 1, generator=gen, dtype=G.F64)
    close(lorentz.inner(u, amb), glm.inner(u, amb))
    close(lorentz.norm(u), glm.norm(u))
    close(lorentz.expmap(x, u, c=c), glm.expmap(x, u, k=k))
    close(lorentz.logmap(x, y, c=c), glm.logmap(x, y, k=k))
    u0 = torch.cat([torch.zeros(N, 1, dtype=G.F64), u[:, 1:]], -1)
    close(lorentz.expmap0(u0, c=c), glm.expmap0(u0, k=k))
    close(lorentz.logmap0(y, c=c), glm.logmap0(y, k=k))
    close(lorentz.dist(x, y, c=c), glm.dist(x, y, k=k, keepdim=True).squeeze(-1))
    close(lorentz.dist0(x, c=c), glm.dist0(x, k=k, keepdim=True).squeeze(-1))
    close(lorentz.project(amb, c=c), glm.project(amb, k=k.reshape(-1) if kind == "tensor" else k))
    close(lorentz.parallel_transport(x, y, u, c=c), glm.parallel_transport(x, y, u, k=k))
    close(lorentz.egrad2rgrad(x, amb, c=c), glm.egrad2rgrad(x, amb.clone(), k=k))
    close(lorentz.proju(x, amb, c=c), glm.project_u(x, amb, k=k))
    # cdist against geoopt's dist on all pairs; with one curvature per row, only the pairs
    # (x_i, y_i) lie on one hyperboloid.
    kk = k.unsqueeze(-1) if kind == "tensor" else k
    ref = glm.dist(x.unsqueeze(-2), y.unsqueeze(-3), k=kk, keepdim=True).squeeze(-1)
    out = lorentz.cdist(x, y, c=c)
    if kind == "tensor":
        out, ref = out.diagonal(), ref.diagonal()
    close(out, ref, rtol=1e-8, atol=1e-8)
    # geoopt's Poincaré ball is the unit ball for every k: ours is it scaled by 1/sqrt(c).
    sc = torch.as_tensor(c, dtype=G.F64).sqrt()
    p = convert.lorentz_to_poincare(x, c=c)
    close(p * sc, glm.lorentz_to_poincare(x, k=k))
    close(convert.poincare_to_lorentz(p, c=c), glm.poincare_to_lorentz(p * sc, k=k, eps=0.0))


# ============================================================================ mpmath oracle


def mp_rows(t: torch.Tensor) -> list:
    return G.to_mp(t)


def neg(v: list) -> list:
    return [-a for a in v]


def check_accuracy(name: str, ours: torch.Tensor, theirs: torch.Tensor | None,
                   ref: torch.Tensor, bound: float, vector: bool = True) -> None:
    """ours within ``bound`` of the oracle, and at least as accurate as geoopt."""
    err = G.row_rel_err if vector else G.rel_err
    e_ours = err(ours, ref)
    assert math.isfinite(e_ours) and e_ours <= bound, f"{name}: error {e_ours:.3g} > {bound:.3g}"
    if theirs is not None:
        e_theirs = err(theirs, ref) if bool(torch.isfinite(theirs).all()) else math.inf
        assert e_ours <= max(e_theirs, bound), f"{name}: ours {e_ours:.3g} > geoopt {e_theirs:.3g}"


@pytest.mark.parametrize("c", G.CURVATURES)
def test_poincare_boundary_against_mpmath(gen: torch.Generator, c: float) -> None:
    """Points at sqrt(c)|x| = 1 - 1e-6: far pairs (independent) and near pairs (at hyperbolic
    distance ~0.5), against the oracle; geoopt loses up to 1e-3 (near pairs) and 0.4 (its
    artanh clamp, far pairs)."""
    o = G.Oracle(c)
    k = torch.tensor(-c, dtype=G.F64)
    x = G.ball_boundary(gen, N, D, c)
    step = torch.randn(N, D, generator=gen, dtype=G.F64)
    step = 0.5 * step / step.norm(dim=-1, keepdim=True) / poincare.lambda_x(x, c=c, keepdim=True)
    near = poincare.expmap(x, step, c=c)
    far = G.ball_boundary(gen, N, D, c)
    v = torch.randn(N, D, generator=gen, dtype=G.F64)
    X, V = mp_rows(x), mp_rows(v)
    for label, y in (("near", near), ("far", far)):
        Y = mp_rows(y)
        ref = G.scalars_from_mp([o.dist(a, b) for a, b in zip(X, Y, strict=True)], (N,))
        check_accuracy(f"dist {label}", poincare.dist(x, y, c=c), gsm.dist(x, y, k=k), ref,
                       BOUNDARY_BOUND, vector=False)
        ref = G.from_mp([o.logmap(a, b) for a, b in zip(X, Y, strict=True)], (N, D))
        check_accuracy(f"logmap {label}", poincare.logmap(x, y, c=c), gsm.logmap(x, y, k=k),
                       ref, BOUNDARY_BOUND)
        # (-x) ⊕ y: a result beyond the float64 guard 1 - 1e-12 is compared after projection.
        ref = G.from_mp([o.mobius_add(neg(a), b) for a, b in zip(X, Y, strict=True)], (N, D))
        ref = poincare.project(ref, c=c)
        check_accuracy(f"mobius_add {label}", poincare.mobius_add(-x, y, c=c),
                       poincare.project(gsm.mobius_add(-x, y, k=k), c=c), ref, BOUNDARY_BOUND)
        ref = G.from_mp([o.parallel_transport(a, b, w) for a, b, w in zip(X, Y, V, strict=True)],
                        (N, D))
        check_accuracy(f"parallel_transport {label}", poincare.parallel_transport(x, y, v, c=c),
                       gsm.parallel_transport(x, y, v, k=k), ref, BOUNDARY_BOUND)
        pts = torch.stack([x, y], dim=-2)
        ref = G.from_mp([o.midpoint([a, b]) for a, b in zip(X, Y, strict=True)], (N, D))
        check_accuracy(f"midpoint {label}", poincare.midpoint(pts, c=c),
                       gsm.weighted_midpoint(pts, k=k, reducedim=[-2]), ref, BOUNDARY_BOUND)
    u = step * torch.linspace(0.1, 30, N, dtype=G.F64).unsqueeze(-1)
    U = mp_rows(u)
    ref = G.from_mp([o.expmap(a, b) for a, b in zip(X, U, strict=True)], (N, D))
    check_accuracy("expmap", poincare.expmap(x, u, c=c),
                   poincare.project(gsm.expmap(x, u, k=k), c=c), poincare.project(ref, c=c),
                   BOUNDARY_BOUND)
    ref = G.scalars_from_mp([o.dist0(a) for a in X], (N,))
    check_accuracy("dist0", poincare.dist0(x, c=c), gsm.dist0(x, k=k), ref, BOUNDARY_BOUND,
                   vector=False)
    ref = G.from_mp([o.logmap0(a) for a in X], (N, D))
    check_accuracy("logmap0", poincare.logmap0(x, c=c), gsm.logmap0(x, k=k), ref,
                   BOUNDARY_BOUND)
    ref = G.scalars_from_mp([o.lam(a) for a in X], (N,))
    check_accuracy("lambda_x", poincare.lambda_x(x, c=c), gsm.lambda_x(x, k=k), ref,
                   BOUNDARY_BOUND, vector=False)
    for r in (0.3, -0.7, 2.5):
        ref = G.from_mp([o.scalar_mul(r, a) for a in X], (N, D))
        check_accuracy(f"scalar_mul {r}", poincare.mobius_scalar_mul(r, x, c=c),
                       poincare.project(gsm.mobius_scalar_mul(torch.tensor(r, dtype=G.F64), x,
                                                              k=k), c=c),
                       poincare.project(ref, c=c), BOUNDARY_BOUND)
    m = torch.randn(D, D, generator=gen, dtype=G.F64) / math.sqrt(D)
    M = mp_rows(m)
    ref = poincare.project(G.from_mp([o.matvec(M, a) for a in X], (N, D)), c=c)
    check_accuracy("matvec", poincare.mobius_matvec(m, x, c=c),
                   poincare.project(gsm.mobius_matvec(m, x, k=k), c=c), ref, BOUNDARY_BOUND)


def test_oracle_gyration_definition_matches_closed_form(gen: torch.Generator) -> None:
    """The oracle's parallel transport goes through the definition of the gyration; check it
    against the textbook closed form (Ungar 2008) evaluated in mpmath."""
    c = 1.7
    o = G.Oracle(c)
    a, b, u = (G.ball(gen, 3, D, c) for _ in range(3))
    for ra, rb, ru in zip(mp_rows(a), mp_rows(b), mp_rows(u), strict=True):
        cc = o.c
        dot = lambda p, q: sum(s * t for s, t in zip(p, q, strict=True))  # noqa: E731
        a2, b2, ab, au, bu = dot(ra, ra), dot(rb, rb), dot(ra, rb), dot(ra, ru), dot(rb, ru)
        ca = -cc * cc * au * b2 + cc * bu + 2 * cc * cc * ab * bu
        cb = -cc * cc * bu * a2 - cc * au
        den = 1 + 2 * cc * ab + cc * cc * a2 * b2
        closed = [w + 2 * (ca * p + cb * q) / den for w, p, q in zip(ru, ra, rb, strict=True)]
        by_def = o.gyration(ra, rb, ru)
        assert max(abs(p - q) for p, q in zip(closed, by_def, strict=True)) < 1e-40


def check_far(name: str, e_ours: float, e_theirs: float, bound: float) -> None:
    assert math.isfinite(e_ours) and e_ours <= bound, f"{name}: error {e_ours:.3g} > {bound:.3g}"
    assert e_ours <= max(e_theirs, bound), f"{name}: ours {e_ours:.3g} > geoopt {e_theirs:.3g}"


def finite_or_inf(t: torch.Tensor, err) -> float:
    return err(t) if bool(torch.isfinite(t).all()) else math.inf


@pytest.mark.parametrize("c", G.CURVATURES)
def test_lorentz_far_against_mpmath(gen: torch.Generator, c: float) -> None:
    """Points at rapidity 30 (coordinates ~5e12 / sqrt(c)), against the oracle.

    Metrics: relative error of distances; for tangent vectors the Riemannian norm of the error
    relative to that of the reference (``_geo.tangent_rel_err``: the ambient norm would only
    see the ~cosh(30) radial coordinates); for points the hyperbolic distance to the reference,
    in rapidity units. Stored float64 coordinates at rapidity 30 resolve angles (and the
    orthogonal part of tangent vectors) only to eps sinh(30) = 1.2e-3, so those quantities get
    FAR_FLOOR_BOUND (measured up to 5e-3); distances of nearby points keep 1e-3 (measured
    2.7e-4), radially separated ones 5e-5 (measured 1.1e-5: the angular term rounds at
    eps sqrt(|x_s||y_s|), see docs/NUMERICS.md), well-separated ones 1e-13.
    """
    o = G.Oracle(c)
    k = torch.tensor(1 / c, dtype=G.F64)
    x = G.hyperboloid_at(G.FAR, G.unit(gen, N, D), c)
    xs = x[:, 1:]
    r = torch.asinh(math.sqrt(c) * xs.norm(dim=-1, keepdim=True))
    cases = {
        "far": (G.hyperboloid_at(G.FAR, G.unit(gen, N, D), c), FAR_EXACT_BOUND),
        "near": (G.near(gen, x, c, 1.0 / math.sqrt(c)), FAR_NEAR_DIST_BOUND),
        "radial": (G.hyperboloid_at(r + 0.7, xs / xs.norm(dim=-1, keepdim=True), c),
                   FAR_RADIAL_DIST_BOUND),
        "to_origin": (G.hyperboloid(gen, N, D, c, rmax=1.0), FAR_EXACT_BOUND),
    }
    v = G.lorentz_tangent(gen, x, c)
    X = G.mp_points(x, o)
    V = G.mp_tangents(X, v, o)
    for label, (y, dist_bound) in cases.items():
        Y = G.mp_points(y, o)
        ref = G.scalars_from_mp([o.ldist(a, b) for a, b in zip(X, Y, strict=True)], (N,))
        err = lambda t, ref=ref: G.rel_err(t, ref)  # noqa: E731
        check_far(f"dist {label}", err(lorentz.dist(x, y, c=c)),
                  finite_or_inf(glm.dist(x, y, k=k), err), dist_bound)
        ref = G.from_mp([o.llogmap(a, b) for a, b in zip(X, Y, strict=True)], (N, D + 1))
        err = lambda t, ref=ref: G.tangent_rel_err(x, t, ref, c)  # noqa: E731
        check_far(f"logmap {label}", err(lorentz.logmap(x, y, c=c)),
                  finite_or_inf(glm.logmap(x, y, k=k), err), FAR_FLOOR_BOUND)
        ref = G.from_mp([o.lparallel_transport(a, b, w) for a, b, w in zip(X, Y, V, strict=True)],
                        (N, D + 1))
        err = lambda t, ref=ref, y=y: G.tangent_rel_err(y, t, ref, c)  # noqa: E731
        check_far(f"parallel_transport {label}", err(lorentz.parallel_transport(x, y, v, c=c)),
                  finite_or_inf(glm.parallel_transport(x, y, v, k=k), err), FAR_FLOOR_BOUND)
    # Exponential map of tangent vectors of length 1/sqrt(c) at far points.
    u = G.lorentz_tangent(gen, x, c, length=1 / math.sqrt(c))
    U = G.mp_tangents(X, u, o)
    ref_rows = [o.lexpmap(a, b) for a, b in zip(X, U, strict=True)]
    err = lambda t: G.point_dist_err(t, ref_rows, o)  # noqa: E731
    check_far("expmap", err(lorentz.expmap(x, u, c=c)),
              finite_or_inf(glm.expmap(x, u, k=k), err), FAR_FLOOR_BOUND)
    # Maps at the origin only see the spatial part: exact.
    ref = G.scalars_from_mp([mp_dist0(o, a) for a in X], (N,))
    check_accuracy("dist0", lorentz.dist0(x, c=c), glm.dist0(x, k=k), ref, FAR_EXACT_BOUND,
                   vector=False)
    ref = G.from_mp([o.llogmap(o.lpoint([0 * a for a in X[0][1:]]), a) for a in X], (N, D + 1))
    check_accuracy("logmap0", lorentz.logmap0(x, c=c), glm.logmap0(x, k=k), ref, FAR_EXACT_BOUND)
    # Centroid of tight clusters (3 points within 0.5/sqrt(c) of x): the textbook
    # a / sqrt(-c<a,a>_L) cancels completely (geoopt has no centroid).
    cluster = torch.stack([x, G.near(gen, x, c, 0.5 / math.sqrt(c)),
                           G.near(gen, x, c, 0.5 / math.sqrt(c))], dim=-2)
    ref_rows = [o.lcentroid(G.mp_points(cluster[i], o)) for i in range(N)]
    err = lambda t: G.point_dist_err(t, ref_rows, o)  # noqa: E731
    a = cluster.sum(-2)
    textbook = a / torch.sqrt(-c * lorentz.inner(a, a, keepdim=True))
    check_far("centroid", err(lorentz.centroid(cluster, c=c)), finite_or_inf(textbook, err),
              FAR_FLOOR_BOUND)


def mp_dist0(o: G.Oracle, x: list):
    return G.mp.acosh(o.sc * x[0]) / o.sc


def test_lorentz_far_identical_points(gen: torch.Generator) -> None:
    c = 0.7
    x = G.hyperboloid_at(G.FAR, G.unit(gen, N, D), c)
    assert bool((lorentz.dist(x, x, c=c) == 0).all())
    assert bool((lorentz.logmap(x, x, c=c) == 0).all())
    assert G.row_rel_err(lorentz.centroid(torch.stack([x, x, x], -2), c=c), x) < 1e-15
    v = G.lorentz_tangent(gen, x, c)
    assert torch.equal(lorentz.parallel_transport(x, x, v, c=c), v)


@pytest.mark.parametrize("c", G.CURVATURES)
def test_conversions_against_mpmath(gen: torch.Generator, c: float) -> None:
    """Lorentz -> Poincaré/Klein at moderate rapidity, exact to a few ulps; Klein -> Lorentz
    keeps 1e-12 there (the Klein gap 1 - c|k|^2 = 1/cosh(r)^2 is not cancellation-free)."""
    o = G.Oracle(c)
    x = G.hyperboloid(gen, N, D, c, rmax=6.0)
    X = G.mp_points(x, o)
    p_ref = G.from_mp([[v / (1 + o.sc * a[0]) for v in a[1:]] for a in X], (N, D))
    k_ref = G.from_mp([[v / (o.sc * a[0]) for v in a[1:]] for a in X], (N, D))
    check_accuracy("lorentz_to_poincare", convert.lorentz_to_poincare(x, c=c), None, p_ref, 1e-15)
    check_accuracy("lorentz_to_klein", convert.lorentz_to_klein(x, c=c), None, k_ref, 1e-15)
    p = convert.lorentz_to_poincare(x, c=c)
    P = mp_rows(p)
    lp_ref = G.from_mp([o.lpoint([2 * v / (1 - o.c * sum(w * w for w in a)) for v in a])
                        for a in P], (N, D + 1))
    check_accuracy("poincare_to_lorentz", convert.poincare_to_lorentz(p, c=c), None, lp_ref,
                   1e-12)
