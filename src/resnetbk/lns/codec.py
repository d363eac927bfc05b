"""LNS codes: the format, encoding and decoding.

A real number x is stored as its sign and a fixed-point log2 of its magnitude, so that a
multiplication is an integer addition. A format has ``bits`` in all (4..32) and
``frac_bits`` fractional bits of the log. The layout of one code, as a ``bits``-wide pattern:

    bit  bits-1          sign: 1 for negative values
    bits bits-2 .. 0     L, the log field: a (bits-1)-bit two's-complement integer;
                         the magnitude is 2^(L / 2^frac_bits)

The most negative log field, L = -2^(bits-2), is reserved: with the sign bit clear it is the
zero code (the pattern 01000...0, integer value 2^(bits-2)); with the sign bit set (a
"negative zero") it is not a valid code and is rejected. Every other pattern is a nonzero
value, so the representable magnitudes are 2^(L / 2^frac_bits) for
-(2^(bits-2) - 1) <= L <= 2^(bits-2) - 1, symmetric about 1.0 (which is L = 0, the code 0).

A code is held in the smallest signed container that fits: int16 for bits <= 16, int32 up to
32. The container holds the pattern read as a signed ``bits``-bit integer (sign-extended), so
a negative value has a negative code and the 16-bit pattern is the int16 itself. Codes of a
narrower format must lie in [-2^(bits-1), 2^(bits-1)).

Encoding rounds once, to the nearest L in the log domain (ties to even L), evaluated in
float64: the relative error of a round trip is at most 2^(2^-(frac_bits+1)) - 1 (half a
log-ulp). Magnitudes outside the representable range saturate to the largest or smallest
magnitude (a tiny nonzero value never becomes zero; nothing wraps around); only an exact zero
is encoded as zero. NaN and Inf have no code and raise.

The default format (16 bits, 10 fractional) spans 2^(±16383/1024), about 1.527e-5 to
6.549e4 (close to float16's normal range), with relative spacing 2^(1/1024) - 1 = 6.77e-4 and a
round-trip error of at most 2^(1/2048) - 1 = 3.39e-4.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# Largest log2 magnitude a format may reach: its values must be finite float64 numbers, since
# the exact arithmetic evaluates in float64.
_MAX_LOG2 = 1024


@dataclass(frozen=True)
class LNSFormat:
    """An LNS code format: ``bits`` in all (sign + log field), ``frac_bits`` of them fractional.

    The log field has bits-1 bits, so frac_bits <= bits-2 leaves at least one magnitude each
    side of 1.0; the largest magnitude 2^(2^(bits-2-frac_bits)) must stay below 2^1024 (a finite
    float64), which needs bits - 2 - frac_bits <= 10 (e.g. frac_bits >= 20 for 32 bits).
    """

    bits: int = 16
    frac_bits: int = 10

    def __post_init__(self) -> None:
        for name in ("bits", "frac_bits"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"LNS format: {name} must be an int, got {value!r}")
        if not 4 <= self.bits <= 32:
            raise ValueError(f"LNS format: bits must be in 4..32, got {self.bits}")
        if not 0 <= self.frac_bits <= self.bits - 2:
            raise ValueError(
                f"LNS format: frac_bits must be in 0..bits-2 = 0..{self.bits - 2} (the log field "
                f"has bits-1 = {self.bits - 1} bits, one of them its sign), got {self.frac_bits}"
            )
        if 2 ** (self.bits - 2 - self.frac_bits) > _MAX_LOG2:
            raise ValueError(
                f"LNS format: bits={self.bits}, frac_bits={self.frac_bits} spans "
                f"2^(±{2 ** (self.bits - 2 - self.frac_bits)}), beyond float64 (2^±1024); "
                f"use frac_bits >= {self.bits - 12}"
            )

    @property
    def dtype(self) -> torch.dtype:
        """Integer dtype of the codes: int16 for bits <= 16, else int32."""
        return torch.int16 if self.bits <= 16 else torch.int32

    @property
    def scale(self) -> int:
        """2^frac_bits: log field units per unit of log2."""
        return 1 << self.frac_bits

    @property
    def max_log(self) -> int:
        """Largest log field, 2^(bits-2) - 1; the smallest nonzero magnitude has -max_log."""
        return (1 << (self.bits - 2)) - 1

    @property
    def zero_code(self) -> int:
        """The code of 0: sign bit clear, the reserved log field -2^(bits-2)."""
        return 1 << (self.bits - 2)

    @property
    def max_value(self) -> float:
        """Largest representable magnitude, 2^(max_log / 2^frac_bits)."""
        return 2.0 ** (self.max_log / self.scale)

    @property
    def min_value(self) -> float:
        """Smallest nonzero magnitude, 2^(-max_log / 2^frac_bits) = 1 / max_value."""
        return 2.0 ** (-self.max_log / self.scale)

    @property
    def log_ulp(self) -> float:
        """Spacing of the log2 grid, 2^-frac_bits."""
        return 2.0**-self.frac_bits

    @property
    def relative_spacing(self) -> float:
        """Ratio minus one of neighbouring magnitudes, 2^(2^-frac_bits) - 1."""
        return math.expm1(self.log_ulp * math.log(2.0))

    @property
    def max_rel_error(self) -> float:
        """Bound of one rounding (half a log-ulp): |encoded / x - 1| <= 2^(2^-(frac+1)) - 1."""
        return math.expm1(0.5 * self.log_ulp * math.log(2.0))


def check_codes(codes: torch.Tensor, fmt: LNSFormat, name: str = "codes") -> None:
    """Raise ValueError unless ``codes`` is a tensor of valid codes of ``fmt``.

    Codes are integers of the format's dtype (a float tensor or an int32 tensor given to a
    16-bit format is a mix-up, not something to convert), within the format's range when it is
    narrower than its container, and never the invalid negative zero.
    """
    if not isinstance(codes, torch.Tensor):
        raise ValueError(f"LNS {name} must be a torch.Tensor, got {type(codes).__name__}")
    if codes.dtype != fmt.dtype:
        raise ValueError(
            f"LNS {name} of a {fmt.bits}-bit format must have dtype {fmt.dtype}, got {codes.dtype}"
        )
    half = 1 << (fmt.bits - 1)
    bad = codes == -fmt.zero_code  # the negative zero: sign bit set, reserved log field
    if fmt.bits < torch.iinfo(fmt.dtype).bits:
        bad |= (codes < -half) | (codes >= half)
    if bool(bad.any()):
        raise ValueError(
            f"LNS {name} hold invalid codes for bits={fmt.bits}, frac_bits={fmt.frac_bits}: valid "
            f"codes lie in [{-half}, {half - 1}] and exclude {-fmt.zero_code} (negative zero)"
        )


def unpack(codes: torch.Tensor, fmt: LNSFormat) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split valid codes into (negative, log field L as int64, is_zero)."""
    c = codes.to(torch.int64)
    half = fmt.zero_code  # 2^(bits-2): sign bit of the log field
    field = c & ((half << 1) - 1)
    log = (field ^ half) - half
    return c < 0, log, log == -half


def pack(negative: torch.Tensor, log: torch.Tensor, zero: torch.Tensor,
         fmt: LNSFormat) -> torch.Tensor:
    """Codes from signs, int64 log fields and a zero mask; the logs saturate to the format.

    Saturating here (not wrapping) is what keeps an overflowing product or sum at the largest
    magnitude and an underflowing one at the smallest nonzero magnitude.
    """
    log = log.clamp(-fmt.max_log, fmt.max_log)
    field = log & ((fmt.zero_code << 1) - 1)
    code = field - negative.to(torch.int64) * (1 << (fmt.bits - 1))
    return torch.where(zero, fmt.zero_code, code).to(fmt.dtype)


def encode(x: torch.Tensor, bits: int = 16, frac_bits: int = 10) -> torch.Tensor:
    """LNS codes of a floating tensor: sign and round-to-nearest log2 magnitude, saturated.

    Evaluated in float64 whatever the input dtype. +-0 encode to the zero code; magnitudes
    beyond the format's range saturate to its largest or smallest magnitude. NaN and Inf raise
    ValueError (they have no code, and clamping them would hide the bug that made them).
    """
    fmt = LNSFormat(bits, frac_bits)
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"LNS encode needs a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"LNS encode needs a floating tensor, got dtype {x.dtype}")
    x = x.to(torch.float64)
    if bool(x.isnan().any()):
        raise ValueError("LNS encode: input holds NaN, which has no LNS code")
    if bool(x.isinf().any()):
        raise ValueError("LNS encode: input holds Inf, which has no LNS code (finite values "
                         "beyond the range saturate)")
    mag = x.abs()
    zero = mag == 0
    # log2 of the zeros is -inf: replaced by 1.0 (log 0) before the log, masked by `zero` after.
    log2 = torch.where(zero, 1.0, mag).log2()
    log = torch.round(log2 * fmt.scale).clamp(-fmt.max_log, fmt.max_log).to(torch.int64)
    return pack(x < 0, log, zero, fmt)


def decode(codes: torch.Tensor, bits: int = 16, frac_bits: int = 10,
           dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Values of LNS codes, evaluated in float64 and rounded once to ``dtype``.

    The float64 value is ``exp2`` of the log, faithfully rounded: CPU and CUDA results can differ
    in the last bit (measured on an H200), encode is bit-identical on both.

    float64 (the default) holds every value of every valid format. A narrower dtype must hold
    the format's whole range with frac_bits + 2 significant bits at its smallest value, so that
    the final rounding stays well inside a log-ulp (the default format fits float32, not
    float16, whose subnormals near 1.5e-5 keep only 8 bits); otherwise ValueError, rather than
    a silent Inf, 0 or coarse subnormal.
    """
    fmt = LNSFormat(bits, frac_bits)
    if not dtype.is_floating_point:
        raise ValueError(f"LNS decode needs a floating output dtype, got {dtype}")
    info = torch.finfo(dtype)
    smallest = info.tiny * info.eps * 2.0 ** (fmt.frac_bits + 2)
    if fmt.max_value > info.max or fmt.min_value < smallest:
        raise ValueError(
            f"LNS decode: bits={bits}, frac_bits={frac_bits} spans {fmt.min_value:.4g}.."
            f"{fmt.max_value:.4g}, beyond what {dtype} holds to frac_bits + 2 bits; "
            "decode to float64"
        )
    check_codes(codes, fmt)
    negative, log, zero = unpack(codes, fmt)
    mag = torch.exp2(log.to(torch.float64) / fmt.scale)
    value = torch.where(negative, -mag, mag)
    return torch.where(zero, 0.0, value).to(dtype)
