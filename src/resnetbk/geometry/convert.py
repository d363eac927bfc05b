"""Exact maps between the Lorentz hyperboloid, the Poincaré ball and the Klein ball.

All three models have curvature -c; both balls have radius 1/sqrt(c). For a Lorentz point
x = (x_0, x_s): Poincaré p = x_s / (1 + sqrt(c) x_0), Klein k = x_s / (sqrt(c) x_0). The Klein
coordinate is the one optics measures (normalised Stokes vector, SPEC 3.7).
"""

from __future__ import annotations

import torch

from resnetbk.debug import check_curvature, check_floating
from resnetbk.geometry import lorentz, poincare
from resnetbk.geometry.numerics import as_curvature, read_radius, sqrt_c, upcast

Curvature = float | torch.Tensor

__all__ = [
    "klein_to_lorentz",
    "klein_to_poincare",
    "lorentz_to_klein",
    "lorentz_to_poincare",
    "poincare_to_klein",
    "poincare_to_lorentz",
]


def _klein_gap(k: torch.Tensor, c: Curvature, storage_dtype: torch.dtype) -> torch.Tensor:
    """1 - c|k|^2, floored: Klein points closer to the boundary are read as on the floor.

    The floor is the larger of (a) the gap of the Klein image of the Poincaré read radius r,
    ((1 - r^2)/(1 + r^2))^2 (about eps^2 at r = 1 - eps, evaluated in closed form: the
    textbook 1 - (2r/(1 + r^2))^2 rounds to 0 in float64), and (b) 4 eps of the compute dtype,
    below which the computed gap (absolute error ~ eps) carries no information. Klein
    coordinates therefore resolve rapidities up to arcosh(1/sqrt(floor)): ~18 in float64, ~8 in
    float32 (their gap is 1/cosh(r)^2, the square of the Poincaré one).
    """
    r = read_radius(storage_dtype)
    floor = max(((1 - r) * (1 + r) / (1 + r * r)) ** 2, 4 * torch.finfo(k.dtype).eps)
    return (1 - c * k.pow(2).sum(-1, keepdim=True)).clamp_min(floor)


def _check(name: str, x: torch.Tensor, c: Curvature, lorentz_point: bool = False) -> None:
    check_floating(name, x)
    if lorentz_point and x.shape[-1] < 2:
        raise ValueError(
            f"{name} needs at least 2 coordinates (time first), got {x.shape[-1]}"
        )
    check_curvature(c)


def lorentz_to_poincare(x: torch.Tensor, *, c: Curvature) -> torch.Tensor:
    """Hyperboloid (d+1) -> Poincaré ball (d): x_s / (1 + sqrt(c) x_0)."""
    _check("x", x, c, lorentz_point=True)
    lorentz.check_point("x", x, c)
    (xc,) = upcast(x)
    cc = as_curvature(c, xc)
    p = xc[..., 1:] / (1 + sqrt_c(cc) * xc[..., :1])
    return poincare._project(p, cc, x.dtype).to(x.dtype)


def poincare_to_lorentz(p: torch.Tensor, *, c: Curvature) -> torch.Tensor:
    """Poincaré ball (d) -> hyperboloid (d+1): (1 + c|p|^2, 2 sqrt(c) p) / (sqrt(c)(1 - c|p|^2))."""
    _check("p", p, c)
    poincare.check_point("p", p, c)
    (pc,) = upcast(p)
    cc = as_curvature(c, pc)
    pc = poincare._read(pc, cc, p.dtype)
    gap = poincare._gap(pc, cc)
    space = 2 * pc / gap
    return lorentz._from_spatial(space, cc, p.dtype).to(p.dtype)


def lorentz_to_klein(x: torch.Tensor, *, c: Curvature) -> torch.Tensor:
    """Hyperboloid (d+1) -> Klein ball (d): x_s / (sqrt(c) x_0)."""
    _check("x", x, c, lorentz_point=True)
    lorentz.check_point("x", x, c)
    (xc,) = upcast(x)
    cc = as_curvature(c, xc)
    return (xc[..., 1:] / (sqrt_c(cc) * xc[..., :1])).to(x.dtype)


def klein_to_lorentz(k: torch.Tensor, *, c: Curvature) -> torch.Tensor:
    """Klein ball (d) -> hyperboloid (d+1): (1/sqrt(c), k) / sqrt(1 - c|k|^2)."""
    _check("k", k, c)
    poincare.check_point("k", k, c)
    (kc,) = upcast(k)
    cc = as_curvature(c, kc)
    space = kc / torch.sqrt(_klein_gap(kc, cc, k.dtype))
    return lorentz._from_spatial(space, cc, k.dtype).to(k.dtype)


def poincare_to_klein(p: torch.Tensor, *, c: Curvature) -> torch.Tensor:
    """Poincaré ball -> Klein ball: 2p / (1 + c|p|^2)."""
    _check("p", p, c)
    poincare.check_point("p", p, c)
    (pc,) = upcast(p)
    cc = as_curvature(c, pc)
    pc = poincare._read(pc, cc, p.dtype)
    return (2 * pc / (1 + cc * pc.pow(2).sum(-1, keepdim=True))).to(p.dtype)


def klein_to_poincare(k: torch.Tensor, *, c: Curvature) -> torch.Tensor:
    """Klein ball -> Poincaré ball: k / (1 + sqrt(1 - c|k|^2))."""
    _check("k", k, c)
    poincare.check_point("k", k, c)
    (kc,) = upcast(k)
    cc = as_curvature(c, kc)
    p = kc / (1 + torch.sqrt(_klein_gap(kc, cc, k.dtype)))
    return poincare._project(p, cc, k.dtype).to(k.dtype)
