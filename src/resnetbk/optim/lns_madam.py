"""LNS-Madam: Madam's multiplicative update as integer steps of LNS weight codes.

Madam (Bernstein et al. 2020, "Learning compositional functions via multiplicative weight
updates") updates a weight w with gradient g by w <- w exp(-eta sign(w) g*), where
g* = g / sqrt(E[g^2]) is the gradient normalised by its running root mean square. LNS-Madam
(Zhao et al. 2022) stores w in a logarithmic number system, where that update is an addition to
the log of |w|; with a base-2 log of 2^-f resolution (1/gamma, gamma = 2^f) a step of
lr = 1/gamma per unit of g* moves the code by an integer. Here, for an ``LNSWeight`` (the
gradient carrier of ``nn.LNSLinear``) with log field L, sign sigma and dL/dW = g:

    v     <- beta v + (1 - beta) g^2,      v_hat = v / (1 - beta^t)
    g*     = g / sqrt(v_hat)   (0 where v_hat = 0),   clamped to +-g_bound
    L     <- L - sigma * round(lr 2^f g*)          (round half to even; lr in log2 units)

so every update is an exact integer change of the log field (one code per unit of g* at
lr = 2^-f = 1/gamma; another lr takes proportionally more or fewer codes, rounded once), and:

* the sign never changes: only the log field moves;
* a zero weight (the zero code) stays zero: a multiplicative update cannot leave 0 (pruned
  weights stay pruned; ``encode`` gives the zero code only to exact zeros);
* L saturates at the format's range (the largest and smallest nonzero magnitudes; never wraps,
  never reaches zero) and, with ``p_scale`` set, as in Madam, the update may not raise |w|
  above p_scale times the weight RMS at the first step (a weight already above that bound only
  moves down; Madam would clamp it);
* a zero gradient changes nothing.

Updates smaller than half a code round to nothing (deterministic rounding, as in the LNS-Madam
reference implementation): lr sets how many codes a unit of g* is worth. The reference rounds g*
first and then scales by lr; here lr 2^f g* is rounded once, which is the same at lr = 2^-f.
There is no weight decay and no momentum (the LNS-Madam reference uses neither by default).

Biases and every other float parameter are not LNS-coded: give them to an ordinary optimizer
(``split_lns_parameters``)::

    lns, other = split_lns_parameters(model)
    optimizers = [LNSMadam(lns, lr=2**-5), torch.optim.AdamW(other, lr=1e-3)]
    ...
    loss.backward()
    for opt in optimizers:
        opt.step()
        opt.zero_grad()
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.optim.optimizer import ParamsT

from resnetbk.lns.codec import pack, unpack
from resnetbk.nn.lns_linear import LNSLinear, LNSWeight
from resnetbk.optim._common import as_float, check_param, scalar_dtype

__all__ = ["LNSMadam", "split_lns_parameters"]


def split_lns_parameters(module: nn.Module) -> tuple[list[LNSWeight], list[nn.Parameter]]:
    """(the ``LNSWeight`` carriers of ``module`` for ``LNSMadam``, every other parameter for an
    ordinary optimizer), each in ``module.parameters()`` order."""
    lns: list[LNSWeight] = []
    other: list[nn.Parameter] = []
    for p in module.parameters():
        (lns if isinstance(p, LNSWeight) else other).append(p)
    return lns, other


class LNSMadam(torch.optim.Optimizer):
    """Madam on LNS codes: integer steps of the log field (module docstring).

    Args:
        params: ``LNSWeight`` carriers (``split_lns_parameters``) or param groups of them.
        lr: step in log2 units per unit of normalised gradient, >= 0 (required: its useful
            size depends on the format; 2^-frac_bits is one code per unit, see below).
        beta: decay of the running mean of g^2, in [0, 1) (Madam: 0.999).
        g_bound: clamp of the normalised gradient, > 0 (Madam: 10).
        p_scale: cap of |w| growth, as a multiple of the weight RMS at the first step, > 0, or
            None (default) for no cap beyond the format's range. Madam's default is 3; on the
            digits MLP of the tests it cost 6-9 points of accuracy (3 seeds, lr 2^-5: LNS-Madam
            0.87 vs 0.955, float Madam 0.89 vs 0.95): a small network's weights grow further.

    Learning rates that worked on the digits MLP (300 steps, tests/optim/test_lns_madam.py):
    2^-5 for 16-bit codes (frac_bits 10: 32 codes per unit of g*), 2^-4 for 8-bit codes
    (frac_bits 3: half a code per unit; one code, 2^-3, diverged for one seed of six); 2^-10
    (one 16-bit code) learns far too slowly there. The largest step is lr * g_bound log2 units:
    for 8-bit codes at 2^-4 with the default g_bound 10 that is 5 codes (x1.54) at once, and
    about 1 run in 300 collapsed late in training when a hard batch hit the clamp after
    gradients had been small for a while (0.97 -> 0.59 accuracy in 50 steps); g_bound 3 there
    (1.5 codes) fixed that run (0.92) and gave mean 0.957 over 50 seeds, minimum 0.922.

    State per weight: ``step`` (scalar tensor), ``exp_avg_sq`` (float32, or float64 for
    float64 gradients) and ``max_log`` (the p_scale cap as a log field, or None).

    Raises:
        ValueError: invalid hyperparameters; at ``step``, a parameter that is not an
            ``LNSWeight`` or a sparse gradient.
    """

    def __init__(self, params: ParamsT, lr: float, beta: float = 0.999, g_bound: float = 10.0,
                 p_scale: float | None = None) -> None:
        if not as_float("lr", lr) >= 0.0:
            raise ValueError(f"invalid learning rate: {lr} (expected >= 0)")
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"invalid beta: {beta} (expected a value in [0, 1))")
        if not g_bound > 0.0:
            raise ValueError(f"invalid g_bound: {g_bound} (expected > 0)")
        if p_scale is not None and not p_scale > 0.0:
            raise ValueError(f"invalid p_scale: {p_scale} (expected > 0, or None)")
        defaults: dict[str, Any] = {"lr": lr, "beta": beta, "g_bound": g_bound,
                                    "p_scale": p_scale}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float | torch.Tensor] | None = None) -> Any:
        """Perform one update of every LNS weight that has a gradient; ``closure`` re-evaluates
        the loss (with grad enabled). Returns the closure's loss, or None."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if not isinstance(p, LNSWeight):
                    raise ValueError(
                        "LNSMadam steps LNS weights only (the lns_weight of nn.LNSLinear), got a "
                        f"{type(p).__name__} of shape {tuple(p.shape)}; give other parameters "
                        "to an ordinary optimizer (optim.split_lns_parameters)"
                    )
                check_param("LNSMadam", p, p.grad)
                self._update(p, group)
        return loss

    def _update(self, p: LNSWeight, group: dict[str, Any]) -> None:
        layer = p.layer
        fmt = layer.fmt
        state = self.state[p]
        if len(state) == 0:
            state["step"] = torch.tensor(0.0, dtype=scalar_dtype())
            wide = torch.float64 if p.grad.dtype == torch.float64 else torch.float32
            state["exp_avg_sq"] = torch.zeros(p.shape, dtype=wide, device=p.grad.device)
            state["max_log"] = self._cap(layer, group["p_scale"])
        state["step"] += 1
        beta = group["beta"]
        v = state["exp_avg_sq"]
        g = p.grad.to(v.dtype)
        v.mul_(beta).addcmul_(g, g, value=1.0 - beta)
        v_hat = v / (1.0 - beta ** float(state["step"]))
        g_norm = torch.where(v_hat > 0, g / v_hat.sqrt(), 0.0).clamp_(-group["g_bound"],
                                                                       group["g_bound"])
        codes_per_unit = as_float("lr", group["lr"]) * fmt.scale
        steps = torch.round(g_norm * codes_per_unit).to(torch.int64)

        negative, log, zero = unpack(layer.codes, fmt)
        new_log = log - torch.where(negative, -steps, steps)
        if state["max_log"] is not None:
            new_log = torch.minimum(new_log, torch.clamp(log, min=state["max_log"]))
        layer.codes.copy_(pack(negative, new_log, zero, fmt).to(layer.codes.dtype))

    @staticmethod
    def _cap(layer: LNSLinear, p_scale: float | None) -> int | None:
        """Madam's bound p_scale * RMS(w) as a log field of the layer's codes (floor)."""
        if p_scale is None:
            return None
        rms = layer.decoded_weight(torch.float64).pow(2).mean().sqrt().item()
        if rms == 0:
            return None
        return math.floor((math.log2(p_scale * rms) - layer.scale_log2) * layer.fmt.scale)
