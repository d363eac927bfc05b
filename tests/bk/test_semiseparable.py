"""Semiseparable matvec against the dense float64 product of its generators.

Error model (module docstring of resnetbk.bk.semiseparable): the prefix-sum error of y_i is
bounded by eps * sum_j G_ij |x_j| up to a factor growing with N, where G_ij = sum_a |u_ai||v_aj|
(lower) or sum_a |p_ai||q_aj| (upper) is the generator-product magnitude, not |A_ij|.
Measured float32 constant in |y32 - y64|_i <= C eps32 sum_j G_ij |x_j|: max C = 0.093 for
Gaussian generators (100 seeds, N = 4096, r = s = 4) and 0.73 for cancelling ones (300 seeds,
test below; there |S_i| is close to sum_j |v_j||x_j|, so the rounding of the running sum S_i and
of u_i S_i is fully felt). torch's CPU cumsum accumulates float32 in float64, so the running sum
adds no O(N eps) growth; three roundings per term give C <= ~1.5. Asserted with C = 2.
"""

from __future__ import annotations

import pytest
import torch

from resnetbk.bk import semiseparable_matvec, semiseparable_to_dense

F64 = torch.float64
EPS32 = torch.finfo(torch.float32).eps
F32_CONSTANT = 2.0


def randn(gen: torch.Generator, *shape: int, dtype: torch.dtype = F64) -> torch.Tensor:
    if dtype.is_complex:
        return torch.view_as_complex(torch.randn(*shape, 2, generator=gen, dtype=F64)).to(dtype)
    return torch.randn(*shape, generator=gen, dtype=F64).to(dtype)


def generator_magnitude(
    u: torch.Tensor,
    v: torch.Tensor,
    p: torch.Tensor,
    q: torch.Tensor,
    x: torch.Tensor,
    d: torch.Tensor | None = None,
) -> torch.Tensor:
    """sum_j G_ij |x_j| (+ |d_i x_i|): the scale of the rounding error of y_i."""
    absx = x.abs()[..., None, :]
    lower = (u.abs() * torch.cumsum(v.abs() * absx, -1)).sum(-2)
    upper = (p.abs() * (torch.cumsum((q.abs() * absx).flip(-1), -1).flip(-1))).sum(-2)
    return lower + upper + (0 if d is None else (d * x).abs())


def test_to_dense_definition(gen: torch.Generator) -> None:
    n, r, s = 6, 2, 3
    u, v, p, q = randn(gen, r, n), randn(gen, r, n), randn(gen, s, n), randn(gen, s, n)
    d = randn(gen, n)
    a = semiseparable_to_dense(u, v, p, q, d)
    for i in range(n):
        for j in range(n):
            ref = u[:, i] @ v[:, j] if i >= j else p[:, i] @ q[:, j]
            ref = ref + (d[i] if i == j else 0)
            assert abs(float(a[i, j] - ref)) <= 1e-14


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize(("n", "r", "s"), [(1, 1, 1), (2, 3, 1), (50, 4, 2), (300, 1, 5)])
@pytest.mark.parametrize("diagonal", [False, True])
def test_matvec_matches_dense(
    gen: torch.Generator, dtype: torch.dtype, n: int, r: int, s: int, diagonal: bool
) -> None:
    u, v = randn(gen, 3, r, n, dtype=dtype), randn(gen, 3, r, n, dtype=dtype)
    p, q = randn(gen, 3, s, n, dtype=dtype), randn(gen, 3, s, n, dtype=dtype)
    x = randn(gen, 3, n, dtype=dtype)
    d = randn(gen, 3, n, dtype=dtype) if diagonal else None
    y = semiseparable_matvec(u, v, p, q, x, d)
    ref = (semiseparable_to_dense(u, v, p, q, d) @ x[..., None])[..., 0]
    assert y.dtype == dtype and y.shape == (3, n)
    bound = 1e-14 * generator_magnitude(u, v, p, q, x, d)
    assert bool(((y - ref).abs() <= bound + 1e-300).all())


def test_lower_only_and_broadcasting(gen: torch.Generator) -> None:
    """p = q = None gives the lower-triangular (causal) part; generators broadcast over x."""
    n, r = 40, 3
    u, v, d = randn(gen, r, n), randn(gen, r, n), randn(gen, n)
    x = randn(gen, 2, 5, n)
    y = semiseparable_matvec(u, v, None, None, x, d)
    assert y.shape == (2, 5, n)
    dense = semiseparable_to_dense(u, v, d=d)
    torch.testing.assert_close(dense, dense.tril())
    torch.testing.assert_close(y, x @ dense.mT, rtol=1e-12, atol=1e-12)
    # causality: changing the future of x leaves the past of y unchanged
    x2 = x.clone()
    x2[..., n // 2 :] += 1.0
    y2 = semiseparable_matvec(u, v, None, None, x2, d)
    torch.testing.assert_close(y2[..., : n // 2], y[..., : n // 2], rtol=0, atol=0)


def test_float32_bound(gen: torch.Generator) -> None:
    n, r, s = 4096, 4, 4
    u, v, p, q = randn(gen, r, n), randn(gen, r, n), randn(gen, s, n), randn(gen, s, n)
    x = randn(gen, 2, n)
    y64 = semiseparable_matvec(u, v, p, q, x)
    y32 = semiseparable_matvec(*(t.float() for t in (u, v, p, q, x)))
    assert y32.dtype == torch.float32
    ratio = (y32.double() - y64).abs() / (EPS32 * generator_magnitude(u, v, p, q, x))
    assert float(ratio.max()) <= F32_CONSTANT


def test_cancelling_generators_lose_digits_as_documented(gen: torch.Generator) -> None:
    """Rank-2 generators whose products cancel: u_i = (w_i, w_i), v_j = (B z_j, y_j - B z_j), so
    A_ij = w_i y_j while |u_i||v_j| ~ B |w_i z_j|. The float32 error follows the generator
    magnitude (about B times |A|), not |A|: log10(B) digits are lost."""
    n, big = 500, 1e3
    w, y, z = randn(gen, n), randn(gen, n), randn(gen, n)
    u = torch.stack([w, w]).float()
    v = torch.stack([big * z, y - big * z]).float()
    x = randn(gen, n).float()
    # float64 from the stored float32 generators: products exact, one rounding per sum
    ref = semiseparable_matvec(u.double(), v.double(), None, None, x.double())
    err = (semiseparable_matvec(u, v, None, None, x).double() - ref).abs()
    zero = torch.zeros(1, n, dtype=F64)
    magnitude = generator_magnitude(u.double(), v.double(), zero, zero, x.double())
    assert bool((err <= F32_CONSTANT * EPS32 * magnitude).all())
    entries = semiseparable_to_dense(u.double(), v.double()).abs() @ x.double().abs()
    assert float((err / entries).max()) > 10 * EPS32


def test_decaying_kernel_generators_overflow_as_documented(gen: torch.Generator) -> None:
    """A_ij = exp(-lam (i - j)) written as u_i = exp(-lam i), v_j = exp(lam j) is accurate
    (rank 1, positive: generator products are |A|) until exp(lam N) overflows: lam N > ~88
    in float32."""
    n = 200
    i = torch.arange(n, dtype=torch.float32)
    x = randn(gen, n).float()
    for lam, finite in ((0.3, True), (0.5, False)):  # lam N = 60 and 100
        y = semiseparable_matvec(torch.exp(-lam * i)[None], torch.exp(lam * i)[None], None, None,
                                 x)
        assert bool(torch.isfinite(y).all()) == finite


def test_gradcheck(gen: torch.Generator) -> None:
    n = 6
    args = [randn(gen, 2, n), randn(gen, 2, n), randn(gen, 1, n), randn(gen, 1, n),
            randn(gen, n), randn(gen, n)]
    args = [a.requires_grad_() for a in args]
    assert torch.autograd.gradcheck(semiseparable_matvec, tuple(args))


def test_bad_inputs_name_the_argument(gen: torch.Generator) -> None:
    u, x = randn(gen, 2, 8), randn(gen, 8)
    cases = [
        (lambda: semiseparable_matvec(u, u, u, None, x), r"p and q must be given together"),
        (lambda: semiseparable_matvec(x, x, None, None, x), r"u must have at least 2"),
        (lambda: semiseparable_matvec(u, randn(gen, 3, 8), None, None, x), r"u\(2, 8\) and v"),
        (lambda: semiseparable_matvec(u, u, randn(gen, 1, 7), randn(gen, 1, 7), x),
         r"p\(1, 7\) and q\(1, 7\)"),
        (lambda: semiseparable_matvec(u, u, None, None, randn(gen, 9)), r"x\(9,\) must have"),
        (lambda: semiseparable_matvec(u, u, None, None, x, d=x.long()), r"d must have a float"),
        (lambda: semiseparable_matvec(randn(gen, 3, 2, 8), u, None, None, randn(gen, 4, 8)),
         r"batch shapes do not broadcast"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


@pytest.mark.gpu
def test_cuda_matches_cpu(gen: torch.Generator) -> None:
    u, v, p, q = (randn(gen, 3, 50) for _ in range(4))
    x, d = randn(gen, 2, 50), randn(gen, 50)
    cpu = semiseparable_matvec(u, v, p, q, x, d)
    cuda = semiseparable_matvec(*(t.cuda() for t in (u, v, p, q, x, d)))
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-12, atol=1e-12)
