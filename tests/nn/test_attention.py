"""Causal self-attention with rotary positions: vs a naive float64 reference, cache steps."""

from __future__ import annotations

import math

import pytest
import torch

from resnetbk.nn import CausalSelfAttention, TransformerBlock
from resnetbk.nn.attention import apply_rope


def naive_rope(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotation of each pair (x_i, x_{i+h/2}) by position * base^(-2i/h), element by element."""
    out = x.clone()
    half = x.shape[-1] // 2
    for ti, pos in enumerate(positions.tolist()):
        for i in range(half):
            a = pos * base ** (-i / half)
            x1, x2 = x[..., ti, i], x[..., ti, i + half]
            out[..., ti, i] = x1 * math.cos(a) - x2 * math.sin(a)
            out[..., ti, i + half] = x1 * math.sin(a) + x2 * math.cos(a)
    return out


def naive_attention(layer: CausalSelfAttention, x: torch.Tensor) -> torch.Tensor:
    b, t, d = x.shape
    h = layer.n_heads
    q, k, v = layer.qkv(x).view(b, t, 3, h, d // h).permute(2, 0, 3, 1, 4)
    pos = torch.arange(t)
    q, k = naive_rope(q, pos), naive_rope(k, pos)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d // h)
    scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
    y = torch.softmax(scores, -1) @ v
    return layer.out(y.transpose(1, 2).reshape(b, t, d))


def test_matches_naive_float64_reference() -> None:
    layer = CausalSelfAttention(16, 2).double()
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    torch.testing.assert_close(layer(x), naive_attention(layer, x), rtol=1e-12, atol=1e-12)


def test_rope_scores_depend_on_relative_position_only() -> None:
    q, k = torch.randn(8, dtype=torch.float64), torch.randn(8, dtype=torch.float64)

    def score(m: int, n: int) -> torch.Tensor:
        qm = apply_rope(q[None], torch.tensor([m]))[0]
        kn = apply_rope(k[None], torch.tensor([n]))[0]
        return qm @ kn

    torch.testing.assert_close(score(3, 1), score(1003, 1001), rtol=1e-9, atol=1e-12)
    assert not torch.allclose(score(3, 1), score(3, 2))


@pytest.mark.parametrize("module", ["attention", "block"])
def test_cache_steps_equal_forward(module: str) -> None:
    torch.manual_seed(0)
    layer = (CausalSelfAttention(16, 4) if module == "attention"
             else TransformerBlock(16, 4, ff_mult=2)).double()
    x = torch.randn(3, 7, 16, dtype=torch.float64)
    cache = layer.empty_cache(3, x)
    steps = []
    for t in range(7):
        y, cache = layer.step(x[:, t], cache)
        steps.append(y)
    torch.testing.assert_close(torch.stack(steps, 1), layer(x), rtol=1e-12, atol=1e-12)


def test_causal_bit_identical() -> None:
    layer = CausalSelfAttention(16, 2)
    x = torch.randn(1, 10, 16)
    y = x.clone()
    y[:, 6:] = torch.randn(1, 4, 16)
    assert torch.equal(layer(x)[:, :6], layer(y)[:, :6])


def test_bad_head_layout() -> None:
    with pytest.raises(ValueError, match="even head size"):
        CausalSelfAttention(12, 4)  # head size 3
    with pytest.raises(ValueError, match="n_heads"):
        CausalSelfAttention(16, 0)


def test_rope_angles_are_accurate_for_half_inputs_at_long_positions() -> None:
    """Angles are computed in float32 (float64 for float64 inputs): at position 20000 a bf16
    angle would be off by tens of radians."""
    x = torch.randn(1, 16, dtype=torch.float64)
    pos = torch.tensor([20000])
    want = naive_rope(x[None], pos)[0]
    got = apply_rope(x.to(torch.bfloat16)[None], pos)[0].double()
    torch.testing.assert_close(got, want, rtol=0, atol=0.05 * float(x.abs().max()))


def test_block_dropout_is_checked_and_inactive_in_eval() -> None:
    with pytest.raises(ValueError, match="dropout"):
        TransformerBlock(16, 2, dropout=1.0)
    block = TransformerBlock(16, 2, dropout=0.5).double().eval()
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    torch.testing.assert_close(block(x), block(x), rtol=0, atol=0)
    block.train()
    assert not torch.equal(block(x), block(x))
