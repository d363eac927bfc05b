"""Hyperbolic geometry: Poincaré ball, Lorentz hyperboloid, conversions and manifold objects.

``poincare`` and ``lorentz`` hold the documented math functions (curvature -c, keyword ``c``);
``manifolds`` wraps them in objects that parameters and optimizers carry.
"""

from resnetbk.geometry import convert, lorentz, poincare
from resnetbk.geometry.manifolds import Euclidean, Lorentz, Manifold, PoincareBall

__all__ = ["Euclidean", "Lorentz", "Manifold", "PoincareBall", "convert", "lorentz", "poincare"]
