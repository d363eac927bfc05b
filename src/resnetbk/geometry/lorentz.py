"""Lorentz hyperboloid of curvature -c: {x : <x, x>_L = -1/c, x_0 > 0}, time coordinate first.

<u, v>_L = -u_0 v_0 + sum_i u_i v_i. Points and tangent vectors have d + 1 coordinates (last
axis). Curvature is the keyword ``c`` (positive float or a tensor broadcasting against
``x[..., :1]``). Half types are computed in float32.

A point is determined by its spatial part (every point-valued op recomputes x_0 =
sqrt(1/c + |x_s|^2)) and a tangent vector at x by its spatial part (u_0 = <x_s, u_s>/x_0).
Far from the origin the ambient forms cancel (-x_0 y_0 + <x_s, y_s> and the Minkowski norm of
a tangent vector are cosh(r)^2 times larger than their result), so distances use the polar
half-chord (``_half_chord2``, hyperbolic law of cosines), tangent norms and inner products the
radial/orthogonal split in the frame of the base point (``_tangent_inner``), and the centroid
the Poincaré-spread identity; dist0 = asinh(sqrt(c)|x_space|)/sqrt(c). Exponential maps cap the
rapidity sqrt(c)|u|_L at MAX_RAPIDITY[dtype], and every point-valued op caps the rapidity of
its result likewise, so coordinates stay finite in that dtype (11 in float16, where cosh must
stay below 65504). See docs/NUMERICS.md.
"""

from __future__ import annotations

import math

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
    asinhc,
    clip_factor,
    inv_sinhc,
    max_rapidity,
    min_norm,
    points_axis,
    sinhc,
    sqrt_c,
    upcast,
)
from resnetbk.geometry.numerics import (
    norm as euclidean_norm,
)
from resnetbk.kernels.dispatch import compiled_reference, curvature_value, use_kernels

Curvature = float | torch.Tensor

__all__ = [
    "cdist",
    "centroid",
    "dist",
    "dist0",
    "egrad2rgrad",
    "expmap",
    "expmap0",
    "from_spatial",
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
    for n, t in tangents.items():
        if base is not None:
            check_tangent(n, base, t, c)
        else:
            check_finite(n, t)


def _inner(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    uv = u * v
    return uv[..., 1:].sum(-1, keepdim=True) - uv[..., :1]


def _from_spatial(space: torch.Tensor, c: Curvature, storage_dtype: torch.dtype | None = None,
                  scale: torch.Tensor | None = None) -> torch.Tensor:
    """The point (sqrt(1/c + |s|^2), s) with spatial part s = ``scale`` * ``space`` (``scale``
    per row, >= 0; default 1: folding a caller's factor in saves a full-size pass).

    With ``storage_dtype``, s is first capped at sqrt(c)|s| <= sinh(MAX_RAPIDITY[dtype])
    (and |s| <= finfo.max / 4), so that every coordinate, rounded to that dtype, is finite,
    and for a narrower storage dtype rounded to it, so that x_0 is computed from the s that
    will be stored: the stored point then carries one rounding (of x_0) instead of two.
    """
    n = torch.linalg.vector_norm(space, dim=-1, keepdim=True)
    if scale is not None:
        n = n * scale
    if storage_dtype is not None:
        cap = math.sinh(max_rapidity(storage_dtype)) / sqrt_c(c)
        cap_finite = torch.finfo(storage_dtype).max / 4
        cap = cap.clamp_max(cap_finite) if isinstance(cap, torch.Tensor) else min(cap, cap_finite)
        f = clip_factor(n, cap)
        scale, n = (f if scale is None else scale * f), n * f
    if scale is not None:
        space = space * scale
    if storage_dtype is not None and storage_dtype != space.dtype:
        space = space.to(storage_dtype).to(space.dtype)
        n = torch.linalg.vector_norm(space, dim=-1, keepdim=True)
    return torch.cat([torch.sqrt(1 / c + n * n), space], dim=-1)


def _project(x: torch.Tensor, c: Curvature,
             storage_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Recompute the time coordinate from the spatial part (see ``_from_spatial``)."""
    return _from_spatial(x[..., 1:], c, storage_dtype)


def _frame_parts(x: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(u_perp, u_rad) of a tangent vector u at x from its spatial part: u_rad = <xhat_s, u_s>,
    u_perp = u_s - u_rad xhat_s. Its Lorentz norm is |u_perp|^2 + u_rad^2 / (c x_0^2)."""
    xs = x[..., 1:]
    xhat = xs / euclidean_norm(xs)
    us = u[..., 1:]
    rad = (xhat * us).sum(-1, keepdim=True)
    return us - rad * xhat, rad


def _tangent_inner(x: torch.Tensor, u: torch.Tensor, v: torch.Tensor, c: Curvature
                   ) -> torch.Tensor:
    """<u, v>_L of tangent vectors at x, from their spatial parts (u_0 = <x_s, u_s>/x_0).

    The ambient -u_0 v_0 + <u_s, v_s> cancels for a far point x: both terms are ~ cosh^2 of its
    rapidity times the result. Split into the radial and orthogonal parts of x_s instead:
    <u, v>_L = <u_perp, v_perp> + u_rad v_rad / (c x_0^2), each term without cancellation.
    """
    u_perp, u_rad = _frame_parts(x, u)
    if v is u:
        v_perp, v_rad = u_perp, u_rad
    else:
        v_perp, v_rad = _frame_parts(x, v)
    return (u_perp * v_perp).sum(-1, keepdim=True) + u_rad * v_rad / (c * x[..., :1].pow(2))


def _tangent_norm(x: torch.Tensor, u: torch.Tensor, c: Curvature) -> torch.Tensor:
    return torch.sqrt(_tangent_inner(x, u, u, c).clamp_min(min_norm(u.dtype)))


def _expmap(x: torch.Tensor, u: torch.Tensor, c: Curvature, storage_dtype: torch.dtype):
    sc = sqrt_c(c)
    un = _tangent_norm(x, u, c)
    theta = (sc * un).clamp_max(max_rapidity(storage_dtype))
    # sinh(theta) u / (sqrt(c)|u|) written with sinhc so that u = 0 gives exactly x.
    out = torch.cosh(theta) * x + sinhc(theta) * (theta / (sc * un)) * u
    return _project(out, c, storage_dtype)


def _half_chord2(x: torch.Tensor, y: torch.Tensor, c: Curvature) -> torch.Tensor:
    """sinh(sqrt(c) d(x, y) / 2)^2 = c <x - y, x - y>_L / 4, without cancellation.

    The ambient forms (arcosh(-c<x,y>_L), or the Minkowski norm of x - y) cancel for nearby
    points far from the origin: -(x_0 - y_0)^2 + |x_s - y_s|^2 is a difference of terms
    cosh(r)^2 times larger than the result. Polar form instead (hyperbolic law of cosines, r the
    rapidities, theta the angle between x_s and y_s):

        sinh(d/2)^2 = sinh(dr/2)^2 + sinh(r_x) sinh(r_y) sin(theta/2)^2

    with sinh(dr) = (|x_s| - |y_s|)(|x_s| + |y_s|) / (|x_s| y_0 + |y_s| x_0), sinh(dr/2)^2 =
    sinh(dr)^2 / (2 (1 + cosh(dr))), and 4 |x_s| |y_s| sin(theta/2)^2 = |w|^2 / (|x_s| |y_s|)
    with w = |y_s| x_s - |x_s| y_s. Every rounding error is then of the size of the rounding of
    the stored coordinates themselves (eps |x_s| in |x_s| - |y_s| and in w), and the only
    full-size work is three norms and w: five passes, where the arcosh form needs three.
    """
    xs, ys = x[..., 1:], y[..., 1:]
    nx, ny = euclidean_norm(xs), euclidean_norm(ys)
    sh = (nx - ny) * (nx + ny) / (nx * y[..., :1] + ny * x[..., :1])
    # w / s with s = sqrt(|x_s|) sqrt(|y_s|): no overflow of |w|^2 (norms are floored at the
    # smallest normal, so nothing divides by 0). Written as the difference of two products, not
    # an addcmul (which may fuse into an FMA), so that swapping x and y negates it exactly:
    # d(x, y) == d(y, x) bit for bit, and d(x, x) = 0.
    s = torch.sqrt(nx) * torch.sqrt(ny)
    w = xs * (ny / s)
    w -= ys * (nx / s)
    angular = torch.linalg.vector_norm(w, dim=-1, keepdim=True).pow(2)
    sh2 = sh * sh
    radial = sh2 / (2 * (1 + torch.sqrt(1 + sh2)))
    return radial + (c / 4) * angular


def _dist_from_half_chord2(h2: torch.Tensor, c: Curvature) -> torch.Tensor:
    # sqrt with the subgradient 0 at 0 (instead of Inf * 0 = NaN) and the value exactly 0 there;
    # h2 < 0 only by rounding (coincident points).
    pos = h2 > 0
    root = torch.where(pos, torch.sqrt(torch.where(pos, h2, torch.ones_like(h2))), 0.0)
    return 2 / sqrt_c(c) * torch.asinh(root)


class _MinkowskiDot(torch.autograd.Function):
    """<x, y>_L (keepdim) of same-shape x, y without full-size temporaries in the forward
    (einsum reduces in place) and with one full-size output per gradient in the backward: on
    the CPU the allocations, not the arithmetic, dominate (2-3x over autograd of x * y)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor,
                y: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, y)
        return (torch.einsum("...i,...i->...", x, y) - 2 * x[..., 0] * y[..., 0]).unsqueeze(-1)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx,
                 grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        x, y = ctx.saved_tensors
        gx = gy = None
        if ctx.needs_input_grad[0]:
            gx = y * grad
            gx[..., 0].neg_()
        if ctx.needs_input_grad[1]:
            gy = x * grad
            gy[..., 0].neg_()
        return gx, gy


# The arcosh form's cancellation costs log2(CANCELLATION_LIMIT) bits at most where it is used.
CANCELLATION_LIMIT = 8.0


def _dist(x: torch.Tensor, y: torch.Tensor, c: Curvature) -> torch.Tensor:
    """d(x, y) from the half-chord: on CPU tensors, the one-pass ambient form where it is
    accurate and the polar form (``_half_chord2``) only on the rows where it is not.

    Ambient form: 2 h2 = -c<x, y>_L - 1, whose rounding error is ~eps c x_0 y_0; it is used
    where c x_0 y_0 <= CANCELLATION_LIMIT * 2 h2 (for far points: where the angle between them
    exceeds ~0.5 rad), so it loses at most 3 bits there. Selecting rows needs their indices (a
    host synchronisation on a GPU), so other devices take the polar form everywhere.
    """
    if x.device.type != "cpu":
        return _dist_from_half_chord2(_half_chord2(x, y, c), c)
    x, y = torch.broadcast_tensors(x, y)
    if isinstance(c, torch.Tensor):  # a curvature with extra batch axes broadcasts the points
        batch = torch.broadcast_shapes(x.shape[:-1], c.shape[:-1] if c.dim() else ())
        x, y = x.expand(*batch, x.shape[-1]), y.expand(*batch, y.shape[-1])
    h2 = (-c * _MinkowskiDot.apply(x, y) - 1) / 2
    bad = (c * (x[..., :1] * y[..., :1]).detach() > CANCELLATION_LIMIT * 2 * h2).reshape(-1)
    if bool(bad.any()):
        rows = bad.nonzero().squeeze(-1)
        flat = x.shape[-1]
        c_rows = (c.expand(h2.shape).reshape(-1, 1)[rows] if isinstance(c, torch.Tensor)
                  else c)
        polar = _half_chord2(x.reshape(-1, flat)[rows], y.reshape(-1, flat)[rows], c_rows)
        h2 = h2.reshape(-1, 1).index_put((rows,), polar).reshape(h2.shape)
    return _dist_from_half_chord2(h2, c)


def origin(d: int, *, c: Curvature, dtype: torch.dtype | None = None,
           device: torch.device | str | None = None) -> torch.Tensor:
    """The origin (1/sqrt(c), 0, ..., 0) of the d-dimensional hyperboloid (d + 1 coordinates)."""
    check_curvature(c)
    o = torch.zeros(d + 1, dtype=dtype, device=device)
    # sqrt(1/c), exactly as ``project`` computes the time coordinate of a zero spatial part.
    o[0] = math.sqrt(1 / c) if not isinstance(c, torch.Tensor) else float((1 / c).sqrt())
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
    return _project(xc, as_curvature(c, xc), x.dtype).to(x.dtype)


def from_spatial(space: torch.Tensor, *, c: Curvature) -> torch.Tensor:
    """The hyperboloid point with spatial coordinates ``space`` (..., d): (sqrt(1/c + |s|^2), s).

    The natural chart for layers that produce spatial coordinates (``LorentzLinear``) or
    store them (``HyperbolicEmbedding``); like ``project``, it caps the rapidity so the result
    is finite in the dtype of ``space``.
    """
    check_floating("space", space)
    if space.shape[-1] < 1:
        raise ValueError("space needs at least 1 coordinate, got 0")
    check_curvature(c)
    (sc,) = upcast(space)
    return _from_spatial(sc, as_curvature(c, sc), space.dtype).to(space.dtype)


def proju(x: torch.Tensor, u: torch.Tensor, *, c: Curvature) -> torch.Tensor:
    """Orthogonal projection of an ambient vector u onto T_x: u + c <x, u>_L x."""
    _validate(c, {"x": x}, {"u": u})
    xc, uc = upcast(x, u)
    cc = as_curvature(c, xc)
    return (uc + cc * _inner(xc, uc) * xc).to(u.dtype)


def expmap(x: torch.Tensor, u: torch.Tensor, *, c: Curvature) -> torch.Tensor:
    """Exponential map: cosh(sqrt(c)|u|) x + sinh(sqrt(c)|u|) u / (sqrt(c)|u|).

    |u|_L is evaluated in the tangent frame of x from the spatial part of u (``_tangent_inner``),
    which does not cancel at points far from the origin; u must be tangent at x.
    """
    _validate(c, {"x": x}, {"u": u}, base=x)
    return compiled_reference(_expmap_stored, x, u, c=c)


def _expmap_stored(x: torch.Tensor, u: torch.Tensor, c: Curvature) -> torch.Tensor:
    xc, uc = upcast(x, u)
    return _expmap(xc, uc, as_curvature(c, xc), x.dtype).to(x.dtype)


def expmap0(u: torch.Tensor, *, c: Curvature) -> torch.Tensor:
    """Exponential map at the origin of a tangent vector u = (0, v): (cosh(t)/sqrt(c), sinh(t) v/|v|
    / sqrt(c)) with t = sqrt(c)|v|. The time coordinate of u must be 0 (checked in debug mode).
    """
    _validate(c, {}, {"u": u})
    if debug_enabled() and bool((u[..., 0] != 0).any()):
        raise ValueError("u must be tangent at the origin: its time coordinate u[..., 0] must be 0")
    return compiled_reference(_expmap0, u, c=c)


def _expmap0(u: torch.Tensor, c: Curvature) -> torch.Tensor:
    (uc,) = upcast(u)
    cc = as_curvature(c, uc)
    sc = sqrt_c(cc)
    v = uc[..., 1:]
    vn = euclidean_norm(v)
    theta = (sc * vn).clamp_max(max_rapidity(u.dtype))
    return _from_spatial(v, cc, u.dtype, sinhc(theta) * (theta / (sc * vn))).to(u.dtype)


def logmap0(y: torch.Tensor, *, c: Curvature) -> torch.Tensor:
    """Logarithmic map at the origin: (0, asinh(sqrt(c)|y_space|)/sqrt(c) y_space/|y_space|)."""
    _validate(c, {"y": y})
    return compiled_reference(_logmap0, y, c=c)


def _logmap0(y: torch.Tensor, c: Curvature) -> torch.Tensor:
    (yc,) = upcast(y)
    cc = as_curvature(c, yc)
    sc = sqrt_c(cc)
    ys = yc[..., 1:]
    yn = euclidean_norm(ys)
    space = asinhc(sc * yn) * ys
    return torch.cat([torch.zeros_like(yc[..., :1]), space], -1).to(y.dtype)


def logmap(x: torch.Tensor, y: torch.Tensor, *, c: Curvature) -> torch.Tensor:
    """Logarithmic map at x: dist(x, y) w / |w|_L with w = y + c<x, y>_L x.

    Written cancellation-free: w = (y - x) - (c q / 2) x with q = <x - y, x - y>_L taken from
    the polar form (``_half_chord2``: c q / 4 = sinh(theta/2)^2), and |w|_L = sinh(theta)/sqrt(c),
    so log_x(y) = (theta / sinh(theta)) w with theta = sqrt(c) d.
    """
    _validate(c, {"x": x, "y": y})
    xc, yc = upcast(x, y)
    cc = as_curvature(c, xc)
    h2 = _half_chord2(xc, yc, cc)
    theta = sqrt_c(cc) * _dist_from_half_chord2(h2, cc)
    # (theta / sinh(theta)) ((y - x) - (cosh(theta) - 1) x), with the scalars combined first:
    # (cosh(theta) - 1) theta / sinh(theta) = theta tanh(theta / 2). No intermediate exceeds
    # the result's size (w itself is ~cosh(theta) |x| and overflows float32 for far pairs).
    out = inv_sinhc(theta) * (yc - xc) - (theta * torch.tanh(theta / 2)) * xc
    return out.to(x.dtype)


def dist(x: torch.Tensor, y: torch.Tensor, *, c: Curvature, keepdim: bool = False) -> torch.Tensor:
    """Geodesic distance arcosh(-c<x, y>_L)/sqrt(c).

    Computed as 2/sqrt(c) asinh(sinh(sqrt(c) d / 2)) with the half-chord from the polar form
    (``_half_chord2``), which keeps nearby points far from the origin accurate.
    """
    _validate(c, {"x": x, "y": y})
    out = compiled_reference(_dist_stored, x, y, c=c)
    return out if keepdim else out.squeeze(-1)


def _dist_stored(x: torch.Tensor, y: torch.Tensor, c: Curvature) -> torch.Tensor:
    xc, yc = upcast(x, y)
    return _dist(xc, yc, as_curvature(c, xc)).to(x.dtype)


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
    use ``dist`` on the pairs where that matters. CUDA float32/bfloat16/float16 inputs of one
    dtype (scalar c) take the fused kernel ``kernels.lorentz_cdist`` (tf32x3 split products for
    float32, no inner-product matrix in memory; docs/KERNELS.md), with the same caveat.
    """
    if x.dim() < 2 or y.dim() < 2:
        raise ValueError(f"cdist needs (..., n, d+1) and (..., m, d+1), got x{tuple(x.shape)}, "
                         f"y{tuple(y.shape)}")
    # Points along their own axes; only the batch axes (...) must broadcast.
    _validate(c, {"x": x})
    _validate(c, {"y": y})
    check_same_dim(("x", "y"), (x[..., :1, :], y[..., :1, :]))
    if use_kernels(x, y, c=c) and x.dtype == y.dtype:
        from resnetbk.kernels.lorentz_cdist import lorentz_cdist as fused

        return fused(x, y, curvature_value(c))
    # Mixed dtypes promote as elementwise ops do (the GEMM needs one dtype).
    out_dtype = torch.promote_types(x.dtype, y.dtype)
    xc, yc = upcast(x.to(out_dtype), y.to(out_dtype))
    cc = as_curvature(c, xc)
    # The metric sign is folded into one operand so the product is one GEMM.
    y_flip = torch.cat([-yc[..., :1], yc[..., 1:]], dim=-1)
    alpha = -(xc @ y_flip.transpose(-1, -2))
    # A tensor c broadcasts against x[..., :1], i.e. one curvature per row of the result.
    return (arcosh(cc * alpha) / sqrt_c(cc)).to(out_dtype)


def parallel_transport(
    x: torch.Tensor, y: torch.Tensor, v: torch.Tensor, *, c: Curvature
) -> torch.Tensor:
    """Parallel transport of v from T_x to T_y: v + c<y, v>_L / (1 - c<x, y>_L) (x + y).

    1 - c<x,y>_L = 2 + 2 sinh(sqrt(c) d/2)^2 from the polar half-chord (no cancellation). The
    ambient <y, v>_L cancels when y is near a far point x (both terms ~ cosh(r)^2 |v|); then
    it is evaluated as <w, v>_L in the tangent frame of x instead (``_tangent_inner``), where
    w = (y - x) - (c q/2) x is tangent at x and <x, v>_L = 0. That form cancels in turn when w is
    huge (y far from x), so each element takes the form with the smaller rounding-error bound:
    |y_0 v_0| + |y_s||v_s| for the ambient form, |w_s||v_perp| + |w_rad v_rad|/(c x_0^2) for the
    frame form. v must be tangent at x.
    """
    _validate(c, {"x": x, "y": y}, {"v": v}, base=x)
    return compiled_reference(_parallel_transport, x, y, v, c=c)


def _parallel_transport(x: torch.Tensor, y: torch.Tensor, v: torch.Tensor,
                        c: Curvature) -> torch.Tensor:
    xc, yc, vc = upcast(x, y, v)
    cc = as_curvature(c, xc)
    h2 = _half_chord2(xc, yc, cc)
    den = 2 + 2 * h2
    # w / den, w = (y - x) - 2 h2 x: scaled first so that nothing overflows for far pairs.
    w = (yc - xc) / den - (h2 / (1 + h2)) * xc
    w_perp, w_rad = _frame_parts(xc, w)
    v_perp, v_rad = _frame_parts(xc, vc)
    radial = w_rad * v_rad / (cc * xc[..., :1].pow(2))
    frame = (w_perp * v_perp).sum(-1, keepdim=True) + radial
    frame_err = w[..., 1:].norm(dim=-1, keepdim=True) * v_perp.norm(dim=-1, keepdim=True)
    frame_err = frame_err + radial.abs()
    ambient = _inner(yc, vc) / den
    ambient_err = ((yc[..., :1] * vc[..., :1]).abs() + (
        yc[..., 1:].norm(dim=-1, keepdim=True) * vc[..., 1:].norm(dim=-1, keepdim=True))) / den
    coef = cc * torch.where(frame_err < ambient_err, frame, ambient)
    return (vc + coef * (xc + yc)).to(v.dtype)


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

    -c<a, a>_L = a_0^2 - |a_s|^2 cancels for clustered points far from the origin (identical
    points at distance 30 give garbage in float64). It is evaluated as W^2 + 4 V S instead, the
    identity behind the Poincaré gyromidpoint: with k_i = 1 + sqrt(c) x_i0, p_i = x_is / k_i (the
    Poincaré image), v_i = w_i k_i / 2, W = sum w_i, V = sum v_i and S = c sum v_i |p_i - pbar|^2
    (two-pass about the first point, pbar the v-weighted mean), a sum of non-negative terms.
    """
    _validate(c, {"x": x})
    d = points_axis(x, dim)
    (xc,) = upcast(x)
    cc = as_curvature(c, xc)
    if weights is None:
        w = torch.ones_like(xc[..., :1])
    else:
        if not isinstance(weights, torch.Tensor) or not weights.is_floating_point():
            raise ValueError(f"weights must be a floating tensor, got {weights!r:.60}")
        if weights.device.type == "cpu" and bool((weights < 0).any()):
            raise ValueError("centroid weights must be non-negative")
        w = weights.to(xc.dtype).unsqueeze(-1)
    k = 1 + sqrt_c(cc) * xc[..., :1]
    p = xc[..., 1:] / k
    v = w * k / 2
    w_sum = w.expand(torch.broadcast_shapes(w.shape, k.shape)).sum(d, keepdim=True)
    v_sum = v.sum(d, keepdim=True)
    shifted = p - p.narrow(d, 0, 1)
    mean_shift = (v * shifted).sum(d, keepdim=True) / v_sum
    spread = (v * (shifted - mean_shift).pow(2).sum(-1, keepdim=True)).sum(d, keepdim=True)
    scale = torch.sqrt(w_sum.pow(2) + 4 * cc * v_sum * spread)
    space = (w * xc[..., 1:]).sum(d, keepdim=True) / scale
    out = _project(torch.cat([torch.zeros_like(space[..., :1]), space], -1), cc, x.dtype)
    return (out if keepdim else out.squeeze(d)).to(x.dtype)
