"""LorentzLinear: exact Lorentz transforms, points on the hyperboloid in every dtype, gradients."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from resnetbk.geometry import lorentz
from resnetbk.geometry.numerics import MAX_RAPIDITY
from resnetbk.nn import LorentzLinear

DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]
F64 = torch.float64


def rand_c(gen: torch.Generator) -> float:
    return float(torch.empty((), dtype=F64).uniform_(0.3, 3.0, generator=gen))


def lorentz_points(n: int, d: int, c: float, gen: torch.Generator, dtype: torch.dtype = F64,
                   max_rapidity: float = 3.0, min_rapidity: float = 0.0) -> torch.Tensor:
    """n points at rapidity sqrt(c) dist0 uniform in [min_rapidity, max_rapidity] (the origin
    first unless min_rapidity > 0), built in float64, rounded to ``dtype``, re-projected there."""
    direction = torch.randn(n, d, dtype=F64, generator=gen)
    direction = direction / direction.norm(dim=-1, keepdim=True)
    theta = torch.empty(n, 1, dtype=F64).uniform_(min_rapidity, max_rapidity, generator=gen)
    if min_rapidity == 0:
        theta[0] = 0
    space = torch.sinh(theta) / math.sqrt(c) * direction
    x = torch.cat([torch.sqrt(1 / c + space.pow(2).sum(-1, keepdim=True)), space], dim=-1)
    return lorentz.project(x.to(dtype), c=c)


def far_rapidity(dtype: torch.dtype, c: float) -> float:
    """The farthest rapidity whose coordinates (~ e^theta / (2 sqrt(c))) fit ``dtype`` with room."""
    fit = math.asinh(torch.finfo(dtype).max / 8 * math.sqrt(c))
    return min(MAX_RAPIDITY[dtype], fit)


def assert_on_hyperboloid(y: torch.Tensor, c: float) -> None:
    rtol = {torch.float64: 1e-12, torch.float32: 1e-6, torch.bfloat16: 2e-2,
            torch.float16: 2e-2}[y.dtype]
    yd = y.double()
    assert torch.isfinite(yd).all(), "non-finite output"
    assert (yd[..., 0] > 0).all(), "output on the lower sheet"
    err = (c * (yd[..., 1:].pow(2).sum(-1) - yd[..., 0].pow(2)) + 1).abs()
    worst = (err / (1 + c * yd[..., 0].pow(2))).max().item()
    assert worst <= rtol, f"off the hyperboloid: relative |c<y,y>_L + 1| = {worst:.3g}"


def randomize_(layer: torch.nn.Module, gen: torch.Generator, scale: float = 1.0) -> None:
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if name in ("weight", "bias"):
                p.copy_(torch.randn(p.shape, dtype=F64, generator=gen) * scale
                        / math.sqrt(p.shape[-1]))


# ----------------------------------------------------------------------------- Lorentz group
def random_rotation(d: int, gen: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(d, d, dtype=F64, generator=gen))
    out = torch.eye(d + 1, dtype=F64)
    out[1:, 1:] = q * torch.sign(torch.diagonal(r))
    return out


def boost(d: int, rapidity: float, gen: torch.Generator) -> torch.Tensor:
    n = torch.randn(d, dtype=F64, generator=gen)
    n = n / n.norm()
    out = torch.eye(d + 1, dtype=F64)
    out[0, 0] = math.cosh(rapidity)
    out[0, 1:] = out[1:, 0] = math.sinh(rapidity) * n
    out[1:, 1:] += (math.cosh(rapidity) - 1) * torch.outer(n, n)
    return out


def test_reproduces_boosts_and_rotations_exactly(gen: torch.Generator) -> None:
    d, c = 5, rand_c(gen)
    rapidity = float(torch.empty(()).uniform_(0.5, 2.5, generator=gen))
    lt = random_rotation(d, gen) @ boost(d, rapidity, gen) @ random_rotation(d, gen)
    metric = torch.diag(torch.tensor([-1.0] + [1.0] * d, dtype=F64))
    torch.testing.assert_close(lt.T @ metric @ lt, metric, rtol=0, atol=1e-12)
    layer = LorentzLinear(d, d, c=c).double()
    with torch.no_grad():
        layer.weight.copy_(lt[1:, :])
        layer.bias.zero_()
    x = lorentz_points(64, d, c, gen)
    expected = x @ lt.T
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=1e-10)
    # A tangent-space layer exp_0(M log_0(x)) maps the origin to itself for every M; the boost
    # moves it by its rapidity, and the layer does the same.
    o = lorentz.origin(d, c=c, dtype=F64)
    m = torch.randn(d + 1, d + 1, dtype=F64, generator=gen)
    m[0] = 0
    tangent_layer_o = lorentz.expmap0(lorentz.logmap0(o, c=c) @ m.T, c=c)
    torch.testing.assert_close(tangent_layer_o, o, rtol=0, atol=1e-12)
    moved = lorentz.dist(layer(o), o, c=c).item()
    assert moved == pytest.approx(rapidity / math.sqrt(c), rel=1e-10)


def test_without_bias(gen: torch.Generator) -> None:
    c = rand_c(gen)
    layer = LorentzLinear(3, 4, c=c, bias=False).double()
    randomize_(layer, gen)
    assert layer.bias is None
    x = lorentz_points(8, 3, c, gen)
    space = x @ layer.weight.detach().T
    expected = torch.cat([torch.sqrt(1 / c + space.pow(2).sum(-1, keepdim=True)), space], -1)
    torch.testing.assert_close(layer(x), expected, rtol=1e-13, atol=1e-13)


# ----------------------------------------------------------------------------- dtypes, range
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layer_dtype", ["same", "float32"])
def test_outputs_on_hyperboloid_all_dtypes(dtype: torch.dtype, layer_dtype: str,
                                           gen: torch.Generator) -> None:
    c = rand_c(gen)
    layer = LorentzLinear(6, 4, c=c)
    randomize_(layer, gen, scale=3.0)  # large enough to hit the range guard on far points
    if layer_dtype == "same":
        layer = layer.to(dtype)
    near = lorentz_points(100, 6, c, gen, dtype=dtype)
    far = lorentz_points(100, 6, c, gen, dtype=dtype, max_rapidity=far_rapidity(dtype, c))
    for x in (near, far):
        y = layer(x)
        assert y.dtype == dtype and y.shape == (100, 5)
        assert_on_hyperboloid(y, c)
        rapidity = torch.asinh(math.sqrt(c) * y.double()[:, 1:].norm(dim=-1))
        assert (rapidity <= MAX_RAPIDITY[dtype] * (1 + 1e-2)).all()
    # Accuracy against a float64 copy on the same (rounded) inputs and parameters.
    y64 = copy.deepcopy(layer).double()(near.double())
    tol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 1e-2,
           torch.float16: 2e-3}[dtype]
    torch.testing.assert_close(layer(near).double(), y64, rtol=tol, atol=tol)


def test_range_guard_caps_distance_exactly(gen: torch.Generator) -> None:
    """Outputs beyond MAX_RAPIDITY are scaled back radially: same direction, capped distance."""
    c = rand_c(gen)
    layer = LorentzLinear(3, 3, c=c)
    x = lorentz_points(16, 3, c, gen, dtype=torch.float32, min_rapidity=41.0, max_rapidity=42.0)
    with torch.no_grad():
        layer.weight.copy_(50 * torch.randn(3, 4, generator=gen))
    y = layer(x).double()
    raw = (x.double() @ layer.weight.detach().double().T)
    big = torch.asinh(math.sqrt(c) * raw.norm(dim=-1)) > MAX_RAPIDITY[torch.float32]
    assert big.any(), "test setup: guard not reached"
    rapidity = torch.asinh(math.sqrt(c) * y[:, 1:].norm(dim=-1))
    torch.testing.assert_close(rapidity[big], torch.full_like(rapidity[big], 43.0), rtol=1e-6,
                               atol=0)
    unit = lambda v: v / v.norm(dim=-1, keepdim=True)  # noqa: E731
    torch.testing.assert_close(unit(y[:, 1:]), unit(raw), rtol=0, atol=1e-5)


def test_float16_small_curvature_stays_finite(gen: torch.Generator) -> None:
    """For c < 1 the coordinates sinh(11)/sqrt(c) at float16's rapidity cap exceed 65504."""
    c = 0.1
    layer = LorentzLinear(3, 3, c=c).half()
    randomize_(layer, gen, scale=20.0)
    x = lorentz_points(32, 3, c, gen, dtype=torch.float16, max_rapidity=far_rapidity(
        torch.float16, c))
    assert_on_hyperboloid(layer(x), c)


# ----------------------------------------------------------------------------- distance bound
def test_max_distance_bounds_smoothly(gen: torch.Generator) -> None:
    c, bound = rand_c(gen), 2.5
    layer = LorentzLinear(4, 3, c=c, max_distance=bound).double()
    plain = LorentzLinear(4, 3, c=c).double()
    randomize_(layer, gen, scale=3.0)
    plain.load_state_dict(layer.state_dict())
    x = lorentz_points(64, 4, c, gen, max_rapidity=6.0)
    y, raw = layer(x), plain(x)
    assert_on_hyperboloid(y, c)
    sc = math.sqrt(c)
    d_raw = torch.asinh(sc * raw[:, 1:].norm(dim=-1)) / sc
    d = torch.asinh(sc * y[:, 1:].norm(dim=-1)) / sc
    assert (d < bound).all()
    torch.testing.assert_close(d, bound * torch.tanh(d_raw / bound), rtol=1e-12, atol=1e-14)
    unit = lambda v: v / v.norm(dim=-1, keepdim=True)  # noqa: E731
    torch.testing.assert_close(unit(y[:, 1:]), unit(raw[:, 1:]), rtol=0, atol=1e-12)
    # Near the origin the bound is the identity to first order (d - d^3 / (3 D^2)).
    with torch.no_grad():
        layer.weight.mul_(1e-8)
        plain.weight.mul_(1e-8)
        layer.bias.zero_()
        plain.bias.zero_()
    torch.testing.assert_close(layer(x), plain(x), rtol=1e-9, atol=1e-16)


# ----------------------------------------------------------------------------- gradients
def _gradcheck_layer(layer: torch.nn.Module, x: torch.Tensor) -> None:
    names = [n for n, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_() for _, p in layer.named_parameters()]

    def f(inp: torch.Tensor, *ps: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(layer, dict(zip(names, ps, strict=True)), (inp,))

    assert torch.autograd.gradcheck(f, (x.requires_grad_(), *params))


@pytest.mark.parametrize("learnable_c", [False, True])
@pytest.mark.parametrize("max_distance", [None, 2.0])
def test_gradcheck(learnable_c: bool, max_distance: float | None, gen: torch.Generator) -> None:
    c = rand_c(gen)
    layer = LorentzLinear(3, 2, c=c, learnable_c=learnable_c, max_distance=max_distance).double()
    randomize_(layer, gen)
    _gradcheck_layer(layer, lorentz_points(4, 3, c, gen)[1:])


@pytest.mark.parametrize("learnable_c", [False, True])
@pytest.mark.parametrize("max_distance", [None, 2.0])
def test_every_parameter_gets_gradient(learnable_c: bool, max_distance: float | None,
                                       gen: torch.Generator) -> None:
    c = rand_c(gen)
    layer = LorentzLinear(4, 3, c=c, learnable_c=learnable_c, max_distance=max_distance)
    x = lorentz_points(32, 4, c, gen, dtype=torch.float32)
    (layer(x) * torch.randn(32, 4, generator=gen)).sum().backward()
    names = {n for n, _ in layer.named_parameters()}
    assert ("manifold.log_c" in names) == learnable_c
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if name == "weight":
            # HyboNet init: the time-input column is 0 but must still learn.
            assert p.grad[:, 0].abs().sum() > 0, "time-input column got no gradient"
        assert p.grad.abs().sum() > 0, f"{name} got a zero gradient"


# ----------------------------------------------------------------------------- modules
@pytest.mark.parametrize("learnable_c", [False, True])
@pytest.mark.parametrize("max_distance", [None, 2.0])
def test_deepcopy_and_state_dict(learnable_c: bool, max_distance: float | None,
                                 gen: torch.Generator) -> None:
    c = rand_c(gen)
    layer = LorentzLinear(4, 3, c=c, learnable_c=learnable_c, max_distance=max_distance)
    randomize_(layer, gen)
    x = lorentz_points(8, 4, c, gen, dtype=torch.float32)
    out = layer(x)
    twin = copy.deepcopy(layer)
    assert torch.equal(twin(x), out)
    with torch.no_grad():
        twin.weight.add_(1.0)
    assert torch.equal(layer(x), out), "deepcopy shares storage with the original"
    fresh = LorentzLinear(4, 3, c=2 * c + 1, learnable_c=learnable_c,
                          max_distance=max_distance)
    fresh.load_state_dict(layer.state_dict())
    assert float(fresh.manifold.c_detached()) == pytest.approx(c, rel=1e-6)
    assert torch.equal(fresh(x), out)


def test_repr_and_errors() -> None:
    assert "in_features=3, out_features=4, bias=True" in repr(LorentzLinear(3, 4))
    assert "max_distance=10" in repr(LorentzLinear(3, 4, max_distance=10.0))
    layer = LorentzLinear(3, 4)
    with pytest.raises(ValueError, match=r"4 entries \(in_features \+ 1"):
        layer(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="floating"):
        layer(torch.zeros(2, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match="in_features"):
        LorentzLinear(-1, 4)
    with pytest.raises(ValueError, match="max_distance"):
        LorentzLinear(3, 4, max_distance=0.0)
    with pytest.raises(ValueError, match="c must be > 0"):
        LorentzLinear(3, 4, c=0.0)
