"""Möbius addition on the Poincaré ball evaluated in LNS arithmetic, in one Triton row kernel.

Same formula as the float kernel (``kernels/mobius_add.py``, ``geometry.poincare``), the
cancellation-free form

    s = x + y,   g_x = 1 - c|x|^2,   g_y = 1 - c|y|^2
    x ⊕ y = (g_x s + c|s|^2 x) / (g_x g_y + c|s|^2),

with every operation in the logarithmic number system (``resnetbk.lns``, ``kernels/lns_add.py``):
float inputs (float32, bfloat16, float16) are encoded in the kernel to (sign, log2 magnitude
rounded to ``frac_bits`` fractional bits); squares, products and the quotient are integer
additions of log fields (exact); sums go through the in-kernel Gaussian logarithms
(``lns_add.add_fields``: sb/db by table, texture or MUFU, the ``backend``), each rounded once to
the grid. The row reductions |x|^2, |y|^2, |s|^2 are LNS sums too, as a pairwise tree (log2 of
the padded dimension levels, all terms positive: only sb, no cancellation); <x, y> is never
formed (it would cancel for y ~ -x). Only the output is decoded to float, and the output guard
(scale to sqrt(c)|o| <= 1 - eps of the dtype) runs in float32 on the decoded row.

Precision and range: the log fields live in int32 registers with ``frac_bits`` fractional bits
(default 10, the 16-bit format's precision: each rounding <= 2^(2^-11) - 1 = 3.4e-4 relative)
and a range of 2^(+-2^22 / 2^f), wider than float32's, so nothing saturates. (A 16-bit
storage format would: its smallest magnitude, 1.5e-5, is the square of 3.9e-3, and squares of
smaller coordinates would saturate to it.) So the kernel emulates an LNS datapath of that
precision, not the 16-bit storage format.

Reading inputs: as the float kernel reads points past its read radius as points on it, here
c|x|^2 (as computed) is held at or below 2^(-R 2^-f), R = max(1, ceil(-2 log2(r_read) 2^f)) from
the dtype's read radius, by subtracting e = ceil((L(c|x|^2) + R) / 2) log-ulps from every
coordinate's log field (an exact scaling by 2^(-e 2^-f)): g_x stays positive and the quotient
defined for every input, boundary points included.

Accuracy against float64 (tests/kernels/test_lns_mobius.py; docs/LNS.md): |out - ref| <=
K u (|x| + |y| + |ref|) / min(g_x, g_y), u = 2^(2^-(f+1)) - 1 the rounding unit, with K derived
there. Non-finite inputs (NaN, Inf) give a NaN row. Forward only: no autograd.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from resnetbk.geometry.numerics import ball_eps, read_radius
from resnetbk.kernels import fastmath
from resnetbk.kernels.lns_add import BACKENDS, add_fields, kernel_args
from resnetbk.kernels.lut import check_device
from resnetbk.kernels.rowwise import as_rows, load_rows, row_tile, sqrt_rn

__all__ = ["BACKENDS", "MAX_DIM", "MAX_FRAC_BITS", "mobius_add"]

MAX_DIM = 4096  # a row lives in registers
MAX_FRAC_BITS = 14  # the finest precision of a 16-bit format, what lns_add's bounds cover
# Log fields in registers: int32 with a (_LOG_BITS - 1)-bit range (2^(+-2^22 / 2^f)).
_LOG_BITS = 24
_TILE, _WARPS = 1024, 4  # elements of one tensor per program, warps
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_INF = tl.constexpr(float("inf"))


@triton.jit
def _encode(v, BITS: tl.constexpr, FRAC: tl.constexpr, FAST: tl.constexpr):
    """(negative, log field) of float32 values: log2|v| rounded to 2^-FRAC (ties up), 0 as the
    zero field. The clamp only keeps Inf/NaN lanes (rows the kernel discards) in int range."""
    half = 1 << (BITS - 2)
    a = tl.abs(v)
    log = tl.floor(fastmath.log2(a, FAST) * (1 << FRAC) + 0.5)
    log = tl.where(log < 1 - half, 1 - half, tl.where(log > half - 1, half - 1, log))
    return v < 0.0, tl.where(a == 0.0, -half, log.to(tl.int32))


@triton.jit
def _decode(negative, log, BITS: tl.constexpr, FRAC: tl.constexpr, FAST: tl.constexpr):
    """Float32 values of (negative, log field); the zero field gives 0."""
    mag = fastmath.exp2(log.to(tl.float32) * (1.0 / (1 << FRAC)), FAST)
    mag = tl.where(log == -(1 << (BITS - 2)), 0.0, mag)
    return tl.where(negative, -mag, mag)


@triton.jit
def _mul(log_a, log_b, BITS: tl.constexpr):
    """Log field of |a b|: the sum, saturated; zero if either is zero."""
    zero = -(1 << (BITS - 2))
    prod = tl.minimum(tl.maximum(log_a + log_b, zero + 1), -zero - 1)
    return tl.where((log_a == zero) | (log_b == zero), zero, prod)


@triton.jit
def _row_sum(log, sb_ptr, t1_ptr, t2_ptr, tex, BITS: tl.constexpr, FRAC: tl.constexpr,
             BACKEND: tl.constexpr, FAST: tl.constexpr, SB_LO: tl.constexpr,
             SB_STEPS: tl.constexpr, SPLIT: tl.constexpr, T1_LAST: tl.constexpr,
             BLOCK_M: tl.constexpr, LOG2_D: tl.constexpr):
    """LNS sum over each row of positive terms (log fields; padding holds the zero field): a
    pairwise tree of LOG2_D levels of ``add_fields``."""
    for _ in tl.static_range(LOG2_D):
        pairs = tl.reshape(log, [BLOCK_M, log.shape[1] // 2, 2])
        a, b = tl.split(pairs)
        positive = tl.zeros(a.shape, tl.int32) != 0
        _, log = add_fields(positive, a, positive, b, sb_ptr, t1_ptr, t2_ptr, tex, BITS, FRAC,
                            BACKEND, FAST, SB_LO, SB_STEPS, SPLIT, T1_LAST)
    return tl.reshape(log, [BLOCK_M])


@triton.jit
def _read_clip(log, log_n2, log_c, margin, BITS: tl.constexpr):
    """(row log fields, log field of |x|^2) scaled by 2^(-e 2^-f), e = ceil((L(c|x|^2) + margin)
    / 2) where positive, so that c|x|^2 <= 2^(-margin 2^-f); exact in the log domain."""
    zero = -(1 << (BITS - 2))
    e = tl.maximum((log_c + log_n2 + margin + 1) >> 1, 0)
    e = tl.where(log_n2 == zero, 0, e)
    log = tl.where(log == zero, zero, tl.maximum(log - e[:, None], zero + 1))
    return log, tl.where(log_n2 == zero, zero, tl.maximum(log_n2 - 2 * e, zero + 1))


@triton.jit(do_not_specialize=["tex", "log_c", "margin"])
def _mobius_kernel(x_ptr, y_ptr, out_ptr, sb_ptr, t1_ptr, t2_ptr, tex, M, D, log_c, margin,
                   sqrt_c, r_out, BITS: tl.constexpr, FRAC: tl.constexpr, BACKEND: tl.constexpr,
                   FAST: tl.constexpr, SB_LO: tl.constexpr, SB_STEPS: tl.constexpr,
                   SPLIT: tl.constexpr, T1_LAST: tl.constexpr, BLOCK_M: tl.constexpr,
                   BLOCK_D: tl.constexpr, LOG2_D: tl.constexpr, WIDE: tl.constexpr):
    offs, mask = row_tile(M, D, BLOCK_M, BLOCK_D, WIDE)
    x = load_rows(x_ptr, offs, mask, tl.float32)
    y = load_rows(y_ptr, offs, mask, tl.float32)
    bad = tl.max(tl.where((tl.abs(x) < _INF) & (tl.abs(y) < _INF), 0, 1), 1) > 0
    neg_x, log_x = _encode(x, BITS, FRAC, FAST)
    neg_y, log_y = _encode(y, BITS, FRAC, FAST)
    xx = _row_sum(_mul(log_x, log_x, BITS), sb_ptr, t1_ptr, t2_ptr, tex, BITS, FRAC, BACKEND,
                  FAST, SB_LO, SB_STEPS, SPLIT, T1_LAST, BLOCK_M, LOG2_D)
    yy = _row_sum(_mul(log_y, log_y, BITS), sb_ptr, t1_ptr, t2_ptr, tex, BITS, FRAC, BACKEND,
                  FAST, SB_LO, SB_STEPS, SPLIT, T1_LAST, BLOCK_M, LOG2_D)
    log_x, xx = _read_clip(log_x, xx, log_c, margin, BITS)
    log_y, yy = _read_clip(log_y, yy, log_c, margin, BITS)
    # s = x + y and c|s|^2
    neg_s, log_s = add_fields(neg_x, log_x, neg_y, log_y, sb_ptr, t1_ptr, t2_ptr, tex, BITS,
                              FRAC, BACKEND, FAST, SB_LO, SB_STEPS, SPLIT, T1_LAST)
    ss = _row_sum(_mul(log_s, log_s, BITS), sb_ptr, t1_ptr, t2_ptr, tex, BITS, FRAC, BACKEND,
                  FAST, SB_LO, SB_STEPS, SPLIT, T1_LAST, BLOCK_M, LOG2_D)
    css = _mul(ss, log_c, BITS)
    # g = 1 - c|.|^2 (> 0 after the read clip): 1 has the log field 0
    one = tl.zeros([BLOCK_M], tl.int32)
    plus = one != 0
    _, gx = add_fields(plus, one, ~plus, _mul(xx, log_c, BITS), sb_ptr, t1_ptr, t2_ptr, tex,
                       BITS, FRAC, BACKEND, FAST, SB_LO, SB_STEPS, SPLIT, T1_LAST)
    _, gy = add_fields(plus, one, ~plus, _mul(yy, log_c, BITS), sb_ptr, t1_ptr, t2_ptr, tex,
                       BITS, FRAC, BACKEND, FAST, SB_LO, SB_STEPS, SPLIT, T1_LAST)
    _, den = add_fields(plus, _mul(gx, gy, BITS), plus, css, sb_ptr, t1_ptr, t2_ptr, tex, BITS,
                        FRAC, BACKEND, FAST, SB_LO, SB_STEPS, SPLIT, T1_LAST)
    # numerator g_x s + c|s|^2 x, divided by den (> 0: a log subtraction)
    neg_o, log_o = add_fields(neg_s, _mul(log_s, gx[:, None], BITS), neg_x,
                              _mul(log_x, css[:, None], BITS), sb_ptr, t1_ptr, t2_ptr, tex,
                              BITS, FRAC, BACKEND, FAST, SB_LO, SB_STEPS, SPLIT, T1_LAST)
    o = _decode(neg_o, _mul(log_o, -den[:, None], BITS), BITS, FRAC, FAST)
    # output guard, in float32: sqrt(c)|o| <= r_out
    norm = sqrt_rn(tl.sum(o * o, 1)) * sqrt_c
    o = o * (r_out / tl.maximum(norm, r_out))[:, None]
    o = tl.where(bad[:, None], _INF - _INF, o)  # NaN (a NaN constexpr trips Triton's checks)
    tl.store(out_ptr + offs, o.to(out_ptr.dtype.element_ty), mask=mask)


def _check(x: torch.Tensor, y: torch.Tensor, c: float, frac_bits: int, backend: str) -> None:
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in _DTYPES:
            raise ValueError(f"{name} must be float32, bfloat16 or float16 (the LNS kernel "
                             f"encodes from float32), got {t.dtype}")
    if x.shape != y.shape or x.dtype != y.dtype:
        raise ValueError(f"x and y must share shape and dtype, got {tuple(x.shape)} {x.dtype} "
                         f"and {tuple(y.shape)} {y.dtype}")
    if x.dim() == 0 or not 1 <= x.shape[-1] <= MAX_DIM:
        raise ValueError(f"points need a last dimension of 1..{MAX_DIM} coordinates, got shape "
                         f"{tuple(x.shape)}")
    if isinstance(c, bool) or not isinstance(c, (int, float)) or not (math.isfinite(c) and c > 0):
        raise ValueError(f"c must be a finite number > 0 (curvature -c), got {c!r}")
    if isinstance(frac_bits, bool) or not isinstance(frac_bits, int) \
            or not 0 <= frac_bits <= MAX_FRAC_BITS:
        raise ValueError(f"frac_bits must be an int in 0..{MAX_FRAC_BITS}, got {frac_bits!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if torch.is_grad_enabled() and (x.requires_grad or y.requires_grad):
        raise ValueError("LNS mobius_add is forward only (no gradient); call it under "
                         "torch.no_grad() or on tensors that do not require grad")
    check_device(x, backend, "x")
    check_device(y, backend, "y")


def mobius_add(x: torch.Tensor, y: torch.Tensor, c: float, *, frac_bits: int = 10,
               backend: str = "triton", fast: bool | None = None,
               config: tuple[int, int] | None = None) -> torch.Tensor:
    """x ⊕ y (points of shape (..., D), D <= 4096) in LNS arithmetic with ``frac_bits``
    fractional log bits, by ``backend`` ("triton", "texture", "mufu": how sb/db are evaluated).

    ``fast`` (default: on CUDA) picks the MUFU approximations for the encode/decode ex2/lg2 and
    the "mufu" Gaussian logarithms; ``config`` = (elements of a tensor per program, warps)
    overrides the launch configuration (benchmarks). Forward only; result of x's dtype.
    """
    _check(x, y, c, frac_bits, backend)
    xr, yr = as_rows(x), as_rows(y)
    m, d = xr.shape
    out = torch.empty_like(x)
    if not m:
        return out
    tile, warps = config or (_TILE, _WARPS)
    block_d = triton.next_power_of_2(d)
    block_m = max(1, min(tile // block_d, triton.next_power_of_2(m)))
    scale = 1 << frac_bits
    margin = max(1, math.ceil(-2 * math.log2(read_radius(x.dtype)) * scale))
    tables, constexprs = kernel_args(frac_bits, backend, x.device)
    _mobius_kernel[(triton.cdiv(m, block_m),)](
        xr, yr, out, *tables, m, d, round(math.log2(c) * scale), margin, math.sqrt(c),
        1.0 - ball_eps(x.dtype), BITS=_LOG_BITS, **constexprs,
        FAST=x.is_cuda if fast is None else bool(fast), BLOCK_M=block_m, BLOCK_D=block_d,
        LOG2_D=block_d.bit_length() - 1, WIDE=x.numel() >= 2**31, num_warps=warps)
    return out
