"""Cheap argument and input checks shared by the hyperbolic layers (always on)."""

from __future__ import annotations

import torch

from resnetbk.debug import check_floating


def check_size(layer: str, name: str, value: int) -> None:
    """A layer size must be a positive Python int."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{layer}: {name} must be a positive int, got {value!r}")


def check_input(layer: str, x: torch.Tensor, last_dim: int, what: str) -> None:
    """``x`` is a floating tensor whose last axis has ``last_dim`` entries (``what`` says why)."""
    check_floating("x", x)
    if x.shape[-1] != last_dim:
        raise ValueError(
            f"{layer}: the last axis of x must have {last_dim} entries ({what}), "
            f"got x{tuple(x.shape)}"
        )
