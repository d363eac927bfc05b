"""Triton backend of :func:`resnetbk.bk.causal_green`: row-parallel and chunked kernels.

Registered in ``green.py`` as ``_BACKENDS["triton"]`` (only when triton is installed) with the
backend contract stated there: ``forward(a, k, z) -> G`` on a, k (B, C, N) real (any strides)
and z (B, C, 1) complex; ``backward(a, k, z, G, grad_G) -> (grad_a, grad_k, grad_z)`` in
PyTorch's conjugate-Wirtinger convention. (M, N) / (M, 1) arguments are accepted too (tests,
benchmarks). Validation, broadcasting and autograd stay in ``green.py``.

Two memory layouts (see "Addressing" below): row-major (each row's positions adjacent; other
inputs are copied to it) and time-major (channels adjacent, e.g. BKMixer's (B, N, C) tensors
seen as (B, C, N); read and written in place). The kernels are the same code for both; the
layout decides how Triton spreads a tile over threads, and time-major is about twice as fast
(docs/BK.md "Time-major layout").

Design. Rows (channels x batch) are independent; the recursion along a row is sequential:

    forward:   r_t = (a_t - z) - k_{t-1} G_{t-1},   G_t = 1/r_t = conj(r_t) / |r_t|^2
    backward:  lam_t = G_t^2 (k_t lam_{t+1} - conj(grad_G_t)),   lam_N = 0
               grad_a_t = Re lam_t,  grad_k_t = -Re(lam_{t+1} G_t),  grad_z = -conj(sum_t lam_t)

Row-parallel variant: each program owns BLOCK_M rows and marches along N (backward: in
reverse) in tiles of BLOCK_N positions. A tile is loaded row-major, i.e. contiguous along N (a
per-step load of column t would touch BLOCK_M cache lines per 4 bytes used); the next tile's
load is issued before the current tile is processed, so its memory latency overlaps BLOCK_N
steps of the recursion. Column j of a register tile is taken by
``sum(where(col == j, tile, -0.0))`` inside a ``tl.static_range`` loop: j is a compile-time
constant and ``x + (-0.0) == x`` exactly, so the pick is exact and costs a few selects plus the
shuffles needed where Triton spreads a tile's columns over threads (2 rounds for a float32
16-wide tile, see ``_launch_config``), all off the sequential chain; the output tile is built
the same way with ``where(col == j, v, tile)``. Complex values are (re, im) pairs of real
registers; complex tensors are read and written through ``torch.view_as_real``. Its time is
about N x (latency of one step) once every SM has rows: latency-bound at 4096 row-major rows
(20-26% of copy bandwidth on an H200) and idle SMs below that (docs/BK.md "Triton backend").

Chunked variant (Mamba-2 SSD style, as the torch backend): N is split into chunks of length L
and the grid covers (row blocks, chunks), three launches per direction:

    1. per chunk (parallel over rows x chunks), its map: forward the projectively normalised
       Moebius map [[w, beta], [1, delta]] of the chunk's transfer matrices; backward the
       affine map lam_start = A lam_end + B (A = prod alpha, B accumulated);
    2. across chunks (sequential over N / L, parallel over rows): G just before each chunk,
       g -> (1 + delta g) / (w + beta g) from 0; lam just after each chunk, in reverse, e -> A e + B
       from lam_N = 0;
    3. per chunk (parallel over rows x chunks), the exact recurrence from that boundary value,
       writing G (forward) or grad_a, grad_k and the chunk's part of grad_z (backward).

Pass 3 is the row-parallel kernel itself with the chunk as its range and a start value (the
row-parallel variant is the case of one chunk, L = N). It reads the inputs a second time: 24
instead of 16 B/element forward, 48 instead of 28 backward. Chunk 0 of the forward is
bit-identical to the row-parallel result; the boundary maps are contractions (forward) or
derivatives of them (backward), so errors in a boundary value are forgotten, not amplified.
:func:`use_chunked` picks the variant (``variant="auto"``); ``variant="row"`` / ``"chunked"``
force one.

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

__all__ = ["CHUNK", "CHUNKED_MAX_M", "CHUNKED_MIN_N", "backward", "forward", "use_chunked"]

# Triton decides interpreter vs compiled when @triton.jit runs (at import of this module), so
# this is read at the same moment as the decorators below.
_INTERPRETED: bool = bool(triton.knobs.runtime.interpret)


# Addressing. A row is (b, c): batch b = program_id(2), channel c in [0, C). Two layouts:
# row-major (one batch, row c at c N, positions adjacent: the (M, N) contiguous case) and
# time-major (TIME_MAJOR: channels adjacent, stride 1; position t at t * st; batch b at
# b * sb; the (B, N, C) tensors of BKMixer seen as (B, C, N)). The unit stride is a constexpr,
# not a runtime 1, so Triton's coalescing pass knows which axis is contiguous: row-major tiles
# put 4 threads along N (column picks need shuffles), time-major tiles put the 32 lanes along
# rows and the positions in registers (column picks are register selects, no redundancy).
# Per-row buffers of the chunked variant (maps, start values, partial sums) are contiguous in
# the flat row index b C + c.
@triton.jit
def _row_base(b, rows, sb, N, TIME_MAJOR: tl.constexpr):
    """Offset of position 0 of rows (b, rows) (int64: offsets may exceed 2^31)."""
    if TIME_MAJOR:
        return b.to(tl.int64) * sb + rows.to(tl.int64)
    else:  # one batch (b = 0)
        return rows.to(tl.int64) * N


@triton.jit
def _tile_offsets(base, pos, st, TIME_MAJOR: tl.constexpr):
    """(BLOCK_M, BLOCK_N) offsets of positions ``pos`` of the rows starting at ``base``."""
    if TIME_MAJOR:
        return base[:, None] + pos.to(tl.int64)[None, :] * st
    else:
        return base[:, None] + pos[None, :]


@triton.jit
def _position_offsets(base, t, st, TIME_MAJOR: tl.constexpr):
    """[BLOCK_M] offsets of one position t (a scalar) of the rows starting at ``base``."""
    if TIME_MAJOR:
        return base + t.to(tl.int64) * st
    else:
        return base + t


@triton.jit
def _load_potentials(a_ptr, k_ptr, a_base, k_base, pos, mask, a_st, k_st,
                     TIME_MAJOR: tl.constexpr):
    """(a, k) tiles at positions ``pos`` (0 where masked): the forward's inputs."""
    a = tl.load(a_ptr + _tile_offsets(a_base, pos, a_st, TIME_MAJOR), mask=mask, other=0.0)
    k = tl.load(k_ptr + _tile_offsets(k_base, pos, k_st, TIME_MAJOR), mask=mask, other=0.0)
    return a, k


@triton.jit
def _load_adjoint_inputs(k_ptr, g_ptr, gg_ptr, k_base, g_base, pos, mask, k_st, g_st,
                         TIME_MAJOR: tl.constexpr):
    """(k, G, grad_G) tiles at positions ``pos`` (0 where masked; G and grad_G as (re, im)
    in a last axis of 2): the backward's inputs."""
    reim = tl.arange(0, 2)
    cptr = 2 * _tile_offsets(g_base, pos, g_st, TIME_MAJOR)[:, :, None] + reim[None, None, :]
    k = tl.load(k_ptr + _tile_offsets(k_base, pos, k_st, TIME_MAJOR), mask=mask, other=0.0)
    g = tl.load(g_ptr + cptr, mask=mask[:, :, None], other=0.0)
    gg = tl.load(gg_ptr + cptr, mask=mask[:, :, None], other=0.0)
    return k, g, gg


# C is not specialised on (C % 16, C == 1): it only bounds the row mask, and every distinct
# specialisation costs a compile of these fully unrolled kernels. N and the chunk length CH
# are: knowing them divisible by 16 makes row-major tile bounds (c CH, min((c + 1) CH, N))
# aligned, which the 128-bit vector loads of a and k need (checked in the sm_90 PTX: without it
# every load is scalar). Row-parallel launches pass CH = N, so no extra specialisation arises.
@triton.jit(do_not_specialize=["C"])
def _causal_green_fwd_kernel(
    a_ptr, k_ptr, z_ptr, s_ptr, g_ptr, C, N, CH, a_sb, a_st, k_sb, k_st, g_sb, g_st, z_sb, z_sc,
    HAS_START: tl.constexpr, TIME_MAJOR: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """G (real view of complex, same layout as a) from a, k and z (per row (b, c): complex at
    b z_sb + c z_sc), for positions [c CH, (c + 1) CH) of chunk c = program_id(1).
    Row-parallel: one chunk, CH = N, G_{-1} = 0. Chunked (HAS_START): the chunk starts from
    G_{c CH - 1} = s (B C, n_chunks, 2)."""
    b = tl.program_id(2)
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < C
    cols = tl.arange(0, BLOCK_N)
    a_base = _row_base(b, rows, a_sb, N, TIME_MAJOR)
    k_base = _row_base(b, rows, k_sb, N, TIME_MAJOR)
    g_base = _row_base(b, rows, g_sb, N, TIME_MAJOR)
    reim = tl.arange(0, 2)
    dtype = a_ptr.dtype.element_ty
    z_off = 2 * (b.to(tl.int64) * z_sb + rows.to(tl.int64) * z_sc)
    zr = tl.load(z_ptr + z_off, mask=row_ok, other=0.0)
    zi = tl.load(z_ptr + z_off + 1, mask=row_ok, other=1.0)  # masked rows: r != 0
    chunk = tl.program_id(1)
    n_lo = chunk * CH
    n_hi = tl.minimum(n_lo + CH, N)
    if HAS_START:  # G_{n_lo - 1} and k_{n_lo - 1} (0 before position 0)
        start = s_ptr + 2 * ((b.to(tl.int64) * C + rows) * tl.num_programs(1) + chunk)
        gr = tl.load(start, mask=row_ok, other=0.0)
        gi = tl.load(start + 1, mask=row_ok, other=0.0)
        # (the scalar condition is broadcast to a block: Triton 3.9's interpreter rejects a
        # scalar-bool mask operand)
        kp = tl.load(k_ptr + _position_offsets(k_base, n_lo - 1, k_st, TIME_MAJOR),
                     mask=row_ok & (rows * 0 + n_lo > 0), other=0.0)
    else:
        gr = tl.zeros([BLOCK_M], dtype=dtype)  # G_{t-1} (G_{-1} = 0)
        gi = tl.zeros([BLOCK_M], dtype=dtype)
        kp = tl.zeros([BLOCK_M], dtype=dtype)  # k_{t-1}

    pos = n_lo + cols
    mask = row_ok[:, None] & (pos[None, :] < n_hi)
    a_next, k_next = _load_potentials(a_ptr, k_ptr, a_base, k_base, pos, mask, a_st, k_st,
                                      TIME_MAJOR)
    # A while loop, not range(n_lo, n_hi, ...): Triton's interpreter cannot turn a runtime
    # bound into a Python int under numpy >= 2.4.
    n0 = n_lo
    while n0 < n_hi:
        d_tile, k_tile, tile_mask = a_next - zr[:, None], k_next, mask
        # Prefetch the next tile (fully masked past the chunk) before the sequential work.
        nxt = n0 + BLOCK_N + cols
        mask = row_ok[:, None] & (nxt[None, :] < n_hi)
        a_next, k_next = _load_potentials(a_ptr, k_ptr, a_base, k_base, nxt, mask, a_st, k_st,
                                          TIME_MAJOR)

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
        offs = _tile_offsets(g_base, n0 + cols, g_st, TIME_MAJOR)
        tl.store(g_ptr + 2 * offs[:, :, None] + reim[None, None, :], tl.join(out_r, out_i),
                 mask=tile_mask[:, :, None])
        n0 += BLOCK_N


@triton.jit(do_not_specialize=["C"])
def _causal_green_bwd_kernel(
    k_ptr, g_ptr, gg_ptr, e_ptr, ga_ptr, gk_ptr, gz_ptr, C, N, CH, k_sb, k_st, g_sb, g_st,
    HAS_END: tl.constexpr, TIME_MAJOR: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """grad_a, grad_k (layout of G) and the partial sums -conj(sum_t lam_t) gz
    (B C, n_chunks, 2) over chunk c = program_id(1), i.e. positions [c CH, (c + 1) CH), from k,
    G and grad_G (G's layout, real views of complex). Row-parallel: one chunk, lam_N = 0.
    Chunked (HAS_END): lam at the chunk's end (the next chunk's first position) is
    e (B C, n_chunks, 2)."""
    b = tl.program_id(2)
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < C
    cols = tl.arange(0, BLOCK_N)
    k_base = _row_base(b, rows, k_sb, N, TIME_MAJOR)
    g_base = _row_base(b, rows, g_sb, N, TIME_MAJOR)
    dtype = k_ptr.dtype.element_ty
    chunk = tl.program_id(1)
    n_lo = chunk * CH
    n_hi = tl.minimum(n_lo + CH, N)
    slot = 2 * ((b.to(tl.int64) * C + rows) * tl.num_programs(1) + chunk)

    if HAS_END:  # lam_{t+1} at the chunk's last position
        lr = tl.load(e_ptr + slot, mask=row_ok, other=0.0)
        li = tl.load(e_ptr + slot + 1, mask=row_ok, other=0.0)
    else:
        lr = tl.zeros([BLOCK_M], dtype=dtype)  # lam_{t+1} (lam_N = 0)
        li = tl.zeros([BLOCK_M], dtype=dtype)
    # Sum of lam kept per column slot and reduced once at the end: BLOCK_N partial sums of
    # CH / BLOCK_N terms each instead of one sequential sum of CH terms (less float32 error).
    sum_r = tl.zeros([BLOCK_M, BLOCK_N], dtype=dtype)
    sum_i = tl.zeros([BLOCK_M, BLOCK_N], dtype=dtype)

    n0 = n_lo + ((n_hi - n_lo - 1) // BLOCK_N) * BLOCK_N  # last (partial) tile of the chunk
    pos = n0 + cols
    mask = row_ok[:, None] & (pos[None, :] < n_hi)
    k_next, g_next, gg_next = _load_adjoint_inputs(
        k_ptr, g_ptr, gg_ptr, k_base, g_base, pos, mask, k_st, g_st, TIME_MAJOR)
    while n0 >= n_lo:  # a while loop: see the forward kernel
        k_tile, g_tile, gg_tile, tile_mask = k_next, g_next, gg_next, mask
        # Prefetch the previous tile (fully masked before the chunk).
        prv = n0 - BLOCK_N + cols
        mask = row_ok[:, None] & (prv[None, :] >= n_lo)
        k_next, g_next, gg_next = _load_adjoint_inputs(
            k_ptr, g_ptr, gg_ptr, k_base, g_base, prv, mask, k_st, g_st, TIME_MAJOR)

        # Off the sequential chain, for the whole tile: lam_t = alpha_t lam_{t+1} + beta_t with
        # alpha = k G^2 and beta = -conj(grad_G) G^2 (0 on padding, so lam stays 0 there).
        g_r, g_i = tl.split(g_tile)
        alpha, beta = _adjoint_coefficients(k_tile, g_tile, gg_tile)
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
        offs = _tile_offsets(g_base, n0 + cols, g_st, TIME_MAJOR)
        tl.store(ga_ptr + offs, lam_r, mask=tile_mask)
        # grad_k_t = -Re(lam_{t+1} G_t): 0 at t = N-1 since lam_N = 0.
        tl.store(gk_ptr + offs, nxt_i * g_i - nxt_r * g_r, mask=tile_mask)
        n0 -= BLOCK_N

    # This chunk's share of grad_z = -conj(sum_t lam_t) = (-Re, +Im).
    tl.store(gz_ptr + slot, -tl.sum(sum_r, axis=1), mask=row_ok)
    tl.store(gz_ptr + slot + 1, tl.sum(sum_i, axis=1), mask=row_ok)


@triton.jit
def _adjoint_coefficients(k_tile, g_tile, gg_tile):
    """(alpha, beta) tiles (..., 2) of lam_t = alpha_t lam_{t+1} + beta_t: alpha = k G^2,
    beta = -conj(grad_G) G^2 (shared by the backward kernel and the backward chunk maps)."""
    g_r, g_i = tl.split(g_tile)
    gg_r, gg_i = tl.split(gg_tile)
    g2_r = g_r * g_r - g_i * g_i
    g2_i = 2 * g_r * g_i
    alpha = tl.join(k_tile * g2_r, k_tile * g2_i)
    beta = tl.join(-(gg_r * g2_r + gg_i * g2_i), gg_i * g2_r - gg_r * g2_i)
    return alpha, beta


@triton.jit(do_not_specialize=["C"])
def _fwd_chunk_map_kernel(
    a_ptr, k_ptr, z_ptr, p_ptr, C, N, CH, a_sb, a_st, k_sb, k_st, z_sb, z_sc,
    TIME_MAJOR: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Chunked forward, pass 1: the Moebius map of chunk c = program_id(1) (a full chunk:
    only chunks 0 .. n_chunks - 2 are needed), p (B C, 3, n_maps, 2) = (w, beta, delta) with
    P_c = M_end ... M_start ~ [[w, beta], [1, delta]] (M_t = [[a_t - z, -k_{t-1}], [1, 0]]).

    As in ``green._forward_torch``, M_t P = [[d w - k e, d beta - k delta], [w, beta]] is
    divided by its (1, 0) entry w each step, so nothing overflows: after the first step w is
    the continued fraction started from G = 0 (|w| >= Im z). The state starts as the identity
    (w = delta = 1, beta = 0), which is [[w, beta], [e, delta]] with e = 0 instead of 1: the
    k e term vanishes on the chunk's first step only."""
    b = tl.program_id(2)
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < C
    cols = tl.arange(0, BLOCK_N)
    a_base = _row_base(b, rows, a_sb, N, TIME_MAJOR)
    k_base = _row_base(b, rows, k_sb, N, TIME_MAJOR)
    dtype = a_ptr.dtype.element_ty
    z_off = 2 * (b.to(tl.int64) * z_sb + rows.to(tl.int64) * z_sc)
    zr = tl.load(z_ptr + z_off, mask=row_ok, other=0.0)
    zi = tl.load(z_ptr + z_off + 1, mask=row_ok, other=1.0)
    chunk = tl.program_id(1)
    n_lo = chunk * CH
    kp = tl.load(k_ptr + _position_offsets(k_base, n_lo - 1, k_st, TIME_MAJOR),
                 mask=row_ok & (rows * 0 + n_lo > 0), other=0.0)
    wr = tl.full([BLOCK_M], 1.0, dtype)
    wi = tl.zeros([BLOCK_M], dtype=dtype)
    br = tl.zeros([BLOCK_M], dtype=dtype)
    bi = tl.zeros([BLOCK_M], dtype=dtype)
    er = tl.zeros([BLOCK_M], dtype=dtype)  # e: 0 before the first step, 1 after
    dr = tl.full([BLOCK_M], 1.0, dtype)
    di = tl.zeros([BLOCK_M], dtype=dtype)

    pos = n_lo + cols
    mask = row_ok[:, None] & (cols[None, :] < CH)
    a_next, k_next = _load_potentials(a_ptr, k_ptr, a_base, k_base, pos, mask, a_st, k_st,
                                      TIME_MAJOR)
    n0 = n_lo
    while n0 < n_lo + CH:  # a while loop: see the forward kernel
        ak_tile = tl.join(a_next, k_next)
        nxt = n0 + BLOCK_N + cols
        mask = row_ok[:, None] & (nxt[None, :] < n_lo + CH)
        a_next, k_next = _load_potentials(a_ptr, k_ptr, a_base, k_base, nxt, mask, a_st, k_st,
                                          TIME_MAJOR)
        for j in tl.static_range(BLOCK_N):
            sel = cols[None, :] == j  # column pick as in the forward kernel
            aj, kj = tl.split(tl.sum(tl.where(sel[:, :, None], ak_tile, -0.0), axis=1))
            xr = aj - zr  # d = a - z = xr - i zi
            inv = 1.0 / (wr * wr + wi * wi)
            iwr = wr * inv  # 1/w
            iwi = -wi * inv
            tr = xr * br + zi * bi - kp * dr  # d beta - k delta
            ti = xr * bi - zi * br - kp * di
            dr, di = br * iwr - bi * iwi, br * iwi + bi * iwr  # delta <- beta / w
            br, bi = tr * iwr - ti * iwi, tr * iwi + ti * iwr  # beta <- (d beta - k delta) / w
            ke = kp * er
            wr, wi = xr - ke * iwr, -zi - ke * iwi  # w <- d - k e / w
            er = tl.full([BLOCK_M], 1.0, dtype)
            kp = kj
        n0 += BLOCK_N

    out = p_ptr + 2 * ((b.to(tl.int64) * C + rows) * 3 * tl.num_programs(1) + chunk)
    step = 2 * tl.num_programs(1)  # between the three maps of a row
    tl.store(out, wr, mask=row_ok)
    tl.store(out + 1, wi, mask=row_ok)
    tl.store(out + step, br, mask=row_ok)
    tl.store(out + step + 1, bi, mask=row_ok)
    tl.store(out + 2 * step, dr, mask=row_ok)
    tl.store(out + 2 * step + 1, di, mask=row_ok)


@triton.jit(do_not_specialize=["C"])
def _bwd_chunk_map_kernel(
    k_ptr, g_ptr, gg_ptr, p_ptr, C, N, CH, k_sb, k_st, g_sb, g_st, TIME_MAJOR: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Chunked backward, pass 1: the affine map lam_start = A lam_end + B of chunk
    c = program_id(1) + 1 (chunk 0's map is not needed), p (B C, 2, n_maps, 2) = (A, B):
    A = prod alpha_t, B accumulated in reverse (A <- alpha A, B <- alpha B + beta). A is a
    derivative of a composition of the forward maps, bounded by Schwarz-Pick (docs/BK.md)."""
    b = tl.program_id(2)
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < C
    cols = tl.arange(0, BLOCK_N)
    k_base = _row_base(b, rows, k_sb, N, TIME_MAJOR)
    g_base = _row_base(b, rows, g_sb, N, TIME_MAJOR)
    dtype = k_ptr.dtype.element_ty
    n_lo = (tl.program_id(1) + 1) * CH
    n_hi = tl.minimum(n_lo + CH, N)
    ar = tl.full([BLOCK_M], 1.0, dtype)
    ai = tl.zeros([BLOCK_M], dtype=dtype)
    br = tl.zeros([BLOCK_M], dtype=dtype)
    bi = tl.zeros([BLOCK_M], dtype=dtype)

    n0 = n_lo + ((n_hi - n_lo - 1) // BLOCK_N) * BLOCK_N  # as in the backward kernel
    pos = n0 + cols
    mask = row_ok[:, None] & (pos[None, :] < n_hi)
    k_next, g_next, gg_next = _load_adjoint_inputs(
        k_ptr, g_ptr, gg_ptr, k_base, g_base, pos, mask, k_st, g_st, TIME_MAJOR)
    while n0 >= n_lo:
        k_tile, g_tile, gg_tile = k_next, g_next, gg_next
        prv = n0 - BLOCK_N + cols
        mask = row_ok[:, None] & (prv[None, :] >= n_lo)
        k_next, g_next, gg_next = _load_adjoint_inputs(
            k_ptr, g_ptr, gg_ptr, k_base, g_base, prv, mask, k_st, g_st, TIME_MAJOR)
        # Padding has alpha = beta = 0: it zeroes A, harmless since the last chunk's lam_end
        # is lam_N = 0, and adds nothing to B.
        alpha, beta = _adjoint_coefficients(k_tile, g_tile, gg_tile)
        for j in tl.static_range(BLOCK_N - 1, -1, -1):
            sel = cols[None, :] == j
            xr, xi = tl.split(tl.sum(tl.where(sel[:, :, None], alpha, -0.0), axis=1))
            yr, yi = tl.split(tl.sum(tl.where(sel[:, :, None], beta, -0.0), axis=1))
            ar, ai = xr * ar - xi * ai, xr * ai + xi * ar
            br, bi = xr * br - xi * bi + yr, xr * bi + xi * br + yi
        n0 -= BLOCK_N

    out = p_ptr + 2 * ((b.to(tl.int64) * C + rows) * 2 * tl.num_programs(1) + tl.program_id(1))
    step = 2 * tl.num_programs(1)
    tl.store(out, ar, mask=row_ok)
    tl.store(out + 1, ai, mask=row_ok)
    tl.store(out + step, br, mask=row_ok)
    tl.store(out + step + 1, bi, mask=row_ok)


@triton.jit(do_not_specialize=["M", "NM"])
def _chunk_boundary_kernel(
    p_ptr, s_ptr, M, NM, AFFINE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Chunked pass 2, sequential over the NM chunk maps p (M, K, NM, 2), parallel over rows:
    the state at every chunk boundary, s (M, NM + 1, 2), zero-initialised by the caller.

    Forward (K = 3, (w, beta, delta)): s_0 = 0, s_{i+1} = (1 + delta_i s_i) / (w_i + beta_i s_i)
    (G just before chunk i + 1; the maps are contractions, so this is stable).
    Backward (AFFINE, K = 2, (A, B)), in reverse: s_NM = 0, s_i = A_i s_{i+1} + B_i (lam at the
    first position of chunk i + 1). Tiles of BLOCK_C maps, prefetched as in the kernels above."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    cols = tl.arange(0, BLOCK_C)
    reim = tl.arange(0, 2)
    dtype = s_ptr.dtype.element_ty
    if AFFINE:
        nk = 2
        c0 = ((NM - 1) // BLOCK_C) * BLOCK_C  # last tile first
        dc = -BLOCK_C
    else:
        nk = 3
        c0 = NM * 0
        dc = BLOCK_C
    row_base = rows.to(tl.int64)[:, None] * nk
    sr = tl.zeros([BLOCK_M], dtype=dtype)
    si = tl.zeros([BLOCK_M], dtype=dtype)

    pos = c0 + cols
    mask = (row_ok[:, None] & (pos[None, :] >= 0) & (pos[None, :] < NM))[:, :, None]
    # Masked maps load as (1, 0, 0): the identity for the affine step (s stays 0 before the
    # last map in reverse) and a finite step for the forward (never stored). The third map
    # (delta) exists only in the forward: fully masked for AFFINE.
    p0 = tl.load(p_ptr + 2 * (row_base * NM + pos[None, :])[:, :, None] + reim, mask=mask,
                 other=1.0)
    p1 = tl.load(p_ptr + 2 * ((row_base + 1) * NM + pos[None, :])[:, :, None] + reim,
                 mask=mask, other=0.0)
    p2 = tl.load(p_ptr + 2 * ((row_base + 2) * NM + pos[None, :])[:, :, None] + reim,
                 mask=mask & ((cols * 0 + nk) > 2)[None, :, None], other=0.0)
    done = NM * 0
    while done < NM:
        x_tile, y_tile, u_tile, tile_c0, tile_mask = p0, p1, p2, c0, mask
        c0 += dc
        pos = c0 + cols
        mask = (row_ok[:, None] & (pos[None, :] >= 0) & (pos[None, :] < NM))[:, :, None]
        p0 = tl.load(p_ptr + 2 * (row_base * NM + pos[None, :])[:, :, None] + reim,
                     mask=mask, other=1.0)
        p1 = tl.load(p_ptr + 2 * ((row_base + 1) * NM + pos[None, :])[:, :, None] + reim,
                     mask=mask, other=0.0)
        p2 = tl.load(p_ptr + 2 * ((row_base + 2) * NM + pos[None, :])[:, :, None] + reim,
                     mask=mask & ((cols * 0 + nk) > 2)[None, :, None], other=0.0)
        out_r = tl.zeros([BLOCK_M, BLOCK_C], dtype=dtype)
        out_i = tl.zeros([BLOCK_M, BLOCK_C], dtype=dtype)
        for jj in tl.static_range(BLOCK_C):
            j = jj + AFFINE * (BLOCK_C - 1 - 2 * jj)  # reversed for the backward
            sel = cols[None, :] == j  # column pick as in the forward kernel
            xr, xi = tl.split(tl.sum(tl.where(sel[:, :, None], x_tile, -0.0), axis=1))
            yr, yi = tl.split(tl.sum(tl.where(sel[:, :, None], y_tile, -0.0), axis=1))
            if AFFINE:  # s <- A s + B
                sr, si = xr * sr - xi * si + yr, xr * si + xi * sr + yi
            else:  # s <- (1 + delta s) / (w + beta s)
                ur, ui = tl.split(tl.sum(tl.where(sel[:, :, None], u_tile, -0.0), axis=1))
                nr = 1.0 + ur * sr - ui * si
                ni = ur * si + ui * sr
                qr = xr + yr * sr - yi * si
                qi = xi + yr * si + yi * sr
                inv = 1.0 / (qr * qr + qi * qi)  # |w + beta s| >= Im z: see pass 1
                sr, si = (nr * qr + ni * qi) * inv, (ni * qr - nr * qi) * inv
            out_r = tl.where(sel, sr[:, None], out_r)
            out_i = tl.where(sel, si[:, None], out_i)
        # The forward's state after map i is s_{i + 1}; the backward's is s_i.
        slot = rows.to(tl.int64)[:, None] * (NM + 1) + tile_c0 + cols[None, :] + (1 - AFFINE)
        tl.store(s_ptr + 2 * slot[:, :, None] + reim, tl.join(out_r, out_i), mask=tile_mask)
        done += BLOCK_C


def _launch_config(n: int, time_major: bool = False,
                   backward: bool = False) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps) for a sweep of n positions per row (N, or the chunk length
    L in the chunked variant), by the following reasoning (bench/bk_gpu.py sweeps
    alternatives on the H200).

    Row-major (the default 8 x 16 x 1 was the best of 7 configurations): Triton lays a
    (BLOCK_M, 16) float32 tile out as 4 contiguous values per thread x 4 threads along N x 8
    rows per warp (when N % 16 == 0), so a column pick is a 4-way in-thread select plus 2
    shuffle rounds and each row is computed by 4 threads; BLOCK_M = 8 with one warp gives every
    thread one row and the most programs (M / 8), which matters because the time is
    ~n x (latency of one step) once each SM has rows. 16 positions per tile cover the latency
    of prefetching the next tile; fewer when n < 16 (no wasted unrolled steps: the interpreter
    tests run at small n).

    Time-major: a (128, BLOCK_N) tile puts 4 adjacent rows in each of 32 lanes (128-bit
    accesses, a warp reads 512 contiguous bytes per position) and the positions in registers,
    so each lane runs 4 independent recurrences and picks are register selects. The backward holds
    about 12 tiles (k, G, grad_G and the next ones, alpha, beta, lam, sums): (64, 4), 2 rows
    per lane, is the largest that does not spill (H200 sweep at 4096 x 8192, chunk 128:
    forward (128, 8) 0.36 ms; backward (64, 4) 0.51 ms, (128, 4) 0.84 ms, (128, 8) 3.4 ms)."""
    if time_major:
        bm, bn = (64, 4) if backward else (128, 8)
        return bm, min(bn, triton.next_power_of_2(n)), 1
    return 8, min(16, triton.next_power_of_2(n)), 1


# Chunked variant (see the module docstring). Default chunk length, measured on an H200 at
# 4096 x 8192 (bench/bk_gpu.py "chunk_sweep"): 128 and 256 tie as fastest (forward 0.475 ms,
# backward 1.01 ms), 32 is 10% slower; 128 keeps twice as many programs for shorter N.
CHUNK = 128
# The grid's second axis (chunks) and third (batches) are limited to 65535 by CUDA.
_MAX_CHUNKS = 65535
_MAX_BATCHES = 65535
# Dispatcher thresholds: chunked iff N >= CHUNKED_MIN_N and M < CHUNKED_MAX_M. Below two
# default chunks there is nothing to split. Measured on an H200 at M x N = 2^25 ("time_vs_n"):
# the row-parallel kernel wins from M = 8192 rows (forward 0.36 vs 0.47 ms, backward 0.69 vs
# 1.00 ms; rows alone fill the GPU and it reads a, k once), the chunked one below (at M = 4096
# forward 0.48 vs 0.60 ms, backward equal; at M = 32, N = 1M 1.6 vs 70 ms).
CHUNKED_MIN_N = 2 * CHUNK
CHUNKED_MAX_M = 8192
# Time-major programs own 16x more rows (128), so rows alone fill the GPU only from 16x more
# (scaled from the row-major threshold, not measured; at 4096 rows the chunked variant is
# 4x faster, bench/bk_gpu.py "time_vs_n" has triton_time_major for the next run).
CHUNKED_MAX_M_TIME_MAJOR = 16 * CHUNKED_MAX_M
# Fewest channels for the time-major layout: a program owns 128 of them.
TIME_MAJOR_MIN_C = 16
# Rows per program of the chunk-boundary pass and maps per tile: the pass is one dependent
# Moebius (or affine) step per chunk, like the row-parallel kernels per position.
_BOUNDARY_BLOCK_M, _BOUNDARY_BLOCK_C = 8, 16


def use_chunked(m: int, n: int, time_major: bool = False) -> bool:
    """The dispatcher's rule for ``variant="auto"``: chunked iff N >= CHUNKED_MIN_N and
    M < CHUNKED_MAX_M (row-parallel when rows alone fill the GPU or N is short; the row limit
    is CHUNKED_MAX_M_TIME_MAJOR for the time-major layout)."""
    return n >= CHUNKED_MIN_N and m < (CHUNKED_MAX_M_TIME_MAJOR if time_major else CHUNKED_MAX_M)


def is_time_major(x: torch.Tensor) -> bool:
    """Whether the kernels read x (B, C, N) in place as time-major: channels adjacent (stride
    1), at least TIME_MAJOR_MIN_C of them, N > 1, at most _MAX_BATCHES batches (e.g.
    BKMixer's (B, N, C) tensors transposed). Otherwise (2-D arguments included) they use a
    row-major (B C, N) contiguous copy."""
    return (x.dim() == 3 and x.stride(1) == 1 and x.shape[1] >= TIME_MAJOR_MIN_C
            and x.shape[2] > 1 and x.shape[0] <= _MAX_BATCHES)


def output_layout(a: torch.Tensor, k: torch.Tensor) -> bool:
    """Whether :func:`forward` runs time-major on these inputs (then G and, in the backward,
    grad_a and grad_k are time-major too); shared with the custom op's fake implementation."""
    return is_time_major(a) and is_time_major(k)


def empty_like_layout(x: torch.Tensor, dtype: torch.dtype, time_major: bool) -> torch.Tensor:
    """An uninitialised tensor of x's shape in the given layout: for (B, C, N), (B, N, C)
    contiguous transposed; else contiguous."""
    if time_major:
        b, c, n = x.shape
        return torch.empty((b, n, c), dtype=dtype, device=x.device).transpose(1, 2)
    return torch.empty(x.shape, dtype=dtype, device=x.device)


def _in_layout(x: torch.Tensor, time_major: bool) -> torch.Tensor:
    """x (B, C, N) readable by the kernels in the layout: itself when it already is, else a
    copy (time-major: channels adjacent; row-major: contiguous)."""
    if time_major:
        return x if x.stride(1) == 1 else x.transpose(1, 2).contiguous().transpose(1, 2)
    return x.contiguous()


def _standard_layout(x: torch.Tensor, time_major: bool) -> torch.Tensor:
    """x (B, C, N) with exactly the strides of :func:`empty_like_layout` (itself or a copy):
    the backward reads G and grad_G and writes grad_a and grad_k with one set of strides."""
    if not time_major:
        return x.contiguous()
    _, c, n = x.shape
    if x.stride() == (n * c, 1, c):
        return x
    return empty_like_layout(x, x.dtype, True).copy_(x)


def _strides(x: torch.Tensor, time_major: bool) -> tuple[int, int]:
    """(batch stride, position stride) passed to the kernels (unused when row-major)."""
    return (x.stride(0), x.stride(2)) if time_major else (0, 1)


def _chunk_length(n: int, chunk: int | None) -> int:
    """Chunk length L: ``chunk`` if given, else CHUNK doubled until the chunks fit the grid."""
    if chunk is not None:
        if chunk < 1 or -(-n // chunk) > _MAX_CHUNKS:
            raise ValueError(f"chunk must be >= 1 and give <= {_MAX_CHUNKS} chunks for N = {n}, "
                             f"got {chunk}")
        return chunk
    length = CHUNK
    while -(-n // length) > _MAX_CHUNKS:
        length *= 2
    return length


def _plan(
    m: int, n: int, time_major: bool, variant: str, chunk: int | None, block_m: int | None,
    block_n: int | None, num_warps: int | None, backward: bool = False,
) -> tuple[int, int, int, int]:
    """(chunk length CH, BLOCK_M, BLOCK_N, num_warps); CH = n means row-parallel."""
    if variant not in ("auto", "row", "chunked"):
        raise ValueError(f"variant must be 'auto', 'row' or 'chunked', got {variant!r}")
    chunked = use_chunked(m, n, time_major) if variant == "auto" else variant == "chunked"
    length = min(_chunk_length(n, chunk), n) if chunked else n
    bm, bn, warps = _launch_config(length, time_major, backward)
    return length, block_m or bm, block_n or bn, num_warps or warps


def _check_runnable(x: torch.Tensor) -> None:
    if x.device.type != "cuda" and not _INTERPRETED:
        raise ValueError(
            "backend must be 'torch' or 'reference' for CPU tensors: 'triton' runs on CUDA "
            "tensors (on CPU only under Triton's interpreter, TRITON_INTERPRET=1 set before "
            f"import); got a tensor on {x.device}"
        )


def _as_batched(*xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(M, N) / (M, 1) arguments as (1, M, N) / (1, M, 1); (B, C, N) ones unchanged."""
    return tuple(x[None] if x.dim() == 2 else x for x in xs)


def forward(
    a: torch.Tensor, k: torch.Tensor, z: torch.Tensor, *, variant: str = "auto",
    chunk: int | None = None, block_m: int | None = None, block_n: int | None = None,
    num_warps: int | None = None,
) -> torch.Tensor:
    """G complex from a, k float32/float64 and z complex: a, k (M, N) and z (M, 1), or a, k
    (B, C, N) with any strides and z (B, C, 1) (one energy per row), G of a's shape.

    Time-major inputs (:func:`output_layout`) are read in place and give a time-major G;
    others are made contiguous. ``variant``: ``"auto"`` (:func:`use_chunked`), ``"row"`` or
    ``"chunked"``; ``chunk`` the chunk length (default CHUNK). ``block_m``, ``block_n`` (powers
    of two) and ``num_warps`` override the launch heuristic of the per-position kernels (for
    benchmarks)."""
    _check_runnable(a)
    shape = a.shape
    time_major = output_layout(a, k)  # before batching: 2-D arguments are row-major
    a, k, z = _as_batched(a, k, z)
    if a.numel() == 0:
        return empty_like_layout(a, z.dtype, time_major).reshape(shape)
    if not time_major:  # one batch of B C rows
        a, k, z = (x.reshape(1, -1, x.shape[-1]) for x in (a, k, z))
    a, k = _in_layout(a, time_major), _in_layout(k, time_major)
    nb, c, n = a.shape
    length, bm, bn, warps = _plan(nb * c, n, time_major, variant, chunk, block_m, block_n,
                                  num_warps)
    chunks = -(-n // length)
    zr = torch.view_as_real(z[..., 0])
    g = empty_like_layout(a, z.dtype, time_major)
    strides = (*_strides(a, time_major), *_strides(k, time_major))
    starts = g  # unused by the row-parallel launch (HAS_START=False)
    if chunks > 1:
        # Pass 1: the maps of chunks 0 .. C-2; pass 2: G before every chunk.
        maps = torch.empty((nb * c, 3, chunks - 1), dtype=z.dtype, device=a.device)
        _fwd_chunk_map_kernel[(triton.cdiv(c, bm), chunks - 1, nb)](
            a, k, zr, torch.view_as_real(maps), c, n, length, *strides, zr.stride(0) // 2,
            zr.stride(1) // 2, TIME_MAJOR=time_major, BLOCK_M=bm, BLOCK_N=bn, num_warps=warps,
        )
        starts = torch.zeros((nb * c, chunks), dtype=z.dtype, device=a.device)
        _boundaries(maps, starts, affine=False)
    # Pass 3 (or the whole row-parallel sweep): the recurrence from each chunk's start.
    _causal_green_fwd_kernel[(triton.cdiv(c, bm), chunks, nb)](
        a, k, zr, torch.view_as_real(starts), torch.view_as_real(g), c, n, length, *strides,
        *_strides(g, time_major), zr.stride(0) // 2, zr.stride(1) // 2,
        HAS_START=chunks > 1, TIME_MAJOR=time_major, BLOCK_M=bm, BLOCK_N=bn, num_warps=warps,
    )
    return g.reshape(shape)


def _boundaries(maps: torch.Tensor, out: torch.Tensor, *, affine: bool) -> None:
    """Pass 2 of the chunked variant: ``out`` (M, C) from the C - 1 chunk maps (M, K, C - 1)."""
    m, _, n_maps = maps.shape
    _chunk_boundary_kernel[(triton.cdiv(m, _BOUNDARY_BLOCK_M),)](
        torch.view_as_real(maps), torch.view_as_real(out), m, n_maps, AFFINE=affine,
        BLOCK_M=_BOUNDARY_BLOCK_M, BLOCK_C=_BOUNDARY_BLOCK_C, num_warps=1,
    )


def backward(
    a: torch.Tensor, k: torch.Tensor, z: torch.Tensor, g: torch.Tensor, grad_g: torch.Tensor,
    *, variant: str = "auto", chunk: int | None = None, block_m: int | None = None,
    block_n: int | None = None, num_warps: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad_a, grad_k, grad_z) from k, G and grad_G, shaped as for :func:`forward`: (M, N)
    and (M, 1), or (B, C, N) and (B, C, 1). grad_a and grad_k take G's layout (time-major when
    G is); k and grad_G are read in place when already in it, else copied.

    ``a`` and ``z`` enter only through G (unused; part of the backend contract). ``variant``,
    ``chunk`` and the overrides as for :func:`forward`."""
    del a
    _check_runnable(g)
    shape, z_shape = g.shape, z.shape
    time_major = is_time_major(g)  # before batching: 2-D arguments are row-major
    k, g, grad_g = _as_batched(k, g, grad_g)
    if g.numel() == 0:
        grad = empty_like_layout(g, k.dtype, time_major).reshape(shape)
        return grad, grad.clone(), z.new_zeros(z_shape)
    if not time_major:
        k, g, grad_g = (x.reshape(1, -1, x.shape[-1]) for x in (k, g, grad_g))
    k = _in_layout(k, time_major)
    g, grad_g = _standard_layout(g, time_major), _standard_layout(grad_g, time_major)
    nb, c, n = g.shape
    length, bm, bn, warps = _plan(nb * c, n, time_major, variant, chunk, block_m, block_n,
                                  num_warps, backward=True)
    chunks = -(-n // length)
    gr, ggr = torch.view_as_real(g), torch.view_as_real(grad_g)
    grad_a = empty_like_layout(g, k.dtype, time_major)
    grad_k = empty_like_layout(g, k.dtype, time_major)
    grad_z = torch.empty((nb * c, chunks), dtype=g.dtype, device=g.device)  # per chunk
    strides = (*_strides(k, time_major), *_strides(g, time_major))
    ends = grad_z  # unused by the row-parallel launch (HAS_END=False)
    if chunks > 1:
        # Pass 1: the affine maps of chunks 1 .. C-1; pass 2: lam after every chunk.
        maps = torch.empty((nb * c, 2, chunks - 1), dtype=g.dtype, device=g.device)
        _bwd_chunk_map_kernel[(triton.cdiv(c, bm), chunks - 1, nb)](
            k, gr, ggr, torch.view_as_real(maps), c, n, length, *strides,
            TIME_MAJOR=time_major, BLOCK_M=bm, BLOCK_N=bn, num_warps=warps,
        )
        ends = torch.zeros((nb * c, chunks), dtype=g.dtype, device=g.device)
        _boundaries(maps, ends, affine=True)
    # Pass 3 (or the whole row-parallel sweep): lam from each chunk's end, the gradients.
    _causal_green_bwd_kernel[(triton.cdiv(c, bm), chunks, nb)](
        k, gr, ggr, torch.view_as_real(ends), grad_a, grad_k, torch.view_as_real(grad_z),
        c, n, length, *strides, HAS_END=chunks > 1, TIME_MAJOR=time_major, BLOCK_M=bm,
        BLOCK_N=bn, num_warps=warps,
    )
    grad_z = grad_z.sum(dim=1, keepdim=True) if chunks > 1 else grad_z
    return grad_a.reshape(shape), grad_k.reshape(shape), grad_z.reshape(z_shape)
