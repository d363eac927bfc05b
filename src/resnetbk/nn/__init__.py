"""Hyperbolic layers. Parameters that live on a manifold are ``ManifoldParameter``s."""

from resnetbk.nn.parameter import ManifoldParameter

__all__ = ["ManifoldParameter"]
