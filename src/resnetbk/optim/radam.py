"""Riemannian Adam (Bécigneul & Ganea, "Riemannian Adaptive Optimization Methods", 2019)."""

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
    scalar_dtype,
)

__all__ = ["RiemannianAdam"]


class RiemannianAdam(RiemannianOptimizer):
    """Adam / AMSGrad on products of Riemannian manifolds.

    For a plain (Euclidean) parameter the update is exactly ``torch.optim.Adam``'s with the
    same hyperparameters (weight decay is an L2 term added to the gradient, not AdamW). For a
    ``ManifoldParameter`` ``p`` on ``M = p.manifold``, with Euclidean gradient ``g`` and step
    count ``t`` (the same semantics as geoopt's ``RiemannianAdam``):

    * ``r = M.egrad2rgrad(p, g + weight_decay * p)``,
    * ``m = beta1 m + (1 - beta1) r`` (a tangent vector at ``p``),
    * ``v = beta2 v + (1 - beta2) <r, r>_p``: the Riemannian squared norm of each point (one
      value per point, i.e. per slice along the last axis, broadcast over that axis; geoopt's
      ``component_inner``), with ``v_max = max(v_max, v)`` for AMSGrad,
    * ``p_new = M.retr(p, -lr / (1 - beta1^t) * m / (sqrt(v / (1 - beta2^t)) + eps))`` (the
      exact exponential map), then ``m <- M.transp(p, p_new, m)`` (parallel transport).

    The state per parameter is ``step`` (a scalar CPU tensor, as in ``torch.optim.Adam``),
    ``exp_avg``, ``exp_avg_sq`` and, with AMSGrad, ``max_exp_avg_sq`` (all of the parameter's
    shape). Moment arithmetic runs as ``torch._foreach_*`` ops over all tensors of a group that
    share a device and dtype; the manifold maps run per tensor. Every manifold step of a call
    reads the curvature as it was before the call: Euclidean parameters (such as a learnable
    ``log_c``) are written after all manifold steps.

    Args:
        params: parameters or param groups (dicts), as for any ``torch.optim.Optimizer``.
        lr: learning rate (>= 0).
        betas: decay rates of the first and second moments, each in [0, 1).
        eps: added to the denominator (>= 0).
        weight_decay: L2 penalty coefficient (>= 0), added to the Euclidean gradient.
        amsgrad: use the running maximum of the second moment (Reddi et al. 2018).

    Raises:
        ValueError: invalid hyperparameters; at ``step``, a sparse gradient or a non-real
            parameter. In debug mode (``resnetbk.debug_checks``) also a step that produces a
            non-finite parameter or a point off its manifold.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
    ) -> None:
        if not as_float("lr", lr) >= 0.0:
            raise ValueError(f"invalid learning rate: {lr} (expected >= 0)")
        if not eps >= 0.0:
            raise ValueError(f"invalid eps: {eps} (expected >= 0)")
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"invalid betas: {betas} (expected two values in [0, 1))")
        if not weight_decay >= 0.0:
            raise ValueError(f"invalid weight_decay: {weight_decay} (expected >= 0)")
        defaults: dict[str, Any] = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
        }
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("amsgrad", False)
            group.setdefault("weight_decay", 0.0)
            for p in group["params"]:
                p_state = self.state.get(p, {})
                step = p_state.get("step")
                if step is not None and not torch.is_tensor(step):
                    p_state["step"] = torch.tensor(float(step), dtype=scalar_dtype())

    def _step_group(self, gi: int, group: dict[str, Any], pending: list[PendingUpdate]) -> None:
        lr = as_float("lr", group["lr"])
        beta1, beta2 = (as_float("betas", b) for b in group["betas"])
        eps = group["eps"]
        weight_decay = group["weight_decay"]
        amsgrad = group["amsgrad"]

        params: list[torch.Tensor] = []
        indices: list[int] = []
        for pi, p in enumerate(group["params"]):
            if p.grad is None:
                continue
            check_param("RiemannianAdam", p, p.grad)
            state = self.state[p]
            if len(state) == 0:
                state["step"] = torch.tensor(0.0, dtype=scalar_dtype())
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if amsgrad and "max_exp_avg_sq" not in state:
                state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            params.append(p)
            indices.append(pi)

        for bucket in group_by_device_and_dtype(params):
            ps = [params[i] for i in bucket]
            idx = [indices[i] for i in bucket]
            states = [self.state[p] for p in ps]
            manifolds = [manifold_of(p) for p in ps]
            exp_avgs = [s["exp_avg"] for s in states]
            exp_avg_sqs = [s["exp_avg_sq"] for s in states]
            steps = [s["step"] for s in states]

            torch._foreach_add_(steps, torch.tensor(1.0), alpha=1.0)

            grads = riemannian_grads(ps, manifolds, weight_decay)

            torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
            torch._foreach_mul_(exp_avg_sqs, beta2)
            euclid = [i for i, m in enumerate(manifolds) if m is None]
            riem = [i for i, m in enumerate(manifolds) if m is not None]
            if euclid:
                eg = [grads[i] for i in euclid]
                torch._foreach_addcmul_([exp_avg_sqs[i] for i in euclid], eg, eg, 1 - beta2)
            if riem:
                # Riemannian squared norm of each point, broadcast over the point's coordinates.
                sq_norms = [
                    manifolds[i].inner(ps[i], grads[i], grads[i]).expand_as(ps[i]) for i in riem
                ]
                torch._foreach_add_([exp_avg_sqs[i] for i in riem], sq_norms, alpha=1 - beta2)
            del grads

            step_values = [float(s.item()) for s in steps]
            step_sizes = [-lr / (1 - beta1**t) for t in step_values]
            bias_correction2_sqrt = [(1 - beta2**t) ** 0.5 for t in step_values]
            if amsgrad:
                max_sqs = [s["max_exp_avg_sq"] for s in states]
                torch._foreach_maximum_(max_sqs, exp_avg_sqs)
                denoms = torch._foreach_sqrt(max_sqs)
            else:
                denoms = torch._foreach_sqrt(exp_avg_sqs)
            torch._foreach_div_(denoms, bias_correction2_sqrt)
            torch._foreach_add_(denoms, eps)

            if riem:
                updates = torch._foreach_div([exp_avgs[i] for i in riem], [denoms[i] for i in riem])
                torch._foreach_mul_(updates, [step_sizes[i] for i in riem])
                for i, u in zip(riem, updates, strict=True):
                    m, p, exp_avg = manifolds[i], ps[i], exp_avgs[i]
                    new_p = m.retr(p, u)
                    debug_check_point("RiemannianAdam", m, new_p, gi, idx[i])
                    exp_avg.copy_(m.transp(p, new_p, exp_avg))
                    p.copy_(new_p)
            if euclid:
                pending.append(_euclidean_update(
                    [ps[i] for i in euclid],
                    [exp_avgs[i] for i in euclid],
                    [denoms[i] for i in euclid],
                    [step_sizes[i] for i in euclid],
                    gi,
                ))


def _euclidean_update(
    params: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    denoms: list[torch.Tensor],
    step_sizes: list[float],
    gi: int,
) -> PendingUpdate:
    def update() -> None:
        torch._foreach_addcdiv_(params, exp_avgs, denoms, step_sizes)
        debug_check_finite("RiemannianAdam", params, gi)

    return update
