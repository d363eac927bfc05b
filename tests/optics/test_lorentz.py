"""The Lorentz correspondence: normalised non-depolarising Mueller matrices are in SO+(3,1),
depolarising and singular ones are rejected, and Stokes vectors map to points of H^3."""

from __future__ import annotations

import math

import pytest
import torch

from resnetbk.geometry import convert, lorentz
from resnetbk.optics import lorentz as ol
from resnetbk.optics import mueller as mu

F64 = torch.float64
N = 32


def random_element(gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """A batch of random non-depolarising elements of one random kind."""
    def u(low: float, high: float) -> torch.Tensor:
        return (low + (high - low) * torch.rand(N, generator=gen, dtype=F64)).to(dtype)

    kind = int(torch.randint(0, 5, (1,), generator=gen))
    t_max = u(0.3, 1.0)
    t_min = t_max * u(0.05, 1.0)
    return [
        lambda: mu.diattenuating_retarder(t_max, t_min, u(-7, 7), u(-4, 4)),
        lambda: mu.retarder(u(-7, 7), u(-4, 4)),
        lambda: mu.rotator(u(-4, 4)),
        lambda: mu.faraday_rotator(u(-50, 50), u(-1, 1), u(0, 0.05)),
        lambda: mu.polarizing_beam_splitter(u(0, 3), t_max / 2, t_min / 2)[0],
    ][kind]()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_compositions_are_lorentz(gen: torch.Generator, dtype: torch.dtype) -> None:
    m = mu.compose(*(random_element(gen, dtype) for _ in range(6)))
    L = ol.mueller_to_lorentz(m)
    assert L.dtype == dtype
    L = L.double()
    G = ol.minkowski_metric(L)
    scale = torch.linalg.vector_norm(L, dim=-2)
    tol = 1e-12 if dtype == F64 else 1e-5
    assert bool(((L.mT @ G @ L - G).abs() <= tol * scale[:, :, None] * scale[:, None]).all())
    torch.testing.assert_close(torch.linalg.det(L), torch.ones(N, dtype=F64), rtol=0,
                               atol=1e-10 if dtype == F64 else 1e-3)
    assert bool((L[:, 0, 0] >= 1 - tol).all())
    # the gain k = det(M)^(1/4) is passive: k e^eta = M00 (1 + D) <= 1
    k = torch.linalg.det(m.double()).pow(0.25)
    torch.testing.assert_close(k * torch.exp(ol.rapidity(L)), mu.max_transmission(m.double()),
                               rtol=1e-9 if dtype == F64 else 1e-4, atol=0)
    assert bool((mu.max_transmission(m.double()) <= 1 + tol).all())


def test_mueller_action_is_lorentz_action(gen: torch.Generator) -> None:
    m = mu.compose(*(random_element(gen, F64) for _ in range(4)))
    s = mu.stokes(1.0, torch.rand(N, generator=gen, dtype=F64) * 3,
                  torch.rand(N, generator=gen, dtype=F64) - 0.5,
                  0.95 * torch.rand(N, generator=gen, dtype=F64))
    c = 0.7
    moved = ol.stokes_to_lorentz(mu.propagate(m, s), c=c)
    expected = (ol.mueller_to_lorentz(m) @ ol.stokes_to_lorentz(s, c=c)[..., None]).squeeze(-1)
    torch.testing.assert_close(moved, expected, rtol=1e-10, atol=1e-12)


def test_round_trip_accuracy_vs_rapidity(gen: torch.Generator) -> None:
    """ol.mueller_to_lorentz(gain L) = L to 1e-10 relative up to rapidity 6 in float64 (the
    determinant's conditioning, ~eps e^(2 eta), limits it beyond: docs/OPTICS.md)."""
    eta = torch.linspace(0, 6, N, dtype=F64)
    L = ol.random_lorentz(eta, generator=gen)
    gain = 0.5 * torch.exp(-eta)
    back = ol.mueller_to_lorentz(ol.lorentz_to_mueller(L, gain))
    err = (back - L).abs().amax((-2, -1)) / L.abs().amax((-2, -1))
    assert float(err.max()) < 1e-10
    torch.testing.assert_close(ol.rapidity(L), eta, rtol=1e-12, atol=1e-14)
    assert float(ol.lorentz_defect(L).max()) < 1e-14
    # default gain: the largest passive one, max transmission exactly 1
    torch.testing.assert_close(mu.max_transmission(ol.lorentz_to_mueller(L)),
                               torch.ones(N, dtype=F64))


@pytest.mark.parametrize(("matrix", "match"), [
    (lambda: mu.depolarizer(0.5), "not a Lorentz transform: L\\^T G L = G fails"),
    (lambda: 0.5 * (mu.polarizer(0.0) + mu.polarizer(math.pi / 2)), "singular"),
    (lambda: mu.polarizer(0.3), "singular"),
    (lambda: 0.5 * (mu.retarder(1.0, 0.2) + mu.retarder(2.0, 1.0)), "not a Lorentz"),
    (lambda: torch.diag(torch.tensor([1.0, -1.0, 1.0, 1.0])), "singular or improper"),
    (lambda: torch.diag(torch.tensor([-1.0, -1.0, 1.0, 1.0])), "not orthochronous"),
    (lambda: torch.full((4, 4), float("nan")), "M must be finite"),
    (lambda: torch.eye(3), r"M must be a Mueller matrix of shape \(\.\.\., 4, 4\)"),
    (lambda: torch.eye(4, dtype=torch.float16), "M must be float32 or float64"),
])
def test_mueller_to_lorentz_rejects(matrix, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ol.mueller_to_lorentz(matrix())


def test_partial_depolariser_fails_by_its_defect() -> None:
    # 1e-3 depolarisation is far outside the float64 tolerance; rtol can admit it
    m = mu.depolarizer(torch.tensor(1 - 1e-3, dtype=F64))
    with pytest.raises(ValueError, match="relative error"):
        ol.mueller_to_lorentz(m)
    ol.mueller_to_lorentz(m, rtol=1e-2)


def test_lorentz_to_mueller_rejects(gen: torch.Generator) -> None:
    L = ol.random_lorentz(torch.tensor([1.0, 2.0], dtype=F64), generator=gen)
    with pytest.raises(ValueError, match="gain must be positive"):
        ol.lorentz_to_mueller(L, 0.0)
    with pytest.raises(ValueError, match="not a Lorentz transform"):
        ol.lorentz_to_mueller(L + 0.01)


def random_stokes(gen: torch.Generator, max_degree: float = 0.999) -> torch.Tensor:
    p = max_degree * torch.rand(N, generator=gen, dtype=F64)
    return mu.stokes(0.1 + torch.rand(N, generator=gen, dtype=F64),
                     3 * torch.rand(N, generator=gen, dtype=F64),
                     torch.rand(N, generator=gen, dtype=F64) - 0.5, p)


@pytest.mark.parametrize("c", [0.5, 1.0, 2.5])
def test_stokes_points(gen: torch.Generator, c: float) -> None:
    s = random_stokes(gen)
    x = ol.stokes_to_lorentz(s, c=c)
    torch.testing.assert_close(lorentz.inner(x, x), torch.full((N,), -1 / c, dtype=F64))
    # degree of polarisation P = tanh(rapidity), rapidity = sqrt(c) * distance from the origin
    torch.testing.assert_close(torch.tanh(math.sqrt(c) * lorentz.dist0(x, c=c)),
                               mu.degree_of_polarization(s))
    k = ol.stokes_to_klein(s, c=c)
    torch.testing.assert_close(k, convert.lorentz_to_klein(x, c=c))
    torch.testing.assert_close(ol.stokes_to_poincare(s, c=c), convert.lorentz_to_poincare(x, c=c))
    unit = s / s[:, :1]
    torch.testing.assert_close(ol.lorentz_to_stokes(x, c=c), unit)
    torch.testing.assert_close(ol.klein_to_stokes(k, c=c, intensity=s[:, 0]), s)
    torch.testing.assert_close(ol.poincare_to_stokes(ol.stokes_to_poincare(s, c=c), c=c), unit)
    # s / S0 is the Klein coordinate, not the Poincaré one
    assert not torch.allclose(ol.stokes_to_poincare(s, c=c), k)


def test_stokes_bad_input() -> None:
    with pytest.raises(ValueError, match="fully polarised light lies at infinity"):
        ol.stokes_to_lorentz(torch.tensor([2.0, 0.0, 2.0, 0.0]))
    with pytest.raises(ValueError, match=r"degree of polarisation \|s\|/S0 must be <= 1"):
        ol.stokes_to_klein(torch.tensor([1.0, 1.0, 1.0, 0.0]))
    ol.stokes_to_klein(mu.stokes(1.0, 0.3, 0.1))  # P = 1 is the boundary of the Klein ball
    with pytest.raises(ValueError, match="S0 must be positive"):
        ol.stokes_to_poincare(torch.zeros(4))
    with pytest.raises(ValueError, match="c must be > 0"):
        ol.stokes_to_klein(torch.tensor([1.0, 0.0, 0.0, 0.0]), c=-1.0)
    with pytest.raises(ValueError, match=r"k must be a Klein point of shape \(\.\.\., 3\)"):
        ol.klein_to_stokes(torch.zeros(4))
    with pytest.raises(ValueError, match=r"sqrt\(c\)\|k\| must be <= 1"):
        ol.klein_to_stokes(torch.tensor([0.8, 0.8, 0.0]))
