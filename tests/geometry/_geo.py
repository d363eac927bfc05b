"""Shared helpers for the geometry tests: random points in each regime and an mpmath oracle.

Regimes (curvature -c; "rapidity" is sqrt(c) times the distance from the origin, so a regime
means the same thing for every c):
- moderate: rapidity uniform in [0, rmax];
- boundary: Poincaré points with sqrt(c)|x| = 1 - 1e-6 (rapidity 2 artanh(1 - 1e-6) = 14.5);
- far: Lorentz points at rapidity 30 (distance 30/sqrt(c) from the origin).

The oracle evaluates the textbook formulas in mpmath at 60 significant digits on the exact
values of the float64 inputs. A Lorentz point is its spatial part (the time coordinate is
recomputed exactly as sqrt(1/c + |x_s|^2)); a Lorentz tangent vector at x is its spatial part
(u_0 = <x_s, u_s>/x_0), which is the convention of ``resnetbk.geometry.lorentz``.
"""

from __future__ import annotations

import math

import mpmath as mp
import torch
from hypothesis import HealthCheck, settings

from resnetbk.geometry import lorentz

F64 = torch.float64
CURVATURES = (0.1, 1.0, 3.7)
BOUNDARY = 1 - 1e-6
FAR = 30.0
DPS = 60

# Hypothesis settings for the property tests: fresh examples every run (hypothesis draws its
# own seed), no example database written to the checkout, no deadline (CPU timing noise).
PROPS = settings(
    max_examples=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# ----------------------------------------------------------------------------- generators


def generator(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def unit(g: torch.Generator, n: int, d: int) -> torch.Tensor:
    v = torch.randn(n, d, generator=g, dtype=F64)
    return v / v.norm(dim=-1, keepdim=True)


def rapidities(g: torch.Generator, n: int, rmax: float) -> torch.Tensor:
    return torch.rand(n, 1, generator=g, dtype=F64) * rmax


def ball(g: torch.Generator, n: int, d: int, c: float, rmax: float = 4.0) -> torch.Tensor:
    """Poincaré points with rapidity uniform in [0, rmax]: sqrt(c)|x| = tanh(rapidity / 2)."""
    return torch.tanh(rapidities(g, n, rmax) / 2) * unit(g, n, d) / math.sqrt(c)


def ball_boundary(g: torch.Generator, n: int, d: int, c: float) -> torch.Tensor:
    """Poincaré points at sqrt(c)|x| = 1 - 1e-6."""
    return BOUNDARY * unit(g, n, d) / math.sqrt(c)


def hyperboloid_at(r: torch.Tensor | float, direction: torch.Tensor, c: float) -> torch.Tensor:
    """Lorentz points at rapidity r in the given unit directions (time first)."""
    space = torch.sinh(torch.as_tensor(r, dtype=F64)) * direction / math.sqrt(c)
    return lorentz.project(torch.cat([torch.zeros_like(space[..., :1]), space], -1), c=c)


def hyperboloid(g: torch.Generator, n: int, d: int, c: float, rmax: float = 4.0) -> torch.Tensor:
    return hyperboloid_at(rapidities(g, n, rmax), unit(g, n, d), c)


def lorentz_tangent(g: torch.Generator, x: torch.Tensor, c: float, scale: float = 1.0,
                    length: float | None = None) -> torch.Tensor:
    """Random tangent vectors at x, built in the orthonormal frame of x (radial unit
    (sinh r, cosh r xhat), orthogonal units (0, e)), so that they are exactly tangent and of
    controlled Lorentz norm even far from the origin (where the ambient Minkowski norm of a
    tangent vector cancels): the frame components are scale * N(0, I_d), or a random
    direction of norm ``length``."""
    d = x.shape[-1] - 1
    v = torch.randn(*x.shape[:-1], d, generator=g, dtype=F64)
    v = v * scale if length is None else v / v.norm(dim=-1, keepdim=True) * length
    xs = x[..., 1:]
    ns = xs.norm(dim=-1, keepdim=True)
    xhat = torch.where(ns > 0, xs / ns.clamp_min(1e-300), torch.zeros_like(xs))
    rad = (v * xhat).sum(-1, keepdim=True)
    perp = v - rad * xhat
    sc = math.sqrt(c)
    time = rad * sc * ns
    space = perp + rad * sc * x[..., :1] * xhat
    return torch.cat([time, space], -1)


def near(g: torch.Generator, x: torch.Tensor, c: float, dist: float) -> torch.Tensor:
    """Lorentz points at distance dist (random direction) from each x, via the exp map."""
    return lorentz.expmap(x, lorentz_tangent(g, x, c, length=dist), c=c)


# ----------------------------------------------------------------------------- mpmath oracle


def to_mp(t: torch.Tensor) -> list:
    """Rows of a 2-D float64 tensor as lists of exact mpf values."""
    return [[mp.mpf(float(v)) for v in row] for row in t.reshape(-1, t.shape[-1]).tolist()]


def from_mp(rows: list, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.tensor([[float(v) for v in row] for row in rows], dtype=F64).reshape(shape)


def scalars_from_mp(vals: list, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.tensor([float(v) for v in vals], dtype=F64).reshape(shape)


def _dot(a: list, b: list):
    return mp.fsum(p * q for p, q in zip(a, b, strict=True))


def _scale(s, a: list) -> list:
    return [s * v for v in a]


def _add(a: list, b: list) -> list:
    return [p + q for p, q in zip(a, b, strict=True)]


def _sub(a: list, b: list) -> list:
    return [p - q for p, q in zip(a, b, strict=True)]


def _norm(a: list):
    return mp.sqrt(_dot(a, a))


class Oracle:
    """Textbook formulas in mpmath (60 digits). Vectors are lists of mpf; c is an mpf."""

    def __init__(self, c: float) -> None:
        mp.mp.dps = DPS
        self.c = mp.mpf(c)
        self.sc = mp.sqrt(self.c)

    # --- Poincaré ball
    def mobius_add(self, x: list, y: list) -> list:
        c = self.c
        xy, x2, y2 = _dot(x, y), _dot(x, x), _dot(y, y)
        num = _add(_scale(1 + 2 * c * xy + c * y2, x), _scale(1 - c * x2, y))
        return _scale(1 / (1 + 2 * c * xy + c * c * x2 * y2), num)

    def lam(self, x: list):
        return 2 / (1 - self.c * _dot(x, x))

    def dist(self, x: list, y: list):
        w = self.mobius_add(_scale(-1, x), y)
        return 2 / self.sc * mp.atanh(self.sc * _norm(w))

    def dist0(self, x: list):
        return 2 / self.sc * mp.atanh(self.sc * _norm(x))

    def expmap(self, x: list, u: list) -> list:
        un = _norm(u)
        if un == 0:
            return list(x)
        second = _scale(mp.tanh(self.sc * self.lam(x) * un / 2) / (self.sc * un), u)
        return self.mobius_add(x, second)

    def logmap(self, x: list, y: list) -> list:
        w = self.mobius_add(_scale(-1, x), y)
        wn = _norm(w)
        if wn == 0:
            return [mp.mpf(0)] * len(x)
        return _scale(2 / (self.sc * self.lam(x)) * mp.atanh(self.sc * wn) / wn, w)

    def expmap0(self, u: list) -> list:
        un = _norm(u)
        return _scale(mp.tanh(self.sc * un) / (self.sc * un), u) if un else list(u)

    def logmap0(self, y: list) -> list:
        yn = _norm(y)
        return _scale(mp.atanh(self.sc * yn) / (self.sc * yn), y) if yn else list(y)

    def gyration(self, a: list, b: list, u: list) -> list:
        """By its definition gyr[a,b]u = ⊖(a ⊕ b) ⊕ (a ⊕ (b ⊕ u))."""
        ab = self.mobius_add(a, b)
        return self.mobius_add(_scale(-1, ab), self.mobius_add(a, self.mobius_add(b, u)))

    def parallel_transport(self, x: list, y: list, v: list) -> list:
        # The gyration is a linear (orthogonal) map; scale v by 1e-30 to keep the nested Möbius
        # additions of its definition inside the ball, then scale back. That costs 30 digits
        # and the nested additions of nearly opposite boundary points up to 30 more, so this
        # runs at 150 digits.
        with mp.workdps(150):
            s = mp.mpf(10) ** -30
            g = self.gyration(y, _scale(-1, x), _scale(s, v))
            out = _scale(self.lam(x) / (self.lam(y) * s), g)
        return [+v for v in out]

    def scalar_mul(self, r, x: list) -> list:
        xn = _norm(x)
        return _scale(mp.tanh(r * mp.atanh(self.sc * xn)) / (self.sc * xn), x)

    def matvec(self, m: list, x: list) -> list:
        mx = [_dot(row, x) for row in m]
        xn, mxn = _norm(x), _norm(mx)
        if mxn == 0:
            return [mp.mpf(0)] * len(mx)
        return _scale(mp.tanh(mxn / xn * mp.atanh(self.sc * xn)) / (mxn * self.sc), mx)

    def midpoint(self, xs: list, ws: list | None = None) -> list:
        ws = ws or [mp.mpf(1)] * len(xs)
        lams = [self.lam(x) for x in xs]
        num = [mp.fsum(w * lm * x[i] for w, lm, x in zip(ws, lams, xs, strict=True))
               for i in range(len(xs[0]))]
        den = mp.fsum(w * (lm - 1) for w, lm in zip(ws, lams, strict=True))
        y = _scale(1 / den, num)
        return _scale(1 / (1 + mp.sqrt(1 - self.c * _dot(y, y))), y)

    # --- Lorentz hyperboloid (points and tangent vectors given by their spatial parts)
    def lpoint(self, xs: list) -> list:
        return [mp.sqrt(1 / self.c + _dot(xs, xs)), *xs]

    def ltangent(self, x: list, us: list) -> list:
        return [_dot(x[1:], us) / x[0], *us]

    @staticmethod
    def linner(u: list, v: list):
        return -u[0] * v[0] + _dot(u[1:], v[1:])

    def ldist(self, x: list, y: list):
        return mp.acosh(-self.c * self.linner(x, y)) / self.sc

    def llogmap(self, x: list, y: list) -> list:
        w = _add(y, _scale(self.c * self.linner(x, y), x))
        wn = mp.sqrt(self.linner(w, w))
        if wn == 0:
            return [mp.mpf(0)] * len(x)
        return _scale(self.ldist(x, y) / wn, w)

    def lexpmap(self, x: list, u: list) -> list:
        un = mp.sqrt(self.linner(u, u))
        th = self.sc * un
        if un == 0:
            return list(x)
        return _add(_scale(mp.cosh(th), x), _scale(mp.sinh(th) / th, u))

    def lparallel_transport(self, x: list, y: list, v: list) -> list:
        coef = self.c * self.linner(y, v) / (1 - self.c * self.linner(x, y))
        return _add(v, _scale(coef, _add(x, y)))

    def lcentroid(self, xs: list, ws: list | None = None) -> list:
        ws = ws or [mp.mpf(1)] * len(xs)
        a = [mp.fsum(w * x[i] for w, x in zip(ws, xs, strict=True)) for i in range(len(xs[0]))]
        return _scale(1 / (self.sc * mp.sqrt(-self.linner(a, a))), a)


def mp_points(t: torch.Tensor, o: Oracle) -> list:
    """Lorentz points of a float64 tensor (exact spatial parts, exact time coordinates)."""
    return [o.lpoint(row[1:]) for row in to_mp(t)]


def mp_tangents(x_rows: list, u: torch.Tensor, o: Oracle) -> list:
    return [o.ltangent(x, row[1:]) for x, row in zip(x_rows, to_mp(u), strict=True)]


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    """max |a - ref| / max(|ref|, tiny) over elements, as a float."""
    return float(((a - ref).abs() / ref.abs().clamp_min(1e-300)).max())


def row_rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    """max over rows of |a - ref| / |ref| (Euclidean norms over the last axis)."""
    num = (a - ref).norm(dim=-1)
    den = ref.norm(dim=-1).clamp_min(1e-300)
    return float((num / den).max())


def on_hyperboloid_err(x: torch.Tensor, c: float | torch.Tensor) -> float:
    """max |c<x,x>_L + 1| / (1 + c x_0^2): the relative hyperboloid residual (in float64)."""
    x = x.double()
    res = (c * lorentz.inner(x, x, keepdim=True) + 1).abs() / (1 + c * x[..., :1].pow(2))
    return float(res.max())


def frame_norm(x: torch.Tensor, u: torch.Tensor, c: float | torch.Tensor) -> torch.Tensor:
    """Riemannian (Lorentz) norm of a vector tangent at x, from its spatial part in the frame of
    x: |u_perp|^2 + u_rad^2 / (c x_0^2). The ambient Minkowski norm cancels for far x."""
    xs, us = x[..., 1:], u[..., 1:]
    ns = xs.norm(dim=-1, keepdim=True)
    xhat = torch.where(ns > 0, xs / ns.clamp_min(1e-300), torch.zeros_like(xs))
    rad = (xhat * us).sum(-1, keepdim=True)
    perp = us - rad * xhat
    return (perp.pow(2).sum(-1) + rad.squeeze(-1).pow(2) / (c * x[..., 0].pow(2)).reshape(
        rad.shape[:-1])).sqrt()


def tangent_rel_err(x: torch.Tensor, a: torch.Tensor, ref: torch.Tensor,
                    c: float | torch.Tensor) -> float:
    """max over rows of |a - ref|_x / |ref|_x in the Riemannian norm at x (far from the origin
    the ambient norm mostly measures the huge radial coordinates)."""
    return float((frame_norm(x, a - ref, c) / frame_norm(x, ref, c).clamp_min(1e-300)).max())


def point_dist_err(a: torch.Tensor, ref_rows: list, o: Oracle) -> float:
    """max hyperbolic distance (oracle) between Lorentz points a (float64) and reference points
    (mp rows), times sqrt(c): the displacement in rapidity units."""
    worst = mp.mpf(0)
    for row, r in zip(mp_points(a, o), ref_rows, strict=True):
        h = -o.c * o.linner(row, o.lpoint(r[1:]))
        worst = max(worst, mp.acosh(h) if h > 1 else mp.mpf(0))
    return float(worst)
