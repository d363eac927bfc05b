"""LNS format, encode and decode: layout, round trip within half a log-ulp, zero, saturation,
validation. Inputs are fresh random draws (the `gen` fixture); references are float64."""

from __future__ import annotations

import math

import pytest
import torch

from resnetbk.lns import LNSFormat, decode, encode

FORMATS = [(8, 3), (16, 10), (32, 20)]


def layout_codes(negative: torch.Tensor, log: torch.Tensor, fmt: LNSFormat) -> torch.Tensor:
    """Codes built from the documented layout, independently of the library: sign in bit
    bits-1, (bits-1)-bit two's-complement log field below, pattern read as a signed
    bits-bit integer."""
    pattern = (log % (1 << (fmt.bits - 1))) + negative.long() * (1 << (fmt.bits - 1))
    signed = torch.where(pattern >= 1 << (fmt.bits - 1), pattern - (1 << fmt.bits), pattern)
    return signed.to(fmt.dtype)


def log_uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    """n float64 magnitudes with log2 uniform in [lo, hi], random signs."""
    t = lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64)
    sign = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0).double()
    return sign * torch.exp2(t)


def test_default_format_range_and_spacing() -> None:
    fmt = LNSFormat()
    assert (fmt.bits, fmt.frac_bits, fmt.dtype) == (16, 10, torch.int16)
    assert fmt.max_value == pytest.approx(65491.65359, rel=1e-9)
    assert fmt.min_value == pytest.approx(1.0 / fmt.max_value, rel=1e-15)
    assert fmt.min_value == pytest.approx(1.52691e-5, rel=1e-5)
    assert fmt.log_ulp == 2.0**-10
    assert fmt.relative_spacing == pytest.approx(2.0 ** (1 / 1024) - 1, rel=1e-12)
    assert fmt.max_rel_error == pytest.approx(2.0 ** (1 / 2048) - 1, rel=1e-12)
    assert fmt.zero_code == 16384
    assert LNSFormat(17, 10).dtype == torch.int32
    assert LNSFormat(8, 3).dtype == torch.int16


@pytest.mark.parametrize(("bits", "frac_bits", "match"), [
    (3, 1, "bits must be in 4..32"),
    (33, 20, "bits must be in 4..32"),
    (16, -1, "frac_bits must be in"),
    (16, 15, "frac_bits must be in"),
    (16, 14.0, "frac_bits must be an int"),
    (True, 2, "bits must be an int"),
    (32, 19, "beyond float64"),
])
def test_bad_format_raises(bits: int, frac_bits: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LNSFormat(bits, frac_bits)
    with pytest.raises(ValueError, match=match):
        encode(torch.ones(2), bits=bits, frac_bits=frac_bits)


def test_layout() -> None:
    """The documented bit patterns of the default format."""
    x = torch.tensor([1.0, 2.0, 0.5, -1.0, -2.0, 0.0, -0.0])
    # 0.5 has log field -1024, i.e. the 15-bit pattern 2^15 - 1024 = 31744.
    expected = [0, 1024, 31744, -32768, -32768 + 1024, 16384, 16384]
    assert encode(x).tolist() == expected
    assert encode(x).dtype == torch.int16


@pytest.mark.parametrize(("bits", "frac_bits"), FORMATS)
def test_encode_matches_layout(bits: int, frac_bits: int, gen: torch.Generator) -> None:
    fmt = LNSFormat(bits, frac_bits)
    log = torch.randint(-fmt.max_log, fmt.max_log + 1, (4000,), generator=gen)
    negative = torch.rand(4000, generator=gen) < 0.5
    x = torch.where(negative, -1.0, 1.0).double() * torch.exp2(log.double() / fmt.scale)
    codes = encode(x, bits, frac_bits)
    assert torch.equal(codes, layout_codes(negative, log, fmt))
    assert torch.equal(decode(codes, bits, frac_bits), x)


@pytest.mark.parametrize(("bits", "frac_bits"), [(8, 3), (16, 10)])
def test_every_code_round_trips(bits: int, frac_bits: int) -> None:
    """encode(decode(c)) == c for every valid code (exhaustive), and decoding is monotone in
    the log field."""
    fmt = LNSFormat(bits, frac_bits)
    codes = torch.arange(-(1 << (bits - 1)), 1 << (bits - 1))
    codes = codes[codes != -fmt.zero_code].to(fmt.dtype)
    values = decode(codes, bits, frac_bits)
    assert torch.equal(encode(values, bits, frac_bits), codes)
    positive = values[values > 0].sort().values
    assert positive[0] == fmt.min_value and positive[-1] == fmt.max_value
    assert (positive[1:] / positive[:-1]).sub(1).sub(fmt.relative_spacing).abs().max() < 1e-12


@pytest.mark.parametrize(("bits", "frac_bits"), FORMATS)
def test_round_trip_error_bound(bits: int, frac_bits: int, gen: torch.Generator) -> None:
    """|decode(encode(x)) / x - 1| <= 2^(2^-(frac+1)) - 1 over 1e-6..1e6 (within the range) and
    over the full range of the format."""
    fmt = LNSFormat(bits, frac_bits)
    full = math.log2(fmt.max_value)
    wide = min(full, math.log2(1e6))
    x = torch.cat([log_uniform(20000, -wide, wide, gen), log_uniform(20000, -full, full, gen)])
    y = decode(encode(x, bits, frac_bits), bits, frac_bits)
    assert torch.equal(y.sign(), x.sign())
    err = (y / x - 1).abs().max().item()
    assert err <= fmt.max_rel_error * (1 + 1e-9)
    assert err >= 0.5 * fmt.max_rel_error  # the bound is tight, not vacuous


def test_round_trip_any_shape_and_dtype(gen: torch.Generator) -> None:
    x = torch.randn(3, 0, 2, generator=gen)
    assert encode(x).shape == (3, 0, 2)
    x = torch.randn(2, 3, 4, generator=gen)
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        xd = x.to(dtype)
        y = decode(encode(xd), dtype=torch.float32)
        assert y.shape == (2, 3, 4) and y.dtype == torch.float32
        rel = (y.double() / xd.double() - 1).abs().max().item()
        assert rel <= LNSFormat().max_rel_error * (1 + 1e-6)
    scalar = encode(torch.tensor(-3.0))
    assert scalar.dim() == 0 and decode(scalar).item() == pytest.approx(-3.0, rel=4e-4)


@pytest.mark.parametrize(("bits", "frac_bits"), FORMATS)
def test_zero_is_exact_and_signs_kept(bits: int, frac_bits: int, gen: torch.Generator) -> None:
    fmt = LNSFormat(bits, frac_bits)
    zeros = encode(torch.tensor([0.0, -0.0], dtype=torch.float64), bits, frac_bits)
    assert zeros.tolist() == [fmt.zero_code] * 2
    assert decode(zeros, bits, frac_bits).tolist() == [0.0, 0.0]
    x = log_uniform(1000, -3, 3, gen)
    assert torch.equal(decode(encode(-x, bits, frac_bits), bits, frac_bits),
                       -decode(encode(x, bits, frac_bits), bits, frac_bits))


@pytest.mark.parametrize(("bits", "frac_bits"), FORMATS)
def test_saturation_never_wraps(bits: int, frac_bits: int, gen: torch.Generator) -> None:
    """Beyond the range, magnitudes stick to the largest/smallest magnitude with their sign: a
    wrapping encoder would turn a huge value tiny (or negative) and a tiny one huge or zero."""
    fmt = LNSFormat(bits, frac_bits)
    tiny = torch.finfo(torch.float64).tiny * torch.finfo(torch.float64).eps  # 2^-1074
    big = torch.finfo(torch.float64).max
    x = torch.tensor([big, -big, min(fmt.max_value * 1.5, big), tiny, -tiny, fmt.min_value / 1.5],
                     dtype=torch.float64)
    y = decode(encode(x, bits, frac_bits), bits, frac_bits)
    m, s = fmt.max_value, fmt.min_value
    assert y.tolist() == [m, -m, m, s, -s, s]
    # Monotone over a sweep far past both ends of the range (a wrap breaks the order).
    lo, hi = math.log2(fmt.min_value) - 20, math.log2(fmt.max_value) + 20
    t = (lo + (hi - lo) * torch.rand(5000, generator=gen, dtype=torch.float64)).sort().values
    lo, hi = max(lo, -1074.0), min(hi, 1023.99)
    t = t.clamp(lo, hi)
    y = decode(encode(torch.exp2(t), bits, frac_bits), bits, frac_bits)
    assert bool((y[1:] >= y[:-1]).all()) and bool((y > 0).all())


def test_encode_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="NaN"):
        encode(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="Inf"):
        encode(torch.tensor([float("-inf"), 1.0]))
    with pytest.raises(ValueError, match="floating tensor"):
        encode(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"torch\.Tensor"):
        encode([1.0, 2.0])  # type: ignore[arg-type]


def test_decode_rejects_bad_codes() -> None:
    with pytest.raises(ValueError, match=r"dtype torch\.int16"):
        decode(torch.tensor([0, 1], dtype=torch.int32))
    with pytest.raises(ValueError, match=r"dtype torch\.int16"):
        decode(torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="negative zero"):
        decode(torch.tensor([0, -16384], dtype=torch.int16))
    with pytest.raises(ValueError, match="invalid codes"):
        decode(torch.tensor([200], dtype=torch.int16), bits=8, frac_bits=3)
    with pytest.raises(ValueError, match="invalid codes"):
        decode(torch.tensor([-129], dtype=torch.int16), bits=8, frac_bits=3)
    with pytest.raises(ValueError, match="floating output dtype"):
        decode(torch.tensor([0], dtype=torch.int16), dtype=torch.int32)


def test_decode_dtype_must_hold_the_range() -> None:
    codes = encode(torch.tensor([1e300, 1e-300], dtype=torch.float64), bits=32, frac_bits=20)
    assert decode(codes, bits=32, frac_bits=20).tolist() == pytest.approx([1e300, 1e-300],
                                                                           rel=1e-6)
    with pytest.raises(ValueError, match="decode to float64"):
        decode(codes, bits=32, frac_bits=20, dtype=torch.float32)
    with pytest.raises(ValueError, match="decode to float64"):
        decode(encode(torch.ones(1)), dtype=torch.float16)
    assert decode(encode(torch.ones(1), 8, 3), 8, 3, dtype=torch.float16).item() == 1.0


@pytest.mark.gpu
def test_cuda_matches_cpu(gen: torch.Generator) -> None:
    x = log_uniform(10000, -15, 15, gen)
    codes = encode(x)
    assert torch.equal(encode(x.cuda()).cpu(), codes)
    # decode is float64 exp2, faithfully rounded on both devices: equal within one ulp (the H200
    # and the CPU libm differ in the last bit for some codes).
    cpu, gpu = decode(codes), decode(codes.cuda()).cpu()
    assert ((gpu - cpu).abs() <= cpu.abs() * 2.0**-52).all()
