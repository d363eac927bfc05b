"""``MegaByteLM``: the ResNet-BK byte language model (SPEC 3.5; docs/MODEL.md).

Bytes are grouped in patches of P. A global model runs over patches, a local model over the
bytes of each patch:

    patch k embedding   u_k = W_p [e(x_{kP}), ..., e(x_{kP+P-1})]                 (D)
    global input        pad, p_0, ..., p_{K-2}        p_k = lift(u_k)
    global blocks       h <- h (+) f(norm(read h))    f = BKMixer (or attention), then an MLP
    local input         byte j of patch k: e'(x_{kP+j-1}) (a start vector for j = 0)
                        + (W_g norm(read h_k))_j
    local blocks        causal Transformer over the P positions of the patch
    logits              W_out norm(local output)

so byte t is predicted from bytes < t only: patch k's global output has seen patches < k
(the global input is shifted by one patch), and the local model adds the bytes of patch k
before t (shifted by one byte).

The global hidden state lives in a ``ResidualSpace``: on the Lorentz hyperboloid
(``geometry="lorentz"``) or in R^D (``"euclidean"``, the ablation), with the same network
otherwise. See ``ResidualSpace`` for the residual update and its bounds.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from resnetbk.geometry import Lorentz, lorentz
from resnetbk.geometry.lorentz import _expmap0, _expmap_stored, _logmap0, _parallel_transport
from resnetbk.geometry.numerics import compute_dtype, norm, tanhc
from resnetbk.kernels.dispatch import compiled_reference
from resnetbk.model.base import ByteLM
from resnetbk.model.config import ModelConfig
from resnetbk.nn.attention import CausalSelfAttention, TransformerBlock, mlp
from resnetbk.nn.bk_mixer import BKMixer
from resnetbk.nn.parameter import ManifoldParameter

__all__ = ["INIT_RADIUS", "GlobalBlock", "MegaByteLM", "ResidualSpace", "soft_bound"]

# Typical distance from the origin (or norm) of a patch embedding and of the pad at
# initialisation: well inside ``max_radius`` (docs/MODEL.md, "Scales").
INIT_RADIUS = 2.0


def soft_bound(v: torch.Tensor, bound: float) -> torch.Tensor:
    """v rescaled to length ``bound * tanh(|v| / bound)``: v + O(|v|^3) for short vectors,
    length < ``bound`` always, smooth, direction kept."""
    return v * tanhc(norm(v) / bound)


def _hyperboloid_update(h: torch.Tensor, y: torch.Tensor, c: float, max_step: float,
                        max_radius: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``ResidualSpace.add_read`` on the hyperboloid: exp_h(PT_{o->h}(0, y)) with the step and
    the radius bounded, from the formulas behind ``lorentz.parallel_transport``, ``expmap``,
    ``logmap0`` and ``expmap0`` (the same arithmetic, without their validation and dispatch)."""
    y = soft_bound(y.to(h.dtype), max_step)
    v = torch.cat([torch.zeros_like(y[..., :1]), y], -1)  # tangent at the origin
    o = lorentz.origin(h.shape[-1] - 1, c=c, dtype=h.dtype, device=h.device).expand_as(h)
    h = _expmap_stored(h, _parallel_transport(o, h, v, c), c)
    u = soft_bound(_logmap0(h, c)[..., 1:], max_radius)
    return _expmap0(torch.cat([torch.zeros_like(u[..., :1]), u], -1), c), u


def _euclidean_update(h: torch.Tensor, y: torch.Tensor, c: float, max_step: float,
                      max_radius: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``ResidualSpace.add_read`` in R^D: h + y with the step and the norm bounded (c unused)."""
    h = soft_bound(h + soft_bound(y.to(h.dtype), max_step), max_radius)
    return h, h


class ResidualSpace:
    """Where the global model's hidden state lives, and how sublayers read and update it.

    Lorentz (``hyperbolic=True``): h is a point of the hyperboloid <h, h>_L = -1/c (time
    coordinate first, D + 1 coordinates). A sublayer reads the spatial part of log_o(h) (its
    tangent vector at the origin o) and returns y in R^D, read as the tangent vector (0, y) at o;
    the update is the gyro-addition

        h (+) y = exp_h(PT_{o -> h}(0, y))

    (the hyperboloid's counterpart of h + y; in the Poincaré ball it is Möbius addition), then
    the radius r = d(o, h) is bounded: h <- exp_o(u R tanh(|u| / R) / |u|), u = log_o(h).
    Euclidean: h is a vector of R^D, h (+) y = h + y, then |h| bounded the same way, so the two
    differ in geometry only.

    Bounds (why): the coordinates of a point at distance r from the origin are ~e^r / 2, so an
    unbounded stream overflows float32 at r ~ 44 (``exp_h`` caps its rapidity there, which would
    cut gradients); the step is first bounded to ``max_step`` (y -> soft_bound(y, max_step)),
    the state to ``max_radius``, both smoothly. Then every point the model forms lies within
    ``max_radius + max_step`` of the origin (triangle inequality): ``ModelConfig.validate``
    keeps that <= 40.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        self.hyperbolic = cfg.geometry == "lorentz"
        self.c = cfg.curvature
        self.dim = cfg.d_global
        self.max_step, self.max_radius = cfg.max_step, cfg.max_radius
        self._update = functools.partial(
            _hyperboloid_update if self.hyperbolic else _euclidean_update,
            max_step=cfg.max_step, max_radius=cfg.max_radius)

    def lift(self, u: torch.Tensor) -> torch.Tensor:
        """A state from u (..., D) in R^D (the tangent space at the origin), radius bounded;
        computed in float32 at least (bf16 autocast keeps the residual stream in float32)."""
        return self._from_features(soft_bound(u.to(compute_dtype(u.dtype)), self.max_radius))

    def _from_features(self, u: torch.Tensor) -> torch.Tensor:
        """The state whose ``read`` is u: exp_o(0, u), or u itself."""
        if not self.hyperbolic:
            return u
        return lorentz.expmap0(torch.cat([torch.zeros_like(u[..., :1]), u], -1), c=self.c)

    def read(self, h: torch.Tensor) -> torch.Tensor:
        """The Euclidean features (..., D) a sublayer sees: log_o(h) (spatial part) or h."""
        return lorentz.logmap0(h, c=self.c)[..., 1:] if self.hyperbolic else h

    def add(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The residual update h (+) y with the step and the resulting radius bounded."""
        return self.add_read(h, y)[0]

    def add_read(self, h: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(h (+) y, read(h (+) y)): the radius bound already yields the new state's features,
        so the next sublayer needs no second log_o.

        The whole update is one function of the geometry's formulas, which CUDA tensors run as
        one ``torch.compile`` call (``compiled_reference``), in both geometries: the model's
        step is bound by host-side launch overhead (on the H200 the GPU is busy for 40 of the
        148 ms of a ``small`` step, ``bench/lm_profile.py``), and as separate ops the update
        was four compiled calls and about a dozen eager ones."""
        if self.hyperbolic:
            lorentz.check_point("h", h, self.c)  # debug mode only: the formulas do not validate
        return compiled_reference(self._update, h, y, c=self.c)

    def new_pad(self) -> nn.Parameter:
        """The learned global input of patch 0: a ``ManifoldParameter`` on the hyperboloid (the
        Riemannian optimizer keeps it there) or a vector. Initialised at a random point like a
        patch embedding's, not at the origin: the sublayers read it through RMSNorm, whose
        gradient at 0 is 1/sqrt(eps)."""
        u = torch.randn(self.dim) * (INIT_RADIUS / self.dim**0.5)
        point = self.lift(u)
        if not self.hyperbolic:
            return nn.Parameter(point)
        return ManifoldParameter(point, manifold=Lorentz(c=self.c))


class GlobalBlock(nn.Module):
    """Mixer sublayer then MLP sublayer, each a bounded residual update in ``space``."""

    def __init__(self, cfg: ModelConfig, space: ResidualSpace) -> None:
        super().__init__()
        d = cfg.d_global
        self.space = space
        self.norm1 = nn.RMSNorm(d)
        if cfg.mixer == "bk":
            self.mixer: nn.Module = BKMixer(d, cfg.bk_channels or None, cfg.conv_modes,
                                            conv_method=cfg.conv_method)
        else:
            self.mixer = CausalSelfAttention(d, cfg.n_heads)
        self.norm2 = nn.RMSNorm(d)
        self.mlp = mlp(d, cfg.ff_mult)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """States (B, K, D + 1) on the hyperboloid or (B, K, D) -> the same, causal along K."""
        s = self.space
        h, r = s.add_read(h, self.drop(self.mixer(self.norm1(s.read(h)))))
        return s.add(h, self.drop(self.mlp(self.norm2(r))))

    def empty_state(self, batch: int, like: torch.Tensor) -> Any:
        """The mixer's generation state before the first patch (BKMixer state or KV cache)."""
        if isinstance(self.mixer, BKMixer):
            return self.mixer.init_state(batch, device=like.device, dtype=like.dtype)
        return self.mixer.empty_cache(batch, like)

    def step(self, h_t: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """One patch: state h_t (B, D [+ 1]) and the mixer state -> (output, new mixer state)."""
        s = self.space
        y, state = self.mixer.step(self.norm1(s.read(h_t)), state)
        h_t, r = s.add_read(h_t, self.drop(y))
        return s.add(h_t, self.drop(self.mlp(self.norm2(r)))), state


@dataclass
class _GenState:
    """Generation state: position, global mixer states, local caches, current patch so far."""

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
        self.space = ResidualSpace(cfg)
        self.global_bytes = nn.Embedding(256, cfg.byte_dim)
        self.patch_proj = nn.Linear(p * cfg.byte_dim, d)
        self.pad = self.space.new_pad()
        self.global_blocks = nn.ModuleList(
            GlobalBlock(cfg, self.space) for _ in range(cfg.n_global_layers))
        self.global_norm = nn.RMSNorm(d)
        self.global_to_local = nn.Linear(d, p * dl)
        self.local_bytes = nn.Embedding(256, dl)
        self.local_start = nn.Parameter(torch.randn(dl))  # like a byte embedding
        self.local_blocks = nn.ModuleList(
            TransformerBlock(dl, cfg.n_heads, cfg.ff_mult, cfg.dropout)
            for _ in range(cfg.n_local_layers))
        self.local_norm = nn.RMSNorm(dl)
        self.head = nn.Linear(dl, 256)
        with torch.no_grad():
            # Patch embeddings of random bytes start at |u| ~ INIT_RADIUS (byte embeddings are
            # N(0, 1)): PyTorch's default init would give |u| ~ sqrt(D / 3), 18 at D = 1024,
            # where the radius bound saturates. Same in both geometries.
            fan_in = p * cfg.byte_dim
            self.patch_proj.weight.normal_(0.0, INIT_RADIUS / (fan_in * d) ** 0.5)
            self.patch_proj.bias.zero_()

    def _pad_state(self) -> torch.Tensor:
        """The pad as a state (D + 1 or D coordinates). On the hyperboloid it is read through
        ``project`` (the point with its spatial coordinates): a pad created in float32 and cast
        to float64, or rounded by an optimizer step, is off the hyperboloid by rounding, and
        every map after it assumes an exact point (the debug checks reject it in float64). On
        the manifold, project is the identity, so the Riemannian gradient is unchanged."""
        if self.space.hyperbolic:
            return lorentz.project(self.pad, c=self.config.curvature)
        return self.pad

    def _embed_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """Patches (B, K, P) of bytes -> states (B, K, D [+ 1]) of the global model."""
        return self.space.lift(self.patch_proj(self.global_bytes(patches).flatten(-2)))

    def _conditioning(self, h: torch.Tensor) -> torch.Tensor:
        """Global outputs (..., D [+ 1]) -> local conditioning (..., P, d_local)."""
        g = self.global_to_local(self.global_norm(self.space.read(h)))
        return g.unflatten(-1, (self.seq_multiple, self.config.d_local))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_bytes(x)
        b, t = x.shape
        p = self.seq_multiple
        patches = x.view(b, t // p, p)
        emb = self._embed_patches(patches)
        pad = self._pad_state().to(emb.dtype).expand(b, 1, -1)
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
                h_t = self._pad_state().expand(b, -1)
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
