"""BK-Core Green's functions of a tridiagonal Hamiltonian: causal (leading-block) and full.

H is tridiagonal with real diagonal ``a`` and couplings whose products ``k_t = b_t c_t >= 0``
join sites t and t+1; ``z`` is a complex energy with ``Im z > 0``.

* :func:`causal_green` gives ``G_t = [(H_{0..t} - z)^{-1}]_{t,t}``, the Green's function of the
  leading (t+1)x(t+1) block, for every t. It depends on positions <= t only: the form a
  language model may use.
* :func:`resolvent_diag` gives ``diag((H - z)^{-1})`` of the whole chain. It is NON-CAUSAL.

The causal recursion is the continued fraction

    r_0 = a_0 - z,   r_t = (a_t - z) - k_{t-1} / r_{t-1},   G_t = 1 / r_t,

(r_t = det(H_{0..t} - z) / det(H_{0..t-1} - z)), i.e. the projective action of the 2x2 transfer
matrices ``M_t = [[a_t - z, -k_{t-1}], [1, 0]]`` on (r, 1): ``(r_t, 1) ~ M_t (r_{t-1}, 1)``.
Matrix products are associative, so the recursion runs as a scan. For real a, k >= 0 and
Im z > 0 every map r -> (a - z) - k/r sends the lower half-plane into {Im r <= -Im z}, so
Im r_t <= -Im z and ``|G_t| <= 1/Im z``; the same fact makes the scan forward-stable (the maps
are contractions of the lower half-plane, so errors in a chunk's start state are forgotten).

Backends: ``"reference"`` (float64 sequential loop, the oracle), ``"torch"`` (chunked scan below)
and, through ``_BACKENDS``, any later kernel with the same forward/backward contract.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from resnetbk.debug import debug_enabled

__all__ = ["causal_green", "causal_green_reference", "resolvent_diag"]

_COMPLEX = {torch.float32: torch.complex64, torch.float64: torch.complex128}

# A backend maps inputs a (B, C, N), k (B, C, N) real and z (B, C, 1) complex (any strides:
# B C independent rows, C the last batch dimension, e.g. channels) to G (B, C, N) in any
# layout; its backward maps (a, k, z, G, grad_G) to (grad_a, grad_k (B, C, N), grad_z
# (B, C, 1)) in PyTorch's conjugate-Wirtinger convention. A Triton kernel registers a pair
# here and inherits validation, broadcasting and the autograd wiring of ``_CausalGreen``.
Forward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Backward = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    tuple[torch.Tensor, torch.Tensor, torch.Tensor],
]


# ----------------------------------------------------------------------------- validation


def _as_energy(z: complex | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """z as a tensor of the complex dtype matching ``like`` (a Python number is converted)."""
    want = _COMPLEX[like.dtype]
    if not isinstance(z, torch.Tensor):
        return torch.tensor(complex(z), dtype=want, device=like.device)
    if z.dtype != want:
        raise ValueError(f"z must be {want} for {like.dtype} inputs, got {z.dtype}")
    if z.device != like.device:
        raise ValueError(f"z is on {z.device}, the other inputs on {like.device}")
    if z.dim() > 0 and z.shape[-1] != 1:
        raise ValueError(
            "z is one energy per channel: its last dimension must be 1 (broadcast over "
            f"positions), got shape {tuple(z.shape)}"
        )
    return z


def _check_real(name: str, x: object, like: torch.Tensor | None) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _COMPLEX:
        raise ValueError(f"{name} must be float32 or float64, got {x.dtype}")
    if x.dim() < 1:
        raise ValueError(f"{name} must have a last (position) dimension, got a 0-dim tensor")
    if like is not None and (x.dtype != like.dtype or x.device != like.device):
        raise ValueError(
            f"{name} is {x.dtype} on {x.device}, expected {like.dtype} on {like.device}"
        )


def _check_energy_sign(z: torch.Tensor) -> None:
    # One reduction over z: negligible next to the scan. (On a GPU it synchronises once.)
    if not bool((z.imag > 0).all()):
        raise ValueError("z must have Im z > 0 (retarded Green's function) everywhere")


def _batch_shape(*shapes: torch.Size) -> torch.Size:
    try:
        return torch.broadcast_shapes(*shapes)
    except RuntimeError as err:
        raise ValueError(f"batch shapes {[tuple(s) for s in shapes]} do not broadcast") from err


def _validate_causal(
    a: torch.Tensor, k: torch.Tensor, z: complex | torch.Tensor, check_values: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Size]:
    _check_real("a", a, None)
    _check_real("k", k, a)
    if a.shape[-1] != k.shape[-1] or a.shape[-1] == 0:
        raise ValueError(
            f"a and k need the same, non-zero last (position) dimension, got a{tuple(a.shape)}"
            f" and k{tuple(k.shape)}"
        )
    zt = _as_energy(z, a)
    batch = _batch_shape(a.shape[:-1], k.shape[:-1], zt.shape[:-1])
    if not (check_values or debug_enabled()):
        return a, k, zt, batch
    # A reduction over k (cheap next to the scan): negative couplings break |G| <= 1/Im z and
    # allow r_t = 0 (a pole of G on the real axis is then reachable).
    if not bool((k >= 0).all()):
        what = "NaN entries" if bool(k.isnan().any()) else "negative entries"
        raise ValueError(
            f"k must be >= 0 everywhere (k_t = b_t c_t couples sites t and t+1); it has {what}")
    _check_energy_sign(zt)
    return a, k, zt, batch


# ----------------------------------------------------------------------------- reference


def causal_green_reference(
    a: torch.Tensor, k: torch.Tensor, z: complex | torch.Tensor
) -> torch.Tensor:
    """The oracle: ``r_t = (a_t - z) - k_{t-1} G_{t-1}``, ``G_t = 1/r_t`` (``G_{-1} = 0``) in a
    Python loop over positions, vectorised over the batch, in float64/complex128.

    Inputs as for :func:`causal_green`; the result is complex128 whatever the input dtype.
    Differentiable by ordinary autograd (its tape is O(N) tensors: for tests and small N).
    """
    a, k, zt, batch = _validate_causal(a, k, z)
    n = a.shape[-1]
    # unbind, not d[..., t]: the backward of unbind is one stack, that of N selects is O(N^2).
    d = (a.to(torch.float64) - zt.to(torch.complex128)).expand(*batch, n).unbind(-1)
    kp = k.to(torch.float64).expand(*batch, n).unbind(-1)  # kp[t - 1] = k_{t-1}
    g = torch.reciprocal(d[0])
    out = [g]
    for t in range(1, n):
        g = torch.reciprocal(d[t] - kp[t - 1] * g)
        out.append(g)
    return torch.stack(out, dim=-1)


# ----------------------------------------------------------------------------- torch backend
#
# Design (measured on CPU, see bench/bk_cpu.py and docs/BK.md). A Hillis-Steele / Blelloch
# scan over all N positions does O(N log N) work in ~log2(N) levels of full-size elementwise
# passes: at 64 x 64K that is 16 levels of ~20 ops over 4M complex entries, memory-bound
# (measured, float32, 1 thread: 12.4 s, against 0.27 s for the design below). A plain loop over
# N costs N python-level launches of tiny ops (~3 x 64K; bench/bk_cpu.py "loop f64").
# The chunked design of Mamba-2's SSD does O(N) work in ~(c1 L + c2 N/L) launches, each over
# M * N/L elements: chunks of length L ~ sqrt(N) are scanned *within* sequentially (vectorised
# over batch and chunks), the chunk summaries *across* chunks sequentially (vectorised over
# batch), then each chunk is re-run from its start state. Inputs are transposed once to
# (M, L, C), so that step t of every chunk is a slab of M contiguous rows of C (a last-two-dims
# transpose, measured ~3x faster on CPU than the (L, M, C) permutation).
#
# Forward:
#   1. within each chunk, its transfer matrix P_c = M_end ... M_start, kept projectively
#      normalised as [[w, beta], [1, delta]] (dividing by the (1, 0) entry each step; the
#      Moebius map of P does not depend on the scale, so no log-scale needs carrying for G);
#   2. across chunks, G just before each chunk, by the Moebius maps of the P_c;
#   3. within each chunk, the exact continued fraction from that start value.
# Step 3 computes the same recursion as the reference (chunk 0 is bit-identical to it).
#
# Backward: the adjoint of r is a first-order linear recurrence run in reverse (see
# _backward_torch); its chunked form stores per position the affine map to the chunk end,
# scans chunk boundaries sequentially, then finishes with one vectorised multiply-add. The
# products of its coefficients are derivatives of compositions of the maps above and so are
# bounded (Schwarz-Pick: |d r_s / d r_t| <= |Im r_s| / |Im r_t|); no renormalisation needed.


def _chunk_length(n: int) -> int:
    """Chunk length L: the power of two nearest sqrt(n/2) (no padding when n is a power of
    two). It balances ~8 launches per within-chunk step against ~5 per across-chunk step;
    among L = sqrt(n * f), f in {1/4, 1/2, 1, 2, 4}, f = 1/2..2 were fastest (within noise)."""
    return 2 ** max(0, round(math.log2(math.sqrt(n / 2)))) if n > 1 else 1


def _to_chunks(x: torch.Tensor, length: int) -> torch.Tensor:
    """(M, N) -> (M, L, C), zero-padded at the end: [m, t, c] is position c L + t."""
    chunks = -(-x.shape[-1] // length)
    pad = length * chunks - x.shape[-1]
    x = F.pad(x, (0, pad)) if pad else x
    return x.reshape(x.shape[0], chunks, length).transpose(1, 2).contiguous()


def _from_chunks(x: torch.Tensor, n: int) -> torch.Tensor:
    """(M, L, C) -> (M, N), dropping the padding."""
    m, length, chunks = x.shape
    return x.transpose(1, 2).reshape(m, chunks * length)[:, :n]


def _previous_coupling(k: torch.Tensor, t: int) -> torch.Tensor:
    """k_{s-1} at step t of every chunk (s = c L + t) from chunked k (M, L, C); 0 at s = 0.

    Read per step instead of materialising a shifted copy of k (one full pass fewer)."""
    if t > 0:
        return k[:, t - 1]
    return F.pad(k[:, -1, :-1], (1, 0))


def _forward_torch(a: torch.Tensor, k: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """G (M, N) from a, k (M, N) and z (M, 1) by the chunked scan described above."""
    m, n = a.shape
    length = _chunk_length(n)
    d = _to_chunks(a, length) - z.reshape(m, 1, 1)  # a_t - z, (M, L, C) complex
    k = _to_chunks(k, length)
    chunks = d.shape[-1]

    # 1. Chunk maps P_c = M_end ... M_start = [[w, beta], [1, delta]] up to scale: after the
    #    first step P = [[d, -k], [1, 0]], and M_t P = [[d w - k, d beta - k delta],
    #    [w, beta]] is divided by its (1, 0) entry w. Then w is the continued fraction started
    #    from G = 0 (so |w| >= Im z), and (beta, delta) is column 1 scaled by column 0's second
    #    entry: both columns move towards the same projective point, so it stays bounded.
    w = d[:, 0].clone()
    beta = -_previous_coupling(k, 0).to(d.dtype)
    delta = torch.zeros_like(w)
    inv_w = torch.empty_like(w)
    tmp = torch.empty_like(w)
    for t in range(1, length):
        kp, dt = k[:, t - 1], d[:, t]
        torch.reciprocal(w, out=inv_w)
        torch.mul(dt, beta, out=tmp)
        tmp.sub_(kp * delta)  # d beta - k delta
        delta = beta.mul_(inv_w)  # beta / w (in beta's buffer)
        beta = tmp.mul(inv_w)
        torch.sub(dt, kp * inv_w, out=w)  # d - k / w

    # 2. G just before each chunk, from G_{-1} = 0: with g = 1/r the chunk maps
    #    r -> (w r + beta) / (r + delta) read g -> (1 + delta g) / (w + beta g).
    starts = torch.empty(chunks, m, dtype=d.dtype, device=d.device)
    g = torch.zeros(m, dtype=d.dtype, device=d.device)
    for c in range(chunks):
        starts[c] = g
        g = (1 + delta[:, c] * g) / (w[:, c] + beta[:, c] * g)
    g = starts.T.contiguous()  # (M, C)

    # 3. the continued fraction within each chunk from its start value.
    out = torch.empty_like(d)
    for t in range(length):
        g_t = out[:, t]
        torch.mul(_previous_coupling(k, t), g, out=g_t)
        torch.sub(d[:, t], g_t, out=g_t)
        torch.reciprocal(g_t, out=g_t)
        g = g_t
    return _from_chunks(out, n)


def _backward_torch(
    a: torch.Tensor, k: torch.Tensor, z: torch.Tensor, g: torch.Tensor, grad_g: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact vector-Jacobian product of the causal Green's function.

    With G_t = 1/r_t, r_t = (a_t - z) - k_{t-1}/r_{t-1} and every map holomorphic, PyTorch's
    gradient of a real loss w.r.t. r_t is conj(lam_t) where (dG_t/dr_t = -G_t^2,
    dr_{t+1}/dr_t = k_t G_t^2)

        lam_t = k_t G_t^2 lam_{t+1} - conj(grad_G_t) G_t^2,   lam_N = 0,

    and then, from dr_t/da_t = 1, dr_t/dz = -1, dr_{t+1}/dk_t = -G_t:

        grad_a_t = Re lam_t,   grad_z = -conj(sum_t lam_t),   grad_k_t = -Re(lam_{t+1} G_t)

    (grad_k_{N-1} = 0: the last coupling is unused). ``a`` and ``z`` enter only through G.
    """
    del a, z
    m, n = g.shape
    length = _chunk_length(n)
    gc = _to_chunks(g, length)  # (M, L, C); the padding has grad_G = 0, hence lam = 0
    ggc = _to_chunks(grad_g, length)
    kc = _to_chunks(k, length)

    # 1. per position, lam_t = A_t lam_end + B_t with lam_end = lam at the next chunk's start;
    #    alpha_t = k_t G_t^2 and beta_t = -conj(grad_G_t) G_t^2 are formed per step (no
    #    full-size temporaries).
    coef = torch.empty_like(gc)
    offs = torch.empty_like(gc)
    coef_next = torch.ones_like(gc[:, 0])
    offs_next = torch.zeros_like(gc[:, 0])
    g2 = torch.empty_like(gc[:, 0])
    for t in range(length - 1, -1, -1):
        coef_t, offs_t = coef[:, t], offs[:, t]
        torch.mul(gc[:, t], gc[:, t], out=g2)
        torch.mul(ggc[:, t].conj(), g2, out=offs_t)
        alpha = g2.mul_(kc[:, t])
        torch.mul(alpha, coef_next, out=coef_t)
        offs_t.neg_().add_(alpha * offs_next)
        coef_next, offs_next = coef_t, offs_t

    # 2. lam at each chunk's end, backwards across chunks (lam = 0 after the last one).
    chunks = gc.shape[-1]
    ends = torch.zeros(m, chunks, dtype=g.dtype, device=g.device)
    for c in range(chunks - 1, 0, -1):
        ends[:, c - 1] = coef[:, 0, c] * ends[:, c] + offs[:, 0, c]

    # 3. every lam at once.
    lam = _from_chunks(offs.add_(coef.mul_(ends[:, None])), n)
    grad_a = lam.real.contiguous()
    grad_k = F.pad((lam[:, 1:] * g[:, :-1]).real, (0, 1)).neg_()
    grad_z = lam.sum(dim=-1, keepdim=True).conj_physical().neg_()
    return grad_a, grad_k, grad_z


def _forward_torch_rows(a: torch.Tensor, k: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The torch backend on the (B, C, N) contract: the scan runs on (B C, N) rows."""
    n = a.shape[-1]
    g = _forward_torch(a.reshape(-1, n).contiguous(), k.reshape(-1, n).contiguous(),
                       z.reshape(-1, 1))
    return g.reshape(a.shape)


def _backward_torch_rows(
    a: torch.Tensor, k: torch.Tensor, z: torch.Tensor, g: torch.Tensor, grad_g: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n = a.shape[-1]
    grads = _backward_torch(*(x.reshape(-1, n).contiguous() for x in (a, k)), z.reshape(-1, 1),
                            *(x.reshape(-1, n).contiguous() for x in (g, grad_g)))
    return tuple(x.reshape(shape) for x, shape in zip(grads, (a.shape, a.shape, z.shape),
                                                      strict=True))


_BACKENDS: dict[str, tuple[Forward, Backward]] = {
    "torch": (_forward_torch_rows, _backward_torch_rows)
}


# The Triton backend's two passes as torch.library custom ops: torch.compile keeps them as
# opaque calls (a model compiled whole stays one graph; Dynamo never traces the launch code).
# Their outputs' layout depends on the inputs' (time-major inputs give time-major outputs):
# the fake implementations reproduce it, since compiled code relies on the fake strides.
@torch.library.custom_op("resnetbk::causal_green_forward", mutates_args=())
def _forward_triton(a: torch.Tensor, k: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    # Imported on first use: importing triton costs ~1 s and must not be needed on CPU.
    from resnetbk.bk.causal_green_triton import forward

    return forward(a, k, z)


@_forward_triton.register_fake
def _(a: torch.Tensor, k: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    from resnetbk.bk.causal_green_triton import empty_like_layout, output_layout

    return empty_like_layout(a, z.dtype, output_layout(a, k))


@torch.library.custom_op("resnetbk::causal_green_backward", mutates_args=())
def _backward_triton(
    a: torch.Tensor, k: torch.Tensor, z: torch.Tensor, g: torch.Tensor, grad_g: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from resnetbk.bk.causal_green_triton import backward

    return backward(a, k, z, g, grad_g)


@_backward_triton.register_fake
def _(a: torch.Tensor, k: torch.Tensor, z: torch.Tensor, g: torch.Tensor,
      grad_g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from resnetbk.bk.causal_green_triton import empty_like_layout, is_time_major

    time_major = is_time_major(g)
    return (empty_like_layout(g, k.dtype, time_major), empty_like_layout(g, k.dtype, time_major),
            g.new_empty(z.shape))


if importlib.util.find_spec("triton") is not None:
    _BACKENDS["triton"] = (_forward_triton, _backward_triton)


class _CausalGreen(torch.autograd.Function):
    """Broadcasts to (B, C, N) / (B, C, 1) (C the last batch dimension: views where the
    inputs allow, so a time-major (B, N, C) tensor seen as (B, C, N) reaches the backend in
    place), runs a backend, saves only inputs and G."""

    @staticmethod
    def forward(
        ctx: Any, a: torch.Tensor, k: torch.Tensor, z: torch.Tensor, batch: torch.Size,
        backend: str,
    ) -> torch.Tensor:
        a3, k3, z3 = _rows(a, k, z, batch)
        g3 = _BACKENDS[backend][0](a3, k3, z3)
        ctx.save_for_backward(a, k, z, g3)
        ctx.batch, ctx.backend = batch, backend
        return g3.reshape(*batch, a.shape[-1])

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        a, k, z, g3 = ctx.saved_tensors
        a3, k3, z3 = _rows(a, k, z, ctx.batch)
        ga, gk, gz = _BACKENDS[ctx.backend][1](a3, k3, z3, g3, grad_g.reshape(g3.shape))
        n = a.shape[-1]
        need_a, need_k, need_z = ctx.needs_input_grad[:3]
        return (
            ga.reshape(*ctx.batch, n).sum_to_size(a.shape) if need_a else None,
            gk.reshape(*ctx.batch, n).sum_to_size(k.shape) if need_k else None,
            gz.reshape(*ctx.batch, 1).sum_to_size(z.shape) if need_z else None,
            None,
            None,
        )


def _rows(a: torch.Tensor, k: torch.Tensor, z: torch.Tensor,
          batch: torch.Size) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """a, k broadcast to (*batch, N) and z to (*batch, 1), as (B, C, N) / (B, C, 1)."""
    n = a.shape[-1]
    b, c = math.prod(batch[:-1]), batch[-1] if batch else 1  # explicit: C may be 0
    return (a.expand(*batch, n).reshape(b, c, n), k.expand(*batch, n).reshape(b, c, n),
            z.expand(*batch, 1).reshape(b, c, 1))


def causal_green(
    a: torch.Tensor, k: torch.Tensor, z: complex | torch.Tensor, *, backend: str = "auto",
    check_values: bool = True,
) -> torch.Tensor:
    """Causal Green's function ``G_t = [(H_{0..t} - z)^{-1}]_{t,t}`` for every position t.

    ``G_t = 1/r_t`` with ``r_0 = a_0 - z`` and ``r_t = (a_t - z) - k_{t-1} / r_{t-1}``.

    Args:
        a: real diagonal, (..., N), float32 or float64.
        k: real couplings ``k_t = b_t c_t >= 0`` joining sites t and t+1, (..., N), same dtype.
            ``k[..., N-1]`` is unused (there is no site N); it gets a zero gradient.
        z: energy with ``Im z > 0``: a Python complex, or a tensor of the matching complex
            dtype (complex64 for float32) with last dimension 1 (one energy per channel, e.g.
            (C, 1) against (B, C, N)) or 0-dim.
        backend: ``"auto"`` (``"triton"`` for CUDA tensors when triton is installed, else
            ``"torch"``), ``"torch"`` (chunked O(N) scan with exact adjoint backward),
            ``"triton"`` (chunked scan kernels, CUDA; ``bk/causal_green_triton.py``; reads
            inputs whose second-to-last dimension has stride 1 in place, e.g. (B, N, C)
            tensors passed as ``x.transpose(1, 2)``, and returns G in that layout),
            ``"reference"`` (float64 loop, cast back; slow).
        check_values: check ``k >= 0`` and ``Im z > 0`` (below). The host must read each
            check's result: on a GPU that synchronises with the device and stalls the queue of
            a training step. Pass False where the inputs hold them by construction (``BKMixer``:
            k = softplus, Im z = softplus + a floor); debug mode (``resnetbk.debug``) checks
            anyway. Shapes, dtypes and devices are always checked (no synchronisation).

    Returns:
        Complex tensor of shape broadcast(a, k, z)[..., N], dtype complex64/complex128.
        Causal: G_t depends on a_s, k_s for s <= t only (k_{t} is not read for G_t either).
        ``|G_t| <= 1/Im z`` (a theorem for k >= 0, Im z > 0).

    Raises:
        ValueError: wrong type/dtype/device/shape, any ``k < 0`` or ``Im z <= 0`` (the last two
        cost one reduction each, cheap next to the scan, unless ``check_values=False``),
        unknown backend.

    Accuracy (measured, docs/BK.md "Accuracy"): complex128 matches dense inverses and the
    sequential loop to <= 4e-13 relative (tested 1e-10). complex64 vs complex128 on the same
    inputs: ``max |G32 - G64| * Im z`` up to 3.8e-4 seen for N <= 2^17 and Im z >= 1e-3 (tested
    bound 2e-3; 5e-3 at N = 10^6), the same as a sequential float32 loop: the error is the
    problem's float32 conditioning (|dG/da| reaches 1/Im z^2), not the scan's.
    """
    if backend == "auto":
        on_cuda = isinstance(a, torch.Tensor) and a.is_cuda
        backend = "triton" if on_cuda and "triton" in _BACKENDS else "torch"
    if backend == "reference":
        a, k, zt, _ = _validate_causal(a, k, z)
        return causal_green_reference(a, k, zt).to(zt.dtype)
    if backend not in _BACKENDS:
        raise ValueError(
            f"backend must be 'auto', 'reference' or one of {sorted(_BACKENDS)}, got {backend!r}"
        )
    a, k, zt, batch = _validate_causal(a, k, z, check_values)
    return _CausalGreen.apply(a, k, zt, batch, backend)


# ----------------------------------------------------------------------------- full resolvent


def resolvent_diag(
    a: torch.Tensor,
    b: torch.Tensor,
    c: torch.Tensor,
    z: complex | torch.Tensor,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """Diagonal of the full resolvent ``diag((H - z)^{-1})`` of a tridiagonal H. NON-CAUSAL.

    **Every output depends on the whole sequence, future included: never use this inside a
    language model** (use :func:`causal_green`). It is for physics users.

    With the forward ratios ``r_i = theta_i / theta_{i-1}`` (leading-block determinants,
    ``r_i = (a_i - z) - k_{i-1}/r_{i-1}``) and backward ratios ``u_i = phi_i / phi_{i+1}``
    (trailing-block determinants, ``u_i = (a_i - z) - k_i/u_{i+1}``), ``k_i = b_i c_i``:

        G_ii = theta_{i-1} phi_{i+1} / theta_{N-1} = 1 / (r_i - k_i / u_{i+1})
             = Gf_i / (1 - k_i Gf_i Gb_{i+1}),

    where ``Gf = 1/r`` is :func:`causal_green` of the chain and ``Gb = 1/u`` that of the
    reversed chain. Ratios, never raw determinants, so nothing overflows for large N, and
    ``Im r_i <= -Im z``, ``Im(-k_i/u_{i+1}) <= 0`` add without cancellation: ``|G_ii| <= 1/Im z``.
    The gradient is exact: autograd through the two causal scans (each with its adjoint-scan
    backward) and O(N) elementwise ops; memory stays O(N).

    Args:
        a: real diagonal (..., N), float32 or float64.
        b: super-diagonal ``H[i, i+1]`` (..., N-1), same dtype.
        c: sub-diagonal ``H[i+1, i]`` (..., N-1), same dtype; ``b * c >= 0`` everywhere.
        z: as in :func:`causal_green`.
        backend: as in :func:`causal_green`.

    Returns:
        Complex tensor broadcast(a, b, c, z)[..., N].
    """
    _check_real("a", a, None)
    _check_real("b", b, a)
    _check_real("c", c, a)
    n = a.shape[-1]
    if n == 0 or b.shape[-1] != n - 1 or c.shape[-1] != n - 1:
        raise ValueError(
            "b and c need last dimension N-1 for a of last dimension N >= 1, got "
            f"a{tuple(a.shape)}, b{tuple(b.shape)}, c{tuple(c.shape)}"
        )
    k = b * c
    if not bool((k >= 0).all()):
        raise ValueError("b * c must be >= 0 everywhere (products of the off-diagonals of H)")
    k = F.pad(k, (0, 1))  # k_{N-1} = 0: no site N
    k_rev = F.pad(k[..., :-1].flip(-1), (0, 1))  # couplings of the reversed chain
    gf = causal_green(a, k, z, backend=backend)
    gb = causal_green(a.flip(-1), k_rev, z, backend=backend).flip(-1)
    gb_next = F.pad(gb[..., 1:], (0, 1))  # Gb_{i+1}, 0 past the end (its k_{N-1} is 0 anyway)
    return gf / (1 - k * gf * gb_next)
