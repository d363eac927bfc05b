"""``ByteLM``: what every byte language model offers the trainer, the evaluator and the CLI.

A subclass implements ``forward`` (logits of all positions at once) and the two generation
hooks ``_start`` / ``_step`` (one position at a time with cached state); ``loss`` and
``generate`` are shared. ``_step`` must reproduce ``forward`` (tested per model).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from resnetbk.model.config import ModelConfig

__all__ = ["ByteLM"]


class ByteLM(nn.Module):
    """Base class: bytes (B, T) int64 -> logits (B, T, 256); logits[:, t] sees x[:, :t] only."""

    config: ModelConfig
    seq_multiple: int = 1

    def check_bytes(self, x: torch.Tensor) -> None:
        """x must be an int64 (B, T) tensor of bytes with T a multiple of ``seq_multiple``."""
        if not isinstance(x, torch.Tensor) or x.dtype != torch.int64 or x.ndim != 2:
            got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x)
            raise ValueError(f"x must be an int64 tensor of shape (batch, length), got {got}")
        if x.shape[0] == 0:
            raise ValueError("x must hold at least one sequence, got batch size 0")
        if x.shape[1] == 0 or x.shape[1] % self.seq_multiple:
            raise ValueError(
                f"sequence length T = {x.shape[1]} must be a positive multiple of the patch "
                f"size P = {self.seq_multiple}"
            )
        lo, hi = torch.stack(torch.aminmax(x)).tolist()  # one device sync
        if lo < 0 or hi > 255:
            raise ValueError(f"bytes must lie in [0, 255], got values in [{lo}, {hi}]")

    def loss(self, x: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """Cross-entropy in nats per byte, in float32: a scalar ("mean") or (B, T) ("none")."""
        if reduction not in ("mean", "none"):
            raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
        logits = self(x).float()
        nll = F.cross_entropy(logits.reshape(-1, 256), x.reshape(-1), reduction="none")
        nll = nll.view_as(x)
        return nll.mean() if reduction == "mean" else nll

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _start(self, batch: int) -> Any:
        """Generation state before the first byte."""
        raise NotImplementedError

    def _step(self, state: Any, prev: torch.Tensor | None) -> tuple[torch.Tensor, Any]:
        """Consume the previous byte (B,) (None at position 0); logits (B, 256) of the next."""
        raise NotImplementedError

    @torch.no_grad()
    def step_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of every position of x (B, T) computed one position at a time with the cache,
        as ``generate`` does (for tests: it must equal ``forward``)."""
        state = self._start(x.shape[0])
        out = []
        prev = None
        for t in range(x.shape[1]):
            logits, state = self._step(state, prev)
            out.append(logits)
            prev = x[:, t]
        return torch.stack(out, 1)

    @torch.no_grad()
    def generate(
        self,
        prompt: torch.Tensor,
        max_new_bytes: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Iterator[int]:
        """Yield ``max_new_bytes`` bytes after ``prompt`` (int64 (T0,), T0 >= 0), one at a time.

        The prompt is fed through the cached step path, then each sampled byte is (O(1) work per
        byte for the BK state, O(t) for a key/value cache). Temperature 0 is greedy; ``top_k``
        keeps the k most likely bytes before sampling; sampling draws from ``generator`` (a CPU
        generator). Arguments are checked when the first byte is requested (this is a
        generator). Call ``eval()`` first when the model has dropout.
        """
        if (not isinstance(prompt, torch.Tensor) or prompt.ndim != 1
                or prompt.is_floating_point() or prompt.is_complex()
                or prompt.dtype == torch.bool):
            got = (f"{prompt.dtype} {tuple(prompt.shape)}" if isinstance(prompt, torch.Tensor)
                   else type(prompt).__name__)
            raise ValueError(f"prompt must be a 1-D int64 tensor of bytes, got {got}")
        if prompt.numel():
            lo, hi = torch.stack(torch.aminmax(prompt.long())).tolist()
            if lo < 0 or hi > 255:
                raise ValueError(f"prompt bytes must lie in [0, 255], got values in [{lo}, {hi}]")
        if isinstance(max_new_bytes, bool) or not isinstance(max_new_bytes, int) \
                or max_new_bytes < 0:
            raise ValueError(f"max_new_bytes must be an int >= 0, got {max_new_bytes!r}")
        if (isinstance(temperature, bool) or not isinstance(temperature, (int, float))
                or not temperature >= 0):
            raise ValueError(f"temperature must be a number >= 0, got {temperature!r}")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int)
                                  or not 1 <= top_k <= 256):
            raise ValueError(f"top_k must be None or an int in [1, 256], got {top_k!r}")
        device = next(self.parameters()).device
        state = self._start(1)
        logits, state = self._step(state, None)
        for b in prompt.to(device=device, dtype=torch.int64):
            logits, state = self._step(state, b.view(1))
        for i in range(max_new_bytes):
            logits = logits.float()[0]
            if temperature == 0:
                nxt = logits.argmax()
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, top_k).values[-1]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probs = torch.softmax(logits, -1)
                nxt = torch.multinomial(probs.cpu(), 1, generator=generator)[0].to(device)
            yield int(nxt)
            if i + 1 < max_new_bytes:
                logits, state = self._step(state, nxt.view(1))
