"""LNS addition and subtraction in one Triton elementwise kernel, three ways to get sb and db.

Codes in (int16 containers: formats of at most 16 bits), codes out; the kernel unpacks sign,
log field and zero (layout in ``resnetbk.lns.codec``), forms hi = max(La, Lb), d = hi - lo >= 0
(in log-ulps) and z = -d 2^-f, and returns hi + round(2^f G(z)), saturated, with the sign of the
larger operand, where G is the Gaussian logarithm

    sb(z) = log2(1 + 2^z)   (same signs)        db(z) = log2|1 - 2^z|   (opposite signs).

Zeros and exact cancellation are handled as in the exact backend (a zero operand returns the
other one unchanged, x + (-x) is the zero code, results saturate to the largest / smallest
magnitude and never become zero or wrap). Backends (``add(..., backend=...)``):

* ``"triton"``: sb from a :class:`~resnetbk.kernels.lut.LookupTable` on [-(f+6), 0] gathered and
  linearly interpolated (:func:`~resnetbk.kernels.lut.lerp`), node spacing h = 2^-m with
  m = f//2 + 1 (1025 nodes for f = 10, 37 for f = 3). Below -(f+6) the table is clamped to its
  first node: sb(-(f+6)) < 2^-(f+6)/ln 2 = 0.023 log-ulp, so those sums round to hi exactly.
  db by the cotransformation (Arnold & Coleman): split d = d1 + d2, d2 the low K = (f+5)//2
  bits; with z1 = -d1 2^-f, z2 = -d2 2^-f,

      1 - 2^z = (1 - 2^z1) + 2^z1 (1 - 2^z2)
      =>  db(z) = db(z1) + sb(w),   w = z1 + db(z2) - db(z1) < 0.

  db(z1) and db(z2) take values only on the grid, so they come from two small *exact* tables
  (point values, no interpolation: T1 over the multiples of 2^K up to -(f+6), 129 entries for
  f = 10; T2 over d2 < 2^K, 128 entries), and the only interpolation left is sb's, which is
  smooth. d < 2^K (next to the singularity) is T2[d] itself; d beyond T1 rounds to hi.
* ``"texture"``: the same, with sb read through a CUDA texture object with hardware linear
  filtering (:func:`~resnetbk.kernels.lut.texture_lerp`; CuPy, GPU only); spacing
  2^-max(f//2 + 1, f - 4) keeps the 8-bit weight error below 2^-(f+5).
* ``"mufu"``: no tables: sb = lg2(1 + ex2(z)), db = lg2|1 - ex2(z)|, with the GPU's MUFU
  ``ex2.approx`` / ``lg2.approx`` (``fastmath``, FAST=True); next to z = 0 (|z| < 1/4)
  1 - 2^z comes from -expm1(z ln 2)'s Taylor series instead (no cancellation). Under the
  interpreter (CPU tests) the portable exp2/log2 (FAST=False) run the same formulas.

Error bounds (:func:`error_bound`), in log-ulps (units of 2^-f) of the increment 2^f G before
its rounding, so that a result is at most one code off the exact backend's, and off only where
the exact 2^f G lies within the bound of a rounding tie (what the tests check). u = 2^-24:

* triton: interpolation h^2/8 max|sb''| 2^f = 2^(f-2m) ln2/32 (sb'' <= ln2/4), plus the clamped
  tail 2^-6/ln 2, plus float32 rounding (8f + 24) u 2^f (table values up to |db| <= f + 1, the
  sum w, the lerp, the final sum): 0.034 for f = 10, 0.033 for f = 3, 0.16 for f = 14.
* texture: triton's + the weight quantisation 2^-8 h max|sb'| 2^f = 2^(f-m-9): 0.065 (f = 10).
* mufu: ex2 relative 2^-22 and lg2 absolute 2^-22 on [0.5, 2] / relative 2^-22 elsewhere
  (PTX ISA) give |G error| <= 3 2^-20 + 2^-22 |G| (derived at :data:`DB`), |G| <= f + 1:
  2^(f-22) (12 + 1.25 (f + 1)), 0.0063 for f = 10, 0.12 for f = 14.

32-bit codes (frac_bits >= 20) are refused by all three: their log-ulp (<= 2^-20) is below what
float32 evaluation of z, of the table values and of MUFU results can resolve.
"""

from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl

from resnetbk.kernels import fastmath
from resnetbk.kernels.lut import LookupTable, MufuFormula, check_device, lerp, texture_lerp
from resnetbk.lns.arith import gauss_db, gauss_sb
from resnetbk.lns.codec import LNSFormat

__all__ = ["BACKENDS", "DB", "SB", "add", "add_fields", "db_formula", "error_bound",
           "kernel_args", "pack", "sb_formula", "sb_table", "unpack"]

BACKENDS = ("triton", "texture", "mufu")
MAX_BITS = 16
# The sb table starts at -(frac_bits + TAIL_BITS): sb there is 2^-TAIL_BITS / ln 2 log-ulps.
TAIL_BITS = 6
_BLOCK, _WARPS = 2048, 4

_LN2 = tl.constexpr(0.6931471805599453)
# |z| below this: 1 - 2^z from -expm1(z ln 2)'s series (6 terms, truncation < 5.4e-9 relative).
_SERIES_SWITCH = tl.constexpr(0.25)


# --------------------------------------------------------------------------- formulas (MUFU)


@triton.jit
def _one_minus_exp2(z, e):
    """|1 - 2^z| given e = 2^z: 1 - e for |z| >= 1/4, else -expm1(t), t = z ln 2, by its Taylor
    series (no cancellation next to z = 0)."""
    t = z * _LN2
    p = 1.0 / 120.0 + t * (1.0 / 720.0)
    p = 1.0 / 6.0 + t * (1.0 / 24.0 + t * p)
    series = -t * (1.0 + t * (0.5 + t * p))
    return tl.abs(tl.where(tl.abs(z) < _SERIES_SWITCH, series, 1.0 - e))


@triton.jit
def sb_formula(z, FAST: tl.constexpr):
    """sb(z) = log2(1 + 2^z) from one ex2 and one lg2."""
    return fastmath.log2(1.0 + fastmath.exp2(z, FAST), FAST)


@triton.jit
def db_formula(z, FAST: tl.constexpr):
    """db(z) = log2|1 - 2^z| (z != 0) from one ex2 and one lg2, a series next to z = 0."""
    return fastmath.log2(_one_minus_exp2(z, fastmath.exp2(z, FAST)), FAST)


@triton.jit
def _gauss_formula(z, same, FAST: tl.constexpr):
    """sb(z) where ``same``, else db(z): one ex2 and one lg2 per element."""
    e = fastmath.exp2(z, FAST)
    return fastmath.log2(tl.where(same, 1.0 + e, _one_minus_exp2(z, e)), FAST)


# sb, FAST: e = 2^z (1 + d1), |d1| <= 2^-22; 1 + e rounds by 2^-24; d/de log2(1 + e) <= 1/ln 2;
# lg2 on [1, 2]: absolute 2^-22: |error| <= (2^-23 + 2^-24)/ln 2 + 2^-22 < 2^-20 for z <= 0;
# for z > 0 the result exceeds 1 and lg2's relative 2^-22 adds rel_error.
SB = MufuFormula("sb", sb_formula, abs_error=2.0**-20, rel_error=2.0**-22)
# db, FAST: |z| >= 1/4: |1 - e| >= 0.159 carries e's error 2^-22 * 2^z / |1 - 2^z| <= 6.3 2^-22
# relative (+ 2^-24 rounding), i.e. <= 9.4 2^-22 in log2, + lg2's 2^-22 absolute; |z| < 1/4: the
# series is relatively accurate to ~10 u (3.6 2^-22 in log2) and lg2 of an argument below 0.5
# errs by 2^-22 relative to the result. Together: 12 2^-22 absolute + 2^-22 relative.
DB = MufuFormula("db", db_formula, abs_error=3 * 2.0**-20, rel_error=2.0**-22)


# --------------------------------------------------------------------------- the add kernel


@triton.jit
def unpack(code, BITS: tl.constexpr):
    """(negative, log field) of codes as int32; the zero code has the log field -2^(BITS-2),
    below every nonzero one."""
    c = code.to(tl.int32)
    half = 1 << (BITS - 2)
    return c < 0, ((c & (2 * half - 1)) ^ half) - half


@triton.jit
def pack(negative, log, BITS: tl.constexpr):
    """Codes (int32 values, sign-extended) of in-range log fields; -2^(BITS-2) is zero."""
    half = 1 << (BITS - 2)
    code = (log & (2 * half - 1)) - negative.to(tl.int32) * (1 << (BITS - 1))
    return tl.where(log == -half, half, code)


@triton.jit
def gauss_increment(d, same, sb_ptr, t1_ptr, t2_ptr, tex, FRAC: tl.constexpr,
                    BACKEND: tl.constexpr, FAST: tl.constexpr, SB_LO: tl.constexpr,
                    SB_STEPS: tl.constexpr, SPLIT: tl.constexpr, T1_LAST: tl.constexpr):
    """G(z) in float32, z = -d 2^-FRAC (d >= 0 int32): sb where ``same``, else db. Opposite
    signs with d = 0 (db = -inf) give a finite stand-in that the caller discards."""
    z = d.to(tl.float32) * (-1.0 / (1 << FRAC))
    if BACKEND == "mufu":
        return _gauss_formula(tl.where(same | (d > 0), z, -1.0), same, FAST)
    else:
        j1 = d >> SPLIT
        d2 = d & ((1 << SPLIT) - 1)
        t2 = tl.load(t2_ptr + d2, mask=~same, other=0.0)
        t1 = tl.load(t1_ptr + tl.minimum(j1, T1_LAST), mask=~same, other=0.0)
        w = (j1 << SPLIT).to(tl.float32) * (-1.0 / (1 << FRAC)) + t2 - t1
        arg = tl.where(same, z, w)
        if BACKEND == "texture":
            s = texture_lerp(tex, arg, SB_LO, SB_STEPS, -SB_LO * SB_STEPS)
        else:
            s = lerp(sb_ptr, arg, SB_LO, SB_STEPS, -SB_LO * SB_STEPS)
        db = tl.where(j1 > T1_LAST, 0.0, t1 + tl.where(d2 == 0, 0.0, s))
        return tl.where(same, s, tl.where(j1 == 0, t2, db))


@triton.jit
def add_fields(neg_a, log_a, neg_b, log_b, sb_ptr, t1_ptr, t2_ptr, tex, BITS: tl.constexpr,
               FRAC: tl.constexpr, BACKEND: tl.constexpr, FAST: tl.constexpr,
               SB_LO: tl.constexpr, SB_STEPS: tl.constexpr, SPLIT: tl.constexpr,
               T1_LAST: tl.constexpr):
    """(negative, log field) of a + b from unpacked operands (``unpack``): rounded once in the
    log domain, saturated to +-(2^(BITS-2) - 1), zero as the log field -2^(BITS-2)."""
    zero = -(1 << (BITS - 2))
    a_larger = log_a >= log_b
    hi = tl.where(a_larger, log_a, log_b)
    lo = tl.where(a_larger, log_b, log_a)
    same = neg_a == neg_b
    d = hi - lo
    g = gauss_increment(d, same, sb_ptr, t1_ptr, t2_ptr, tex, FRAC, BACKEND, FAST, SB_LO,
                        SB_STEPS, SPLIT, T1_LAST)
    step = tl.floor(g * (1 << FRAC) + 0.5).to(tl.int32)
    log = tl.minimum(tl.maximum(hi + step, zero + 1), -zero - 1)
    log = tl.where(lo == zero, hi, log)  # a zero operand: the other one, unchanged
    log = tl.where(~same & (d == 0), zero, log)  # x + (-x), and 0 + 0 of either sign
    negative = tl.where(a_larger, neg_a, neg_b) & (log != zero)
    return negative, log


@triton.jit(do_not_specialize=["tex"])
def _add_kernel(a_ptr, b_ptr, out_ptr, sb_ptr, t1_ptr, t2_ptr, tex, n, BITS: tl.constexpr,
                FRAC: tl.constexpr, BACKEND: tl.constexpr, FAST: tl.constexpr,
                SB_LO: tl.constexpr, SB_STEPS: tl.constexpr, SPLIT: tl.constexpr,
                T1_LAST: tl.constexpr, SUB: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    neg_a, log_a = unpack(tl.load(a_ptr + offs, mask=mask, other=0), BITS)
    neg_b, log_b = unpack(tl.load(b_ptr + offs, mask=mask, other=0), BITS)
    if SUB:
        neg_b = ~neg_b
    negative, log = add_fields(neg_a, log_a, neg_b, log_b, sb_ptr, t1_ptr, t2_ptr, tex, BITS,
                               FRAC, BACKEND, FAST, SB_LO, SB_STEPS, SPLIT, T1_LAST)
    tl.store(out_ptr + offs, pack(negative, log, BITS).to(out_ptr.dtype.element_ty), mask=mask)


# --------------------------------------------------------------------------- tables


def _sb_step_bits(frac_bits: int, backend: str) -> int:
    """m of the sb table's spacing 2^-m: interpolation error <= 2^-(f+6) (triton); the texture
    also needs its 8-bit weight error 2^-9 h <= 2^-(f+5)."""
    m = frac_bits // 2 + 1
    return max(m, frac_bits - 4) if backend == "texture" else m


def _split_bits(frac_bits: int) -> int:
    """K of the cotransformation: T2 has 2^K entries, T1 about (f + 6) 2^(f-K)."""
    return (frac_bits + 5) // 2


@functools.cache
def sb_table(frac_bits: int, backend: str) -> LookupTable:
    """The sb table of a format's backend ("triton" or "texture"): [-(f+6), 0], spacing 2^-m."""
    steps = 1 << _sb_step_bits(frac_bits, backend)
    lo = -(frac_bits + TAIL_BITS)
    return LookupTable(gauss_sb, lo, 0.0, -lo * steps + 1, mufu=SB, name=f"sb f={frac_bits}")


@functools.cache
def _db_tables(frac_bits: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(T1, T2) in float32 on ``device``: T1[j] = db(-j 2^K 2^-f), j = 1..T1_LAST, and
    T2[j] = db(-j 2^-f), j = 1..2^K - 1 (entry 0 of each is never used; 0 stands in)."""
    split = _split_bits(frac_bits)
    scale = 1 << frac_bits
    t1_last = -(-(frac_bits + TAIL_BITS) * scale // (1 << split))
    t1 = gauss_db(-torch.arange(t1_last + 1, dtype=torch.float64) * (1 << split) / scale)
    t2 = gauss_db(-torch.arange(1 << split, dtype=torch.float64) / scale)
    t1[0] = t2[0] = 0.0
    return t1.to(device=device, dtype=torch.float32), t2.to(device=device, dtype=torch.float32)


def kernel_args(frac_bits: int, backend: str,
                device: torch.device) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                     int], dict[str, object]]:
    """((sb table, T1, T2, texture handle), constexprs) that a kernel calling ``add_fields``
    passes on: FRAC, BACKEND, SB_LO, SB_STEPS, SPLIT, T1_LAST (BITS and FAST are the
    caller's)."""
    sb = sb_table(frac_bits, "texture" if backend == "texture" else "triton")
    t1, t2 = _db_tables(frac_bits, device)
    tex = sb.texture_handle(device) if backend == "texture" else 0
    constexprs = {"FRAC": frac_bits, "BACKEND": backend, "SB_LO": round(sb.lo),
                  "SB_STEPS": round(1 / sb.h), "SPLIT": _split_bits(frac_bits),
                  "T1_LAST": t1.numel() - 1}
    return (sb.table(device), t1, t2, tex), constexprs


def error_bound(backend: str, frac_bits: int) -> float:
    """Bound, in log-ulps, on the error of 2^f G before its rounding (module docstring)."""
    f = frac_bits
    if backend == "mufu":
        return 2.0 ** (f - 22) * (12 + 1.25 * (f + 1))
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    m = _sb_step_bits(f, backend)
    bound = (2.0 ** (f - 2 * m) * math.log(2.0) / 32 + 2.0**-TAIL_BITS / math.log(2.0)
             + (8 * f + 24) * 2.0 ** (f - 24))
    if backend == "texture":
        bound += 2.0 ** (f - m - 9)
    return bound


# --------------------------------------------------------------------------- entry point


def check_backend(fmt: LNSFormat, backend: str) -> None:
    """ValueError for an unknown backend or a format wider than 16 bits."""
    if backend not in BACKENDS:
        raise ValueError(f"LNS backend must be one of {BACKENDS}, got {backend!r}")
    if fmt.bits > MAX_BITS:
        raise ValueError(
            f"LNS backend {backend!r} takes formats of at most {MAX_BITS} bits (int16 codes); "
            f"bits={fmt.bits}: its log-ulp 2^-{fmt.frac_bits} is below what float32 evaluation "
            "resolves. Use backend='exact'")


def add(a: torch.Tensor, b: torch.Tensor, fmt: LNSFormat, backend: str, *,
        subtract: bool = False, fast: bool | None = None) -> torch.Tensor:
    """a + b (a - b with ``subtract``) of valid codes of ``fmt`` (``lns.add`` checks them),
    broadcast like torch, by one Triton kernel. ``fast`` (default: on CUDA) picks the MUFU
    path of the "mufu" backend; the other backends evaluate no transcendental."""
    check_backend(fmt, backend)
    check_device(a, backend, "operand a")
    check_device(b, backend, "operand b")
    a, b = torch.broadcast_tensors(a, b)
    a, b = a.contiguous(), b.contiguous()
    out = torch.empty_like(a)
    if a.numel():
        tables, constexprs = kernel_args(fmt.frac_bits, backend, a.device)
        _add_kernel[(triton.cdiv(a.numel(), _BLOCK),)](
            a, b, out, *tables, a.numel(), BITS=fmt.bits, **constexprs,
            FAST=a.is_cuda if fast is None else bool(fast), SUB=subtract, BLOCK=_BLOCK,
            num_warps=_WARPS)
    return out
