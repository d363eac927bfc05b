"""Lorentz hyperboloid of curvature -c: {x : <x, x>_L = -1/c, x_0 > 0}, time coordinate first.

<u, v>_L = -u_0 v_0 + sum_i u_i v_i. Points and tangent vectors have d + 1 coordinates (last
axis). Curvature is the keyword ``c`` (positive float or a tensor broadcasting against
``x[..., :1]``). Half types are computed in float32.

Distances avoid the cancellation of arcosh(-c<x, y>_L) near 0: with q = <x - y, x - y>_L >= 0,
dist = 2/sqrt(c) asinh(sqrt(c q) / 2), and dist0 = asinh(sqrt(c)|x_space|)/sqrt(c). Exponential
maps cap the rapidity sqrt(c)|u|_L at MAX_RAPIDITY[dtype] so coordinates stay finite in that
dtype (11 in float16, where cosh must stay below 65504), and re-project the result.
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
    arcosh,
    as_curvature,
    inv_sinhc,
    max_rapidity,
    min_norm,
    sinhc,
    sqrt_c,
    upcast,
)
from resnetbk.geometry.numerics import (
    norm as euclidean_norm,
)

Curvature = float | torch.Tensor

__all__ = [
    "cdist",
    "centroid",
    "dist",
    "dist0",
    "egrad2rgrad",
    "expmap",
    "expmap0",
    "inner",
    "logmap",
    "logmap0",
    "norm",
    "origin",
    "parallel_transport",
    "project",
    "proju",
]


def check_point(name: str, x: torch.Tensor, c: Curvature, rtol: float | None = None) -> None:
    """Debug-mode check that ``x`` is on the hyperboloid: |c<x,x>_L + 1| <= rtol (1 + c x0^2)."""
    if not debug_enabled():
        return
    check_finite(name, x)
    (xc,) = upcast(x)
    cc = as_curvature(c, xc)
    if rtol is None:
        rtol = 1e-9 if xc.dtype == torch.float64 else 1e-3 if x.dtype == torch.float32 else 3e-2
    if bool((xc[..., 0] <= 0).any()):
        raise ValueError(f"{name} is not on the upper sheet of the hyperboloid: some x_0 <= 0")
    err = (cc * _inner(xc, xc) + 1).abs()
    scale = 1 + cc * xc[..., :1].pow(2)
    if bool((err > rtol * scale).any()):
        worst = (err / scale).max().item()
        raise ValueError(
            f"{name} is not on the hyperboloid <x,x>_L = -1/c: max relative |c<x,x>_L + 1| = "
            f"{worst:.3g}, tolerance {rtol:.1g}"
        )


def check_tangent(
    name: str, x: torch.Tensor, u: torch.Tensor, c: Curvature, rtol: float | None = None
) -> None:
    """Debug-mode check that u is tangent at x: |<x, u>_L| small relative to |x||u|."""
    if not debug_enabled():
        return
    check_finite(name, u)
    xc, uc = upcast(x, u)
    if rtol is None:
        rtol = 1e-9 if xc.dtype == torch.float64 else 1e-3 if u.dtype == torch.float32 else 3e-2
    err = _inner(xc, uc).abs()
    scale = xc.norm(dim=-1, keepdim=True) * uc.norm(dim=-1, keepdim=True) + min_norm(xc.dtype)
    if bool((err > rtol * scale).any()):
        raise ValueError(
            f"{name} is not tangent at the point: max relative |<x,u>_L| = "
            f"{(err / scale).max().item():.3g}, tolerance {rtol:.1g}"
        )


def _validate(c: Curvature, points: dict[str, torch.Tensor],
              tangents: dict[str, torch.Tensor] | None = None,
              base: torch.Tensor | None = None) -> None:
    tangents = tangents or {}
    every = {**points, **tangents}
    for n, t in every.items():
        check_floating(n, t)
        if t.shape[-1] < 2:
            raise ValueError(f"{n} needs at least 2 coordinates (time first), got {t.shape[-1]}")
    if len(every) > 1:
        check_same_dim(tuple(every), tuple(every.values()))
    check_curvature(c)
    for n, t in points.items():
        check_point(n, t, c)
    if base is not None:
        for n, t in tangents.items():
            check_tangent(n, base, t, c)


def _inner(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    uv = u * v
    return uv[..., 1:].sum(-1, keepdim=True) - uv[..., :1]


def _project(x: torch.Tensor, c: Curvature) -> torch.Tensor:
    space = x[..., 1:]
    time = torch.sqrt(1 / c + space.pow(2).sum(-1, keepdim=True))
    return torch.cat([time, space], dim=-1)


def _tangent_norm(u: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(_inner(u, u).clamp_min(min_norm(u.dtype)))


def _expmap(x: torch.Tensor, u: torch.Tensor, c: Curvature, storage_dtype: torch.dtype):
    sc = sqrt_c(c)
    theta = (sc * _tangent_norm(u)).clamp_max(max_rapidity(storage_dtype))
    # sinh(theta) u / (sqrt(c)|u|) written with sinhc so that u = 0 gives exactly x.
    unit_scale = theta / (sc * _tangent_norm(u))
    out = torch.cosh(theta) * x + sinhc(theta) * unit_scale * u
    return _project(out, c)


def _sq_chord(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # q = <x - y, x - y>_L >= 0 for points of one sheet; exact differences, no large products.
    diff = x - y
    return _inner(diff, diff).clamp_min(0)


def _dist(x: torch.Tensor, y: torch.Tensor, c: Curvature) -> torch.Tensor:
    sc = sqrt_c(c)
    chord = torch.sqrt((c * _sq_chord(x, y)).clamp_min(min_norm(x.dtype)))
    return 2 / sc * torch.asinh(chord / 2)


def origin(d: int, *, c: Curvature, dtype: torch.dtype | None = None,
           device: torch.device | str | None = None) -> torch.Tensor:
    """The origin (1/sqrt(c), 0, ..., 0) of the d-dimensional hyperboloid (d + 1 coordinates)."""
    check_curvature(c)
    o = torch.zeros(d + 1, dtype=dtype, device=device)
    o[0] = 1 / sqrt_c(c) if not isinstance(c, torch.Tensor) else float(1 / c.sqrt())
    return o


def inner(u: torch.Tensor, v: torch.Tensor, *, keepdim: bool = False) -> torch.Tensor:
    """Minkowski inner product <u, v>_L = -u_0 v_0 + sum_i u_i v_i."""
    for n, t in (("u", u), ("v", v)):
        check_floating(n, t)
    check_same_dim(("u", "v"), (u, v))
    uc, vc = upcast(u, v)
    out = _inner(uc, vc)
    return (out if keepdim else out.squeeze(-1)).to(u.dtype)


def norm(u: torch.Tensor, *, keepdim: bool = False) -> torch.Tensor:
    """Lorentz norm sqrt(<u, u>_L) of a tangent (space-like) vector; 0 for <u,u>_L <= 0."""
    check_floating("u", u)
    (uc,) = upcast(u)
    out = torch.sqrt(_inner(uc, uc).clamp_min(0))
    return (out if keepdim else out.squeeze(-1)).to(u.dtype)


def project(x: torch.Tensor, *, c: Curvature) -> torch.Tensor:
    """Onto the hyperboloid by recomputing the time coordinate: x_0 = sqrt(1/c + |x_space|^2)."""
    _validate(c, {}, {"x": x})
    (xc,) = upcast(x)
    return _project(xc, as_curvature(c, xc)).to(x.dtype)


def proju(x: torch.Tensor, u: torch.Tensor, *, c: Curvature) -> torch.Tensor:
    """Orthogonal projection of an ambient vector u onto T_x: u + c <x, u>_L x."""
    _validate(c, {"x": x}, {"u": u})
    xc, uc = upcast(x, u)
    cc = as_curvature(c, xc)
    return (uc + cc * _inner(xc, uc) * xc).to(u.dtype)


def expmap(x: torch.Tensor, u: torch.Tensor, *, c: Curvature) -> torch.Tensor:
    """Exponential map: cosh(sqrt(c)|u|) x + sinh(sqrt(c)|u|) u / (sqrt(c)|u|)."""
    _validate(c, {"x": x}, {"u": u}, base=x)
    xc, uc = upcast(x, u)
    return _expmap(xc, uc, as_curvature(c, xc), x.dtype).to(x.dtype)


def expmap0(u: torch.Tensor, *, c: Curvature) -> torch.Tensor:
    """Exponential map at the origin of a tangent vector u = (0, v): (cosh(t)/sqrt(c), sinh(t) v/|v|
    / sqrt(c)) with t = sqrt(c)|v|. The time coordinate of u must be 0 (checked in debug mode).
    """
    _validate(c, {}, {"u": u})
    if debug_enabled() and bool((u[..., 0] != 0).any()):
        raise ValueError("u must be tangent at the origin: its time coordinate u[..., 0] must be 0")
    (uc,) = upcast(u)
    cc = as_curvature(c, uc)
    sc = sqrt_c(cc)
    v = uc[..., 1:]
    vn = euclidean_norm(v)
    theta = (sc * vn).clamp_max(max_rapidity(u.dtype))
    space = sinhc(theta) * (theta / (sc * vn)) * v
    return _project(torch.cat([torch.zeros_like(uc[..., :1]), space], -1), cc).to(u.dtype)


def logmap0(y: torch.Tensor, *, c: Curvature) -> torch.Tensor:
    """Logarithmic map at the origin: (0, asinh(sqrt(c)|y_space|)/sqrt(c) y_space/|y_space|)."""
    _validate(c, {"y": y})
    (yc,) = upcast(y)
    cc = as_curvature(c, yc)
    sc = sqrt_c(cc)
    ys = yc[..., 1:]
    yn = euclidean_norm(ys)
    space = torch.asinh(sc * yn) / (sc * yn) * ys
    return torch.cat([torch.zeros_like(yc[..., :1]), space], -1).to(y.dtype)


def logmap(x: torch.Tensor, y: torch.Tensor, *, c: Curvature) -> torch.Tensor:
    """Logarithmic map at x: dist(x, y) w / |w|_L with w = y + c<x, y>_L x.

    Written cancellation-free: w = (y - x) - (c q / 2) x with q = <x - y, x - y>_L, and
    |w|_L = sinh(sqrt(c) d)/sqrt(c), so log_x(y) = (theta / sinh(theta)) w with theta = sqrt(c) d.
    """
    _validate(c, {"x": x, "y": y})
    xc, yc = upcast(x, y)
    cc = as_curvature(c, xc)
    w = (yc - xc) - (cc * _sq_chord(xc, yc) / 2) * xc
    theta = sqrt_c(cc) * _dist(xc, yc, cc)
    return (inv_sinhc(theta) * w).to(x.dtype)


def dist(x: torch.Tensor, y: torch.Tensor, *, c: Curvature, keepdim: bool = False) -> torch.Tensor:
    """Geodesic distance arcosh(-c<x, y>_L)/sqrt(c), computed as 2/sqrt(c) asinh(sqrt(c q)/2)."""
    _validate(c, {"x": x, "y": y})
    xc, yc = upcast(x, y)
    out = _dist(xc, yc, as_curvature(c, xc))
    return (out if keepdim else out.squeeze(-1)).to(x.dtype)


def dist0(x: torch.Tensor, *, c: Curvature, keepdim: bool = False) -> torch.Tensor:
    """Distance from the origin: asinh(sqrt(c)|x_space|)/sqrt(c)."""
    _validate(c, {"x": x})
    (xc,) = upcast(x)
    sc = sqrt_c(as_curvature(c, xc))
    out = torch.asinh(sc * xc[..., 1:].norm(dim=-1, keepdim=True)) / sc
    return (out if keepdim else out.squeeze(-1)).to(x.dtype)


def cdist(x: torch.Tensor, y: torch.Tensor, *, c: Curvature) -> torch.Tensor:
    """Pairwise distances between x (..., n, d+1) and y (..., m, d+1): (..., n, m).

    Reference path: one matrix product for <x_i, y_j>_L, then arcosh(-c<x_i, y_j>_L)/sqrt(c).
    Near-coincident pairs lose digits to cancellation (relative error ~ eps * c x_0 y_0 / d^2);
    use ``dist`` on the pairs where that matters.
    """
    _validate(c, {"x": x, "y": y})
    if x.dim() < 2 or y.dim() < 2:
        raise ValueError(f"cdist needs (..., n, d+1) and (..., m, d+1), got x{tuple(x.shape)}, "
                         f"y{tuple(y.shape)}")
    xc, yc = upcast(x, y)
    cc = as_curvature(c, xc)
    # The metric sign is folded into one operand so the product is one GEMM.
    y_flip = torch.cat([-yc[..., :1], yc[..., 1:]], dim=-1)
    alpha = -(xc @ y_flip.transpose(-1, -2))
    # A tensor c broadcasts against x[..., :1], i.e. one curvature per row of the result.
    return (arcosh(cc * alpha) / sqrt_c(cc)).to(x.dtype)


def parallel_transport(
    x: torch.Tensor, y: torch.Tensor, v: torch.Tensor, *, c: Curvature
) -> torch.Tensor:
    """Parallel transport of v from T_x to T_y: v + c<y, v>_L / (1 - c<x, y>_L) (x + y)."""
    _validate(c, {"x": x, "y": y}, {"v": v}, base=x)
    xc, yc, vc = upcast(x, y, v)
    cc = as_curvature(c, xc)
    # 1 - c<x,y>_L = 2 + c q / 2 >= 2: written without the cancellation of large products.
    den = 2 + cc * _sq_chord(xc, yc) / 2
    return (vc + cc * _inner(yc, vc) / den * (xc + yc)).to(v.dtype)


def egrad2rgrad(x: torch.Tensor, grad: torch.Tensor, *, c: Curvature) -> torch.Tensor:
    """Riemannian gradient: flip the time sign of the Euclidean gradient (the metric inverse),
    then project onto T_x."""
    _validate(c, {"x": x}, {"grad": grad})
    xc, gc = upcast(x, grad)
    cc = as_curvature(c, xc)
    h = torch.cat([-gc[..., :1], gc[..., 1:]], dim=-1)
    return (h + cc * _inner(xc, h) * xc).to(grad.dtype)


def centroid(
    x: torch.Tensor,
    *,
    c: Curvature,
    weights: torch.Tensor | None = None,
    dim: int = -2,
    keepdim: bool = False,
) -> torch.Tensor:
    """Weighted Lorentzian centroid (Law et al. 2019): a / (sqrt(c) sqrt(-<a, a>_L)),
    a = sum_i w_i x_i, the point minimising the weighted sum of squared Lorentzian distances.

    ``weights`` (non-negative, not all zero) broadcasts against ``x.shape[:-1]``; default uniform.
    """
    _validate(c, {"x": x})
    d = dim % x.dim()
    if d == x.dim() - 1:
        raise ValueError("dim must select the points, not the last (manifold) axis")
    (xc,) = upcast(x)
    cc = as_curvature(c, xc)
    if weights is None:
        a = xc.sum(d, keepdim=True)
    else:
        if not weights.is_floating_point():
            raise ValueError(f"weights must be floating, got {weights.dtype}")
        if weights.device.type == "cpu" and bool((weights < 0).any()):
            raise ValueError("centroid weights must be non-negative")
        a = (weights.to(xc.dtype).unsqueeze(-1) * xc).sum(d, keepdim=True)
    scale = torch.sqrt((-_inner(a, a)).clamp_min(min_norm(xc.dtype)))
    out = _project(a / (sqrt_c(cc) * scale), cc)
    return (out if keepdim else out.squeeze(d)).to(x.dtype)
