"""Arithmetic on LNS codes (layout in ``resnetbk.lns.codec``).

Multiply, divide and integer powers are integer operations on the log fields, hence exact:
the result is the code of the exact result, unless that lies beyond the format's range, where
it saturates. Square roots and real powers scale the log and round it once (ties to even).

Addition goes through the Gaussian logarithms. For |a| >= |b| and z = log2|b| - log2|a| <= 0,

    log2|a + b| = log2|a| + sb(z),   sb(z) = log2(1 + 2^z)     (same signs)
    log2|a - b| = log2|a| + db(z),   db(z) = log2|1 - 2^z|     (opposite signs)

and the sign is that of a. db is singular at z = 0 (a + b with b close to -a: catastrophic
cancellation). The ``"exact"`` backend evaluates both in float64 and rounds the log once:
sb(z) = log1p(2^z) / ln 2 and db(z) = log2(-expm1(z ln 2)). Written with expm1, db carries no
cancellation: 1 - 2^z is computed to float64 relative accuracy even for the smallest nonzero
|z| = 2^-frac_bits, so the singular band needs no special path; z = 0 exactly (equal
magnitudes, opposite signs) is the zero code. The result is encode(a + b) of the exact sum of
the decoded operands, i.e. within half a log-ulp: relative error <= 2^(2^-(frac_bits+1)) - 1
(up to float64 evaluation error, ~1e-12 of a log-ulp, which can only flip a near-tie).
Sums beyond the range saturate like encode: a nonzero sum never becomes zero, a large one never
wraps.

The other backends (``resnetbk.kernels.lns_add``: Triton table gather with a cotransformation
for db, the sb table in a CUDA texture, MUFU ex2/lg2) run one Triton kernel on CUDA codes of at
most 16 bits and are at most one code off this result, with the bounds of docs/LNS.md.
"""

from __future__ import annotations

import importlib.util
import math

import torch

from resnetbk.lns.codec import LNSFormat, check_codes, pack, unpack

_BACKENDS = ("exact", "triton", "texture", "mufu")

# An integer exponent of magnitude 2^32 already saturates every nonzero log field (|L| >= 1, and
# the largest log field is below 2^31), so larger ones are clamped to it: L * n stays in int64.
_MAX_INT_EXPONENT = 1 << 32


def _operands(a: torch.Tensor, b: torch.Tensor, bits: int, frac_bits: int) -> LNSFormat:
    fmt = LNSFormat(bits, frac_bits)
    check_codes(a, fmt, "operand a")
    check_codes(b, fmt, "operand b")
    return fmt


def mul(a: torch.Tensor, b: torch.Tensor, bits: int = 16, frac_bits: int = 10) -> torch.Tensor:
    """a * b: log fields added, signs XORed; exact unless it saturates. 0 * x = 0.

    Broadcasts like torch; codes must be of the format's dtype.
    """
    fmt = _operands(a, b, bits, frac_bits)
    neg_a, log_a, zero_a = unpack(a, fmt)
    neg_b, log_b, zero_b = unpack(b, fmt)
    return pack(neg_a ^ neg_b, log_a + log_b, zero_a | zero_b, fmt)


def div(a: torch.Tensor, b: torch.Tensor, bits: int = 16, frac_bits: int = 10) -> torch.Tensor:
    """a / b: log fields subtracted, signs XORed; exact unless it saturates. 0 / x = 0.

    A zero divisor raises ValueError ("division by zero"): LNS has no Inf to return, and
    saturating to the largest magnitude would pass the bug on as a plausible number.
    """
    fmt = _operands(a, b, bits, frac_bits)
    neg_a, log_a, zero_a = unpack(a, fmt)
    neg_b, log_b, zero_b = unpack(b, fmt)
    if bool(zero_b.any()):
        raise ValueError("LNS div: division by zero (the divisor holds the zero code)")
    return pack(neg_a ^ neg_b, log_a - log_b, zero_a, fmt)


def pow(codes: torch.Tensor, exponent: float, bits: int = 16,
        frac_bits: int = 10) -> torch.Tensor:
    """codes ** exponent in the log domain: the log field times the exponent.

    An integer exponent (an int, or a float with an integral value) is exact unless it saturates,
    and keeps the sign of a negative base when it is odd. Any other real exponent rounds
    L * exponent once to the nearest log field (ties to even); a negative base then raises
    ValueError (the power is not real). x ** 0 = 1 (0 ** 0 too, as in torch); 0 ** n = 0 for
    n > 0 and raises ValueError ("division by zero") for n < 0.
    """
    fmt = LNSFormat(bits, frac_bits)
    check_codes(codes, fmt)
    if isinstance(exponent, bool) or not isinstance(exponent, (int, float)):
        raise ValueError(f"LNS pow: the exponent must be an int or float, got {exponent!r}")
    if not math.isfinite(exponent):
        raise ValueError(f"LNS pow: the exponent must be finite, got {exponent}")
    negative, log, zero = unpack(codes, fmt)
    if exponent < 0 and bool(zero.any()):
        raise ValueError("LNS pow: division by zero (a zero base with a negative exponent)")
    if float(exponent).is_integer():
        odd = int(exponent) % 2 == 1
        n = max(-_MAX_INT_EXPONENT, min(_MAX_INT_EXPONENT, int(exponent)))
        return pack(negative & odd, log * n, zero & (n != 0), fmt)
    if bool((negative & ~zero).any()):
        raise ValueError(f"LNS pow: a negative base to the non-integer power {exponent} "
                         "is not real")
    return _scale_log(log, exponent, zero, fmt)


def sqrt(codes: torch.Tensor, bits: int = 16, frac_bits: int = 10) -> torch.Tensor:
    """Square root: the log field halved. Exact for even log fields; an odd one is a tie,
    rounded to the even neighbour (error exactly half a log-ulp). Negative values raise
    ValueError; sqrt(0) = 0."""
    fmt = LNSFormat(bits, frac_bits)
    check_codes(codes, fmt)
    negative, log, zero = unpack(codes, fmt)
    if bool((negative & ~zero).any()):
        raise ValueError("LNS sqrt: the input holds negative values")
    return _scale_log(log, 0.5, zero, fmt)


def _scale_log(log: torch.Tensor, factor: float, zero: torch.Tensor,
               fmt: LNSFormat) -> torch.Tensor:
    """Positive codes with log fields round(log * factor), saturated before the int cast."""
    scaled = torch.round(log.to(torch.float64) * factor).clamp(-fmt.max_log, fmt.max_log)
    return pack(torch.zeros_like(zero), scaled.to(torch.int64), zero, fmt)


def add(a: torch.Tensor, b: torch.Tensor, bits: int = 16, frac_bits: int = 10,
        backend: str = "exact") -> torch.Tensor:
    """a + b through the Gaussian logarithms sb/db (module docstring); broadcasts like torch.

    backend "exact" rounds the exact sum once (error <= half a log-ulp, any device). "triton"
    (sb table + db cotransformation), "texture" (the sb table in a CUDA texture, CuPy) and
    "mufu" (ex2/lg2 approximations) run one Triton kernel on CUDA codes of at most 16 bits and
    are at most one code off the exact result (``resnetbk.kernels.lns_add``, docs/LNS.md).
    """
    fmt = _operands(a, b, bits, frac_bits)
    if _table_backend(backend):
        from resnetbk.kernels import lns_add

        return lns_add.add(a, b, fmt, backend)
    return _add(*unpack(a, fmt), *unpack(b, fmt), fmt)


def sub(a: torch.Tensor, b: torch.Tensor, bits: int = 16, frac_bits: int = 10,
        backend: str = "exact") -> torch.Tensor:
    """a - b: ``add`` with the sign of b flipped (same backends and error bound)."""
    fmt = _operands(a, b, bits, frac_bits)
    if _table_backend(backend):
        from resnetbk.kernels import lns_add

        return lns_add.add(a, b, fmt, backend, subtract=True)
    neg_b, log_b, zero_b = unpack(b, fmt)
    return _add(*unpack(a, fmt), ~neg_b, log_b, zero_b, fmt)


def _table_backend(backend: str) -> bool:
    """Whether ``backend`` is one of the Triton backends (which need the triton package)."""
    if backend not in _BACKENDS:
        raise ValueError(f"LNS add/sub: unknown backend {backend!r}; choose one of {_BACKENDS}")
    if backend == "exact":
        return False
    if importlib.util.find_spec("triton") is None:
        raise ValueError(f"LNS add/sub backend {backend!r} needs the triton package "
                         "(pip install resnetbk[gpu]); backend='exact' needs none")
    return True


def gauss_sb(z: torch.Tensor) -> torch.Tensor:
    """sb(z) = log2(1 + 2^z) of a float64 tensor, as log1p(2^z) / ln 2 (1 + 2^z never rounded)."""
    return torch.log1p(torch.exp2(z)) / math.log(2.0)


def gauss_db(z: torch.Tensor) -> torch.Tensor:
    """db(z) = log2|1 - 2^z| of a float64 tensor, as log|expm1(z ln 2)| / ln 2: relatively
    accurate next to the singularity at z = 0 (where it is -inf)."""
    return torch.log(torch.expm1(z * math.log(2.0)).abs()) / math.log(2.0)


def _add(neg_a: torch.Tensor, log_a: torch.Tensor, zero_a: torch.Tensor,
         neg_b: torch.Tensor, log_b: torch.Tensor, zero_b: torch.Tensor,
         fmt: LNSFormat) -> torch.Tensor:
    """Exact-backend sum of unpacked operands, rounded once in the log domain (float64)."""
    # A zero operand is given a log below every nonzero one, so that the other operand is the
    # larger; its term is then dropped through `small_zero` rather than trusted to underflow.
    floor = -fmt.max_log - 1
    log_a = torch.where(zero_a, floor, log_a)
    log_b = torch.where(zero_b, floor, log_b)
    a_larger = log_a >= log_b
    hi = torch.where(a_larger, log_a, log_b)
    lo = torch.where(a_larger, log_b, log_a)
    negative = torch.where(a_larger, neg_a, neg_b)
    small_zero = torch.where(a_larger, zero_b, zero_a)
    same_sign = neg_a == neg_b

    z = (lo - hi).to(torch.float64) / fmt.scale  # <= 0, a multiple of the log-ulp
    # db at z = 0 is -inf (the exact cancellation, handled by `cancel`); z = -1 stands in.
    gauss = torch.where(same_sign, gauss_sb(z), gauss_db(torch.where(z == 0, -1.0, z)))
    step = torch.round(gauss * fmt.scale).to(torch.int64)
    log = hi + torch.where(small_zero, 0, step)

    cancel = ~same_sign & (z == 0) & ~small_zero
    return pack(negative, log, (zero_a & zero_b) | cancel, fmt)
