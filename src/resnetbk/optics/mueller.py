"""Stokes vectors and Mueller matrices of polarisation optics, batched and differentiable.

Convention (D. Goldstein, *Polarized Light*, CRC Press; the same as py-pol): Stokes vectors
S = (S0, S1, S2, S3) with S1 = I_0deg - I_90deg, S2 = I_45deg - I_135deg; Mueller matrices act as
S' = M S; an element turned to azimuth theta (radians, counter-clockwise from the horizontal
axis, looking into the beam) is M(theta) = R(2 theta) M(0) R(-2 theta), R the rotation of the
(S1, S2) plane. A linear retarder of retardance delta with its fast axis horizontal has the block
[[cos delta, sin delta], [-sin delta, cos delta]] on (S2, S3). docs/OPTICS.md maps every element
onto its py-pol constructor (the test oracle).

Every constructor takes floats or float32/float64 tensors that broadcast together, returns a
(..., 4, 4) tensor of their promoted dtype (the default dtype when all are floats), and is
differentiable in every tensor argument. Bad values raise ValueError naming the argument; the
value checks (ranges, finiteness) read the data, so like the geometry checks they run for CPU
tensors always and for accelerator tensors in debug mode (``resnetbk.debug_checks``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch

from resnetbk.debug import debug_enabled

Scalar = float | torch.Tensor

__all__ = [
    "compose",
    "degree_of_polarization",
    "depolarizer",
    "diattenuating_retarder",
    "diattenuation",
    "diattenuator",
    "faraday_rotator",
    "hwp",
    "max_transmission",
    "polarizer",
    "polarizing_beam_splitter",
    "propagate",
    "qwp",
    "retarder",
    "rotator",
    "stokes",
    "unpolarized",
]

DTYPES = (torch.float32, torch.float64)


def values_checked(t: torch.Tensor) -> bool:
    """Whether value checks read ``t``: always on the CPU, in debug mode on accelerators (a
    check there would synchronise the host)."""
    return t.device.type == "cpu" or debug_enabled()


def require(name: str, t: torch.Tensor, ok: Callable[[torch.Tensor], torch.Tensor],
            expected: str) -> None:
    """Raise ValueError naming ``name`` unless ``ok(t)`` holds everywhere (NaN fails)."""
    if not values_checked(t):
        return
    good = ok(t.detach())
    if not bool(good.all()):
        bad = t.detach().expand_as(good)[~good].flatten()[0].item()
        raise ValueError(f"{name} must be {expected}, got {bad:.6g}")


def check_trailing(name: str, t: torch.Tensor, trailing: tuple[int, ...], what: str) -> None:
    """``t`` is a float32/float64 tensor whose last axes are ``trailing`` and whose values are
    finite (the value check as in ``require``)."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in DTYPES:
        raise ValueError(f"{name} must be float32 or float64, got {t.dtype}")
    if t.dim() < len(trailing) or tuple(t.shape[t.dim() - len(trailing):]) != trailing:
        want = "(..., " + ", ".join(map(str, trailing)) + ")"
        raise ValueError(f"{name} must be {what} of shape {want}, got {tuple(t.shape)}")
    require(name, t, torch.isfinite, "finite")


def as_tensors(like: torch.Tensor | None = None, **named: Scalar) -> list[torch.Tensor]:
    """The named parameters as finite tensors of one dtype and device, broadcast together.

    The dtype is the promotion of the tensor arguments (float32/float64 only) and of ``like``
    (whose device is then used), or the default dtype when there are none: Python numbers are
    converted in that dtype directly, never rounded through another.
    """
    tensors = [] if like is None else [like]
    for name, v in named.items():
        if isinstance(v, torch.Tensor):
            if v.dtype not in DTYPES:
                raise ValueError(f"{name} must be float32 or float64, got {v.dtype}")
            tensors.append(v)
        elif isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"{name} must be a float or a float tensor, got {type(v).__name__}")
    dtype = (functools.reduce(torch.promote_types, (t.dtype for t in tensors))
             if tensors else torch.get_default_dtype())
    device = tensors[0].device if tensors else None
    out = {n: torch.as_tensor(v, dtype=dtype, device=device) for n, v in named.items()}
    try:
        shape = torch.broadcast_shapes(*(t.shape for t in out.values()))
    except RuntimeError:
        shapes = ", ".join(f"{n}{tuple(t.shape)}" for n, t in out.items())
        raise ValueError(f"shapes do not broadcast: {shapes}") from None
    for n, t in out.items():
        require(n, t, torch.isfinite, "finite")
    return [t.expand(shape) for t in out.values()]


def check_transmittances(t_max: torch.Tensor, t_min: torch.Tensor) -> None:
    """0 <= t_min <= t_max <= 1: intensity transmittances of a passive linear element."""
    require("t_max", t_max, lambda x: x >= 0, "non-negative (an intensity transmittance)")
    require("t_min", t_min, lambda x: x >= 0, "non-negative (an intensity transmittance)")
    require("t_max", t_max, lambda x: x <= 1, "<= 1 (a passive element)")
    if values_checked(t_min) and not bool((t_min <= t_max).all()):
        raise ValueError("t_min must be <= t_max (t_min is the transmittance across the axis)")


def _matrix(rows: list[list[torch.Tensor]]) -> torch.Tensor:
    return torch.stack([torch.stack(row, -1) for row in rows], -2)


def diattenuating_retarder(t_max: Scalar, t_min: Scalar, retardance: Scalar,
                           angle: Scalar) -> torch.Tensor:
    """Linear diattenuating retarder: intensity transmittances ``t_max`` along its axis at
    ``angle`` and ``t_min`` across it, retardance ``retardance`` (fast axis = transmission axis).

    At angle 0, with a = (t_max + t_min)/2, b = (t_max - t_min)/2, g = sqrt(t_max t_min):
    [[a, b, 0, 0], [b, a, 0, 0], [0, 0, g cos d, g sin d], [0, 0, -g sin d, g cos d]], rotated to
    ``angle`` in closed form. Every linear element of this module is this matrix: a
    diattenuator (d = 0), a retarder (t_max = t_min = 1), a polariser (t_min = 0).
    Requires 0 <= t_min <= t_max <= 1 (passive: max transmission M00(1 + D) = t_max).
    """
    q, r, d, th = as_tensors(t_max=t_max, t_min=t_min, retardance=retardance, angle=angle)
    check_transmittances(q, r)
    a, b = (q + r) / 2, (q - r) / 2
    # sqrt(q) sqrt(r), not sqrt(q r): the gradient in t_max stays finite for t_min = 0.
    g = torch.sqrt(q) * torch.sqrt(r)
    gc, gs = g * torch.cos(d), g * torch.sin(d)
    c2, s2 = torch.cos(2 * th), torch.sin(2 * th)
    z = torch.zeros_like(a)
    cross = (a - gc) * c2 * s2
    return _matrix([
        [a, b * c2, b * s2, z],
        [b * c2, a * c2 * c2 + gc * s2 * s2, cross, -gs * s2],
        [b * s2, cross, a * s2 * s2 + gc * c2 * c2, gs * c2],
        [z, gs * s2, -gs * c2, gc],
    ])


def diattenuator(t_max: Scalar, t_min: Scalar, angle: Scalar = 0.0) -> torch.Tensor:
    """Linear diattenuator (partial polariser), transmission axis at ``angle``.

    Its diattenuation D = (t_max - t_min)/(t_max + t_min); normalised by det(M)^(1/4) =
    sqrt(t_max t_min) it is a Lorentz boost along its axis with rapidity artanh(D) =
    0.5 ln(t_max/t_min).
    """
    return diattenuating_retarder(t_max, t_min, 0.0, angle)


def polarizer(angle: Scalar = 0.0) -> torch.Tensor:
    """Ideal linear polariser, transmission axis at ``angle``: singular (infinite rapidity)."""
    return diattenuating_retarder(1.0, 0.0, 0.0, angle)


def retarder(retardance: Scalar, angle: Scalar = 0.0) -> torch.Tensor:
    """Linear retarder, fast axis at ``angle``: a rotation of (S1, S2, S3) by -retardance
    (right-handed) about the Stokes axis (cos 2 angle, sin 2 angle, 0)."""
    return diattenuating_retarder(1.0, 1.0, retardance, angle)


def qwp(angle: Scalar = 0.0) -> torch.Tensor:
    """Quarter-wave plate (retardance pi/2), fast axis at ``angle``."""
    return retarder(math.pi / 2, angle)


def hwp(angle: Scalar = 0.0) -> torch.Tensor:
    """Half-wave plate (retardance pi), fast axis at ``angle``: azimuth alpha -> 2 angle - alpha."""
    return retarder(math.pi, angle)


def rotator(angle: Scalar) -> torch.Tensor:
    """Rotator (circular retarder) turning the polarisation azimuth by +``angle``: the rotation
    of (S1, S2) by 2 angle. With it, an element at theta is rotator(theta) M(0) rotator(-theta).
    (Goldstein's M_ROT(theta) is the frame rotation, i.e. rotator(-theta).)"""
    (th,) = as_tensors(angle=angle)
    c2, s2 = torch.cos(2 * th), torch.sin(2 * th)
    one, z = torch.ones_like(c2), torch.zeros_like(c2)
    return _matrix([[one, z, z, z], [z, c2, -s2, z], [z, s2, c2, z], [z, z, z, one]])


def faraday_rotator(verdet: Scalar, field: Scalar, length: Scalar) -> torch.Tensor:
    """Faraday rotator: ``rotator(verdet * field * length)``.

    ``verdet`` in rad/(T m) (TGG: about -40 near 1 um), ``field`` the flux density along the
    propagation direction in T, ``length`` in m (>= 0). Single pass only: the rotation is
    non-reciprocal (a return pass doubles it instead of undoing it), which a feed-forward
    program never sees.
    """
    v, b, n = as_tensors(verdet=verdet, field=field, length=length)
    require("length", n, lambda x: x >= 0, "non-negative (a length in m)")
    return rotator(v * b * n)


def polarizing_beam_splitter(angle: Scalar = 0.0, t_max: Scalar = 1.0,
                             t_min: Scalar = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The two output channels of a polarising beam splitter: (transmitted, reflected) Mueller
    matrices, diattenuators with axes at ``angle`` and ``angle + pi/2``.

    ``t_min`` is the leak of the rejected polarisation into each port (0: ideal); the port
    transmittances must satisfy t_max + t_min <= 1 (the two ports share the input light).
    """
    q, r, th = as_tensors(t_max=t_max, t_min=t_min, angle=angle)
    if values_checked(q) and not bool((q + r <= 1).all()):
        raise ValueError("t_max + t_min must be <= 1: the two ports share the input light")
    return diattenuator(q, r, th), diattenuator(q, r, th + math.pi / 2)


def depolarizer(retained: Scalar, transmission: Scalar = 1.0) -> torch.Tensor:
    """Isotropic partial depolariser: transmission * diag(1, retained, retained, retained).

    ``retained`` in [0, 1] is the fraction of the degree of polarisation kept (0: ideal
    depolariser). Not a Lorentz transform for retained < 1 (``mueller_to_lorentz`` rejects it).
    """
    d, t = as_tensors(retained=retained, transmission=transmission)
    require("retained", d, lambda x: (x >= 0) & (x <= 1), "in [0, 1]")
    require("transmission", t, lambda x: (x >= 0) & (x <= 1), "in [0, 1]")
    z = torch.zeros_like(t)
    td = t * d
    return _matrix([[t, z, z, z], [z, td, z, z], [z, z, td, z], [z, z, z, td]])


def compose(*matrices: torch.Tensor) -> torch.Tensor:
    """The Mueller matrix of elements traversed in the order given: M_n ... M_2 M_1 (the first
    argument is the element the light meets first). Batch axes broadcast."""
    if not matrices:
        raise ValueError("compose needs at least one Mueller matrix")
    for i, m in enumerate(matrices):
        check_trailing(f"matrices[{i}]", m, (4, 4), "a Mueller matrix")
    return functools.reduce(lambda acc, m: m @ acc, matrices[1:], matrices[0])


def propagate(mueller: torch.Tensor, stokes_vector: torch.Tensor) -> torch.Tensor:
    """M S: the Stokes vector (..., 4) after the element(s) ``mueller`` (..., 4, 4)."""
    check_trailing("mueller", mueller, (4, 4), "a Mueller matrix")
    check_trailing("stokes_vector", stokes_vector, (4,), "a Stokes vector")
    return (mueller @ stokes_vector.unsqueeze(-1)).squeeze(-1)


def stokes(intensity: Scalar, azimuth: Scalar, ellipticity: Scalar,
           degree: Scalar = 1.0) -> torch.Tensor:
    """Stokes vector I (1, P cos 2chi cos 2psi, P cos 2chi sin 2psi, P sin 2chi) of light with
    ``intensity`` I >= 0, polarisation ``azimuth`` psi, ellipticity angle chi (``ellipticity``,
    in [-pi/4, pi/4] for the usual range) and degree of polarisation P = ``degree`` in [0, 1]."""
    i, psi, chi, p = as_tensors(intensity=intensity, azimuth=azimuth, ellipticity=ellipticity,
                                degree=degree)
    require("intensity", i, lambda x: x >= 0, "non-negative")
    require("degree", p, lambda x: (x >= 0) & (x <= 1), "in [0, 1]")
    ip = i * p
    return torch.stack([i, ip * torch.cos(2 * chi) * torch.cos(2 * psi),
                        ip * torch.cos(2 * chi) * torch.sin(2 * psi),
                        ip * torch.sin(2 * chi)], -1)


def unpolarized(intensity: Scalar = 1.0) -> torch.Tensor:
    """Unpolarised light (I, 0, 0, 0): the origin of H^3."""
    (i,) = as_tensors(intensity=intensity)
    require("intensity", i, lambda x: x >= 0, "non-negative")
    z = torch.zeros_like(i)
    return torch.stack([i, z, z, z], -1)


def degree_of_polarization(stokes_vector: torch.Tensor) -> torch.Tensor:
    """P = |(S1, S2, S3)| / S0 (..., ): tanh of the rapidity of the point on H^3."""
    check_trailing("stokes_vector", stokes_vector, (4,), "a Stokes vector")
    return torch.linalg.vector_norm(stokes_vector[..., 1:], dim=-1) / stokes_vector[..., 0]


def diattenuation(mueller: torch.Tensor) -> torch.Tensor:
    """D = |(M01, M02, M03)| / M00 (..., ): (T_max - T_min)/(T_max + T_min) over input states."""
    check_trailing("mueller", mueller, (4, 4), "a Mueller matrix")
    return torch.linalg.vector_norm(mueller[..., 0, 1:], dim=-1) / mueller[..., 0, 0]


def max_transmission(mueller: torch.Tensor) -> torch.Tensor:
    """M00 (1 + D) (..., ): the largest intensity transmittance over all input polarisations.
    An element (or program) is passive iff it is <= 1; for M = k L (L Lorentz, rapidity eta) it
    is k e^eta, hence k <= e^-eta."""
    check_trailing("mueller", mueller, (4, 4), "a Mueller matrix")
    return mueller[..., 0, 0] + torch.linalg.vector_norm(mueller[..., 0, 1:], dim=-1)
