"""OpticalLorentzLinear: the ideal layer against an independent closed form of its knobs, the
hyperboloid, gradients, noise statistics, the readout rule and the hybrid model helper."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from resnetbk.geometry import lorentz as hyp
from resnetbk.nn.lorentz import LorentzLinear
from resnetbk.optics import HardwareModel, random_lorentz
from resnetbk.optics.layers import (
    OpticalLorentzLinear,
    hybridize,
    optical_layers,
    stokes_to_tangent,
)

F64 = torch.float64


def _points(n: int, d: int, gen: torch.Generator, c: float, scale: float = 1.0) -> torch.Tensor:
    v = torch.randn(n, d, generator=gen, dtype=F64) * scale
    return hyp.expmap0(torch.cat([torch.zeros(n, 1, dtype=F64), v], -1), c=c)


def _randomise(layer: OpticalLorentzLinear, gen: torch.Generator, max_rapidity: float) -> None:
    with torch.no_grad():
        shape = layer.rapidity_raw.shape
        layer.angles.copy_(torch.rand(layer.angles.shape, generator=gen, dtype=F64) * math.pi)
        eta = 0.05 + torch.rand(shape, generator=gen, dtype=F64) * max_rapidity
        layer.rapidity_raw.copy_(eta + torch.log(-torch.expm1(-eta)))
        layer.transmission_logit.copy_(torch.randn(shape, generator=gen, dtype=F64))


def _rot(axis: int, a: torch.Tensor) -> torch.Tensor:
    """Right-handed rotation of (S1, S2, S3) about axis 1 (S2) or 2 (S3), embedded in 4x4."""
    m = torch.eye(4, dtype=F64).repeat(*a.shape, 1, 1)
    i, j = (1, 3) if axis == 1 else (1, 2)
    sign = -1.0 if axis == 1 else 1.0  # Y(b) = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
    m[..., i, i] = m[..., j, j] = torch.cos(a)
    m[..., j, i], m[..., i, j] = sign * torch.sin(a), -sign * torch.sin(a)
    return m


def _closed_form_lorentz(angles: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
    """R(r1) B(eta) R(r2) with r = QWP(t1) HWP(t2) QWP(t3) = Z(2 t1) Y(4 t2 - 2 t1 - 2 t3)
    Z(-2 t3) (docs/OPTICS.md), written out independently of the Mueller code."""
    def rot(t3: torch.Tensor, t2: torch.Tensor, t1: torch.Tensor) -> torch.Tensor:
        return _rot(2, 2 * t1) @ _rot(1, 4 * t2 - 2 * t1 - 2 * t3) @ _rot(2, -2 * t3)

    a = angles.unbind(-1)
    boost = torch.eye(4, dtype=F64).repeat(*eta.shape, 1, 1)
    boost[..., 0, 0] = boost[..., 1, 1] = torch.cosh(eta)
    boost[..., 0, 1] = boost[..., 1, 0] = torch.sinh(eta)
    return rot(a[3], a[4], a[5]) @ boost @ rot(a[0], a[1], a[2])


def _reference(layer: OpticalLorentzLinear, x: torch.Tensor) -> torch.Tensor:
    """The ideal map of the knobs: blocks expmap0'd to H^3, L_oi applied, combined with the
    light-budget weights t e^(-eta - r), normalised, logmap0'd, concatenated, expmap0'd."""
    c, sc = layer.c, math.sqrt(layer.c)
    v = hyp.logmap0(x, c=c)[..., 1:]
    v = nn.functional.pad(v, (0, 3 * layer.k_in - layer.in_features)).unflatten(-1, (layer.k_in, 3))
    p = hyp.expmap0(torch.cat([torch.zeros_like(v[..., :1]), v], -1), c=c)
    r = sc * torch.linalg.vector_norm(v, dim=-1)
    eta = layer.rapidity.detach()
    L = _closed_form_lorentz(layer.angles.detach(), eta)
    w = layer.transmission.detach() * torch.exp(-eta)
    q = torch.einsum("oi,oiab,...ib,...i->...oa", w, L, p, torch.exp(-r))
    y = q / torch.sqrt(c * (q[..., 0] ** 2 - (q[..., 1:] ** 2).sum(-1)))[..., None]
    u = hyp.logmap0(y, c=c)[..., 1:].flatten(-2)[..., :layer.out_features]
    return hyp.expmap0(torch.cat([torch.zeros_like(u[..., :1]), u], -1), c=c)


@pytest.mark.parametrize(("d_in", "d_out", "c"), [(3, 3, 1.0), (7, 5, 0.7), (4, 9, 2.0)])
def test_noise_off_equals_ideal_lorentz_map(gen: torch.Generator, d_in: int, d_out: int,
                                            c: float) -> None:
    # Radii stay moderate (rapidity <= 2, inputs |v| ~ 1): the Stokes (Klein) representation
    # loses ~eps e^(2r) at output radius r, inherent to reading points as P = tanh r.
    layer = OpticalLorentzLinear(d_in, d_out, c=c, generator=gen)
    _randomise(layer, gen, 2.0)
    assert torch.allclose(layer.lorentz().detach(),
                          _closed_form_lorentz(layer.angles.detach(), layer.rapidity.detach()),
                          rtol=0, atol=1e-13 * math.cosh(2.05))
    x = _points(64, d_in, gen, c, scale=0.6)
    y = layer(x)
    ref = _reference(layer, x)
    assert y.dtype == F64 and torch.isfinite(y).all()
    assert ((y - ref).abs().max() / ref.abs().max()).item() < 1e-10
    assert layer.last_readout.dark == layer.last_readout.clipped == 0


def test_single_unit_is_the_lorentz_transform(gen: torch.Generator) -> None:
    layer = OpticalLorentzLinear(3, 3, generator=gen)
    L = random_lorentz(torch.full((1, 1), 2.5), generator=gen)
    layer.load_lorentz(L)
    assert ((layer.lorentz().detach() - L).abs().max() / L.abs().max()).item() < 1e-12
    x = _points(32, 3, gen, 1.0)
    y = layer(x)
    expected = x @ L[0, 0].mT
    assert ((y - expected).abs().max() / expected.abs().max()).item() < 1e-10


@pytest.mark.parametrize("noise", [False, True])
def test_outputs_on_hyperboloid(gen: torch.Generator, noise: bool) -> None:
    c = 1.3
    hw = HardwareModel(angle_error=0.01, retardance_error=0.03, extinction_ratio=1e2,
                       insertion_loss=0.01, slm_bits=8, photons=300.0, dark_counts=5.0,
                       adc_bits=8, calibration_error=0.01)
    layer = OpticalLorentzLinear(8, 6, c=c, hardware=hw, noise=noise, generator=gen)
    _randomise(layer, gen, 2.0)
    y = layer(_points(200, 8, gen, c, scale=2.0))
    assert torch.isfinite(y).all()
    defect = (-y[..., 0] ** 2 + (y[..., 1:] ** 2).sum(-1) + 1 / c).abs() / y[..., 0] ** 2
    assert defect.max().item() < 1e-12
    assert (y[..., 0] > 0).all()


def test_gradcheck_noise_off(gen: torch.Generator) -> None:
    layer = OpticalLorentzLinear(4, 4, generator=gen)
    _randomise(layer, gen, 1.5)
    x = _points(2, 4, gen, 1.0)
    params = (layer.angles, layer.rapidity_raw, layer.transmission_logit)

    def f(*knobs: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(
            layer, dict(zip(("angles", "rapidity_raw", "transmission_logit"), knobs,
                            strict=True)), (x,))

    assert torch.autograd.gradcheck(f, tuple(p.detach().clone().requires_grad_() for p in params))


def test_ideal_hardware_with_noise_on_equals_noise_off(gen: torch.Generator) -> None:
    layer = OpticalLorentzLinear(6, 6, hardware=HardwareModel(), generator=gen)
    _randomise(layer, gen, 2.0)
    x = _points(50, 6, gen, 1.0)
    off = layer(x)
    layer.noise = True
    on = layer(x)
    assert ((on - off).abs().max() / off.abs().max()).item() < 1e-12


def test_shot_noise_statistics(gen: torch.Generator) -> None:
    """Readout noise is unbiased to first order and its std falls like 1/sqrt(N)."""
    x = _points(1, 3, gen, 1.0, scale=0.3).expand(4000, 4)
    transform = random_lorentz(torch.full((1, 1), 0.4), generator=gen)  # one for both budgets
    stds = []
    for photons in (1e4, 1e6):
        hw = HardwareModel(photons=photons, shot_noise="gaussian")
        layer = OpticalLorentzLinear(3, 3, hardware=hw, generator=gen)
        layer.load_lorentz(transform)
        clean = layer(x[:1])
        layer.noise = True
        layer.instance = hw.sample(gen)
        y = layer(x)
        err = hyp.logmap0(y, c=1.0)[..., 1:] - hyp.logmap0(clean, c=1.0)[..., 1:]
        std = err.std(0)
        # sampling error of the mean plus the O(sigma^2) bias of the nonlinear readout map
        assert (err.mean(0).abs() < 5 * std / math.sqrt(len(err)) + 2 * std**2).all()
        stds.append(std)
    ratio = stds[0] / stds[1]
    assert ((ratio > 8.5) & (ratio < 11.5)).all(), ratio


def test_noise_aware_training_draws_fresh_hardware_and_has_gradients(
        gen: torch.Generator) -> None:
    hw = HardwareModel(angle_error=0.01, retardance_error=0.03, extinction_ratio=1e3,
                       photons=1e4, shot_noise="gaussian", adc_bits=12)
    layer = OpticalLorentzLinear(6, 6, hardware=hw, noise=True, generator=gen)
    x = _points(16, 6, gen, 1.0)
    y1, y2 = layer(x), layer(x)
    assert not torch.equal(y1, y2)
    y1.sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert (p.grad != 0).any(), name
    fixed = dataclasses.replace(hw, photons=None, adc_bits=None)
    layer.hardware, layer.instance = fixed, fixed.sample(gen)
    assert torch.equal(layer(x), layer(x))


def test_readout_rule_is_explicit_and_counted() -> None:
    s = torch.tensor([[1.0, 1.2, 0.0, 0.0], [-0.1, 0.0, 0.5, 0.0], [1.0, 0.0, 0.3, 0.4]],
                     dtype=F64)
    with pytest.raises(ValueError, match="S0"):
        stokes_to_tangent(s)
    with pytest.raises(ValueError, match="degree of polarisation"):
        stokes_to_tangent(s[[0, 2]])
    u, stats = stokes_to_tangent(s, max_rapidity=3.0)
    assert (stats.readouts, stats.dark, stats.clipped) == (3, 1, 1)
    assert torch.allclose(u[0], torch.tensor([3.0, 0.0, 0.0], dtype=F64))
    assert torch.equal(u[1], torch.zeros(3, dtype=F64))
    assert torch.allclose(u[2], math.atanh(0.5) * torch.tensor([0.0, 0.6, 0.8], dtype=F64))


def test_low_photon_readouts_are_counted(gen: torch.Generator) -> None:
    hw = HardwareModel(photons=20.0)
    layer = OpticalLorentzLinear(3, 3, hardware=hw, noise=True, generator=gen)
    y = layer(_points(500, 3, gen, 1.0, scale=2.0))
    assert torch.isfinite(y).all()
    assert layer.last_readout.clipped + layer.last_readout.dark > 0


def test_hybridize_swaps_lorentz_linear(gen: torch.Generator) -> None:
    model = nn.Sequential(LorentzLinear(5, 4, c=0.5), nn.Sequential(LorentzLinear(4, 4, c=0.5)))
    names = hybridize(model, generator=gen)
    assert names == ["0", "1.0"]
    layers = optical_layers(model)
    assert [(m.in_features, m.out_features, m.c) for m in layers] == [(5, 4, 0.5), (4, 4, 0.5)]
    model(_points(8, 5, gen, 0.5)).sum().backward()
    assert all((p.grad != 0).any() for p in model.parameters())


def test_bad_arguments(gen: torch.Generator) -> None:
    with pytest.raises(ValueError, match="in_features"):
        OpticalLorentzLinear(0, 3)
    with pytest.raises(ValueError, match="c must be"):
        OpticalLorentzLinear(3, 3, c=-1.0)
    layer = OpticalLorentzLinear(3, 3, noise=True, generator=gen)
    with pytest.raises(ValueError, match="HardwareModel"):
        layer(_points(2, 3, gen, 1.0))
    with pytest.raises(ValueError, match="last axis"):
        OpticalLorentzLinear(3, 3)(torch.zeros(2, 5, dtype=F64))
    with pytest.raises(ValueError, match="shape"):
        OpticalLorentzLinear(3, 3).load_lorentz(torch.eye(4, dtype=F64))
