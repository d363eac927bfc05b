"""Toeplitz operators against scipy (matmul_toeplitz, solve_toeplitz) and dense float64 algebra.

Float32 bounds, relative to the float64 result (measured over 100 seeds, asserted with a 3-4x
margin); normwise, since FFT rounding is:
- toeplitz_matvec, N = 1000: |y32 - y64|_inf <= 1e-7 |(c, r)|_2 |x|_2, measured max 3.3e-8.
- causal_conv, N = 2048, fft or direct: |y32 - y64|_inf <= 5e-7 |h|_2 |x|_2, measured 1.9e-7.
- solve_toeplitz, N = 300, diagonally dominant T (cond_inf < 5): |x32 - x64|_inf / |x64|_inf
  <= 1e-5, measured max 2.4e-6 (40 seeds x 16 systems).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg as sl
import torch

from resnetbk.bk import (
    ToeplitzConvergenceError,
    block_toeplitz_matvec,
    causal_conv,
    solve_toeplitz,
    solve_toeplitz_cg,
    toeplitz_matvec,
    toeplitz_to_dense,
)

F64 = torch.float64
MATVEC_F32_BOUND = 1e-7
CONV_F32_BOUND = 5e-7
SOLVE_F32_BOUND = 1e-5


def randn(gen: torch.Generator, *shape: int, dtype: torch.dtype = F64) -> torch.Tensor:
    if dtype.is_complex:
        real = torch.randn(*shape, 2, generator=gen, dtype=F64)
        return torch.view_as_complex(real).to(dtype)
    return torch.randn(*shape, generator=gen, dtype=F64).to(dtype)


def dominant(
    gen: torch.Generator, *shape: int, dtype: torch.dtype = F64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (c, r) with |t_0| = 1.5 * sum |t_k|, k != 0: strictly diagonally dominant, so every
    leading block is nonsingular and T is well conditioned (cond_inf < 5)."""
    c, r = randn(gen, *shape, dtype=dtype), randn(gen, *shape, dtype=dtype)
    off = c[..., 1:].abs().sum(-1) + r[..., 1:].abs().sum(-1)
    c[..., 0] = 1.5 * off + 1.0
    r[..., 0] = c[..., 0]
    return c, r


def per_batch_scipy(fn, c: torch.Tensor, r: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """scipy has no batch: loop over the (broadcast) leading dims."""
    c, r, b = (t.numpy() for t in torch.broadcast_tensors(c, r, b))
    out = [fn((ci, ri), bi) for ci, ri, bi in zip(c.reshape(-1, c.shape[-1]),
                                                  r.reshape(-1, r.shape[-1]),
                                                  b.reshape(-1, b.shape[-1]), strict=True)]
    return np.stack(out).reshape(b.shape)


# ----------------------------------------------------------------------------- matvec


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("n", [1, 2, 17, 64, 300])
def test_matvec_matches_scipy(gen: torch.Generator, dtype: torch.dtype, n: int) -> None:
    c, r, x = (randn(gen, 3, n, dtype=dtype) for _ in range(3))
    y = toeplitz_matvec(c, r, x)
    ref = per_batch_scipy(sl.matmul_toeplitz, c, r, x)
    scale = (c.abs().sum(-1) + r.abs().sum(-1)).max() * x.abs().max()
    assert y.dtype == dtype
    assert np.abs(y.numpy() - ref).max() <= 1e-14 * n * float(scale)


def test_matvec_broadcasting_and_columns(gen: torch.Generator) -> None:
    """Batch shapes broadcast; several columns go as (..., M, N) against c of (..., 1, N)."""
    n, m = 12, 5
    c, r = randn(gen, 4, 1, n), randn(gen, 4, 1, n)
    x = randn(gen, m, n)
    y = toeplitz_matvec(c, r, x)
    assert y.shape == (4, m, n)
    dense = toeplitz_to_dense(c[:, 0], r[:, 0])  # (4, N, N)
    ref = torch.einsum("bij,mj->bmi", dense, x)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    # the Hermitian default r = conj(c)
    cc = randn(gen, n, dtype=torch.complex128)
    cc[0] = cc[0].real.clone()
    xc = randn(gen, n, dtype=torch.complex128)
    dense_h = toeplitz_to_dense(cc)
    torch.testing.assert_close(dense_h, dense_h.mH)
    torch.testing.assert_close(toeplitz_matvec(cc, None, xc), dense_h @ xc)


def test_to_dense_matches_scipy(gen: torch.Generator) -> None:
    c, r = randn(gen, 7), randn(gen, 7)
    np.testing.assert_array_equal(toeplitz_to_dense(c, r).numpy(), sl.toeplitz(c, r))


def test_r0_is_ignored_and_gets_zero_gradient(gen: torch.Generator) -> None:
    """Decision (module docstring): the diagonal is c[0]; r[0] is ignored, as in scipy."""
    n = 9
    c, r, x = randn(gen, n), randn(gen, n), randn(gen, n)
    r2 = r.clone()
    r2[0] = c[0] + 123.0
    torch.testing.assert_close(toeplitz_matvec(c, r, x), toeplitz_matvec(c, r2, x), rtol=0,
                               atol=1e-12)
    c2, r2 = dominant(gen, n)
    r3 = r2.clone()
    r3[0] = -7.0
    torch.testing.assert_close(solve_toeplitz(c2, r2, x), solve_toeplitz(c2, r3, x), rtol=0,
                               atol=0)
    r.requires_grad_()
    toeplitz_matvec(c, r, x).sum().backward()
    assert r.grad[0] == 0
    r2.requires_grad_()
    solve_toeplitz(c2, r2, x).sum().backward()
    assert r2.grad[0] == 0


def test_matvec_float32_bound(gen: torch.Generator) -> None:
    n = 1000
    c, r, x = randn(gen, 8, n), randn(gen, 8, n), randn(gen, 8, n)
    y32 = toeplitz_matvec(c.float(), r.float(), x.float())
    assert y32.dtype == torch.float32
    err = (y32.double() - toeplitz_matvec(c, r, x)).abs().amax(-1)
    scale = torch.cat([c, r[..., 1:]], -1).norm(dim=-1) * x.norm(dim=-1)
    assert float((err / scale).max()) <= MATVEC_F32_BOUND


def test_half_inputs_compute_in_float32(gen: torch.Generator) -> None:
    c, r, x = (randn(gen, 33).to(torch.bfloat16) for _ in range(3))
    y = toeplitz_matvec(c, r, x)
    assert y.dtype == torch.bfloat16
    ref = toeplitz_matvec(c.double(), r.double(), x.double())
    assert float((y.double() - ref).abs().max()) <= 0.02 * float(ref.abs().max())


# ----------------------------------------------------------------------------- causal conv


def np_causal(h: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.convolve(h, x)[: x.shape[-1]]


@pytest.mark.parametrize("method", ["fft", "direct", "auto"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize(("k", "n"), [(1, 1), (5, 40), (200, 200), (300, 100)])
def test_causal_conv_matches_numpy(
    gen: torch.Generator, method: str, dtype: torch.dtype, k: int, n: int
) -> None:
    h, x = randn(gen, 3, k, dtype=dtype), randn(gen, 3, n, dtype=dtype)
    y = causal_conv(h, x, method=method)
    ref = np.stack([np_causal(hi, xi) for hi, xi in zip(h.numpy(), x.numpy(), strict=True)])
    assert y.dtype == dtype and y.shape == (3, n)
    np.testing.assert_allclose(y.numpy(), ref, rtol=0, atol=1e-13 * math.sqrt(k) * 10)


@pytest.mark.parametrize("method", ["fft", "direct"])
def test_causal_conv_broadcasts_channels(gen: torch.Generator, method: str) -> None:
    """h (C, K) against x (B, C, N), and h (B, 1, K) against x (C, N)."""
    b, ch, n = 2, 3, 50
    h, x = randn(gen, ch, n), randn(gen, b, ch, n)
    y = causal_conv(h, x, method=method)
    ref = np.stack([[np_causal(h[j].numpy(), x[i, j].numpy()) for j in range(ch)]
                    for i in range(b)])
    np.testing.assert_allclose(y.numpy(), ref, rtol=0, atol=1e-12)
    h2 = randn(gen, b, 1, 7)
    y2 = causal_conv(h2, x[0], method=method)
    assert y2.shape == (b, ch, n)
    ref2 = np.stack([[np_causal(h2[i, 0].numpy(), x[0, j].numpy()) for j in range(ch)]
                     for i in range(b)])
    np.testing.assert_allclose(y2.numpy(), ref2, rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", ["fft", "direct"])
@pytest.mark.parametrize("n", [2, 64, 1000])
def test_causal_conv_has_no_wraparound(gen: torch.Generator, method: str, n: int) -> None:
    """A circular convolution would send what falls past N back to the start."""
    h, x = randn(gen, n), randn(gen, n)
    impulse_end = torch.zeros(n, dtype=F64)
    impulse_end[-1] = 1.0
    tiny = 1e-13 * float(h.abs().max() + x.abs().max())
    # impulse at the end of x: y = h_0 at t = N-1 and nothing else (circular: h_s at s - 1)
    y = causal_conv(h, impulse_end, method=method)
    assert float(y[:-1].abs().max()) <= tiny
    assert abs(float(y[-1] - h[0])) <= tiny
    # impulse at the end of h: y_t = x_{t-N+1}, so only y_{N-1} = x_0 (circular: x shifted)
    y = causal_conv(impulse_end, x, method=method)
    assert float(y[:-1].abs().max()) <= tiny
    assert abs(float(y[-1] - x[0])) <= tiny
    # both at the end: the only product lands at t = 2N - 2, outside the output
    assert float(causal_conv(impulse_end, impulse_end, method=method).abs().max()) <= 1e-13


def test_causal_conv_float32_bound(gen: torch.Generator) -> None:
    n = 2048
    h, x = randn(gen, 4, n), randn(gen, 4, n)
    ref = causal_conv(h, x, method="fft")
    scale = h.norm(dim=-1) * x.norm(dim=-1)
    for method in ("fft", "direct"):
        y32 = causal_conv(h.float(), x.float(), method=method)
        assert y32.dtype == torch.float32
        err = (y32.double() - ref).abs().amax(-1)
        assert float((err / scale).max()) <= CONV_F32_BOUND


def test_causal_conv_is_lower_triangular_toeplitz(gen: torch.Generator) -> None:
    n = 31
    h, x = randn(gen, n), randn(gen, n)
    torch.testing.assert_close(causal_conv(h, x), toeplitz_matvec(h, torch.zeros_like(h), x))


# ----------------------------------------------------------------------------- block Toeplitz


def dense_block(bc: torch.Tensor, br: torch.Tensor) -> torch.Tensor:
    """(p N, m N) dense matrix with block (i, j) = T_{i-j}, row index a*N + i, col b*N + j."""
    p, m = bc.shape[:2]
    rows = []
    for a in range(p):
        rows.append(torch.cat([toeplitz_to_dense(bc[a, b], br[a, b]) for b in range(m)], -1))
    return torch.cat(rows, -2)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_block_toeplitz_matches_dense(gen: torch.Generator, dtype: torch.dtype) -> None:
    p, m, n = 3, 2, 20
    bc, br = randn(gen, p, m, n, dtype=dtype), randn(gen, p, m, n, dtype=dtype)
    x = randn(gen, 4, m, n, dtype=dtype)
    y = block_toeplitz_matvec(bc, br, x)
    assert y.shape == (4, p, n)
    ref = (dense_block(bc, br) @ x.reshape(4, m * n, 1)).reshape(4, p, n)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    # m = p = 1 is the scalar Toeplitz matvec; blocks_r=None is the Hermitian block matrix
    torch.testing.assert_close(
        block_toeplitz_matvec(bc[:1, :1], br[:1, :1], x[:, :1])[:, 0],
        toeplitz_matvec(bc[0, 0], br[0, 0], x[:, 0]),
    )
    sq = randn(gen, m, m, n, dtype=dtype)
    sq[..., 0] = sq[..., 0] + sq[..., 0].mH
    herm = dense_block(sq, sq.transpose(0, 1).conj())
    torch.testing.assert_close(herm, herm.mH)
    torch.testing.assert_close(block_toeplitz_matvec(sq, None, x),
                               (herm @ x.reshape(4, m * n, 1)).reshape(4, m, n))


# ----------------------------------------------------------------------------- Levinson


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("n", [1, 2, 3, 50, 257])
def test_levinson_matches_scipy(gen: torch.Generator, dtype: torch.dtype, n: int) -> None:
    c, r = dominant(gen, 4, n, dtype=dtype)
    b = randn(gen, 4, n, dtype=dtype)
    x = solve_toeplitz(c, r, b)
    ref = per_batch_scipy(sl.solve_toeplitz, c, r, b)
    assert x.dtype == dtype
    np.testing.assert_allclose(x.numpy(), ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())
    torch.testing.assert_close(toeplitz_matvec(c, r, x), b, rtol=1e-11, atol=1e-11)


def test_levinson_nonsymmetric_non_dominant(gen: torch.Generator) -> None:
    """Gaussian c, r with a moderate diagonal shift: not dominant, leading blocks indefinite."""
    n = 64
    c, r, b = randn(gen, 8, n), randn(gen, 8, n), randn(gen, 8, n)
    c[:, 0] += 2 * math.sqrt(n)
    x = solve_toeplitz(c, r, b)
    dense = toeplitz_to_dense(c, r)
    ref = torch.linalg.solve(dense, b)
    cond = torch.linalg.cond(dense)
    err = (x - ref).norm(dim=-1) / ref.norm(dim=-1)
    assert bool((err <= 1e-13 * cond * n).all()), (err, cond)


def test_levinson_symmetric_default_and_broadcast(gen: torch.Generator) -> None:
    n = 40
    k = torch.arange(n, dtype=F64)
    rho = 0.5 + 0.45 * torch.rand(3, 1, 1, generator=gen, dtype=F64)
    c = rho**k  # AR(1) autocorrelation: symmetric positive definite
    b = randn(gen, 5, n)
    x = solve_toeplitz(c, None, b)
    assert x.shape == (3, 5, n)
    ref = torch.linalg.solve(toeplitz_to_dense(c)[:, 0], b.mT).mT
    torch.testing.assert_close(x, ref, rtol=1e-10, atol=1e-10)


def test_levinson_float32_bound(gen: torch.Generator) -> None:
    c, r = dominant(gen, 16, 300)
    b = randn(gen, 16, 300)
    x64 = solve_toeplitz(c, r, b)
    x32 = solve_toeplitz(c.float(), r.float(), b.float())
    assert x32.dtype == torch.float32
    err = (x32.double() - x64).abs().amax(-1) / x64.abs().amax(-1)
    assert float(err.max()) <= SOLVE_F32_BOUND


def test_levinson_singular_leading_minor_raises(gen: torch.Generator) -> None:
    n = 8
    c, r = randn(gen, n), randn(gen, n)
    # T[:2, :2] = [[1, 1], [1, 1]] is singular, T itself (almost surely) is not
    c[0], c[1], r[0], r[1] = 1.0, 1.0, 1.0, 1.0
    dense = toeplitz_to_dense(c, r)
    assert abs(float(torch.linalg.det(dense[:2, :2]))) == 0
    assert float(torch.linalg.cond(dense)) < 1e8
    b = randn(gen, n)
    with pytest.raises(torch.linalg.LinAlgError, match="leading principal block"):
        solve_toeplitz(c, r, b)
    c[0] = 0.0  # singular 1 x 1 block
    with pytest.raises(torch.linalg.LinAlgError, match="leading principal block"):
        solve_toeplitz(c, r, b)
    # only one batch element bad: still raises (never a partial NaN)
    good_c, good_r = dominant(gen, n)
    with pytest.raises(torch.linalg.LinAlgError):
        solve_toeplitz(torch.stack([good_c, c]), torch.stack([good_r, r]), b)


def test_levinson_non_finite_raises(gen: torch.Generator) -> None:
    c, r = dominant(gen, 6)
    b = randn(gen, 6)
    b[3] = float("nan")
    with pytest.raises(torch.linalg.LinAlgError, match="not finite"):
        solve_toeplitz(c, r, b)


# ----------------------------------------------------------------------------- gradients


def test_gradcheck_matvec_conv_block(gen: torch.Generator) -> None:
    n = 7
    c, r, x = (randn(gen, 2, n).requires_grad_() for _ in range(3))
    assert torch.autograd.gradcheck(toeplitz_matvec, (c, r, x))
    h = randn(gen, 3, 5).requires_grad_()
    xs = randn(gen, 2, 3, n).requires_grad_()
    for method in ("fft", "direct"):
        assert torch.autograd.gradcheck(lambda h, x, m=method: causal_conv(h, x, m), (h, xs),
                                        fast_mode=True)
    bc, br = (randn(gen, 2, 2, n).requires_grad_() for _ in range(2))
    xb = randn(gen, 2, n).requires_grad_()
    assert torch.autograd.gradcheck(block_toeplitz_matvec, (bc, br, xb), fast_mode=True)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_gradcheck_solve(gen: torch.Generator, dtype: torch.dtype) -> None:
    c, r = dominant(gen, 5, dtype=dtype)
    c, r = c.requires_grad_(), r.requires_grad_()
    b = randn(gen, 2, 5, dtype=dtype).requires_grad_()
    assert torch.autograd.gradcheck(solve_toeplitz, (c, r, b))
    if dtype.is_complex:
        return
    assert torch.autograd.gradgradcheck(solve_toeplitz, (c[:3], r[:3], b[:1, :3]))
    cs = c.detach().clone()
    cs[1:] *= 0.1 / cs[1:].abs().sum()  # symmetric positive definite
    cs.requires_grad_()

    def cg(c: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return solve_toeplitz_cg(c, None, b, tol=1e-13).solution

    def cgnr(c: torch.Tensor, r: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return solve_toeplitz_cg(c, r, b, tol=1e-13).solution

    # fast mode (a random projection of the Jacobian): each CG call is dozens of small FFTs
    assert torch.autograd.gradcheck(cg, (cs, b), fast_mode=True)
    assert torch.autograd.gradcheck(cgnr, (c, r, b), fast_mode=True)


# ----------------------------------------------------------------------------- CG


def spd_autocorrelation(gen: torch.Generator, n: int) -> torch.Tensor:
    """t_k = (1 + k)^(-a) with random a in [1.05, 1.3]: convex, decreasing to 0, hence a
    positive definite Toeplitz (Polya) whose condition number grows with N."""
    a = 1.05 + 0.25 * float(torch.rand((), generator=gen, dtype=F64))
    return (1.0 + torch.arange(n, dtype=F64)) ** (-a)


def test_cg_spd_large_preconditioned(gen: torch.Generator) -> None:
    n = 2**14
    c = spd_autocorrelation(gen, n)
    b = randn(gen, 2, n)
    iterations = {}
    for kind in ("chan", "strang", "none"):
        result = solve_toeplitz_cg(c, None, b, tol=1e-10, preconditioner=kind, maxiter=2000)
        res = (toeplitz_matvec(c, None, result.solution) - b).norm(dim=-1) / b.norm(dim=-1)
        assert float(res.max()) <= 1e-10
        torch.testing.assert_close(res, result.residual)
        iterations[kind] = int(result.iterations.max())
    print(f"PCG iterations at N = 2^14: {iterations}")
    assert iterations["chan"] <= 20
    assert iterations["strang"] <= 20
    assert iterations["none"] >= 3 * iterations["chan"]


def test_cgnr_nonsymmetric_matches_levinson(gen: torch.Generator) -> None:
    n = 512
    k = torch.arange(n, dtype=F64)
    c = (1 + k) ** -1.5 * randn(gen, n).sign()
    r = 0.7 * (1 + k) ** -1.2 * randn(gen, n).sign()
    c[0] = r[0] = 2.5
    b = randn(gen, 3, n)
    result = solve_toeplitz_cg(c, r, b, tol=1e-12)
    ref = solve_toeplitz(c, r, b)
    torch.testing.assert_close(result.solution, ref, rtol=1e-8, atol=1e-8)
    plain = solve_toeplitz_cg(c, r, b, tol=1e-12, preconditioner="none")
    assert int(result.iterations.max()) < int(plain.iterations.max())


def test_cg_complex_hermitian(gen: torch.Generator) -> None:
    n = 256
    c = randn(gen, n, dtype=torch.complex128) * (1 + torch.arange(n, dtype=F64)) ** -2
    c[0] = 1.0 + 2 * float(c[1:].abs().sum())
    b = randn(gen, 2, n, dtype=torch.complex128)
    result = solve_toeplitz_cg(c, None, b, tol=1e-12)
    torch.testing.assert_close(result.solution, solve_toeplitz(c, None, b), rtol=1e-9, atol=1e-9)


def test_cg_float32(gen: torch.Generator) -> None:
    """float32 default tol 1e-5: reached, and the solution within 1e-5 of float64's."""
    n = 4096
    c = spd_autocorrelation(gen, n)
    b = randn(gen, 3, n)
    result = solve_toeplitz_cg(c.float(), None, b.float())
    assert result.solution.dtype == torch.float32
    assert float(result.residual.max()) <= 1e-5
    ref = solve_toeplitz_cg(c, None, b).solution
    err = (result.solution.double() - ref).norm(dim=-1) / ref.norm(dim=-1)
    assert float(err.max()) <= 1e-5


def test_cg_non_convergence_raises_with_result(gen: torch.Generator) -> None:
    n = 1024
    c = spd_autocorrelation(gen, n)
    b = randn(gen, n)
    with pytest.raises(ToeplitzConvergenceError, match="did not reach tol") as info:
        solve_toeplitz_cg(c, None, b, maxiter=2, preconditioner="none")
    partial = info.value.result
    assert int(partial.iterations) == 2 and float(partial.residual) > 1e-10
    assert bool(torch.isfinite(partial.solution).all())


def test_cg_zero_rhs_and_indefinite(gen: torch.Generator) -> None:
    n = 64
    c = spd_autocorrelation(gen, n)
    zero = solve_toeplitz_cg(c, None, torch.zeros(2, n, dtype=F64))
    assert bool((zero.solution == 0).all()) and bool((zero.iterations == 0).all())
    indefinite = torch.zeros(n, dtype=F64)
    indefinite[0], indefinite[1] = 0.1, 1.0  # eigenvalues 0.1 + 2 cos(theta): indefinite
    with pytest.raises(ValueError, match="not positive definite"):
        solve_toeplitz_cg(indefinite, None, randn(gen, n), preconditioner="none")


@pytest.mark.slow
def test_cg_spd_very_large(gen: torch.Generator) -> None:
    n = 2**18
    c = spd_autocorrelation(gen, n)
    b = randn(gen, 4, n)
    result = solve_toeplitz_cg(c, None, b, tol=1e-10)
    assert int(result.iterations.max()) <= 25
    assert float(result.residual.max()) <= 1e-10


@pytest.mark.slow
def test_levinson_large_vs_scipy(gen: torch.Generator) -> None:
    n = 2048
    c, r = dominant(gen, 2, n)
    b = randn(gen, 2, n)
    ref = per_batch_scipy(sl.solve_toeplitz, c, r, b)
    np.testing.assert_allclose(solve_toeplitz(c, r, b).numpy(), ref, rtol=1e-11,
                               atol=1e-11 * np.abs(ref).max())


@pytest.mark.gpu
def test_cuda_matches_cpu(gen: torch.Generator) -> None:
    """Every op runs on CUDA tensors (no numpy or host-only code in the torch paths)."""
    n = 64
    c, r = dominant(gen, 2, n)
    x = randn(gen, 2, n)
    bc, br, xb = randn(gen, 2, 2, n), randn(gen, 2, 2, n), randn(gen, 2, n)
    spd = spd_autocorrelation(gen, n)
    calls = [
        lambda d: toeplitz_matvec(c.to(d), r.to(d), x.to(d)),
        lambda d: causal_conv(c.to(d), x.to(d), method="fft"),
        lambda d: causal_conv(c.to(d), x.to(d), method="direct"),
        lambda d: block_toeplitz_matvec(bc.to(d), br.to(d), xb.to(d)),
        lambda d: solve_toeplitz(c.to(d), r.to(d), x.to(d)),
        lambda d: solve_toeplitz_cg(spd.to(d), None, x.to(d)).solution,
        lambda d: solve_toeplitz_cg(c.to(d), r.to(d), x.to(d)).solution,
    ]
    for call in calls:
        torch.testing.assert_close(call("cuda").cpu(), call("cpu"), rtol=1e-9, atol=1e-9)


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs_name_the_argument(gen: torch.Generator) -> None:
    x = randn(gen, 8)
    cases = [
        (lambda: toeplitz_matvec(x.numpy(), x, x), r"c must be a torch.Tensor"),
        (lambda: toeplitz_matvec(x, x.long(), x), r"r must have a floating or complex dtype"),
        (lambda: toeplitz_matvec(x, x, randn(gen, 9)), r"last \(sequence\) dimensions"),
        (lambda: toeplitz_matvec(randn(gen, 2, 8), None, randn(gen, 3, 8)),
         r"batch shapes do not broadcast: c\(2, 8\)"),
        (lambda: toeplitz_matvec(x, None, torch.zeros(0, dtype=F64)), r"x must have a non-empty"),
        (lambda: causal_conv(x, x, method="fast"), r"method must be"),
        (lambda: causal_conv(x.int(), x), r"h must have a floating"),
        (lambda: solve_toeplitz(x, x, x[:5]), r"b\(5,\)"),
        (lambda: solve_toeplitz_cg(x, None, x, tol=0.0), r"tol must be"),
        (lambda: solve_toeplitz_cg(x, None, x, maxiter=0), r"maxiter must be"),
        (lambda: solve_toeplitz_cg(x, None, x, preconditioner="jacobi"), r"preconditioner must"),
        (lambda: block_toeplitz_matvec(randn(gen, 2, 3, 8), None, randn(gen, 3, 8)),
         r"blocks_r\(3, 2, 8\)"),
        (lambda: block_toeplitz_matvec(randn(gen, 2, 3, 8), randn(gen, 2, 3, 8),
                                       randn(gen, 2, 8)), r"x\(2, 8\) must be \(\.\.\., m, N\)"),
        (lambda: block_toeplitz_matvec(x, x, x), r"blocks_c must have at least 3"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
