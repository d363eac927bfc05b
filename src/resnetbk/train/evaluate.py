"""Bits per byte of a byte language model on held-out data, with a confidence interval.

Each evaluation window of ``seq_len`` bytes is scored on its own (its first bytes have no
context), and its mean loss in bits is one sample. The interval is a Student-t 95% interval
over windows, which treats windows as independent samples: windows are disjoint, but adjacent
windows of one file are correlated, so the interval understates the uncertainty about the
corpus as a whole (it is a fair yardstick for comparing models on the same windows).
"""

from __future__ import annotations

import contextlib
import math
from statistics import NormalDist
from typing import Any

import numpy as np
import torch

from resnetbk.data.corpus import iter_windows

__all__ = ["autocast_context", "evaluate_bpb", "t_quantile"]

LN2 = math.log(2.0)


def _t_two_sided(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with integer ``df`` (Abramowitz & Stegun 26.7.3-4: exact
    finite sums in theta = atan(t / sqrt(df)))."""
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2:  # odd: (2/pi) (theta + sin cos (1 + 2/3 c^2 + 2*4/(3*5) c^4 + ...))
        term, total = 1.0, 1.0 if df > 1 else 0.0
        for k in range(1, (df - 1) // 2):
            term *= 2 * k / (2 * k + 1) * c2
            total += term
        return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)
    term, total = 1.0, 1.0  # even: sin (1 + 1/2 c^2 + 1*3/(2*4) c^4 + ...)
    for k in range(1, df // 2):
        term *= (2 * k - 1) / (2 * k) * c2
        total += term
    return math.sin(theta) * total


def t_quantile(p: float, df: int) -> float:
    """Quantile ``p`` (> 0.5) of Student's t with ``df`` degrees of freedom.

    Bisection on the exact distribution function for df <= 1000; above that the
    Cornish-Fisher expansion (A&S 26.7.5), whose error there is below 1e-9.
    """
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    if not 0.5 < p < 1.0:
        raise ValueError(f"p must be in (0.5, 1), got {p}")
    if df <= 1000:
        target, lo, hi = 2 * p - 1, 0.0, 1.0
        while _t_two_sided(hi, df) < target:
            hi *= 2
        for _ in range(100):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if _t_two_sided(mid, df) < target else (lo, mid)
        return 0.5 * (lo + hi)
    z = NormalDist().inv_cdf(p)
    n = float(df)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / n + g2 / n**2 + g3 / n**3 + g4 / n**4


def autocast_context(
    device: torch.device, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` for ``device`` with ``dtype``, or a no-op for None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


@torch.no_grad()
def evaluate_bpb(
    model: torch.nn.Module,
    data: np.ndarray,
    seq_len: int,
    batch: int,
    max_windows: int | None = None,
    *,
    autocast: torch.dtype | None = None,
) -> tuple[float, float, int]:
    """(mean bits per byte, 95% CI half-width, number of windows) of ``model`` on ``data``.

    ``data`` is a uint8 array (a corpus split); the windows are those of
    ``resnetbk.data.corpus.iter_windows``: disjoint, all of them or ``max_windows`` spread
    evenly over the split (the same ones every time). The model runs in eval mode on its own
    device (train mode is restored afterwards), under autocast with ``autocast`` when given;
    ``model.loss(x, reduction="none")`` gives nats per byte. Needs at least two windows.
    """
    n_windows = len(data) // seq_len
    if max_windows is not None:
        n_windows = min(n_windows, max_windows)
    if n_windows < 2:
        raise ValueError(f"an interval needs at least 2 windows, but the split of {len(data)} "
                         f"bytes holds {n_windows} of seq_len={seq_len}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    per_window: list[torch.Tensor] = []
    try:
        for x in iter_windows(data, seq_len, batch, max_windows=max_windows):
            with autocast_context(device, autocast):
                nats = model.loss(x.to(device), reduction="none")
            per_window.append(nats.double().mean(dim=1).cpu())
    finally:
        model.train(was_training)
    bits = torch.cat(per_window) / LN2
    n = bits.numel()
    mean = float(bits.mean())
    half = t_quantile(0.975, n - 1) * float(bits.std(unbiased=True)) / math.sqrt(n)
    return mean, half, n
