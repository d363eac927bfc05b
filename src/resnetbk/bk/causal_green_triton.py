"""Triton backend of :func:`resnetbk.bk.causal_green`: row-parallel sequential kernels.

Registered in ``green.py`` as ``_BACKENDS["triton"]`` (only when triton is installed) with the
backend contract stated there: ``forward(a, k, z) -> G`` on contiguous a, k (M, N) real and
z (M, 1) complex; ``backward(a, k, z, G, grad_G) -> (grad_a, grad_k, grad_z)`` in PyTorch's
conjugate-Wirtinger convention. Validation, broadcasting and autograd stay in ``green.py``.

Design. Rows (channels x batch) are independent; the recursion along a row is sequential:

    forward:   r_t = (a_t - z) - k_{t-1} G_{t-1},   G_t = 1/r_t = conj(r_t) / |r_t|^2
    backward:  lam_t = G_t^2 (k_t lam_{t+1} - conj(grad_G_t)),   lam_N = 0
               grad_a_t = Re lam_t,  grad_k_t = -Re(lam_{t+1} G_t),  grad_z = -conj(sum_t lam_t)

Each program owns BLOCK_M rows and marches along N (backward: in reverse) in tiles of BLOCK_N
positions. A tile is loaded row-major, i.e. contiguous along N (a per-step load of column t
would touch BLOCK_M cache lines per 4 bytes used); the next tile's load is issued before the
current tile is processed, so its memory latency overlaps BLOCK_N steps of the recursion. Column
j of a register tile is taken by ``sum(where(col == j, tile, -0.0))`` inside a
``tl.static_range`` loop: j is a compile-time constant and ``x + (-0.0) == x`` exactly, so the
pick is exact and costs a few selects plus the shuffles needed where Triton spreads a tile's
columns over threads (2 rounds for a float32 16-wide tile, see ``_launch_config``), all off
the sequential chain; the output tile is built the same way with ``where(col == j, v, tile)``.
Complex values are (re, im) pairs of real registers; complex tensors are read and written
through ``torch.view_as_real``.

Why no parallel scan over N: with M = 4096 rows there are 4096 independent chains, which
occupy every SM (M / BLOCK_M = 512 one-warp programs); the time is then about
N x (latency of one step). A
chunked (Mamba-2 SSD style) variant would pay a second read of a, k for more parallelism and
is only worth it when M is small (see docs/BK.md "Triton backend").

Why no ``FAST`` switch: Triton already lowers float32 ``/`` to ``div.full.f32`` (the fast,
approximate division), so a ``rcp.approx`` inline-asm path would save at most one multiply per
step; one code path runs both on the GPU and under the interpreter. float64 uses IEEE division.

Range: 1/r is formed as conj(r)/|r|^2 without rescaling, so |r|^2 must stay finite and normal:
|a|, |z| and k / Im z below ~1e18 in float32 (|r| >= Im z, so Im z >= ~1e-18 too).

On CPU tensors the kernels run only under Triton's interpreter (``TRITON_INTERPRET=1`` set
before this module is imported); otherwise :func:`forward` / :func:`backward` raise.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["backward", "forward"]

# Triton decides interpreter vs compiled when @triton.jit runs (at import of this module), so
# this is read at the same moment as the decorators below.
_INTERPRETED: bool = bool(triton.knobs.runtime.interpret)


# M is not specialised on (M % 16, M == 1): it only bounds the row mask, and every distinct
# specialisation costs a compile of this fully unrolled kernel (seconds).
@triton.jit(do_not_specialize=["M"])
def _causal_green_fwd_kernel(
    a_ptr, k_ptr, z_ptr, g_ptr, M, N,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """G (M, N, 2) real view of complex G from a, k (M, N) and z (M, 1, 2)."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    cols = tl.arange(0, BLOCK_N)
    base = rows.to(tl.int64)[:, None] * N  # int64: M * N may exceed 2^31
    reim = tl.arange(0, 2)
    dtype = a_ptr.dtype.element_ty
    zr = tl.load(z_ptr + 2 * rows, mask=row_ok, other=0.0)
    zi = tl.load(z_ptr + 2 * rows + 1, mask=row_ok, other=1.0)  # masked rows: r != 0

    gr = tl.zeros([BLOCK_M], dtype=dtype)  # G_{t-1} (G_{-1} = 0)
    gi = tl.zeros([BLOCK_M], dtype=dtype)
    kp = tl.zeros([BLOCK_M], dtype=dtype)  # k_{t-1}

    mask = row_ok[:, None] & (cols[None, :] < N)
    a_next = tl.load(a_ptr + base + cols[None, :], mask=mask, other=0.0)
    k_next = tl.load(k_ptr + base + cols[None, :], mask=mask, other=0.0)
    # A while loop, not range(0, N, ...): Triton's interpreter cannot turn a runtime N into a
    # Python int under numpy >= 2.4. n0 starts as a tensor (a loop-carried value cannot be a
    # constexpr).
    n0 = tl.full([], 0, tl.int32)
    while n0 < N:
        d_tile, k_tile, tile_mask = a_next - zr[:, None], k_next, mask
        # Prefetch the next tile (fully masked past the end) before the sequential work.
        nxt = n0 + BLOCK_N + cols
        mask = row_ok[:, None] & (nxt[None, :] < N)
        a_next = tl.load(a_ptr + base + nxt[None, :], mask=mask, other=0.0)
        k_next = tl.load(k_ptr + base + nxt[None, :], mask=mask, other=0.0)

        dk_tile = tl.join(d_tile, k_tile)  # (BLOCK_M, BLOCK_N, 2): one column pick per step
        out_r = tl.zeros([BLOCK_M, BLOCK_N], dtype=dtype)
        out_i = tl.zeros([BLOCK_M, BLOCK_N], dtype=dtype)
        for j in tl.static_range(BLOCK_N):
            # Column j: j is a compile-time constant, so the compare folds and the sum (of one
            # value and -0.0s, exact) becomes a register pick. Inlined, not a helper, and
            # (a, k) picked together: every call of a jit function (tl.sum is one) costs the
            # interpreter a re-patch of triton.language.
            sel = cols[None, :] == j
            dj, kj = tl.split(tl.sum(tl.where(sel[:, :, None], dk_tile, -0.0), axis=1))
            # r = rr - i si (si = -Im r > 0); G = 1/r = (rr + i si) / |r|^2.
            rr = dj - kp * gr
            si = zi + kp * gi
            inv = 1.0 / (rr * rr + si * si)  # one division per step, not two
            gr = rr * inv
            gi = si * inv
            kp = kj
            out_r = tl.where(sel, gr[:, None], out_r)
            out_i = tl.where(sel, gi[:, None], out_i)
        ptrs = g_ptr + 2 * (base + n0 + cols[None, :])[:, :, None] + reim[None, None, :]
        tl.store(ptrs, tl.join(out_r, out_i), mask=tile_mask[:, :, None])
        n0 += BLOCK_N


@triton.jit(do_not_specialize=["M"])
def _causal_green_bwd_kernel(
    k_ptr, g_ptr, gg_ptr, ga_ptr, gk_ptr, gz_ptr, M, N,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """grad_a, grad_k (M, N) and grad_z (M, 1, 2) from k (M, N), G and grad_G (M, N, 2)."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    cols = tl.arange(0, BLOCK_N)
    base = rows.to(tl.int64)[:, None] * N
    reim = tl.arange(0, 2)
    dtype = k_ptr.dtype.element_ty

    lr = tl.zeros([BLOCK_M], dtype=dtype)  # lam_{t+1} (lam_N = 0)
    li = tl.zeros([BLOCK_M], dtype=dtype)
    # Sum of lam kept per column slot and reduced once at the end: BLOCK_N partial sums of
    # N / BLOCK_N terms each instead of one sequential sum of N terms (less float32 error).
    sum_r = tl.zeros([BLOCK_M, BLOCK_N], dtype=dtype)
    sum_i = tl.zeros([BLOCK_M, BLOCK_N], dtype=dtype)

    n0 = tl.full([], 0, tl.int32) + ((N - 1) // BLOCK_N) * BLOCK_N  # last (partial) tile
    pos = n0 + cols
    mask = row_ok[:, None] & (pos[None, :] < N)
    cptr = 2 * (base + pos[None, :])[:, :, None] + reim[None, None, :]
    k_next = tl.load(k_ptr + base + pos[None, :], mask=mask, other=0.0)
    g_next = tl.load(g_ptr + cptr, mask=mask[:, :, None], other=0.0)
    gg_next = tl.load(gg_ptr + cptr, mask=mask[:, :, None], other=0.0)
    while n0 >= 0:  # a while loop: see the forward kernel
        k_tile, g_tile, gg_tile, tile_mask = k_next, g_next, gg_next, mask
        # Prefetch the previous tile (fully masked before position 0).
        prv = n0 - BLOCK_N + cols
        mask = row_ok[:, None] & (prv[None, :] >= 0)
        cptr = 2 * (base + prv[None, :])[:, :, None] + reim[None, None, :]
        k_next = tl.load(k_ptr + base + prv[None, :], mask=mask, other=0.0)
        g_next = tl.load(g_ptr + cptr, mask=mask[:, :, None], other=0.0)
        gg_next = tl.load(gg_ptr + cptr, mask=mask[:, :, None], other=0.0)

        # Off the sequential chain, for the whole tile: lam_t = alpha_t lam_{t+1} + beta_t with
        # alpha = k G^2 and beta = -conj(grad_G) G^2 (0 on padding, so lam stays 0 there).
        g_r, g_i = tl.split(g_tile)
        gg_r, gg_i = tl.split(gg_tile)
        g2_r = g_r * g_r - g_i * g_i
        g2_i = 2 * g_r * g_i
        alpha = tl.join(k_tile * g2_r, k_tile * g2_i)
        beta = tl.join(-(gg_r * g2_r + gg_i * g2_i), gg_i * g2_r - gg_r * g2_i)
        lam_r = tl.zeros([BLOCK_M, BLOCK_N], dtype=dtype)  # lam_t
        lam_i = tl.zeros([BLOCK_M, BLOCK_N], dtype=dtype)
        nxt_r = tl.zeros([BLOCK_M, BLOCK_N], dtype=dtype)  # lam_{t+1}
        nxt_i = tl.zeros([BLOCK_M, BLOCK_N], dtype=dtype)
        for j in tl.static_range(BLOCK_N - 1, -1, -1):
            sel = cols[None, :] == j  # column pick as in the forward kernel
            nxt_r = tl.where(sel, lr[:, None], nxt_r)
            nxt_i = tl.where(sel, li[:, None], nxt_i)
            ar, ai = tl.split(tl.sum(tl.where(sel[:, :, None], alpha, -0.0), axis=1))
            br, bi = tl.split(tl.sum(tl.where(sel[:, :, None], beta, -0.0), axis=1))
            lr, li = ar * lr - ai * li + br, ar * li + ai * lr + bi
            lam_r = tl.where(sel, lr[:, None], lam_r)
            lam_i = tl.where(sel, li[:, None], lam_i)
        sum_r += lam_r
        sum_i += lam_i
        offs = base + n0 + cols[None, :]
        tl.store(ga_ptr + offs, lam_r, mask=tile_mask)
        # grad_k_t = -Re(lam_{t+1} G_t): 0 at t = N-1 since lam_N = 0.
        tl.store(gk_ptr + offs, nxt_i * g_i - nxt_r * g_r, mask=tile_mask)
        n0 -= BLOCK_N

    # grad_z = -conj(sum_t lam_t) = (-Re, +Im).
    tl.store(gz_ptr + 2 * rows, -tl.sum(sum_r, axis=1), mask=row_ok)
    tl.store(gz_ptr + 2 * rows + 1, tl.sum(sum_i, axis=1), mask=row_ok)


def _launch_config(n: int) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps) by the following reasoning (not yet tuned on a GPU:
    bench/bk_gpu.py sweeps alternatives). Triton lays a (BLOCK_M, 16) float32 tile out as
    4 contiguous values per thread x 4 threads along N x 8 rows per warp (when N % 16 == 0), so
    a column pick is a 4-way in-thread select plus 2 shuffle rounds and each row is computed by
    4 threads; BLOCK_M = 8 with one warp gives every thread one row and the most programs
    (M / 8), which matters because the time is ~N x (latency of one step) once each SM has
    rows. 16 positions per tile cover the latency of prefetching the next tile; fewer when
    N < 16 (no wasted unrolled steps: the interpreter tests run at small N)."""
    return 8, min(16, triton.next_power_of_2(n)), 1


def _check_runnable(x: torch.Tensor) -> None:
    if x.device.type != "cuda" and not _INTERPRETED:
        raise ValueError(
            "backend must be 'torch' or 'reference' for CPU tensors: 'triton' runs on CUDA "
            "tensors (on CPU only under Triton's interpreter, TRITON_INTERPRET=1 set before "
            f"import); got a tensor on {x.device}"
        )


def forward(
    a: torch.Tensor, k: torch.Tensor, z: torch.Tensor, *,
    block_m: int | None = None, block_n: int | None = None, num_warps: int | None = None,
) -> torch.Tensor:
    """G (M, N) complex from contiguous a, k (M, N) float32/float64 and z (M, 1) complex.

    ``block_m``, ``block_n`` (powers of two) and ``num_warps`` override the launch heuristic
    (for benchmarks)."""
    _check_runnable(a)
    m, n = a.shape
    bm, bn, warps = _launch_config(n)
    bm, bn, warps = block_m or bm, block_n or bn, num_warps or warps
    g = torch.empty((m, n), dtype=z.dtype, device=a.device)
    _causal_green_fwd_kernel[(triton.cdiv(m, bm),)](
        a, k, torch.view_as_real(z), torch.view_as_real(g), m, n,
        BLOCK_M=bm, BLOCK_N=bn, num_warps=warps,
    )
    return g


def backward(
    a: torch.Tensor, k: torch.Tensor, z: torch.Tensor, g: torch.Tensor, grad_g: torch.Tensor,
    *, block_m: int | None = None, block_n: int | None = None, num_warps: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad_a, grad_k (M, N), grad_z (M, 1)) from k (M, N), G and grad_G (M, N) complex.

    ``a`` and ``z`` enter only through G (unused; part of the backend contract). ``k`` may be
    a non-contiguous expanded view: it is made contiguous here. Overrides as for
    :func:`forward`."""
    del a
    _check_runnable(g)
    m, n = g.shape
    bm, bn, warps = _launch_config(n)
    bm, bn, warps = block_m or bm, block_n or bn, num_warps or warps
    grad_a = torch.empty((m, n), dtype=k.dtype, device=g.device)
    grad_k = torch.empty_like(grad_a)
    grad_z = torch.empty((m, 1), dtype=z.dtype, device=g.device)
    _causal_green_bwd_kernel[(triton.cdiv(m, bm),)](
        k.contiguous(), torch.view_as_real(g.contiguous()),
        torch.view_as_real(grad_g.contiguous()), grad_a, grad_k, torch.view_as_real(grad_z),
        m, n, BLOCK_M=bm, BLOCK_N=bn, num_warps=warps,
    )
    return grad_a, grad_k, grad_z
