"""Launch plumbing shared by the row-wise geometry kernels (one point per row, dimension last).

A geometry op on points of dimension D reads tensors of shape (..., D) as M = numel / D rows.
Each program of a row-wise kernel owns BLOCK_M whole rows (BLOCK_D = next power of two >= D
columns) in registers, so every per-point reduction (norms, inner products) is a register
reduction and each tensor is read from memory exactly once per pass.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from resnetbk.geometry.numerics import ball_eps, read_radius

# (elements of one tensor per program, warps) per kernel and storage-element size, for points of
# dimension <= 128 and > 128: the best of a sweep on an H200 at 2^26 elements
# (bench/rowwise_tune.py, bench/results/rowwise_tune_nvidia_h200.json). Neighbouring
# configurations were within the run-to-run noise (a few percent of copy bandwidth).
TUNED: dict[str, dict[tuple[int, bool], tuple[int, int]]] = {
    "mobius_add_fwd": {(4, False): (2048, 8), (4, True): (1024, 2),
                       (2, False): (2048, 4), (2, True): (1024, 2)},
    "mobius_add_bwd": {(4, False): (2048, 8), (4, True): (1024, 4),
                       (2, False): (2048, 8), (2, True): (2048, 8)},
    "radial_fwd": {(4, False): (1024, 8), (4, True): (1024, 4),
                   (2, False): (2048, 8), (2, True): (4096, 2)},
    "radial_bwd": {(4, False): (2048, 4), (4, True): (1024, 2),
                   (2, False): (2048, 8), (2, True): (1024, 4)},
}
DEFAULT_CONFIG = (2048, 4)  # float64 (tests) and anything not in the table


def as_rows(t: torch.Tensor) -> torch.Tensor:
    """``t`` as a contiguous (M, D) matrix (a view when it already is contiguous)."""
    return t.contiguous().view(-1, t.shape[-1])


def launch_config(kernel: str, t: torch.Tensor) -> tuple[tuple[int], int, int, int]:
    """(grid, BLOCK_M, BLOCK_D, num_warps) of ``kernel`` (a key of ``TUNED``) on the rows of
    ``t``."""
    m, d = t.numel() // t.shape[-1], t.shape[-1]
    tile, warps = TUNED[kernel].get((t.element_size(), d > 128), DEFAULT_CONFIG)
    block_d = triton.next_power_of_2(d)
    block_m = max(1, min(tile // block_d, triton.next_power_of_2(m)))
    return (triton.cdiv(m, block_m),), block_m, block_d, warps


@functools.cache
def device_scalars(values: tuple[float, ...], dtype: torch.dtype,
                   device: torch.device) -> torch.Tensor:
    """``values`` as a tensor of the compute dtype of ``dtype`` on ``device`` (made once per
    distinct arguments). Kernels read their float constants through memory rather than as
    launch arguments because Triton passes Python floats as float32, which would cut the float64
    kernels (the gradcheck path) to float32 constants: 1 - 1e-12 rounds to 1."""
    cdtype = torch.float64 if dtype == torch.float64 else torch.float32
    return torch.tensor(values, dtype=cdtype, device=device)


def scalar_args(c: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[c, sqrt(c), read radius, output radius, smallest normal] for ``load_scalars``."""
    r_read, r_out = ball_radii(dtype)
    tiny = torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32).tiny
    return device_scalars((c, c**0.5, r_read, r_out, tiny), dtype, device)


def ball_radii(dtype: torch.dtype) -> tuple[float, float]:
    """(read radius, output radius) of the Poincaré ball for points stored in ``dtype``, as
    values of sqrt(c)|x| (see ``geometry.numerics.read_radius`` and ``BALL_EPS``)."""
    return read_radius(dtype), 1.0 - ball_eps(dtype)


def fast_math(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether a kernel may use the PTX approximations (``kernels.fastmath`` FAST=True): only
    on the GPU and only for half-type outputs, whose rounding (2^-9, 2^-11) dwarfs their error;
    float32 outputs must stay within 2x of torch's own error."""
    return device.type == "cuda" and dtype in (torch.bfloat16, torch.float16)


def compute_type(dtype: torch.dtype) -> tl.dtype:
    """The Triton type a kernel computes in: float64 for float64 (the exact reference dtype,
    used by the gradchecks), float32 otherwise (half types are loaded and widened)."""
    return tl.float64 if dtype == torch.float64 else tl.float32


@triton.jit
def load_scalars(p_ptr):
    """(c, sqrt(c), read radius, output radius, smallest normal) from ``scalar_args``."""
    return (tl.load(p_ptr), tl.load(p_ptr + 1), tl.load(p_ptr + 2), tl.load(p_ptr + 3),
            tl.load(p_ptr + 4))


@triton.jit
def row_scalar(p_ptr, i, BLOCK_M: tl.constexpr, COMPUTE: tl.constexpr):
    """Element i of a ``device_scalars`` tensor, broadcast to a (BLOCK_M,) row vector."""
    return tl.zeros([BLOCK_M], COMPUTE) + tl.load(p_ptr + i).to(COMPUTE)


@triton.jit
def load_rows(ptr, offs, mask, COMPUTE: tl.constexpr):
    """A (BLOCK_M, BLOCK_D) tile widened to the compute type; masked lanes read 0."""
    return tl.load(ptr + offs, mask=mask, other=0.0).to(COMPUTE)


@triton.jit
def row_tile(M, D, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, WIDE: tl.constexpr):
    """(offsets, mask) of this program's BLOCK_M rows of a contiguous (M, D) matrix; 64-bit
    offsets only for tensors of 2^31 elements or more (WIDE), 32-bit arithmetic otherwise."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    if WIDE:
        rows = rows.to(tl.int64)
    cols = tl.arange(0, BLOCK_D)
    return rows[:, None] * D + cols[None, :], (rows[:, None] < M) & (cols[None, :] < D)


@triton.jit
def sqrt_rn(x):
    """Square root to the last bit: ``tl.sqrt`` may lower to an approximation (float32:
    ``sqrt.approx``; float64 on the GPU: about 1e-8 relative), ``tl.sqrt_rn`` is float32-only.
    float64: one Newton step from tl.sqrt, which doubles its accurate digits."""
    if x.dtype == tl.float64:
        r = tl.sqrt(x)
        return tl.where(x > 0.0, 0.5 * (r + x / r), r)
    else:
        return tl.sqrt_rn(x)
