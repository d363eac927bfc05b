"""Hardware model: the encoder (exp map), the polarimeter readout and its noise, and Monte-Carlo
hardware instances with element errors. Every random draw takes a ``torch.Generator``.

Encoder. Unpolarised light is the origin of H^3; a horizontal partial polariser of rapidity
eta = sqrt(c)|v| moves it to (cosh eta, sinh eta, 0, 0) (up to intensity); two liquid-crystal
SLM pixels, variable retarders with axes at 45 deg and 0 deg (retardances d1, d2), rotate that
direction to v/|v| = (cos d1, sin d1 sin d2, sin d1 cos d2). So the Stokes vector is
expmap0(v) up to intensity (its Klein coordinate is tanh(eta) v/|v| / sqrt(c)). The SLM
quantises d1, d2 to ``slm_bits`` bits over one wave; the polariser's rapidity is continuous,
limited by its extinction ratio (eta <= ln(ER)/2).

Polarimeter. A division-of-amplitude polarimeter with four detectors whose analyser states a_j
form a regular tetrahedron on the Poincaré sphere: detector j receives y_j = (S0 + a_j . s)/4
of the light (instrument matrix W, rows (1, a_j)/4), and S = W^-1 y with W^-1 = columns
(1, 3 a_j). With N photons per readout at the source (S0 = 1), counts are Poisson(N y_j + d)
(d dark counts, subtracted as calibrated), so Cov(S_hat) = W^-1 diag((N y + d)/N^2) W^-T and
for unpolarised light std(s_i) = sqrt(3/N) (``shot_noise_covariance``). The Gaussian limit
N y_j + d + sqrt(N y_j + d) z is accurate once every detector sees >> 1 count and is
differentiable (reparameterised); Poisson is exact and not differentiable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from resnetbk.debug import check_curvature
from resnetbk.geometry.numerics import as_curvature, sqrt_c
from resnetbk.optics.lorentz import Curvature
from resnetbk.optics.mueller import Scalar, as_tensors, check_trailing, require
from resnetbk.optics.program import DIATTENUATOR_KINDS, RETARDER_KINDS, Element, OpticalProgram

__all__ = [
    "ANALYZERS",
    "HardwareInstance",
    "HardwareModel",
    "encode",
    "encoder_program",
    "instrument_matrix",
    "shot_noise_covariance",
]

# Analyser states of the tetrahedral polarimeter: unit Stokes directions, sum 0, sum a a^T = 4/3 I.
ANALYZERS = torch.tensor([[1.0, 1.0, 1.0], [1.0, -1.0, -1.0], [-1.0, 1.0, -1.0],
                          [-1.0, -1.0, 1.0]], dtype=torch.float64) / math.sqrt(3)


def instrument_matrix(analyzers: torch.Tensor = ANALYZERS) -> torch.Tensor:
    """W (4, 4): rows (1, a_j)/4, the fraction of a Stokes vector's light at each detector."""
    return torch.cat([torch.ones_like(analyzers[:, :1]), analyzers], -1) / 4


def _quantise(x: torch.Tensor, step: float) -> torch.Tensor:
    """x rounded to a multiple of ``step``, with the straight-through gradient 1."""
    return x + (torch.round(x / step) * step - x).detach()


def encoder_program(v: torch.Tensor, *, c: Curvature = 1.0, t_max: Scalar = 1.0,
                    slm_bits: int | None = None) -> OpticalProgram:
    """The encoder of the tangent vectors (0, v) at the origin, v (..., 3): a horizontal partial
    polariser of rapidity sqrt(c)|v| (transmittance ``t_max`` along its axis), then SLM pixels at
    45 deg and 0 deg. Applied to unpolarised light it gives expmap0 (module docstring).

    ``slm_bits`` quantises the SLM retardances to 2^bits levels per wave (straight-through
    gradient). v = 0 and v along S1 sit at the pole of the SLM's angles: the retardances there
    are set to 0 and their gradient to the subgradient 0, so no NaN can appear.
    """
    check_trailing("v", v, (3,), "the spatial part of a tangent vector at the origin")
    check_curvature(c)
    if slm_bits is not None and (isinstance(slm_bits, bool) or not isinstance(slm_bits, int)
                                 or slm_bits < 1):
        raise ValueError(f"slm_bits must be a positive int or None, got {slm_bits!r}")
    norm = torch.linalg.vector_norm(v, dim=-1)
    eta = sqrt_c(as_curvature(c, v)) * norm
    u = v / torch.where(norm > 0, norm, 1)[..., None]
    across2 = u[..., 1] ** 2 + u[..., 2] ** 2
    off_pole = across2 > 0
    across = torch.where(off_pole, torch.sqrt(torch.where(off_pole, across2, 1)), 0)
    d1 = torch.atan2(across, torch.where(norm > 0, u[..., 0], 1))
    d2 = torch.remainder(torch.atan2(torch.where(off_pole, u[..., 1], 0),
                                     torch.where(off_pole, u[..., 2], 1)), 2 * math.pi)
    if slm_bits is not None:
        step = 2 * math.pi / 2**slm_bits
        d1, d2 = _quantise(d1, step), _quantise(d2, step)
    return OpticalProgram((Element.boost(eta, 0.0, t_max=t_max),
                           Element.retarder(d1, math.pi / 4, kind="slm"),
                           Element.retarder(d2, 0.0, kind="slm")))


def _unpolarised_through(program: OpticalProgram, intensity: Scalar) -> torch.Tensor:
    m = program.mueller()
    (i,) = as_tensors(m[..., 0, 0], intensity=intensity)
    require("intensity", i, lambda x: x >= 0, "non-negative")
    return m[..., :, 0] * i[..., None]


def encode(v: torch.Tensor, *, c: Curvature = 1.0, intensity: Scalar = 1.0,
           t_max: Scalar = 1.0, slm_bits: int | None = None) -> torch.Tensor:
    """Stokes vectors (..., 4) of unpolarised light of ``intensity`` through the ideal encoder
    of v (..., 3): ``stokes_to_lorentz`` of it is expmap0((0, v)) (exactly, for slm_bits=None).
    Its S0 is intensity t_max (1 + exp(-2 eta))/2: at least half the light is lost."""
    return _unpolarised_through(encoder_program(v, c=c, t_max=t_max, slm_bits=slm_bits),
                                intensity)


def shot_noise_covariance(stokes_vector: torch.Tensor, photons: float,
                          dark_counts: float = 0.0) -> torch.Tensor:
    """Covariance (..., 4, 4) of the tetrahedral polarimeter's estimate of ``stokes_vector``
    (source units, S0 = 1 <-> ``photons`` photons) from shot and dark noise:
    W^-1 diag((N y + d) / N^2) W^-T with y = W S."""
    check_trailing("stokes_vector", stokes_vector, (4,), "a Stokes vector")
    w = instrument_matrix().to(stokes_vector)
    w_inv = torch.linalg.inv(w)
    var = (photons * stokes_vector @ w.mT + dark_counts) / photons**2
    return (w_inv * var[..., None, :]) @ w_inv.mT


def _check_number(name: str, value: float, low: float, high: float = math.inf,
                  allow_none: bool = False, integer: bool = False) -> None:
    if value is None and allow_none:
        return
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not low <= value <= high:
        rng = f">= {low}" if high == math.inf else f"in [{low}, {high}]"
        none = " or None" if allow_none else ""
        raise ValueError(f"{name} must be {'an int' if integer else 'a number'} {rng}{none}, "
                         f"got {value!r}")


@dataclass(frozen=True)
class HardwareModel:
    """Tolerances and noise of an optical core (defaults: ideal, noiseless hardware).

    Element errors (fixed per hardware instance, ``HardwareInstance.realise``): ``angle_error``
    std of every element's axis angle (rad; waveplates 0.01-0.5 deg, i.e. 2e-4-9e-3),
    ``retardance_error`` std of every retarder's retardance (rad; lambda/300-lambda/100 is
    0.02-0.06), ``extinction_ratio`` of the polarisers (a diattenuator cannot reach t_min below
    t_max / ratio; film ~1e2-1e3, Glan ~1e5), ``insertion_loss`` fraction of the light lost
    per element (0.0025-0.01 per surface), ``slm_bits`` bit depth of the encoder's SLM (8-12).
    Readout (``HardwareInstance.readout``): ``photons`` per readout at the source (None: no shot
    noise), ``shot_noise`` "poisson" or "gaussian", ``dark_counts`` mean dark counts per
    detector, ``adc_bits`` of the detectors' ADC (None: none), ``calibration_error`` std of the
    polarimeter's analyser directions (rad on the Poincaré sphere) and of its detector gains
    (relative; the PAX1000 quotes +-0.25 deg, about 0.004).
    """

    angle_error: float = 0.0
    retardance_error: float = 0.0
    extinction_ratio: float = math.inf
    insertion_loss: float = 0.0
    slm_bits: int | None = None
    photons: float | None = None
    shot_noise: str = "poisson"
    dark_counts: float = 0.0
    adc_bits: int | None = None
    calibration_error: float = 0.0

    def __post_init__(self) -> None:
        _check_number("angle_error", self.angle_error, 0.0, 1e3)
        _check_number("retardance_error", self.retardance_error, 0.0, 1e3)
        _check_number("extinction_ratio", self.extinction_ratio, 1.0)
        _check_number("insertion_loss", self.insertion_loss, 0.0, 1.0)
        if self.insertion_loss == 1.0:
            raise ValueError("insertion_loss must be < 1 (no light would pass)")
        _check_number("slm_bits", self.slm_bits, 1, 64, allow_none=True, integer=True)
        _check_number("photons", self.photons, 1e-300, 1e300, allow_none=True)
        if self.shot_noise not in ("poisson", "gaussian"):
            raise ValueError(f"shot_noise must be 'poisson' or 'gaussian', got {self.shot_noise!r}")
        _check_number("dark_counts", self.dark_counts, 0.0, 1e300)
        if self.dark_counts > 0 and self.photons is None:
            raise ValueError("dark_counts needs photons (counts are relative to a photon budget)")
        _check_number("adc_bits", self.adc_bits, 1, 64, allow_none=True, integer=True)
        _check_number("calibration_error", self.calibration_error, 0.0, 1.0)

    def sample(self, generator: torch.Generator) -> HardwareInstance:
        """One hardware instance: its element errors (drawn lazily from a seed taken from
        ``generator``, the same for the same program) and its polarimeter's true instrument
        matrix (analysers turned by random rotations, detector gains exp(N(0, sigma^2)))."""
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
        sigma = self.calibration_error
        draw = torch.randn(4, 4, generator=generator, dtype=torch.float64,
                           device=generator.device).cpu() * sigma
        rot = draw[:, :3]
        skew = torch.zeros(4, 3, 3, dtype=torch.float64)
        skew[:, 0, 1], skew[:, 0, 2], skew[:, 1, 2] = -rot[:, 2], rot[:, 1], -rot[:, 0]
        skew = skew - skew.mT
        turned = (torch.linalg.matrix_exp(skew) @ ANALYZERS[..., None]).squeeze(-1)
        gains = torch.exp(draw[:, 3])
        return HardwareInstance(self, seed, instrument_matrix(turned) * gains[:, None])


@dataclass(frozen=True, eq=False)
class HardwareInstance:
    """One sampled piece of hardware: ``model`` with fixed errors (``seed`` for the element
    errors, ``instrument`` the polarimeter's true W, float64). Make it with
    ``HardwareModel.sample``."""

    model: HardwareModel
    seed: int
    instrument: torch.Tensor = field(repr=False)

    def realise(self, program: OpticalProgram) -> OpticalProgram:
        """``program`` as this hardware builds it: every element's axis angle off by
        N(0, angle_error^2), every retarder's retardance off by N(0, retardance_error^2) (one
        draw per element and batch entry, the same each call), every transmittance times
        (1 - insertion_loss), and every diattenuator's t_min at least t_max / extinction_ratio
        (the finite extinction ratio is the effect simulated, not an error: check
        ``program.realisable`` first). Gradients flow to the program's knobs."""
        m = self.model
        gen = torch.Generator().manual_seed(self.seed)
        keep = 1 - m.insertion_loss
        out = []
        for e in program.elements:
            shape = e.angle.shape
            d_angle = torch.randn(shape, generator=gen, dtype=torch.float64) * m.angle_error
            d_ret = torch.randn(shape, generator=gen, dtype=torch.float64) * m.retardance_error
            retardance = e.retardance
            if e.kind in RETARDER_KINDS:
                retardance = retardance + d_ret.to(retardance)
            t_max, t_min = e.t_max * keep, e.t_min * keep
            if e.kind in DIATTENUATOR_KINDS:
                t_min = torch.maximum(t_min, t_max / m.extinction_ratio)
            out.append(Element(e.kind, e.angle + d_angle.to(e.angle), retardance, t_max, t_min))
        return OpticalProgram(tuple(out))

    def encode(self, v: torch.Tensor, *, c: Curvature = 1.0,
               intensity: Scalar = 1.0) -> torch.Tensor:
        """Stokes vectors (..., 4) of the encoder of v (..., 3) on this hardware (``slm_bits``,
        element errors, extinction ratio, insertion loss)."""
        program = encoder_program(v, c=c, slm_bits=self.model.slm_bits)
        return _unpolarised_through(self.realise(program), intensity)

    def readout(self, stokes_vector: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The polarimeter's estimate (..., 4) of ``stokes_vector`` (source units: S0 = 1 is the
        photon budget): true instrument matrix, shot noise, dark counts (mean subtracted), ADC,
        then the nominal inverse W^-1. The ADC's full scale is N/2 + d counts (a unit-intensity
        beam polarised along one analyser); it rounds (straight-through gradient) and saturates.
        Estimates may be unphysical (|s| >= S0) at low counts: ``stokes_to_lorentz`` rejects
        them, so decide how to treat them. Fresh noise on each call, drawn from ``generator``.
        """
        check_trailing("stokes_vector", stokes_vector, (4,), "a Stokes vector")
        m = self.model
        s = stokes_vector
        y = s @ self.instrument.to(s).mT
        photons = 1.0 if m.photons is None else m.photons
        counts = photons * y + m.dark_counts
        if m.photons is not None:
            require("detector signal", counts, lambda x: x >= 0,
                    "non-negative (a physical Stokes vector, S0 >= |s|)")
            if m.shot_noise == "poisson":
                counts = torch.poisson(counts.detach().to(generator.device),
                                       generator=generator).to(s)
            else:
                z = torch.randn(counts.shape, generator=generator, dtype=counts.dtype,
                                device=generator.device).to(s.device)
                counts = counts + torch.sqrt(counts) * z
        if m.adc_bits is not None:
            levels = 2**m.adc_bits - 1
            full = photons / 2 + m.dark_counts
            counts = _quantise(counts, full / levels).clamp(0, full)
        y_hat = (counts - m.dark_counts) / photons
        w_inv = torch.linalg.inv(instrument_matrix().to(s))
        return y_hat @ w_inv.mT
