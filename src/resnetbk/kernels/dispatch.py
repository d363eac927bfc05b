"""Which implementation a geometry op runs: the torch reference or a fused GPU kernel.

The public geometry functions (``resnetbk.geometry``) call :func:`use_kernels` with their tensor
arguments; it answers True when the op should run its fused path:

* ``RESNETBK_BACKEND`` (environment) or the innermost :func:`backend` context selects
  ``"auto"`` (default), ``"torch"`` (always the reference) or ``"triton"`` (the fused path
  wherever one applies; an error if Triton is not installed).
* Only CUDA tensors of float32, bfloat16 or float16 take a fused path; float64 and CPU tensors
  always run the exact torch reference, whatever the setting.
* A curvature that is a tensor requiring grad (learnable curvature) runs the reference, which
  differentiates with respect to it; the kernels take c as a number.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
from collections.abc import Callable, Iterator
from typing import TypeVar

import torch

__all__ = ["BACKENDS", "ENV_VAR", "FUSED_PATHS", "MAX_ROW_DIM", "backend", "compiled_reference",
           "curvature_value", "requested_backend", "triton_installed", "use_kernels",
           "use_row_kernel"]

BACKENDS = ("auto", "torch", "triton")
ENV_VAR = "RESNETBK_BACKEND"
KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# Widest point a row-wise kernel holds in registers (``kernels.rowwise``); wider: reference.
MAX_ROW_DIM = 4096

# The fused path of each dispatched op on CUDA tensors, (kind, what runs): "triton" is a
# hand-written kernel, "compile" is torch.compile of the reference (`resnetbk info` shows it).
# Which of the two an op gets was decided by measurement (bench/geometry_gpu.py,
# docs/PERFORMANCE.md).
FUSED_PATHS: dict[str, tuple[str, str]] = {
    "poincare.mobius_add": ("triton", "row kernel (kernels/mobius_add.py); with autograd: "
                                      "torch.compile of the reference"),
    "poincare.expmap0": ("triton", "radial row kernel (kernels/poincare_radial.py); with "
                                   "autograd: torch.compile of the reference"),
    "poincare.logmap0": ("triton", "radial row kernel (kernels/poincare_radial.py); with "
                                   "autograd: torch.compile of the reference"),
    "poincare.project": ("triton", "radial row kernel (kernels/poincare_radial.py); with "
                                   "autograd: torch.compile of the reference"),
    "poincare.mobius_matvec": ("triton",
                               "cuBLAS GEMM + triton row epilogue (kernels/poincare_linear.py)"),
    "poincare.expmap": ("compile", "torch.compile of the reference"),
    "poincare.logmap": ("compile", "torch.compile of the reference"),
    "poincare.dist": ("compile", "torch.compile of the reference"),
    "lorentz.expmap0": ("compile", "torch.compile of the reference"),
    "lorentz.logmap0": ("compile", "torch.compile of the reference"),
    "lorentz.expmap": ("compile", "torch.compile of the reference"),
    "lorentz.parallel_transport": ("compile", "torch.compile of the reference"),
    "lorentz.dist": ("compile", "torch.compile of the reference"),
    "lorentz.cdist": ("triton", "tl.dot tiles with split precision + fused arcosh "
                                "(kernels/lorentz_cdist.py)"),
    "nn.LorentzLinear": ("triton", "cuBLAS GEMM + triton row epilogue (kernels/lorentz_linear.py)"),
    "nn.LNSLinear": ("triton", "LNS decode in a Triton GEMM (kernels/lns_matmul.py); more than "
                               "256 rows: decode kernel + cuBLAS"),
}

_override: list[str] = []
R = TypeVar("R")  # what a compiled reference returns (a tensor, or a tuple of them)


def _checked(name: str, source: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"{source} must be one of {', '.join(BACKENDS)}; got {name!r}")
    return name


def requested_backend() -> str:
    """The innermost :func:`backend` context, else ``$RESNETBK_BACKEND``, else ``"auto"``."""
    if _override:
        return _override[-1]
    return _checked(os.environ.get(ENV_VAR, "auto") or "auto", ENV_VAR)


@contextlib.contextmanager
def backend(name: str) -> Iterator[None]:
    """Force a backend inside a ``with`` block: ``with resnetbk.kernels.dispatch("torch"): ...``."""
    _override.append(_checked(name, "backend"))
    try:
        yield
    finally:
        _override.pop()


@functools.cache
def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def use_kernels(*tensors: torch.Tensor, c: float | torch.Tensor = 1.0) -> bool:
    """Whether an op on ``tensors`` (with curvature ``c``) runs its fused path."""
    choice = requested_backend()
    if choice == "torch":
        return False
    if not all(t.is_cuda and t.dtype in KERNEL_DTYPES for t in tensors):
        return False
    if isinstance(c, torch.Tensor) and (c.requires_grad or c.numel() != 1):
        return False
    if not triton_installed():
        if choice == "triton":
            raise RuntimeError(f"{ENV_VAR}=triton (or backend('triton')) but triton is not "
                               "installed: pip install 'resnetbk[gpu]'")
        return False
    return True


def use_row_kernel(*tensors: torch.Tensor, c: float | torch.Tensor = 1.0) -> bool:
    """:func:`use_kernels` for a hand-written row kernel (``kernels/rowwise.py``): its tensors
    must also share one shape and dtype (no broadcasting inside the kernel), have rows of at
    most ``MAX_ROW_DIM`` elements, and need no gradient. With autograd the op runs
    ``torch.compile`` of its reference instead (:func:`compiled_reference`): on the H200 the
    compiled forward+backward was as fast or faster (0.5-1.0x the kernel pair's time through
    autograd), while forward only the kernels matched or beat it (docs/PERFORMANCE.md)."""
    first = tensors[0]
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    return (not needs_grad
            and all(t.shape == first.shape and t.dtype == first.dtype for t in tensors)
            and 0 < first.shape[-1] <= MAX_ROW_DIM and first.numel() > 0
            and use_kernels(*tensors, c=c))


@functools.cache
def _compiled(fn: Callable[..., R]) -> Callable[..., R]:
    return torch.compile(fn)


def compiled_reference(fn: Callable[..., R], *tensors: torch.Tensor,
                       c: float | torch.Tensor) -> R:
    """``fn(*tensors, c)``, where the op's fused path is ``torch.compile`` of its reference:
    compiled (Inductor fuses the elementwise formula into one or two Triton kernels at the
    copy-bandwidth floor) when :func:`use_kernels` says so, eager otherwise. Chosen per op by
    measurement (bench/geometry_gpu.py) over a hand-written kernel that would not be faster."""
    if use_kernels(*tensors, c=c):
        if torch.compiler.is_compiling():  # inside an outer torch.compile: it traces fn itself
            return fn(*tensors, curvature_value(c))
        return _compiled(fn)(*tensors, curvature_value(c))
    return fn(*tensors, c)


def curvature_value(c: float | torch.Tensor) -> float:
    """c as a Python float for a kernel launch (a one-element tensor costs one host sync)."""
    return float(c.item()) if isinstance(c, torch.Tensor) else float(c)
