"""Fused Lorentz linear layer (``nn.LorentzLinear``): GEMM on Tensor Cores + one row epilogue.

Reference: ``resnetbk.nn.LorentzLinear.forward``. For x (..., d_in + 1) on the hyperboloid
(time first), weight W (d_out, d_in + 1), bias b (d_out,) and curvature -c:

    v = W x + b                                       (all input coordinates -> d_out spatial)
    s = F(|v|) v,  F = f1 min(1, L / (f1 |v|))        (optional distance bound f1, rapidity cap L)
    y = (sqrt(1/c + |s|^2), s)                         (``lorentz._from_spatial``)

f1 = 1 without ``max_distance``; with it (D' = sqrt(c) D, u = sqrt(c)|v|, theta = asinh(u),
w = theta / D', beta = D' tanh(w)), f1 = sinh(beta)/u = sinhc(beta) tanhc(w) asinhc(u)
(``nn.lorentz._bound_factor``). L = min(sinh(MAX_RAPIDITY[dtype]) / sqrt(c), finfo.max / 4), as
in the reference (and in ``_from_spatial``'s own cap, which the reference then never reaches).
|v| is the overflow-safe norm max|v_i| |v / max|v_i|| floored at the smallest normal number
(``_overflow_safe_norm``). For half types s is rounded to the dtype before |s| is taken for the
time coordinate, so y_0 belongs to the stored s (``_from_spatial(..., storage_dtype)``); y_0 is
hypot(1/sqrt(c), |s|), which equals the reference's sqrt(1/c + |s|^2) wherever that is finite.

Forward: cuBLAS v = x W^T in the input dtype (Tensor Cores for half types; float32 output
where torch has ``torch.mm(..., out_dtype=)``: see ``poincare_linear.gemm``), then ONE Triton
epilogue per block of rows: add the bias (in float32), the row norm, F, the rounding, |s| and
y_0, writing the d_out + 1 output coordinates once, and keeping |v| per row for the backward.
The bias is added in the epilogue, not by cuBLAS, so it stays in float32 (the reference adds
it in float32 as well).

Backward, for g = (g_0, g_s) = dL/dy: the time coordinate contributes g_0 s / y_0, so with
G = g_s + (g_0 / y_0) s and C = F'(|v|)/|v|:

    grad_v = F G + C <G, v> v = F g_s + (F g_0 / y_0 + (C / F^2) <G, s>) s      (s = F v)
    grad_x = grad_v W,  grad_W = grad_v^T x,  grad_b = sum over rows of grad_v

Under the cap (F = L/|v|): C / F^2 = -1 / (|v| L). Without bound and cap: C = 0. With the bound,
C / F^2 = c K / f1 with K = (d ln f1 / du) / u, written without cancellation as

    K = asinhc(u) / r (S(beta) tanhc(w) sech^2(w) + Q(w) / (tanhc(w) D'^2)) + A(u),
    r = sqrt(1 + u^2),  S(b) = (coth b - 1/b) / b,  Q = ``tanh_parts``' q,
    A(u) = (1 / (r asinhc u) - 1) / u^2,

each a Taylor series below a switch point (A: 0.25, S: 0.5, sinhc: 1; asinhc(u) is
2 artanh(u / (1 + r)) / u below 0.5, the artanh series) and a direct formula above. One Triton
row kernel reads g and y (s is y's spatial part, exactly the stored value: for half types its
rounding enters the <G, s> s term, which stands for F^2 <G, v> v), recomputes F and C from the
saved |v| and writes grad_v in the input dtype; cuBLAS does the two GEMMs and torch the bias sum
(in float32). Saved for the backward: x, W, y and |v| per row.

Per-row transcendentals only (per element: one multiply forward, two FMAs backward), so no
FAST switch; float32 uses the portable ``kernels.fastmath`` exp / log1p, float64 (interpreter
gradchecks only) ``tl.exp`` / ``tl.log`` (``poincare_linear``'s helpers).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from resnetbk.geometry.numerics import compute_dtype, max_rapidity, min_norm
from resnetbk.kernels.poincare_linear import (
    artanh_parts,
    check_curvature_value,
    check_out,
    check_runnable,
    exp_any,
    gemm,
    log1p_any,
    row_plan,
    tanh_parts,
)
from resnetbk.kernels.rowwise import (
    as_rows,
    compute_type,
    device_scalars,
    load_rows,
    row_scalar,
)

__all__ = [
    "lorentz_linear",
    "lorentz_linear_backward",
    "lorentz_linear_backward_rows",
    "lorentz_linear_epilogue",
    "lorentz_linear_forward",
]

_DTYPES = (torch.float64, torch.float32, torch.bfloat16, torch.float16)
_LN2 = tl.constexpr(0.6931471805599453)


# --------------------------------------------------------------------------- per-row math


@triton.jit
def _asinhc(u, r):
    """asinh(u)/u for u >= 0, r = sqrt(1 + u^2). Below 0.5 as 2 artanh(y)/u with
    y = u/(1 + r) <= 0.24 (the artanh series: relatively exact); above as
    log1p(u + u^2/(1 + r)) / u, or (log1p(u) + ln 2)/u where u^2-sized terms would overflow."""
    small = u < 0.5
    ac, _ = artanh_parts(tl.where(small, u / (1.0 + r), 0.0))
    us = tl.where(small, 1.0, u)
    mid = log1p_any(us + us * (us / (1.0 + r)))
    big = log1p_any(us) + _LN2
    return tl.where(small, 2.0 * ac / (1.0 + r), tl.where(us > 1e30, big, mid) / us)


@triton.jit
def _asinhc_slope(u, r, ac):
    """A(u) = (1 / (r asinhc(u)) - 1) / u^2 = (d ln asinhc / du) / u."""
    u2 = u * u
    s = -1.0 / 3 + u2 * (11.0 / 45 + u2 * (-191.0 / 945 + u2 * (2497.0 / 14175 + u2 * (
        -14797.0 / 93555 + u2 * (92427157.0 / 638512875 + u2 * (-36740617.0 / 273648375 + u2 * (
            61430943169.0 / 488462349375 + u2 * (-23133945892303.0 / 194896477400625))))))))
    small = u < 0.25
    us = tl.where(small, 1.0, u)
    return tl.where(small, s, (1.0 / (r * ac) - 1.0) / (us * us))


@triton.jit
def _sinhc(b):
    """sinh(b)/b for b >= 0 (inf where sinh overflows)."""
    b2 = b * b
    # sum_k b^2k / (2k + 1)!, k <= 7: truncation 1/17! < 3e-15 at b = 1
    s = 1.0 + b2 * (1.0 / 6 + b2 * (1.0 / 120 + b2 * (1.0 / 5040 + b2 * (1.0 / 362880 + b2 * (
        1.0 / 39916800 + b2 * (1.0 / 6227020800 + b2 * (1.0 / 1307674368000)))))))
    small = b < 1.0
    bs = tl.where(small, 1.0, b)
    e = exp_any(bs)
    return tl.where(small, s, (e - 1.0 / e) / (2.0 * bs))


@triton.jit
def _langevin_slope(b):
    """S(b) = (coth b - 1/b) / b for b >= 0 (= d ln sinhc(b)/db / b)."""
    b2 = b * b
    s = 1.0 / 3 + b2 * (-1.0 / 45 + b2 * (2.0 / 945 + b2 * (-1.0 / 4725 + b2 * (
        2.0 / 93555 + b2 * (-1382.0 / 638512875 + b2 * (4.0 / 18243225))))))
    small = b < 0.5
    bs = tl.where(small, 1.0, b)
    e = exp_any(-2.0 * bs)
    return tl.where(small, s, ((1.0 + e) / (1.0 - e) - 1.0 / bs) / bs)


@triton.jit
def _scale(n0, sc, cap, big_d, HAS_BOUND: tl.constexpr):
    """(F, C/F^2) per row from |v| = n0 > 0: s = F v, and grad_v's coefficient of <G, s> s."""
    if HAS_BOUND:
        u = sc * n0
        ge1 = u >= 1.0
        ui = 1.0 / tl.where(ge1, u, 1.0)
        r = tl.where(ge1, u * tl.sqrt(1.0 + ui * ui), tl.sqrt(1.0 + u * u))
        ac = _asinhc(u, r)
        w = u * ac / big_d
        tcw, qw, sech2w = tanh_parts(w)
        beta = u * ac * tcw
        f1 = _sinhc(beta) * tcw * ac
        k = (ac / r * (_langevin_slope(beta) * tcw * sech2w + qw / (tcw * big_d * big_d))
             + _asinhc_slope(u, r, ac))
        coef = sc * sc * k / f1
    else:
        f1 = tl.full(n0.shape, 1.0, n0.dtype)
        coef = tl.zeros_like(n0)
    capped = f1 * n0 > cap
    nc = tl.where(capped, n0, 1.0)
    return tl.where(capped, cap / nc, f1), tl.where(capped, -1.0 / (nc * cap), coef)


@triton.jit
def _hypot(a, b):
    """sqrt(a^2 + b^2) for a > 0, b >= 0 without overflow."""
    hi = tl.maximum(a, b)
    lo = tl.minimum(a, b) / hi
    return hi * tl.sqrt(1.0 + lo * lo)


@triton.jit
def _per_row(p_ptr, BLOCK_M: tl.constexpr, COMPUTE: tl.constexpr):
    """(sqrt(c), 1/sqrt(c), cap, D', tiny) as (BLOCK_M,) tensors, read from
    ``rowwise.device_scalars`` (float launch arguments would be float32)."""
    return (row_scalar(p_ptr, 0, BLOCK_M, COMPUTE), row_scalar(p_ptr, 1, BLOCK_M, COMPUTE),
            row_scalar(p_ptr, 2, BLOCK_M, COMPUTE), row_scalar(p_ptr, 3, BLOCK_M, COMPUTE),
            row_scalar(p_ptr, 4, BLOCK_M, COMPUTE))


@triton.jit
def _load_v(v_ptr, b_ptr, rows, start, cols, mask, N, HAS_BIAS: tl.constexpr,
            COMPUTE: tl.constexpr):
    """Columns [start, start + BLOCK_N) of v + b."""
    v = load_rows(v_ptr, rows[:, None] * N + start + cols[None, :], mask, COMPUTE)
    if HAS_BIAS:
        b = tl.load(b_ptr + start + cols, mask=start + cols < N, other=0.0).to(COMPUTE)
        v += b[None, :]
    return v


# --------------------------------------------------------------------------- kernels


@triton.jit(do_not_specialize=["M"])
def _forward_kernel(v_ptr, b_ptr, y_ptr, stats_ptr, M, N, p_ptr,
                    HAS_BIAS: tl.constexpr, HAS_BOUND: tl.constexpr, BLOCK_M: tl.constexpr,
                    BLOCK_N: tl.constexpr, ONE_TILE: tl.constexpr, COMPUTE: tl.constexpr):
    """y (M, N + 1) = (y_0, s) from v (M, N) (+ b); stats (M,) = |v + b|."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    cols = tl.arange(0, BLOCK_N)
    sc, inv_sc, cap, big_d, tiny = _per_row(p_ptr, BLOCK_M, COMPUTE)
    out_ty = y_ptr.dtype.element_ty
    y_space = y_ptr + rows[:, None] * (N + 1) + 1
    if ONE_TILE:
        mask = row_ok[:, None] & (cols[None, :] < N)
        v = _load_v(v_ptr, b_ptr, rows, 0, cols, mask, N, HAS_BIAS, COMPUTE)
        big = tl.maximum(tl.max(tl.abs(v), 1), tiny)
        vs = v * (1.0 / big)[:, None]
        n0 = tl.maximum(big * tl.sqrt(tl.sum(vs * vs, 1)), tiny)
        f, _ = _scale(n0, sc, cap, big_d, HAS_BOUND)
        nf = tl.maximum(n0 * f, tiny)
        s = (v * f[:, None]).to(out_ty)
        ss = s.to(COMPUTE) * (1.0 / nf)[:, None]
        ns = tl.sqrt(tl.sum(ss * ss, 1)) * nf
        tl.store(y_space + cols[None, :], s, mask=mask)
    else:
        # Overflow-safe norm in one sweep: a running maximum rescales the running sum.
        big = tiny
        acc = tl.zeros([BLOCK_M], COMPUTE)
        for start in range(0, N, BLOCK_N):
            mask = row_ok[:, None] & (start + cols[None, :] < N)
            v = _load_v(v_ptr, b_ptr, rows, start, cols, mask, N, HAS_BIAS, COMPUTE)
            new_big = tl.maximum(big, tl.max(tl.abs(v), 1))
            vs = v * (1.0 / new_big)[:, None]
            ratio = big / new_big
            acc = acc * ratio * ratio + tl.sum(vs * vs, 1)
            big = new_big
        n0 = tl.maximum(big * tl.sqrt(acc), tiny)
        f, _ = _scale(n0, sc, cap, big_d, HAS_BOUND)
        nf = tl.maximum(n0 * f, tiny)
        acc = tl.zeros([BLOCK_M], COMPUTE)
        for start in range(0, N, BLOCK_N):
            mask = row_ok[:, None] & (start + cols[None, :] < N)
            v = _load_v(v_ptr, b_ptr, rows, start, cols, mask, N, HAS_BIAS, COMPUTE)
            s = (v * f[:, None]).to(out_ty)
            ss = s.to(COMPUTE) * (1.0 / nf)[:, None]
            acc += tl.sum(ss * ss, 1)
            tl.store(y_space + start + cols[None, :], s, mask=mask)
        ns = tl.sqrt(acc) * nf
    tl.store(y_ptr + rows * (N + 1), _hypot(inv_sc, ns).to(out_ty), mask=row_ok)
    tl.store(stats_ptr + rows, n0, mask=row_ok)


@triton.jit(do_not_specialize=["M"])
def _backward_kernel(g_ptr, stride_gm, stride_gn, y_ptr, stats_ptr, gv_ptr, M, N,
                     p_ptr, HAS_BOUND: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, ONE_TILE: tl.constexpr,
                     COMPUTE: tl.constexpr):
    """grad_v (M, N) = F g_s + (F g_0 / y_0 + (C/F^2) <G, s>) s from g, y (M, N + 1)."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    cols = tl.arange(0, BLOCK_N)
    sc, inv_sc, cap, big_d, tiny = _per_row(p_ptr, BLOCK_M, COMPUTE)
    n0 = tl.load(stats_ptr + rows, mask=row_ok, other=1.0)
    f, coef = _scale(n0, sc, cap, big_d, HAS_BOUND)
    nf = tl.maximum(n0 * f, tiny)
    g0 = tl.load(g_ptr + rows * stride_gm, mask=row_ok, other=0.0).to(COMPUTE)
    g_space = g_ptr + rows[:, None] * stride_gm + stride_gn
    y_space = y_ptr + rows[:, None] * (N + 1) + 1
    gv_ty = gv_ptr.dtype.element_ty
    if ONE_TILE:
        mask = row_ok[:, None] & (cols[None, :] < N)
        gs = load_rows(g_space, cols[None, :] * stride_gn, mask, COMPUTE)
        s = load_rows(y_space, cols[None, :], mask, COMPUTE)
        ss = s * (1.0 / nf)[:, None]
        ns = tl.sqrt(tl.sum(ss * ss, 1)) * nf
        gss = tl.sum(gs * s, 1)
    else:
        acc = tl.zeros([BLOCK_M, BLOCK_N], COMPUTE)
        acc_g = tl.zeros([BLOCK_M, BLOCK_N], COMPUTE)
        for start in range(0, N, BLOCK_N):
            mask = row_ok[:, None] & (start + cols[None, :] < N)
            gs = load_rows(g_space, (start + cols[None, :]) * stride_gn, mask, COMPUTE)
            s = load_rows(y_space, start + cols[None, :], mask, COMPUTE)
            ss = s * (1.0 / nf)[:, None]
            acc += ss * ss
            acc_g += gs * s
        ns = tl.sqrt(tl.sum(acc, 1)) * nf
        gss = tl.sum(acc_g, 1)
    y0 = _hypot(inv_sc, ns)
    # <G, s> = <g_s, s> + (g_0 / y_0) |s|^2, with |s|^2 / y_0 <= |s| (no overflow)
    cs = (f * g0 / y0 + coef * (gss + g0 * (ns / y0) * ns))[:, None]
    fg = f[:, None]
    if ONE_TILE:
        tl.store(gv_ptr + rows[:, None] * N + cols[None, :], (gs * fg + s * cs).to(gv_ty),
                 mask=mask)
    else:
        for start in range(0, N, BLOCK_N):
            mask = row_ok[:, None] & (start + cols[None, :] < N)
            gs = load_rows(g_space, (start + cols[None, :]) * stride_gn, mask, COMPUTE)
            s = load_rows(y_space, start + cols[None, :], mask, COMPUTE)
            tl.store(gv_ptr + rows[:, None] * N + start + cols[None, :],
                     (gs * fg + s * cs).to(gv_ty), mask=mask)


# --------------------------------------------------------------------------- launch plumbing


def _check_bound(max_distance: float | None) -> float | None:
    if max_distance is None:
        return None
    if (isinstance(max_distance, bool) or not isinstance(max_distance, (int, float))
            or not math.isfinite(max_distance) or max_distance <= 0):
        raise ValueError(f"max_distance must be None or a finite float > 0, got {max_distance!r}")
    return float(max_distance)


def _check(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    for name, t in (("x", x), ("weight", weight), ("bias", bias)):
        if t is None and name == "bias":
            continue
        if not isinstance(t, torch.Tensor) or t.dtype not in _DTYPES:
            raise ValueError(f"{name} must be a float64/float32/bfloat16/float16 tensor, got "
                             f"{getattr(t, 'dtype', type(t).__name__)}")
        if t.device != x.device:
            raise ValueError(f"{name} must be on x's device {x.device}, got {t.device}")
    if weight.dim() != 2 or x.dim() < 1 or weight.shape[1] != x.shape[-1] or 0 in weight.shape:
        raise ValueError(f"weight must be a non-empty matrix of shape (out_features, "
                         f"{x.shape[-1]}) for x{tuple(x.shape)} (in_features + 1 coordinates, "
                         f"time first), got weight{tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    check_runnable(x)


def _constants(c: float, max_distance: float | None, x: torch.Tensor) -> torch.Tensor:
    """(sqrt(c), 1/sqrt(c), cap L, D' = sqrt(c) D, tiny) for points stored in x's dtype, as
    a device tensor for ``_per_row``."""
    sc = math.sqrt(c)
    cap = min(math.sinh(max_rapidity(x.dtype)) / sc, torch.finfo(x.dtype).max / 4)
    big_d = 1.0 if max_distance is None else sc * max_distance
    return device_scalars((sc, 1.0 / sc, cap, big_d, min_norm(x.dtype)), x.dtype, x.device)


def lorentz_linear_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                           c: float, max_distance: float | None, *,
                           out: torch.Tensor | None = None, max_block: int | None = None,
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, stats): the layer's output (..., d_out + 1) in x's dtype (written into ``out`` if
    given) and |W x + b| per row (rows,) in the compute dtype, for the backward.

    W is cast to x's dtype for the GEMM; b is added in the compute dtype. ``max_block`` caps
    the tile width (tests use it to exercise the tiled path on small rows)."""
    _check(x, weight, bias)
    shape = (*x.shape[:-1], weight.shape[0] + 1)
    if out is not None:
        check_out("out", out, shape, x)
    xr = as_rows(x)
    v = gemm(xr, weight.to(x.dtype).t(), compute_dtype(x.dtype))
    y, stats = lorentz_linear_epilogue(v, bias, c, max_distance, x.dtype,
                                       out=None if out is None else out.view(-1, shape[-1]),
                                       max_block=max_block)
    return y.view(shape), stats


def lorentz_linear_epilogue(v: torch.Tensor, bias: torch.Tensor | None, c: float,
                            max_distance: float | None, dtype: torch.dtype, *,
                            out: torch.Tensor | None = None, max_block: int | None = None,
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, stats) from the spatial pre-activation v = W x (rows, n), by the fused row epilogue
    (one pass): bias, distance bound, rapidity cap and time coordinate. v is in ``dtype`` or
    its compute dtype (read widened); y (rows, n + 1) in ``dtype`` (written into ``out`` if
    given), stats = |v + b| per row in the compute dtype.
    The GEMM half of :func:`lorentz_linear_forward`, for layers that compute v another way
    (``nn.SparseLorentzLinear``: a 2:4 sparse GEMM)."""
    c, max_distance = check_curvature_value(c), _check_bound(max_distance)
    rows, n = v.shape
    like = v.new_empty(0, dtype=dtype)
    if out is None:
        out = torch.empty((rows, n + 1), dtype=dtype, device=v.device)
    else:
        check_out("out", out, (rows, n + 1), like)
    stats = torch.empty(rows, dtype=compute_dtype(dtype), device=v.device)
    if rows:
        grid, bm, bn, _, one_tile, warps = row_plan(rows, n, 1, max_block)
        _forward_kernel[grid](v, v if bias is None else bias, out, stats, rows, n,
                              _constants(c, max_distance, like), HAS_BIAS=bias is not None,
                              HAS_BOUND=max_distance is not None, BLOCK_M=bm, BLOCK_N=bn,
                              ONE_TILE=one_tile, COMPUTE=compute_type(dtype), num_warps=warps)
    return out, stats


def lorentz_linear_backward_rows(grad_y: torch.Tensor, y: torch.Tensor, stats: torch.Tensor,
                                 c: float, max_distance: float | None, *,
                                 out: torch.Tensor | None = None, max_block: int | None = None,
                                 ) -> torch.Tensor:
    """The row kernel of the backward: grad_v (rows, d_out) in y's dtype (into ``out``)."""
    c, max_distance = check_curvature_value(c), _check_bound(max_distance)
    check_runnable(y)
    yr = as_rows(y)
    rows, n = yr.shape[0], yr.shape[1] - 1
    g = grad_y.reshape(rows, n + 1)
    if out is None:
        out = torch.empty(rows, n, dtype=y.dtype, device=y.device)
    else:
        check_out("out", out, (rows, n), y)
    if rows:
        grid, bm, bn, _, one_tile, warps = row_plan(rows, n, 1, max_block)
        _backward_kernel[grid](g, g.stride(0), g.stride(1), yr, stats, out, rows, n,
                               _constants(c, max_distance, y),
                               HAS_BOUND=max_distance is not None, BLOCK_M=bm, BLOCK_N=bn,
                               ONE_TILE=one_tile, COMPUTE=compute_type(y.dtype), num_warps=warps)
    return out


def lorentz_linear_backward(grad_y: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                            bias: torch.Tensor | None, y: torch.Tensor, stats: torch.Tensor,
                            c: float, max_distance: float | None, *, need_x: bool = True,
                            need_weight: bool = True, need_bias: bool = True,
                            max_block: int | None = None,
                            ) -> tuple[torch.Tensor | None, torch.Tensor | None,
                                       torch.Tensor | None]:
    """(grad_x, grad_weight, grad_bias) (None where not needed or bias is None), from the
    forward's y and stats: the row kernel, then cuBLAS grad_x = grad_v W, grad_W = grad_v^T x
    and grad_b = the column sums of grad_v (in the compute dtype)."""
    gv = lorentz_linear_backward_rows(grad_y, y, stats, c, max_distance, max_block=max_block)
    grad_x = torch.mm(gv, weight.to(x.dtype)).view(x.shape) if need_x else None
    grad_w = (gemm(gv.t(), as_rows(x), weight.dtype).to(weight.dtype) if need_weight
              else None)
    grad_b = (gv.sum(0, dtype=compute_dtype(x.dtype)).to(bias.dtype)
              if need_bias and bias is not None else None)
    return grad_x, grad_w, grad_b


# --------------------------------------------------------------------------- custom ops


@torch.library.custom_op("resnetbk::lorentz_linear", mutates_args=())
def _linear_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, c: float,
               max_distance: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    return lorentz_linear_forward(x, weight, bias, c, max_distance)


@_linear_op.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, c: float,
      max_distance: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    rows = math.prod(x.shape[:-1])
    return (x.new_empty((*x.shape[:-1], weight.shape[0] + 1)),
            x.new_empty((rows,), dtype=compute_dtype(x.dtype)))


@torch.library.custom_op("resnetbk::lorentz_linear_backward", mutates_args=())
def _linear_backward_op(grad_y: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                        bias: torch.Tensor | None, y: torch.Tensor, stats: torch.Tensor,
                        c: float, max_distance: float | None, need_x: bool, need_weight: bool,
                        need_bias: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gx, gw, gb = lorentz_linear_backward(grad_y, x, weight, bias, y, stats, c, max_distance,
                                         need_x=need_x, need_weight=need_weight,
                                         need_bias=need_bias)
    # A custom op returns tensors: an empty one stands for "not needed".
    return (x.new_empty(0) if gx is None else gx, weight.new_empty(0) if gw is None else gw,
            weight.new_empty(0) if gb is None else gb)


@_linear_backward_op.register_fake
def _(grad_y: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
      y: torch.Tensor, stats: torch.Tensor, c: float, max_distance: float | None, need_x: bool,
      need_weight: bool, need_bias: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (torch.empty_like(x) if need_x else x.new_empty(0),
            torch.empty_like(weight) if need_weight else weight.new_empty(0),
            torch.empty_like(bias) if need_bias and bias is not None else weight.new_empty(0))


def _setup_context(ctx: torch.autograd.function.FunctionCtx, inputs: tuple,
                   output: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, weight, bias, c, max_distance = inputs
    y, stats = output
    ctx.save_for_backward(x, weight, bias, y, stats)
    ctx.c, ctx.max_distance = c, max_distance
    ctx.mark_non_differentiable(stats)


def _backward(ctx: torch.autograd.function.FunctionCtx, grad_y: torch.Tensor,
              _grad_stats: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    x, weight, bias, y, stats = ctx.saved_tensors
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    need_b = need_b and bias is not None
    gx, gw, gb = _linear_backward_op(grad_y, x, weight, bias, y, stats, ctx.c, ctx.max_distance,
                                     need_x, need_w, need_b)
    return (gx if need_x else None), (gw if need_w else None), (gb if need_b else None), None, None


_linear_op.register_autograd(_backward, setup_context=_setup_context)


def lorentz_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, c: float,
                   max_distance: float | None) -> torch.Tensor:
    """The fused path of ``nn.LorentzLinear.forward``: points x (..., d_in + 1) -> points
    (..., d_out + 1), time first, for weight (d_out, d_in + 1), bias (d_out,) or None, c and
    max_distance Python floats (custom op ``resnetbk::lorentz_linear``, analytic backward,
    torch.compile-able). The result has x's dtype; the weight is cast to it for the GEMM."""
    _check(x, weight, bias)
    return _linear_op(x, weight, bias, check_curvature_value(c), _check_bound(max_distance))[0]
