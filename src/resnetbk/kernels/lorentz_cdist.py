"""Fused Lorentz pairwise distances: ``tl.dot`` tiles with the arcosh epilogue, and its custom op.

Reference: ``resnetbk.geometry.lorentz.cdist`` (time coordinate first, <x, x>_L = -1/c):

    d(x_i, y_j) = arcosh(-c <x_i, y_j>_L) / sqrt(c),   <x, y>_L = -x_0 y_0 + <x_s, y_s>

for x (..., N, d+1) and y (..., M, d+1) (batch axes broadcast), returning (..., N, M) in x's
dtype. Only the distance matrix is written; the inner products live in registers.

Two launches per call:

1. ``_split_kernel`` (x and y rows in one grid): copies the spatial parts into zero-padded,
   contiguous operand buffers (rows padded to the tile, columns to a multiple of BLOCK_K, so the
   GEMM loop runs unmasked and 16-byte aligned although d + 1 = 129 columns are not), rounds
   them to the operand format of the precision mode and, for the x3 modes, stores the rounding
   remainder as a second operand; the time coordinates go to a float32 vector each.
2. ``_cdist_kernel``: a (BLOCK_M, BLOCK_N) tile of <x_s, y_s> by ``tl.dot`` over the spatial
   columns, then the epilogue in float32: <x, y>_L = fma(-x_0, y_0, dot) (the time term as an
   exact rank-1 update, rounded once), t = fma(<x, y>_L, -c, -1) = -c<x, y>_L - 1 (rounded once:
   forming s = -c<x,y>_L first and then s - 1 would add an error eps/t relative to t), clamped
   at 0, and

       d = log1p(t + sqrt(t (t + 2))) / sqrt(c)     (numerics.arcosh: no cancellation near 1)
       d = log1p(2t + 1) / sqrt(c) = ln(2 s) / sqrt(c)   for t > 1/sqrt(eps) (no t^2 overflow).

Precision modes (``precision=``; the operands are rounded in pass 1, so the dot sees exact
values and the interpreter reproduces the GPU's rounding of the operands; accumulation is
float32 everywhere):

    ieee     float32 operands, ``input_precision="ieee"`` (CUDA-core FMAs on the GPU)
    tf32     operands rounded to tf32 (10-bit mantissa), one tensor-core dot
    tf32x3   x = hi + lo, both tf32 (22 bits); hi.hi + hi.lo + lo.hi, three dots, the two
             small ones in their own accumulator (Triton's 3xTF32 layout)
    bf16     operands rounded to bfloat16 (7-bit mantissa), one dot
    bf16x3   the same split with bfloat16 parts (16 bits), three dots
    auto     tf32x3 for float32 inputs (``DEFAULT_PRECISION``); bf16 for bfloat16 and tf32 for
             float16 inputs (both exact for those inputs: one dot, no split)

Accuracy. The ambient formula cancels: for a pair at distance d the inner product is made of
terms ~ c x_0 y_0 ~ cosh(r_x) cosh(r_y) times larger than t ~ c d^2 / 2, so *any* float32 GEMM
(torch's own cdist in float32 included) leaves a relative distance error ~ eps c x_0 y_0 /
(c d^2) (the reference's docstring says so). Max relative error of d, by band of d, for close
pairs built by expmap (CPU emulation of the operand roundings above, float32 accumulation,
d = 128, 4000 pairs; ``bench/lorentz_cdist_gpu.py`` measures the same on the GPU):

    radii <= 3          [1e-3,1e-2)  [1e-2,1e-1)  [1e-1,1)   [1,30]
      ieee, tf32x3        4-5          0.35-0.43    3e-3       3e-5
      bf16x3              16           1.0          1e-2       1.5e-4
      tf32 / bf16         70 / 190     9 / 29       1.0 / 1.5  9e-3 / 5e-2
      torch float32       2.7          0.37         2.4e-3     3e-5
    radii <= 1
      ieee, tf32x3        0.3          3e-3         4e-5       5e-7
      torch float32       1.0          8e-3         7e-5       1e-6

"Relative error <= 1e-3 for d >= 1e-2" is therefore out of reach of float32 accumulation:
the error is ~1.2e-7 c x_0 y_0 / (c d^2) (ieee, tf32x3), so that bound holds from
d ~ 1.1e-2 sqrt(c x_0 y_0) / sqrt(c) on (d >= 1e-2 only next to the origin, d >~ 0.1 at radius
3); below, the error grows as 1/d^2 until the result is noise (coincident points come out as 0
or ~sqrt(eps c x_0 y_0) / sqrt(c)). Use ``lorentz.dist`` (the polar form) where that matters.
tf32x3 is as accurate as the float32 reference (the tests hold it to 2x torch's inner-product
error; in the emulation its error is 0.1-0.8x torch's, as the time term is exact here and
rounded inside torch's GEMM), so it is the default. bf16x3 keeps 16 bits (2-50x torch's error,
worst at small d); tf32 and bf16 suit far pairs only.

Epilogue math (``FAST``; default on CUDA tensors, all dtypes): the fast path takes
sqrt.approx.ftz and ln(1 + u) = lg2.approx(1 + u) ln 2 (no log1p correction: the rounding of
1 + u, 2^-24, is below lg2.approx's own error; not ``fastmath.log1p``, whose small-argument
polynomial and two reciprocals cost more than this whole epilogue): two MUFU and ~12 FP32
operations per element (sm_90 SASS), 64-120 registers a thread. Its error is absolute,
2^-22 ln 2 ~ 1.7e-7 in sqrt(c) d, below the GEMM's own error at every d (>= ~eps / (sqrt(c) d)
even at the origin) and within the tests' floor, which is why float32 outputs take it too
(unlike the row-wise kernels' ``rowwise.fast_math``). The portable path (the interpreter;
``fast=False``) uses ``fastmath.log1p`` and ``sqrt_rn`` (a few ulp) and costs ~70 more
registers (one program per SM).

Backward (``weights`` + two matmuls): d d_ij / d<x_i, y_j>_L = -sqrt(c) / sqrt(s^2 - 1), s = t + 1;
the same kernel recomputes the inner products (BACKWARD=True) and writes
W = grad * that factor (float32, materialised), then grad_x = W (J y), grad_y = W^T (J x) with
J = diag(-1, 1, ..., 1), by torch matmuls (traceable, so the op works under torch.compile).
At zero distance the factor is infinite; like the reference's ``numerics.arcosh`` (whose sqrt
argument is floored at the smallest normal number), the kernel uses 1/sqrt(t (t + 2)) where
t (t + 2) >= tiny, the derivative 1 of the floored form where 0 <= t (t + 2) < tiny, 0 where
s < 1 (clamped by rounding: the reference's clamp passes no gradient), and 1/s past the
large-t switch (the derivative of ln(2 s)). So W is finite; it is ~1/d large for close pairs.

Shapes and types: x (..., N, d+1), y (..., M, d+1), batch axes broadcast; float32, bfloat16,
float16 (computed in float32), and float64 under Triton's interpreter only (ieee float64 dots:
the gradchecks; on the GPU float64 is the torch reference's). c and 1/sqrt(c) enter as float32
scalars. On CPU tensors the kernels run only under the interpreter (``TRITON_INTERPRET=1`` set
before import), which computes ``tl.dot`` exactly in float32 whatever ``input_precision`` says
(so pass 1's rounding carries the modes there) and cannot multiply bfloat16 tiles (so there the
bfloat16-rounded operands are stored as float32).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from resnetbk.debug import check_curvature, check_floating
from resnetbk.kernels.fastmath import log1p, log2, rsqrt, sqrt
from resnetbk.kernels.rowwise import compute_type

__all__ = ["DEFAULT_PRECISION", "PRECISIONS", "LaunchConfig", "forward", "launch_config",
           "lorentz_cdist", "weights"]

# Triton decides interpreter vs compiled when @triton.jit runs (at import of this module).
_INTERPRETED: bool = bool(triton.knobs.runtime.interpret)

PRECISIONS = ("auto", "ieee", "tf32", "tf32x3", "bf16", "bf16x3")
DEFAULT_PRECISION: dict[torch.dtype, str] = {
    torch.float32: "tf32x3",
    torch.bfloat16: "bf16",  # exact for bfloat16 inputs
    torch.float16: "tf32",  # exact for float16 inputs (same mantissa, wider exponent)
    torch.float64: "ieee",
}
_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)

_ROUND_NONE, _ROUND_TF32, _ROUND_BF16 = 0, 1, 2


class _Mode(NamedTuple):
    rounding: int  # how pass 1 rounds the operands
    split: bool  # hi + lo operands, three dots
    dot: str  # tl.dot input_precision


_MODES: dict[str, _Mode] = {
    "ieee": _Mode(_ROUND_NONE, False, "ieee"),
    "tf32": _Mode(_ROUND_TF32, False, "tf32"),
    "tf32x3": _Mode(_ROUND_TF32, True, "tf32"),
    # bfloat16 tiles: input_precision does not apply (Triton's default is passed).
    "bf16": _Mode(_ROUND_BF16, False, "tf32"),
    "bf16x3": _Mode(_ROUND_BF16, True, "tf32"),
}


class LaunchConfig(NamedTuple):
    block_m: int
    block_n: int
    block_k: int
    num_warps: int
    num_stages: int


# GPU tiles per mode (sm_90, FAST epilogue): chosen from the register and shared-memory use of
# the sm_90 compile (Triton 3.9, no spills) so that two or more programs fit on an SM, letting
# one program's MMAs overlap another's epilogue and stores; to be refined with
# bench/lorentz_cdist_gpu.py --sweep. (128, 128) tiles need 185-250 registers a thread: one
# program per SM.
_GPU_CONFIGS: dict[str, LaunchConfig] = {
    "ieee": LaunchConfig(128, 64, 32, 8, 2),  # 128 regs, 24 KiB
    "tf32": LaunchConfig(128, 64, 32, 8, 3),  # 66 regs, 72 KiB
    "tf32x3": LaunchConfig(128, 64, 32, 8, 2),  # 116 regs, 96 KiB
    "bf16": LaunchConfig(128, 64, 64, 8, 2),  # 64 regs, 48 KiB
    "bf16x3": LaunchConfig(128, 64, 32, 8, 3),  # 96 regs, 72 KiB
}
_INTERPRETER_CONFIG = LaunchConfig(32, 32, 64, 4, 1)
_SPLIT_ROWS = 32  # rows per program of pass 1


def launch_config(precision: str) -> LaunchConfig:
    """The default tiles of a (resolved) precision mode on this platform."""
    return _INTERPRETER_CONFIG if _INTERPRETED else _GPU_CONFIGS[precision]


# --------------------------------------------------------------------------- device code


@triton.jit
def _round(v, ROUND: tl.constexpr):
    """v rounded to the operand format ``_ROUND_*``: 1 tf32 (to nearest, ties away from zero,
    by bit arithmetic), 2 bfloat16 (to nearest even), 0 unchanged."""
    if ROUND == 1:
        bits = v.to(tl.int32, bitcast=True)
        return ((bits + 0x1000) & -8192).to(tl.float32, bitcast=True)
    elif ROUND == 2:
        return v.to(tl.bfloat16).to(tl.float32)
    else:
        return v


@triton.jit
def _split_rows(src, hi_ptr, lo_ptr, t_ptr, b, row0, rows_in, rows_out, s_b, s_r, s_c, d_space,
                KP: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
                ROUND: tl.constexpr, SPLIT: tl.constexpr, COMPUTE: tl.constexpr):
    """Rows [row0, row0 + BLOCK_R) of batch b: time coordinate to t_ptr, spatial part (rounded)
    to hi_ptr and its remainder to lo_ptr, zero-padded to KP columns and rows_out rows."""
    rows = row0 + tl.arange(0, BLOCK_R)
    live = rows < rows_in
    keep = rows < rows_out
    src_row = src + b * s_b + rows.to(tl.int64) * s_r
    dst_row = b * rows_out + rows
    x0 = tl.load(src_row, mask=live, other=0.0).to(COMPUTE)
    tl.store(t_ptr + dst_row, x0, mask=keep)
    for k0 in tl.static_range(0, KP, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        mask = live[:, None] & (cols < d_space)[None, :]
        v = tl.load(src_row[:, None] + (cols + 1)[None, :] * s_c, mask=mask, other=0.0)
        v = v.to(COMPUTE)
        hi = _round(v, ROUND)
        offs = dst_row[:, None] * KP + cols[None, :]
        tl.store(hi_ptr + offs, hi.to(hi_ptr.dtype.element_ty), mask=keep[:, None])
        if SPLIT:
            lo = _round(v - hi, ROUND)
            tl.store(lo_ptr + offs, lo.to(lo_ptr.dtype.element_ty), mask=keep[:, None])


@triton.jit
def _split_kernel(x_ptr, xh_ptr, xl_ptr, xt_ptr, n, n_pad, sx_b, sx_r, sx_c,
                  y_ptr, yh_ptr, yl_ptr, yt_ptr, m, m_pad, sy_b, sy_r, sy_c, d_space,
                  KP: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
                  ROUND: tl.constexpr, SPLIT: tl.constexpr, COMPUTE: tl.constexpr):
    """Pass 1 for x (the first cdiv(n_pad, BLOCK_R) programs) and y (the rest), batch axis 1."""
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    x_blocks = tl.cdiv(n_pad, BLOCK_R)
    if pid < x_blocks:
        _split_rows(x_ptr, xh_ptr, xl_ptr, xt_ptr, b, pid * BLOCK_R, n, n_pad, sx_b, sx_r, sx_c,
                    d_space, KP, BLOCK_R, BLOCK_K, ROUND, SPLIT, COMPUTE)
    else:
        _split_rows(y_ptr, yh_ptr, yl_ptr, yt_ptr, b, (pid - x_blocks) * BLOCK_R, m, m_pad,
                    sy_b, sy_r, sy_c, d_space, KP, BLOCK_R, BLOCK_K, ROUND, SPLIT, COMPUTE)


@triton.jit
def _sqrt_ftz(x):
    """``sqrt.approx.ftz.f32``: one MUFU.SQRT (GPU only). ``fastmath.sqrt``'s non-ftz form adds
    a three-instruction subnormal rescale per element; here a subnormal t (t + 2) means t ~ 0,
    where flushing it to 0 changes nothing."""
    return tl.inline_asm_elementwise("sqrt.approx.ftz.f32 $0, $1;", "=f,f", [x],
                                     dtype=tl.float32, is_pure=True, pack=1)


@triton.jit
def _acosh1p(t, scale, LARGE: tl.constexpr, FAST: tl.constexpr, F64: tl.constexpr):
    """scale * arcosh(1 + t) for t >= 0, in the reference's form (``numerics.arcosh``)."""
    big = t > LARGE
    ts = tl.where(big, 0.0, t)
    if F64:
        u = tl.where(big, 2.0 * t + 1.0, ts + tl.sqrt(ts * (ts + 2.0)))
        w = 1.0 + u
        # Goldberg's log1p: exact-log quotient, w == 1 only where u is below eps/2.
        return tl.where(w == 1.0, u, tl.log(w) * (u / tl.where(w == 1.0, 1.0, w - 1.0))) * scale
    else:
        q = ts * (ts + 2.0)
        if FAST:
            u = tl.where(big, 2.0 * t + 1.0, ts + _sqrt_ftz(q))
            # lg2.approx's absolute error (2^-22) exceeds the rounding of 1 + u (2^-24): no
            # log1p correction; ln 2 folds into the per-program scale.
            return log2(1.0 + u, True) * (scale * 0.6931471805599453)
        else:
            u = tl.where(big, 2.0 * t + 1.0, ts + sqrt(q, False))
            return log1p(u, False) * scale


@triton.jit
def _dacosh1p(t, pos, LARGE: tl.constexpr, TINY: tl.constexpr, FAST: tl.constexpr,
              F64: tl.constexpr):
    """d arcosh(s) / ds at s = 1 + t as the reference differentiates it: 1/sqrt(t (t + 2)),
    1 where that is below the floor (tiny) and s >= 1 (``pos``), 0 where s < 1, 1/s when big."""
    big = t > LARGE
    ts = tl.where(big, 0.0, t)
    q = ts * (ts + 2.0)
    ok = q >= TINY
    qs = tl.where(ok, q, 1.0)
    inv_root = 1.0 / tl.sqrt(qs) if F64 else rsqrt(qs, FAST)
    small = tl.where(ok, inv_root, tl.where(pos, 1.0, 0.0))
    return tl.where(big, 1.0 / (1.0 + t), small)


@triton.jit
def _cdist_kernel(xh_ptr, xl_ptr, xt_ptr, yh_ptr, yl_ptr, yt_ptr, out_ptr, g_ptr,
                  n, m, n_pad, m_pad, s_ob, s_on, s_om, s_gb, s_gn, s_gm, c, scale,
                  KP: tl.constexpr, SPLIT: tl.constexpr, PREC: tl.constexpr,
                  BACKWARD: tl.constexpr, FAST: tl.constexpr, LARGE: tl.constexpr,
                  TINY: tl.constexpr, ACC: tl.constexpr, F64: tl.constexpr, BLOCK_M: tl.constexpr,
                  BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """Forward: out = arcosh(-c <x, y>_L) * scale (scale = 1/sqrt(c)). BACKWARD: out = W =
    grad * scale * d arcosh / ds (scale = -sqrt(c)), grad read through its strides."""
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    tiles_n = tl.cdiv(m, BLOCK_N)
    pid_m = pid // tiles_n
    pid_n = pid % tiles_n
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    # Operand rows are padded to whole tiles and columns to KP: no masks in the loop.
    a_off = (b * n_pad + rm)[:, None] * KP + rk[None, :]  # (BLOCK_M, BLOCK_K)
    b_off = (b * m_pad + rn)[None, :] * KP + rk[:, None]  # (BLOCK_K, BLOCK_N), K contiguous
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    acc_lo = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    for k0 in range(0, KP, BLOCK_K):
        a = tl.load(xh_ptr + a_off + k0)
        bt = tl.load(yh_ptr + b_off + k0)
        if SPLIT:
            a_lo = tl.load(xl_ptr + a_off + k0)
            b_lo = tl.load(yl_ptr + b_off + k0)
            acc_lo = tl.dot(a_lo, bt, acc_lo, input_precision=PREC)
            acc_lo = tl.dot(a, b_lo, acc_lo, input_precision=PREC)
        acc = tl.dot(a, bt, acc, input_precision=PREC)
    if SPLIT:
        acc = acc + acc_lo
    x0 = tl.load(xt_ptr + b * n_pad + rm)
    y0 = tl.load(yt_ptr + b * m_pad + rn)
    # <x, y>_L with the time term rounded once, then t = -c <x, y>_L - 1 rounded once.
    inner = tl.fma(-x0[:, None], y0[None, :], acc)
    t_raw = tl.fma(inner, -c, -1.0)
    t = tl.maximum(t_raw, 0.0)
    mask = (rm < n)[:, None] & (rn < m)[None, :]
    out_off = b * s_ob + rm.to(tl.int64)[:, None] * s_on + rn[None, :] * s_om
    if BACKWARD:
        g_off = b * s_gb + rm.to(tl.int64)[:, None] * s_gn + rn[None, :] * s_gm
        g = tl.load(g_ptr + g_off, mask=mask, other=0.0).to(ACC)
        res = g * scale * _dacosh1p(t, t_raw >= 0.0, LARGE, TINY, FAST, F64)
    else:
        res = _acosh1p(t, scale, LARGE, FAST, F64)
    tl.store(out_ptr + out_off, res.to(out_ptr.dtype.element_ty), mask=mask)


# --------------------------------------------------------------------------- host code


def _resolve(precision: str, dtype: torch.dtype) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if dtype == torch.float64:
        return "ieee"  # float64 (interpreter only): exact dots whatever was asked
    return DEFAULT_PRECISION[dtype] if precision == "auto" else precision


def _check(x: torch.Tensor, y: torch.Tensor, c: float, precision: str) -> torch.Size:
    """Validate the arguments; return the broadcast batch shape."""
    for name, t in (("x", x), ("y", y)):
        check_floating(name, t)
        if t.dim() < 2:
            raise ValueError(f"lorentz_cdist needs (..., n, d+1) and (..., m, d+1), got "
                             f"{name}{tuple(t.shape)}")
        if t.dtype not in _DTYPES:
            raise ValueError(f"{name} must be float32, bfloat16, float16 or float64, got {t.dtype}")
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"last (manifold) dimensions differ: x{tuple(x.shape)}, y{tuple(y.shape)}")
    if x.shape[-1] < 2:
        raise ValueError(f"points need at least 2 coordinates (time first), got {x.shape[-1]}")
    if x.dtype != y.dtype:
        raise ValueError(f"x and y must have the same dtype, got {x.dtype} and {y.dtype}")
    if x.device != y.device:
        raise ValueError(f"x and y must be on the same device, got {x.device} and {y.device}")
    if x.device.type != "cuda" and not _INTERPRETED:
        raise ValueError("lorentz_cdist runs on CUDA tensors (on CPU only under Triton's "
                         f"interpreter, TRITON_INTERPRET=1 set before import); got {x.device}")
    if x.dtype == torch.float64 and not _INTERPRETED:
        raise ValueError("float64 runs under Triton's interpreter only; on the GPU use the "
                         "torch reference (resnetbk.geometry.lorentz.cdist)")
    check_curvature(c)
    _resolve(precision, x.dtype)
    try:
        # (plain 2-D inputs skip torch.broadcast_shapes: host time counts at this size)
        if x.dim() == 2 and y.dim() == 2:
            return torch.Size()
        return torch.broadcast_shapes(x.shape[:-2], y.shape[:-2])
    except RuntimeError:
        raise ValueError(f"batch shapes do not broadcast: x{tuple(x.shape)}, "
                         f"y{tuple(y.shape)}") from None


def _eps_consts(dtype: torch.dtype) -> tuple[float, float]:
    """(switch to ln(2s), smallest normal) of the compute dtype, as ``numerics.arcosh`` uses."""
    info = torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32)
    return 1.0 / math.sqrt(info.eps), info.tiny


def _round_up(n: int, block: int) -> int:
    # Plain integers: triton.cdiv is a jit function, ~5 us per call from Python.
    return -(-n // block) * block


def _batched(t: torch.Tensor, batch: torch.Size, nb: int
             ) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """t (..., rows, cols) broadcast to ``batch`` as (nb, rows, cols) and its strides; 2-D
    tensors as they are, with batch stride 0 (no view ops: host time counts at this size)."""
    if t.dim() == 2:
        return t, (0, *t.stride())
    tb = t.expand(*batch, *t.shape[-2:]).reshape(nb, *t.shape[-2:])
    return tb, tb.stride()


def _launch(x: torch.Tensor, y: torch.Tensor, c: float, precision: str, out: torch.Tensor | None,
            grad: torch.Tensor | None, fast: bool | None, config: LaunchConfig | None
            ) -> torch.Tensor:
    batch = _check(x, y, c, precision)
    mode_name = _resolve(precision, x.dtype)
    mode = _MODES[mode_name]
    cfg = config or launch_config(mode_name)
    n, m, width = x.shape[-2], y.shape[-2], x.shape[-1]
    nb = math.prod(batch)
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    backward = grad is not None
    out_dtype = acc_dtype if backward else x.dtype
    shape = (*batch, n, m)
    if out is None:
        out = torch.empty(shape, dtype=out_dtype, device=x.device)
    elif out.shape != shape or out.dtype != out_dtype or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous {out_dtype} tensor of shape {tuple(shape)}, "
                         f"got {out.dtype} {tuple(out.shape)}")
    if n == 0 or m == 0 or nb == 0:
        return out
    xb, x_strides = _batched(x, batch, nb)
    yb, y_strides = _batched(y, batch, nb)
    d_space = width - 1
    block_k = min(cfg.block_k, max(16, triton.next_power_of_2(d_space)))
    kp = _round_up(d_space, block_k)
    n_pad = _round_up(n, cfg.block_m)
    m_pad = _round_up(m, cfg.block_n)
    op_dtype = (torch.bfloat16 if mode.rounding == _ROUND_BF16 and not _INTERPRETED
                else acc_dtype)
    parts = 2 if mode.split else 1
    xs = torch.empty((parts, nb, n_pad, kp), dtype=op_dtype, device=x.device)
    ys = torch.empty((parts, nb, m_pad, kp), dtype=op_dtype, device=x.device)
    xt = torch.empty((nb, n_pad), dtype=acc_dtype, device=x.device)
    yt = torch.empty((nb, m_pad), dtype=acc_dtype, device=x.device)
    compute = compute_type(x.dtype)
    split_k = min(kp, 128)
    grid1 = ((n_pad + m_pad) // _SPLIT_ROWS, nb)  # both multiples of the tile, >= 32
    _split_kernel[grid1](
        xb, xs[0], xs[-1], xt, n, n_pad, *x_strides,
        yb, ys[0], ys[-1], yt, m, m_pad, *y_strides, d_space,
        KP=kp, BLOCK_R=_SPLIT_ROWS, BLOCK_K=split_k, ROUND=mode.rounding, SPLIT=mode.split,
        COMPUTE=compute, num_warps=4,
    )
    f64 = x.dtype == torch.float64
    fast = x.device.type == "cuda" if fast is None else fast
    large, tiny = _eps_consts(x.dtype)
    sc = math.sqrt(c)
    ov, o_strides = _batched(out, batch, nb)
    if backward:
        gv, g_strides = _batched(grad.expand(shape), batch, nb)
        scale = -sc
    else:
        gv, scale, g_strides = ov, 1.0 / sc, (0, 0, 0)
    grid2 = (n_pad // cfg.block_m * (m_pad // cfg.block_n), nb)
    _cdist_kernel[grid2](
        xs[0], xs[-1], xt, ys[0], ys[-1], yt, ov, gv, n, m, n_pad, m_pad, *o_strides,
        *g_strides, float(c), scale,
        KP=kp, SPLIT=mode.split, PREC=mode.dot, BACKWARD=backward, FAST=bool(fast) and not f64,
        LARGE=large, TINY=tiny, ACC=compute, F64=f64, BLOCK_M=cfg.block_m,
        BLOCK_N=cfg.block_n, BLOCK_K=block_k, num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
    )
    return out


def forward(x: torch.Tensor, y: torch.Tensor, c: float, precision: str = "auto", *,
            out: torch.Tensor | None = None, fast: bool | None = None,
            config: LaunchConfig | None = None) -> torch.Tensor:
    """Distances (..., N, M) in x's dtype (no autograd; see :func:`lorentz_cdist`).

    ``out``: optional contiguous result buffer. ``fast``: the epilogue's PTX approximations
    (default: on CUDA tensors, see the module docstring). ``config``: tile override
    (benchmarks)."""
    return _launch(x, y, c, precision, out, None, fast, config)


def weights(x: torch.Tensor, y: torch.Tensor, grad: torch.Tensor, c: float,
            precision: str = "auto", *, out: torch.Tensor | None = None,
            fast: bool | None = None, config: LaunchConfig | None = None) -> torch.Tensor:
    """W = grad * d d_ij / d<x_i, y_j>_L (..., N, M) in float32 (float64 for float64 inputs),
    recomputing the inner products; grad_x = W (J y), grad_y = W^T (J x)."""
    return _launch(x, y, c, precision, out, grad, fast, config)


@torch.library.custom_op("resnetbk::lorentz_cdist", mutates_args=())
def lorentz_cdist(x: torch.Tensor, y: torch.Tensor, c: float,
                  precision: str = "auto") -> torch.Tensor:
    """Pairwise Lorentz distances (..., N, M) of x (..., N, d+1) and y (..., M, d+1) by the
    fused kernel, differentiable in x and y (c a positive number; ``precision`` one of
    ``PRECISIONS``, see the module docstring)."""
    return forward(x, y, c, precision)


@lorentz_cdist.register_fake
def _(x: torch.Tensor, y: torch.Tensor, c: float, precision: str = "auto") -> torch.Tensor:
    batch = _check(x, y, c, precision)
    return x.new_empty((*batch, x.shape[-2], y.shape[-2]))


@torch.library.custom_op("resnetbk::lorentz_cdist_weights", mutates_args=())
def _weights_op(x: torch.Tensor, y: torch.Tensor, grad: torch.Tensor, c: float,
                precision: str) -> torch.Tensor:
    return weights(x, y, grad, c, precision)


@_weights_op.register_fake
def _(x: torch.Tensor, y: torch.Tensor, grad: torch.Tensor, c: float,
      precision: str) -> torch.Tensor:
    batch = _check(x, y, c, precision)
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    return x.new_empty((*batch, x.shape[-2], y.shape[-2]), dtype=dtype)


def _setup_context(ctx: torch.autograd.function.FunctionCtx, inputs: tuple,
                   output: torch.Tensor) -> None:
    x, y, c, *rest = inputs
    ctx.save_for_backward(x, y)
    ctx.c = c
    ctx.precision = rest[0] if rest else "auto"


def _flip_time(p: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """J p = (-p_0, p_1, ..., p_d) in ``dtype``."""
    p = p.to(dtype)
    return torch.cat([-p[..., :1], p[..., 1:]], dim=-1)


def _backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
              ) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
    x, y = ctx.saved_tensors
    w = _weights_op(x, y, grad, ctx.c, ctx.precision)
    gx = gy = None
    if ctx.needs_input_grad[0]:
        gx = (w @ _flip_time(y, w.dtype)).sum_to_size(x.shape).to(x.dtype)
    if ctx.needs_input_grad[1]:
        gy = (w.transpose(-1, -2) @ _flip_time(x, w.dtype)).sum_to_size(y.shape).to(y.dtype)
    return gx, gy, None, None


lorentz_cdist.register_autograd(_backward, setup_context=_setup_context)
