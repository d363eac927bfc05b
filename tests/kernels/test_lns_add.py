"""LNS add/sub backends (resnetbk.kernels.lns_add, through lns.add/lns.sub) against the exact
backend, code for code: every result is at most one log-ulp off, and off only where the exact
increment 2^f G(z) lies within the backend's documented bound of a rounding tie; signs, zeros
(x + (-x), a + 0) and saturation are identical. Inputs: every increment d = |La - Lb| of the
tables' range with random magnitudes, random pairs over the whole range (zeros, saturation,
the db band), and all 8-bit pairs."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from resnetbk import lns
from resnetbk.kernels import lns_add
from resnetbk.lns import LNSFormat, decode, encode
from resnetbk.lns.arith import gauss_db, gauss_sb
from resnetbk.lns.codec import unpack

HAS_CUPY = importlib.util.find_spec("cupy") is not None
BACKENDS = ["triton", "mufu",
            pytest.param("texture", marks=[pytest.mark.gpu, pytest.mark.skipif(
                not HAS_CUPY, reason="the texture backend needs CuPy")])]
FORMATS = [(16, 10), (8, 3), (12, 6)]


def _codes(fmt: LNSFormat, log: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Codes of the given log fields and signs (encoding grid values is exact)."""
    sign = torch.where(negative, -1.0, 1.0).double()
    return encode(sign * torch.exp2(log.double() / fmt.scale), fmt.bits, fmt.frac_bits)


def _check_against_exact(a: torch.Tensor, b: torch.Tensor, fmt: LNSFormat, backend: str,
                         device: str, subtract: bool = False) -> int:
    """Compare one backend with the exact one on (a, b); returns the number of off-by-one codes.

    The exact increment of each pair is 2^f G(z) with z = -|La - Lb| 2^-f in float64; a code
    may differ only by one log-ulp and only where that increment lies within the bound of a
    tie (x.5), since below it the backend's 2^f G rounds the same way."""
    op = lns.sub if subtract else lns.add
    got = op(a.to(device), b.to(device), fmt.bits, fmt.frac_bits, backend=backend).cpu()
    want = op(a, b, fmt.bits, fmt.frac_bits)
    neg_g, log_g, zero_g = unpack(got, fmt)
    neg_w, log_w, zero_w = unpack(want, fmt)
    assert torch.equal(zero_g, zero_w)
    assert torch.equal(neg_g[~zero_w], neg_w[~zero_w])
    off = got != want
    assert bool(((log_g - log_w).abs()[off] == 1).all())
    neg_a, log_a, zero_a = unpack(a, fmt)
    neg_b, log_b, zero_b = unpack(b, fmt)
    assert not bool((off & (zero_a | zero_b)).any())  # a zero operand: the other one, exactly
    same = neg_a == (neg_b ^ subtract)
    z = -(log_a - log_b).abs().double() / fmt.scale
    increment = torch.where(same, gauss_sb(z), gauss_db(torch.where(z == 0, -1.0, z))) * fmt.scale
    tie_distance = (increment - increment.floor() - 0.5).abs()
    assert bool((tie_distance[off] <= lns_add.error_bound(backend, fmt.frac_bits)).all())
    return int(off.sum())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("bits", "frac_bits"), FORMATS)
def test_every_increment(bits: int, frac_bits: int, backend: str, device: str,
                         gen: torch.Generator) -> None:
    """d = La - Lb from 0 past the end of the tables ((f + 8) 2^f), same and opposite signs,
    at random magnitudes clear of saturation: every d of the band z > -2 (the singular band
    and the cotransformation's first split blocks) and 4000 random ones beyond it (all of
    them for the narrow formats)."""
    fmt = LNSFormat(bits, frac_bits)
    d = torch.arange((frac_bits + 8) << frac_bits)
    band = 2 << frac_bits
    if d.numel() > band + 4000:
        d = torch.cat([d[:band], band + torch.randperm(d.numel() - band, generator=gen)[:4000]])
    d = d.repeat(2)
    top = fmt.max_log // 2
    log_a = torch.randint(-top // 2, top, d.shape, generator=gen)
    log_a = torch.maximum(log_a, d - fmt.max_log + 1)  # keep La - d representable
    opposite = torch.arange(d.numel()) >= d.numel() // 2
    neg_a = torch.rand(d.shape, generator=gen) < 0.5
    a = _codes(fmt, log_a, neg_a)
    b = _codes(fmt, log_a - d, neg_a ^ opposite)
    assert torch.equal(unpack(a, fmt)[1] - unpack(b, fmt)[1], d)
    off = _check_against_exact(a, b, fmt, backend, device)
    assert off <= d.numel() // 20  # near-ties are rare: a bound of <= 0.07 log-ulp


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("bits", "frac_bits"), FORMATS)
def test_random_pairs(bits: int, frac_bits: int, backend: str, device: str,
                      gen: torch.Generator) -> None:
    """Random codes over the whole range (zeros, both saturation ends), a quarter of them
    forced into the db band (magnitudes 0..4 log-ulps apart), add and sub, broadcast."""
    fmt = LNSFormat(bits, frac_bits)
    n = 3000
    log_a = torch.randint(-fmt.max_log, fmt.max_log + 1, (n,), generator=gen)
    log_b = torch.randint(-fmt.max_log, fmt.max_log + 1, (n,), generator=gen)
    band = torch.rand(n, generator=gen) < 0.25
    log_b = torch.where(band, (log_a + torch.randint(-4, 5, (n,), generator=gen))
                        .clamp(-fmt.max_log, fmt.max_log), log_b)
    a = _codes(fmt, log_a, torch.rand(n, generator=gen) < 0.5)
    b = _codes(fmt, log_b, torch.rand(n, generator=gen) < 0.5)
    a[:40], b[20:60] = fmt.zero_code, fmt.zero_code
    a[60:70], b[60:70] = _codes(fmt, torch.full((10,), fmt.max_log), torch.zeros(10, dtype=bool)), \
        _codes(fmt, torch.full((10,), fmt.max_log - 3), torch.zeros(10, dtype=bool))
    for subtract in (False, True):
        _check_against_exact(a, b, fmt, backend, device, subtract)
    # broadcasting: a column against a row
    out = lns.add(a[:30, None].to(device), b[None, :20].to(device), bits, frac_bits,
                  backend=backend)
    assert out.shape == (30, 20)
    exact = lns.add(a[:30, None], b[None, :20], bits, frac_bits)
    assert bool(((unpack(out.cpu(), fmt)[1] - unpack(exact, fmt)[1]).abs() <= 1).all())


@pytest.mark.parametrize("backend", BACKENDS)
def test_all_8bit_pairs(backend: str, device: str) -> None:
    """Exhaustive for the 8-bit format: all 255 x 255 valid code pairs."""
    fmt = LNSFormat(8, 3)
    codes = torch.arange(-128, 128, dtype=torch.int16)
    codes = codes[codes != -fmt.zero_code]  # the invalid negative zero
    a, b = torch.meshgrid(codes, codes, indexing="ij")
    _check_against_exact(a.flatten(), b.flatten(), fmt, backend, device)


@pytest.mark.parametrize("backend", BACKENDS)
def test_special_cases(backend: str, device: str, gen: torch.Generator) -> None:
    """x + (-x) and x - x give the zero code; x + 0 = x; 2x = x + x exactly; saturation keeps
    the largest magnitude, and a nonzero difference below the range gives the smallest."""
    fmt = LNSFormat()
    log = torch.randint(-fmt.max_log + 2048, fmt.max_log - 1024, (500,), generator=gen)
    a = _codes(fmt, log, torch.rand(500, generator=gen) < 0.5).to(device)
    neg = encode(-decode(a.cpu())).to(device)
    zero = torch.full_like(a, fmt.zero_code)
    assert bool((lns.add(a, neg, backend=backend) == fmt.zero_code).all())
    assert bool((lns.sub(a, a, backend=backend) == fmt.zero_code).all())
    assert torch.equal(lns.add(a, zero, backend=backend), a)
    assert torch.equal(lns.sub(zero, a, backend=backend), neg)
    assert bool((lns.add(zero, zero, backend=backend) == fmt.zero_code).all())
    two = encode(torch.tensor(2.0)).to(device)
    assert torch.equal(lns.add(a, a, backend=backend), lns.mul(a, two))
    ends = encode(torch.tensor([fmt.max_value, fmt.min_value, -fmt.min_value * 2.0**fmt.log_ulp],
                               dtype=torch.float64)).to(device)
    assert lns.add(ends[:1], ends[:1], backend=backend) == ends[0]
    assert decode(lns.add(ends[1:2], ends[2:], backend=backend).cpu()) == -fmt.min_value


@pytest.mark.parametrize("fast", [False, True])
def test_mufu_fast_switch(fast: bool, device: str, fast_modes: tuple[bool, ...],
                          gen: torch.Generator) -> None:
    """kernels.lns_add.add(fast=...) runs the PTX (GPU) or the portable formulas, both within
    the mufu bound."""
    if fast not in fast_modes:
        pytest.skip("the MUFU path runs on a GPU only")
    fmt = LNSFormat()
    d = torch.arange(12 << 10)
    log_a = torch.randint(-4000, 4000, d.shape, generator=gen)
    a = _codes(fmt, log_a, torch.zeros_like(d, dtype=bool))
    b = _codes(fmt, log_a - d, torch.rand(d.shape, generator=gen) < 0.5)
    got = lns_add.add(a.to(device), b.to(device), fmt, "mufu", fast=fast).cpu()
    assert bool(((unpack(got, fmt)[1] - unpack(lns.add(a, b), fmt)[1]).abs() <= 1).all())


def test_rejects() -> None:
    """32-bit formats, unknown backends; CPU tensors outside the interpreter (a message naming
    the device); the texture backend without CUDA or CuPy."""
    a32 = encode(torch.tensor([1.0, 2.0]), 32, 20)
    for backend in ("triton", "texture", "mufu"):
        with pytest.raises(ValueError, match="at most 16 bits"):
            lns.add(a32, a32, 32, 20, backend=backend)
    a = encode(torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="CuPy" if not HAS_CUPY else "CUDA tensors"):
        lns.sub(a, a, backend="texture")
    if not lns_add.check_device.__globals__["_INTERPRETED"]:
        with pytest.raises(ValueError, match="cuda tensors"):
            lns.add(a, a, backend="triton")
    with pytest.raises(ValueError, match="backend must be one of"):
        lns_add.add(a, a, LNSFormat(), "exact")
    with pytest.raises(ValueError, match="backend must be one of"):
        lns_add.error_bound("exact", 10)


def test_error_bounds() -> None:
    """The documented values (docs/LNS.md) and that every bound is below half a log-ulp, so
    no result can be more than one code off."""
    assert lns_add.error_bound("triton", 10) == pytest.approx(0.0343, abs=5e-4)
    assert lns_add.error_bound("texture", 10) == pytest.approx(0.0656, abs=5e-4)
    assert lns_add.error_bound("mufu", 10) == pytest.approx(0.0063, abs=1e-4)
    for f in range(15):
        for backend in lns_add.BACKENDS:
            assert lns_add.error_bound(backend, f) < 0.5
