"""``nn.LNSLinear``: storage, reference path, gradients, checkpoints, copies, bad input.

The reference path (CPU) is checked against an independent float64 evaluation of the decoded
weights (sign * 2^(L / 2^f) * 2^s from the bits of the codes): float64 to a few ulp of the sum
of |terms|, float32 and half inputs by the flash-attention rule. The input gradient passes
``gradcheck`` in float64; the carrier's gradient is dL/dW of a float layer holding the decoded
weights. The CUDA path is compared with the reference on the GPU (``gpu`` marker); the kernels
themselves are tested in tests/kernels/test_lns_matmul.py.
"""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnetbk.nn.lns_linear import LNSLinear, LNSWeight

FORMATS = ((16, 10), (8, 3))
F64 = torch.float64


def _independent_weights(layer: LNSLinear) -> torch.Tensor:
    """sign * 2^(L / 2^f) * 2^s in float64 from the code bits, without the codec."""
    bits, frac = layer.bits, layer.frac_bits
    c = layer.codes.to(torch.int64)
    pattern = c & ((1 << bits) - 1)  # the bits-wide pattern
    negative = pattern >> (bits - 1) == 1
    field = pattern & ((1 << (bits - 1)) - 1)
    log = torch.where(field >= 1 << (bits - 2), field - (1 << (bits - 1)), field)
    mag = torch.exp2(log.to(F64) / 2**frac + layer.scale_log2)
    w = torch.where(negative, -mag, mag)
    return torch.where(log == -(1 << (bits - 2)), 0.0, w)


def _layer(bits: int, frac_bits: int, gen: torch.Generator, d_in: int = 24,
           d_out: int = 19) -> LNSLinear:
    layer = LNSLinear(d_in, d_out, bits=bits, frac_bits=frac_bits)
    with torch.no_grad():
        layer.codes.view(-1)[:2] = layer.fmt.zero_code
        layer.bias.copy_(torch.randn(d_out, generator=gen))
    return layer


@pytest.mark.parametrize(("bits", "frac_bits"), FORMATS)
def test_storage_and_init(bits: int, frac_bits: int) -> None:
    layer = LNSLinear(64, 32, bits=bits)
    assert layer.frac_bits == frac_bits
    assert layer.codes.dtype == (torch.int8 if bits == 8 else torch.int16)
    assert layer.lns_format.tolist() == [bits, frac_bits, layer.scale_log2]
    assert isinstance(layer.lns_weight, LNSWeight) and layer.lns_weight.layer is layer
    assert not layer.lns_weight.any()
    w = layer.decoded_weight(F64)
    bound = 1 / math.sqrt(64)
    assert w.abs().max() <= bound * (1 + layer.fmt.max_rel_error)
    # The scale centres the RMS at 1.0 of the format: within a factor sqrt(2).
    rms = w.pow(2).mean().sqrt().item()
    assert abs(math.log2(rms) - layer.scale_log2) <= 0.5 + 1e-9


@pytest.mark.parametrize(("bits", "frac_bits"), FORMATS)
def test_encode_round_trip(gen: torch.Generator, bits: int, frac_bits: int) -> None:
    """Weights inside the format's range come back within half a log-ulp; 0 stays 0."""
    layer = LNSLinear(40, 30, bits=bits)
    w = torch.randn(30, 40, dtype=F64, generator=gen) * 0.05
    w[0, :3] = 0
    layer.encode_weight(w)
    fmt = layer.fmt
    got = layer.decoded_weight(F64)
    scaled = w.abs() * 2.0**-layer.scale_log2
    inside = (scaled >= fmt.min_value) & (scaled <= fmt.max_value)
    rel = (got[inside] / w[inside] - 1).abs().max().item()
    assert rel <= fmt.max_rel_error * (1 + 1e-9)
    assert bool((got[w == 0] == 0).all()) and bool((got[w != 0] != 0).all())
    assert torch.equal(torch.signbit(got[w != 0]), torch.signbit(w[w != 0]))
    # Outside the range: saturated at the smallest / largest magnitude, sign kept.
    below = (~inside) & (w != 0) & (scaled < fmt.min_value)
    assert torch.allclose(got[below].abs() * 2.0**-layer.scale_log2,
                          torch.full_like(got[below], fmt.min_value), rtol=1e-12)


@pytest.mark.parametrize(("bits", "frac_bits"), FORMATS)
def test_forward_float64_exact(gen: torch.Generator, bits: int, frac_bits: int) -> None:
    layer = _layer(bits, frac_bits, gen).double()
    w = _independent_weights(layer)
    assert torch.equal(layer.decoded_weight(F64), w)
    x = torch.randn(3, 5, 24, dtype=F64, generator=gen)
    y = layer(x)
    assert y.dtype == F64 and y.shape == (3, 5, 19)
    exact = torch.einsum("...k,nk->...n", x, w) + layer.bias.detach()
    size = torch.einsum("...k,nk->...n", x.abs(), w.abs()) + layer.bias.detach().abs()
    assert bool(((y - exact).abs() <= 30 * torch.finfo(F64).eps * size).all())


@pytest.mark.parametrize(("bits", "frac_bits"), FORMATS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_forward_dtypes(gen: torch.Generator, bits: int, frac_bits: int,
                        dtype: torch.dtype) -> None:
    """Error vs float64 <= 2x torch's same-dtype F.linear on the same weights + 4 ulp."""
    layer = _layer(bits, frac_bits, gen)
    w = _independent_weights(layer)
    b = layer.bias.detach().double()
    x = torch.randn(37, 24, dtype=F64, generator=gen).to(dtype)
    exact = x.double() @ w.t() + b
    y = layer(x)
    assert y.dtype == dtype
    same = F.linear(x, w.to(dtype), b.to(dtype)).double()
    err = (y.double() - exact).abs().max().item()
    t_err = (same - exact).abs().max().item()
    assert err <= 2 * t_err + 4 * torch.finfo(dtype).eps * exact.abs().max().item()


@pytest.mark.parametrize(("bits", "frac_bits"), FORMATS)
def test_gradients(gen: torch.Generator, bits: int, frac_bits: int) -> None:
    """gradcheck of (x, bias) in float64; the carrier's grad is dL/dW at the decoded W (a
    straight-through gradient: not the derivative in the carrier's value, which is never read,
    so it is compared with autograd through F.linear on W instead of a gradcheck)."""
    layer = _layer(bits, frac_bits, gen, d_in=6, d_out=5).double()
    x = torch.randn(4, 6, dtype=F64, generator=gen, requires_grad=True)
    bias = layer.bias.detach().clone().requires_grad_()

    def fn(x_: torch.Tensor, b_: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(layer, {"bias": b_}, (x_,))

    assert torch.autograd.gradcheck(fn, (x, bias))
    g = torch.randn(4, 5, dtype=F64, generator=gen)
    layer(x).backward(g)
    w = _independent_weights(layer).requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    F.linear(x2, w, layer.bias.detach()).backward(g)
    assert torch.allclose(layer.lns_weight.grad, w.grad, rtol=1e-13, atol=0)
    assert torch.allclose(x.grad, x2.grad, rtol=1e-13, atol=0)
    assert not layer.lns_weight.any(), "the carrier's value stays zero"


def test_no_carrier_when_not_trainable(gen: torch.Generator) -> None:
    layer = LNSLinear(6, 5, trainable=False)
    assert layer.lns_weight is None
    assert [n for n, _ in layer.named_parameters()] == ["bias"]
    x = torch.randn(4, 6, generator=gen, requires_grad=True)
    layer(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize(("bits", "frac_bits"), FORMATS)
def test_state_dict_round_trip(gen: torch.Generator, bits: int, frac_bits: int) -> None:
    """Integer codes + format in the state dict (no carrier), loadable with weights_only and
    safetensors into a fresh layer, trainable or not; the outputs then agree exactly."""
    safetensors_torch = pytest.importorskip("safetensors.torch")
    layer = _layer(bits, frac_bits, gen)
    layer.encode_weight(torch.randn(19, 24, dtype=F64, generator=gen) * 7.0)  # a new scale
    state = layer.state_dict()
    assert set(state) == {"codes", "lns_format", "bias"}
    assert state["codes"].dtype == layer.codes.dtype and state["lns_format"].dtype == torch.int32
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded = [torch.load(buffer, weights_only=True),
              safetensors_torch.load(safetensors_torch.save(state))]
    x = torch.randn(7, 24, generator=gen)
    for sd in loaded:
        for trainable in (True, False):
            fresh = LNSLinear(24, 19, bits=bits, frac_bits=frac_bits, trainable=trainable)
            fresh.load_state_dict(sd)
            assert torch.equal(fresh.codes, layer.codes)
            assert fresh.scale_log2 == layer.scale_log2
            assert torch.equal(fresh(x), layer(x))


def test_load_rejects_bad_checkpoints(gen: torch.Generator) -> None:
    layer = LNSLinear(24, 19, bits=16)
    state = layer.state_dict()
    eight = LNSLinear(24, 19, bits=8)
    with pytest.raises(ValueError, match="bits=16, frac_bits=10"):
        eight.load_state_dict(state)
    with pytest.raises(ValueError, match="bits=16, frac_bits=10"):
        LNSLinear(24, 19, bits=16, frac_bits=9).load_state_dict(state)
    for bad_codes, message in ((state["codes"].float(), "torch.int16 tensor"),
                               (state["codes"][:5], "shape"),
                               (torch.full_like(state["codes"], -16384), "negative zero")):
        with pytest.raises(ValueError, match=message):
            LNSLinear(24, 19).load_state_dict({**state, "codes": bad_codes})
    with pytest.raises(ValueError, match=r"torch\.int8"):  # int16 codes for an 8-bit layer
        eight.load_state_dict({**eight.state_dict(), "codes": eight.codes.to(torch.int16)})
    with pytest.raises(ValueError, match="lns_format"):
        LNSLinear(24, 19).load_state_dict({**state, "lns_format": torch.tensor([16, 10])})
    with pytest.raises(ValueError, match="normal range"):
        meta = torch.tensor([16, 10, 120], dtype=torch.int32)
        LNSLinear(24, 19).load_state_dict({**state, "lns_format": meta})


def test_copies_keep_the_link(gen: torch.Generator) -> None:
    """deepcopy and pickling map the carrier's .layer to the copied layer."""
    model = nn.Sequential(LNSLinear(6, 5), nn.ReLU(), LNSLinear(5, 3, bits=8))
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    for twin in (copy.deepcopy(model), torch.load(buffer, weights_only=False)):
        for i in (0, 2):
            assert twin[i].lns_weight.layer is twin[i]
            assert twin[i].codes is not model[i].codes
            assert torch.equal(twin[i].codes, model[i].codes)
        x = torch.randn(4, 6, generator=gen)
        assert torch.equal(twin(x), model(x))


def test_module_conversions() -> None:
    layer = LNSLinear(6, 5)
    codes = layer.codes.clone()
    layer.double()
    assert layer.lns_weight.dtype == F64 and layer.bias.dtype == F64
    layer.half()
    assert layer.codes.dtype == torch.int16 and torch.equal(layer.codes, codes)
    assert layer.lns_weight.layer is layer and isinstance(layer.lns_weight, LNSWeight)


def test_from_linear(gen: torch.Generator) -> None:
    linear = nn.Linear(24, 19)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(19, 24, generator=gen) / 24**0.5)
        linear.weight[0, :2] = torch.tensor([1e-9, -1e-9])  # below the format's range
    layer = LNSLinear.from_linear(linear, bits=16)
    w = linear.weight.detach().double()
    decoded = layer.decoded_weight(F64)
    # In range: one rounding. Below it: saturated to the smallest magnitude, sign kept.
    smallest = layer.fmt.min_value * 2.0**layer.scale_log2
    inside = w.abs() >= smallest
    rel = (decoded / w - 1).abs()[inside].max().item()
    assert rel <= layer.fmt.max_rel_error * (1 + 1e-9)
    assert (~inside).sum() >= 2
    torch.testing.assert_close(decoded[~inside], smallest * w[~inside].sign(), rtol=1e-14,
                               atol=0)
    assert torch.equal(layer.bias, linear.bias)
    x = torch.randn(5, 24, generator=gen)
    assert torch.allclose(layer(x), linear(x), rtol=0, atol=1e-3)
    with pytest.raises(ValueError, match=r"nn\.Linear"):
        LNSLinear.from_linear(layer)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="no default frac_bits"):
        LNSLinear(4, 4, bits=12)
    with pytest.raises(ValueError, match="frac_bits >= 8"):
        LNSLinear(4, 4, bits=16, frac_bits=7)
    with pytest.raises(ValueError, match="at most 16 bits"):
        LNSLinear(4, 4, bits=32, frac_bits=20)
    with pytest.raises(ValueError, match="frac_bits must be in"):
        LNSLinear(4, 4, bits=8, frac_bits=7)
    with pytest.raises(ValueError, match="in_features"):
        LNSLinear(0, 4)
    layer = LNSLinear(4, 3)
    with pytest.raises(ValueError, match="4 features"):
        layer(torch.randn(2, 5))
    with pytest.raises(ValueError, match="floating"):
        layer(torch.ones(2, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="NaN"):
        layer.encode_weight(torch.full((3, 4), float("nan")))
    with pytest.raises(ValueError, match="shape"):
        layer.encode_weight(torch.randn(4, 3))


@pytest.mark.gpu
@pytest.mark.parametrize(("bits", "frac_bits"), FORMATS)
def test_cuda_path_matches_reference(gen: torch.Generator, bits: int, frac_bits: int) -> None:
    """On CUDA, bfloat16 inputs and float32 inputs under autocast take the kernel; outputs and
    gradients agree with the float64 reference by the flash-attention rule."""
    layer = _layer(bits, frac_bits, gen, d_in=300, d_out=200).cuda()
    x64 = torch.randn(2, 150, 300, dtype=F64, generator=gen)
    g64 = torch.randn(2, 150, 200, dtype=F64, generator=gen)
    ref = copy.deepcopy(layer).double()
    xr = x64.to(torch.bfloat16).cuda().double().requires_grad_()
    ref(xr).backward(g64.to(torch.bfloat16).cuda().double())
    exact = [ref(xr).detach(), xr.grad, ref.lns_weight.grad]
    w = ref.decoded_weight(torch.bfloat16)
    xs = xr.detach().to(torch.bfloat16).requires_grad_()
    ws = w.clone().requires_grad_()
    ys = F.linear(xs, ws, ref.bias.detach().to(torch.bfloat16))
    ys.backward(g64.to(torch.bfloat16).cuda())
    same = [ys.detach(), xs.grad, ws.grad]
    for autocast in (False, True):
        layer.zero_grad()
        x = xr.detach().to(torch.float32 if autocast else torch.bfloat16).requires_grad_()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            y = layer(x)
        assert y.dtype == torch.bfloat16
        y.backward(g64.to(torch.bfloat16).cuda())
        for got, e, t in zip((y.detach(), x.grad, layer.lns_weight.grad), exact, same,
                             strict=True):
            err = (got.double() - e).abs().max().item()
            t_err = (t.double() - e).abs().max().item()
            assert err <= 2 * t_err + 4 * 2.0**-7 * e.abs().max().item()
