"""Per-dtype guards and numerically stable special functions shared by the geometry models.

Half types (bfloat16, float16) are computed in float32 and rounded back at the end. The
guards are chosen for the *storage* dtype, so that they still hold after that rounding:
``1 - 1e-5`` is ``1.0`` in bfloat16, so a bfloat16 point needs a wider margin from the
boundary of the ball than a float32 one.
"""

from __future__ import annotations

import math

import torch

# Relative margin from the boundary of the Poincaré ball: points are kept at
# sqrt(c)*|x| <= 1 - BALL_EPS[dtype]. For half types the margin exceeds the worst-case growth
# of a norm when each coordinate is rounded to the dtype (relative 2^-9 for bfloat16, 2^-11 for
# float16), so a projected point still lies strictly inside the ball after rounding.
BALL_EPS: dict[torch.dtype, float] = {
    torch.float64: 1e-12,
    torch.float32: 1e-5,
    torch.bfloat16: 2.0**-6,
    torch.float16: 2.0**-9,
}

# Largest rapidity sqrt(c)*|u| an exponential map may produce on the hyperboloid, so that the
# coordinates (~cosh of it) and the products of two of them in an inner product stay finite.
# float16 stores at most 65504, so cosh(r) must stay below that: r <= 11.
MAX_RAPIDITY: dict[torch.dtype, float] = {
    torch.float64: 350.0,
    torch.float32: 43.0,
    torch.bfloat16: 43.0,
    torch.float16: 11.0,
}

# Floor for norms that are divided by: the smallest normal number of the compute dtype.
_MIN_NORM: dict[torch.dtype, float] = {
    torch.float64: torch.finfo(torch.float64).tiny,
    torch.float32: torch.finfo(torch.float32).tiny,
}


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype arithmetic runs in: float32 for half types, else the dtype itself."""
    return torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype


def ball_eps(dtype: torch.dtype) -> float:
    return BALL_EPS[dtype]


def read_radius(dtype: torch.dtype) -> float:
    """Largest sqrt(c)|x| at which an *input* point of the ball is read as it is: 1 - eps/2.

    Points returned by the geometry functions lie on or inside the output guard 1 - eps; after
    rounding to their dtype they stay below this read radius, so reading never moves them (and
    never cuts their gradient). Inputs beyond it (e.g. 1 - 1e-6 rounded to 1.0 in bfloat16) are
    read as the point on this sphere in the same direction.
    """
    return 1.0 - 0.5 * BALL_EPS[dtype]


def max_rapidity(dtype: torch.dtype) -> float:
    return MAX_RAPIDITY[dtype]


def min_norm(dtype: torch.dtype) -> float:
    return _MIN_NORM[compute_dtype(dtype)]


def upcast(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Cast half-type tensors to float32 (a no-op for float32/float64)."""
    return tuple(t.to(compute_dtype(t.dtype)) for t in tensors)


def as_curvature(c: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor | float:
    """c in the compute dtype of ``like`` (a float stays a float: no tensor allocation)."""
    if isinstance(c, torch.Tensor):
        return c.to(dtype=like.dtype, device=like.device)
    return float(c)


def sqrt_c(c: float | torch.Tensor) -> torch.Tensor | float:
    return c.sqrt() if isinstance(c, torch.Tensor) else math.sqrt(c)


def norm(x: torch.Tensor, keepdim: bool = True) -> torch.Tensor:
    """Euclidean norm over the last axis, floored at the smallest normal number.

    The floor makes u/|u| equal to 0 (not NaN) for u = 0 and gives |u| the subgradient 0 there;
    it changes no norm that is representable as a normal number.
    """
    return x.norm(dim=-1, keepdim=keepdim).clamp_min(min_norm(x.dtype))


def points_axis(x: torch.Tensor, dim: int) -> int:
    """The axis ``dim`` of x that indexes the points of a mean (midpoint, centroid), counted
    from the end (so weights with extra leading axes broadcast); it must not be the last
    (manifold) axis."""
    if not -x.dim() <= dim < x.dim():
        raise ValueError(f"dim {dim} is out of range for x of shape {tuple(x.shape)}")
    d = dim - x.dim() if dim >= 0 else dim
    if d == -1:
        raise ValueError("dim must select the points, not the last (manifold) axis")
    return d


def accumulate(acc: torch.Tensor, t1: torch.Tensor, t2: torch.Tensor,
               value: float = 1.0) -> torch.Tensor:
    """acc + value * t1 * t2, in place when ``acc`` is a fresh temporary of the full broadcast
    shape (saves a full-size allocation, which dominates elementwise work on the CPU), out of
    place when t1 or t2 broadcast it to a larger shape. Only for an ``acc`` that no autograd
    node saved (the output of a mul or of this function)."""
    if acc.shape == torch.broadcast_shapes(acc.shape, t1.shape, t2.shape):
        return acc.addcmul_(t1, t2, value=value)
    return torch.addcmul(acc, t1, t2, value=value)


def clip_factor(n: torch.Tensor, max_norm: float | torch.Tensor) -> torch.Tensor:
    """The factor min(1, max_norm / n) that scales a vector of norm n to at most ``max_norm``.

    Evaluated as 1 / max(n / max_norm, 1): exactly 1 below the radius (torch evaluates
    ``scalar / tensor`` as a reciprocal times the scalar, which is not exact, so the clamp comes
    before the reciprocal), with the gradient 0 there and no Inf branch whose 0 * Inf would
    poison the gradient at n = 0.
    """
    return (n / max_norm).clamp_min(1).reciprocal()


def clip_norm(x: torch.Tensor, max_norm: float | torch.Tensor) -> torch.Tensor:
    """x scaled onto the sphere of radius ``max_norm`` where |x| exceeds it, unchanged elsewhere:
    a norm and one multiplication (a where() would take four passes)."""
    return x * clip_factor(x.norm(dim=-1, keepdim=True), max_norm)


def artanh(x: torch.Tensor, storage_dtype: torch.dtype) -> torch.Tensor:
    """artanh(x) = (log1p(x) - log1p(-x)) / 2 for x in [0, 1].

    The argument is capped at the read radius 1 - BALL_EPS[storage_dtype]/2 (see
    ``read_radius``): a point of norm 1 (for example 1 - 1e-6 rounded to bfloat16) is read as a
    point on that sphere, not as Inf. Points produced by the geometry functions never reach it.
    """
    x = x.clamp_max(read_radius(storage_dtype))
    return 0.5 * (torch.log1p(x) - torch.log1p(-x))


def arcosh(x: torch.Tensor) -> torch.Tensor:
    """arcosh(x) for x >= 1, accurate near 1 and free of overflow for large x.

    Written as log1p(t + sqrt(t (t + 2))) with t = x - 1 >= 0, which has no cancellation near
    x = 1; for t beyond 1/sqrt(eps) it switches to log(x) + log 2, avoiding t*t overflow.
    Arguments below 1 (from rounding) are read as 1.
    """
    t = (x - 1).clamp_min(0)
    large = t > 1.0 / math.sqrt(torch.finfo(x.dtype).eps)
    t_small = torch.where(large, torch.zeros_like(t), t)
    # The floor gives the subgradient 0 at x = 1 (zero distance) instead of Inf * 0 = NaN.
    root = torch.sqrt((t_small * (t_small + 2)).clamp_min(torch.finfo(x.dtype).tiny))
    small_branch = torch.log1p(t_small + root)
    large_branch = torch.log(torch.where(large, x, torch.ones_like(x))) + math.log(2.0)
    return torch.where(large, large_branch, small_branch)


def _even_series(x2: torch.Tensor, coefs: tuple[float, ...]) -> torch.Tensor:
    """sum_k coefs[k] * x2**k by Horner's rule."""
    out = torch.full_like(x2, coefs[-1])
    for a in reversed(coefs[:-1]):
        out = out * x2 + a
    return out


# Taylor coefficients (in x^2) of sinh(x)/x and asinh(x)/x; the series branches are used where
# the direct formula's *derivative* would cancel (x cosh x - sinh x ~ x^3/3). Truncation errors
# at the switch points are below 2^-53 relative: 0.1^10/11! and 0.01^10 * 63/2816.
_SINHC_SERIES = (1.0, 1 / 6, 1 / 120, 1 / 5040, 1 / 362880)
_SINHC_SWITCH = 0.1
_ASINHC_SERIES = (1.0, -1 / 6, 3 / 40, -5 / 112, 35 / 1152)
_ASINHC_SWITCH = 0.01


def _split(x: torch.Tensor, small: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x where not small else 1, x where small else 0): each branch of a series/quotient
    ``where`` sees only inputs it is finite on. Both branches are differentiated, and
    ``where``'s backward multiplies the unused one's gradient by 0, so an inf there (the series
    of a huge x) would turn into NaN."""
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    return torch.where(small, one, x), torch.where(small, x, zero)


def sinhc(x: torch.Tensor) -> torch.Tensor:
    """sinh(x)/x, equal to 1 at 0; a Taylor series below |x| = 0.1 keeps value and gradient
    accurate to the last bit (the direct quotient's derivative cancels there)."""
    small = x.abs() < _SINHC_SWITCH
    x_safe, x_small = _split(x, small)
    return torch.where(small, _even_series(x_small * x_small, _SINHC_SERIES),
                       torch.sinh(x_safe) / x_safe)


def inv_sinhc(x: torch.Tensor) -> torch.Tensor:
    """x/sinh(x), equal to 1 at 0 and finite (towards 0) for large x."""
    small = x.abs() < _SINHC_SWITCH
    x_safe, x_small = _split(x, small)
    return torch.where(small, 1 / _even_series(x_small * x_small, _SINHC_SERIES),
                       x_safe / torch.sinh(x_safe))


def asinhc(x: torch.Tensor) -> torch.Tensor:
    """asinh(x)/x, equal to 1 at 0 (Taylor series below |x| = 0.01)."""
    small = x.abs() < _ASINHC_SWITCH
    x_safe, x_small = _split(x, small)
    return torch.where(small, _even_series(x_small * x_small, _ASINHC_SERIES),
                       torch.asinh(x_safe) / x_safe)


_TANHC_SERIES = (1.0, -1 / 3, 2 / 15, -17 / 315)
_TANHC_SWITCH = 0.01


def tanhc(x: torch.Tensor) -> torch.Tensor:
    """tanh(x)/x, equal to 1 at 0 (Taylor series below |x| = 0.01): the factor that maps a
    vector of norm n to norm s tanh(n / s) (a smooth norm bound) is tanhc(n / s)."""
    small = x.abs() < _TANHC_SWITCH
    x_safe, x_small = _split(x, small)
    return torch.where(small, _even_series(x_small * x_small, _TANHC_SERIES),
                       torch.tanh(x_safe) / x_safe)


def sech2(t: torch.Tensor) -> torch.Tensor:
    """1/cosh(t)^2 = 1 - tanh(t)^2 for t >= 0, as 4e/(1+e)^2 with e = exp(-2t): exact where
    1 - tanh^2 cancels, no overflow (it underflows to 0), and a finite gradient everywhere."""
    e = torch.exp(-2 * t)
    return 4 * e / (1 + e).pow(2)
