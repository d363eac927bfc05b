"""LNS-weight matrix products (``resnetbk.kernels.lns_matmul``) against float64 references.

Decoding: the exact (table) decode equals ``(lns.decode(codes) * 2^s).to(dtype)`` code for code
(every 8-bit code; random and extreme 16-bit codes; float16 subnormals within one subnormal
unit); the MUFU decode (GPU) within one unit of the operand dtype. Products: both paths (fused
kernel, decode + cuBLAS), forward with bias and the transposed product of the input gradient,
in bfloat16 and float16, held to the flash-attention rule against the exact float64 product of
the decoded weights: error <= 2x that of the same-dtype torch matmul + 4 ulp of the largest
value. The custom op's gradients (x, carrier, bias) against the layer's float64 reference path
by the same rule; opcheck; NaN-poisoned output buffers; bad arguments.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from resnetbk.kernels import lns_matmul as lm
from resnetbk.lns import LNSFormat, decode
from resnetbk.nn.lns_linear import LNSLinear, code_dtype

ROWS, D_IN, D_OUT = 37, 24, 19  # not multiples of the tiles: row, column and K-tail masks
FORMATS = ((16, 10), (8, 3))
HALF = (torch.bfloat16, torch.float16)
F64 = torch.float64


def _exact(codes: torch.Tensor, bits: int, frac_bits: int, scale_log2: int) -> torch.Tensor:
    fmt = LNSFormat(bits, frac_bits)
    return decode(codes.to(fmt.dtype), bits, frac_bits) * 2.0**scale_log2


def _codes(gen: torch.Generator, bits: int, frac_bits: int, n: int) -> torch.Tensor:
    """Every code of an 8-bit format; for 16 bits n random codes plus the extremes, zero and
    the largest fraction (2^(r/2^f) rounding up to 2 in the operand dtype)."""
    fmt = LNSFormat(bits, frac_bits)
    if bits <= 8:
        codes = torch.arange(-(1 << (bits - 1)), 1 << (bits - 1))
        codes = codes[codes != -fmt.zero_code]
    else:
        codes = torch.randint(-(1 << 15), 1 << 15, (n,), generator=gen)
        codes = codes[codes != -fmt.zero_code]
        special = [fmt.max_log, -fmt.max_log & 0x7FFF, fmt.zero_code, fmt.scale - 1, 0,
                   -(1 << 15), -(1 << 15) + fmt.max_log]
        codes = torch.cat([codes, torch.tensor(special)])
    return codes.to(code_dtype(bits))


@pytest.mark.parametrize(("bits", "frac_bits"), FORMATS)
@pytest.mark.parametrize("dtype", HALF)
def test_decode(device: str, fast_modes: tuple[bool, ...], gen: torch.Generator, bits: int,
                frac_bits: int, dtype: torch.dtype) -> None:
    codes = _codes(gen, bits, frac_bits, 4096).view(-1, 1).to(device)
    for scale in (-3, 0) if dtype == torch.float16 else (-3, 5):
        exact = _exact(codes.cpu(), bits, frac_bits, scale)
        want = exact.to(dtype).double()
        for fast in fast_modes:
            got = lm.lns_decode(codes, bits, frac_bits, scale, dtype, fast=fast).cpu().double()
            assert got.dtype == torch.float64 and not got.isnan().any()
            assert torch.equal(got == 0, exact == 0), "zero codes and only they decode to 0"
            assert torch.equal(torch.signbit(got[got != 0]), torch.signbit(exact[exact != 0]))
            info = torch.finfo(dtype)
            normal = exact.abs() >= info.tiny
            if not fast:
                assert torch.equal(got[normal], want[normal]), f"scale 2^{scale}"
                # float16 subnormals: rounded twice (to 11 bits, then to the subnormal grid).
                sub_err = (got - want)[~normal].abs()
                assert bool((sub_err <= info.tiny * info.eps).all()), "subnormals off"
            else:
                ulp = info.eps * exact.abs()
                err = (got - want).abs()
                assert bool((err[normal] <= ulp[normal]).all()), "MUFU decode beyond one unit"


def _problem(gen: torch.Generator, bits: int, frac_bits: int, device: str
             ) -> tuple[LNSLinear, torch.Tensor, torch.Tensor]:
    """A layer (a few zero, largest and smallest codes planted), x and g in float64."""
    layer = LNSLinear(D_IN, D_OUT, bits=bits, frac_bits=frac_bits)
    fmt = layer.fmt
    with torch.no_grad():
        flat = layer.codes.view(-1)
        flat[:3] = fmt.zero_code
        flat[3] = fmt.max_log
        flat[4] = fmt.zero_code + 1  # smallest magnitude (log field -max_log)
        layer.bias.copy_(torch.randn(D_OUT, generator=gen))
    layer.to(device)
    x = torch.randn(ROWS, D_IN, dtype=F64, generator=gen)
    g = torch.randn(ROWS, D_OUT, dtype=F64, generator=gen)
    return layer, x, g


def _assert_rule(got: torch.Tensor, exact: torch.Tensor, torch_same: torch.Tensor,
                 dtype: torch.dtype, what: str) -> None:
    got, torch_same = got.cpu().double(), torch_same.cpu().double()
    assert not got.isnan().any(), f"{what}: NaN"
    k_err = (got - exact).abs().max().item()
    t_err = (torch_same - exact).abs().max().item()
    floor = 4 * torch.finfo(dtype).eps * exact.abs().max().item()
    assert k_err <= 2 * t_err + floor, f"{what}: error {k_err:.3g} vs torch {t_err:.3g}"


@pytest.mark.parametrize(("bits", "frac_bits"), FORMATS)
@pytest.mark.parametrize("dtype", HALF)
def test_products(device: str, fast_modes: tuple[bool, ...], gen: torch.Generator, bits: int,
                  frac_bits: int, dtype: torch.dtype) -> None:
    layer, x64, g64 = _problem(gen, bits, frac_bits, device)
    w64 = layer.decoded_weight(F64).cpu()
    b64 = layer.bias.detach().cpu().double()
    x, g = x64.to(device, dtype), g64.to(device, dtype)
    w_same = w64.to(dtype)
    exact_fwd = x.cpu().double() @ w64.t() + b64
    exact_t = g.cpu().double() @ w64
    torch_fwd = F.linear(x.cpu(), w_same, b64.to(dtype))
    torch_t = g.cpu() @ w_same
    args = (layer.codes, bits, frac_bits, layer.scale_log2)
    for path in ("fused", "decode"):
        for fast in fast_modes:
            out = torch.full((ROWS, D_OUT), float("nan"), dtype=dtype, device=device)
            y = lm.lns_matmul(x, *args, bias=layer.bias.detach(), path=path, fast=fast, out=out)
            assert y.data_ptr() == out.data_ptr()
            _assert_rule(y, exact_fwd, torch_fwd, dtype, f"{path} fast={fast} forward")
            out_t = torch.full((ROWS, D_IN), float("nan"), dtype=dtype, device=device)
            gx = lm.lns_matmul(g, *args, transpose=True, path=path, fast=fast, out=out_t)
            _assert_rule(gx, exact_t, torch_t, dtype, f"{path} fast={fast} transposed")
    # A strided operand (every other column of a wider matrix) reads through its strides.
    wide = torch.zeros(ROWS, 2 * D_IN, dtype=dtype, device=device)
    wide[:, ::2] = x
    y = lm.lns_matmul(wide[:, ::2], *args, path="fused")
    _assert_rule(y, exact_fwd - b64, F.linear(x.cpu(), w_same), dtype, "strided a")


@pytest.mark.parametrize(("bits", "frac_bits"), FORMATS)
def test_autograd(device: str, gen: torch.Generator, bits: int, frac_bits: int) -> None:
    """Gradients of the custom op (x, carrier, bias) vs the layer's float64 reference path,
    which is exact for the decoded weights."""
    dtype = torch.bfloat16
    layer, x64, g64 = _problem(gen, bits, frac_bits, device)
    x, g = x64.to(device, dtype), g64.to(device, dtype)
    ref = copy.deepcopy(layer).cpu().double()
    x_exact = x.cpu().double().requires_grad_()
    ref(x_exact).backward(g.cpu().double())
    exact = [x_exact.grad, ref.lns_weight.grad, ref.bias.grad]
    x_same = x.cpu().clone().requires_grad_()
    w_same = ref.decoded_weight(dtype).requires_grad_()
    b_same = ref.bias.detach().to(dtype).requires_grad_()
    F.linear(x_same, w_same, b_same).backward(g.cpu())
    same = [x_same.grad, w_same.grad, b_same.grad]
    for path in ("fused", "decode"):
        layer.zero_grad()
        x_k = x.detach().clone().requires_grad_()
        lm.lns_linear(x_k, layer.codes, layer.lns_weight, layer.bias, bits, frac_bits,
                      layer.scale_log2, path).backward(g)
        got = [x_k.grad, layer.lns_weight.grad, layer.bias.grad]
        assert got[1].dtype == torch.float32 and got[2].dtype == torch.float32
        for name, k, t, e in zip(("grad_x", "grad_w", "grad_b"), got, same, exact, strict=True):
            _assert_rule(k, e, t, dtype, f"{path} {name}")


def test_opcheck(device: str, gen: torch.Generator) -> None:
    """torch.library.opcheck: schema, fake tensor and autograd registration (torch.compile)."""
    layer, x64, _ = _problem(gen, 16, 10, device)
    x = x64[:5].to(device, torch.bfloat16).requires_grad_()
    torch.library.opcheck(torch.ops.resnetbk.lns_linear.default,
                          (x, layer.codes, layer.lns_weight, layer.bias, 16, 10,
                           layer.scale_log2))


def test_bad_arguments(device: str, gen: torch.Generator) -> None:
    layer, x64, _ = _problem(gen, 16, 10, device)
    x = x64.to(device, torch.bfloat16)
    args = (16, 10, layer.scale_log2)
    with pytest.raises(ValueError, match="int16"):
        lm.lns_matmul(x, layer.codes.float(), *args)
    with pytest.raises(ValueError, match="int16"):
        lm.lns_matmul(x, layer.codes.to(torch.int8), *args)
    with pytest.raises(ValueError, match="does not match"):
        lm.lns_matmul(x[:, :-1], layer.codes, *args)
    with pytest.raises(ValueError, match="bfloat16 or float16"):
        lm.lns_matmul(x.float(), layer.codes, *args)
    with pytest.raises(ValueError, match="float16 operands cannot hold"):
        lm.lns_matmul(x.half(), layer.codes, 16, 10, 1)
    with pytest.raises(ValueError, match="frac_bits >= 8"):
        lm.lns_matmul(x, layer.codes, 16, 7, 0)
    with pytest.raises(ValueError, match="path"):
        lm.lns_matmul(x, layer.codes, *args, path="cublas")
    with pytest.raises(ValueError, match="out must be"):
        lm.lns_matmul(x, layer.codes, *args, out=torch.empty(3, 3, dtype=x.dtype, device=device))
    if device == "cpu":
        with pytest.raises(ValueError, match="interpreter"):
            lm.lns_matmul(x, layer.codes, *args, fast=True)


@pytest.mark.gpu
@pytest.mark.parametrize("rows", [1, 16, 64, 300])
def test_gpu_tiles(device: str, gen: torch.Generator, rows: int) -> None:
    """The GPU tile configurations (few-row and 128 x 128 tiles, several K steps)."""
    layer = LNSLinear(1000, 520, bits=8).to(device)
    x64 = torch.randn(rows, 1000, dtype=F64, generator=gen)
    w64 = layer.decoded_weight(F64).cpu()
    b64 = layer.bias.detach().cpu().double()
    for dtype in HALF:
        x = x64.to(device, dtype)
        exact = x.cpu().double() @ w64.t() + b64
        same = F.linear(x, w64.to(device, dtype), b64.to(device, dtype))
        for fast in (False, True):
            for path in ("fused", "decode"):
                y = lm.lns_matmul(x, layer.codes, 8, 3, layer.scale_log2,
                                  bias=layer.bias.detach(), path=path, fast=fast)
                _assert_rule(y, exact, same, dtype, f"rows={rows} {path} fast={fast}")
