"""Input validation: cheap checks always on, expensive ones behind an opt-in switch.

Cheap checks (floating dtype, matching manifold dimension, broadcastable shapes, c > 0 for a
Python float or a CPU tensor) run on every call. Expensive checks (points on the manifold,
tangent vectors in the tangent space, finiteness, c > 0 for a CUDA tensor, which would force a
host sync) run only inside ``debug_checks()`` or when ``RESNETBK_DEBUG=1`` is set.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

_debug_override: list[bool] = []


def debug_enabled() -> bool:
    """Whether the expensive checks are on (innermost ``debug_checks`` or ``RESNETBK_DEBUG``)."""
    if _debug_override:
        return _debug_override[-1]
    return os.environ.get("RESNETBK_DEBUG", "0") not in ("", "0", "false", "False")


@contextlib.contextmanager
def debug_checks(enabled: bool = True) -> Iterator[None]:
    """Turn the expensive input/output checks on (or off) inside a ``with`` block."""
    _debug_override.append(enabled)
    try:
        yield
    finally:
        _debug_override.pop()


def check_floating(name: str, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(
            f"{name} must have a floating dtype (float64, float32, bfloat16, float16), "
            f"got {x.dtype}"
        )
    if x.dim() == 0:
        raise ValueError(f"{name} must have at least one dimension (the manifold dimension last)")


def check_same_dim(names: tuple[str, ...], tensors: tuple[torch.Tensor, ...]) -> None:
    """Manifold dimensions (last axis) must agree and the batch shapes must broadcast."""
    dims = {t.shape[-1] for t in tensors}
    if len(dims) != 1:
        shapes = ", ".join(f"{n}{tuple(t.shape)}" for n, t in zip(names, tensors, strict=False))
        raise ValueError(f"last (manifold) dimensions differ: {shapes}")
    try:
        torch.broadcast_shapes(*(t.shape for t in tensors))
    except RuntimeError:
        shapes = ", ".join(f"{n}{tuple(t.shape)}" for n, t in zip(names, tensors, strict=False))
        raise ValueError(f"shapes do not broadcast: {shapes}") from None


def check_curvature(c: float | torch.Tensor) -> None:
    """c > 0 (curvature is -c). Tensors on an accelerator are checked only in debug mode."""
    if isinstance(c, torch.Tensor):
        if not c.is_floating_point():
            raise ValueError(f"c must be a positive float or floating tensor, got dtype {c.dtype}")
        if (c.device.type == "cpu" or debug_enabled()) and not bool(torch.all(c > 0)):
            raise ValueError(
                f"c must be > 0 (the curvature is -c); got min(c) = {c.min().item():.6g}"
            )
        return
    if isinstance(c, bool) or not isinstance(c, (int, float)):
        raise ValueError(f"c must be a positive float or tensor, got {type(c).__name__}")
    if not c > 0:
        raise ValueError(f"c must be > 0 (the curvature is -c); got c = {c!r}")


def check_finite(name: str, x: torch.Tensor) -> None:
    """Debug-mode check that a tensor holds no NaN/Inf."""
    if debug_enabled() and not bool(torch.isfinite(x).all()):
        bad = (~torch.isfinite(x)).sum().item()
        raise ValueError(f"{name} contains {bad} non-finite values (NaN or Inf)")
