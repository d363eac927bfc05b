"""BK-Core Green's functions: oracles (dense float64 inverses, the sequential loop), the
|G| <= 1/Im z bound, causality, exact gradients, long sequences and input validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import resnetbk
from resnetbk.bk import causal_green, green, resolvent_diag
from resnetbk.bk.green import _chunk_length, causal_green_reference

F64, C128 = torch.float64, torch.complex128

# Measured float32 errors (docs/BK.md, "Accuracy") as |G32 - G64| * Im z (relative to the bound
# 1/Im z), G64 computed from the float32-rounded inputs, over the adversarial cases below with
# Im z down to 1e-3: worst seen 3.8e-4 at N = 2^17 (15 seeds) and 3.6e-4 at N = 10^6 (3 seeds),
# equal to a sequential float32 loop's error (the problem's conditioning, not the scan). The
# distribution has a tail (ill-conditioned draws), hence the ~5x margin.
F32_BOUND = 2e-3
F32_BOUND_1M = 5e-3


def energies(gen: torch.Generator, shape: tuple[int, ...], im_min: float = 0.05) -> torch.Tensor:
    """z with Re z in [-2, 2] and Im z log-uniform in [im_min, 2]."""
    re = 4 * torch.rand(shape, generator=gen, dtype=F64) - 2
    lo, hi = np.log(im_min), np.log(2.0)
    im = torch.exp(lo + (hi - lo) * torch.rand(shape, generator=gen, dtype=F64))
    return torch.complex(re, im)


def chain(gen: torch.Generator, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Diagonal a ~ N(0, 1) and couplings k in [0, 2)."""
    a = torch.randn(shape, generator=gen, dtype=F64)
    k = 2 * torch.rand(shape, generator=gen, dtype=F64)
    return a, k


def adversarial(
    gen: torch.Generator, rows: int, n: int
) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """Chains that break unnormalised products: large/small k, huge a, mixed scales."""
    def r() -> torch.Tensor:
        return torch.randn(rows, n, generator=gen, dtype=F64)

    def u() -> torch.Tensor:
        return torch.rand(rows, n, generator=gen, dtype=F64)

    def decades(lo: int, hi: int) -> torch.Tensor:
        return 10.0 ** torch.randint(lo, hi + 1, (rows, n), generator=gen).to(F64)

    return [
        ("plain", r(), u()),
        ("k_large", r(), 1e4 * u()),
        ("k_small", r(), 1e-8 * u()),
        ("a_huge", 1e6 * r(), u()),
        ("mixed_scales", r() * decades(-3, 3), u() * decades(-8, 4)),
    ]


def tiny_im_energies(rows: int) -> torch.Tensor:
    """Energies with Im z down to 1e-3, exactly representable in complex64."""
    im = torch.tensor([1e-3, 1e-3, 0.1, 1.0], dtype=torch.float32)[:rows]
    re = torch.tensor([0.1, 1.0, -0.5, 0.0], dtype=torch.float32)[:rows]
    return torch.complex(re, im).reshape(rows, 1).to(C128)


def f32_exact(*xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """float64 tensors holding float32 values: the float32 run and the float64 oracle then
    see the same inputs, so the measured error is the algorithm's, not the input rounding's."""
    return tuple(x.float().double() for x in xs)


def python_loop(a: torch.Tensor, k: torch.Tensor, z: complex) -> np.ndarray:
    """The continued fraction in Python complex arithmetic (float64), one row: fast for large
    N where the batched torch reference spends ~30 us per step on launches."""
    av, kv = a.tolist(), k.tolist()
    out = np.empty(len(av), dtype=np.complex128)
    g = 0j
    for t, at in enumerate(av):
        g = 1 / ((at - z) - (kv[t - 1] * g if t else 0))
        out[t] = g
    return out


def dense(a: np.ndarray, b: np.ndarray, c: np.ndarray, z: complex) -> np.ndarray:
    """H - z for diagonal a, super-diagonal b, sub-diagonal c."""
    return np.diag(a - z) + np.diag(b, 1) + np.diag(c, -1)


def split(gen: torch.Generator, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """b, c with b c = k and random common signs, |b| != |c| (H not symmetric)."""
    b = torch.exp(torch.randn(k.shape, generator=gen, dtype=F64))
    b = b * torch.where(torch.rand(k.shape, generator=gen) < 0.5, -1.0, 1.0).to(F64)
    return b, k / b


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float(((x.to(C128) - ref).abs() / ref.abs()).max())


# ----------------------------------------------------------------------------- causal oracles


@pytest.mark.parametrize("n", [1, 2, 3, 7, 33, 64, 100])
def test_causal_green_matches_dense_leading_block_inverses(gen: torch.Generator, n: int) -> None:
    a, k = chain(gen, (2, n))
    z = energies(gen, (2, 1))
    got = causal_green(a, k, z)
    for row in range(2):
        b, c = split(gen, k[row, :-1])
        h = dense(a[row].numpy(), b.numpy(), c.numpy(), complex(z[row, 0]))
        want = np.array([np.linalg.inv(h[: t + 1, : t + 1])[t, t] for t in range(n)])
        np.testing.assert_allclose(got[row].numpy(), want, rtol=1e-10, atol=0)


@pytest.mark.parametrize("n", [5, 100, 1000, 4099])
def test_torch_backend_matches_reference_loop(gen: torch.Generator, n: int) -> None:
    a, k = chain(gen, (3, n))
    z = energies(gen, (3, 1), im_min=1e-3)
    want = causal_green_reference(a, k, z)
    got = causal_green(a, k, z, backend="torch")
    assert rel_err(got, want) < 1e-11
    first = _chunk_length(n)  # chunk 0 runs the reference's own recursion from G_{-1} = 0
    assert torch.equal(got[:, :first], want[:, :first])
    assert torch.equal(causal_green(a, k, z, backend="reference"), want)


def test_float32_within_documented_bound(gen: torch.Generator) -> None:
    z = tiny_im_energies(4)
    for name, a64, k64 in adversarial(gen, 4, 2**14):
        a, k = f32_exact(a64, k64)
        got = causal_green(a.float(), k.float(), z.to(torch.complex64))
        assert got.dtype == torch.complex64
        for row in range(4):
            want = torch.from_numpy(python_loop(a[row], k[row], complex(z[row, 0])))
            err = float((got[row].to(C128) - want).abs().max() * z[row, 0].imag)
            assert err < F32_BOUND, name


def test_broadcasting_per_channel_energy(gen: torch.Generator) -> None:
    a, k = chain(gen, (2, 3, 40))
    z = energies(gen, (3, 1))
    got = causal_green(a, k[0], z)  # k broadcast over the batch, z per channel
    assert got.shape == (2, 3, 40)
    for bi in range(2):
        for ci in range(3):
            want = causal_green_reference(a[bi, ci], k[0, ci], z[ci])
            assert rel_err(got[bi, ci], want) < 1e-12
    scalar = causal_green(a, k, 0.3 + 0.5j)
    assert rel_err(scalar, causal_green_reference(a, k, 0.3 + 0.5j)) < 1e-12


@pytest.mark.parametrize("shape", [(2, 0, 5), (0, 3, 5)])
def test_empty_batch_dimensions(gen: torch.Generator, shape: tuple[int, ...]) -> None:
    """No rows: an empty G and empty gradients (a zero-size dimension among the batch ones
    must not make the reshape to (B, C, N) ambiguous)."""
    a, k = (x.requires_grad_() for x in chain(gen, shape))
    z = energies(gen, (shape[1], 1)).requires_grad_()
    g = causal_green(a, k, z)
    assert g.shape == shape
    grads = torch.autograd.grad(g.real.sum(), (a, k, z))
    assert [x.shape for x in grads] == [a.shape, k.shape, z.shape]
    assert not grads[2].any()


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 80),
    a_scale=st.floats(1e-3, 1e4),
    k_scale=st.floats(0.0, 1e4),
    re=st.floats(-10, 10),
    log_im=st.floats(-4, 1),
    seed=st.integers(0, 2**31 - 1),
)
def test_green_is_bounded_by_inverse_im_z(
    n: int, a_scale: float, k_scale: float, re: float, log_im: float, seed: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    a = a_scale * torch.randn(2, n, generator=g, dtype=F64)
    k = k_scale * torch.rand(2, n, generator=g, dtype=F64)
    im = 10.0**log_im
    z = complex(re, im)
    for backend in ("torch", "reference"):
        assert float(causal_green(a, k, z, backend=backend).abs().max()) * im <= 1 + 1e-12
    b = torch.sqrt(k[:, :-1])
    assert float(resolvent_diag(a, b, b, z).abs().max()) * im <= 1 + 1e-12


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_causality_is_bit_exact(gen: torch.Generator, backend: str) -> None:
    n = 300
    a, k = chain(gen, (2, n))
    z = energies(gen, (2, 1))
    base = causal_green(a, k, z, backend=backend)
    for t in (0, 17, 150, n - 2):
        a2, k2 = a.clone(), k.clone()
        a2[:, t + 1 :] += torch.randn(2, n - t - 1, generator=gen, dtype=F64)
        k2[:, t:] *= 3.0  # k_t only couples t to t+1: it may not change G_t either
        pert = causal_green(a2, k2, z, backend=backend)
        assert torch.equal(pert[:, : t + 1], base[:, : t + 1])
        assert not torch.equal(pert[:, t + 1 :], base[:, t + 1 :])


# ----------------------------------------------------------------------------- gradients


def test_causal_gradcheck_with_per_channel_energy(gen: torch.Generator) -> None:
    a, k = chain(gen, (2, 3, 11))
    k = k + 0.1
    z = energies(gen, (3, 1))
    inputs = tuple(x.requires_grad_() for x in (a, k, z))
    assert torch.autograd.gradcheck(causal_green, inputs)


def test_causal_gradcheck_broadcast_and_scalar_energy(gen: torch.Generator) -> None:
    a, k = chain(gen, (3, 9))
    k1 = k[:1].clone().requires_grad_()  # one chain of couplings shared by 3 rows
    z = torch.tensor(0.4 + 0.7j, dtype=C128, requires_grad=True)
    assert torch.autograd.gradcheck(causal_green, (a.requires_grad_(), k1, z))


@pytest.mark.parametrize("n", [1, 6, 50, 257])
def test_torch_gradient_equals_autograd_through_reference(gen: torch.Generator, n: int) -> None:
    a, k = chain(gen, (2, 2, n))
    z = energies(gen, (2, 1), im_min=0.02)
    up = torch.complex(*torch.randn(2, 2, 2, n, generator=gen, dtype=F64))
    grads = []
    for backend in ("torch", "reference"):
        xs = [x.clone().requires_grad_() for x in (a, k, z)]
        out = causal_green(*xs, backend=backend)
        loss = (out * up.conj()).real.sum()
        got = torch.autograd.grad(loss, xs, allow_unused=True, materialize_grads=True)
        grads.append(got)
    for mine, want in zip(*grads, strict=True):
        torch.testing.assert_close(mine, want, rtol=1e-10, atol=1e-12)
    assert torch.equal(grads[0][1][..., -1], torch.zeros(2, 2, dtype=F64))  # k_{N-1} unused


def test_backward_saves_only_inputs_and_output(gen: torch.Generator) -> None:
    """O(inputs) memory: the graph holds a, k, z and G, no per-step tape."""
    a, k = chain(gen, (4, 1000))
    z = energies(gen, (4, 1))
    xs = [x.requires_grad_() for x in (a, k, z)]
    out = causal_green(*xs)
    saved = out.grad_fn.saved_tensors
    assert len(saved) == 4
    assert sum(t.numel() for t in saved) == a.numel() + k.numel() + z.numel() + out.numel()
    assert out.grad_fn.next_functions and all(
        f is None or type(f).__name__ == "AccumulateGrad" for f, _ in out.grad_fn.next_functions
    )


def test_float32_gradients_are_close(gen: torch.Generator) -> None:
    a, k = chain(gen, (4, 2048))
    z = energies(gen, (4, 1), im_min=0.1)
    grads = []
    for dt, cdt in ((torch.float32, torch.complex64), (F64, C128)):
        xs = [a.to(dt).requires_grad_(), k.to(dt).requires_grad_(), z.to(cdt).requires_grad_()]
        causal_green(*xs).real.sum().backward()
        grads.append([x.grad.to(C128 if x.is_complex() else F64) for x in xs])
    for g32, g64 in zip(*grads, strict=True):
        assert float((g32 - g64).abs().max() / g64.abs().max()) < 1e-3


# ----------------------------------------------------------------------------- long sequences


def check_long(gen: torch.Generator, n: int, rows: int, f32_bound: float) -> None:
    z = tiny_im_energies(rows)
    for name, a64, k64 in adversarial(gen, rows, n):
        a, k = f32_exact(a64, k64)
        got = causal_green(a, k, z)
        got32 = causal_green(a.float(), k.float(), z.to(torch.complex64))
        assert bool(torch.isfinite(torch.view_as_real(got32)).all()), name
        for row in range(rows):
            want = torch.from_numpy(python_loop(a[row], k[row], complex(z[row, 0])))
            assert rel_err(got[row], want) < 1e-10, name
            err = float((got32[row].to(C128) - want).abs().max() * z[row, 0].imag)
            assert err < f32_bound, name


def test_no_overflow_long_sequence(gen: torch.Generator) -> None:
    check_long(gen, 2**17, rows=2, f32_bound=F32_BOUND)


@pytest.mark.slow
def test_no_overflow_million(gen: torch.Generator) -> None:
    check_long(gen, 10**6, rows=4, f32_bound=F32_BOUND_1M)
    a, k = chain(gen, (2, 10**6))
    xs = [a.requires_grad_(), k.requires_grad_(), tiny_im_energies(2).requires_grad_()]
    causal_green(*xs).abs().sum().backward()
    for x in xs:
        assert bool(torch.isfinite(torch.view_as_real(x.grad) if x.is_complex() else x.grad).all())


# ----------------------------------------------------------------------------- validation


def test_bad_inputs_raise_value_error() -> None:
    a = torch.zeros(2, 5, dtype=F64)
    k = torch.ones(2, 5, dtype=F64)
    z = torch.full((2, 1), 0.5j, dtype=C128)
    bad = [
        (dict(a=a.numpy()), r"a must be a torch\.Tensor"),
        (dict(a=a.to(torch.float16)), "a must be float32 or float64"),
        (dict(a=torch.zeros((), dtype=F64)), "a must have a last"),
        (dict(k=k.float()), "k is torch.float32"),
        (dict(k=torch.ones(2, 4, dtype=F64)), "same, non-zero last"),
        (dict(a=a[:, :0], k=k[:, :0]), "same, non-zero last"),
        (dict(k=-k), "k must be >= 0"),
        (dict(k=k * torch.nan), "k must be >= 0"),
        (dict(z=z.to(torch.complex64)), "z must be torch.complex128"),
        (dict(z=torch.full((2, 5), 0.5j, dtype=C128)), "last dimension must be 1"),
        (dict(z=torch.full((3, 1), 0.5j, dtype=C128)), "do not broadcast"),
        (dict(z=0.5), r"Im z > 0"),
        (dict(z=torch.tensor([[0.5j], [1 - 1e-9j]], dtype=C128)), r"Im z > 0"),
    ]
    for change, msg in bad:
        args = dict(a=a, k=k, z=z) | change
        for backend in ("auto", "reference"):
            with pytest.raises(ValueError, match=msg):
                causal_green(**args, backend=backend)
    with pytest.raises(ValueError, match="backend must be"):
        causal_green(a, k, z, backend="cuda-graphs")  # no such backend
    if "triton" in green._BACKENDS and not a.is_cuda:
        with pytest.raises(ValueError, match="runs on CUDA"):
            causal_green(a, k, z, backend="triton")


def test_value_checks_can_be_skipped_outside_debug_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """check_values=False skips exactly the two value checks (each a host sync on a GPU):
    shapes are still checked, and debug mode checks the values anyway."""
    a = torch.zeros(2, 5, dtype=F64)
    k = torch.ones(2, 5, dtype=F64)
    z = torch.full((2, 1), 0.5j, dtype=C128)

    def no_sync(*_: object) -> None:
        raise AssertionError("a value check ran")

    want = causal_green_reference(a, k, z)
    with monkeypatch.context() as patch:
        patch.setattr(torch.Tensor, "all", no_sync)
        got = causal_green(a, k, z, check_values=False)
    torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="same, non-zero last"):
        causal_green(a, k[:, :4], z, check_values=False)
    with resnetbk.debug_checks(), pytest.raises(ValueError, match="k must be >= 0"):
        causal_green(a, -k, z, check_values=False)
    with resnetbk.debug_checks(), pytest.raises(ValueError, match=r"Im z > 0"):
        causal_green(a, k, z.conj(), check_values=False)


def test_resolvent_bad_inputs_raise_value_error() -> None:
    a = torch.zeros(5, dtype=F64)
    b = torch.ones(4, dtype=F64)
    with pytest.raises(ValueError, match="b and c need last dimension N-1"):
        resolvent_diag(a, b[:3], b, 0.5j)
    with pytest.raises(ValueError, match=r"c is torch\.float32"):
        resolvent_diag(a, b, b.float(), 0.5j)
    with pytest.raises(ValueError, match=r"b \* c must be >= 0"):
        resolvent_diag(a, b, -b, 0.5j)
    with pytest.raises(ValueError, match=r"Im z > 0"):
        resolvent_diag(a, b, b, -0.5j)


# ----------------------------------------------------------------------------- full resolvent


@pytest.mark.parametrize("n", [1, 2, 5, 64, 200])
def test_resolvent_matches_dense_inverse(gen: torch.Generator, n: int) -> None:
    a, k = chain(gen, (2, n))
    b, c = split(gen, k[:, :-1])
    z = energies(gen, (2, 1))
    got = resolvent_diag(a, b, c, z)
    for row in range(2):
        h = dense(a[row].numpy(), b[row].numpy(), c[row].numpy(), complex(z[row, 0]))
        want = np.diag(np.linalg.inv(h))
        np.testing.assert_allclose(got[row].numpy(), want, rtol=1e-10, atol=0)


def test_resolvent_float32_within_documented_bound(gen: torch.Generator) -> None:
    n = 128
    z = tiny_im_energies(4)
    for name, a64, k64 in adversarial(gen, 4, n):
        # Symmetric split: a random one makes the dense inverse's off-diagonal entries grow like
        # prod sqrt(b/c) (a random walk in the exponent) and overflow the oracle itself.
        a, b = f32_exact(a64, torch.sqrt(k64[:, :-1]))
        c = b
        got = resolvent_diag(a.float(), b.float(), c.float(), z.to(torch.complex64))
        for row in range(4):
            h = dense(a[row].numpy(), b[row].numpy(), c[row].numpy(), complex(z[row, 0]))
            want = torch.from_numpy(np.diag(np.linalg.inv(h)).copy())
            err = float((got[row].to(C128) - want).abs().max() * z[row, 0].imag)
            assert err < F32_BOUND, name


def test_resolvent_gradcheck(gen: torch.Generator) -> None:
    a, k = chain(gen, (2, 2, 6))
    b, c = split(gen, k[..., :-1] + 0.1)
    z = energies(gen, (2, 1))
    inputs = tuple(x.requires_grad_() for x in (a, b, c, z))
    assert torch.autograd.gradcheck(resolvent_diag, inputs)


def test_resolvent_gradient_matches_green_identity(gen: torch.Generator) -> None:
    """d G_ii / d a_j = -G_ij G_ji and d G_ii / d z = sum_j G_ij G_ji (= [G^2]_ii)."""
    n = 12
    a, k = chain(gen, (n,))
    b, c = split(gen, k[:-1])
    z = complex(energies(gen, (1,))[0])
    ginv = np.linalg.inv(dense(a.numpy(), b.numpy(), c.numpy(), z))
    jac = torch.autograd.functional.jacobian(
        lambda x: torch.view_as_real(resolvent_diag(x, b, c, z)), a
    )
    jac = torch.complex(jac[:, 0], jac[:, 1]).numpy()  # d G_ii / d a_j (a real)
    np.testing.assert_allclose(jac, -(ginv * ginv.T), rtol=1e-9, atol=1e-12)


def test_resolvent_long_sequence_is_finite_and_symmetric_under_reversal(
    gen: torch.Generator,
) -> None:
    n = 2**14
    z = tiny_im_energies(2)
    for name, a, k in adversarial(gen, 2, n):
        b = torch.sqrt(k[:, :-1])
        got = resolvent_diag(a, b, b, z)
        flipped = resolvent_diag(a.flip(-1), b.flip(-1), b.flip(-1), z).flip(-1)
        assert bool(torch.isfinite(torch.view_as_real(got)).all()), name
        assert rel_err(got, flipped.to(C128)) < 1e-9, name
