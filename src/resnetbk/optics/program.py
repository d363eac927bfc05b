"""Optical programs (sequences of linear polarisation elements) and the compiler from a Lorentz
transform to six waveplates and one partial polariser.

Decomposition (docs/OPTICS.md has the derivation). Every L in SO+(3,1) factors as
L = R(r1) B(eta) R(r2): B the boost of rapidity eta along S1 (a horizontal partial polariser of
extinction ratio e^(2 eta)), r1, r2 rotations of (S1, S2, S3). Each rotation is three fixed
waveplates, QWP(t1) HWP(t2) QWP(t3) = Z(2 t1) Y(4 t2 - 2 t1 - 2 t3) Z(-2 t3) (Z, Y rotations
about S3, S2; Simon & Mukunda, Phys. Lett. A 143, 165 (1990)), so the ZYZ Euler angles
(alpha, beta, gamma) of r give t1 = alpha/2, t3 = -gamma/2, t2 = (beta + alpha - gamma)/4.
Three is the minimum for fixed retardances (SO(3) has three parameters).

Conditioning: the entries of L are ~ e^eta, so its O(1) parts carry absolute errors
~ eps e^eta. r1 is the frame of the first column's direction n; r2 = X(phi) G^T, G the frame of
the direction m of n^T L_spatial (the first row of r2, accurate to eps), X(phi) the remaining
twist about S1, read from the O(1) block and entering only the O(1) rows of L. So the
amplified part (cosh eta times the first rows) sees only eps-accurate directions: the program
reproduces L to ~ 2e-15 of max|L| in float64 at rapidities 0-18 (measured; ~ 1e-6 in float32).
The Euler angles come from sums that stay accurate at gimbal lock (docs/OPTICS.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from resnetbk.optics.lorentz import check_lorentz
from resnetbk.optics.mueller import (
    Scalar,
    as_tensors,
    check_transmittances,
    compose,
    diattenuating_retarder,
    require,
)

__all__ = ["DIATTENUATOR_KINDS", "RETARDER_KINDS", "Element", "OpticalProgram", "compile_lorentz"]

# Element kinds: labels that say what the element is in hardware (and which errors it suffers,
# see ``hardware.HardwareInstance.realise``). "slm": a liquid-crystal variable retarder pixel.
RETARDER_KINDS = ("qwp", "hwp", "retarder", "slm")
DIATTENUATOR_KINDS = ("diattenuator", "polarizer")


@dataclass(frozen=True, eq=False)
class Element:
    """One linear element: transmittances ``t_max`` along its axis at ``angle`` and ``t_min``
    across it, ``retardance`` between the two (``mueller.diattenuating_retarder``).

    Fields are tensors broadcast to one batch shape (floats are accepted and converted); any of
    them may require grad, and ``mueller()`` is differentiable in all of them.
    """

    kind: str
    angle: torch.Tensor
    retardance: torch.Tensor
    t_max: torch.Tensor
    t_min: torch.Tensor

    def __post_init__(self) -> None:
        if self.kind not in RETARDER_KINDS + DIATTENUATOR_KINDS:
            raise ValueError(f"kind must be one of {RETARDER_KINDS + DIATTENUATOR_KINDS}, "
                             f"got {self.kind!r}")
        values = as_tensors(angle=self.angle, retardance=self.retardance, t_max=self.t_max,
                            t_min=self.t_min)
        for name, v in zip(("angle", "retardance", "t_max", "t_min"), values, strict=True):
            object.__setattr__(self, name, v)
        check_transmittances(self.t_max, self.t_min)

    @classmethod
    def retarder(cls, retardance: Scalar, angle: Scalar, *, kind: str = "retarder",
                 transmission: Scalar = 1.0) -> Element:
        """A waveplate (or SLM pixel) of ``retardance``, fast axis at ``angle``, with intensity
        ``transmission`` (1 - insertion loss)."""
        return cls(kind, angle, retardance, transmission, transmission)

    @classmethod
    def diattenuator(cls, t_max: Scalar, t_min: Scalar, angle: Scalar, *,
                     kind: str = "diattenuator") -> Element:
        """A linear diattenuator (partial polariser); ``t_min = 0`` is an ideal polariser."""
        return cls(kind, angle, 0.0, t_max, t_min)

    @classmethod
    def boost(cls, rapidity: Scalar, angle: Scalar = 0.0, *, t_max: Scalar = 1.0) -> Element:
        """The partial polariser that boosts by ``rapidity`` >= 0 along its axis at ``angle``:
        t_min = t_max exp(-2 rapidity), extinction ratio exp(2 rapidity)."""
        eta, q, th = as_tensors(rapidity=rapidity, t_max=t_max, angle=angle)
        require("rapidity", eta, lambda x: x >= 0, "non-negative")
        return cls.diattenuator(q, q * torch.exp(-2 * eta), th)

    def mueller(self) -> torch.Tensor:
        """The element's Mueller matrix (..., 4, 4)."""
        return diattenuating_retarder(self.t_max, self.t_min, self.retardance, self.angle)

    @property
    def extinction_ratio(self) -> torch.Tensor:
        """t_max / t_min (Inf for an ideal polariser, 1 for a waveplate)."""
        return self.t_max / self.t_min

    @property
    def transmission(self) -> torch.Tensor:
        """Gain k = sqrt(t_max t_min) = det(M)^(1/4) of M = k L."""
        return torch.sqrt(self.t_max) * torch.sqrt(self.t_min)


@dataclass(frozen=True, eq=False)
class OpticalProgram:
    """Elements in propagation order (``elements[0]`` meets the light first); their batch
    shapes broadcast to the program's. ``p1 + p2`` runs p1 then p2; ``p[i]`` indexes the batch.
    """

    elements: tuple[Element, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "elements", tuple(self.elements))
        if not self.elements:
            raise ValueError("elements must hold at least one Element")
        for i, e in enumerate(self.elements):
            if not isinstance(e, Element):
                raise ValueError(f"elements[{i}] must be an Element, got {type(e).__name__}")
        try:
            self.batch_shape  # noqa: B018 (raises on shapes that do not broadcast)
        except RuntimeError:
            shapes = ", ".join(str(tuple(e.angle.shape)) for e in self.elements)
            raise ValueError(f"element batch shapes do not broadcast: {shapes}") from None

    @property
    def batch_shape(self) -> torch.Size:
        return torch.broadcast_shapes(*(e.angle.shape for e in self.elements))

    def __add__(self, other: OpticalProgram) -> OpticalProgram:
        return OpticalProgram(self.elements + other.elements)

    def __getitem__(self, index: int | slice | tuple) -> OpticalProgram:
        shape = self.batch_shape
        return OpticalProgram(tuple(
            Element(e.kind, *(getattr(e, f).expand(shape)[index]
                              for f in ("angle", "retardance", "t_max", "t_min")))
            for e in self.elements))

    def mueller(self) -> torch.Tensor:
        """The program's Mueller matrix M_n ... M_1 (..., 4, 4), differentiable in every knob."""
        return compose(*(e.mueller() for e in self.elements))

    @property
    def transmission(self) -> torch.Tensor:
        """Throughput k (...,) with M = k L: the product of the element gains sqrt(t_max t_min)
        (= det(M)^(1/4)). Passive programs have k <= exp(-eta), eta the rapidity of L; the
        compiled program reaches t_max exp(-eta)."""
        k = self.elements[0].transmission
        for e in self.elements[1:]:
            k = k * e.transmission
        return k

    def lorentz(self) -> torch.Tensor:
        """The Lorentz transform L = M / k of the program (..., 4, 4), using the exactly known
        gain k instead of det(M)^(1/4), which loses accuracy at large rapidity."""
        k = self.transmission
        require("program transmission", k, lambda x: x > 0,
                "positive (an ideal polariser has no Lorentz transform)")
        return self.mueller() / k[..., None, None]

    def realisable(self, max_extinction_ratio: float) -> torch.Tensor:
        """Whether every element's extinction ratio is <= ``max_extinction_ratio`` (bool, batch
        shape): a compiled program needs exp(2 eta) (polarisers: ~1e2-1e3 film and wire-grid,
        ~1e5 Glan, so eta <= 2.3 / 3.5 / 5.8)."""
        if isinstance(max_extinction_ratio, bool) or not isinstance(
                max_extinction_ratio, (int, float)) or not max_extinction_ratio >= 1:
            raise ValueError(f"max_extinction_ratio must be a number >= 1, "
                             f"got {max_extinction_ratio!r}")
        ok = torch.ones(self.batch_shape, dtype=torch.bool, device=self.elements[0].angle.device)
        for e in self.elements:
            ok = ok & (e.extinction_ratio <= max_extinction_ratio)
        return ok

    def describe(self) -> str:
        """A table of the elements of an unbatched program (index a batched one first)."""
        if self.batch_shape != torch.Size():
            raise ValueError(f"describe needs an unbatched program, this one has batch shape "
                             f"{tuple(self.batch_shape)}: index it first (program[i])")
        lines = [f"{'#':>2} {'kind':<12} {'angle/deg':>10} {'retard/waves':>12} {'t_max':>9} "
                 f"{'t_min':>10} {'ext. ratio':>10}"]
        for i, e in enumerate(self.elements):
            lines.append(
                f"{i:>2} {e.kind:<12} {math.degrees(float(e.angle)):>10.4f} "
                f"{float(e.retardance) / (2 * math.pi):>12.6f} {float(e.t_max):>9.4g} "
                f"{float(e.t_min):>10.4g} {float(e.extinction_ratio):>10.4g}")
        lines.append(f"transmission {float(self.transmission):.6g}")
        return "\n".join(lines)


def _qhq_angles(r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Angles (t1, t2, t3) in [0, pi) with QWP(t1) HWP(t2) QWP(t3) = r (..., 3, 3), float64.

    ZYZ Euler angles, robust at gimbal lock: r only depends on alpha + gamma at beta = 0 and on
    alpha - gamma at beta = pi, each through a weight ~ 1, and on the other combination through
    a weight ~ sin beta. So the dominant combination comes from (r10 - r01, r00 + r11) =
    (1 + cos beta)(sin, cos)(alpha + gamma) or (r10 + r01, r00 - r11) = (cos beta - 1)(sin,
    cos)(alpha - gamma), accurate to eps, and the other from the textbook alpha = atan2(r12, r02),
    gamma = atan2(r21, -r20), accurate to eps / sin beta. Together they fix alpha, gamma up to a
    common pi, which (r02, r12) = sin beta (cos alpha, sin alpha) resolves.
    """
    alpha_s = torch.atan2(r[..., 1, 2], r[..., 0, 2])
    gamma_s = torch.atan2(r[..., 2, 1], -r[..., 2, 0])
    near_zero = r[..., 2, 2] >= 0
    total = torch.where(near_zero,
                        torch.atan2(r[..., 1, 0] - r[..., 0, 1], r[..., 0, 0] + r[..., 1, 1]),
                        alpha_s + gamma_s)
    diff = torch.where(near_zero, alpha_s - gamma_s,
                       torch.atan2(-(r[..., 1, 0] + r[..., 0, 1]), r[..., 1, 1] - r[..., 0, 0]))
    beta = torch.atan2(torch.hypot(r[..., 0, 2], r[..., 1, 2]), r[..., 2, 2])
    alpha, gamma = (total + diff) / 2, (total - diff) / 2
    flip = (r[..., 0, 2] * torch.cos(alpha) + r[..., 1, 2] * torch.sin(alpha)) < 0
    alpha = torch.where(flip, alpha + math.pi, alpha)
    gamma = torch.where(flip, gamma + math.pi, gamma)
    angles = (torch.remainder(t, math.pi) for t in (alpha / 2, (beta + alpha - gamma) / 4,
                                                    -gamma / 2))
    # remainder(-1e-17, pi) rounds to pi, and remainder(-0.0, pi) is -0.0: both are 0 here
    return tuple(torch.where(t < math.pi, t, 0.0) + 0.0 for t in angles)


def _unit(x: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """x / norm along the last axis, and e1 where norm = 0 (a pure rotation has no boost axis)."""
    e1 = torch.zeros_like(x)
    e1[..., 0] = 1
    nonzero = (norm > 0)[..., None]
    return torch.where(nonzero, x / torch.where(nonzero, norm[..., None], 1), e1)


def _frame(n: torch.Tensor) -> torch.Tensor:
    """A rotation (..., 3, 3) whose first column is the unit vector n: Z(azimuth) Y(-elevation)."""
    az = torch.atan2(n[..., 1], n[..., 0])
    el = torch.atan2(n[..., 2], torch.hypot(n[..., 0], n[..., 1]))
    ca, sa, ce, se = torch.cos(az), torch.sin(az), torch.cos(el), torch.sin(el)
    z = torch.zeros_like(ca)
    return torch.stack([torch.stack([ca * ce, -sa, -ca * se], -1),
                        torch.stack([sa * ce, ca, -sa * se], -1),
                        torch.stack([se, z, ce], -1)], -2)


def _waveplates(r: torch.Tensor, dtype: torch.dtype) -> list[Element]:
    t1, t2, t3 = (t.to(dtype) for t in _qhq_angles(r))
    return [Element.retarder(math.pi / 2, t3, kind="qwp"),
            Element.retarder(math.pi, t2, kind="hwp"),
            Element.retarder(math.pi / 2, t1, kind="qwp")]


def compile_lorentz(L: torch.Tensor, *, t_max: Scalar = 1.0,
                    rtol: float | None = None) -> OpticalProgram:
    """The optical program QWP-HWP-QWP, partial polariser, QWP-HWP-QWP realising L (..., 4, 4).

    L must be a proper orthochronous Lorentz transform (checked as in ``mueller_to_lorentz``,
    tolerance ``rtol``). The partial polariser is horizontal with transmittances ``t_max`` and
    t_max exp(-2 eta), so the program's transmission is t_max exp(-eta), the passive maximum for
    t_max = 1. Computed in float64, returned in the dtype of L. Not differentiable in L (the
    angles pick branches): to train, make the program's knobs the parameters.
    """
    check_lorentz("L", L, rtol)
    L64 = L.detach().double()
    col = L64[..., 1:, 0]
    sinh_eta = torch.linalg.vector_norm(col, dim=-1)
    r1 = _frame(_unit(col, sinh_eta))
    p = r1.mT @ L64[..., 1:, 1:]  # = diag(cosh eta, 1, 1) r2
    g = _frame(_unit(p[..., 0, :], torch.linalg.vector_norm(p[..., 0, :], dim=-1)))
    q = p @ g  # = diag(cosh eta, X(phi)): only the twist phi about S1 is left
    phi = torch.atan2(q[..., 2, 1] - q[..., 1, 2], q[..., 1, 1] + q[..., 2, 2])
    c, s = torch.cos(phi), torch.sin(phi)
    one, z = torch.ones_like(c), torch.zeros_like(c)
    twist = torch.stack([torch.stack([one, z, z], -1), torch.stack([z, c, -s], -1),
                         torch.stack([z, s, c], -1)], -2)
    boost = Element.boost(torch.asinh(sinh_eta).to(L.dtype), 0.0, t_max=t_max)
    return OpticalProgram((*_waveplates(twist @ g.mT, L.dtype), boost,
                           *_waveplates(r1, L.dtype)))
