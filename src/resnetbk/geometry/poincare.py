"""Poincaré ball of curvature -c: {x : c|x|^2 < 1}. Manifold dimension is the last axis.

Every function takes the curvature as keyword ``c`` (a positive float, or a tensor that
broadcasts against ``x[..., :1]``, e.g. a learnable scalar). Half types are computed in float32.
Functions returning points project them to ``sqrt(c)|x| <= 1 - BALL_EPS[dtype]`` so the result
stays inside the ball after rounding to its dtype; in float64 that margin is 1e-12, so the
formulas are exact there. Input points are read as they are up to sqrt(c)|x| = 1 - BALL_EPS/2
(``numerics.read_radius``); beyond it (only reachable by rounding, e.g. 1 - 1e-6 is 1.0 in
bfloat16) they are read as the point on that sphere. The formulas are arranged so that nothing
cancels near the boundary (docs/NUMERICS.md): errors scale like eps/(1 - c|x|^2), the
conditioning of the point itself, not eps/(1 - c|x|^2)^2.

Formulas: Ganea, Bécigneul & Hofmann, "Hyperbolic Neural Networks" (2018); Ungar, "A Gyrovector
Space Approach to Hyperbolic Geometry" (2008); Shimizu, Mukuta & Harada, "HNN++" (2021).
"""

from __future__ import annotations

import torch

from resnetbk.debug import (
    check_curvature,
    check_finite,
    check_floating,
    check_same_dim,
    debug_enabled,
)
from resnetbk.geometry.numerics import (
    accumulate,
    artanh,
    as_curvature,
    asinhc,
    ball_eps,
    clip_factor,
    clip_norm,
    norm,
    points_axis,
    read_radius,
    sech2,
    sqrt_c,
    upcast,
)
from resnetbk.kernels.dispatch import (
    compiled_reference,
    curvature_value,
    use_kernels,
    use_row_kernel,
)

Curvature = float | torch.Tensor

__all__ = [
    "dist",
    "dist0",
    "egrad2rgrad",
    "expmap",
    "expmap0",
    "gyration",
    "inner",
    "lambda_x",
    "logmap",
    "logmap0",
    "midpoint",
    "mobius_add",
    "mobius_matvec",
    "mobius_scalar_mul",
    "mobius_sub",
    "parallel_transport",
    "parallel_transport0",
    "project",
    "unidirectional_mlr",
]


def check_point(name: str, x: torch.Tensor, c: Curvature) -> None:
    """Debug-mode check that ``x`` lies inside the ball (and is finite).

    c|x|^2 < 1, up to the rounding of x's dtype: a valid point rounded to bfloat16 or float16
    can land on or just past the boundary (1 - 1e-6 is 1.0 in bfloat16); such points are read
    on the read sphere (``numerics.read_radius``), so only c|x|^2 >= 1 + 4 eps(dtype) is an error.
    """
    if not debug_enabled():
        return
    check_finite(name, x)
    (xc,) = upcast(x)
    cc = as_curvature(c, xc)
    excess = cc * xc.pow(2).sum(-1, keepdim=True)
    limit = 1.0 if x.dtype == torch.float64 else 1.0 + 4 * torch.finfo(x.dtype).eps
    if bool((excess >= limit).any()):
        worst = excess.max().item()
        expected = "< 1" if limit == 1.0 else f"< 1 (up to rounding: < {limit:.6g})"
        raise ValueError(
            f"{name} is not inside the Poincaré ball: max c*|x|^2 = {worst:.6g}, expected "
            f"{expected}"
        )


def _validate(c: Curvature, vectors: tuple[str, ...] = (), **tensors: torch.Tensor) -> None:
    """Cheap checks on every argument; in debug mode, the ball check on the points and the
    finiteness check on the ``vectors`` (tangent vectors, gradients: any size)."""
    names, values = tuple(tensors), tuple(tensors.values())
    for n, t in tensors.items():
        check_floating(n, t)
    if len(values) > 1:
        check_same_dim(names, values)
    check_curvature(c)
    for n, t in tensors.items():
        if n in vectors:
            check_finite(n, t)
        else:
            check_point(n, t, c)


def _project(x: torch.Tensor, c: Curvature, storage_dtype: torch.dtype) -> torch.Tensor:
    """Scale x back to sqrt(c)|x| <= 1 - eps (compute-dtype tensors, eps of the storage dtype)."""
    return clip_norm(x, (1.0 - ball_eps(storage_dtype)) / sqrt_c(c))


def _read(x: torch.Tensor, c: Curvature, storage_dtype: torch.dtype) -> torch.Tensor:
    """Read an input point: sqrt(c)|x| > 1 - eps/2 (only reachable by rounding a point onto or
    past the boundary, e.g. 1 - 1e-6 in bfloat16) is read as the point on that sphere.

    Outputs of this module lie within 1 - eps, so reading never changes them or their gradient.
    """
    return clip_norm(x, read_radius(storage_dtype) / sqrt_c(c))


def _gap(x: torch.Tensor, c: Curvature) -> torch.Tensor:
    """1 - c|x|^2 = 2 / lambda_x (positive for a read point)."""
    return 1 - c * x.pow(2).sum(-1, keepdim=True)


def _read_rows(x: torch.Tensor, c: Curvature,
               storage_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(f, a): the read point is f x (see ``_read``) and a = 1 - c|f x|^2 its gap, both per row,
    from one reduction over x (no full-size temporary)."""
    # The norm, not sqrt(|x|^2): its gradient at x = 0 is 0, where sqrt's would be 0 * inf = NaN.
    n = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    f = clip_factor(n, read_radius(storage_dtype) / sqrt_c(c))
    return f, 1 - c * (f * n).pow(2)


def _mobius_add_rows(x: torch.Tensor, y: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor,
                     gx: torch.Tensor, gy: torch.Tensor, c: Curvature) -> torch.Tensor:
    """(fx x) ⊕ (fy y) for per-row factors fx, fy and the gaps gx, gy of fx x and fy y:
    (a_x s + c|s|^2 fx x) / (a_x a_y + c|s|^2) with s = fx x + fy y, a = 1 - c|.|^2.

    Algebraically equal to the textbook ((1 + 2c<x,y> + c|y|^2) x + (1 - c|x|^2) y) /
    (1 + 2c<x,y> + c^2|x|^2|y|^2), but free of its cancellation: for y ~ -x near the boundary
    the textbook denominator is a difference of O(1) terms equal to O(a^2), which loses
    eps/a^2 relative; here every term is a product of small accurate factors (error eps/a).
    Full-size work is two temporaries, updated in place where shapes allow (``accumulate``),
    and one norm: on the CPU the allocations, not the arithmetic, dominate.
    """
    s = x * fx
    s = accumulate(s, fy, y)
    cs2 = c * torch.linalg.vector_norm(s, dim=-1, keepdim=True).pow(2)
    den = gx * gy + cs2
    out = s * (gx / den)
    return accumulate(out, x, cs2 * fx / den)


def _mobius_add(
    x: torch.Tensor,
    y: torch.Tensor,
    c: Curvature,
    gap_x: torch.Tensor | None = None,
    gap_y: torch.Tensor | None = None,
) -> torch.Tensor:
    """x ⊕ y for read points (see ``_mobius_add_rows``)."""
    one = torch.ones((), dtype=x.dtype, device=x.device)
    gx = _gap(x, c) if gap_x is None else gap_x
    gy = _gap(y, c) if gap_y is None else gap_y
    return _mobius_add_rows(x, y, one, one, gx, gy, c)


def _lambda(x: torch.Tensor, c: Curvature) -> torch.Tensor:
    return 2 / _gap(x, c)


def _dist_arg(x: torch.Tensor, y: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor,
              gx: torch.Tensor, gy: torch.Tensor,
              c: Curvature) -> tuple[torch.Tensor, torch.Tensor]:
    """(delta, z) for the read points fx x, fy y (``_read_rows``) with gaps gx, gy:
    delta = fy y - fx x and z = sinh(sqrt(c) d / 2) = sqrt(c)|delta| / sqrt(a_x a_y)."""
    delta = y * fy
    delta = accumulate(delta, x, fx, value=-1)
    # Unfloored norm: exactly 0 for x = y (torch gives |.| the subgradient 0 there).
    dn = torch.linalg.vector_norm(delta, dim=-1, keepdim=True)
    return delta, sqrt_c(c) * dn / torch.sqrt(gx * gy)


def _gyration(a: torch.Tensor, b: torch.Tensor, u: torch.Tensor, c: Curvature) -> torch.Tensor:
    """gyr[a,b]u = ⊖(a ⊕ b) ⊕ (a ⊕ (b ⊕ u)) (Ungar 2008, eq. 3.1), curvature -c.

    Closed form u + 2N/D, rewritten in s = a + b so that it does not cancel for a ~ -b near the
    boundary (the case of parallel transport between nearby points, gyr[y, -x]):
    N = -(c g_b <s,u> + c^2 |s|^2 <b,u>) b + (c <b,u> (g_a + c|s|^2) - c^2 |b|^2 <s,u>) s,
    D = g_a g_b + c|s|^2, with g = 1 - c|.|^2. Expanding s gives the textbook coefficients.
    """
    ga = _gap(a, c)
    gb = _gap(b, c)
    s = a + b
    s2 = s.pow(2).sum(-1, keepdim=True)
    b2 = b.pow(2).sum(-1, keepdim=True)
    su = (s * u).sum(-1, keepdim=True)
    bu = (b * u).sum(-1, keepdim=True)
    cs2 = c * s2
    coef_b = -(c * gb * su + c * cs2 * bu)
    coef_s = c * bu * (ga + cs2) - c * c * b2 * su
    return u + 2 * (coef_b * b + coef_s * s) / (ga * gb + cs2)


def lambda_x(x: torch.Tensor, *, c: Curvature, keepdim: bool = False) -> torch.Tensor:
    """Conformal factor lambda_x = 2 / (1 - c|x|^2) of the metric at x."""
    _validate(c, x=x)
    (xc,) = upcast(x)
    cc = as_curvature(c, xc)
    out = _lambda(_read(xc, cc, x.dtype), cc)
    return (out if keepdim else out.squeeze(-1)).to(x.dtype)


def inner(
    x: torch.Tensor, u: torch.Tensor, v: torch.Tensor, *, c: Curvature, keepdim: bool = False
) -> torch.Tensor:
    """Riemannian inner product <u, v>_x = lambda_x^2 <u, v> of tangent vectors at x."""
    _validate(c, ("u", "v"), x=x, u=u, v=v)
    xc, uc, vc = upcast(x, u, v)
    cc = as_curvature(c, xc)
    lam = _lambda(_read(xc, cc, x.dtype), cc)
    out = lam.pow(2) * (uc * vc).sum(-1, keepdim=True)
    return (out if keepdim else out.squeeze(-1)).to(x.dtype)


def project(x: torch.Tensor, *, c: Curvature) -> torch.Tensor:
    """Move points with sqrt(c)|x| > 1 - BALL_EPS[dtype] radially onto that sphere."""
    check_floating("x", x)
    check_curvature(c)
    if use_row_kernel(x, c=c):
        from resnetbk.kernels.poincare_radial import project as fused

        return fused(x, curvature_value(c))
    return compiled_reference(_project_stored, x, c=c)


def _project_stored(x: torch.Tensor, c: Curvature) -> torch.Tensor:
    (xc,) = upcast(x)
    return _project(xc, as_curvature(c, xc), x.dtype).to(x.dtype)


def mobius_add(x: torch.Tensor, y: torch.Tensor, *, c: Curvature) -> torch.Tensor:
    """Möbius addition x ⊕ y."""
    _validate(c, x=x, y=y)
    if use_row_kernel(x, y, c=c):
        from resnetbk.kernels.mobius_add import mobius_add as fused

        return fused(x, y, curvature_value(c))
    return compiled_reference(_mobius_add_stored, x, y, c=c)


def _mobius_add_stored(x: torch.Tensor, y: torch.Tensor, c: Curvature) -> torch.Tensor:
    xc, yc = upcast(x, y)
    cc = as_curvature(c, xc)
    fx, gx = _read_rows(xc, cc, x.dtype)
    fy, gy = _read_rows(yc, cc, x.dtype)
    return _project(_mobius_add_rows(xc, yc, fx, fy, gx, gy, cc), cc, x.dtype).to(x.dtype)


def mobius_sub(x: torch.Tensor, y: torch.Tensor, *, c: Curvature) -> torch.Tensor:
    """Möbius subtraction x ⊖ y = x ⊕ (-y)."""
    return mobius_add(x, -y, c=c)


def mobius_scalar_mul(r: float | torch.Tensor, x: torch.Tensor, *, c: Curvature) -> torch.Tensor:
    """Möbius scalar multiplication r ⊗ x = tanh(r artanh(sqrt(c)|x|)) x / (sqrt(c)|x|).

    ``r`` is a float or a tensor broadcasting against ``x[..., :1]``.
    """
    _validate(c, x=x)
    (xc,) = upcast(x)
    cc = as_curvature(c, xc)
    if isinstance(r, torch.Tensor):
        r = r.to(xc.dtype)
    t = sqrt_c(cc) * norm(xc)
    # One per-row factor: reading the point clamps t, projecting the result clamps the tanh.
    bound = 1 - ball_eps(x.dtype)
    th = torch.tanh(r * artanh(t.clamp_max(read_radius(x.dtype)), x.dtype))
    return (xc * (th.clamp(-bound, bound) / t)).to(x.dtype)


def mobius_matvec(m: torch.Tensor, x: torch.Tensor, *, c: Curvature) -> torch.Tensor:
    """Möbius matrix-vector product M ⊗ x = expmap0(M logmap0(x)) for M of shape (out, in).

    Computed as tanh(|Mx|/|x| artanh(sqrt(c)|x|)) Mx / (sqrt(c)|Mx|); 0 where Mx = 0.
    """
    _validate(c, x=x)
    check_floating("m", m)
    if m.dim() != 2 or m.shape[-1] != x.shape[-1]:
        raise ValueError(
            f"m must be a matrix of shape (out, {x.shape[-1]}) for x{tuple(x.shape)}, "
            f"got m{tuple(m.shape)}"
        )
    if use_kernels(m, x, c=c):
        from resnetbk.kernels.poincare_linear import mobius_matvec as fused

        return fused(m, x, curvature_value(c))
    xc, mc = upcast(x, m)
    cc = as_curvature(c, xc)
    sc = sqrt_c(cc)
    mx = xc @ mc.transpose(-1, -2)
    xn = norm(xc)
    mxn = norm(mx)
    # Reading x scales x and Mx alike (|Mx|/|x| is unchanged) and clamps sqrt(c)|x|; projecting
    # the result clamps the tanh: one per-row factor on the GEMM output.
    th = torch.tanh(mxn / xn * artanh((sc * xn).clamp_max(read_radius(x.dtype)), x.dtype))
    return (mx * (th.clamp_max(1 - ball_eps(x.dtype)) / (mxn * sc))).to(x.dtype)


def gyration(a: torch.Tensor, b: torch.Tensor, u: torch.Tensor, *, c: Curvature) -> torch.Tensor:
    """Gyration gyr[a, b] u = ⊖(a ⊕ b) ⊕ (a ⊕ (b ⊕ u)), in closed form."""
    _validate(c, ("u",), a=a, b=b, u=u)
    ac, bc, uc = upcast(a, b, u)
    cc = as_curvature(c, ac)
    ac, bc = _read(ac, cc, a.dtype), _read(bc, cc, a.dtype)
    return _gyration(ac, bc, uc, cc).to(u.dtype)


def expmap0(u: torch.Tensor, *, c: Curvature) -> torch.Tensor:
    """Exponential map at the origin: tanh(sqrt(c)|u|) u / (sqrt(c)|u|)."""
    check_floating("u", u)
    check_curvature(c)
    if use_row_kernel(u, c=c):
        from resnetbk.kernels.poincare_radial import expmap0 as fused

        return fused(u, curvature_value(c))
    return compiled_reference(_expmap0_stored, u, c=c)


def _expmap0_stored(u: torch.Tensor, c: Curvature) -> torch.Tensor:
    (uc,) = upcast(u)
    cc = as_curvature(c, uc)
    sc = sqrt_c(cc)
    t = sc * norm(uc)
    # The result's sqrt(c)|.| is tanh(t): projecting it is clamping tanh(t), so the whole map is
    # one multiplication by a per-row factor.
    return (uc * (torch.tanh(t).clamp_max(1 - ball_eps(u.dtype)) / t)).to(u.dtype)


def logmap0(y: torch.Tensor, *, c: Curvature) -> torch.Tensor:
    """Logarithmic map at the origin: artanh(sqrt(c)|y|) y / (sqrt(c)|y|)."""
    _validate(c, y=y)
    if use_row_kernel(y, c=c):
        from resnetbk.kernels.poincare_radial import logmap0 as fused

        return fused(y, curvature_value(c))
    return compiled_reference(_logmap0_stored, y, c=c)


def _logmap0_stored(y: torch.Tensor, c: Curvature) -> torch.Tensor:
    (yc,) = upcast(y)
    cc = as_curvature(c, yc)
    sc = sqrt_c(cc)
    t = sc * norm(yc)
    # Reading the point (``_read``) clamps sqrt(c)|y| at the read radius.
    z = t.clamp_max(read_radius(y.dtype))
    return (yc * (artanh(z, y.dtype) / t)).to(y.dtype)


def expmap(x: torch.Tensor, u: torch.Tensor, *, c: Curvature) -> torch.Tensor:
    """Exponential map at x: x ⊕ w, w = tanh(t) u / (sqrt(c)|u|), t = sqrt(c) lambda_x |u| / 2.

    The gap 1 - c|w|^2 = sech(t)^2 is computed from t, not from w (where it would cancel).
    """
    _validate(c, ("u",), x=x, u=u)
    return compiled_reference(_expmap, x, u, c=c)


def _expmap(x: torch.Tensor, u: torch.Tensor, c: Curvature) -> torch.Tensor:
    xc, uc = upcast(x, u)
    cc = as_curvature(c, xc)
    fx, gx = _read_rows(xc, cc, x.dtype)
    sc = sqrt_c(cc)
    un = norm(uc)
    t = sc * un / gx
    out = _mobius_add_rows(xc, uc, fx, torch.tanh(t) / (sc * un), gx, sech2(t), cc)
    return _project(out, cc, x.dtype).to(x.dtype)


def logmap(x: torch.Tensor, y: torch.Tensor, *, c: Curvature) -> torch.Tensor:
    """Logarithmic map at x: 2/(sqrt(c) lambda_x) artanh(sqrt(c)|w|) w/|w|, w = (-x) ⊕ y.

    Evaluated without cancellation: with delta = y - x, z = sqrt(c)|delta|/sqrt(a_x a_y)
    (= sinh(sqrt(c) d / 2)) and a = 1 - c|.|^2, w is parallel to a_x delta - c|delta|^2 x and
    log_x(y) = asinh(z)/z / (a_y sqrt(1 + z^2)) (a_x delta - c|delta|^2 x).
    """
    _validate(c, x=x, y=y)
    return compiled_reference(_logmap, x, y, c=c)


def _logmap(x: torch.Tensor, y: torch.Tensor, c: Curvature) -> torch.Tensor:
    xc, yc = upcast(x, y)
    cc = as_curvature(c, xc)
    fx, gx = _read_rows(xc, cc, x.dtype)
    fy, gy = _read_rows(yc, cc, x.dtype)
    delta, z = _dist_arg(xc, yc, fx, fy, gx, gy, cc)
    # direction a_x delta - c|delta|^2 (fx x), scaled: two per-row coefficients, one temporary
    scale = asinhc(z) / (gy * torch.sqrt(1 + z * z))
    out = delta * (scale * gx)
    # c|delta|^2 = z^2 a_x a_y
    out = accumulate(out, xc, scale * (z * z * gx * gy) * fx, value=-1)
    return out.to(x.dtype)


def dist(x: torch.Tensor, y: torch.Tensor, *, c: Curvature, keepdim: bool = False) -> torch.Tensor:
    """Geodesic distance 2/sqrt(c) artanh(sqrt(c) |(-x) ⊕ y|).

    Evaluated as 2/sqrt(c) asinh(sqrt(c)|x - y| / sqrt((1 - c|x|^2)(1 - c|y|^2))): relative
    error eps/(1 - c|x|^2) (the conditioning of the point itself) instead of the Möbius form's
    eps/(1 - c|x|^2)^2 for nearby points near the boundary.
    """
    _validate(c, x=x, y=y)
    out = compiled_reference(_dist, x, y, c=c)
    return out if keepdim else out.squeeze(-1)


def _dist(x: torch.Tensor, y: torch.Tensor, c: Curvature) -> torch.Tensor:
    xc, yc = upcast(x, y)
    cc = as_curvature(c, xc)
    fx, gx = _read_rows(xc, cc, x.dtype)
    fy, gy = _read_rows(yc, cc, x.dtype)
    _, z = _dist_arg(xc, yc, fx, fy, gx, gy, cc)
    return (2 / sqrt_c(cc) * torch.asinh(z)).to(x.dtype)


def dist0(x: torch.Tensor, *, c: Curvature, keepdim: bool = False) -> torch.Tensor:
    """Distance from the origin: 2/sqrt(c) artanh(sqrt(c)|x|)."""
    _validate(c, x=x)
    (xc,) = upcast(x)
    cc = as_curvature(c, xc)
    xc = _read(xc, cc, x.dtype)
    sc = sqrt_c(cc)
    out = 2 / sc * artanh(sc * norm(xc), x.dtype)
    return (out if keepdim else out.squeeze(-1)).to(x.dtype)


def parallel_transport(
    x: torch.Tensor, y: torch.Tensor, v: torch.Tensor, *, c: Curvature
) -> torch.Tensor:
    """Parallel transport of v from T_x to T_y: gyr[y, -x] v * lambda_x / lambda_y."""
    _validate(c, ("v",), x=x, y=y, v=v)
    xc, yc, vc = upcast(x, y, v)
    cc = as_curvature(c, xc)
    xc, yc = _read(xc, cc, x.dtype), _read(yc, cc, x.dtype)
    out = _gyration(yc, -xc, vc, cc) * (_gap(yc, cc) / _gap(xc, cc))
    return out.to(v.dtype)


def parallel_transport0(y: torch.Tensor, v: torch.Tensor, *, c: Curvature) -> torch.Tensor:
    """Parallel transport of v from the origin to y: v * (1 - c|y|^2) = v * lambda_0/lambda_y."""
    _validate(c, ("v",), y=y, v=v)
    yc, vc = upcast(y, v)
    cc = as_curvature(c, yc)
    return (vc * _gap(_read(yc, cc, y.dtype), cc)).to(v.dtype)


def egrad2rgrad(x: torch.Tensor, grad: torch.Tensor, *, c: Curvature) -> torch.Tensor:
    """Riemannian gradient from a Euclidean one: grad / lambda_x^2."""
    _validate(c, ("grad",), x=x, grad=grad)
    xc, gc = upcast(x, grad)
    cc = as_curvature(c, xc)
    return (gc * (_gap(_read(xc, cc, x.dtype), cc) / 2).pow(2)).to(grad.dtype)


def midpoint(
    x: torch.Tensor,
    *,
    c: Curvature,
    weights: torch.Tensor | None = None,
    dim: int = -2,
    keepdim: bool = False,
) -> torch.Tensor:
    """Weighted gyromidpoint of the points along ``dim`` (Ungar 2008, eq. 4.46 for the ball).

    m = 1/2 ⊗ (sum_i w_i lambda_i x_i / sum_i w_i (lambda_i - 1)). ``weights`` broadcasts
    against ``x.shape[:-1]``; default uniform. ``dim`` indexes ``x`` and must not be the last
    (manifold) axis.

    Evaluated without the cancellation of the half-scaling 1/(1 + sqrt(1 - c|y|^2)) near the
    boundary: with v_i = w_i / a_i (a = 1 - c|.|^2), W = sum w_i, V = sum v_i, mean
    xbar = sum v_i x_i / V and spread S = sum v_i |x_i - xbar|^2 (two-pass, shifted by the first
    point), m = 2 V xbar / (2V - W + sign * sqrt(W^2 + 4 c V S)) where sign = sign(2V - W);
    identical points give exactly S = 0 and m = x.
    """
    _validate(c, x=x)
    d = points_axis(x, dim)
    (xc,) = upcast(x)
    cc = as_curvature(c, xc)
    xc = _read(xc, cc, x.dtype)
    gap = _gap(xc, cc)
    w = torch.ones_like(gap) if weights is None else weights.to(xc.dtype).unsqueeze(-1)
    w_sum = w.expand(torch.broadcast_shapes(w.shape, gap.shape)).sum(d, keepdim=True)
    v = w / gap
    v_sum = v.sum(d, keepdim=True)
    shifted = xc - xc.narrow(d, 0, 1)
    mean_shift = (v * shifted).sum(d, keepdim=True) / v_sum
    spread = (v * (shifted - mean_shift).pow(2).sum(-1, keepdim=True)).sum(d, keepdim=True)
    mean = xc.narrow(d, 0, 1) + mean_shift
    lead = 2 * v_sum - w_sum
    # Same clamp as the textbook form's sqrt(max(1 - c|y|^2, 0)); only negative weights reach it.
    root = torch.sqrt((w_sum.pow(2) + 4 * cc * v_sum * spread).clamp_min(0))
    out = 2 * v_sum * mean / (lead + torch.where(lead < 0, -root, root))
    out = _project(out, cc, x.dtype)
    return (out if keepdim else out.squeeze(d)).to(x.dtype)


def unidirectional_mlr(
    x: torch.Tensor, z: torch.Tensor, r: torch.Tensor, *, c: Curvature
) -> torch.Tensor:
    """HNN++ unidirectional hyperplane logits (Shimizu et al. 2021, eq. 6).

    For ``x`` (..., n), normal vectors ``z`` (n, k) and biases ``r`` (k,):
    v_k = 2|z_k|/sqrt(c) asinh(lambda_x sqrt(c) <x, z_k/|z_k|> cosh(2 sqrt(c) r_k)
                                 - (lambda_x - 1) sinh(2 sqrt(c) r_k)).
    Returns (..., k): the signed, scaled distance of x to each of k hyperplanes.
    """
    _validate(c, x=x)
    check_floating("z", z)
    if z.dim() != 2 or z.shape[0] != x.shape[-1] or r.shape != z.shape[1:]:
        raise ValueError(
            f"expected z of shape ({x.shape[-1]}, k) and r of shape (k,), "
            f"got z{tuple(z.shape)}, r{tuple(r.shape)}"
        )
    xc, zc, rc = upcast(x, z, r)
    cc = as_curvature(c, xc)
    xc = _read(xc, cc, x.dtype)
    sc = sqrt_c(cc)
    lam = _lambda(xc, cc)
    zn = zc.norm(dim=0).clamp_min(torch.finfo(zc.dtype).tiny)
    two_sc_r = 2 * sc * rc
    arg = lam * sc * (xc @ (zc / zn)) * torch.cosh(two_sc_r) - (lam - 1) * torch.sinh(two_sc_r)
    return (2 * zn / sc * torch.asinh(arg)).to(x.dtype)
