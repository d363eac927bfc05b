"""Fused radial maps of the Poincaré ball: ``expmap0``, ``logmap0`` and ``project``.

References: ``resnetbk.geometry.poincare.expmap0`` / ``logmap0`` / ``project``. Each is
out = phi(t) u with t = sqrt(c)|u| (one per-row factor), so one kernel serves all three:

    expmap0:  phi = min(tanh t, r_out) / t
    logmap0:  phi = artanh(min(t, r_read)) / t
    project:  phi = min(1, r_out / t)

and the backward, recomputing t from u (nothing else saved), is

    grad_u = phi g + c psi <g, u> u,   psi = phi'(t) / t.

Near t = 0 phi and psi come from Taylor series (the direct quotients cancel: tanh t / t has
a derivative t sech^2 t - tanh t ~ -2t^3/3); sech^2 t is 4e/(1+e)^2 with e = exp(-2t), which
does not cancel where tanh t -> 1. Forward reads u and writes out (8 B per float32 element);
backward reads u, g and writes grad_u (12 B): the fused elementwise floor.

``FAST`` (``kernels.fastmath``): the PTX tanh / log approximations, used for half-type
outputs on the GPU (``rowwise.fast_math``); the portable path everywhere else.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from resnetbk.kernels.fastmath import artanh, exp, tanh
from resnetbk.kernels.rowwise import (
    as_rows,
    compute_type,
    fast_math,
    launch_config,
    load_rows,
    load_scalars,
    row_tile,
    scalar_args,
    sqrt_rn,
)

__all__ = ["OPS", "expmap0", "logmap0", "project", "radial"]

OPS = {"expmap0": 0, "logmap0": 1, "project": 2}
_SERIES_BELOW = tl.constexpr(0.1)  # series truncation error at t = 0.1: below 1e-11 relative


@triton.jit
def _tanh_exp(t, FAST: tl.constexpr, COMPUTE: tl.constexpr):
    """(tanh t, exp(-2t)) for t >= 0: ``kernels.fastmath`` in float32; in float64 (the
    gradcheck dtype; fastmath is float32-only) the textbook forms, exact enough for t >= 0.1,
    the only range where the kernel uses them."""
    if COMPUTE == tl.float64:
        e = tl.exp(-2.0 * t)
        return (1.0 - e) / (1.0 + e), e
    else:
        return tanh(t, FAST), exp(-2.0 * t, FAST)


@triton.jit
def _artanh(z, FAST: tl.constexpr, COMPUTE: tl.constexpr):
    """artanh z for z in [0, 1) (float64: 0.5 ln((1+z)/(1-z)), used for z >= 0.1 only)."""
    if COMPUTE == tl.float64:
        return 0.5 * tl.log((1.0 + z) / (1.0 - z))
    else:
        return artanh(z, FAST)


@triton.jit
def _phi_psi(t, tiny, r_read, r_out, OP: tl.constexpr, FAST: tl.constexpr,
             COMPUTE: tl.constexpr):
    """(phi(t), phi'(t)/t) of the op, per row."""
    ts = tl.maximum(t, tiny)  # the reference floors |u| at the smallest normal number
    t2 = ts * ts
    small = ts < _SERIES_BELOW
    if OP == 0:
        th, e = _tanh_exp(ts, FAST, COMPUTE)
        sech2 = 4.0 * e / ((1.0 + e) * (1.0 + e))
        phi = tl.where(small, 1.0 + t2 * (-1.0 / 3 + t2 * (2.0 / 15 + t2 * (
            -17.0 / 315 + t2 * (62.0 / 2835)))), th / ts)
        psi = tl.where(small, -2.0 / 3 + t2 * (8.0 / 15 + t2 * (-34.0 / 105 + t2 * (
            496.0 / 2835 + t2 * (-2764.0 / 31185)))), (sech2 * ts - th) / (t2 * ts))
        clipped = th > r_out
        phi = tl.where(clipped, r_out / ts, phi)
        psi = tl.where(clipped, -r_out / (t2 * ts), psi)
    elif OP == 1:
        clipped = ts > r_read
        z = tl.minimum(ts, r_read)
        at = _artanh(z, FAST, COMPUTE)
        phi = tl.where(small, 1.0 + t2 * (1.0 / 3 + t2 * (1.0 / 5 + t2 * (1.0 / 7 + t2 / 9))),
                       at / ts)
        psi = tl.where(small, 2.0 / 3 + t2 * (4.0 / 5 + t2 * (6.0 / 7 + t2 * (
            8.0 / 9 + t2 * (10.0 / 11 + t2 * (12.0 / 13))))),
                       (ts / ((1.0 - z) * (1.0 + z)) - at) / (t2 * ts))
        psi = tl.where(clipped, -at / (t2 * ts), psi)
    else:
        clipped = t > r_out
        phi = tl.where(clipped, r_out / ts, 1.0)
        psi = tl.where(clipped, -r_out / (t2 * ts), 0.0)
    return phi, psi


@triton.jit
def _radial_kernel(u_ptr, g_ptr, out_ptr, p_ptr, M, D,
                   OP: tl.constexpr, BACKWARD: tl.constexpr, BLOCK_M: tl.constexpr,
                   BLOCK_D: tl.constexpr, COMPUTE: tl.constexpr,
                    WIDE: tl.constexpr, FAST: tl.constexpr):
    offs, mask = row_tile(M, D, BLOCK_M, BLOCK_D, WIDE)
    _, sc, r_read, r_out, tiny = load_scalars(p_ptr)
    u = load_rows(u_ptr, offs, mask, COMPUTE)
    t = sc * sqrt_rn(tl.sum(u * u, 1))
    phi, psi = _phi_psi(t, tiny, r_read, r_out, OP, FAST, COMPUTE)
    if BACKWARD:
        g = load_rows(g_ptr, offs, mask, COMPUTE)
        res = g * phi[:, None] + u * (sc * sc * psi * tl.sum(g * u, 1))[:, None]
    else:
        res = u * phi[:, None]
    tl.store(out_ptr + offs, res.to(out_ptr.dtype.element_ty), mask=mask)


def radial(op: str, u: torch.Tensor, c: float, grad: torch.Tensor | None = None,
           out: torch.Tensor | None = None) -> torch.Tensor:
    """phi(t) u (``grad`` None) or its vector-Jacobian product with ``grad``, for the op
    ``"expmap0"``, ``"logmap0"`` or ``"project"`` (``out``: optional result buffer)."""
    ur = as_rows(u)
    gr = ur if grad is None else as_rows(grad)
    m, d = ur.shape
    out = torch.empty_like(u) if out is None else out
    grid, bm, bd, warps = launch_config("radial_fwd" if grad is None else "radial_bwd", u)
    _radial_kernel[grid](ur, gr, out, scalar_args(c, u.dtype, u.device), m, d,
                         OP=OPS[op], BACKWARD=grad is not None, BLOCK_M=bm, BLOCK_D=bd,
                         COMPUTE=compute_type(u.dtype), FAST=fast_math(u.dtype, u.device),
                         WIDE=u.numel() >= 2**31,
                         num_warps=warps)
    return out


def _register(op: str) -> torch.library.CustomOpDef:
    """The custom op ``resnetbk::<op>`` with its backward op and autograd formula."""

    def forward_impl(u: torch.Tensor, c: float) -> torch.Tensor:
        return radial(op, u, c)

    def backward_impl(u: torch.Tensor, grad: torch.Tensor, c: float) -> torch.Tensor:
        return radial(op, u, c, grad=grad)

    fwd = torch.library.custom_op(f"resnetbk::{op}", forward_impl, mutates_args=())
    bwd = torch.library.custom_op(f"resnetbk::{op}_backward", backward_impl, mutates_args=())
    fwd.register_fake(lambda u, c: torch.empty_like(u))
    bwd.register_fake(lambda u, grad, c: torch.empty_like(u))

    def setup_context(ctx: torch.autograd.function.FunctionCtx, inputs: tuple,
                      output: torch.Tensor) -> None:
        ctx.save_for_backward(inputs[0])
        ctx.c = inputs[1]

    def backward(ctx: torch.autograd.function.FunctionCtx,
                 grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (u,) = ctx.saved_tensors
        return bwd(u, grad.contiguous(), ctx.c), None

    fwd.register_autograd(backward, setup_context=setup_context)
    return fwd


expmap0 = _register("expmap0")
logmap0 = _register("logmap0")
project = _register("project")
