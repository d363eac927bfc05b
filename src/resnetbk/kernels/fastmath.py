"""Fast and accurate float32 transcendentals as Triton device functions (``@triton.jit``).

Other kernels (the Poincaré / Lorentz elementwise kernels) call these inside their own bodies;
each helper takes ``FAST: tl.constexpr``:

* ``FAST=True``: PTX approximation instructions of the special-function unit (MUFU) through
  ``tl.inline_asm_elementwise``. GPU only: Triton's interpreter runs no inline PTX.
* ``FAST=False``: a portable path made of ``tl.exp2``, ``tl.sqrt_rn``, ``/``, integer bit
  operations and short polynomials. The interpreter (``TRITON_INTERPRET=1``, numpy float32: the
  CPU tests) runs this path, and compiled it stays within a few float32 ulp although ``/``
  lowers to ``div.full.f32`` (<= 2 ulp) and ``tl.exp2`` to ``ex2.approx.ftz.f32`` (2 ulp; both
  checked in the sm_90 PTX of Triton 3.9). Logarithms do not use ``tl.log2``: it lowers to
  libdevice's accurate ``log2f`` in Triton 3.9, but nothing pins that (``tl.sqrt`` lowers to
  ``sqrt.approx``), so they are reduced by hand, branch-free: x = 2^k m with m in
  [0.707, 1.414) from the bits, then ``ln(1 + f) = f - (f^2/2 - s (f^2/2 + R(s^2)))``,
  ``s = f / (2 + f)`` (the atanh series, fdlibm's form; R a 3-term fit), relatively accurate
  down to f = 0.

Error bounds, relative (``|y - f(x)| / |f(x)|`` against float64 on the same float32 input; eps
= 2^-23, so n ulp <= n eps). *spec*: what NVIDIA documents for the instruction (PTX ISA, or the
CUDA programming guide for the intrinsic that compiles to it); *design*: what the construction
allows with the GPU's approximate ``/`` and ``ex2``; *interp*: the maximum measured under the
interpreter (3 x 20k random inputs over the ranges of ``tests/kernels/test_fastmath.py``). The
tests assert twice the spec (FAST) and the design bound plus about one eps (portable); the GPU
maxima are printed by the tests (``pytest -s``) and, for tanh, by ``bench/fastmath_gpu.py``.

============  ==========================================  ===================================
helper        FAST=True                                   FAST=False
============  ==========================================  ===================================
tanh          ``tanh.approx.f32``; spec 2^-11 (others     a + a z P(z), z = a^2, for |x| <
              measured ~1.1e-5 = 2^-16.5 on sm_75+)       0.55, else 1 - 2 / (e^{2|x|} + 1)
                                                          (+-1 without NaN for huge |x|);
                                                          design 5 eps, interp 1.4 eps
tanh_ex2_rcp  ``ex2.approx.ftz`` + ``rcp.approx.ftz``:    same with tl.exp2 and /; x itself
              the seed's pre-Turing software tanh,        for |x| < 0.005, so design 2^-16,
              (1 - e) / (1 + e), e = 2^{-2|x| log2 e};    interp 8.3e-6 (= x^2/3 at 0.005)
              derived 1.3e-5 (2 ulp of e at |x| = 0.005)
exp2          ``ex2.approx.ftz.f32``; spec 2 ulp          ``tl.exp2``: 2 ulp, interp 1.6 eps
              (subnormal results flushed to 0)            (compiled: also flushes subnormals)
log2          ``lg2.approx.ftz.f32``; spec absolute       k + ln(m) log2(e): design 3 eps,
              2^-22 on [0.5, 2] (so no relative           relative also next to x = 1;
              accuracy next to 1), 2 ulp elsewhere        interp 1.0 eps
sqrt          ``sqrt.approx.f32``; ~1-2 ulp               ``tl.sqrt_rn``: correctly rounded
rsqrt         ``rsqrt.approx.f32``; spec 2^-22.9          1 / sqrt_rn: design 2.5 eps,
                                                          interp 0.75 eps
rcp           ``rcp.approx.ftz.f32``; spec 1 ulp          ``1 / x``: div.full, 2 ulp
log1p         polynomial form for x in (-0.29, 0.41)      u = 1 + x reduced by hand, plus
              (``rcp.approx`` for its division), else     Kahan's correction c = (x - (u -
              lg2.approx(1 + x) ln 2 + c (Kahan's         1)) / u: design 3 eps, interp 1.1
              correction, below): derived 5 eps           eps
artanh        0.5 log1p(2|x| / (1 - |x|)), odd; inf at    same: design 6 eps, interp 1.7 eps
              |x| = 1: derived 8 eps
acosh         t = x - 1, log1p(t + sqrt(t (t + 2))) for   same: design 4 eps, interp 1.7 eps
              x < 8192, else ln(x) + ln 2 (no t^2
              overflow); x < 1 read as 1: derived 8 eps
exp           ``ex2.approx.ftz(x log2 e)``; spec 2 +      Cody-Waite x = n ln 2 + r,
              1.173 |x| ulp (CUDA's ``__expf``: the       2^{r log2 e} times 2^n built from
              rounding of x log2 e grows with |x|)        bits (inf above 88.72, gradual
                                                          underflow): design 3 eps, interp
                                                          0.9 eps
============  ==========================================  ===================================

Kahan's trick for log1p, ``ln(u) * x / (u - 1)``, needs a log that is relatively accurate next to
u = 1, which ``lg2.approx`` is not (absolute 2^-22: 17% relative at x = 1e-6). So tiny x go
through the polynomial in both modes, and the correction enters additively, ``ln(u) + (x - (u -
1)) / u``: the same first-order correction, valid for all x.

Packed half forms (GPU only; sm_90 has both, no FAST switch): ``tanh_bf16x2(x)`` /
``tanh_f16x2(x)`` round x to bfloat16 / float16 and run ``tanh.approx.bf16x2`` /
``tanh.approx.f16x2``: one instruction for two elements, error about one unit of the output
format (the tests allow 2^-7 for bfloat16, 2^-9 for float16). Whether they help on an H200 is
what ``bench/fastmath_gpu.py`` measures.

When to use FAST: only where the output dtype's precision hides the approximation (bfloat16 /
float16 outputs: tanh.approx's 2^-11 is below a bfloat16 ulp), or where the result feeds a
bounded quantity that is clamped or projected anyway (a gate, a point pulled back into the
ball). Never for float32 outputs that must match torch to twice torch's own error: those use
FAST=False. All MUFU functions share one unit (16 results/clock/SM on Hopper), and a standalone
elementwise op is bound by memory bandwidth, so FAST pays only inside fused, compute-heavy
kernels.

Ranges: float32 in, float32 out (packed forms: bfloat16 / float16 out). The ``.ftz`` forms flush
subnormal inputs and results to 0; the portable logarithms rescale subnormal arguments. NaN
propagates (``acosh`` keeps it through its clamp). :func:`apply` launches one helper over a
tensor (the tests use it).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = [
    "FUNCTIONS",
    "PACKED",
    "acosh",
    "apply",
    "artanh",
    "exp",
    "exp2",
    "log1p",
    "log2",
    "rcp",
    "rsqrt",
    "sqrt",
    "tanh",
    "tanh_bf16x2",
    "tanh_ex2_rcp",
    "tanh_f16x2",
]

# Triton decides interpreter vs compiled when @triton.jit runs (at import of this module).
_INTERPRETED: bool = bool(triton.knobs.runtime.interpret)

_INF = tl.constexpr(float("inf"))
_LN2 = tl.constexpr(0.6931471805599453)
_LOG2E = tl.constexpr(1.4426950408889634)
_TWO_LOG2E = tl.constexpr(2.8853900817779268)
_MINUS_TWO_LOG2E = tl.constexpr(-2.8853900817779268)
# Cody-Waite split of ln 2: _LN2_HI has 15 significant bits, so n * _LN2_HI is exact for
# |n| < 512 (all exponents of float32).
_LN2_HI = tl.constexpr(0.693145751953125)
_LN2_LO = tl.constexpr(1.4286068203094173e-06)
# Bit pattern of ~1/sqrt(2): subtracting it centres the reduced mantissa on 1, m in [0.707, 1.414).
_SQRT_HALF_BITS = tl.constexpr(0x3F3504F3)
_MIN_NORMAL = tl.constexpr(1.1754943508222875e-38)
_TWO_POW_23 = tl.constexpr(8388608.0)

# ln((1 + s) / (1 - s)) = 2 s + s z Q(z), z = s^2 <= 0.0295 (|f| <= sqrt(2) - 1): weighted
# minimax fit, relative error of ln below 1e-9 before float32 rounding.
_LG1 = tl.constexpr(0.6666678190231323)
_LG2 = tl.constexpr(0.39976614713668823)
_LG3 = tl.constexpr(0.2989855110645294)

# tanh(a) = a + a z P(z), z = a^2, a < 0.55: weighted minimax fit, relative error 1e-9 before
# float32 rounding (0.6 eps after).
_TANH_SMALL = tl.constexpr(0.55)
_TH0 = tl.constexpr(-0.33333319425582886)
_TH1 = tl.constexpr(0.13332602381706238)
_TH2 = tl.constexpr(-0.05385386571288109)
_TH3 = tl.constexpr(0.021077798679471016)
_TH4 = tl.constexpr(-0.006282536778599024)

# Below this |x| the ex2 + rcp tanh returns x (relative error x^2/3 < 8.4e-6): (1 - e) cancels.
_EX2RCP_SMALL = tl.constexpr(4.997253418e-3)
# acosh: above this, ln(2x) - acosh(x) = 1/(4x^2) + ... is far below float32 resolution.
_ACOSH_LARGE = tl.constexpr(8192.0)


# --------------------------------------------------------------------------- PTX primitives


@triton.jit
def _ex2_approx(x):
    return tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=f,f", [x],
                                     dtype=tl.float32, is_pure=True, pack=1)


@triton.jit
def _lg2_approx(x):
    return tl.inline_asm_elementwise("lg2.approx.ftz.f32 $0, $1;", "=f,f", [x],
                                     dtype=tl.float32, is_pure=True, pack=1)


@triton.jit
def _rcp_approx(x):
    return tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=f,f", [x],
                                     dtype=tl.float32, is_pure=True, pack=1)


# --------------------------------------------------------------------------- basic helpers


@triton.jit
def rcp(x, FAST: tl.constexpr):
    """1 / x. FAST: ``rcp.approx.ftz.f32`` (1 ulp); portable: ``/`` (div.full, <= 2 ulp)."""
    if FAST:
        return _rcp_approx(x)
    else:
        return 1.0 / x


@triton.jit
def sqrt(x, FAST: tl.constexpr):
    """sqrt(x). FAST: ``sqrt.approx.f32``; portable: ``tl.sqrt_rn`` (correctly rounded)."""
    if FAST:
        return tl.inline_asm_elementwise("sqrt.approx.f32 $0, $1;", "=f,f", [x],
                                         dtype=tl.float32, is_pure=True, pack=1)
    else:
        return tl.sqrt_rn(x)


@triton.jit
def rsqrt(x, FAST: tl.constexpr):
    """1 / sqrt(x). FAST: ``rsqrt.approx.f32`` (2^-22.9); portable: 1 / sqrt_rn(x)."""
    if FAST:
        return tl.inline_asm_elementwise("rsqrt.approx.f32 $0, $1;", "=f,f", [x],
                                         dtype=tl.float32, is_pure=True, pack=1)
    else:
        return 1.0 / tl.sqrt_rn(x)


@triton.jit
def exp2(x, FAST: tl.constexpr):
    """2^x. FAST: ``ex2.approx.ftz.f32`` (2 ulp, subnormal results -> 0); portable: tl.exp2."""
    if FAST:
        return _ex2_approx(x)
    else:
        return tl.exp2(x)


@triton.jit
def _log1p_reduced(f, FAST: tl.constexpr):
    """ln(1 + f) for |f| <= sqrt(2) - 1 (u = 1 + f in [0.707, 1.414]), relatively accurate
    down to f = 0: s = f / (2 + f), ln(1 + f) = f - (f^2/2 - s (f^2/2 + R)), R = z Q(z)."""
    s = f * rcp(2.0 + f, FAST)
    z = s * s
    r = z * (_LG1 + z * (_LG2 + z * _LG3))
    hfsq = 0.5 * f * f
    return f - (hfsq - s * (hfsq + r))


@triton.jit
def _ln_parts(x):
    """(k, g) with ln(x) = k ln2 + g, |g| <= ln(2)/2, for finite x > 0 (portable: integer
    bit operations, no tl.log2). Subnormal x are rescaled by 2^23 first."""
    tiny = x < _MIN_NORMAL
    x = tl.where(tiny, x * _TWO_POW_23, x)
    bits = x.to(tl.int32, bitcast=True)
    k = (bits - _SQRT_HALF_BITS) >> 23  # arithmetic shift: floor
    m = (bits - (k << 23)).to(tl.float32, bitcast=True)  # in [0.707, 1.414)
    g = _log1p_reduced(m - 1.0, False)  # m - 1 is exact (Sterbenz)
    kf = k.to(tl.float32) - tl.where(tiny, 23.0, 0.0)
    return kf, g


@triton.jit
def _log_special(u, res):
    """res where u is finite and > 0; ln's values elsewhere: +inf, -inf at 0, NaN below 0."""
    res = tl.where(u < _INF, res, u)
    # NaN as inf - inf: a NaN global constexpr would fail Triton's global-value check
    # (nan != nan) when two kernels use it.
    return tl.where(u > 0.0, res, tl.where(u == 0.0, -_INF, _INF - _INF))


@triton.jit
def log2(x, FAST: tl.constexpr):
    """log2(x). FAST: ``lg2.approx.ftz.f32`` (absolute 2^-22 on [0.5, 2], 2 ulp elsewhere);
    portable: k + ln(m) log2(e), relatively accurate also next to x = 1."""
    if FAST:
        return _lg2_approx(x)
    else:
        k, g = _ln_parts(x)
        return _log_special(x, k + g * _LOG2E)


@triton.jit
def log1p(x, FAST: tl.constexpr):
    """ln(1 + x) for x >= -1, relatively accurate for tiny x (see the module docstring)."""
    u = 1.0 + x
    # First-order correction for the rounding of u = 1 + x (Kahan): ln(1 + x) = ln(u) + c.
    c = (x - (u - 1.0)) * rcp(u, FAST)
    if FAST:
        small = _log1p_reduced(x, True)
        big = _lg2_approx(u) * _LN2 + c
        res = tl.where((x > -0.2928932) & (x < 0.41421356), small, big)
    else:
        k, g = _ln_parts(u)
        res = k * _LN2_HI + (g + (k * _LN2_LO + c))
    return _log_special(u, res)


@triton.jit
def artanh(x, FAST: tl.constexpr):
    """artanh(x) = 0.5 log1p(2|x| / (1 - |x|)), odd; for |x| < 1 (inf at |x| = 1)."""
    a = tl.abs(x)
    t = 0.5 * log1p(2.0 * a * rcp(1.0 - a, FAST), FAST)
    return tl.where(x < 0.0, -t, t)


@triton.jit
def acosh(x, FAST: tl.constexpr):
    """acosh(x) for x >= 1; x < 1 is read as 1 (acosh = 0)."""
    x = tl.where(x < 1.0, 1.0, x)  # keeps NaN
    t = x - 1.0  # exact for x <= 2
    near = log1p(t + sqrt(t * (t + 2.0), FAST), FAST)
    # Large x: acosh(x) = ln(2x) to float32 precision, without forming t^2.
    if FAST:
        far = (_lg2_approx(x) + 1.0) * _LN2
    else:
        k, g = _ln_parts(x)
        far = _log_special(x, (k + 1.0) * _LN2_HI + (g + (k + 1.0) * _LN2_LO))
    return tl.where(x < _ACOSH_LARGE, near, far)


@triton.jit
def exp(x, FAST: tl.constexpr):
    """e^x. FAST: ``ex2.approx.ftz(x log2 e)`` (2 + 1.173|x| ulp); portable: Cody-Waite."""
    if FAST:
        return _ex2_approx(x * _LOG2E)
    else:
        # Beyond [-104, 89] the result is 0 or inf anyway; clamping keeps n in int range.
        xc = tl.where(x > 89.0, 89.0, tl.where(x < -104.0, -104.0, x))
        n = tl.floor(xc * _LOG2E + 0.5)
        r = (xc - n * _LN2_HI) - n * _LN2_LO  # |r| <= ln(2)/2 + tiny
        p = tl.exp2(r * _LOG2E)
        # 2^n as two normal powers of two built from bits: exact, and the final product
        # rounds once (correct overflow to inf and gradual underflow).
        ni = n.to(tl.int32)
        n1 = ni >> 1
        s1 = ((n1 + 127) << 23).to(tl.float32, bitcast=True)
        s2 = ((ni - n1 + 127) << 23).to(tl.float32, bitcast=True)
        return tl.where(x == x, (p * s1) * s2, x)


@triton.jit
def tanh(x, FAST: tl.constexpr):
    """tanh(x). FAST: ``tanh.approx.f32`` (relative 2^-11 spec); portable: a few ulp for all
    x, tiny ones included, +-1 without NaN for huge |x|."""
    if FAST:
        return tl.inline_asm_elementwise("tanh.approx.f32 $0, $1;", "=f,f", [x],
                                         dtype=tl.float32, is_pure=True, pack=1)
    else:
        a = tl.abs(x)
        z = a * a
        p = _TH0 + z * (_TH1 + z * (_TH2 + z * (_TH3 + z * _TH4)))
        small = a + a * (z * p)
        # 1 - 2/(e + 1) >= 0.5 here, so the subtraction loses nothing; e = inf gives 1.
        e = tl.exp2(a * _TWO_LOG2E)
        big = 1.0 - 2.0 / (e + 1.0)
        t = tl.where(a < _TANH_SMALL, small, big)
        return tl.where(x < 0.0, -t, t)


@triton.jit
def tanh_ex2_rcp(x, FAST: tl.constexpr):
    """The software tanh of pre-Turing GPUs: (1 - e)/(1 + e), e = 2^{-2|x| log2 e}, from one
    ex2 and one rcp (FAST: the .approx.ftz instructions; portable: tl.exp2 and /); x itself for
    |x| < 0.005. Accuracy class of tanh.approx (about 1e-5 relative), not a few ulp."""
    a = tl.abs(x)
    e = exp2(a * _MINUS_TWO_LOG2E, FAST)
    r = rcp(1.0 + e, FAST)
    t = r - e * r  # (1 - e) r: one FMA when compiled
    t = tl.where(a < _EX2RCP_SMALL, a, t)
    return tl.where(x < 0.0, -t, t)


@triton.jit
def tanh_bf16x2(x):
    """tanh of x rounded to bfloat16, two elements per ``tanh.approx.bf16x2`` (GPU, sm_90)."""
    return tl.inline_asm_elementwise("tanh.approx.bf16x2 $0, $1;", "=r,r", [x.to(tl.bfloat16)],
                                     dtype=tl.bfloat16, is_pure=True, pack=2)


@triton.jit
def tanh_f16x2(x):
    """tanh of x rounded to float16, two elements per ``tanh.approx.f16x2`` (GPU, sm_75+)."""
    return tl.inline_asm_elementwise("tanh.approx.f16x2 $0, $1;", "=r,r", [x.to(tl.float16)],
                                     dtype=tl.float16, is_pure=True, pack=2)


# --------------------------------------------------------------------------- launcher

FUNCTIONS = ("tanh", "tanh_ex2_rcp", "exp2", "log2", "sqrt", "rsqrt", "rcp", "log1p", "artanh",
             "acosh", "exp")
PACKED: dict[str, torch.dtype] = {"tanh_bf16x2": torch.bfloat16, "tanh_f16x2": torch.float16}
_BLOCK = 1024


@triton.jit
def _apply_kernel(x_ptr, y_ptr, n, OP: tl.constexpr, FAST: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=1.0)  # 1.0: inside every helper's domain
    if OP == "tanh":
        y = tanh(x, FAST)
    elif OP == "tanh_ex2_rcp":
        y = tanh_ex2_rcp(x, FAST)
    elif OP == "exp2":
        y = exp2(x, FAST)
    elif OP == "log2":
        y = log2(x, FAST)
    elif OP == "sqrt":
        y = sqrt(x, FAST)
    elif OP == "rsqrt":
        y = rsqrt(x, FAST)
    elif OP == "rcp":
        y = rcp(x, FAST)
    elif OP == "log1p":
        y = log1p(x, FAST)
    elif OP == "artanh":
        y = artanh(x, FAST)
    elif OP == "acosh":
        y = acosh(x, FAST)
    elif OP == "exp":
        y = exp(x, FAST)
    elif OP == "tanh_bf16x2":
        y = tanh_bf16x2(x)
    else:
        y = tanh_f16x2(x)
    tl.store(y_ptr + offs, y, mask=mask)


def apply(name: str, x: torch.Tensor, *, fast: bool = False,
          out: torch.Tensor | None = None) -> torch.Tensor:
    """Apply helper ``name`` elementwise to ``x`` in one launch (for tests and debugging).

    ``name`` is one of :data:`FUNCTIONS` (float32 ``x``; ``fast`` picks the PTX or the portable
    path) or of :data:`PACKED` (``x`` of that dtype; always PTX). PTX paths need a CUDA tensor;
    CPU tensors run under Triton's interpreter (``TRITON_INTERPRET=1``), portable path only.
    ``out`` (same shape, dtype and device as ``x``, contiguous) receives the result.
    """
    if name in PACKED:
        want = PACKED[name]
        fast = True
    elif name in FUNCTIONS:
        want = torch.float32
    else:
        raise ValueError(f"unknown fastmath helper {name!r}; expected one of "
                         f"{', '.join(FUNCTIONS + tuple(PACKED))}")
    if x.dtype != want:
        raise ValueError(f"{name} takes {want} input; got {x.dtype}")
    if x.is_cuda:
        if _INTERPRETED:
            raise ValueError("CUDA tensors cannot run under TRITON_INTERPRET=1")
    elif not _INTERPRETED:
        raise ValueError("CPU tensors run only under Triton's interpreter (TRITON_INTERPRET=1 "
                         "set before importing resnetbk.kernels.fastmath)")
    elif fast:
        why = "fast=True" if name in FUNCTIONS else "a packed form"
        raise ValueError(f"{name} ({why}) runs inline PTX, which needs a CUDA device; the "
                         "interpreter runs only the portable paths (fast=False)")
    x = x.contiguous()
    if out is None:
        out = torch.empty_like(x)
    elif out.shape != x.shape or out.dtype != x.dtype or out.device != x.device:
        raise ValueError(f"out must match x: shape {tuple(x.shape)}, {x.dtype}, {x.device}; got "
                         f"shape {tuple(out.shape)}, {out.dtype}, {out.device}")
    elif not out.is_contiguous():
        raise ValueError("out must be contiguous")
    n = x.numel()
    if n:
        _apply_kernel[(triton.cdiv(n, _BLOCK),)](x, out, n, OP=name, FAST=bool(fast),
                                                 BLOCK=_BLOCK)
    return out
