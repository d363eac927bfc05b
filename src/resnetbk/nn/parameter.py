"""``ManifoldParameter``: an ``nn.Parameter`` that knows the manifold its value lives on."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from resnetbk.geometry.manifolds import Euclidean, Manifold


class ManifoldParameter(nn.Parameter):
    """A parameter whose value is a point (last axis) on ``manifold``.

    The Riemannian optimizers read ``.manifold`` to turn Euclidean gradients into Riemannian
    ones and to step along geodesics. ``copy.deepcopy`` and pickling keep the manifold (geoopt
    issue #188); ``state_dict`` stores only the tensor, as for any parameter.
    """

    manifold: Manifold

    def __new__(
        cls,
        data: torch.Tensor | None = None,
        manifold: Manifold | None = None,
        requires_grad: bool = True,
    ) -> ManifoldParameter:
        if data is None:
            data = torch.empty(0)
        instance = super().__new__(cls, data, requires_grad)
        instance.manifold = manifold if manifold is not None else Euclidean()
        return instance

    def __deepcopy__(self, memo: dict[int, Any]) -> ManifoldParameter:
        if id(self) in memo:
            return memo[id(self)]
        result = type(self)(
            self.data.clone(memory_format=torch.preserve_format),
            copy.deepcopy(self.manifold, memo),
            self.requires_grad,
        )
        memo[id(self)] = result
        return result

    def __reduce_ex__(self, proto: int) -> tuple[Any, ...]:
        return _rebuild_manifold_parameter, (self.data, self.manifold, self.requires_grad)

    def __repr__(self) -> str:
        return f"ManifoldParameter on {self.manifold!r} containing:\n{self.data!r}"


def _rebuild_manifold_parameter(
    data: torch.Tensor, manifold: Manifold, requires_grad: bool
) -> ManifoldParameter:
    return ManifoldParameter(data, manifold, requires_grad)
