"""evaluate_bpb: exact values on models with known losses, the t interval, window choice."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch
from torch import nn

from resnetbk.train.evaluate import evaluate_bpb, t_quantile

# Two-sided 95% critical values of Student's t (standard tables).
T_TABLE = {1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 5: 2.5706, 10: 2.2281, 30: 2.0423,
           100: 1.9840, 1000: 1.9623}


@pytest.mark.parametrize(("df", "value"), sorted(T_TABLE.items()))
def test_t_quantile_table(df: int, value: float) -> None:
    assert t_quantile(0.975, df) == pytest.approx(value, abs=1e-4)


@pytest.mark.skipif(importlib.util.find_spec("scipy") is None, reason="scipy not installed")
@pytest.mark.parametrize("p", [0.9, 0.95, 0.975, 0.995, 0.999])
def test_t_quantile_against_scipy(p: float) -> None:
    from scipy import stats

    for df in (1, 2, 3, 4, 6, 9, 20, 63, 500, 1000, 1001, 5000, 10**6):
        assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-9)


class ByteValueLoss(nn.Module):
    """A 'model' whose loss at each position is the byte value in nats (known answer)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.calls: list[bool] = []

    def loss(self, x: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        self.calls.append(self.training)
        nats = x.float() + 0 * self.w
        return nats.mean() if reduction == "mean" else nats


def test_known_values(gen: torch.Generator) -> None:
    data = torch.randint(0, 256, (1000,), generator=gen).numpy().astype(np.uint8)
    model = ByteValueLoss()
    bpb, ci, n = evaluate_bpb(model, data, seq_len=30, batch=7)
    assert n == 33
    windows = data[: 33 * 30].reshape(33, 30).astype(np.float64).mean(axis=1) / math.log(2)
    assert bpb == pytest.approx(windows.mean(), rel=1e-12)
    half = 2.036933 * windows.std(ddof=1) / math.sqrt(33)  # t quantile 0.975, df 32
    assert ci == pytest.approx(half, rel=1e-6)
    assert model.calls and not any(model.calls)  # evaluated in eval mode...
    assert model.training  # ...and train mode restored


def test_uniform_model_is_eight_bits(gen: torch.Generator) -> None:
    class Uniform(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.zeros(()))

        def loss(self, x: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
            logits = torch.zeros(*x.shape, 256) + self.w
            return nn.functional.cross_entropy(logits.transpose(1, 2), x, reduction=reduction)

    data = torch.randint(0, 256, (640,), generator=gen).numpy().astype(np.uint8)
    bpb, ci, n = evaluate_bpb(Uniform(), data, 64, 4, max_windows=5)
    assert bpb == pytest.approx(8.0, abs=1e-6) and ci == pytest.approx(0.0, abs=1e-6) and n == 5


def test_windows_are_spread_over_the_split() -> None:
    data = np.repeat(np.arange(10, dtype=np.uint8), 100)  # window i holds byte value i
    bpb, _, n = evaluate_bpb(ByteValueLoss(), data, 100, 3, max_windows=4)
    assert n == 4 and bpb == pytest.approx((0 + 2 + 5 + 7) / 4 / math.log(2))


def test_interval_covers_the_mean() -> None:
    # Windows drawn i.i.d.: the 95% interval should cover the true mean about 95% of the time.
    rng = np.random.default_rng(0)
    model, covered = ByteValueLoss(), 0
    true = 127.5 / math.log(2)
    for _ in range(200):
        data = rng.integers(0, 256, 20 * 8, dtype=np.uint8)
        bpb, ci, _ = evaluate_bpb(model, data, 8, 20)
        covered += abs(bpb - true) <= ci
    assert 0.90 <= covered / 200 <= 0.99


def test_too_few_windows() -> None:
    with pytest.raises(ValueError, match="at least 2 windows"):
        evaluate_bpb(ByteValueLoss(), np.zeros(15, dtype=np.uint8), 10, 4)
