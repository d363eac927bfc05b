"""Hardware model: the encoder is expmap0, the readout's noise matches the analytic shot-noise
covariance, and sampled hardware instances perturb programs reproducibly."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd import gradcheck

from resnetbk.geometry import lorentz
from resnetbk.optics import mueller as mu
from resnetbk.optics.hardware import (
    ANALYZERS,
    HardwareModel,
    encode,
    encoder_program,
    instrument_matrix,
    shot_noise_covariance,
)
from resnetbk.optics.lorentz import random_lorentz, stokes_to_klein, stokes_to_lorentz
from resnetbk.optics.program import Element, OpticalProgram, compile_lorentz

F64 = torch.float64
N = 64


def tangents(gen: torch.Generator, max_rapidity: float = 4.0, n: int = N) -> torch.Tensor:
    """Random tangent vectors (spatial parts) with the poles of the SLM angles and 0 included."""
    v = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen, dtype=F64), dim=-1)
    v = v * max_rapidity * torch.rand(n, 1, generator=gen, dtype=F64)
    v[0] = 0
    v[1] = torch.tensor([1.3, 0.0, 0.0])
    v[2] = torch.tensor([-0.7, 0.0, 0.0])
    return v


@pytest.mark.parametrize("c", [0.5, 1.0, 2.0])
def test_encoder_is_expmap0(gen: torch.Generator, c: float) -> None:
    v = tangents(gen) / math.sqrt(c)
    s = encode(v, c=c, intensity=3.0, t_max=0.9)
    u = torch.cat([torch.zeros(N, 1, dtype=F64), v], -1)
    torch.testing.assert_close(stokes_to_lorentz(s, c=c), lorentz.expmap0(u, c=c), rtol=1e-12,
                               atol=1e-12)
    # unpolarised light through a partial polariser: S0 = I t_max (1 + e^(-2 eta)) / 2
    eta = math.sqrt(c) * torch.linalg.vector_norm(v, dim=-1)
    torch.testing.assert_close(s[:, 0], 3.0 * 0.9 * (1 + torch.exp(-2 * eta)) / 2)


def test_encoder_knobs(gen: torch.Generator) -> None:
    v = tangents(gen)
    program = encoder_program(v, slm_bits=8)
    boost, slm1, slm2 = program.elements
    assert (boost.kind, slm1.kind, slm2.kind) == ("diattenuator", "slm", "slm")
    step = 2 * math.pi / 256
    for e in (slm1, slm2):
        torch.testing.assert_close(e.retardance / step, torch.round(e.retardance / step))
    # quantisation moves the Klein direction by at most about one step per SLM
    exact = stokes_to_klein(encode(v))
    coarse = stokes_to_klein(encode(v, slm_bits=8))
    assert float((exact - coarse).norm(dim=-1).max()) <= 1.5 * step
    assert float((exact - coarse).norm(dim=-1).max()) > 0


def test_encoder_gradients(gen: torch.Generator) -> None:
    v = tangents(gen, n=8).requires_grad_()
    encode(v).sum().backward()  # the poles (v = 0, v along S1) give finite gradients
    assert bool(torch.isfinite(v.grad).all())
    w = tangents(gen, n=8)[3:].requires_grad_()
    assert gradcheck(lambda x: encode(x, c=0.7), (w,))
    q = tangents(gen, n=8)[3:].requires_grad_()
    encode(q, slm_bits=6).sum().backward()  # straight-through gradient of the SLM levels
    assert bool(torch.isfinite(q.grad).all()) and float(q.grad.abs().sum()) > 0


def test_ideal_hardware_changes_nothing(gen: torch.Generator) -> None:
    inst = HardwareModel().sample(gen)
    program = compile_lorentz(random_lorentz(3 * torch.rand(N, generator=gen, dtype=F64),
                                             generator=gen))
    torch.testing.assert_close(inst.realise(program).mueller(), program.mueller(), rtol=0,
                               atol=0)
    v = tangents(gen)
    torch.testing.assert_close(inst.encode(v), encode(v), rtol=0, atol=0)
    s = encode(v)
    torch.testing.assert_close(inst.readout(s, gen), s, rtol=0, atol=1e-15)


@pytest.mark.parametrize("noise", ["poisson", "gaussian"])
def test_readout_matches_shot_noise(gen: torch.Generator, noise: str) -> None:
    photons, dark, samples = 2e4, 30.0, 20000
    inst = HardwareModel(photons=photons, dark_counts=dark, shot_noise=noise).sample(gen)
    for s in (torch.tensor([1.0, 0, 0, 0], dtype=F64),
              encode(torch.tensor([0.4, -1.1, 0.7], dtype=F64)) * 0.8):
        est = inst.readout(s.expand(samples, 4), gen)
        cov = shot_noise_covariance(s, photons, dark)
        sd = cov.diagonal().sqrt()
        # unbiased mean: 5 sigma of the sample mean
        assert bool(((est.mean(0) - s).abs() <= 5 * sd / math.sqrt(samples)).all())
        # the covariance: 5 sigma of the sample covariance (Gaussian approximation,
        # var(c_ij) = (C_ii C_jj + C_ij^2) / samples)
        sample_cov = torch.cov(est.T)
        tol = 5 * torch.sqrt((sd[:, None] ** 2 * sd[None, :] ** 2 + cov**2) / samples)
        assert bool(((sample_cov - cov).abs() <= tol).all()), (sample_cov, cov)
    # unpolarised light: std(s_i) = sqrt(3/N) without dark counts
    cov = shot_noise_covariance(torch.tensor([1.0, 0, 0, 0], dtype=F64), photons)
    torch.testing.assert_close(cov.diagonal()[1:].sqrt(), torch.full((3,), math.sqrt(3 / photons),
                                                                      dtype=F64))


def test_readout_gradients_and_adc(gen: torch.Generator) -> None:
    s = encode(tangents(gen)).requires_grad_()
    inst = HardwareModel(photons=1e6, shot_noise="gaussian", adc_bits=10).sample(gen)
    est = inst.readout(s, gen)
    est.sum().backward()
    assert bool(torch.isfinite(s.grad).all()) and float(s.grad.abs().sum()) > 0
    # noiseless ADC: error at most half an LSB per detector, mapped through W^-1
    adc = HardwareModel(adc_bits=8).sample(gen)
    s = encode(tangents(gen))
    lsb = 0.5 / 255
    w_inv = torch.linalg.inv(instrument_matrix().to(F64))
    bound = 0.5 * lsb * w_inv.abs().sum(-1) + 1e-15
    err = (adc.readout(s, gen) - s).abs()
    assert bool((err <= bound).all()) and float(err.max()) > 0


def test_calibration_error(gen: torch.Generator) -> None:
    model = HardwareModel(calibration_error=0.01)
    a, b = model.sample(gen), model.sample(gen)
    w = instrument_matrix().to(F64)
    assert not torch.allclose(a.instrument, b.instrument)
    # analysers stay unit vectors (a turned instrument), gains near 1
    rows = a.instrument
    torch.testing.assert_close(rows[:, 1:].norm(dim=-1), rows[:, 0])
    assert float((rows[:, 0] * 4 - 1).abs().max()) < 0.1
    assert float((a.instrument - w).abs().max()) > 0
    s = encode(tangents(gen))
    torch.testing.assert_close(a.readout(s, gen), a.readout(s, gen))  # no noise: deterministic
    assert float((a.readout(s, gen) - s).abs().max()) > 1e-4


def test_instances_are_reproducible(gen: torch.Generator) -> None:
    model = HardwareModel(angle_error=0.01, retardance_error=0.02, photons=1e3)
    program = compile_lorentz(random_lorentz(torch.rand(4, generator=gen, dtype=F64),
                                             generator=gen))
    seed = int(torch.randint(0, 2**31, (1,), generator=gen))
    first = model.sample(torch.Generator().manual_seed(seed))
    again = model.sample(torch.Generator().manual_seed(seed))
    other = model.sample(gen)
    torch.testing.assert_close(first.realise(program).mueller(), again.realise(program).mueller(),
                               rtol=0, atol=0)
    torch.testing.assert_close(first.realise(program).mueller(), first.realise(program).mueller(),
                               rtol=0, atol=0)
    assert not torch.allclose(first.realise(program).mueller(), other.realise(program).mueller())
    s = encode(tangents(gen))
    torch.testing.assert_close(first.readout(s, torch.Generator().manual_seed(1)),
                               again.readout(s, torch.Generator().manual_seed(1)))


def test_element_errors(gen: torch.Generator) -> None:
    angle_error, retardance_error, loss, ratio = 0.01, 0.03, 0.02, 1e3
    model = HardwareModel(angle_error=angle_error, retardance_error=retardance_error,
                          insertion_loss=loss, extinction_ratio=ratio)
    n = 4000
    program = OpticalProgram((Element.retarder(torch.full((n,), 1.0, dtype=F64), 0.3,
                                               kind="qwp"),
                              Element.boost(torch.full((n,), 5.0, dtype=F64), 0.2),
                              Element.diattenuator(1.0, torch.full((n,), 0.5, dtype=F64), 0.1)))
    real = model.sample(gen).realise(program)
    plate, boost, weak = real.elements
    # angle and retardance errors have the model's spread (5 sigma of the sample std)
    for got, want, sigma in ((plate.angle - 0.3, 0.0, angle_error),
                             (plate.retardance - 1.0, 0.0, retardance_error),
                             (boost.angle - 0.2, 0.0, angle_error)):
        assert abs(float(got.mean()) - want) < 5 * sigma / math.sqrt(n)
        assert abs(float(got.std()) - sigma) < 5 * sigma / math.sqrt(2 * n)
    torch.testing.assert_close(boost.retardance, torch.zeros(n, dtype=F64))  # polarisers: none
    # insertion loss and the extinction-ratio floor (e^10 > 1e3: capped at the ratio)
    torch.testing.assert_close(plate.t_max, torch.full((n,), 1 - loss, dtype=F64))
    torch.testing.assert_close(boost.extinction_ratio, torch.full((n,), ratio, dtype=F64))
    torch.testing.assert_close(weak.extinction_ratio, torch.full((n,), 2.0, dtype=F64))
    assert not bool(program.realisable(ratio).any())
    # gradients reach the programmed knobs through the errors
    knob = torch.tensor([0.4], dtype=F64, requires_grad=True)
    out = model.sample(gen).realise(OpticalProgram((Element.retarder(1.0, knob),)))
    out.mueller().sum().backward()
    assert knob.grad is not None and bool(torch.isfinite(knob.grad).all())


def test_realised_program_stays_passive(gen: torch.Generator) -> None:
    model = HardwareModel(angle_error=0.05, retardance_error=0.05, insertion_loss=0.01,
                          extinction_ratio=1e4)
    program = compile_lorentz(random_lorentz(4 * torch.rand(N, generator=gen, dtype=F64),
                                             generator=gen))
    m = model.sample(gen).realise(program).mueller()
    assert bool((mu.max_transmission(m) <= 1 + 1e-12).all())


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"angle_error": -0.1}, "angle_error must be a number"),
    ({"retardance_error": float("nan")}, "retardance_error must be a number"),
    ({"extinction_ratio": 0.5}, "extinction_ratio must be a number >= 1"),
    ({"insertion_loss": 1.0}, "insertion_loss must be < 1"),
    ({"slm_bits": 0}, "slm_bits must be an int"),
    ({"slm_bits": 8.0}, "slm_bits must be an int"),
    ({"photons": 0.0}, "photons must be a number"),
    ({"shot_noise": "thermal"}, "shot_noise must be 'poisson' or 'gaussian'"),
    ({"dark_counts": 5.0}, "dark_counts needs photons"),
    ({"adc_bits": -2}, "adc_bits must be an int"),
    ({"calibration_error": -1.0}, "calibration_error must be a number"),
])
def test_model_bad_input(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        HardwareModel(**kwargs)


def test_bad_input(gen: torch.Generator) -> None:
    inst = HardwareModel(photons=100.0).sample(gen)
    with pytest.raises(ValueError, match="detector signal must be non-negative"):
        inst.readout(torch.tensor([1.0, -2.0, -2.0, -2.0], dtype=F64) * ANALYZERS[0, 0], gen)
    with pytest.raises(ValueError, match=r"v must be the spatial part .* of shape \(\.\.\., 3\)"):
        encode(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="v must be finite"):
        encode(torch.tensor([float("nan"), 0.0, 0.0]))
    with pytest.raises(ValueError, match="slm_bits must be a positive int"):
        encoder_program(torch.zeros(3), slm_bits=0)
    with pytest.raises(ValueError, match="intensity must be non-negative"):
        encode(torch.zeros(3), intensity=-1.0)
    with pytest.raises(ValueError, match="stokes_vector must be a Stokes vector"):
        inst.readout(torch.zeros(3), gen)
