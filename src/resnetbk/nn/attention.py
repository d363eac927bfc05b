"""Causal self-attention (PyTorch SDPA, rotary positions) and a pre-norm Transformer block.

Used by the language models (``resnetbk.model``): the local byte model inside a patch, the
Transformer baseline and ``mixer="attention"`` of the global model. Every module has a full
``forward`` over a sequence and a ``step`` that takes one position and a key/value cache, and
the two agree (tested): generation reuses the cache instead of recomputing the prefix.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from resnetbk.nn._checks import check_size

__all__ = ["CausalSelfAttention", "KVCache", "TransformerBlock", "apply_rope", "mlp"]


class KVCache(NamedTuple):
    """Keys and values of the positions seen so far, each (B, heads, T, head_dim)."""

    k: torch.Tensor
    v: torch.Tensor


def apply_rope(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotary position embedding of x (..., T, head_dim) at integer ``positions`` (T,).

    Pairs (x_i, x_{i + h/2}) rotate by angle position * base^(-2i/h) (the "half" layout of
    GPT-NeoX / Llama), so <rope(q, m), rope(k, n)> depends on m - n only. Angles are computed in
    float32 (float64 for float64 inputs): bf16 angles at positions ~1e4 would be off by radians.
    """
    half = x.shape[-1] // 2
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    inv_freq = base ** (-torch.arange(half, device=x.device, dtype=work) / half)
    angle = positions.to(work)[:, None] * inv_freq  # (T, half)
    cos, sin = angle.cos(), angle.sin()
    x1, x2 = x[..., :half].to(work), x[..., half:].to(work)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).to(x.dtype)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with rotary positions; (B, T, D) -> (B, T, D)."""

    def __init__(self, d_model: int, n_heads: int, rope_base: float = 10000.0) -> None:
        super().__init__()
        check_size("CausalSelfAttention", "d_model", d_model)
        check_size("CausalSelfAttention", "n_heads", n_heads)
        if d_model % n_heads or (d_model // n_heads) % 2:
            raise ValueError(
                f"CausalSelfAttention: d_model ({d_model}) must be n_heads ({n_heads}) times an "
                "even head size (rotary embeddings rotate pairs)"
            )
        self.n_heads = n_heads
        self.rope_base = rope_base
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def _heads(self, x: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, d // self.n_heads).permute(
            2, 0, 3, 1, 4)
        return apply_rope(q, positions, self.rope_base), apply_rope(k, positions, self.rope_base), v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self._heads(x, torch.arange(t, device=x.device))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(y.transpose(1, 2).reshape(b, t, d))

    def empty_cache(self, batch: int, like: torch.Tensor) -> KVCache:
        """The cache before the first position, for inputs like ``like`` (dtype, device)."""
        d = self.out.in_features
        shape = (batch, self.n_heads, 0, d // self.n_heads)
        return KVCache(like.new_zeros(shape), like.new_zeros(shape))

    def step(self, x_t: torch.Tensor, cache: KVCache) -> tuple[torch.Tensor, KVCache]:
        """One position: x_t (B, D) attends to the cache and itself -> (y_t (B, D), cache)."""
        b, d = x_t.shape
        pos = torch.tensor([cache.k.shape[2]], device=x_t.device)
        q, k, v = self._heads(x_t[:, None], pos)
        cache = KVCache(torch.cat([cache.k, k], 2), torch.cat([cache.v, v], 2))
        y = F.scaled_dot_product_attention(q, cache.k, cache.v)  # all cached positions are past
        return self.out(y.reshape(b, d)), cache


def mlp(d_model: int, ff_mult: int) -> nn.Sequential:
    """The feed-forward sublayer: Linear(D -> ff D), GELU, Linear(ff D -> D)."""
    return nn.Sequential(nn.Linear(d_model, ff_mult * d_model), nn.GELU(),
                         nn.Linear(ff_mult * d_model, d_model))


class TransformerBlock(nn.Module):
    """Pre-norm block: x + drop(attn(norm(x))), then x + drop(mlp(norm(x))) (GELU MLP).

    ``dropout`` applies to each sublayer's output before the residual addition (inactive in
    ``eval()`` mode, as generation should run).
    """

    def __init__(self, d_model: int, n_heads: int, ff_mult: int = 4,
                 dropout: float = 0.0) -> None:
        super().__init__()
        check_size("TransformerBlock", "ff_mult", ff_mult)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"TransformerBlock: dropout must be in [0, 1), got {dropout!r}")
        self.norm1 = nn.RMSNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads)
        self.norm2 = nn.RMSNorm(d_model)
        self.mlp = mlp(d_model, ff_mult)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x)))
        return x + self.drop(self.mlp(self.norm2(x)))

    def empty_cache(self, batch: int, like: torch.Tensor) -> KVCache:
        return self.attn.empty_cache(batch, like)

    def step(self, x_t: torch.Tensor, cache: KVCache) -> tuple[torch.Tensor, KVCache]:
        """One position: x_t (B, D) and the cache -> (output (B, D), cache)."""
        y, cache = self.attn.step(self.norm1(x_t), cache)
        x_t = x_t + self.drop(y)
        return x_t + self.drop(self.mlp(self.norm2(x_t))), cache
