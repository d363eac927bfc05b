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


def artanh(x: torch.Tensor, storage_dtype: torch.dtype) -> torch.Tensor:
    """artanh(x) = (log1p(x) - log1p(-x)) / 2 for x in [0, 1].

    The argument is capped at 1 - BALL_EPS[storage_dtype]: a point of norm 1 (for example
    1 - 1e-6 rounded to bfloat16) is read as the farthest representable point, not as Inf.
    """
    x = x.clamp_max(1.0 - ball_eps(storage_dtype))
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


def sinhc(x: torch.Tensor) -> torch.Tensor:
    """sinh(x)/x, equal to 1 at 0 (Taylor series below 1e-3 where the ratio loses digits)."""
    small = x.abs() < 1e-3
    x_safe = torch.where(small, torch.ones_like(x), x)
    return torch.where(small, 1 + x * x / 6, torch.sinh(x_safe) / x_safe)


def inv_sinhc(x: torch.Tensor) -> torch.Tensor:
    """x/sinh(x) for x >= 0, equal to 1 at 0 and finite (towards 0) for large x."""
    small = x.abs() < 1e-3
    x_safe = torch.where(small, torch.ones_like(x), x)
    return torch.where(small, 1 - x * x / 6, x_safe / torch.sinh(x_safe))
