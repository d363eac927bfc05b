"""SpecProp: speculative backpropagation with draft gradient models (seed chapter 2, issue 8).

A network is split into body stages and a head (the last stage, which computes the loss). Each
body stage k has a draft gradient model (DGM, a synthetic-gradient module after Jaderberg et
al. 2016) that predicts dL/dh_k from the stage output h_k (and, conditioned, from context such
as the labels). One training step of the schedule, per stage (details in docs/SPECPROP.md):

1. **forward** h_k = stage_k(h_{k-1}); the graph is kept (with a snapshot of the stage's
   parameters when they will change before the graph is used, "weight stashing");
2. **speculate**: the DGM predicts the gradient; the stage steps its parameters with it at once,
   without waiting for the stages above (update unlocking);
3. **arrival** of the true gradient of an earlier step (``delay`` steps per stage hop later):
   the DGM is trained on it (squared error, or Gaussian NLL with ``uncertainty``), the running
   cosine between predicted and true gradients is updated, and the stage corrects its
   parameters: ``"difference"`` undoes the speculative step and takes the true one, ``"noise"``
   keeps the speculative step (the error is treated as SGD noise).

The true gradient is either full backprop (``target="backprop"``: dL/dh_k through the real
stages above) or the next stage's bootstrapped prediction (``"bootstrap"``: J_{k+1}^T of the
DGM of stage k+1, or of the loss gradient for the stage below the head), which is DNI.

Executors of the same schedule (the same operations per stage, so the same results): this
module runs all stages in one process, on CPU or GPU, optionally with one CUDA stream per stage
so that a stage's forward of step t+1 overlaps the stages above working on step t;
``resnetbk.train.specprop_dist`` runs one stage per process with ``torch.distributed``.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import warnings
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch._functorch.config as functorch_config
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from resnetbk.debug import check_finite
from resnetbk.geometry import lorentz
from resnetbk.model import MegaByteLM

__all__ = [
    "CORRECTIONS",
    "TARGETS",
    "CosineGate",
    "DraftGradientModel",
    "LossHead",
    "SpecProp",
    "SpecPropConfig",
    "confidence",
    "split_lm",
    "split_sequential",
]

TARGETS = ("backprop", "bootstrap")
CORRECTIONS = ("difference", "noise")

# A factory of the optimizer(s) of one stage: called with the stage module, it returns one
# optimizer or several (a mapping, as ``resnetbk.train.lm.build_optimizers`` returns).
OptimizerFactory = Callable[
    [nn.Module], "torch.optim.Optimizer | Mapping[str, torch.optim.Optimizer]"]


@dataclass(frozen=True)
class SpecPropConfig:
    """Settings of a SpecProp run.

    ``speculate=False`` builds no DGMs: each stage takes its true gradient when it arrives, so
    with ``delay=0`` the wrapper is plain backprop (bit for bit) and with ``delay >= 1`` it is
    delayed-gradient training (the unlocked pipeline without speculation, a control).
    """

    speculate: bool = True
    # What the DGM of a stage is trained on and what the stage is corrected with.
    target: str = "backprop"
    correction: str = "difference"
    # Steps a true gradient takes to cross one stage boundary downwards: the gradient of step t
    # reaches body stage k (0-based, n body stages) after its forward of step t + D_k, with
    # D_k = (n - k) * delay for full backprop and D_k = delay for bootstrapped targets.
    delay: int = 1
    # Width of the context vector given to every DGM (0: unconditioned; cDNI: one-hot labels).
    context_dim: int = 0
    # Hidden units of the DGM (0: one linear layer, as in DNI).
    dgm_hidden: int = 0
    # Adam learning rate of the DGMs (in units of the running gradient scale: fast tracking
    # matters more than smooth fits, docs/SPECPROP.md).
    dgm_lr: float = 0.1
    # The DGM also predicts a variance; the speculative step is scaled by ``confidence``.
    uncertainty: bool = False
    # Cosine gate: speculation of a stage turns on when the running cosine between predicted
    # and true gradients reaches ``gate_on`` and off when it falls below ``gate_off`` (None:
    # no gate, always speculate). Stages start with the gate closed.
    gate_on: float | None = None
    gate_off: float = 0.0
    # EMA factors of the running cosine and of the running gradient scale of each DGM.
    cosine_beta: float = 0.9
    scale_beta: float = 0.99

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid or contradictory setting."""
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {self.target!r}")
        if self.correction not in CORRECTIONS:
            raise ValueError(f"correction must be one of {', '.join(CORRECTIONS)}, got "
                             f"{self.correction!r}")
        for name in ("delay", "context_dim", "dgm_hidden"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
        if not (math.isfinite(self.dgm_lr) and self.dgm_lr > 0):
            raise ValueError(f"dgm_lr must be a finite number > 0, got {self.dgm_lr}")
        for name in ("cosine_beta", "scale_beta"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {v}")
        if self.gate_on is not None:
            CosineGate(self.gate_on, self.gate_off)  # raises for thresholds without hysteresis
        if not self.speculate:
            extras = {"target='bootstrap'": self.target == "bootstrap",
                      "uncertainty=True": self.uncertainty,
                      "gate_on": self.gate_on is not None, "context_dim > 0": self.context_dim > 0}
            used = [k for k, v in extras.items() if v]
            if used:
                raise ValueError(f"{', '.join(used)} need speculate=True (without speculation "
                                 "there are no draft gradient models)")


class DraftGradientModel(nn.Module):
    """Predicts the gradient dL/dh of a stage output h, vector by vector along the last axis.

    Input: h (..., dim) and, conditioned, a context (..., context_dim). Output: the mean
    (..., dim) and, with ``uncertainty``, a variance (..., dim) of the gradient. The network
    works in units of ``scale``, the running mean square of the true gradients it has seen (an
    EMA): mean = sqrt(scale) m(h), variance = scale exp(v(h)), so its weights and learning rate
    do not depend on the loss scale (a byte LM's dL/dh is ~1e-6, a small classifier's ~1e-2).
    Both heads are zero-initialised: a new DGM predicts exactly zero (it starts silent), with
    variance ``scale`` ("as large as a typical gradient").
    """

    def __init__(self, dim: int, context_dim: int = 0, hidden: int = 0,
                 uncertainty: bool = False, scale_beta: float = 0.99, *,
                 device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        for name, v in (("dim", dim), ("context_dim", context_dim), ("hidden", hidden)):
            if isinstance(v, bool) or not isinstance(v, int) or v < (1 if name == "dim" else 0):
                raise ValueError(f"{name} must be an integer >= {1 if name == 'dim' else 0}, "
                                 f"got {v!r}")
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.dim, self.context_dim, self.scale_beta = dim, context_dim, scale_beta
        width = dim + context_dim
        self.trunk: nn.Module = nn.Identity()
        if hidden:
            self.trunk = nn.Sequential(nn.Linear(width, hidden, **kw), nn.ReLU())
            width = hidden
        self.mean_head = nn.Linear(width, dim, **kw)
        self.var_head = nn.Linear(width, dim, **kw) if uncertainty else None
        for head in (self.mean_head, self.var_head):
            if head is not None:
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)
        self.register_buffer("scale", torch.ones((), **kw))
        self.register_buffer("observed", torch.zeros((), dtype=torch.long, device=device))

    def _heads(self, h: torch.Tensor,
               context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(mean, log-variance or None), both in units of ``scale``."""
        if h.shape[-1] != self.dim:
            raise ValueError(f"h must have last dimension {self.dim}, got shape {tuple(h.shape)}")
        if self.context_dim:
            if context is None or context.shape != (*h.shape[:-1], self.context_dim):
                got = None if context is None else tuple(context.shape)
                raise ValueError(f"context must have shape {(*h.shape[:-1], self.context_dim)} "
                                 f"(the DGM is conditioned), got {got}")
            h = torch.cat([h, context.to(h.dtype)], -1)
        elif context is not None:
            raise ValueError("context given to an unconditioned DGM (context_dim=0)")
        z = self.trunk(h)
        return self.mean_head(z), None if self.var_head is None else self.var_head(z)

    def _scale(self) -> torch.Tensor:
        # Floor for an all-zero gradient history (dead units): 0/0 guard, not a clamp of data.
        return self.scale.clamp_min(torch.finfo(self.scale.dtype).tiny)

    def forward(self, h: torch.Tensor,
                context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(mean, variance or None) of the predicted gradient, in the units of dL/dh."""
        mean, log_var = self._heads(h, context)
        s = self._scale()
        return mean * s.sqrt(), None if log_var is None else log_var.exp() * s

    @torch.no_grad()
    def observe(self, target: torch.Tensor) -> None:
        """Fold the mean square of a true gradient into ``scale`` (the first one sets it)."""
        ms = target.detach().pow(2).mean().to(self.scale.dtype)
        ema = self.scale_beta * self.scale + (1.0 - self.scale_beta) * ms
        self.scale.copy_(torch.where(self.observed > 0, ema, ms))
        self.observed += 1

    def loss(self, h: torch.Tensor, context: torch.Tensor | None,
             target: torch.Tensor) -> torch.Tensor:
        """Training loss against the true gradient ``target`` in units of ``scale``: the mean
        squared error, or with a variance head the Gaussian negative log-likelihood
        0.5 (v + r^2 e^-v) (r: residual, v: log-variance; constants dropped)."""
        mean, log_var = self._heads(h, context)
        r = target.detach().to(mean.dtype) / self._scale().sqrt() - mean
        if log_var is None:
            return r.pow(2).mean()
        return 0.5 * (log_var + r.pow(2) * torch.exp(-log_var)).mean()


def confidence(mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """Confidence in [0, 1) of a predicted gradient, one per vector (last axis reduced):
    |mean|^2 / (|mean|^2 + sum var), the Wiener gain SNR / (1 + SNR) with SNR = |mean|^2 /
    sum var. If the true gradient is g ~ N(mean, diag var), it is E[mean . g]^2 /
    (|mean|^2 E|g|^2), the square of the expected cosine between prediction and truth: 0 for a
    silent or uninformed DGM, 1 for a certain one."""
    power = mean.pow(2).sum(-1)
    return power / (power + var.sum(-1))


class CosineGate:
    """Hysteresis switch of one stage's speculation on the running cosine between predicted and
    true gradients: closed at the start, opens when the value reaches ``on``, closes when it
    falls below ``off`` (``off < on``, so noise around one threshold does not toggle it)."""

    def __init__(self, on: float, off: float) -> None:
        if not -1.0 <= off < on <= 1.0:
            raise ValueError(f"the cosine gate needs -1 <= gate_off < gate_on <= 1 (hysteresis), "
                             f"got gate_off={off}, gate_on={on}")
        self.on, self.off = on, off
        self.open = False

    def update(self, value: float) -> bool:
        """Feed the current running cosine; return whether speculation is now on."""
        if math.isnan(value):
            raise ValueError("the running cosine is NaN: a predicted or true gradient is not "
                             "finite")
        if self.open and value < self.off:
            self.open = False
        elif not self.open and value >= self.on:
            self.open = True
        return self.open


class LossHead(nn.Module):
    """The last stage as ``head(h, y) -> loss``: ``criterion(module(h), y)``."""

    def __init__(self, module: nn.Module, criterion: Callable[[torch.Tensor, torch.Tensor],
                                                              torch.Tensor]) -> None:
        super().__init__()
        self.module = module
        self.criterion = criterion

    def forward(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.criterion(self.module(h), y)


def split_sequential(model: nn.Sequential, cuts: Sequence[int]) -> list[nn.Sequential]:
    """``model`` cut before each index in ``cuts`` (strictly increasing, inside the model):
    ``split_sequential(seq, [2, 4])`` -> seq[:2], seq[2:4], seq[4:]. The pieces share the
    modules (and parameters) of ``model``."""
    cuts = list(cuts)
    if not cuts or any(not 0 < c < len(model) for c in cuts) or cuts != sorted(set(cuts)):
        raise ValueError(f"cuts must be strictly increasing indices in 1..{len(model) - 1}, got "
                         f"{cuts}")
    bounds = [0, *cuts, len(model)]
    return [model[a:b] for a, b in itertools.pairwise(bounds)]


class _LMInput(nn.Module):
    """First stage of a ``MegaByteLM``: bytes (B, T) -> global states, then global blocks.
    Mirrors the start of ``MegaByteLM.forward``; the pad is read from this module, so that a
    parameter snapshot of the stage (``functional_call``) replaces it."""

    def __init__(self, model: MegaByteLM, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.global_bytes, self.patch_proj, self.pad = (model.global_bytes, model.patch_proj,
                                                        model.pad)
        self.blocks = nn.ModuleList(blocks)
        self._lm = (model,)  # a tuple: the model is not a submodule (its parameters are not ours)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lm = self._lm[0]
        lm.check_bytes(x)
        b, t = x.shape
        emb = lm._embed_patches(x.view(b, t // lm.seq_multiple, lm.seq_multiple))
        pad = lorentz.project(self.pad, c=lm.config.curvature) if lm.space.hyperbolic \
            else self.pad
        h = torch.cat([pad.to(emb.dtype).expand(b, 1, -1), emb[:, :-1]], 1)
        for block in self.blocks:
            h = block(h)
        return h


class _LMLoss(nn.Module):
    """Last stage of a ``MegaByteLM``: the remaining global blocks, the local model and the
    loss, ``(h, x) -> nats per byte``; mirrors the end of ``MegaByteLM.forward`` and
    ``ByteLM.loss``."""

    def __init__(self, model: MegaByteLM, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.global_norm, self.global_to_local = model.global_norm, model.global_to_local
        self.local_bytes, self.local_start = model.local_bytes, model.local_start
        self.local_blocks, self.local_norm, self.head = (model.local_blocks, model.local_norm,
                                                         model.head)
        self._lm = (model,)

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        lm = self._lm[0]
        for block in self.blocks:
            h = block(h)
        b, t = x.shape
        p = lm.seq_multiple
        patches = x.view(b, t // p, p)
        e = self.local_bytes(patches)
        start = self.local_start.to(e.dtype).expand(b, t // p, 1, -1)
        z = (torch.cat([start, e[:, :, :-1]], 2) + lm._conditioning(h)).flatten(0, 1)
        for block in self.local_blocks:
            z = block(z)
        logits = self.head(self.local_norm(z)).view(b, t, 256).float()
        nll = F.cross_entropy(logits.reshape(-1, 256), x.reshape(-1), reduction="none")
        return nll.view_as(x).mean()


def split_lm(model: MegaByteLM,
             cuts: Sequence[int]) -> tuple[list[nn.Module], nn.Module, list[int]]:
    """``model`` as SpecProp stages, cut between global blocks: ``cuts`` (strictly increasing
    block indices in 1..n_global_layers) start the next stage. Returns (body, head,
    feature_dims): body[0] embeds the bytes and runs the first blocks, the head runs the rest,
    the local model and the loss (``head(h, x)``, x the bytes as both input and target). The
    stages share the model's modules; body then head equals ``model.loss``."""
    n = len(model.global_blocks)
    cuts = list(cuts)
    if not cuts or any(not 0 < c <= n for c in cuts) or cuts != sorted(set(cuts)):
        raise ValueError(f"cuts must be strictly increasing global-block indices in 1..{n}, "
                         f"got {cuts}")
    blocks = list(model.global_blocks)
    bounds = [0, *cuts]
    body: list[nn.Module] = [_LMInput(model, blocks[:cuts[0]])]
    body += [nn.Sequential(*blocks[a:b]) for a, b in itertools.pairwise(bounds[1:])]
    width = model.config.d_global + (1 if model.space.hyperbolic else 0)
    return body, _LMLoss(model, blocks[cuts[-1]:]), [width] * len(body)


def _as_list(opt: Any) -> list[torch.optim.Optimizer]:
    return list(opt.values()) if isinstance(opt, Mapping) else [opt]


def _apply(params: Sequence[nn.Parameter], grads: Sequence[torch.Tensor | None],
           optimizers: Sequence[torch.optim.Optimizer]) -> None:
    """One step of ``optimizers`` with ``grads`` as the gradients of ``params`` (None: the
    parameter was not used, the optimizers skip it).

    A gradient gets its parameter's strides, as ``backward`` guarantees and fused optimizers
    require; ``autograd.grad`` can return others (compiled graphs do)."""
    for p, g in zip(params, grads, strict=True):
        if g is not None and g.stride() != p.stride():
            g = torch.empty_like(p).copy_(g)
        p.grad = g
    for opt in optimizers:
        opt.step()
    for p in params:
        p.grad = None


def _no_autocast(like: torch.Tensor) -> contextlib.AbstractContextManager[Any]:
    """The DGMs are small: they run in their own dtype even inside an autocast region."""
    return torch.autocast(like.device.type, enabled=False)


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine between two tensors as flat vectors; 0 when either is zero (a silent DGM carries
    no direction)."""
    a, b = a.flatten().to(b.dtype), b.flatten()
    denom = a.norm() * b.norm()
    return torch.where(denom > 0, (a @ b) / torch.where(denom > 0, denom, 1.0), 0.0)


@dataclass
class _Record:
    """What a body stage keeps of one step until its true gradient arrives."""

    h_in: torch.Tensor
    h_out: torch.Tensor
    params: list[torch.Tensor]  # the tensors the forward used: live parameters or a snapshot
    context: torch.Tensor | None
    mean: torch.Tensor | None = None  # the DGM's prediction at forward time
    taken: bool = False  # whether the speculative step was taken
    undo: list[torch.Tensor] | None = field(default=None, repr=False)  # minus the step taken


class _BodyStage:
    """One body stage with its DGM, optimizers and pending steps (executor-independent)."""

    def __init__(self, index: int, module: nn.Module, dim: int, cfg: SpecPropConfig,
                 optimizer: OptimizerFactory, spec_optimizer: OptimizerFactory,
                 delay: int) -> None:
        self.index, self.module, self.cfg, self.delay = index, module, cfg, delay
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError(f"stage {index} has no trainable parameters")
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.optimizers = _as_list(optimizer(module))
        self.pending: dict[int, _Record] = {}
        # Stash a parameter snapshot when the parameters change between a forward and the
        # use of its graph (a speculative step, or corrections of earlier steps meanwhile).
        self.stash = cfg.speculate or delay > 0
        self.dgm: DraftGradientModel | None = None
        self.gate: CosineGate | None = None
        self.last_target: torch.Tensor | None = None
        if cfg.speculate:
            p0 = self.params[0]
            # Built on the CPU, then moved: the same initial DGM whatever device the stage is on.
            self.dgm = DraftGradientModel(dim, cfg.context_dim, cfg.dgm_hidden, cfg.uncertainty,
                                          cfg.scale_beta, dtype=p0.dtype).to(p0.device)
            self.dgm_optimizer = torch.optim.Adam(self.dgm.parameters(), lr=cfg.dgm_lr)
            self.spec_optimizers = _as_list(spec_optimizer(module))
            self.cosine = torch.zeros((), dtype=p0.dtype, device=p0.device)
            if cfg.gate_on is not None:
                self.gate = CosineGate(cfg.gate_on, cfg.gate_off)

    def forward(self, t: int, h_in: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """Stage output of step t (its graph is kept until the true gradient arrives)."""
        if self.stash:
            snap = [p.detach().clone().requires_grad_() for p in self.params]
            h_out = functional_call(self.module, dict(zip(self.names, snap, strict=True)),
                                    (h_in,))
        else:
            snap = self.params
            h_out = self.module(h_in)
        self.pending[t] = _Record(h_in, h_out, snap, context)
        return h_out

    def _vjp(self, rec: _Record, grad: torch.Tensor, params: bool, inputs: bool,
             retain: bool) -> tuple[list[torch.Tensor | None], torch.Tensor | None]:
        """(J^T grad w.r.t. the parameters if ``params``, w.r.t. the input if ``inputs``)."""
        wrt = (rec.params if params else []) + ([rec.h_in] if inputs else [])
        if not wrt:
            return [], None
        out = torch.autograd.grad(rec.h_out, wrt, grad, retain_graph=retain, allow_unused=True)
        return list(out[:len(rec.params)]) if params else [], out[-1] if inputs else None

    def speculate(self, t: int) -> torch.Tensor | None:
        """Predict the gradient of step t and take the speculative step (if the gate is open);
        return the bootstrapped target J^T mean of the stage below (``target="bootstrap"``)."""
        if self.dgm is None:
            return None
        rec = self.pending[t]
        with torch.no_grad(), _no_autocast(rec.h_out):
            mean, var = self.dgm(rec.h_out.detach(), rec.context)
            step = mean if var is None else mean * confidence(mean, var).unsqueeze(-1)
        mean, step = mean.to(rec.h_out.dtype), step.to(rec.h_out.dtype)
        check_finite(f"the predicted gradient of stage {self.index}", step)  # debug mode only
        rec.mean = mean
        rec.taken = self.gate is None or self.gate.open
        boot = self.cfg.target == "bootstrap" and self.index > 0
        together = boot and var is None  # one backward serves both
        grads, below = self._vjp(rec, step, rec.taken, together, retain=True)
        if boot and not together:
            below = self._vjp(rec, mean, False, True, retain=True)[1]
        if rec.taken:
            with torch.no_grad():
                before = [p.detach().clone() for p in self.params]
            _apply(self.params, grads, self.spec_optimizers)
            if self.cfg.correction == "difference":
                with torch.no_grad():
                    torch._foreach_sub_(before, [p.detach() for p in self.params])
                rec.undo = before
        return below

    def arrive(self, t: int, delta: torch.Tensor) -> torch.Tensor | None:
        """The true gradient dL/dh of step t arrives: train the DGM, correct the parameters.
        Returns dL/dh of the stage input (full backprop target of the stage below) or None."""
        rec = self.pending.pop(t)
        delta = delta.detach()
        check_finite(f"the true gradient arriving at stage {self.index}", delta)
        self.last_target = delta
        true_step = not rec.taken or self.cfg.correction == "difference"
        below = self.cfg.target == "backprop" and self.index > 0
        grads, down = self._vjp(rec, delta, true_step, below, retain=False)
        if self.dgm is not None:
            self._learn(rec, delta)
        if rec.undo is not None:
            with torch.no_grad():
                torch._foreach_add_([p.detach() for p in self.params], rec.undo)
        if true_step:
            _apply(self.params, grads, self.optimizers)
        return down

    def _learn(self, rec: _Record, delta: torch.Tensor) -> None:
        """Train the DGM on the true gradient; update the running cosine and the gate."""
        assert self.dgm is not None and rec.mean is not None
        self.dgm.observe(delta)
        with _no_autocast(delta):
            loss = self.dgm.loss(rec.h_out.detach(), rec.context, delta)
        self.dgm_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.dgm_optimizer.step()
        beta = self.cfg.cosine_beta
        self.cosine.mul_(beta).add_(_cosine(rec.mean, delta).to(self.cosine.dtype),
                                    alpha=1.0 - beta)
        if self.gate is not None:
            self.gate.update(float(self.cosine))


class _Head:
    """The last stage: loss, its true step, and dL/dh of its input for the stage below."""

    def __init__(self, module: nn.Module, optimizer: OptimizerFactory) -> None:
        self.module = module
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.optimizers = _as_list(optimizer(module))

    def step(self, h: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, dL/dh) for the head input h (from the stage below, detached here)."""
        h_in = h.detach().requires_grad_()
        loss = self.module(h_in, y)
        grads = torch.autograd.grad(loss, [*self.params, h_in], allow_unused=True)
        _apply(self.params, grads[:-1], self.optimizers)
        return loss.detach(), grads[-1]


def _allow_retained_graphs() -> None:
    """Let compiled graphs take a second backward pass (SpecProp's speculative VJP keeps each
    stage's graph for the true gradient: ``retain_graph=True``).

    Graphs that ``torch.compile`` builds with donated buffers (torch's default; resnetbk's
    geometry ops compile their reference formulas on CUDA) refuse that. So donated buffers go
    off process-wide, and graphs compiled before are dropped (``torch._dynamo.reset``) to be
    recompiled without them: with the check off, a stale graph that donates its saved tensors
    would silently corrupt the second pass. They only saved backward memory.
    """
    if functorch_config.donated_buffer:
        functorch_config.donated_buffer = False
        torch._dynamo.reset()
        warnings.warn("SpecProp turned off torch.compile's donated buffers for this process "
                      "(torch._functorch.config.donated_buffer = False) and reset compiled "
                      "graphs: it backpropagates twice through each stage's graph",
                      stacklevel=3)


class SpecProp:
    """Trains ``body`` stages and a ``head`` with speculative backpropagation (module docstring).

    ``body[k]`` maps h_{k-1} -> h_k (h_{-1} = the input x); ``head(h, y)`` returns the scalar
    loss; ``feature_dims[k]`` is the last dimension of h_k (the DGM's width). ``optimizer``
    builds each stage's optimizer(s) for true gradients; speculative steps use a second,
    independent set from ``spec_optimizer`` (default: the same factory). ``context_fn(y)``
    gives the DGM context (needed when ``config.context_dim > 0``). Stages must not share
    parameters. With ``streams=True`` (CUDA only) every stage runs on its own CUDA stream; read
    the returned loss after ``torch.cuda.synchronize()``.

    Call ``step(x, y)`` per batch and ``flush()`` before using the final parameters: it applies
    the true gradients still in flight.
    """

    def __init__(self, body: Sequence[nn.Module], head: nn.Module, feature_dims: Sequence[int],
                 optimizer: OptimizerFactory, config: SpecPropConfig | None = None, *,
                 spec_optimizer: OptimizerFactory | None = None,
                 context_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 streams: bool = False) -> None:
        cfg = config or SpecPropConfig()
        cfg.validate()
        n = len(body)
        if n < 1:
            raise ValueError("body must hold at least one stage (the head is the last stage)")
        if len(feature_dims) != n:
            raise ValueError(f"feature_dims must give one width per body stage ({n}), got "
                             f"{list(feature_dims)}")
        if (cfg.context_dim > 0) != (context_fn is not None):
            raise ValueError("context_fn must be given exactly when config.context_dim > 0 "
                             f"(context_dim={cfg.context_dim}, context_fn={context_fn!r})")
        seen: set[int] = set()
        for k, m in enumerate([*body, head]):
            ids = {id(p) for p in m.parameters()}
            if ids & seen:
                raise ValueError(f"stage {k} shares parameters with an earlier stage")
            seen |= ids
        _allow_retained_graphs()
        self.config, self.context_fn = cfg, context_fn
        hops = [(n - k) if cfg.target == "backprop" else 1 for k in range(n)]
        self.body = [_BodyStage(k, m, d, cfg, optimizer, spec_optimizer or optimizer,
                                hops[k] * cfg.delay)
                     for k, (m, d) in enumerate(zip(body, feature_dims, strict=True))]
        self.head = _Head(head, optimizer)
        self.t = 0
        # Messages to body stage k: (step, gradient of h_k), oldest first.
        self.mail: list[deque[tuple[int, torch.Tensor, Any]]] = [deque() for _ in range(n)]
        self.streams: list[torch.cuda.Stream] | None = None
        if streams:
            if not torch.cuda.is_available():
                raise ValueError("streams=True needs a CUDA device")
            devices = {p.device for m in [*body, head] for p in m.parameters()}
            if len(devices) != 1 or next(iter(devices)).type != "cuda":
                raise ValueError(f"streams=True needs every stage on one CUDA device, got "
                                 f"{sorted(map(str, devices))}")
            dev = next(iter(devices))
            self.streams = [torch.cuda.Stream(dev) for _ in range(n + 1)]

    # -- executor plumbing (no-ops without streams) --------------------------------------

    def _on(self, k: int) -> contextlib.AbstractContextManager[Any]:
        return torch.cuda.stream(self.streams[k]) if self.streams else contextlib.nullcontext()

    def _mark(self) -> torch.cuda.Event | None:
        """An event after the work issued so far on the current stream (None without
        streams)."""
        if not self.streams:
            return None
        event = torch.cuda.Event()
        event.record()
        return event

    def _take(self, event: torch.cuda.Event | None, *tensors: torch.Tensor | None) -> None:
        """Make the current stream wait for ``event`` and keep ``tensors`` (made on another
        stream) alive for it."""
        if event is None:
            return
        stream = torch.cuda.current_stream()
        stream.wait_event(event)
        for x in tensors:
            if x is not None:
                x.record_stream(stream)

    # -- the schedule ---------------------------------------------------------------------

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One training step on batch (x, y); returns the loss (detached)."""
        t, n = self.t, len(self.body)
        context = None
        if self.context_fn is not None:
            context = self.context_fn(y).detach()
        inputs = self._mark()
        h, ready = x, inputs
        for k, stage in enumerate(self.body):
            with self._on(k):
                self._take(inputs, x, context)
                self._take(ready, h)
                h_in = h.detach().requires_grad_(k > 0)
                h = stage.forward(t, h_in, context)
                ready = self._mark()
                boot = stage.speculate(t)
                if boot is not None:
                    self.mail[k - 1].append((t, boot, self._mark()))
        with self._on(n):
            self._take(inputs, y)
            self._take(ready, h)
            loss, delta = self.head.step(h, y)
            self.mail[n - 1].append((t, delta, self._mark()))
        self._deliver(t)
        self.t += 1
        return loss

    def _deliver(self, t: int) -> None:
        """Arrivals at time t, top stage first: stage k receives its gradient of step
        t - D_k (if that step is still pending) and passes dL/dh_{k-1} down."""
        for k in reversed(range(len(self.body))):
            stage = self.body[k]
            s = t - stage.delay
            if s not in stage.pending:
                continue
            step, delta, ready = self.mail[k].popleft()
            assert step == s, f"stage {k} expected the gradient of step {s}, got {step}"
            with self._on(k):
                self._take(ready, delta)
                down = stage.arrive(s, delta)
                if down is not None:
                    self.mail[k - 1].append((s, down, self._mark()))

    def flush(self) -> None:
        """Apply the true gradients still in flight (as if the schedule ran on without new
        batches); afterwards no step is pending."""
        t = self.t
        while any(stage.pending for stage in self.body):
            self._deliver(t)
            t += 1

    # -- checkpoints ----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """SpecProp's own training state after :meth:`flush` (nothing in flight): per body
        stage the DGM, its optimizer, the running cosine and the gate. The stages' parameters
        and their optimizers are the caller's to save (they belong to the model)."""
        if any(stage.pending for stage in self.body):
            raise RuntimeError("SpecProp.state_dict: steps are in flight; call flush() first "
                               "(their graphs cannot be saved)")
        stages = []
        for stage in self.body:
            entry: dict[str, Any] = {}
            if stage.dgm is not None:
                entry = {"dgm": stage.dgm.state_dict(),
                         "dgm_optimizer": stage.dgm_optimizer.state_dict(),
                         "cosine": stage.cosine.detach().clone(),
                         "gate_open": None if stage.gate is None else stage.gate.open}
            stages.append(entry)
        return {"t": self.t, "stages": stages}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` into a SpecProp built with the same stages and config
        (ValueError naming what does not fit)."""
        stages = state.get("stages") if isinstance(state, Mapping) else None
        if not isinstance(stages, list) or len(stages) != len(self.body):
            found = len(stages) if isinstance(stages, list) else type(stages).__name__
            raise ValueError(f"SpecProp state has {found} body stages, this SpecProp has "
                             f"{len(self.body)}")
        for stage, entry in zip(self.body, stages, strict=True):
            if (stage.dgm is None) != (not entry):
                raise ValueError(f"SpecProp state of stage {stage.index}: "
                                 f"{'no' if not entry else 'a'} draft gradient model, but this "
                                 f"SpecProp has {'one' if stage.dgm is not None else 'none'} "
                                 "(config.speculate differs)")
            if stage.dgm is None:
                continue
            if (stage.gate is None) != (entry["gate_open"] is None):
                raise ValueError(f"SpecProp state of stage {stage.index}: "
                                 f"{'no' if entry['gate_open'] is None else 'a'} cosine gate, "
                                 f"but this SpecProp has "
                                 f"{'none' if stage.gate is None else 'one'} (config.gate_on "
                                 "differs)")
            stage.dgm.load_state_dict(entry["dgm"])
            stage.dgm_optimizer.load_state_dict(entry["dgm_optimizer"])
            stage.cosine.copy_(entry["cosine"])
            if stage.gate is not None:
                stage.gate.open = entry["gate_open"]
        self.t = int(state["t"])

    # -- inspection -----------------------------------------------------------------------

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """Every optimizer of the stages' parameters (true and speculative steps), e.g. for a
        learning-rate schedule."""
        out = [o for s in self.body for o in s.optimizers] + self.head.optimizers
        return out + [o for s in self.body if s.dgm is not None for o in s.spec_optimizers]

    def dgms(self) -> list[DraftGradientModel]:
        """The draft gradient models of the body stages (empty without speculation)."""
        return [s.dgm for s in self.body if s.dgm is not None]

    def stats(self) -> list[dict[str, Any]]:
        """Per body stage: running cosine, gate state, steps in flight (host values)."""
        return [{"stage": s.index, "cosine": float(s.cosine) if s.dgm is not None else None,
                 "speculating": s.dgm is not None and (s.gate is None or s.gate.open),
                 "in_flight": len(s.pending)} for s in self.body]
