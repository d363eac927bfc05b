"""``OpticalLorentzLinear``: a hyperbolic linear layer whose Lorentz transforms run on the
simulated optical core, parameterised by hardware knobs and trainable with the noise on.

Design (what is optical and what is electronic). Polarisation optics acts on one beam's Stokes
vector, i.e. on H^3 only (SO+(3,1)), so a (d_in + 1) -> (d_out + 1) layer is a bank of H^3 units:

1. electronic: x in H^(d_in) -> its tangent vector v = logmap0(x) (d_in numbers), zero-padded
   and cut into K_in = ceil(d_in / 3) blocks v_i of 3;
2. optical, encoder: block i is one beam, unpolarised light through the encoder (a partial
   polariser of rapidity sqrt(c)|v_i| and two SLM retarders, ``hardware.encoder_program``), so
   its Stokes vector is e^(-r_i) sqrt(c) p_i with p_i = expmap0(v_i) in H^3, r_i = sqrt(c)|v_i|;
3. optical, weights: each beam fans out to the K_out outputs; the path i -> o carries the
   program QWP HWP QWP | partial polariser | QWP HWP QWP of ``compile_lorentz`` with trainable
   knobs (six waveplate angles, the polariser's rapidity eta_oi, and its peak transmittance
   t_oi, a variable attenuator), Mueller matrix t_oi e^(-eta_oi) L_oi;
4. optical, sum: the K_in paths of output o meet incoherently on one polarimeter (Stokes vectors
   add; mutually incoherent beams are assumed), so S_o = (1/K_in) sum_i t_oi e^(-eta_oi - r_i)
   sqrt(c) L_oi p_i: a weighted Lorentzian centroid of the transformed blocks, with weights set
   by the light budget (attenuators, passive boosts and the encoder's own loss);
5. electronic: the polarimeter's estimate of S_o -> its point on H^3 -> logmap0 (3 numbers per
   output), concatenated, cut to d_out, and expmap0 to H^(d_out).

For d_in = d_out = 3 (one unit) the layer is exactly x -> L x. For larger d it is not a
Lorentz transform of H^d (the optics cannot make one); it is the block structure above.

Photon accounting: ``HardwareModel.photons`` = N is the source budget per output readout, shared
by the K_in beams (each emits N / K_in per output path), so the layer emits K_out N photons per
sample. Readout rule (noise on): an estimate with S0 <= 0 is read as the origin of its H^3
block, and one with degree of polarisation P >= tanh(max_readout_rapidity) is shrunk radially to
that P; both are counted in ``last_readout`` (never silently). With the noise off the readout is
exact and an unphysical value raises.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from resnetbk.geometry import lorentz as hyp
from resnetbk.geometry.numerics import sqrt_c
from resnetbk.nn._checks import check_input, check_size
from resnetbk.nn.lorentz import LorentzLinear
from resnetbk.optics.hardware import HardwareInstance, HardwareModel, encode
from resnetbk.optics.mueller import require
from resnetbk.optics.program import Element, OpticalProgram, compile_lorentz

__all__ = ["OpticalLorentzLinear", "ReadoutStats", "hybridize", "optical_layers",
           "stokes_to_tangent"]

# Nominal retardances of the six fixed waveplates (QWP HWP QWP, QWP HWP QWP), in propagation
# order, as in ``program.compile_lorentz``.
_RETARDANCES = (math.pi / 2, math.pi, math.pi / 2, math.pi / 2, math.pi, math.pi / 2)
_KINDS = ("qwp", "hwp", "qwp", "qwp", "hwp", "qwp")


@dataclass(frozen=True)
class ReadoutStats:
    """Counts of the readout rule in one forward: ``readouts`` estimates in total, ``dark``
    with S0 <= 0 (read as the origin), ``clipped`` with P >= tanh(max_readout_rapidity)
    (shrunk radially to it)."""

    readouts: int
    dark: int
    clipped: int


def stokes_to_tangent(s: torch.Tensor, *, c: float = 1.0, max_rapidity: float | None = None
                      ) -> tuple[torch.Tensor, ReadoutStats]:
    """logmap0 (..., 3) of the H^3 point of each Stokes vector (..., 4), and the counts of the
    readout rule.

    ``max_rapidity`` None: the vectors must be physical (S0 > 0, P < 1; raises otherwise), as a
    noise-free readout is. A number: the readout rule for noisy estimates, applied explicitly
    and counted: S0 <= 0 reads as the origin (``dark``), P >= tanh(max_rapidity) is shrunk
    radially to that P (``clipped``).
    """
    s0, vec = s[..., 0], s[..., 1:]
    norm = torch.linalg.vector_norm(vec, dim=-1)
    if max_rapidity is None:
        require("readout S0", s0, lambda t: t > 0, "positive")
        p = norm / s0
        require("readout degree of polarisation", p, lambda t: t < 1, "< 1")
        stats = ReadoutStats(int(s0.numel()), 0, 0)
    else:
        dark = s0 <= 0
        p_raw = torch.where(dark, 0.0, norm / torch.where(dark, 1.0, s0))
        p_max = math.tanh(max_rapidity)
        clipped = ~dark & (p_raw >= p_max)
        p = torch.where(clipped, p_max, p_raw)
        stats = ReadoutStats(int(s0.numel()), int(dark.sum()), int(clipped.sum()))
    nonzero = p > 0
    direction = torch.where(nonzero[..., None],
                            vec / torch.where(nonzero, norm, 1.0)[..., None], 0.0)
    # radius artanh(P) / sqrt(c) along s/|s| (the direction is undefined at P = 0: 0 there)
    return direction * (torch.atanh(p) / sqrt_c(c))[..., None], stats


class OpticalLorentzLinear(nn.Module):
    """A Lorentz layer H^(in_features) -> H^(out_features) (time coordinate first, curvature
    -c) computed by a bank of simulated H^3 optical units (module docstring).

    Knobs (parameters, float64 by default): ``angles`` (K_out, K_in, 6) waveplate axes in
    propagation order, ``rapidity_raw`` (K_out, K_in) with eta = softplus(rapidity_raw),
    ``transmission_logit`` (K_out, K_in) with t = sigmoid(transmission_logit). The waveplate
    retardances are fixed (pi/2, pi, pi/2); hardware errors perturb them.

    Noise: with ``noise`` False (default) the forward is the ideal optics. With ``noise`` True
    and ``hardware`` a ``HardwareModel``, every forward realises the programs and the encoder on
    ``instance`` if one is set (a fixed piece of hardware: evaluation), else on a fresh
    ``hardware.sample(generator)`` (noise-aware training: new element errors each step), and
    reads the result out through that instance's noisy polarimeter. Gradients flow through the
    simulation to the knobs; Poisson shot noise has no gradient through the counts, so train
    with ``shot_noise="gaussian"``.
    """

    def __init__(self, in_features: int, out_features: int, *, c: float = 1.0,
                 hardware: HardwareModel | None = None, noise: bool = False,
                 generator: torch.Generator | None = None, init_rapidity: float = 0.5,
                 max_readout_rapidity: float = 4.0, dtype: torch.dtype = torch.float64
                 ) -> None:
        super().__init__()
        check_size("OpticalLorentzLinear", "in_features", in_features)
        check_size("OpticalLorentzLinear", "out_features", out_features)
        for name, v in (("c", c), ("init_rapidity", init_rapidity),
                        ("max_readout_rapidity", max_readout_rapidity)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (
                    math.isfinite(v) and v > 0):
                raise ValueError(f"OpticalLorentzLinear: {name} must be a positive finite "
                                 f"float, got {v!r}")
        if hardware is not None and not isinstance(hardware, HardwareModel):
            raise ValueError(f"OpticalLorentzLinear: hardware must be a HardwareModel or None, "
                             f"got {type(hardware).__name__}")
        self.in_features, self.out_features = in_features, out_features
        self.k_in, self.k_out = math.ceil(in_features / 3), math.ceil(out_features / 3)
        self.c = float(c)
        self.hardware = hardware
        self.noise = noise
        self.generator = generator if generator is not None else torch.Generator()
        self.instance: HardwareInstance | None = None
        self.max_readout_rapidity = float(max_readout_rapidity)
        self.last_readout: ReadoutStats | None = None
        shape = (self.k_out, self.k_in)
        g = self.generator
        self.angles = nn.Parameter(torch.rand(*shape, 6, generator=g, dtype=dtype) * math.pi)
        eta0 = torch.rand(shape, generator=g, dtype=dtype) * init_rapidity
        self.rapidity_raw = nn.Parameter(torch.log(torch.expm1(eta0.clamp_min(1e-3))))
        self.transmission_logit = nn.Parameter(torch.full(shape, 2.0, dtype=dtype))

    @property
    def rapidity(self) -> torch.Tensor:
        """eta (K_out, K_in) of each path's partial polariser (extinction ratio e^(2 eta))."""
        return F.softplus(self.rapidity_raw)

    @property
    def transmission(self) -> torch.Tensor:
        """Peak transmittance t (K_out, K_in) of each path's partial polariser (attenuator)."""
        return torch.sigmoid(self.transmission_logit)

    def program(self) -> OpticalProgram:
        """The (K_out, K_in) batch of path programs QWP HWP QWP | polariser | QWP HWP QWP."""
        plates = [Element.retarder(ret, self.angles[..., j], kind=kind)
                  for j, (ret, kind) in enumerate(zip(_RETARDANCES, _KINDS, strict=True))]
        boost = Element.boost(self.rapidity, 0.0, t_max=self.transmission)
        return OpticalProgram((*plates[:3], boost, *plates[3:]))

    def lorentz(self) -> torch.Tensor:
        """The ideal Lorentz transforms L_oi (K_out, K_in, 4, 4) of the knobs."""
        return self.program().lorentz()

    @torch.no_grad()
    def load_lorentz(self, L: torch.Tensor) -> None:
        """Set the knobs so that path (o, i) realises the Lorentz transform L[o, i]
        (K_out, K_in, 4, 4), via ``compile_lorentz`` (its six waveplate angles and rapidity; the
        attenuators are kept). softplus cannot reach eta = 0 exactly: rapidities below 1e-12
        are set to 1e-12 (an error of ~1e-12 in L)."""
        expected = (self.k_out, self.k_in, 4, 4)
        if tuple(L.shape) != expected:
            raise ValueError(f"OpticalLorentzLinear.load_lorentz: L must have shape {expected}, "
                             f"got {tuple(L.shape)}")
        program = compile_lorentz(L.to(self.angles.dtype))
        plates = program.elements[:3] + program.elements[4:]
        self.angles.copy_(torch.stack([e.angle.expand(L.shape[:2]) for e in plates], -1))
        eta = 0.5 * torch.log(program.elements[3].extinction_ratio).clamp_min(1e-12)
        self.rapidity_raw.copy_(eta + torch.log(-torch.expm1(-eta)))

    def _noisy(self) -> bool:
        if self.noise and self.hardware is None:
            raise ValueError("OpticalLorentzLinear: noise=True needs a HardwareModel "
                             "(hardware=...)")
        return self.noise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map points x (..., in_features + 1) of H^(in_features) to (..., out_features + 1)."""
        check_input("OpticalLorentzLinear", x, self.in_features + 1,
                    "in_features + 1 coordinates, time first")
        dtype = self.angles.dtype
        x = x.to(dtype)
        v = hyp.logmap0(x, c=self.c)[..., 1:]
        v = F.pad(v, (0, 3 * self.k_in - self.in_features)).unflatten(-1, (self.k_in, 3))
        program = self.program()
        noisy = self._noisy()
        if noisy:
            inst = self.instance if self.instance is not None else self.hardware.sample(
                self.generator)
            s_in = inst.encode(v, c=self.c)
            mueller = inst.realise(program).mueller()
        else:
            s_in = encode(v, c=self.c)
            mueller = program.mueller()
        s_out = torch.einsum("oiab,...ib->...oa", mueller, s_in) / self.k_in
        if noisy:
            s_out = inst.readout(s_out, self.generator)
        u, self.last_readout = stokes_to_tangent(
            s_out, c=self.c, max_rapidity=self.max_readout_rapidity if noisy else None)
        u = u.flatten(-2)[..., :self.out_features]
        u = torch.cat([torch.zeros_like(u[..., :1]), u], -1)
        return hyp.expmap0(u, c=self.c)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"units={self.k_out}x{self.k_in}, c={self.c:g}, noise={self.noise}")


def optical_layers(model: nn.Module) -> list[OpticalLorentzLinear]:
    """Every ``OpticalLorentzLinear`` inside ``model``."""
    return [m for m in model.modules() if isinstance(m, OpticalLorentzLinear)]


def hybridize(model: nn.Module, **kwargs: object) -> list[str]:
    """Replace every ``LorentzLinear`` in ``model`` (in place) by an ``OpticalLorentzLinear`` of
    the same sizes and curvature (``kwargs`` go to its constructor) and return the replaced
    submodule names. The optical layer starts from fresh knobs: a LorentzLinear's weight is a
    general (d_out, d_in + 1) matrix, not a bank of H^3 Lorentz transforms, so there is nothing
    exact to copy; train (or fine-tune) the hybrid model."""
    replaced = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, LorentzLinear):
                c = float(child.manifold.c.detach()) if isinstance(
                    child.manifold.c, torch.Tensor) else float(child.manifold.c)
                setattr(module, child_name, OpticalLorentzLinear(
                    child.in_features, child.out_features, c=c, **kwargs))
                replaced.append(f"{name}.{child_name}" if name else child_name)
    return replaced
