"""Fused GPU kernels behind the public geometry API (issue 5, docs/KERNELS.md).

``resnetbk.geometry`` functions dispatch CUDA tensors to these kernels (``dispatch.py``); the
public API does not change. Force a backend with ``RESNETBK_BACKEND=torch|triton|auto`` or::

    with resnetbk.kernels.backend("torch"):
        ...

Importing this package does not import Triton: each kernel module does, when first used.
"""

from resnetbk.kernels.dispatch import BACKENDS, FUSED_PATHS, backend, requested_backend

__all__ = ["BACKENDS", "FUSED_PATHS", "backend", "requested_backend"]
