"""The Lorentz correspondence: non-depolarising Mueller matrices are scaled Lorentz transforms,
and Stokes vectors are points of H^3.

For any non-depolarising Mueller matrix M (one that comes from a Jones matrix J),
M^T G M = |det J|^2 G with G = diag(1, -1, -1, -1) and det M = |det J|^4, so
L = M / det(M)^(1/4) is a proper orthochronous Lorentz transform (SO+(3,1)); retarders give
rotations, diattenuators boosts. A Stokes vector S of degree of polarisation P < 1 is the point
S / sqrt(c (S0^2 - |s|^2)) of the hyperboloid <x, x>_L = -1/c (time coordinate S0 first, as in
``resnetbk.geometry.lorentz``), at rapidity artanh(P); s / S0 = sqrt(c) k is its Klein
coordinate k (SPEC 3.7), not the Poincaré one. Light of intensity I is the point scaled by I:
intensity is the projective scale, which Mueller matrices change by their gain k.

Accuracy. A Lorentz matrix of rapidity eta has entries ~ e^eta / 2, so its rounding alone moves
L^T G L by ~ eps e^(2 eta); ``lorentz_defect`` measures it relative to those terms, which keeps
one tolerance valid at any eta. det(M) of a rounded M carries a relative error up to
~ eps e^(2 eta), so ``mueller_to_lorentz`` holds 1e-10 in float64 up to eta ~ 6 (docs/OPTICS.md
has the measured table); ``OpticalProgram.lorentz`` divides by the exactly known gain instead.
"""

from __future__ import annotations

import torch

from resnetbk.debug import check_curvature
from resnetbk.geometry import convert
from resnetbk.geometry.numerics import as_curvature, sqrt_c
from resnetbk.optics.mueller import Scalar, as_tensors, check_trailing, require, values_checked

Curvature = float | torch.Tensor

__all__ = [
    "klein_to_stokes",
    "lorentz_defect",
    "lorentz_to_mueller",
    "lorentz_to_stokes",
    "minkowski_metric",
    "mueller_to_lorentz",
    "poincare_to_stokes",
    "random_lorentz",
    "rapidity",
    "stokes_to_klein",
    "stokes_to_lorentz",
    "stokes_to_poincare",
]

# Default tolerance of the Lorentz condition, relative to the size of its terms: a product of
# a few dozen elements stays well inside it, while a depolarising matrix (defect O(P loss)) or
# a non-Mueller matrix fails.
_RTOL = {torch.float64: 1e-9, torch.float32: 1e-4}


def minkowski_metric(like: torch.Tensor) -> torch.Tensor:
    """G = diag(1, -1, -1, -1) in the dtype and device of ``like``."""
    return torch.diag(torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=like.dtype, device=like.device))


def lorentz_defect(L: torch.Tensor) -> torch.Tensor:
    """max_ij |(L^T G L - G)_ij| / (|L_:i| |L_:j|) per matrix (...,): how far L is from a Lorentz
    transform, relative to the size of the terms of L^T G L (so rounding gives ~ eps at any
    rapidity). Zero columns give Inf; NaN propagates."""
    check_trailing("L", L, (4, 4), "a 4x4 matrix")
    G = minkowski_metric(L)
    err = (L.mT @ G @ L - G).abs()
    cols = torch.linalg.vector_norm(L, dim=-2)
    return (err / (cols[..., :, None] * cols[..., None, :])).amax((-2, -1))


def check_lorentz(name: str, L: torch.Tensor, rtol: float | None, context: str = "") -> None:
    """Raise ValueError unless every L is a proper orthochronous Lorentz transform within
    ``rtol`` (relative defect, see ``lorentz_defect``): L00 > 0 and det of the spatial block
    > 0 (robust where det L itself is not: its relative error is ~ eps e^eta, not eps e^(2 eta))."""
    check_trailing(name, L, (4, 4), "a 4x4 matrix")
    if not values_checked(L):
        return
    tol = _RTOL[L.dtype] if rtol is None else rtol
    defect = lorentz_defect(L.detach())
    if not bool((defect <= tol).all()):
        worst = defect.max().item()
        raise ValueError(
            f"{name}{context} is not a Lorentz transform: L^T G L = G fails with relative error "
            f"{worst:.3g} > rtol {tol:.1g} (a depolarising or non-physical Mueller matrix, or "
            f"not a Lorentz matrix)"
        )
    if not bool((L[..., 0, 0] > 0).all()):
        raise ValueError(f"{name}{context} is not orthochronous: some L00 <= 0")
    if not bool((torch.linalg.det(L.detach()[..., 1:, 1:].double()) > 0).all()):
        raise ValueError(f"{name}{context} is improper (det -1, a reflection): polarisation "
                         f"optics realises only SO+(3,1)")


def mueller_to_lorentz(M: torch.Tensor, *, rtol: float | None = None) -> torch.Tensor:
    """L = M / det(M)^(1/4) for a non-depolarising Mueller matrix M (..., 4, 4).

    Raises ValueError when det(M) <= 0 (singular: an ideal polariser, a full depolariser) or
    when the normalised L fails L^T G L = G by more than ``rtol`` (relative, default 1e-9 in
    float64, 1e-4 in float32): a depolarising or non-physical matrix. float64 holds 1e-10 up to
    rapidity ~ 6, float32 1e-4 up to ~ 4 (the determinant's conditioning; docs/OPTICS.md).
    """
    check_trailing("M", M, (4, 4), "a Mueller matrix")
    det = torch.linalg.det(M)
    if values_checked(M) and not bool((det > 0).all()):
        worst = det.detach().min().item()
        raise ValueError(
            f"M is singular or improper: det(M) = {worst:.3g}, but a non-depolarising Mueller "
            f"matrix has det(M) = k^4 > 0 (an ideal polariser or depolariser has det 0)"
        )
    L = M / det.pow(0.25)[..., None, None]
    check_lorentz("M", L, rtol, " normalised by det(M)^(1/4)")
    return L


def rapidity(L: torch.Tensor) -> torch.Tensor:
    """Rapidity eta (...,) of a Lorentz transform L = R1 B(eta) R2: asinh |L[1:, 0]| (= arcosh
    L00, accurate also near 0). A diattenuator has eta = artanh D = 0.5 ln(t_max / t_min)."""
    check_trailing("L", L, (4, 4), "a 4x4 matrix")
    return torch.asinh(torch.linalg.vector_norm(L[..., 1:, 0], dim=-1))


def random_lorentz(rapidity: Scalar, *, generator: torch.Generator,
                   dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Random Lorentz transforms R1 B(rapidity) R2 (..., 4, 4), batch shape that of
    ``rapidity`` (>= 0), with R1, R2 Haar-random rotations (normalised Gaussian quaternions):
    test inputs and initial values of given rapidity. Built in float64, returned in ``dtype``."""
    (eta,) = as_tensors(rapidity=rapidity)
    require("rapidity", eta, lambda x: x >= 0, "non-negative")
    eta = eta.detach().double().cpu()

    def rotation() -> torch.Tensor:
        q = torch.randn(*eta.shape, 4, generator=generator, dtype=torch.float64,
                        device=generator.device).cpu()
        w, x, y, z = (q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)).unbind(-1)
        r = torch.zeros(*eta.shape, 4, 4, dtype=torch.float64)
        r[..., 0, 0] = 1
        r[..., 1:, 1:] = torch.stack([
            torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            torch.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            torch.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ], -2)
        return r

    boost = torch.eye(4, dtype=torch.float64).expand(*eta.shape, 4, 4).clone()
    boost[..., 0, 0] = boost[..., 1, 1] = torch.cosh(eta)
    boost[..., 0, 1] = boost[..., 1, 0] = torch.sinh(eta)
    return (rotation() @ boost @ rotation()).to(dtype)


def lorentz_to_mueller(L: torch.Tensor, gain: Scalar | None = None, *,
                       rtol: float | None = None) -> torch.Tensor:
    """The Mueller matrix gain * L of a Lorentz transform L (..., 4, 4) (checked like
    ``mueller_to_lorentz``). ``gain`` > 0 broadcasts against the batch shape; the default
    exp(-eta) is the largest passive gain (max transmission gain e^eta = 1), what one ideal
    partial polariser of rapidity eta and lossless waveplates achieve."""
    check_lorentz("L", L, rtol)
    if gain is None:
        return torch.exp(-rapidity(L))[..., None, None] * L
    (k,) = as_tensors(L[..., 0, 0], gain=gain)
    require("gain", k, lambda x: x > 0, "positive")
    return k[..., None, None] * L


def _stokes_klein(S: torch.Tensor, c: Curvature, open_ball: bool) -> torch.Tensor:
    check_trailing("S", S, (4,), "a Stokes vector")
    check_curvature(c)
    require("S0", S[..., 0], lambda x: x > 0, "positive (no light, no point)")
    p = torch.linalg.vector_norm(S[..., 1:], dim=-1) / S[..., 0]
    if open_ball:
        require("degree of polarisation |s|/S0", p, lambda x: x < 1,
                "< 1 (fully polarised light lies at infinity on H^3)")
    else:
        slack = 1 + 8 * torch.finfo(S.dtype).eps
        require("degree of polarisation |s|/S0", p, lambda x: x <= slack,
                "<= 1 (physical Stokes vector)")
    return S[..., 1:] / (S[..., :1] * sqrt_c(as_curvature(c, S)))


def stokes_to_klein(S: torch.Tensor, *, c: Curvature = 1.0) -> torch.Tensor:
    """Klein coordinate k = s / (sqrt(c) S0) (..., 3) of a Stokes vector (degree <= 1; P = 1 is
    the boundary sphere)."""
    return _stokes_klein(S, c, open_ball=False)


def klein_to_stokes(k: torch.Tensor, *, c: Curvature = 1.0, intensity: Scalar = 1.0
                    ) -> torch.Tensor:
    """Stokes vector intensity (1, sqrt(c) k) (..., 4) of a Klein point k (..., 3)."""
    check_trailing("k", k, (3,), "a Klein point")
    check_curvature(c)
    (i,) = as_tensors(k[..., 0], intensity=intensity)
    require("intensity", i, lambda x: x >= 0, "non-negative")
    s = sqrt_c(as_curvature(c, k)) * k
    require("sqrt(c)|k|", torch.linalg.vector_norm(s, dim=-1),
            lambda x: x <= 1 + 8 * torch.finfo(k.dtype).eps, "<= 1 (inside the Klein ball)")
    return i[..., None] * torch.cat([torch.ones_like(s[..., :1]), s], -1)


def stokes_to_lorentz(S: torch.Tensor, *, c: Curvature = 1.0) -> torch.Tensor:
    """The hyperboloid point (..., 4) of a partially polarised Stokes vector (degree P < 1): at
    rapidity artanh P in the direction of s. Via ``convert.klein_to_lorentz``, which resolves
    rapidities up to ~18 in float64 and ~8 in float32 (its documented floor)."""
    return convert.klein_to_lorentz(_stokes_klein(S, c, open_ball=True), c=c)


def lorentz_to_stokes(x: torch.Tensor, *, c: Curvature = 1.0, intensity: Scalar = 1.0
                      ) -> torch.Tensor:
    """Stokes vector of intensity ``intensity`` at the hyperboloid point x (..., 4):
    intensity (1, x_s / x_0)."""
    check_trailing("x", x, (4,), "a point of H^3 (time coordinate first)")
    return klein_to_stokes(convert.lorentz_to_klein(x, c=c), c=c, intensity=intensity)


def stokes_to_poincare(S: torch.Tensor, *, c: Curvature = 1.0) -> torch.Tensor:
    """Poincaré-ball point (..., 3) of a Stokes vector of degree P < 1: s/(S0 + sqrt(S0^2 -
    |s|^2)) / sqrt(c), via ``convert.klein_to_poincare``."""
    return convert.klein_to_poincare(_stokes_klein(S, c, open_ball=True), c=c)


def poincare_to_stokes(p: torch.Tensor, *, c: Curvature = 1.0, intensity: Scalar = 1.0
                       ) -> torch.Tensor:
    """Stokes vector of intensity ``intensity`` at the Poincaré-ball point p (..., 3)."""
    check_trailing("p", p, (3,), "a Poincaré-ball point")
    return klein_to_stokes(convert.poincare_to_klein(p, c=c), c=c, intensity=intensity)
