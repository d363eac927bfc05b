"""Embedding table whose rows are points of a hyperbolic manifold (Poincaré ball or Lorentz
hyperboloid), as in Nickel & Kiela, "Poincaré Embeddings for Learning Hierarchical
Representations" (NeurIPS 2017) and "Learning Continuous Hierarchies in the Lorentz Model of
Hyperbolic Geometry" (ICML 2018).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from resnetbk.debug import debug_enabled
from resnetbk.geometry import lorentz, poincare
from resnetbk.geometry.manifolds import Lorentz, Manifold, PoincareBall
from resnetbk.geometry.numerics import as_curvature, compute_dtype, sqrt_c
from resnetbk.nn._checks import check_size
from resnetbk.nn.parameter import ManifoldParameter

__all__ = ["HyperbolicEmbedding"]

_MANIFOLDS: dict[str, type[Manifold]] = {"poincare": PoincareBall, "lorentz": Lorentz}


class HyperbolicEmbedding(nn.Module):
    r"""A lookup table of ``num_embeddings`` points on a hyperbolic manifold of curvature -c.

    ``manifold="poincare"``: rows are points of the ball, ``embedding_dim`` coordinates.
    ``manifold="lorentz"``: rows are points of the hyperboloid, ``embedding_dim + 1``
    coordinates, time first. ``forward(indices)`` returns ``indices.shape + (coords,)``.

    The table ``weight`` is a ``ManifoldParameter``, so the Riemannian optimizers of
    ``resnetbk.optim`` keep its rows on the manifold. Initialisation: exp_0(v) with
    v ~ N(0, init_std^2) in the tangent space at the origin (``Manifold.random``), i.e. points
    clustered near the origin as in Nickel & Kiela.

    Learnable curvature (``learnable_c=True``): the table would otherwise not depend on c, so
    c would get no gradient from it, and a changed c would leave the stored points off the
    manifold. Instead the rows are stored on the curvature -1 manifold
    (``weight.manifold`` has c = 1) and returned scaled, y = w / sqrt(c): the scaling maps the
    curvature -1 model onto the curvature -c one exactly (distances scale by 1/sqrt(c)) and
    gives c its gradient. After the scaling the output is re-projected (Poincaré:
    ``poincare.project``; Lorentz: time recomputed from the scaled spatial part) so that it
    stays on the manifold after rounding. With a fixed c the rows are stored on the
    curvature -c manifold and returned as they are.

    ``dtype``/``device`` place the table at construction, so its rows are drawn on the manifold
    in that dtype: ``.to(torch.float64)`` of a float32 table keeps float32 accuracy (its
    Lorentz rows satisfy <x, x>_L = -1/c only to ~1e-7 relative).

    Indices: any integer dtype except bool; out-of-range or negative indices raise
    ``ValueError`` (checked on CPU always; on an accelerator only in debug mode, as the check
    needs a host sync; there the lookup itself fails on a bad index).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, manifold: str = "poincare",
                 c: float = 1.0, init_std: float = 1e-2, learnable_c: bool = False, *,
                 dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        check_size("HyperbolicEmbedding", "num_embeddings", num_embeddings)
        check_size("HyperbolicEmbedding", "embedding_dim", embedding_dim)
        if manifold not in _MANIFOLDS:
            raise ValueError(f"HyperbolicEmbedding: manifold must be one of "
                             f"{sorted(_MANIFOLDS)}, got {manifold!r}")
        if not (isinstance(init_std, (int, float)) and math.isfinite(init_std) and init_std > 0):
            raise ValueError(f"HyperbolicEmbedding: init_std must be a finite float > 0, "
                             f"got {init_std!r}")
        cls = _MANIFOLDS[manifold]
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.manifold_name = manifold
        self.init_std = float(init_std)
        self.manifold = cls(c, learnable=learnable_c)
        storage = cls(1.0) if learnable_c else self.manifold
        coords = embedding_dim + (1 if manifold == "lorentz" else 0)
        self.weight = ManifoldParameter(
            torch.empty(num_embeddings, coords, dtype=dtype, device=device), manifold=storage)
        self.reset_parameters()

    @property
    def learnable_c(self) -> bool:
        return self.manifold.learnable

    def reset_parameters(self) -> None:
        """Redraw the rows: exp_0(v), v ~ N(0, init_std^2) (scaled to the storage curvature)."""
        storage = self.weight.manifold
        # Storage on the c = 1 manifold: a std of init_std sqrt(c) there is init_std at c.
        std = self.init_std * (math.sqrt(float(self.manifold.c_detached()))
                               if self.learnable_c else 1.0)
        with torch.no_grad():
            self.weight.copy_(storage.random(*self.weight.shape, std=std,
                                             dtype=self.weight.dtype, device=self.weight.device))

    def _check_indices(self, indices: torch.Tensor) -> None:
        if not isinstance(indices, torch.Tensor):
            raise ValueError(f"HyperbolicEmbedding: indices must be a torch.Tensor, "
                             f"got {type(indices).__name__}")
        if indices.dtype == torch.bool or indices.is_floating_point() or indices.is_complex():
            raise ValueError(f"HyperbolicEmbedding: indices must have an integer dtype "
                             f"(e.g. torch.long), got {indices.dtype}")
        if indices.numel() and (indices.device.type == "cpu" or debug_enabled()):
            lo, hi = int(indices.min()), int(indices.max())
            if lo < 0 or hi >= self.num_embeddings:
                raise ValueError(f"HyperbolicEmbedding: indices must lie in "
                                 f"[0, {self.num_embeddings - 1}], got min {lo}, max {hi}")

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        """Points of the rows ``indices``: shape ``indices.shape + (coords,)``."""
        self._check_indices(indices)
        out = F.embedding(indices.long(), self.weight)
        if not self.learnable_c:
            return out
        c = self.manifold.c
        oc = out.to(compute_dtype(out.dtype))
        scaled = oc / sqrt_c(as_curvature(c, oc))
        if self.manifold_name == "lorentz":
            return lorentz.from_spatial(scaled[..., 1:].to(out.dtype), c=c)
        return poincare.project(scaled.to(out.dtype), c=c)

    def extra_repr(self) -> str:
        return (f"{self.num_embeddings}, {self.embedding_dim}, manifold={self.manifold_name!r}, "
                f"init_std={self.init_std:g}")
