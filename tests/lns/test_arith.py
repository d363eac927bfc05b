"""LNS arithmetic: exact multiply/divide/integer power, square root, and add/subtract rounded
once (checked against float64 and, where float64 itself cancels, a 60-digit decimal reference).
Inputs are fresh random codes (the `gen` fixture)."""

from __future__ import annotations

import math
import os
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

import pytest
import torch

from resnetbk import lns
from resnetbk.lns import LNSFormat, decode, encode

FORMATS = [(8, 3), (16, 10), (32, 20)]
EPS = torch.finfo(torch.float64).eps


def random_codes(fmt: LNSFormat, n: int, gen: torch.Generator, span: float = 1.0,
                 zero_frac: float = 0.0) -> torch.Tensor:
    """n codes with log fields uniform in [-span*max_log, span*max_log], random signs and a
    fraction of zeros. Built by encoding grid values, which is exact (test_codec)."""
    m = int(span * fmt.max_log)
    log = torch.randint(-m, m + 1, (n,), generator=gen).double()
    sign = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0).double()
    x = sign * torch.exp2(log / fmt.scale)
    x = torch.where(torch.rand(n, generator=gen) < zero_frac, 0.0, x)
    return encode(x, fmt.bits, fmt.frac_bits)


def fields(codes: torch.Tensor, fmt: LNSFormat) -> tuple[list[int], list[int]]:
    """(signs as +-1 or 0 for zero, log fields) read back through decode."""
    v = decode(codes, fmt.bits, fmt.frac_bits)
    log = torch.where(v == 0, 0.0, torch.round(v.abs().log2() * fmt.scale))
    return v.sign().long().tolist(), log.long().tolist()


def exact_sum(a: torch.Tensor, b: torch.Tensor, fmt: LNSFormat, negate_b: bool) -> torch.Tensor:
    """encode(a +- b) of the exact sum of the decoded operands, from a 60-digit decimal
    evaluation (independent of float64 cancellation); saturated like encode."""
    sa, la = fields(a, fmt)
    sb, lb = fields(b, fmt)
    out = []
    with localcontext() as ctx:
        ctx.prec = 60
        ln2 = Decimal(2).ln()
        for s1, l1, s2, l2 in zip(sa, la, sb, lb, strict=True):
            s2 = -s2 if negate_b else s2
            total = (s1 * (Decimal(l1) / fmt.scale * ln2).exp()
                     + s2 * (Decimal(l2) / fmt.scale * ln2).exp())
            if total == 0:
                out.append(0.0)
                continue
            log = (abs(total).ln() / ln2 * fmt.scale).to_integral_value(ROUND_HALF_EVEN)
            log = max(-fmt.max_log, min(fmt.max_log, int(log)))
            out.append(math.copysign(2.0 ** (log / fmt.scale), total))
    return encode(torch.tensor(out, dtype=torch.float64), fmt.bits, fmt.frac_bits)


# ---------------------------------------------------------------- multiply, divide, powers


@pytest.mark.parametrize(("bits", "frac_bits"), FORMATS)
def test_mul_div_are_exact(bits: int, frac_bits: int, gen: torch.Generator) -> None:
    """Away from saturation the code arithmetic equals the rounded float64 product/quotient of
    the decoded values, which is exact: the result lies on the grid."""
    fmt = LNSFormat(bits, frac_bits)
    a = random_codes(fmt, 5000, gen, span=0.5, zero_frac=0.05)
    b = random_codes(fmt, 5000, gen, span=0.5)
    da, db = decode(a, bits, frac_bits), decode(b, bits, frac_bits)
    assert torch.equal(lns.mul(a, b, bits, frac_bits), encode(da * db, bits, frac_bits))
    assert torch.equal(lns.div(a, b, bits, frac_bits), encode(da / db, bits, frac_bits))
    assert torch.equal(lns.mul(a, b, bits, frac_bits), lns.mul(b, a, bits, frac_bits))
    # (a * b) / b == a exactly (no rounding anywhere)
    assert torch.equal(lns.div(lns.mul(a, b, bits, frac_bits), b, bits, frac_bits), a)


@pytest.mark.parametrize(("bits", "frac_bits"), FORMATS)
def test_mul_div_saturate(bits: int, frac_bits: int) -> None:
    fmt = LNSFormat(bits, frac_bits)
    big, small = fmt.max_value, fmt.min_value
    c = encode(torch.tensor([big, -big, small, -small], dtype=torch.float64), bits, frac_bits)
    top, neg_top, bottom, neg_bottom = c
    assert lns.mul(top, top, bits, frac_bits) == top
    assert lns.mul(neg_top, top, bits, frac_bits) == neg_top
    assert lns.mul(bottom, neg_bottom, bits, frac_bits) == neg_bottom  # not zero, not huge
    assert lns.div(top, bottom, bits, frac_bits) == top
    assert lns.div(bottom, neg_top, bits, frac_bits) == neg_bottom


def test_mul_broadcasts(gen: torch.Generator) -> None:
    fmt = LNSFormat()
    a = random_codes(fmt, 12, gen, span=0.4).reshape(3, 1, 4)
    b = random_codes(fmt, 5, gen, span=0.4).reshape(5, 1)
    out = lns.mul(a, b)
    assert out.shape == (3, 5, 4) and out.dtype == torch.int16
    ae, be = torch.broadcast_tensors(a, b)
    assert torch.equal(out, lns.mul(ae.contiguous(), be.contiguous()))
    assert lns.add(a, b).shape == (3, 5, 4)


def test_div_by_zero_raises() -> None:
    one, zero = encode(torch.tensor([1.0, 0.0]))
    assert lns.div(zero, one) == zero
    with pytest.raises(ValueError, match="division by zero"):
        lns.div(one, zero)
    with pytest.raises(ValueError, match="division by zero"):
        lns.pow(zero, -2)


@pytest.mark.parametrize(("bits", "frac_bits"), FORMATS)
@pytest.mark.parametrize("n", [-3, -1, 0, 1, 2, 3, 5, 4.0])
def test_integer_pow_is_exact(bits: int, frac_bits: int, n: float,
                              gen: torch.Generator) -> None:
    fmt = LNSFormat(bits, frac_bits)
    a = random_codes(fmt, 3000, gen, span=0.19, zero_frac=0.0 if n < 0 else 0.05)
    da = decode(a, bits, frac_bits)
    expected = encode(da ** int(n), bits, frac_bits)  # exact: the result is on the grid
    assert torch.equal(lns.pow(a, n, bits, frac_bits), expected)


def test_pow_special_cases() -> None:
    x = encode(torch.tensor([0.0, 2.0, -2.0, 1.0, 0.5]))
    big, small = LNSFormat().max_value, LNSFormat().min_value
    assert decode(lns.pow(x, 0)).tolist() == [1.0] * 5  # 0 ** 0 = 1, as in torch
    assert decode(lns.pow(x, 10**30)).tolist() == [0.0, big, big, 1.0, small]
    assert decode(lns.pow(x, 10**30 + 1)).tolist() == [0.0, big, -big, 1.0, small]
    assert decode(lns.pow(x[1:], -(10**30) - 1)).tolist() == [small, -small, 1.0, big]
    assert decode(lns.pow(x[[0, 1, 3]], 1e300)).tolist() == [0.0, big, 1.0]
    with pytest.raises(ValueError, match="not real"):
        lns.pow(x, 0.5)
    with pytest.raises(ValueError, match="finite"):
        lns.pow(x, float("nan"))
    with pytest.raises(ValueError, match="int or float"):
        lns.pow(x, torch.tensor(2.0))  # type: ignore[arg-type]


@pytest.mark.parametrize(("bits", "frac_bits"), FORMATS)
def test_real_pow_within_bound(bits: int, frac_bits: int, gen: torch.Generator) -> None:
    fmt = LNSFormat(bits, frac_bits)
    a = lns.pow(random_codes(fmt, 3000, gen, span=0.2), 2, bits, frac_bits)  # positive
    da = decode(a, bits, frac_bits)
    for p in (0.37, -1.5, 1 / 3):
        y = decode(lns.pow(a, p, bits, frac_bits), bits, frac_bits)
        assert (y / da**p - 1).abs().max() <= fmt.max_rel_error + 8 * EPS


@pytest.mark.parametrize(("bits", "frac_bits"), FORMATS)
def test_sqrt(bits: int, frac_bits: int, gen: torch.Generator) -> None:
    fmt = LNSFormat(bits, frac_bits)
    a = random_codes(fmt, 3000, gen, span=0.5, zero_frac=0.05)
    magnitude = lns.mul(a, a, bits, frac_bits)  # even log fields, no saturation
    a_abs = encode(decode(a, bits, frac_bits).abs(), bits, frac_bits)
    assert torch.equal(lns.sqrt(magnitude, bits, frac_bits), a_abs)  # exact
    pos = encode(decode(a, bits, frac_bits).abs(), bits, frac_bits)
    y = decode(lns.sqrt(pos, bits, frac_bits), bits, frac_bits)
    x = decode(pos, bits, frac_bits)
    assert (y[x > 0] / x[x > 0].sqrt() - 1).abs().max() <= fmt.max_rel_error + 8 * EPS
    assert bool((y[x == 0] == 0).all())
    with pytest.raises(ValueError, match="negative"):
        lns.sqrt(encode(torch.tensor([4.0, -1.0])))


# ---------------------------------------------------------------- add, subtract


@pytest.mark.parametrize(("bits", "frac_bits"), FORMATS)
def test_add_sub_within_bound(bits: int, frac_bits: int, gen: torch.Generator) -> None:
    """Every sign combination over the full range (zeros, saturation included): the result is
    the sum rounded once, |decode(r) / s - 1| <= half a log-ulp, where s is the float64 sum
    brought into the representable range (saturation rounds to the nearest end)."""
    fmt = LNSFormat(bits, frac_bits)
    n = 20000
    a = random_codes(fmt, n, gen, zero_frac=0.02)
    b = random_codes(fmt, n, gen, zero_frac=0.02)
    # Force close magnitudes in a quarter of the pairs: the db singular band.
    close = torch.rand(n, generator=gen) < 0.25
    shift = torch.randint(-4, 5, (n,), generator=gen).double()
    da = decode(a, bits, frac_bits)
    near = da.abs() * torch.exp2(shift / fmt.scale) * torch.where(
        torch.rand(n, generator=gen) < 0.5, -1.0, 1.0).double()
    b = torch.where(close, encode(near, bits, frac_bits), b)
    db = decode(b, bits, frac_bits)
    for op, s in ((lns.add, da + db), (lns.sub, da - db)):
        y = decode(op(a, b, bits, frac_bits), bits, frac_bits)
        assert torch.equal(y == 0, s == 0)  # zero exactly when the sum is exactly zero
        nz = s != 0
        target = s[nz].sign() * s[nz].abs().clamp(fmt.min_value, fmt.max_value)
        # float64's own cancellation error in s, relative to s (written so that an s that
        # overflowed to Inf, saturated anyway, gives no NaN)
        slack = 4 * EPS * (da[nz].abs() / s[nz].abs() + db[nz].abs() / s[nz].abs())
        err = (y[nz] / target - 1).abs()
        assert bool((err <= fmt.max_rel_error + 8 * EPS + slack).all())


@pytest.mark.parametrize(("bits", "frac_bits"), FORMATS)
def test_add_sub_equal_exactly_rounded_sum(bits: int, frac_bits: int,
                                           gen: torch.Generator) -> None:
    """The exact backend returns encode(exact sum) code for code, also in the db band
    (a ~ -b*(1 + tiny): log fields 1..3 apart) and at saturation (60-digit reference)."""
    fmt = LNSFormat(bits, frac_bits)
    n = 600
    a = random_codes(fmt, n, gen, zero_frac=0.02)
    b = random_codes(fmt, n, gen, zero_frac=0.02)
    da = decode(a, bits, frac_bits)
    k = torch.randint(-3, 4, (n,), generator=gen).double()
    band = encode(-da * torch.exp2(k / fmt.scale), bits, frac_bits)  # opposite sign, close
    for x, y in ((a, b), (a, band), (band, a)):
        assert torch.equal(lns.add(x, y, bits, frac_bits), exact_sum(x, y, fmt, False))
        assert torch.equal(lns.sub(x, y, bits, frac_bits), exact_sum(x, y, fmt, True))


@pytest.mark.parametrize(("bits", "frac_bits"), FORMATS)
def test_add_special_cases(bits: int, frac_bits: int, gen: torch.Generator) -> None:
    fmt = LNSFormat(bits, frac_bits)
    a = random_codes(fmt, 2000, gen)
    da = decode(a, bits, frac_bits)
    neg_a = encode(-da, bits, frac_bits)
    zero = torch.full_like(a, fmt.zero_code)
    assert bool((lns.add(a, neg_a, bits, frac_bits) == fmt.zero_code).all())  # a + (-a)
    assert bool((lns.sub(a, a, bits, frac_bits) == fmt.zero_code).all())
    assert torch.equal(lns.add(a, zero, bits, frac_bits), a)
    assert torch.equal(lns.add(zero, a, bits, frac_bits), a)
    assert torch.equal(lns.sub(zero, a, bits, frac_bits), neg_a)
    assert torch.equal(lns.sub(a, zero, bits, frac_bits), a)
    assert bool((lns.add(zero, zero, bits, frac_bits) == fmt.zero_code).all())
    # a + a = 2a exactly when it does not saturate (sb(0) = 1).
    two_a = lns.mul(a, encode(torch.tensor(2.0), bits, frac_bits), bits, frac_bits)
    assert torch.equal(lns.add(a, a, bits, frac_bits), two_a)
    # Saturation: max + max stays max; the smallest magnitudes cancelling to below the range
    # give the smallest magnitude (the exact result is nonzero), never zero or a wrapped code.
    c = encode(torch.tensor([fmt.max_value, fmt.min_value, -fmt.min_value * 2.0 ** fmt.log_ulp],
                            dtype=torch.float64), bits, frac_bits)
    assert lns.add(c[0], c[0], bits, frac_bits) == c[0]
    assert decode(lns.add(c[1], c[2], bits, frac_bits), bits, frac_bits) == -fmt.min_value


@pytest.mark.parametrize(("bits", "frac_bits"), FORMATS)
def test_add_commutes(bits: int, frac_bits: int, gen: torch.Generator) -> None:
    fmt = LNSFormat(bits, frac_bits)
    a = random_codes(fmt, 5000, gen, zero_frac=0.05)
    b = random_codes(fmt, 5000, gen, zero_frac=0.05)
    assert torch.equal(lns.add(a, b, bits, frac_bits), lns.add(b, a, bits, frac_bits))
    assert torch.equal(decode(lns.sub(a, b, bits, frac_bits), bits, frac_bits),
                       -decode(lns.sub(b, a, bits, frac_bits), bits, frac_bits))


# ---------------------------------------------------------------- validation


def test_backends() -> None:
    """The Triton backends (tested in tests/kernels/test_lns_add.py) refuse what they cannot
    run: CPU codes outside Triton's interpreter, the texture backend without CUDA or CuPy,
    formats wider than 16 bits; unknown backends raise."""
    a = encode(torch.tensor([1.0, 2.0]))
    a32 = encode(torch.tensor([1.0, 2.0]), 32, 20)
    for backend in ("triton", "texture", "mufu"):
        for op in (lns.add, lns.sub):
            with pytest.raises(ValueError, match="at most 16 bits"):
                op(a32, a32, 32, 20, backend=backend)
            if os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
                with pytest.raises(ValueError, match=r"(cuda|CUDA) tensors|CuPy"):
                    op(a, a, backend=backend)
    with pytest.raises(ValueError, match="unknown backend"):
        lns.add(a, a, backend="cuda")


def test_ops_reject_bad_codes() -> None:
    a = encode(torch.tensor([1.0, 2.0]))
    for op in (lns.mul, lns.div, lns.add, lns.sub):
        with pytest.raises(ValueError, match=r"operand b .*dtype torch\.int16"):
            op(a, a.to(torch.int32))
        with pytest.raises(ValueError, match=r"operand a .*dtype torch\.int16"):
            op(a.double(), a)
        with pytest.raises(ValueError, match="negative zero"):
            op(a, torch.tensor([-16384, 0], dtype=torch.int16))
        with pytest.raises(ValueError, match="invalid codes"):
            op(a, torch.tensor([128, 0], dtype=torch.int16), bits=8, frac_bits=3)
        with pytest.raises(ValueError, match="bits must be in"):
            op(a, a, bits=40)
    for unary in (lns.sqrt, lambda c: lns.pow(c, 2)):
        with pytest.raises(ValueError, match=r"dtype torch\.int16"):
            unary(a.long())


@pytest.mark.gpu
def test_cuda_matches_cpu(gen: torch.Generator) -> None:
    fmt = LNSFormat()
    a = random_codes(fmt, 10000, gen, zero_frac=0.05)
    b = random_codes(fmt, 10000, gen, zero_frac=0.05)
    for op in (lns.mul, lns.add, lns.sub):
        assert torch.equal(op(a.cuda(), b.cuda()).cpu(), op(a, b))
    assert torch.equal(lns.sqrt(lns.mul(a, a).cuda()).cpu(), lns.sqrt(lns.mul(a, a)))
