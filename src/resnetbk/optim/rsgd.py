"""Riemannian SGD with momentum (Bonnabel 2013; Bécigneul & Ganea 2019), foreach arithmetic."""

from __future__ import annotations

from typing import Any

import torch
from torch.optim.optimizer import ParamsT

from resnetbk.optim._common import (
    PendingUpdate,
    RiemannianOptimizer,
    as_float,
    check_param,
    debug_check_finite,
    debug_check_point,
    group_by_device_and_dtype,
    manifold_of,
    riemannian_grads,
)

__all__ = ["RiemannianSGD"]


class RiemannianSGD(RiemannianOptimizer):
    """Stochastic gradient descent on products of Riemannian manifolds.

    For a plain (Euclidean) parameter the update is exactly ``torch.optim.SGD``'s with the
    same hyperparameters (weight decay is an L2 term added to the gradient). For a
    ``ManifoldParameter`` ``p`` on ``M = p.manifold``, with Euclidean gradient ``g``:

    * ``r = M.egrad2rgrad(p, g + weight_decay * p)`` (the Riemannian gradient),
    * momentum buffer ``b = r`` on the first step, else ``b = momentum * b + (1 - dampening) r``,
    * direction ``d = r + momentum * b`` (Nesterov) or ``d = b`` (momentum) or ``d = r``,
    * ``p <- M.retr(p, -lr d)`` (the exact exponential map) and ``b <- M.transp(p_old, p, b)``
      (parallel transport of the buffer to the new point).

    Moment arithmetic runs as ``torch._foreach_*`` ops over all tensors of a group that share
    a device and dtype; the manifold maps run per tensor. Every manifold step of a call reads
    the curvature as it was before the call: Euclidean parameters (such as a learnable
    ``log_c``) are written after all manifold steps.

    Args:
        params: parameters or param groups (dicts), as for any ``torch.optim.Optimizer``.
        lr: learning rate (>= 0).
        momentum: momentum factor (>= 0).
        dampening: dampening of the gradient term in the momentum buffer.
        weight_decay: L2 penalty coefficient (>= 0), added to the Euclidean gradient.
        nesterov: Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).

    Raises:
        ValueError: invalid hyperparameters; at ``step``, a sparse gradient or a non-real
            parameter. In debug mode (``resnetbk.debug_checks``) also a step that produces a
            non-finite parameter or a point off its manifold.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        if not as_float("lr", lr) >= 0.0:
            raise ValueError(f"invalid learning rate: {lr} (expected >= 0)")
        if not momentum >= 0.0:
            raise ValueError(f"invalid momentum: {momentum} (expected >= 0)")
        if not weight_decay >= 0.0:
            raise ValueError(f"invalid weight_decay: {weight_decay} (expected >= 0)")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum > 0 and zero dampening")
        defaults: dict[str, Any] = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
        }
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("momentum", 0.0)
            group.setdefault("dampening", 0.0)
            group.setdefault("weight_decay", 0.0)
            group.setdefault("nesterov", False)

    def _step_group(self, gi: int, group: dict[str, Any], pending: list[PendingUpdate]) -> None:
        lr = as_float("lr", group["lr"])
        momentum = group["momentum"]
        dampening = group["dampening"]
        weight_decay = group["weight_decay"]
        nesterov = group["nesterov"]

        params: list[torch.Tensor] = []
        indices: list[int] = []
        for pi, p in enumerate(group["params"]):
            if p.grad is None:
                continue
            check_param("RiemannianSGD", p, p.grad)
            params.append(p)
            indices.append(pi)

        for bucket in group_by_device_and_dtype(params):
            ps = [params[i] for i in bucket]
            idx = [indices[i] for i in bucket]
            manifolds = [manifold_of(p) for p in ps]
            grads = riemannian_grads(ps, manifolds, weight_decay)

            bufs: list[torch.Tensor | None] = [None] * len(ps)
            if momentum != 0:
                old = [i for i, p in enumerate(ps) if "momentum_buffer" in self.state[p]]
                new = [i for i, p in enumerate(ps) if "momentum_buffer" not in self.state[p]]
                for i in new:
                    buf = grads[i].detach().clone()
                    self.state[ps[i]]["momentum_buffer"] = buf
                    bufs[i] = buf
                if old:
                    old_bufs = [self.state[ps[i]]["momentum_buffer"] for i in old]
                    torch._foreach_mul_(old_bufs, momentum)
                    torch._foreach_add_(old_bufs, [grads[i] for i in old], alpha=1 - dampening)
                    for i, buf in zip(old, old_bufs, strict=True):
                        bufs[i] = buf
                full = [b for b in bufs if b is not None]
                dirs = torch._foreach_add(grads, full, alpha=momentum) if nesterov else full
            else:
                dirs = grads

            euclid = [i for i, m in enumerate(manifolds) if m is None]
            riem = [i for i, m in enumerate(manifolds) if m is not None]
            if riem:
                steps = torch._foreach_mul([dirs[i] for i in riem], -lr)
                for i, u in zip(riem, steps, strict=True):
                    m, p = manifolds[i], ps[i]
                    new_p = m.retr(p, u)
                    debug_check_point("RiemannianSGD", m, new_p, gi, idx[i])
                    buf = bufs[i]
                    if buf is not None:
                        buf.copy_(m.transp(p, new_p, buf))
                    p.copy_(new_p)
            if euclid:
                pending.append(_euclidean_update(
                    [ps[i] for i in euclid], [dirs[i] for i in euclid], lr, gi
                ))


def _euclidean_update(
    params: list[torch.Tensor], dirs: list[torch.Tensor], lr: float, gi: int
) -> PendingUpdate:
    def update() -> None:
        torch._foreach_add_(params, dirs, alpha=-lr)
        debug_check_finite("RiemannianSGD", params, gi)

    return update
