"""Fused Möbius addition x ⊕ y on the Poincaré ball: reference, Triton kernels, custom op.

Reference: ``resnetbk.geometry.poincare.mobius_add`` (the exact torch formula). The kernel
evaluates the same cancellation-free form, with the same reading of the inputs and the same
output guard:

    fx = min(1, r_read / (sqrt(c)|x|)), fy likewise        (inputs read inside the ball)
    s = fx x + fy y,  g_x = 1 - c fx^2 |x|^2,  g_y = 1 - c fy^2 |y|^2
    o = (g_x s + c|s|^2 fx x) / (g_x g_y + c|s|^2)
    out = o min(1, r_out / (sqrt(c)|o|))                    (output guard)

Each program holds BLOCK_M whole rows of x and y in registers: |x|^2, |y|^2, |s|^2 and |o|^2
are register reductions (|s|^2 and |o|^2 are summed from the vectors, not expanded into
<x, y> terms, which would cancel for y ~ -x). Forward: read x, y, write out (12 B per element
in float32). Backward: recompute the forward from x, y (nothing else saved) and apply the
hand-written reverse-mode adjoint of the lines above, read x, y, grad, write grad_x, grad_y
(20 B per element): the memory traffic of a fused elementwise op, the floor for this op.
No transcendental functions occur, so there is no FAST switch.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from resnetbk.kernels.rowwise import (
    as_rows,
    compute_type,
    launch_config,
    load_rows,
    load_scalars,
    row_tile,
    scalar_args,
    sqrt_rn,
)

__all__ = ["backward", "forward", "mobius_add"]


@triton.jit
def _clip(n2, scale, radius):
    """min(1, radius / (scale sqrt(n2))) and whether it is below 1 (per row)."""
    q = sqrt_rn(n2) * scale / radius
    return 1.0 / tl.maximum(q, 1.0), q > 1.0


@triton.jit
def _forward_parts(x, y, c, sc, r_read, r_out):
    """((o, fo), intermediates): x (+) y = fo o, and what the backward (which recomputes the
    forward) needs: |x|^2, |y|^2, the read clips fx, fy (and whether they act),
    s = fx x + fy y, c|s|^2, g_x = 1 - c fx^2 |x|^2, g_y, den = g_x g_y + c|s|^2, the
    coefficients a = g_x / den and b = c|s|^2 fx / den of o = a s + b x, |o|^2 and whether the
    output clip fo acts."""
    x2 = tl.sum(x * x, 1)
    y2 = tl.sum(y * y, 1)
    fx, x_clipped = _clip(x2, sc, r_read)
    fy, y_clipped = _clip(y2, sc, r_read)
    s = fx[:, None] * x + fy[:, None] * y
    cs2 = c * tl.sum(s * s, 1)
    gpx = 1.0 - c * fx * fx * x2
    gpy = 1.0 - c * fy * fy * y2
    den = gpx * gpy + cs2
    a = gpx / den
    b = cs2 * fx / den
    o = s * a[:, None] + x * b[:, None]
    o2 = tl.sum(o * o, 1)
    fo, o_clipped = _clip(o2, sc, r_out)
    return (o, fo), (x2, y2, fx, x_clipped, fy, y_clipped, s, cs2, gpx, gpy, den, a, b, o2,
                     o_clipped)


@triton.jit
def _forward_kernel(x_ptr, y_ptr, out_ptr, p_ptr, M, D,
                    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, COMPUTE: tl.constexpr,
                    WIDE: tl.constexpr):
    offs, mask = row_tile(M, D, BLOCK_M, BLOCK_D, WIDE)
    c, sc, r_read, r_out, _ = load_scalars(p_ptr)
    x = load_rows(x_ptr, offs, mask, COMPUTE)
    y = load_rows(y_ptr, offs, mask, COMPUTE)
    (o, fo), _ = _forward_parts(x, y, c, sc, r_read, r_out)
    tl.store(out_ptr + offs, (o * fo[:, None]).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _backward_kernel(x_ptr, y_ptr, g_ptr, gx_ptr, gy_ptr, p_ptr, M, D,
                     BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, COMPUTE: tl.constexpr,
                    WIDE: tl.constexpr):
    offs, mask = row_tile(M, D, BLOCK_M, BLOCK_D, WIDE)
    c, sc, r_read, r_out, _ = load_scalars(p_ptr)
    x = load_rows(x_ptr, offs, mask, COMPUTE)
    y = load_rows(y_ptr, offs, mask, COMPUTE)
    g = load_rows(g_ptr, offs, mask, COMPUTE)
    (o, fo), (x2, y2, fx, x_clipped, fy, y_clipped, s, cs2, gpx, gpy, den, a, b, o2,
              o_clipped) = _forward_parts(x, y, c, sc, r_read, r_out)
    # adjoints, in reverse order. out = fo o; where the guard is active fo = r/(sc |o|):
    # d fo / d o2 = -fo / (2 o2), so o_bar = fo g - (fo <g, o> / o2) o.
    k = tl.where(o_clipped, fo * tl.sum(g * o, 1) / tl.maximum(o2, 1e-30), 0.0)
    o_bar = g * fo[:, None] - o * k[:, None]
    # o = a s + b x
    a_bar = tl.sum(o_bar * s, 1)
    b_bar = tl.sum(o_bar * x, 1)
    # b = cs2 fx / den, a = g_x / den, den = g_x g_y + cs2
    den_bar = -(a_bar * a + b_bar * b) / den
    cs2_bar = b_bar * fx / den + den_bar
    gpx_bar = a_bar / den + den_bar * gpy
    gpy_bar = den_bar * gpx
    fx_bar = b_bar * cs2 / den - gpx_bar * 2.0 * c * fx * x2
    fy_bar = -gpy_bar * 2.0 * c * fy * y2
    # s_bar = a o_bar + 2 c cs2_bar s   (|s|^2 = cs2 / c)
    s_bar = o_bar * a[:, None] + s * (2.0 * c * cs2_bar)[:, None]
    fx_bar += tl.sum(s_bar * x, 1)
    fy_bar += tl.sum(s_bar * y, 1)
    # g_x = 1 - c fx^2 |x|^2; where the read clip is active fx = r/(sc |x|): d fx/d x2 = -fx/(2 x2)
    x2_clip = tl.where(x_clipped, -fx_bar * fx / (2.0 * tl.maximum(x2, 1e-30)), 0.0)
    y2_clip = tl.where(y_clipped, -fy_bar * fy / (2.0 * tl.maximum(y2, 1e-30)), 0.0)
    x2_bar = x2_clip - gpx_bar * c * fx * fx
    y2_bar = y2_clip - gpy_bar * c * fy * fy
    grad_x = o_bar * b[:, None] + s_bar * fx[:, None] + x * (2.0 * x2_bar)[:, None]
    grad_y = s_bar * fy[:, None] + y * (2.0 * y2_bar)[:, None]
    tl.store(gx_ptr + offs, grad_x.to(gx_ptr.dtype.element_ty), mask=mask)
    tl.store(gy_ptr + offs, grad_y.to(gy_ptr.dtype.element_ty), mask=mask)


def forward(x: torch.Tensor, y: torch.Tensor, c: float,
            out: torch.Tensor | None = None) -> torch.Tensor:
    """x ⊕ y for x, y of the same shape and dtype (``out``: optional result buffer)."""
    xr, yr = as_rows(x), as_rows(y)
    m, d = xr.shape
    out = torch.empty_like(x) if out is None else out
    grid, bm, bd, warps = launch_config("mobius_add_fwd", x)
    _forward_kernel[grid](xr, yr, out, scalar_args(c, x.dtype, x.device), m, d,
                          BLOCK_M=bm, BLOCK_D=bd, COMPUTE=compute_type(x.dtype),
                          WIDE=x.numel() >= 2**31, num_warps=warps)
    return out


def backward(x: torch.Tensor, y: torch.Tensor, grad: torch.Tensor, c: float,
             out: tuple[torch.Tensor, torch.Tensor] | None = None,
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_x, grad_y) of <grad, x ⊕ y>, recomputing the forward from x and y."""
    xr, yr, gr = as_rows(x), as_rows(y), as_rows(grad)
    m, d = xr.shape
    gx, gy = (torch.empty_like(x), torch.empty_like(y)) if out is None else out
    grid, bm, bd, warps = launch_config("mobius_add_bwd", x)
    _backward_kernel[grid](xr, yr, gr, gx, gy, scalar_args(c, x.dtype, x.device), m, d,
                           BLOCK_M=bm, BLOCK_D=bd, COMPUTE=compute_type(x.dtype),
                          WIDE=x.numel() >= 2**31, num_warps=warps)
    return gx, gy


@torch.library.custom_op("resnetbk::mobius_add", mutates_args=())
def mobius_add(x: torch.Tensor, y: torch.Tensor, c: float) -> torch.Tensor:
    """x ⊕ y by the fused kernel (x, y of equal shape and dtype; c a number)."""
    return forward(x, y, c)


@mobius_add.register_fake
def _(x: torch.Tensor, y: torch.Tensor, c: float) -> torch.Tensor:
    return torch.empty_like(x)


@torch.library.custom_op("resnetbk::mobius_add_backward", mutates_args=())
def _backward_op(x: torch.Tensor, y: torch.Tensor, grad: torch.Tensor,
                 c: float) -> tuple[torch.Tensor, torch.Tensor]:
    return backward(x, y, grad, c)


@_backward_op.register_fake
def _(x: torch.Tensor, y: torch.Tensor, grad: torch.Tensor,
      c: float) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.empty_like(x), torch.empty_like(y)


def _setup_context(ctx: torch.autograd.function.FunctionCtx, inputs: tuple,
                   output: torch.Tensor) -> None:
    x, y, c = inputs
    ctx.save_for_backward(x, y)
    ctx.c = c


def _backward(ctx: torch.autograd.function.FunctionCtx,
              grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
    x, y = ctx.saved_tensors
    gx, gy = _backward_op(x, y, grad.contiguous(), ctx.c)
    return gx, gy, None


mobius_add.register_autograd(_backward, setup_context=_setup_context)
