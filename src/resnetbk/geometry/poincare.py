"""Poincaré ball of curvature -c: {x : c|x|^2 < 1}. Manifold dimension is the last axis.

Every function takes the curvature as keyword ``c`` (a positive float, or a tensor that
broadcasts against ``x[..., :1]``, e.g. a learnable scalar). Half types are computed in float32.
Functions returning points project them to ``sqrt(c)|x| <= 1 - BALL_EPS[dtype]`` so the result
stays inside the ball after rounding to its dtype; in float64 that margin is 1e-12, so the
formulas are exact there.

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
    artanh,
    as_curvature,
    ball_eps,
    norm,
    sqrt_c,
    upcast,
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
    """Debug-mode check that ``x`` lies strictly inside the ball (and is finite)."""
    if not debug_enabled():
        return
    check_finite(name, x)
    (xc,) = upcast(x)
    cc = as_curvature(c, xc)
    excess = cc * xc.pow(2).sum(-1, keepdim=True)
    if bool((excess >= 1).any()):
        worst = excess.max().item()
        raise ValueError(
            f"{name} is not inside the Poincaré ball: max c*|x|^2 = {worst:.6g}, expected < 1"
        )


def _validate(c: Curvature, **points: torch.Tensor) -> None:
    names, tensors = tuple(points), tuple(points.values())
    for n, t in points.items():
        check_floating(n, t)
    if len(tensors) > 1:
        check_same_dim(names, tensors)
    check_curvature(c)
    for n, t in points.items():
        check_point(n, t, c)


def _project(x: torch.Tensor, c: Curvature, storage_dtype: torch.dtype) -> torch.Tensor:
    """Scale x back to sqrt(c)|x| <= 1 - eps (compute-dtype tensors, eps of the storage dtype)."""
    max_norm = (1.0 - ball_eps(storage_dtype)) / sqrt_c(c)
    n = norm(x)
    return torch.where(n > max_norm, x / n * max_norm, x)


def _mobius_add(x: torch.Tensor, y: torch.Tensor, c: Curvature) -> torch.Tensor:
    x2 = x.pow(2).sum(-1, keepdim=True)
    y2 = y.pow(2).sum(-1, keepdim=True)
    xy = (x * y).sum(-1, keepdim=True)
    num = (1 + 2 * c * xy + c * y2) * x + (1 - c * x2) * y
    den = 1 + 2 * c * xy + c * c * x2 * y2
    return num / den


def _lambda(x: torch.Tensor, c: Curvature) -> torch.Tensor:
    return 2 / (1 - c * x.pow(2).sum(-1, keepdim=True))


def _expmap0(u: torch.Tensor, c: Curvature) -> torch.Tensor:
    sc = sqrt_c(c)
    un = norm(u)
    return torch.tanh(sc * un) * u / (sc * un)


def _logmap0(y: torch.Tensor, c: Curvature, storage_dtype: torch.dtype) -> torch.Tensor:
    sc = sqrt_c(c)
    yn = norm(y)
    return artanh(sc * yn, storage_dtype) * y / (sc * yn)


def _gyration(a: torch.Tensor, b: torch.Tensor, u: torch.Tensor, c: Curvature) -> torch.Tensor:
    # Closed form of gyr[a,b]u = -(a+b) + (a + (b + u)) (Ungar 2008, eq. 3.1), curvature -c.
    a2 = a.pow(2).sum(-1, keepdim=True)
    b2 = b.pow(2).sum(-1, keepdim=True)
    ab = (a * b).sum(-1, keepdim=True)
    au = (a * u).sum(-1, keepdim=True)
    bu = (b * u).sum(-1, keepdim=True)
    c2 = c * c
    coef_a = -c2 * au * b2 + c * bu + 2 * c2 * ab * bu
    coef_b = -c2 * bu * a2 - c * au
    den = 1 + 2 * c * ab + c2 * a2 * b2
    return u + 2 * (coef_a * a + coef_b * b) / den


def lambda_x(x: torch.Tensor, *, c: Curvature, keepdim: bool = False) -> torch.Tensor:
    """Conformal factor lambda_x = 2 / (1 - c|x|^2) of the metric at x."""
    _validate(c, x=x)
    (xc,) = upcast(x)
    out = _lambda(xc, as_curvature(c, xc))
    return (out if keepdim else out.squeeze(-1)).to(x.dtype)


def inner(
    x: torch.Tensor, u: torch.Tensor, v: torch.Tensor, *, c: Curvature, keepdim: bool = False
) -> torch.Tensor:
    """Riemannian inner product <u, v>_x = lambda_x^2 <u, v> of tangent vectors at x."""
    _validate(c, x=x, u=u, v=v)
    xc, uc, vc = upcast(x, u, v)
    lam = _lambda(xc, as_curvature(c, xc))
    out = lam.pow(2) * (uc * vc).sum(-1, keepdim=True)
    return (out if keepdim else out.squeeze(-1)).to(x.dtype)


def project(x: torch.Tensor, *, c: Curvature) -> torch.Tensor:
    """Move points with sqrt(c)|x| > 1 - BALL_EPS[dtype] radially onto that sphere."""
    check_floating("x", x)
    check_curvature(c)
    (xc,) = upcast(x)
    return _project(xc, as_curvature(c, xc), x.dtype).to(x.dtype)


def mobius_add(x: torch.Tensor, y: torch.Tensor, *, c: Curvature) -> torch.Tensor:
    """Möbius addition x ⊕ y."""
    _validate(c, x=x, y=y)
    xc, yc = upcast(x, y)
    cc = as_curvature(c, xc)
    return _project(_mobius_add(xc, yc, cc), cc, x.dtype).to(x.dtype)


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
    sc = sqrt_c(cc)
    xn = norm(xc)
    out = torch.tanh(r * artanh(sc * xn, x.dtype)) * xc / (sc * xn)
    return _project(out, cc, x.dtype).to(x.dtype)


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
    xc, mc = upcast(x, m)
    cc = as_curvature(c, xc)
    sc = sqrt_c(cc)
    mx = xc @ mc.transpose(-1, -2)
    xn = norm(xc)
    mxn = norm(mx)
    out = torch.tanh(mxn / xn * artanh(sc * xn, x.dtype)) * mx / (mxn * sc)
    return _project(out, cc, x.dtype).to(x.dtype)


def gyration(a: torch.Tensor, b: torch.Tensor, u: torch.Tensor, *, c: Curvature) -> torch.Tensor:
    """Gyration gyr[a, b] u = ⊖(a ⊕ b) ⊕ (a ⊕ (b ⊕ u)), in closed form."""
    _validate(c, a=a, b=b, u=u)
    ac, bc, uc = upcast(a, b, u)
    return _gyration(ac, bc, uc, as_curvature(c, ac)).to(u.dtype)


def expmap0(u: torch.Tensor, *, c: Curvature) -> torch.Tensor:
    """Exponential map at the origin: tanh(sqrt(c)|u|) u / (sqrt(c)|u|)."""
    check_floating("u", u)
    check_curvature(c)
    (uc,) = upcast(u)
    cc = as_curvature(c, uc)
    return _project(_expmap0(uc, cc), cc, u.dtype).to(u.dtype)


def logmap0(y: torch.Tensor, *, c: Curvature) -> torch.Tensor:
    """Logarithmic map at the origin: artanh(sqrt(c)|y|) y / (sqrt(c)|y|)."""
    _validate(c, y=y)
    (yc,) = upcast(y)
    return _logmap0(yc, as_curvature(c, yc), y.dtype).to(y.dtype)


def expmap(x: torch.Tensor, u: torch.Tensor, *, c: Curvature) -> torch.Tensor:
    """Exponential map at x: x ⊕ tanh(sqrt(c) lambda_x |u| / 2) u / (sqrt(c)|u|)."""
    _validate(c, x=x, u=u)
    xc, uc = upcast(x, u)
    cc = as_curvature(c, xc)
    sc = sqrt_c(cc)
    un = norm(uc)
    second = torch.tanh(sc * _lambda(xc, cc) * un / 2) * uc / (sc * un)
    return _project(_mobius_add(xc, second, cc), cc, x.dtype).to(x.dtype)


def logmap(x: torch.Tensor, y: torch.Tensor, *, c: Curvature) -> torch.Tensor:
    """Logarithmic map at x: 2/(sqrt(c) lambda_x) artanh(sqrt(c)|w|) w/|w|, w = (-x) ⊕ y."""
    _validate(c, x=x, y=y)
    xc, yc = upcast(x, y)
    cc = as_curvature(c, xc)
    sc = sqrt_c(cc)
    w = _mobius_add(-xc, yc, cc)
    wn = norm(w)
    out = 2 / (sc * _lambda(xc, cc)) * artanh(sc * wn, x.dtype) * w / wn
    return out.to(x.dtype)


def dist(x: torch.Tensor, y: torch.Tensor, *, c: Curvature, keepdim: bool = False) -> torch.Tensor:
    """Geodesic distance 2/sqrt(c) artanh(sqrt(c) |(-x) ⊕ y|)."""
    _validate(c, x=x, y=y)
    xc, yc = upcast(x, y)
    cc = as_curvature(c, xc)
    sc = sqrt_c(cc)
    out = 2 / sc * artanh(sc * norm(_mobius_add(-xc, yc, cc)), x.dtype)
    return (out if keepdim else out.squeeze(-1)).to(x.dtype)


def dist0(x: torch.Tensor, *, c: Curvature, keepdim: bool = False) -> torch.Tensor:
    """Distance from the origin: 2/sqrt(c) artanh(sqrt(c)|x|)."""
    _validate(c, x=x)
    (xc,) = upcast(x)
    sc = sqrt_c(as_curvature(c, xc))
    out = 2 / sc * artanh(sc * norm(xc), x.dtype)
    return (out if keepdim else out.squeeze(-1)).to(x.dtype)


def parallel_transport(
    x: torch.Tensor, y: torch.Tensor, v: torch.Tensor, *, c: Curvature
) -> torch.Tensor:
    """Parallel transport of v from T_x to T_y: gyr[y, -x] v * lambda_x / lambda_y."""
    _validate(c, x=x, y=y, v=v)
    xc, yc, vc = upcast(x, y, v)
    cc = as_curvature(c, xc)
    out = _gyration(yc, -xc, vc, cc) * _lambda(xc, cc) / _lambda(yc, cc)
    return out.to(v.dtype)


def parallel_transport0(y: torch.Tensor, v: torch.Tensor, *, c: Curvature) -> torch.Tensor:
    """Parallel transport of v from the origin to y: v * (1 - c|y|^2) = v * lambda_0/lambda_y."""
    _validate(c, y=y, v=v)
    yc, vc = upcast(y, v)
    cc = as_curvature(c, yc)
    return (vc * (1 - cc * yc.pow(2).sum(-1, keepdim=True))).to(v.dtype)


def egrad2rgrad(x: torch.Tensor, grad: torch.Tensor, *, c: Curvature) -> torch.Tensor:
    """Riemannian gradient from a Euclidean one: grad / lambda_x^2."""
    _validate(c, x=x, grad=grad)
    xc, gc = upcast(x, grad)
    return (gc / _lambda(xc, as_curvature(c, xc)).pow(2)).to(grad.dtype)


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
    """
    _validate(c, x=x)
    d = dim % x.dim()
    if d == x.dim() - 1:
        raise ValueError("dim must select the points, not the last (manifold) axis")
    (xc,) = upcast(x)
    cc = as_curvature(c, xc)
    lam = _lambda(xc, cc)
    w = torch.ones_like(lam) if weights is None else weights.to(xc.dtype).unsqueeze(-1)
    num = (w * lam * xc).sum(d, keepdim=True)
    den = (w * (lam - 1)).sum(d, keepdim=True)
    gyro_mean = num / den
    # 1/2 ⊗ y = y / (1 + sqrt(1 - c|y|^2)): closed form of the Möbius half-scaling.
    out = gyro_mean / (1 + torch.sqrt((1 - cc * gyro_mean.pow(2).sum(-1, keepdim=True))
                                      .clamp_min(0)))
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
    sc = sqrt_c(cc)
    lam = _lambda(xc, cc)
    zn = zc.norm(dim=0).clamp_min(torch.finfo(zc.dtype).tiny)
    two_sc_r = 2 * sc * rc
    arg = lam * sc * (xc @ (zc / zn)) * torch.cosh(two_sc_r) - (lam - 1) * torch.sinh(two_sc_r)
    return (2 * zn / sc * torch.asinh(arg)).to(x.dtype)
