"""Riemannian optimizers for mixed Euclidean / manifold parameters.

``RiemannianSGD`` and ``RiemannianAdam`` are ``torch.optim.Optimizer``s. A ``ManifoldParameter``
is stepped along geodesics of ``p.manifold`` (Riemannian gradient, exact exponential map,
parallel transport of the moments); any other parameter gets exactly the update of
``torch.optim.SGD`` / ``torch.optim.Adam``. ``LNSMadam`` trains the LNS codes of
``nn.LNSLinear`` by multiplicative (integer log-field) steps; ``split_lns_parameters`` separates
them from the float parameters (docs/LNS.md).
"""

from resnetbk.optim.lns_madam import LNSMadam, split_lns_parameters
from resnetbk.optim.radam import RiemannianAdam
from resnetbk.optim.rsgd import RiemannianSGD

__all__ = ["LNSMadam", "RiemannianAdam", "RiemannianSGD", "split_lns_parameters"]
