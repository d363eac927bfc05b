"""Generator-represented semiseparable matrices: O(N r) matvec by prefix sums.

The (N x N) matrix A has a lower part (diagonal included) and a strictly upper part of low
rank, given by generators (sequence last, like the rest of ``resnetbk.bk``):

    A[i, j] = u_i^T v_j            (i >= j),   u, v of shape (..., r, N)
    A[i, j] = p_i^T q_j            (i <  j),   p, q of shape (..., s, N)  (or None: zero)
    A[i, i] += d_i                              d of shape (..., N)        (or None)

so that y = A x is
    y_i = u_i^T (sum_{j<=i} v_j x_j) + p_i^T (sum_{j>i} q_j x_j) + d_i x_i,
a prefix sum (``cumsum``) and an exclusive suffix sum per rank component: O(N (r + s)) work
and memory instead of O(N^2). With p = q = None, A is lower triangular: the causal case
(linear attention without normalisation is this with u = queries, v = keys times values).

Numerics (the cancellation behaviour of the prefix-sum form). y_i is computed from the running
sums S_i = sum_{j<=i} v_j x_j, so its rounding error is bounded by about
eps * sum_j G_ij |x_j| with G_ij = sum_a |u_ai| |v_aj| (componentwise in the generators), not by
eps * sum_j |A_ij| |x_j| as for a dense product. The two agree when the generators are
balanced (|u_i^T v_j| ~ sum_a |u_ai||v_aj|, e.g. rank 1). They differ when A's entries are small
differences of large generator products: rank > 1 generators whose products cancel lose
log10(G_ij / |A_ij|) digits (tests: u_i = (w_i, w_i), v_j = (B z_j, y_j - B z_j) loses
log10(B)). A rank-1 decaying kernel A_ij = exp(-lam (i - j)) written as u_i = exp(-lam i),
v_j = exp(lam j) stays accurate but overflows once lam N > ~88 (float32) or ~709 (float64).
Chunking the cumsum would not help either case (the damage is in the generators, and torch's
CPU cumsum already accumulates float32 in float64, so the running sum itself adds no O(N eps)
growth; a CUDA scan is a tree, O(log N)), so no chunked variant is offered. Such kernels need
the sequentially semiseparable form with per-step transitions,
A_ij = u_i^T a_i a_{i-1} ... a_{j+1} v_j, evaluated as a scan (not implemented here).
Measured float32 constants are in tests/bk/test_semiseparable.py.

Source: R. Vandebril, M. Van Barel, N. Mastronardi, "Matrix Computations and Semiseparable
Matrices", vol. 1 (2008), ch. 1 and 8 (generator representation, O(N) products).
"""

from __future__ import annotations

import torch

from resnetbk.bk.toeplitz import batch_shape, check_sequence, compute_dtype

__all__ = ["semiseparable_matvec", "semiseparable_to_dense"]


def _validate(
    u: torch.Tensor,
    v: torch.Tensor,
    p: torch.Tensor | None,
    q: torch.Tensor | None,
    x: torch.Tensor | None,
    d: torch.Tensor | None,
) -> tuple[list[torch.Tensor | None], torch.dtype, int]:
    """Check shapes; return ([u, v, p, q, x, d] in the compute dtype, result dtype, N)."""
    check_sequence("u", u, min_dim=2)
    check_sequence("v", v, min_dim=2)
    if (p is None) != (q is None):
        raise ValueError("p and q must be given together (or both None for a lower-triangular A)")
    if u.shape[-2:] != v.shape[-2:]:
        raise ValueError(f"u{tuple(u.shape)} and v{tuple(v.shape)} must both be (..., r, N)")
    n = u.shape[-1]
    matrices = {"u": u, "v": v}
    if p is not None and q is not None:
        check_sequence("p", p, min_dim=2)
        check_sequence("q", q, min_dim=2)
        if p.shape[-2:] != q.shape[-2:] or p.shape[-1] != n:
            raise ValueError(f"p{tuple(p.shape)} and q{tuple(q.shape)} must both be (..., s, N) "
                             f"with N = {n} from u{tuple(u.shape)}")
        matrices.update(p=p, q=q)
    vectors = {}
    for name, t in (("x", x), ("d", d)):
        if t is not None:
            check_sequence(name, t)
            if t.shape[-1] != n:
                raise ValueError(f"{name}{tuple(t.shape)} must have last dimension N = {n} "
                                 f"(from u{tuple(u.shape)})")
            vectors[name] = t[..., None, :]  # a rank axis, to broadcast against the generators
    batch_shape({**matrices, **vectors}, trailing=2)
    present = [t for t in (u, v, p, q, x, d) if t is not None]
    out_dtype, dtype = compute_dtype(*present)
    cast = [None if t is None else t.to(dtype) for t in (u, v, p, q, x, d)]
    return cast, out_dtype, n


def semiseparable_matvec(
    u: torch.Tensor,
    v: torch.Tensor,
    p: torch.Tensor | None,
    q: torch.Tensor | None,
    x: torch.Tensor,
    d: torch.Tensor | None = None,
) -> torch.Tensor:
    """y = A x for the generator-represented semiseparable A (see the module docstring).

    y_i = u_i^T cumsum_{j<=i}(v_j x_j) + p_i^T sum_{j>i}(q_j x_j) + d_i x_i, in O(N (r + s)).
    The suffix sum is an inclusive reverse cumsum shifted by one, not total minus prefix, so
    the upper part adds no cancellation of its own. Differentiable through torch autograd.

    Args:
        u, v: (..., r, N) lower generators (diagonal included).
        p, q: (..., s, N) strictly upper generators, or both None (lower-triangular A).
        x: (..., N).
        d: (..., N) extra diagonal, or None.

    Returns: (..., N), batch shapes broadcast, dtype promoted (half types computed in float32).
    """
    (u, v, p, q, x, d), out_dtype, _ = _validate(u, v, p, q, x, d)
    xr = x[..., None, :]
    y = (u * torch.cumsum(v * xr, dim=-1)).sum(-2)
    if p is not None:
        suffix = torch.cumsum((q * xr).flip(-1), dim=-1).flip(-1)  # sum_{j >= i}
        exclusive = torch.nn.functional.pad(suffix[..., 1:], (0, 1))  # sum_{j > i}
        y = y + (p * exclusive).sum(-2)
    if d is not None:
        y = y + d * x
    return y.to(out_dtype)


def semiseparable_to_dense(
    u: torch.Tensor,
    v: torch.Tensor,
    p: torch.Tensor | None = None,
    q: torch.Tensor | None = None,
    d: torch.Tensor | None = None,
) -> torch.Tensor:
    """The dense (..., N, N) matrix A of the generators (O(N^2 (r + s)); for tests)."""
    (u, v, p, q, _, d), out_dtype, n = _validate(u, v, p, q, None, d)
    lower = torch.ones(n, n, dtype=torch.bool, device=u.device).tril()
    a = torch.where(lower, u.transpose(-1, -2) @ v, 0)
    if p is not None:
        a = a + torch.where(lower, 0, p.transpose(-1, -2) @ q)
    if d is not None:
        a = a + torch.diag_embed(d)
    return a.to(out_dtype)
