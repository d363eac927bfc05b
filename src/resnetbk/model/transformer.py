"""``ByteTransformerLM``: the byte-level Transformer baseline (SDPA, rotary positions).

Same harness as the ResNet-BK model (``ByteLM``): a learned start vector takes the place of
the byte before position 0, so logits[:, t] sees x[:, :t] only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from resnetbk.model.base import ByteLM
from resnetbk.model.config import ModelConfig
from resnetbk.nn.attention import TransformerBlock

__all__ = ["ByteTransformerLM"]


class ByteTransformerLM(ByteLM):
    """Embedding -> ``n_layers`` pre-norm Transformer blocks -> RMSNorm -> byte logits."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        cfg.validate()
        self.config = cfg
        self.seq_multiple = 1
        d = cfg.d_model
        self.embed = nn.Embedding(256, d)
        # Like a byte embedding (N(0, 1)); zero would sit where RMSNorm's gradient is 1/sqrt(eps).
        self.start = nn.Parameter(torch.randn(d))
        self.blocks = nn.ModuleList(
            TransformerBlock(d, cfg.n_heads, cfg.ff_mult, cfg.dropout)
            for _ in range(cfg.n_layers))
        self.norm = nn.RMSNorm(d)
        self.head = nn.Linear(d, 256)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_bytes(x)
        e = self.embed(x)
        z = torch.cat([self.start.to(e.dtype).expand(x.shape[0], 1, -1), e[:, :-1]], 1)
        for block in self.blocks:
            z = block(z)
        return self.head(self.norm(z))

    def _start(self, batch: int) -> list[Any]:
        like = self.start.detach()
        return [block.empty_cache(batch, like) for block in self.blocks]

    def _step(self, state: list[Any], prev: torch.Tensor | None) -> tuple[torch.Tensor, Any]:
        batch = state[0].k.shape[0]
        z = self.start.expand(batch, -1) if prev is None else self.embed(prev)
        caches = []
        for block, cache in zip(self.blocks, state, strict=True):
            z, cache = block.step(z, cache)
            caches.append(cache)
        return self.head(self.norm(z)), caches
