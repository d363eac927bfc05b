"""Mueller elements: py-pol as the independent oracle, physics identities, passivity, gradients
and bad input. Convention map (docs/OPTICS.md): our angles and retardances are py-pol's azimuth
and R; rotator(rho) is py-pol's retarder_circular(R=2 rho, kind='l')."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd import gradcheck

from resnetbk.optics import mueller as mu
from resnetbk.optics.lorentz import mueller_to_lorentz, rapidity

F64 = torch.float64
N = 64


def uniform(gen: torch.Generator, low: float, high: float, n: int = N) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen, dtype=F64)


def transmittances(gen: torch.Generator, n: int = N) -> tuple[torch.Tensor, torch.Tensor]:
    """t_max in (0, 1], t_min in [0, t_max], with exact 1 and 0 among them."""
    t_max = uniform(gen, 0.05, 1.0, n)
    t_min = t_max * torch.rand(n, generator=gen, dtype=F64)
    t_max[0], t_min[1] = 1.0, 0.0
    return t_max, t_min


def pypol(matrices: object) -> torch.Tensor:
    """py-pol's (4, 4, N) Mueller array as (N, 4, 4)."""
    return torch.as_tensor(matrices.M, dtype=F64).permute(2, 0, 1)


def test_elements_match_pypol(gen: torch.Generator) -> None:
    pytest.importorskip("py_pol")
    from py_pol.mueller import Mueller

    angle = uniform(gen, -math.pi, 2 * math.pi)
    ret = uniform(gen, -2 * math.pi, 2 * math.pi)
    t_max, t_min = transmittances(gen)
    a, r, q, s = angle.numpy(), ret.numpy(), t_max.numpy(), t_min.numpy()
    cases = {
        "diattenuator": (mu.diattenuator(t_max, t_min, angle),
                         Mueller().diattenuator_linear(Tmax=q, Tmin=s, azimuth=a)),
        "polarizer": (mu.polarizer(angle), Mueller().diattenuator_perfect(azimuth=a)),
        "retarder": (mu.retarder(ret, angle), Mueller().retarder_linear(R=r, azimuth=a)),
        "qwp": (mu.qwp(angle), Mueller().quarter_waveplate(azimuth=a)),
        "hwp": (mu.hwp(angle), Mueller().half_waveplate(azimuth=a)),
        "rotator": (mu.rotator(angle), Mueller().retarder_circular(R=2 * a, kind="l")),
        "diattenuating_retarder": (
            mu.diattenuating_retarder(t_max, t_min, ret, angle),
            Mueller().diattenuator_retarder_linear(R=r, Tmax=q, Tmin=s, azimuth=a)),
        "depolarizer": (mu.depolarizer(t_min / t_max, t_max),
                        Mueller().depolarizer_diagonal(s, M00=q)),
    }
    for name, (ours, theirs) in cases.items():
        torch.testing.assert_close(ours, pypol(theirs), rtol=0, atol=1e-12, msg=name)
    tr, rf = mu.polarizing_beam_splitter(angle, t_max / 2, t_min / 2)
    q2, s2 = q / 2, s / 2
    torch.testing.assert_close(tr, pypol(Mueller().diattenuator_linear(Tmax=q2, Tmin=s2,
                                                                       azimuth=a)), atol=1e-12,
                               rtol=0)
    torch.testing.assert_close(rf, pypol(Mueller().diattenuator_linear(
        Tmax=q2, Tmin=s2, azimuth=a + math.pi / 2)), atol=1e-12, rtol=0)


def test_float32_matches_float64(gen: torch.Generator) -> None:
    angle, ret = uniform(gen, 0, math.pi), uniform(gen, 0, 2 * math.pi)
    t_max, t_min = transmittances(gen)
    ref = mu.diattenuating_retarder(t_max, t_min, ret, angle)
    low = mu.diattenuating_retarder(t_max.float(), t_min.float(), ret.float(), angle.float())
    assert low.dtype == torch.float32
    torch.testing.assert_close(low.double(), ref, rtol=0, atol=2e-6)


def test_rotated_element_is_conjugated_by_rotators(gen: torch.Generator) -> None:
    angle, ret = uniform(gen, -3, 3), uniform(gen, 0, 2 * math.pi)
    t_max, t_min = transmittances(gen)
    at_zero = mu.diattenuating_retarder(t_max, t_min, ret, 0.0 * angle)
    turned = mu.rotator(angle) @ at_zero @ mu.rotator(-angle)
    torch.testing.assert_close(turned, mu.diattenuating_retarder(t_max, t_min, ret, angle),
                               rtol=0, atol=1e-14)


def test_retarder_is_rotation_about_its_axis(gen: torch.Generator) -> None:
    angle, ret = uniform(gen, 0, math.pi), uniform(gen, 0, 2 * math.pi)
    m = mu.retarder(ret, angle)
    r = m[:, 1:, 1:]
    eye = torch.eye(3, dtype=F64).expand_as(r)
    torch.testing.assert_close(r.mT @ r, eye, rtol=0, atol=1e-14)
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(N, dtype=F64))
    axis = torch.stack([torch.cos(2 * angle), torch.sin(2 * angle), 0 * angle], -1)
    torch.testing.assert_close((r @ axis[..., None]).squeeze(-1), axis, rtol=0, atol=1e-14)
    # rotation angle -ret about the axis: trace = 1 + 2 cos(ret), and the sign from a
    # perpendicular vector p: (r p) x p points along +axis * sin(ret)
    torch.testing.assert_close(r.diagonal(dim1=-2, dim2=-1).sum(-1), 1 + 2 * torch.cos(ret))
    p = torch.stack([-torch.sin(2 * angle), torch.cos(2 * angle), 0 * angle], -1)
    rp = (r @ p[..., None]).squeeze(-1)
    torch.testing.assert_close((torch.linalg.cross(rp, p) * axis).sum(-1), torch.sin(ret),
                               rtol=0, atol=1e-14)


def test_hwp_reflects_azimuth(gen: torch.Generator) -> None:
    theta, alpha = uniform(gen, 0, math.pi), uniform(gen, 0, math.pi)
    out = mu.propagate(mu.hwp(theta), mu.stokes(1.0, alpha, 0.0 * alpha))
    torch.testing.assert_close(out, mu.stokes(1.0, 2 * theta - alpha, 0.0 * alpha), rtol=0,
                               atol=1e-14)


def test_qwp_at_45_makes_circular_light() -> None:
    quarter = mu.qwp(torch.tensor(math.pi / 4, dtype=F64))
    out = mu.propagate(quarter, mu.stokes(torch.tensor(2.0, dtype=F64), 0.0, 0.0))
    # Goldstein / py-pol sign: horizontal light through a QWP at +45 deg has S3 = +S0
    torch.testing.assert_close(out, torch.tensor([2.0, 0, 0, 2.0], dtype=F64), rtol=0,
                               atol=1e-15)


def test_diattenuator_rapidity_is_artanh_d(gen: torch.Generator) -> None:
    t_max = uniform(gen, 0.1, 1.0)
    t_min = t_max * uniform(gen, 1e-6, 1.0)
    angle = uniform(gen, 0, math.pi)
    m = mu.diattenuator(t_max, t_min, angle)
    d = mu.diattenuation(m)
    torch.testing.assert_close(d, (t_max - t_min) / (t_max + t_min))
    eta = 0.5 * torch.log(t_max / t_min)
    torch.testing.assert_close(torch.atanh(d), eta, rtol=1e-9, atol=1e-12)
    L = mueller_to_lorentz(m)
    torch.testing.assert_close(rapidity(L), eta, rtol=1e-9, atol=1e-12)
    # a boost along the axis (cos 2a, sin 2a, 0) with velocity tanh(eta)
    axis = torch.stack([torch.cos(2 * angle), torch.sin(2 * angle), 0 * angle], -1)
    torch.testing.assert_close(L[:, 1:, 0], torch.sinh(eta)[:, None] * axis, rtol=1e-9,
                               atol=1e-12)


def test_every_element_is_passive(gen: torch.Generator) -> None:
    angle, ret = uniform(gen, -3, 3), uniform(gen, -7, 7)
    t_max, t_min = transmittances(gen)
    retained = torch.rand(N, generator=gen, dtype=F64)
    elements = {
        "diattenuating_retarder": mu.diattenuating_retarder(t_max, t_min, ret, angle),
        "polarizer": mu.polarizer(angle), "retarder": mu.retarder(ret, angle),
        "qwp": mu.qwp(angle), "hwp": mu.hwp(angle), "rotator": mu.rotator(angle),
        "faraday": mu.faraday_rotator(-40.0, angle, 0.01),
        "depolarizer": mu.depolarizer(retained, t_max),
        "pbs_t": mu.polarizing_beam_splitter(angle, t_max / 2, t_min / 2)[0],
        "pbs_r": mu.polarizing_beam_splitter(angle, t_max / 2, t_min / 2)[1],
    }
    for name, m in elements.items():
        m = m.double()
        assert bool((mu.max_transmission(m) <= 1 + 1e-12).all()), name
        # M00 (1 + D) is the largest output over all unit-intensity polarised inputs
        s = torch.nn.functional.normalize(torch.randn(N, 3, generator=gen, dtype=F64), dim=-1)
        out = mu.propagate(m, torch.cat([torch.ones(N, 1, dtype=F64), s], -1).expand(
            *m.shape[:-2], 4))
        assert bool((out[..., 0] <= mu.max_transmission(m) + 1e-12).all()), name
    # the diattenuator reaches its bound t_max exactly
    m = mu.diattenuator(t_max, t_min, angle)
    torch.testing.assert_close(mu.max_transmission(m), t_max)


def test_pbs_ports_share_the_light(gen: torch.Generator) -> None:
    angle = uniform(gen, 0, math.pi)
    tr, rf = mu.polarizing_beam_splitter(angle)
    s = mu.stokes(1.0, uniform(gen, 0, math.pi), uniform(gen, -0.7, 0.7),
                  torch.rand(N, generator=gen, dtype=F64))
    total = mu.propagate(tr, s)[..., 0] + mu.propagate(rf, s)[..., 0]
    torch.testing.assert_close(total, s[..., 0], rtol=0, atol=1e-14)


def test_faraday_rotator_is_a_rotator(gen: torch.Generator) -> None:
    v, b, length = uniform(gen, -60, 60), uniform(gen, -1, 1), uniform(gen, 0, 0.05)
    torch.testing.assert_close(mu.faraday_rotator(v, b, length), mu.rotator(v * b * length))


def test_compose_order(gen: torch.Generator) -> None:
    a, b, c = (mu.retarder(uniform(gen, 0, 6, 1), uniform(gen, 0, 3, 1)) for _ in range(3))
    torch.testing.assert_close(mu.compose(a, b, c), c @ b @ a)
    # light through a horizontal polariser, then a vertical one: nothing passes
    crossed = mu.compose(mu.polarizer(0.0), mu.polarizer(math.pi / 2))
    assert float(crossed.abs().max()) < 1e-7
    assert mu.compose(a) is a


def test_stokes_helpers(gen: torch.Generator) -> None:
    p = torch.rand(N, generator=gen, dtype=F64)
    s = mu.stokes(uniform(gen, 0, 5), uniform(gen, 0, math.pi), uniform(gen, -0.78, 0.78), p)
    torch.testing.assert_close(mu.degree_of_polarization(s), p)
    out = mu.propagate(mu.polarizer(0.0).double(), mu.unpolarized(2.0).double())
    torch.testing.assert_close(out, torch.tensor([1.0, 1.0, 0, 0], dtype=F64))


def test_gradcheck_constructors(gen: torch.Generator) -> None:
    def leaf(low: float, high: float) -> torch.Tensor:
        return uniform(gen, low, high, 3).requires_grad_()

    t_max, frac = leaf(0.2, 0.9), leaf(0.1, 0.9)
    assert gradcheck(lambda q, f, d, a: mu.diattenuating_retarder(q, q * f, d, a),
                     (t_max, frac, leaf(-3, 3), leaf(-3, 3)))
    assert gradcheck(mu.rotator, (leaf(-3, 3),))
    assert gradcheck(mu.faraday_rotator, (leaf(-50, 50), leaf(-1, 1), leaf(0.001, 0.02)))
    assert gradcheck(mu.depolarizer, (leaf(0.1, 0.9), leaf(0.1, 0.9)))
    assert gradcheck(mu.stokes, (leaf(0.1, 2), leaf(0, 3), leaf(-0.7, 0.7), leaf(0.1, 0.9)))
    assert gradcheck(lambda a: mu.polarizing_beam_splitter(a, 0.9, 0.05), (leaf(0, 3),))
    # an ideal polariser's gradient in t_max and angle is finite (t_min = 0)
    q, a = leaf(0.2, 0.9), leaf(0, 3)
    mu.diattenuator(q, 0.0, a).sum().backward()
    assert bool(torch.isfinite(q.grad).all() and torch.isfinite(a.grad).all())


@pytest.mark.parametrize(("call", "match"), [
    (lambda: mu.diattenuator(-0.1, 0.0), "t_max must be non-negative"),
    (lambda: mu.diattenuator(0.5, -0.1), "t_min must be non-negative"),
    (lambda: mu.diattenuator(0.3, 0.5), "t_min must be <= t_max"),
    (lambda: mu.diattenuator(1.5, 0.5), r"t_max must be <= 1 \(a passive element\)"),
    (lambda: mu.retarder(float("nan")), "retardance must be finite"),
    (lambda: mu.polarizer(torch.tensor([0.0, float("inf")])), "angle must be finite"),
    (lambda: mu.rotator(torch.tensor([1, 2])), "angle must be float32 or float64"),
    (lambda: mu.retarder(torch.zeros(2), torch.zeros(3)), r"retardance\(2,\), angle\(3,\)"),
    (lambda: mu.retarder("0.5"), "retardance must be a float or a float tensor"),
    (lambda: mu.faraday_rotator(1.0, 1.0, -1.0), "length must be non-negative"),
    (lambda: mu.polarizing_beam_splitter(0.0, 0.9, 0.2), r"t_max \+ t_min must be <= 1"),
    (lambda: mu.depolarizer(1.5), r"retained must be in \[0, 1\]"),
    (lambda: mu.stokes(1.0, 0.0, 0.0, 1.2), r"degree must be in \[0, 1\]"),
    (lambda: mu.stokes(-1.0, 0.0, 0.0), "intensity must be non-negative"),
    (lambda: mu.unpolarized(float("nan")), "intensity must be finite"),
    (lambda: mu.compose(), "at least one"),
    (lambda: mu.compose(torch.eye(4), torch.eye(3)), r"matrices\[1\] must be a Mueller matrix"),
    (lambda: mu.propagate(torch.eye(4), torch.ones(3)), "stokes_vector must be a Stokes vector"),
    (lambda: mu.degree_of_polarization(torch.tensor([1.0, float("nan"), 0, 0])),
     "stokes_vector must be finite"),
])
def test_bad_input(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()
