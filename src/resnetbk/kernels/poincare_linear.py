"""Fused Poincaré linear layer: the Möbius matrix-vector product M ⊗ x, GEMM on Tensor Cores.

Reference: ``resnetbk.geometry.poincare.mobius_matvec(m, x, c=c)``,

    M ⊗ x = expmap0(M logmap0(x)) = tanh(|Mx|/|x| artanh(sqrt(c)|x|)) Mx / (sqrt(c)|Mx|),

with x read inside the ball (sqrt(c)|x| capped at the read radius R = 1 - eps/2) and the result
guarded at sqrt(c)|y| <= G = 1 - eps (eps = ``numerics.BALL_EPS`` of x's dtype). With v = Mx
everything but the GEMM is a handful of per-row scalars:

    a = artanh(z) / (sqrt(c)|x|),  z = min(sqrt(c)|x|, R)     (logmap0(x) = a x)
    t = sqrt(c) a |v|                                          (rapidity of M logmap0(x))
    h = min(tanh t, G) / t                                     (expmap0 and the output guard)
    y = a h v

Forward: one GEMM v = x M^T by cuBLAS in the input dtype (bfloat16 / float16 on Tensor Cores
with float32 accumulation). v comes out in bfloat16 for bfloat16 inputs (the rounding torch's
bfloat16 reference makes too) and in float32 for float16 inputs (overflow: where torch has
``torch.mm(..., out_dtype=float32)``, 2.8+; else in float16). float32 inputs use torch's
float32 matmul setting, so TF32 only if the user enabled it. Then ONE Triton epilogue per
block of rows: read x once for |x|, read v once for |v| (kept in registers when a row fits one
tile, else re-read per tile from L2), apply a h, write y once, and keep (|x|, |v|) per row for
the backward. At batch 8192, 4096 -> 4096 in bfloat16 the epilogue moves 192 MiB (v, x, y in
bfloat16), about 50 us at an H200's copy bandwidth, next to about 350 us of GEMM.

Backward, for g = dL/dy, with q(t) = h'(t)/t and D = (da/d|x|)/|x| (y = a h v, so v is not
kept: y stands in for it):

    grad_v = a h g + (c a q / h^2) <g, y> y
    grad_x = grad_v M + (<g, y> sech^2(t) D / (a h)) x        (sech^2 -> 0 where the guard holds)
    grad_M = grad_v^T x

One Triton row kernel writes grad_v (in the input dtype: a GEMM operand) and the rank-one term
b x; cuBLAS computes grad_x = addmm(b x, grad_v, M) and grad_M = grad_v^T x. Saved for the
backward: M, x, y (which the next layer usually keeps anyway) and 2 scalars per row.

Where the guard holds (tanh t > G): h = G/t, q = -G/t^3, so c a q / h^2 = -c a / (G t).
Beyond the read radius: a = artanh(R)/(sqrt(c)|x|), D = -a/|x|^2; inside, D = c p(z) with
p(z) = (1/(1 - z^2) - artanh(z)/z) / z^2.

Numerics. Only per-row scalars go through transcendental functions (per element the forward
does one multiply, the backward two FMAs), so there is no FAST switch: one code path runs on
the GPU and under the interpreter. tanh(t)/t, q(t), artanh(z)/z and p(z) come from Taylor
series below 0.25 (truncation below 1e-10 relative) and from direct formulas above, which
cancel at most 25x there and only in terms that enter the gradient multiplied by t^2 or z^2.
float32 uses the portable ``kernels.fastmath`` exp / log1p (a few ulp; Triton's ``tl.exp`` is
ex2.approx(x log2 e), whose error grows with |x|); float64 (interpreter only: the gradchecks)
uses ``tl.exp`` / ``tl.log``, whose arguments there stay away from the cancelling ranges.

Launch: CUDA tensors run compiled; CPU tensors only under Triton's interpreter
(``TRITON_INTERPRET=1`` set before this module is imported, the CPU tests), else a ValueError.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from resnetbk.geometry.numerics import compute_dtype
from resnetbk.kernels.fastmath import exp as _exp32
from resnetbk.kernels.fastmath import log1p as _log1p32
from resnetbk.kernels.rowwise import (
    as_rows,
    ball_radii,
    compute_type,
    device_scalars,
    load_rows,
    row_scalar,
)

__all__ = [
    "gemm",
    "mobius_matvec",
    "mobius_matvec_backward",
    "mobius_matvec_backward_rows",
    "mobius_matvec_forward",
]

_INTERPRETED: bool = bool(triton.knobs.runtime.interpret)
# torch >= 2.8 (CUDA): a float16/bfloat16 GEMM can write float32 directly.
_MM_OUT_DTYPE: bool = "dtype" in torch.ops.aten.mm.overloads()
_HALF = (torch.float16, torch.bfloat16)
_DTYPES = (torch.float64, torch.float32, torch.bfloat16, torch.float16)

# Below this argument the per-row functions use their Taylor series.
_SERIES_BELOW = tl.constexpr(0.25)
# Elements of one operand a program holds per tile; widest row kept whole in registers.
_TILE = 4096
_MAX_BLOCK = 8192


# --------------------------------------------------------------------------- per-row math


@triton.jit
def exp_any(x):
    if x.dtype == tl.float64:
        return tl.exp(x)
    else:
        return _exp32(x, False)


@triton.jit
def log1p_any(x):
    """ln(1 + x); the float64 branch is called only with x >= 0.5 (no cancellation)."""
    if x.dtype == tl.float64:
        return tl.log(1.0 + x)
    else:
        return _log1p32(x, False)


@triton.jit
def tanh_parts(t):
    """(tanh(t)/t, q(t) = (sech^2 t - tanh(t)/t)/t^2, sech^2 t) for t >= 0 (inf included).

    Series: tanh(t)/t = sum_j c_j t^2j and q = sum_j 2j c_j t^(2j - 2) (q = h'(t)/t for
    h = tanh(t)/t); sech^2 = 4e/(1 + e)^2, e = exp(-2t), never cancels."""
    t2 = t * t
    tc_s = 1.0 + t2 * (-1.0 / 3 + t2 * (2.0 / 15 + t2 * (-17.0 / 315 + t2 * (
        62.0 / 2835 + t2 * (-1382.0 / 155925 + t2 * (21844.0 / 6081075))))))
    q_s = -2.0 / 3 + t2 * (8.0 / 15 + t2 * (-34.0 / 105 + t2 * (496.0 / 2835 + t2 * (
        -13820.0 / 155925 + t2 * (262128.0 / 6081075 + t2 * (-13013966.0 / 638512875))))))
    e = exp_any(-2.0 * t)
    sech2 = 4.0 * e / ((1.0 + e) * (1.0 + e))
    small = t < _SERIES_BELOW
    ts = tl.where(small, 1.0, t)  # keeps the unused branch finite
    tc_d = (1.0 - e) / ((1.0 + e) * ts)
    q_d = (sech2 - tc_d) / (ts * ts)
    return tl.where(small, tc_s, tc_d), tl.where(small, q_s, q_d), sech2


@triton.jit
def artanh_parts(z):
    """(artanh(z)/z, p(z) = (1/(1 - z^2) - artanh(z)/z)/z^2) for 0 <= z < 1.

    Series: artanh(z)/z = sum_k z^2k/(2k + 1), p = sum_k>=1 2k/(2k + 1) z^(2k - 2)."""
    z2 = z * z
    ac_s = tl.zeros_like(z2) + 1.0 / 17
    for k in tl.static_range(7, -1, -1):
        ac_s = ac_s * z2 + 1.0 / (2 * k + 1)
    p_s = tl.zeros_like(z2) + 20.0 / 21
    for k in tl.static_range(9, 0, -1):
        p_s = p_s * z2 + 2.0 * k / (2 * k + 1)
    small = z < _SERIES_BELOW
    zs = tl.where(small, 0.5, z)
    ac_d = 0.5 * log1p_any(2.0 * zs / (1.0 - zs)) / zs
    p_d = (1.0 / ((1.0 - zs) * (1.0 + zs)) - ac_d) / (zs * zs)
    return tl.where(small, ac_s, ac_d), tl.where(small, p_s, p_d)


@triton.jit
def _matvec_factors(xn, vn, sc, r_read, r_out):
    """Per row, from |x| and |v|: (a, h) of y = a h v, and the backward's coefficients
    cy = c a q / h^2 (of <g, y> y) and cx = sech^2(t) D / (a h) (of <g, y> x)."""
    z = sc * xn
    read_clip = z > r_read
    ac, p = artanh_parts(tl.minimum(z, r_read))
    zs = tl.where(read_clip, z, 1.0)
    a = ac * tl.where(read_clip, r_read / zs, 1.0)
    t = sc * a * vn
    tc, q, sech2 = tanh_parts(t)
    guard = t * tc > r_out
    tg = tl.where(guard, t, 1.0)
    h = tl.where(guard, r_out / tg, tc)
    c = sc * sc
    cy = tl.where(guard, -c * a / (r_out * tg), c * a * q / (tc * tc))
    xs = tl.where(read_clip, xn, 1.0)
    d = tl.where(read_clip, -a / (xs * xs), c * p)
    cx = tl.where(guard, 0.0, sech2 * d / (a * h))
    return a, h, cy, cx


@triton.jit
def row_sumsq(ptr, rows, row_ok, width, BLOCK_M: tl.constexpr, BLOCK_W: tl.constexpr,
              COMPUTE: tl.constexpr):
    """sum of squares of each row of a contiguous (M, width) matrix, BLOCK_W columns a step."""
    cols = tl.arange(0, BLOCK_W)
    acc = tl.zeros([BLOCK_M, BLOCK_W], COMPUTE)
    for start in range(0, width, BLOCK_W):
        mask = row_ok[:, None] & (start + cols[None, :] < width)
        v = load_rows(ptr, rows[:, None] * width + start + cols[None, :], mask, COMPUTE)
        acc += v * v
    return tl.sum(acc, 1)


# --------------------------------------------------------------------------- kernels


@triton.jit
def _per_row(p_ptr, BLOCK_M: tl.constexpr, COMPUTE: tl.constexpr):
    """(sqrt(c), read radius, output radius) as (BLOCK_M,) tensors of the compute type, read
    from ``rowwise.device_scalars`` (float launch arguments would be float32)."""
    return (row_scalar(p_ptr, 0, BLOCK_M, COMPUTE), row_scalar(p_ptr, 1, BLOCK_M, COMPUTE),
            row_scalar(p_ptr, 2, BLOCK_M, COMPUTE))


@triton.jit(do_not_specialize=["M"])
def _forward_kernel(v_ptr, x_ptr, y_ptr, stats_ptr, M, N, K, p_ptr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                    ONE_TILE: tl.constexpr, COMPUTE: tl.constexpr):
    """y = a h v for rows of v (M, N) and x (M, K); stats (M, 2) = (|x|, |v|)."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    cols = tl.arange(0, BLOCK_N)
    sc, r_read, r_out = _per_row(p_ptr, BLOCK_M, COMPUTE)
    xn = tl.sqrt(row_sumsq(x_ptr, rows, row_ok, K, BLOCK_M, BLOCK_K, COMPUTE))
    out_ty = y_ptr.dtype.element_ty
    if ONE_TILE:
        mask = row_ok[:, None] & (cols[None, :] < N)
        offs = rows[:, None] * N + cols[None, :]
        v = load_rows(v_ptr, offs, mask, COMPUTE)
        vn = tl.sqrt(tl.sum(v * v, 1))
        a, h, _, _ = _matvec_factors(xn, vn, sc, r_read, r_out)
        tl.store(y_ptr + offs, (v * (a * h)[:, None]).to(out_ty), mask=mask)
    else:
        vn = tl.sqrt(row_sumsq(v_ptr, rows, row_ok, N, BLOCK_M, BLOCK_N, COMPUTE))
        a, h, _, _ = _matvec_factors(xn, vn, sc, r_read, r_out)
        for start in range(0, N, BLOCK_N):
            mask = row_ok[:, None] & (start + cols[None, :] < N)
            offs = rows[:, None] * N + start + cols[None, :]
            v = load_rows(v_ptr, offs, mask, COMPUTE)
            tl.store(y_ptr + offs, (v * (a * h)[:, None]).to(out_ty), mask=mask)
    tl.store(stats_ptr + 2 * rows, xn, mask=row_ok)
    tl.store(stats_ptr + 2 * rows + 1, vn, mask=row_ok)


@triton.jit(do_not_specialize=["M"])
def _backward_kernel(g_ptr, stride_gm, stride_gn, y_ptr, x_ptr, stats_ptr, gv_ptr, bx_ptr,
                     M, N, K, p_ptr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                     ONE_TILE: tl.constexpr, WRITE_BX: tl.constexpr, COMPUTE: tl.constexpr):
    """grad_v = a h g + cy <g, y> y (M, N) and, with WRITE_BX, b x = cx <g, y> x (M, K)."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    cols = tl.arange(0, BLOCK_N)
    sc, r_read, r_out = _per_row(p_ptr, BLOCK_M, COMPUTE)
    xn = tl.load(stats_ptr + 2 * rows, mask=row_ok, other=0.0)
    vn = tl.load(stats_ptr + 2 * rows + 1, mask=row_ok, other=0.0)
    a, h, cy, cx = _matvec_factors(xn, vn, sc, r_read, r_out)
    ah = (a * h)[:, None]
    gv_ty = gv_ptr.dtype.element_ty
    if ONE_TILE:
        mask = row_ok[:, None] & (cols[None, :] < N)
        offs = rows[:, None] * N + cols[None, :]
        g = load_rows(g_ptr, rows[:, None] * stride_gm + cols[None, :] * stride_gn, mask,
                      COMPUTE)
        y = load_rows(y_ptr, offs, mask, COMPUTE)
        gy = tl.sum(g * y, 1)
        tl.store(gv_ptr + offs, (g * ah + y * (cy * gy)[:, None]).to(gv_ty), mask=mask)
    else:
        acc = tl.zeros([BLOCK_M, BLOCK_N], COMPUTE)
        for start in range(0, N, BLOCK_N):
            mask = row_ok[:, None] & (start + cols[None, :] < N)
            g = load_rows(g_ptr, rows[:, None] * stride_gm + (start + cols[None, :]) * stride_gn,
                          mask, COMPUTE)
            y = load_rows(y_ptr, rows[:, None] * N + start + cols[None, :], mask, COMPUTE)
            acc += g * y
        gy = tl.sum(acc, 1)
        for start in range(0, N, BLOCK_N):
            mask = row_ok[:, None] & (start + cols[None, :] < N)
            offs = rows[:, None] * N + start + cols[None, :]
            g = load_rows(g_ptr, rows[:, None] * stride_gm + (start + cols[None, :]) * stride_gn,
                          mask, COMPUTE)
            y = load_rows(y_ptr, offs, mask, COMPUTE)
            tl.store(gv_ptr + offs, (g * ah + y * (cy * gy)[:, None]).to(gv_ty), mask=mask)
    if WRITE_BX:
        b = (cx * gy)[:, None]
        kcols = tl.arange(0, BLOCK_K)
        # (names of their own: a loop-carried name must keep its shape, BLOCK_K != BLOCK_N)
        for kstart in range(0, K, BLOCK_K):
            kmask = row_ok[:, None] & (kstart + kcols[None, :] < K)
            koffs = rows[:, None] * K + kstart + kcols[None, :]
            x = load_rows(x_ptr, koffs, kmask, COMPUTE)
            tl.store(bx_ptr + koffs, (x * b).to(bx_ptr.dtype.element_ty), mask=kmask)


# --------------------------------------------------------------------------- launch plumbing


def row_plan(m: int, n: int, k: int, max_block: int | None = None,
             ) -> tuple[tuple[int], int, int, int, bool, int]:
    """(grid, BLOCK_M, BLOCK_N, BLOCK_K, ONE_TILE, num_warps) for M rows of N (tiled, kept
    whole in registers when N <= ``max_block``, default 8192) and K (streamed) elements."""
    cap = max_block or _MAX_BLOCK
    block_n = min(triton.next_power_of_2(n), cap)
    block_m = max(1, min(64, _TILE // block_n, triton.next_power_of_2(m)))
    block_k = min(triton.next_power_of_2(k), cap, max(16, _TILE // block_m))
    tile = block_m * block_n
    warps = 4 if tile <= 2048 else 8 if tile <= 4096 else 16
    return (triton.cdiv(m, block_m),), block_m, block_n, block_k, block_n >= n, warps


def check_runnable(x: torch.Tensor) -> None:
    if x.is_cuda and _INTERPRETED:
        raise ValueError("CUDA tensors cannot run under TRITON_INTERPRET=1")
    if not x.is_cuda and not _INTERPRETED:
        raise ValueError(f"the fused kernels need CUDA tensors, got a {x.device.type} tensor "
                         "(CPU tensors run only under TRITON_INTERPRET=1)")


def check_curvature_value(c: float) -> float:
    if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c) or c <= 0:
        raise ValueError(f"c must be a finite Python float > 0 (the curvature is -c), got {c!r}")
    return float(c)


def check_out(name: str, out: torch.Tensor, shape: tuple[int, ...], like: torch.Tensor) -> None:
    if (tuple(out.shape) != tuple(shape) or out.dtype != like.dtype or out.device != like.device
            or not out.is_contiguous()):
        raise ValueError(f"{name} must be a contiguous {like.dtype} tensor of shape {shape} on "
                         f"{like.device}, got {out.dtype} {tuple(out.shape)} on {out.device}")


def _gemm_out_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype of the forward GEMM's output v: bfloat16 stays bfloat16 (float32's range; the
    rounding torch's bfloat16 reference also makes, and half the bytes the epilogue reads);
    float16 goes to float32 (|v| may pass 65504 where |x|, |M| do not)."""
    return dtype if dtype == torch.bfloat16 else compute_dtype(dtype)


def gemm(a: torch.Tensor, b: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    """a @ b by cuBLAS in the operands' dtype (Tensor Cores for half types, float32
    accumulation). A float32 ``out_dtype`` for half operands is honoured where torch writes it
    directly (CUDA, torch >= 2.8: the product is not rounded to the half type, and float16
    cannot overflow at 65504); on the CPU (interpreter tests) the same product is formed in
    float32 (half x half products are exact in float32); else the result has the operands'
    dtype and callers widen it as they load it."""
    if a.dtype in _HALF and out_dtype == torch.float32:
        if not a.is_cuda:
            return torch.mm(a.float(), b.float())
        if _MM_OUT_DTYPE:
            return torch.mm(a, b, out_dtype=out_dtype)
    return torch.mm(a, b)


def _check(m: torch.Tensor, x: torch.Tensor) -> None:
    for name, t in (("m", m), ("x", x)):
        if not isinstance(t, torch.Tensor) or t.dtype not in _DTYPES:
            raise ValueError(f"{name} must be a float64/float32/bfloat16/float16 tensor, got "
                             f"{getattr(t, 'dtype', type(t).__name__)}")
    if m.dim() != 2 or x.dim() < 1 or m.shape[1] != x.shape[-1] or 0 in m.shape:
        raise ValueError(f"m must be a non-empty matrix of shape (out, {x.shape[-1]}) for "
                         f"x{tuple(x.shape)}, got m{tuple(m.shape)}")
    if m.device != x.device:
        raise ValueError(f"m and x must be on one device, got {m.device} and {x.device}")
    check_runnable(x)


def _radii_args(c: float, x: torch.Tensor) -> torch.Tensor:
    """(sqrt(c), read radius, output radius) for ``_per_row``."""
    r_read, r_out = ball_radii(x.dtype)
    return device_scalars((math.sqrt(c), r_read, r_out), x.dtype, x.device)


def mobius_matvec_forward(m: torch.Tensor, x: torch.Tensor, c: float, *,
                          out: torch.Tensor | None = None, max_block: int | None = None,
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, stats): y = M ⊗ x of shape (..., out) in x's dtype (written into ``out`` if given)
    and the per-row (|x|, |Mx|) of shape (rows, 2) in the compute dtype, for the backward.

    M (out, in) is cast to x's dtype for the GEMM. ``max_block`` caps the tile width (tests
    use it to exercise the tiled path on small rows)."""
    _check(m, x)
    c = check_curvature_value(c)
    xr = as_rows(x)
    rows, k = xr.shape
    n = m.shape[0]
    shape = (*x.shape[:-1], n)
    if out is None:
        out = torch.empty(shape, dtype=x.dtype, device=x.device)
    else:
        check_out("out", out, shape, x)
    stats = torch.empty(rows, 2, dtype=compute_dtype(x.dtype), device=x.device)
    if rows:
        v = gemm(xr, m.to(x.dtype).t(), _gemm_out_dtype(x.dtype))
        grid, bm, bn, bk, one_tile, warps = row_plan(rows, n, k, max_block)
        _forward_kernel[grid](v, xr, out, stats, rows, n, k, _radii_args(c, x),
                              BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, ONE_TILE=one_tile,
                              COMPUTE=compute_type(x.dtype), num_warps=warps)
    return out, stats


def mobius_matvec_backward_rows(grad_y: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                                stats: torch.Tensor, c: float, *, with_bx: bool = True,
                                out: tuple[torch.Tensor, torch.Tensor] | None = None,
                                max_block: int | None = None,
                                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The row kernel of the backward: (grad_v, b x) as (rows, out) and (rows, in) matrices in
    x's dtype (b x is None without ``with_bx``); ``out`` gives both buffers."""
    c = check_curvature_value(c)
    check_runnable(x)
    xr = as_rows(x)
    rows, k = xr.shape
    n = y.shape[-1]
    g = grad_y.reshape(rows, n)
    yr = as_rows(y)
    if out is None:
        gv = torch.empty(rows, n, dtype=x.dtype, device=x.device)
        bx = torch.empty(rows, k, dtype=x.dtype, device=x.device) if with_bx else None
    else:
        gv, bx = out
        check_out("out[0]", gv, (rows, n), x)
        if with_bx:
            check_out("out[1]", bx, (rows, k), x)
    if rows:
        grid, bm, bn, bk, one_tile, warps = row_plan(rows, n, k, max_block)
        _backward_kernel[grid](g, g.stride(0), g.stride(1), yr, xr, stats, gv,
                               bx if with_bx else gv, rows, n, k, _radii_args(c, x),
                               BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, ONE_TILE=one_tile,
                               WRITE_BX=with_bx, COMPUTE=compute_type(x.dtype),
                               num_warps=warps)
    return gv, bx


def mobius_matvec_backward(grad_y: torch.Tensor, m: torch.Tensor, x: torch.Tensor,
                           y: torch.Tensor, stats: torch.Tensor, c: float, *,
                           need_m: bool = True, need_x: bool = True,
                           max_block: int | None = None,
                           ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(grad_m, grad_x) of <grad_y, M ⊗ x> (None where not needed), from the forward's y and
    stats: the row kernel, then cuBLAS grad_x = addmm(b x, grad_v, M), grad_M = grad_v^T x."""
    gv, bx = mobius_matvec_backward_rows(grad_y, x, y, stats, c, with_bx=need_x,
                                         max_block=max_block)
    grad_x = torch.addmm(bx, gv, m.to(x.dtype)).view(x.shape) if need_x else None
    grad_m = gemm(gv.t(), as_rows(x), m.dtype).to(m.dtype) if need_m else None
    return grad_m, grad_x


# --------------------------------------------------------------------------- custom ops


@torch.library.custom_op("resnetbk::mobius_matvec", mutates_args=())
def _matvec_op(m: torch.Tensor, x: torch.Tensor, c: float) -> tuple[torch.Tensor, torch.Tensor]:
    return mobius_matvec_forward(m, x, c)


@_matvec_op.register_fake
def _(m: torch.Tensor, x: torch.Tensor, c: float) -> tuple[torch.Tensor, torch.Tensor]:
    rows = math.prod(x.shape[:-1])
    return (x.new_empty((*x.shape[:-1], m.shape[0])),
            x.new_empty((rows, 2), dtype=compute_dtype(x.dtype)))


@torch.library.custom_op("resnetbk::mobius_matvec_backward", mutates_args=())
def _matvec_backward_op(grad_y: torch.Tensor, m: torch.Tensor, x: torch.Tensor,
                        y: torch.Tensor, stats: torch.Tensor, c: float, need_m: bool,
                        need_x: bool) -> tuple[torch.Tensor, torch.Tensor]:
    grad_m, grad_x = mobius_matvec_backward(grad_y, m, x, y, stats, c, need_m=need_m,
                                            need_x=need_x)
    # A custom op returns tensors: an empty one stands for "not needed".
    return (m.new_empty(0) if grad_m is None else grad_m,
            x.new_empty(0) if grad_x is None else grad_x)


@_matvec_backward_op.register_fake
def _(grad_y: torch.Tensor, m: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
      stats: torch.Tensor, c: float, need_m: bool,
      need_x: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.empty_like(m) if need_m else m.new_empty(0),
            torch.empty_like(x) if need_x else x.new_empty(0))


def _setup_context(ctx: torch.autograd.function.FunctionCtx, inputs: tuple,
                   output: tuple[torch.Tensor, torch.Tensor]) -> None:
    m, x, c = inputs
    y, stats = output
    ctx.save_for_backward(m, x, y, stats)
    ctx.c = c
    ctx.mark_non_differentiable(stats)


def _backward(ctx: torch.autograd.function.FunctionCtx, grad_y: torch.Tensor,
              _grad_stats: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    m, x, y, stats = ctx.saved_tensors
    need_m, need_x = ctx.needs_input_grad[:2]
    grad_m, grad_x = _matvec_backward_op(grad_y, m, x, y, stats, ctx.c, need_m, need_x)
    return (grad_m if need_m else None), (grad_x if need_x else None), None


_matvec_op.register_autograd(_backward, setup_context=_setup_context)


def mobius_matvec(m: torch.Tensor, x: torch.Tensor, c: float) -> torch.Tensor:
    """M ⊗ x for M of shape (out, in) and x (..., in), c a Python float: the fused path of
    ``poincare.mobius_matvec`` (custom op ``resnetbk::mobius_matvec``, analytic backward,
    torch.compile-able). The result has x's dtype; M is cast to it for the GEMM."""
    _check(m, x)
    return _matvec_op(m, x, check_curvature_value(c))[0]
