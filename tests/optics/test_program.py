"""compile_lorentz: programs of six waveplates and one partial polariser reproduce L (1e-10 in
float64 up to rapidity 10 and beyond), are passive, report realisability, and are
differentiable in their knobs."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd import gradcheck

from resnetbk.optics import mueller as mu
from resnetbk.optics.lorentz import mueller_to_lorentz, random_lorentz, rapidity
from resnetbk.optics.program import Element, OpticalProgram, compile_lorentz

F64 = torch.float64
N = 48


def rel_err(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """max |a - b| / max |b| per matrix."""
    return (a.double() - b.double()).abs().amax((-2, -1)) / b.double().abs().amax((-2, -1))


def euler_zyz(alpha: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """Z(alpha) Y(beta) Z(gamma) as a 4x4 Mueller rotation (right-handed, on S1, S2, S3)."""
    def axis_rotation(t: torch.Tensor, i: int, j: int) -> torch.Tensor:
        r = torch.eye(4, dtype=F64).repeat(*t.shape, 1, 1)
        r[..., i, i] = r[..., j, j] = torch.cos(t)
        r[..., i, j], r[..., j, i] = -torch.sin(t), torch.sin(t)
        return r

    return axis_rotation(alpha, 1, 2) @ axis_rotation(beta, 3, 1) @ axis_rotation(gamma, 1, 2)


def test_qhq_gadget_is_zyz(gen: torch.Generator) -> None:
    t1, t2, t3 = (math.pi * torch.rand(N, generator=gen, dtype=F64) for _ in range(3))
    plates = mu.compose(mu.qwp(t3), mu.hwp(t2), mu.qwp(t1))
    torch.testing.assert_close(plates, euler_zyz(2 * t1, 4 * t2 - 2 * t1 - 2 * t3, -2 * t3),
                               rtol=0, atol=1e-14)


def test_reproduces_random_lorentz(gen: torch.Generator) -> None:
    eta = 10 * torch.rand(N, generator=gen, dtype=F64)
    eta[:4] = torch.tensor([0.0, 1e-12, 1e-6, 10.0])
    L = random_lorentz(eta, generator=gen)
    program = compile_lorentz(L)
    assert [e.kind for e in program.elements] == [
        "qwp", "hwp", "qwp", "diattenuator", "qwp", "hwp", "qwp"]
    assert float(rel_err(program.lorentz(), L).max()) < 1e-10
    m = program.mueller()
    torch.testing.assert_close(m, program.transmission[:, None, None] * L,
                               rtol=0, atol=1e-12)
    # passivity: transmission = t_max e^-eta, and no input polarisation gains light
    torch.testing.assert_close(program.transmission, torch.exp(-eta), rtol=1e-12, atol=0)
    assert bool((mu.max_transmission(m) <= 1 + 1e-12).all())
    # mueller_to_lorentz (det-normalised) agrees where the determinant is well conditioned
    mid = eta <= 6
    assert float(rel_err(mueller_to_lorentz(m[mid]), L[mid]).max()) < 1e-10


@pytest.mark.parametrize("eta", [12.0, 15.0, 18.0])
def test_large_boosts(gen: torch.Generator, eta: float) -> None:
    L = random_lorentz(torch.full((N,), eta, dtype=F64), generator=gen)
    assert float(rel_err(compile_lorentz(L).lorentz(), L).max()) < 1e-13


def test_gimbal_lock_rotations(gen: torch.Generator) -> None:
    """Rotations about S3 only (beta = 0) and with beta = pi: the Euler angles are degenerate."""
    a, b = (4 * torch.rand(N, generator=gen, dtype=F64) - 2 for _ in range(2))
    zero, pi = torch.zeros(N, dtype=F64), torch.full((N,), math.pi, dtype=F64)
    eps = torch.full((N,), 1e-9, dtype=F64)
    for beta in (zero, pi, eps, pi - eps):
        boost = random_lorentz(torch.rand(N, generator=gen, dtype=F64), generator=gen)
        for L in (euler_zyz(a, beta, b), euler_zyz(a, beta, b) @ boost):
            assert float(rel_err(compile_lorentz(L).lorentz(), L).max()) < 1e-13


def test_float32(gen: torch.Generator) -> None:
    eta = 8 * torch.rand(N, generator=gen, dtype=F64)
    L = random_lorentz(eta, generator=gen, dtype=torch.float32)
    program = compile_lorentz(L)
    assert program.mueller().dtype == torch.float32
    assert float(rel_err(program.lorentz(), L).max()) < 1e-5


def test_elements_and_realisability(gen: torch.Generator) -> None:
    eta = torch.tensor([0.5, 2.0, 3.0], dtype=F64)
    program = compile_lorentz(random_lorentz(eta, generator=gen), t_max=0.9)
    boost = program.elements[3]
    torch.testing.assert_close(boost.extinction_ratio, torch.exp(2 * eta))
    torch.testing.assert_close(program.transmission, 0.9 * torch.exp(-eta))
    for e in program.elements:
        assert bool(((e.angle >= 0) & (e.angle < math.pi)).all())
        if e.kind in ("qwp", "hwp"):
            expected = math.pi / 2 if e.kind == "qwp" else math.pi
            torch.testing.assert_close(e.retardance, torch.full((3,), expected, dtype=F64))
            torch.testing.assert_close(e.extinction_ratio, torch.ones(3, dtype=F64))
    assert program.realisable(100.0).tolist() == [True, True, False]  # e^4 = 55, e^6 = 403
    assert program.realisable(math.exp(6) * 1.01).tolist() == [True, True, True]
    assert program.realisable(10.0).tolist() == [True, False, False]


def test_indexing_concatenation_and_describe(gen: torch.Generator) -> None:
    L = random_lorentz(2 * torch.rand(3, generator=gen, dtype=F64), generator=gen)
    program = compile_lorentz(L)
    one = program[1]
    torch.testing.assert_close(one.mueller(), compile_lorentz(L[1]).mueller())
    text = one.describe()
    assert "diattenuator" in text and text.count("qwp") == 4 and "transmission" in text
    with pytest.raises(ValueError, match="describe needs an unbatched program"):
        program.describe()
    both = program + program
    torch.testing.assert_close(both.mueller(), program.mueller() @ program.mueller())
    torch.testing.assert_close(both.lorentz(), L @ L, rtol=1e-12, atol=1e-10)


def test_gradcheck_program_knobs(gen: torch.Generator) -> None:
    def leaf(low: float, high: float) -> torch.Tensor:
        return (low + (high - low) * torch.rand(2, generator=gen, dtype=F64)).requires_grad_()

    angles = [leaf(0, math.pi) for _ in range(5)]
    rets = [leaf(0, 2 * math.pi) for _ in range(4)]
    eta, t_max = leaf(0.1, 2.0), leaf(0.5, 0.9)

    def simulate(*knobs: torch.Tensor) -> torch.Tensor:
        a, r, (e, q) = knobs[:5], knobs[5:9], knobs[9:]
        return OpticalProgram((Element.retarder(r[0], a[0]), Element.retarder(r[1], a[1]),
                               Element.boost(e, a[2], t_max=q), Element.retarder(r[2], a[3]),
                               Element.retarder(r[3], a[4], transmission=q))).mueller()

    assert gradcheck(simulate, (*angles, *rets, eta, t_max))
    # and through the compiled program's knobs
    program = compile_lorentz(random_lorentz(torch.tensor([1.5], dtype=F64), generator=gen))
    knobs = [e.angle.detach().clone().requires_grad_() for e in program.elements]

    def compiled(*a: torch.Tensor) -> torch.Tensor:
        return OpticalProgram(tuple(Element(e.kind, x, e.retardance, e.t_max, e.t_min)
                                    for e, x in zip(program.elements, a, strict=True))).lorentz()

    assert gradcheck(compiled, tuple(knobs))


def test_passive_diattenuator_gain(gen: torch.Generator) -> None:
    eta = 3 * torch.rand(N, generator=gen, dtype=F64)
    e = Element.boost(eta, 0.4, t_max=0.8)
    torch.testing.assert_close(rapidity(mueller_to_lorentz(e.mueller())), eta, rtol=1e-10,
                               atol=1e-12)
    torch.testing.assert_close(e.transmission, 0.8 * torch.exp(-eta))


@pytest.mark.parametrize(("make", "match"), [
    (lambda: compile_lorentz(torch.eye(4) + 0.1), "L is not a Lorentz transform"),
    (lambda: compile_lorentz(torch.diag(torch.tensor([1.0, -1.0, 1.0, 1.0]))), "improper"),
    (lambda: compile_lorentz(-torch.eye(4)), "not orthochronous"),
    (lambda: compile_lorentz(torch.eye(3)), r"L must be a 4x4 matrix of shape \(\.\.\., 4, 4\)"),
    (lambda: compile_lorentz(torch.full((4, 4), float("nan"))), "L must be finite"),
    (lambda: compile_lorentz(torch.eye(4), t_max=1.2), "t_max must be <= 1"),
    (lambda: Element.boost(-1.0), "rapidity must be non-negative"),
    (lambda: Element("mirror", 0.0, 0.0, 1.0, 1.0), "kind must be one of"),
    (lambda: Element.diattenuator(0.2, 0.5, 0.0), "t_min must be <= t_max"),
    (lambda: OpticalProgram(()), "at least one Element"),
    (lambda: OpticalProgram((Element.retarder(torch.zeros(2), 0.0),
                             Element.retarder(torch.zeros(3), 0.0))), "do not broadcast"),
    (lambda: OpticalProgram((Element.diattenuator(1.0, 0.0, 0.0),)).lorentz(),
     "program transmission must be positive"),
    (lambda: compile_lorentz(torch.eye(4)).realisable(0.5), "max_extinction_ratio must be"),
])
def test_bad_input(make, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()
