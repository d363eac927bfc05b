"""``MegaByteLM``: the ResNet-BK byte language model (SPEC 3.5; docs/MODEL.md).

Bytes are grouped in patches of P. A global model runs over patches, a local model over the
bytes of each patch:

    patch k embedding   u_k = W_p [e(x_{kP}), ..., e(x_{kP+P-1})]                 (D)
    global input        pad, p_0, ..., p_{K-2}       p_k = exp_o(u_k) on the hyperboloid
    global blocks       h <- h (+) exp_o(f(norm(log_o h)))     (BKMixer, then an MLP)
    local input         byte j of patch k: e'(x_{kP+j-1}) (a start vector for j = 0)
                        + (W_g norm(log_o h_k))_j
    local blocks        causal Transformer over the P positions of the patch
    logits              W_out norm(local output)

so byte t is predicted from bytes < t only: patch k's global output has seen patches < k
(the global input is shifted by one patch), and the local model adds the bytes of patch k
before t (shifted by one byte).

Lorentz residual (``geometry="lorentz"``): the hidden state h stays on the hyperboloid. A
sublayer reads h through log_o (its tangent vector at the origin o, spatial part), and its
output y, a tangent vector at o, is added by the gyro-addition h (+) exp_o(y) =
exp_h(PT_{o->h}(y)): the hyperboloid counterpart of x + y (it is Möbius addition in the
Poincaré ball). ``geometry="euclidean"`` is the same network with h + y. In both, the step is
bounded smoothly to ``max_step`` and the state's radius to ``max_radius`` (y -> y
tanhc(|y|/s), u -> u tanhc(|u|/R) with u = log_o h): float32 coordinates of a point at
distance r from the origin are ~e^r, so unbounded residual streams overflow the hyperboloid
long before they overflow a Euclidean stream (docs/MODEL.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from resnetbk.geometry import Lorentz, lorentz
from resnetbk.geometry.numerics import compute_dtype, norm, tanhc
from resnetbk.model.base import ByteLM
from resnetbk.model.config import ModelConfig
from resnetbk.nn.attention import CausalSelfAttention, TransformerBlock
from resnetbk.nn.bk_mixer import BKMixer
from resnetbk.nn.parameter import ManifoldParameter

__all__ = ["GlobalBlock", "MegaByteLM"]


def _mlp(d: int, ff_mult: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d, ff_mult * d), nn.GELU(), nn.Linear(ff_mult * d, d))


class GlobalBlock(nn.Module):
    """Mixer sublayer then MLP sublayer, each with a residual valid on the model's space."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.d_global
        self.hyperbolic = cfg.geometry == "lorentz"
        self.c = cfg.curvature
        self.max_step, self.max_radius = cfg.max_step, cfg.max_radius
        self.norm1 = nn.RMSNorm(d)
        if cfg.mixer == "bk":
            self.mixer: nn.Module = BKMixer(d, cfg.bk_channels or None, cfg.conv_modes)
        else:
            self.mixer = CausalSelfAttention(d, cfg.n_heads)
        self.norm2 = nn.RMSNorm(d)
        self.mlp = _mlp(d, cfg.ff_mult)

    def read(self, h: torch.Tensor) -> torch.Tensor:
        """The Euclidean features a sublayer sees: log_o(h) (spatial part) or h itself."""
        return lorentz.logmap0(h, c=self.c)[..., 1:] if self.hyperbolic else h

    def add(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Residual update h (+) y: gyro-addition on the hyperboloid, h + y in Euclidean space;
        the step and the resulting radius smoothly bounded (``max_step``, ``max_radius``)."""
        y = y.to(h.dtype)
        y = y * tanhc(norm(y) / self.max_step)
        if not self.hyperbolic:
            h = h + y
            return h * tanhc(norm(h) / self.max_radius)
        v = torch.cat([torch.zeros_like(y[..., :1]), y], -1)  # tangent at the origin
        o = lorentz.origin(y.shape[-1], c=self.c, dtype=h.dtype, device=h.device).expand_as(h)
        h = lorentz.expmap(h, lorentz.parallel_transport(o, h, v, c=self.c), c=self.c)
        u = lorentz.logmap0(h, c=self.c)  # radius r = |u| (distance from the origin)
        return lorentz.expmap0(u * tanhc(norm(u) / self.max_radius), c=self.c)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = self.add(h, self.mixer(self.norm1(self.read(h))))
        return self.add(h, self.mlp(self.norm2(self.read(h))))

    def empty_state(self, batch: int, like: torch.Tensor) -> Any:
        if isinstance(self.mixer, BKMixer):
            return self.mixer.init_state(batch, device=like.device, dtype=like.dtype)
        return self.mixer.empty_cache(batch, like)

    def step(self, h_t: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        y, state = self.mixer.step(self.norm1(self.read(h_t)), state)
        h_t = self.add(h_t, y)
        return self.add(h_t, self.mlp(self.norm2(self.read(h_t)))), state


@dataclass
class _GenState:
    """Cached generation state: position, global mixer states, local caches, patch bytes."""

    batch: int
    t: int
    global_states: list[Any]
    local_caches: list[Any]
    cond: torch.Tensor  # (B, P, d_local) global conditioning of the current patch
    patch: list[torch.Tensor]  # bytes of the current patch so far, each (B,)


class MegaByteLM(ByteLM):
    """ResNet-BK byte LM: MegaByte patches, BK global model, Transformer local model."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        cfg.validate()
        self.config = cfg
        self.seq_multiple = p = cfg.patch_size
        d, dl = cfg.d_global, cfg.d_local
        self.hyperbolic = cfg.geometry == "lorentz"
        self.global_bytes = nn.Embedding(256, cfg.byte_dim)
        self.patch_proj = nn.Linear(p * cfg.byte_dim, d)
        if self.hyperbolic:
            manifold = Lorentz(c=cfg.curvature)
            self.pad = ManifoldParameter(lorentz.origin(d, c=cfg.curvature), manifold=manifold)
        else:
            self.pad = nn.Parameter(torch.zeros(d))
        self.global_blocks = nn.ModuleList(GlobalBlock(cfg) for _ in range(cfg.n_global_layers))
        self.global_norm = nn.RMSNorm(d)
        self.global_to_local = nn.Linear(d, p * dl)
        self.local_bytes = nn.Embedding(256, dl)
        self.local_start = nn.Parameter(torch.zeros(dl))
        self.local_blocks = nn.ModuleList(
            TransformerBlock(dl, cfg.n_heads, cfg.ff_mult) for _ in range(cfg.n_local_layers))
        self.local_norm = nn.RMSNorm(dl)
        self.head = nn.Linear(dl, 256)

    def _embed_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """Patches (B, K, P) of bytes -> global inputs (B, K, D[+1]): points or vectors."""
        u = self.patch_proj(self.global_bytes(patches).flatten(-2))
        if not self.hyperbolic:
            return u
        u = u.to(compute_dtype(u.dtype))  # geometry in float32 at least (bf16 autocast)
        return lorentz.expmap0(torch.cat([torch.zeros_like(u[..., :1]), u], -1),
                               c=self.config.curvature)

    def _conditioning(self, h: torch.Tensor) -> torch.Tensor:
        """Global outputs (..., D[+1]) -> local conditioning (..., P, d_local)."""
        r = self.global_blocks[0].read(h) if self.hyperbolic else h
        g = self.global_to_local(self.global_norm(r))
        return g.unflatten(-1, (self.seq_multiple, self.config.d_local))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_bytes(x)
        b, t = x.shape
        p = self.seq_multiple
        patches = x.view(b, t // p, p)
        emb = self._embed_patches(patches)
        pad = self.pad.to(emb.dtype).expand(b, 1, -1)
        h = torch.cat([pad, emb[:, :-1]], 1)  # global input shifted by one patch
        for block in self.global_blocks:
            h = block(h)
        cond = self._conditioning(h)  # (B, K, P, dl)
        e = self.local_bytes(patches)
        start = self.local_start.to(e.dtype).expand(b, t // p, 1, -1)
        z = torch.cat([start, e[:, :, :-1]], 2) + cond  # local input shifted by one byte
        z = z.flatten(0, 1)
        for block in self.local_blocks:
            z = block(z)
        return self.head(self.local_norm(z)).view(b, t, 256)

    def _start(self, batch: int) -> _GenState:
        like = self.pad.detach()
        return _GenState(batch, 0, [blk.empty_state(batch, like) for blk in self.global_blocks],
                         [], like.new_zeros(0), [])

    def _step(self, state: _GenState, prev: torch.Tensor | None) -> tuple[torch.Tensor, Any]:
        p = self.seq_multiple
        if prev is not None:
            state.patch.append(prev)
            state.t += 1
        j = state.t % p
        b = state.batch
        if j == 0:  # a new patch: advance the global model by one patch
            if state.t == 0:
                h_t = self.pad.expand(b, -1)
            else:
                patch = torch.stack(state.patch, 1)[:, None]  # (B, 1, P)
                h_t = self._embed_patches(patch)[:, 0]
            new_states = []
            for block, st in zip(self.global_blocks, state.global_states, strict=True):
                h_t, st = block.step(h_t, st)
                new_states.append(st)
            state.global_states = new_states
            state.cond = self._conditioning(h_t)
            like = state.cond[:, 0]
            state.local_caches = [blk.empty_cache(b, like) for blk in self.local_blocks]
            state.patch = []
        e = self.local_start.expand(b, -1) if j == 0 else self.local_bytes(prev)
        z = e + state.cond[:, j]
        caches = []
        for block, cache in zip(self.local_blocks, state.local_caches, strict=True):
            z, cache = block.step(z, cache)
            caches.append(cache)
        state.local_caches = caches
        return self.head(self.local_norm(z)), state
