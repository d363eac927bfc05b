"""Riemannian optimizers for mixed Euclidean / manifold parameters.

``RiemannianSGD`` and ``RiemannianAdam`` are ``torch.optim.Optimizer``s. A ``ManifoldParameter``
is stepped along geodesics of ``p.manifold`` (Riemannian gradient, exact exponential map,
parallel transport of the moments); any other parameter gets exactly the update of
``torch.optim.SGD`` / ``torch.optim.Adam``.
"""

from resnetbk.optim.radam import RiemannianAdam
from resnetbk.optim.rsgd import RiemannianSGD

__all__ = ["RiemannianAdam", "RiemannianSGD"]
