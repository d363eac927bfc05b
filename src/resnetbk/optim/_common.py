"""Helpers shared by the Riemannian optimizers: parameter classification, grouping, checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from resnetbk.debug import debug_enabled
from resnetbk.geometry.manifolds import Euclidean, Manifold

# A deferred in-place update of Euclidean parameters (see ``Bucket`` and the optimizers'
# ``step``): Euclidean parameters are written only after every manifold step of the call, so
# that a learnable curvature updated by the same optimizer is read at its old value by every
# manifold step (the value the gradients were computed with).
PendingUpdate = Callable[[], None]


def scalar_dtype() -> torch.dtype:
    """dtype of Adam's ``step`` counters, as in ``torch.optim`` (float32 unless default is f64)."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def manifold_of(p: torch.Tensor) -> Manifold | None:
    """The non-Euclidean manifold of a parameter, or None for a Euclidean one.

    A ``ManifoldParameter`` on ``Euclidean()`` and a plain tensor are both Euclidean. A
    ``.manifold`` that is not a ``resnetbk`` manifold (for example geoopt's) is rejected rather
    than silently treated as flat space.
    """
    m = getattr(p, "manifold", None)
    if m is None:
        return None
    if not isinstance(m, Manifold):
        raise ValueError(
            f"parameter has a .manifold of type {type(m).__module__}.{type(m).__name__}; "
            "expected a resnetbk.geometry.manifolds.Manifold (use resnetbk's ManifoldParameter)"
        )
    return None if isinstance(m, Euclidean) else m


def check_param(optimizer: str, p: torch.Tensor, grad: torch.Tensor) -> None:
    """Reject sparse gradients and non-real parameters (cheap, always on)."""
    if grad.is_sparse:
        raise ValueError(
            f"{optimizer} does not support sparse gradients (got a sparse gradient for a "
            f"parameter of shape {tuple(p.shape)}); use a dense embedding (sparse=False)"
        )
    if not p.is_floating_point():
        raise ValueError(
            f"{optimizer} supports real floating parameters only, got dtype {p.dtype}"
        )


def group_by_device_and_dtype(params: list[torch.Tensor]) -> list[list[int]]:
    """Indices of ``params`` grouped by (device, dtype), in first-seen order."""
    buckets: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, p in enumerate(params):
        buckets.setdefault((p.device, p.dtype), []).append(i)
    return list(buckets.values())


def riemannian_grads(params: list[torch.Tensor], manifolds: list[Manifold | None],
                     weight_decay: float) -> list[torch.Tensor]:
    """Riemannian gradients egrad2rgrad(p, grad + weight_decay * p) (Euclidean where the
    manifold is None), as new tensors: ``p.grad`` is never modified."""
    grads = [p.grad for p in params]
    if weight_decay != 0:
        grads = list(torch._foreach_add(grads, params, alpha=weight_decay))
    else:
        grads = list(grads)
    for i, m in enumerate(manifolds):
        if m is not None:
            grads[i] = m.egrad2rgrad(params[i], grads[i])
    return grads


def debug_check_point(
    optimizer: str, manifold: Manifold, point: torch.Tensor, group: int, index: int
) -> None:
    """Debug mode only: the new point is finite and on its manifold (raises ValueError)."""
    if not debug_enabled():
        return
    if not bool(torch.isfinite(point).all()):
        raise ValueError(
            f"{optimizer}: the step produced a non-finite point for parameter {index} of param "
            f"group {group} (on {manifold.name}); check the learning rate and the gradients"
        )
    manifold.check_point(point)


def debug_check_finite(optimizer: str, params: list[torch.Tensor], group: int) -> None:
    """Debug mode only: the updated Euclidean parameters are finite (raises ValueError)."""
    if not debug_enabled():
        return
    for i, p in enumerate(params):
        if not bool(torch.isfinite(p).all()):
            raise ValueError(
                f"{optimizer}: the step produced non-finite values in Euclidean parameter {i} "
                f"of param group {group}; check the learning rate and the gradients"
            )


def as_float(name: str, value: float | torch.Tensor) -> float:
    """A hyperparameter as a Python float (a one-element tensor is read once)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a number or a one-element tensor, got {value.shape}")
        return float(value.item())
    return float(value)


class RiemannianOptimizer(torch.optim.Optimizer):
    """The step loop shared by the Riemannian optimizers: every group's manifold steps first
    (subclasses implement ``_step_group``), then the deferred Euclidean updates."""

    @torch.no_grad()
    def step(self, closure: Callable[[], float | torch.Tensor] | None = None) -> Any:
        """Perform one optimization step; ``closure`` re-evaluates the loss (with grad enabled).

        Returns the closure's loss, or None.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        pending: list[PendingUpdate] = []
        for gi, group in enumerate(self.param_groups):
            self._step_group(gi, group, pending)
        for update in pending:
            update()
        return loss

    def _step_group(self, gi: int, group: dict[str, Any], pending: list[PendingUpdate]) -> None:
        raise NotImplementedError
