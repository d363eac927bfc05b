"""Nonlinear activations: limits, monotonicity, dtypes, gradients (gradcheck, and finite
differences for the implicit SBS solve), bad input; the SBS solution against a 60-digit mpmath
solve, its conservation law and invariant, and an independent integration of the coupled
equations."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd import gradcheck

from resnetbk.optics import mueller as mu
from resnetbk.optics import nonlinear as nl

F64 = torch.float64
N = 64


def log_uniform(gen: torch.Generator, low: float, high: float, n: int = N) -> torch.Tensor:
    """10**U(log10 low, log10 high)."""
    lo, hi = math.log10(low), math.log10(high)
    return 10 ** (lo + (hi - lo) * torch.rand(n, generator=gen, dtype=F64))


def sbs_inputs(gen: torch.Generator, n: int = N, ratio: tuple[float, float] = (1e-12, 1e3),
               log_gain: tuple[float, float] = (1e-4, 50.0)
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(signal, pump, gain) over the regimes: signal/pump in ``ratio``, gain * pump in
    ``log_gain`` (small-signal log-gain), pump in [1e-3, 1] W."""
    pump = log_uniform(gen, 1e-3, 1.0, n)
    signal = pump * log_uniform(gen, *ratio, n)
    gain = log_uniform(gen, *log_gain, n) / pump
    return signal, pump, gain


# --- EIT and saturable absorber ---------------------------------------------------------------


def test_eit_limits(gen: torch.Generator) -> None:
    od = 20 * torch.rand(N, generator=gen, dtype=F64)
    p_sat = log_uniform(gen, 1e-6, 1.0)
    zero = torch.zeros(N, dtype=F64)
    assert torch.equal(nl.eit_transmission(zero, od, p_sat), torch.exp(-od))
    small = nl.eit_transmission(1e-12 * p_sat, od, p_sat)
    torch.testing.assert_close(small, torch.exp(-od), rtol=1e-10, atol=0)
    big = nl.eit_transmission(1e12 * p_sat, od, p_sat)
    assert bool((1 - big <= 2e-11).all())  # T = exp(-od / (1 + 1e12)) ~ 1 - od 1e-12
    assert torch.equal(nl.eit_activation(zero, od, p_sat), zero)


def test_saturable_absorber_limits_and_passivity(gen: torch.Generator) -> None:
    depth = torch.rand(N, generator=gen, dtype=F64)
    loss = (1 - depth) * torch.rand(N, generator=gen, dtype=F64)
    p_sat = log_uniform(gen, 1e-6, 1.0)
    zero = torch.zeros(N, dtype=F64)
    t0 = nl.saturable_absorber_transmission(zero, depth, p_sat, loss)
    torch.testing.assert_close(t0, 1 - loss - depth, rtol=0, atol=1e-15)
    t_inf = nl.saturable_absorber_transmission(1e14 * p_sat, depth, p_sat, loss)
    torch.testing.assert_close(t_inf, 1 - loss, rtol=0, atol=1e-13)
    power = log_uniform(gen, 1e-9, 1e3)
    t = nl.saturable_absorber_transmission(power, depth, p_sat, loss)
    assert bool(((t >= 0) & (t <= 1)).all())


@pytest.mark.parametrize("kind", ["eit", "sa"])
def test_monotone(gen: torch.Generator, kind: str) -> None:
    """Transmission and output power both rise with the input power."""
    power = torch.sort(log_uniform(gen, 1e-6, 1e3, 256)).values
    if kind == "eit":
        t = nl.eit_transmission(power, 7.5, 0.3)
        out = nl.eit_activation(power, 7.5, 0.3)
    else:
        t = nl.saturable_absorber_transmission(power, 0.6, 0.3, 0.1)
        out = nl.saturable_absorber_activation(power, 0.6, 0.3, 0.1)
    assert bool((t.diff() >= 0).all()) and bool((out.diff() > 0).all())


def test_closed_forms_float32_matches_float64(gen: torch.Generator) -> None:
    power = log_uniform(gen, 1e-4, 1e2)
    p32 = power.float()
    for f, args in ((nl.eit_activation, (6.0, 0.5)),
                    (nl.saturable_absorber_activation, (0.4, 0.5, 0.05))):
        out32 = f(p32, *args)
        assert out32.dtype == torch.float32
        torch.testing.assert_close(out32.double(), f(p32.double(), *args), rtol=2e-6, atol=0)


def test_closed_forms_gradcheck(gen: torch.Generator) -> None:
    power = log_uniform(gen, 1e-2, 10.0, 8).requires_grad_()
    od = (1 + 5 * torch.rand(8, generator=gen, dtype=F64)).requires_grad_()
    p_sat = log_uniform(gen, 0.1, 3.0, 8).requires_grad_()
    depth = (0.5 * torch.rand(8, generator=gen, dtype=F64)).requires_grad_()
    loss = (0.4 * torch.rand(8, generator=gen, dtype=F64)).requires_grad_()
    for f in (nl.eit_transmission, nl.eit_activation):
        assert gradcheck(f, (power, od, p_sat))
    for f in (nl.saturable_absorber_transmission, nl.saturable_absorber_activation):
        assert gradcheck(f, (power, depth, p_sat, loss))


@pytest.mark.parametrize(("call", "name"), [
    (lambda: nl.eit_activation(torch.tensor([-1e-3], dtype=F64), 1.0, 1.0), "power"),
    (lambda: nl.eit_activation(torch.tensor([1.0], dtype=F64), -0.5, 1.0), "od"),
    (lambda: nl.eit_activation(torch.tensor([1.0], dtype=F64), 1.0, 0.0), "p_sat"),
    (lambda: nl.eit_activation(torch.tensor([math.nan], dtype=F64), 1.0, 1.0), "power"),
    (lambda: nl.eit_transmission(torch.tensor([1.0], dtype=F64), math.inf, 1.0), "od"),
    (lambda: nl.saturable_absorber_activation(torch.tensor([1.0]), -0.1, 1.0), "modulation_depth"),
    (lambda: nl.saturable_absorber_activation(torch.tensor([1.0]), 0.5, -2.0), "p_sat"),
    (lambda: nl.saturable_absorber_activation(torch.tensor([1.0]), 0.7, 1.0, 0.4),
     "modulation_depth"),
    (lambda: nl.saturable_absorber_activation(torch.tensor([1.0]), 0.1, 1.0, -0.1),
     "nonsaturable_loss"),
    (lambda: nl.sbs_amplifier(torch.tensor([-1.0], dtype=F64), 1.0, 1.0), "signal"),
    (lambda: nl.sbs_amplifier(torch.tensor([1.0], dtype=F64), 0.0, 1.0), "pump"),
    (lambda: nl.sbs_amplifier(torch.tensor([1.0], dtype=F64), 1.0, -1.0), "gain"),
    (lambda: nl.sbs_amplifier(torch.tensor([math.inf], dtype=F64), 1.0, 1.0), "signal"),
    (lambda: nl.sbs_amplifier(torch.tensor([1.0], dtype=F64), 1.0, math.nan), "gain"),
    (lambda: nl.sbs_amplifier(torch.tensor([1e-310], dtype=F64), 1.0, 1.0), "signal / pump"),
    (lambda: nl.brillouin_gain_per_watt(0.0), "length"),
    (lambda: nl.EITActivation(od=1.0, p_sat=0.0), "p_sat"),
    (lambda: nl.EITActivation(od=0.0, p_sat=1.0, learnable=True), "od"),
    (lambda: nl.SaturableAbsorber(modulation_depth=0.8, p_sat=1.0, nonsaturable_loss=0.3),
     "modulation_depth"),
    (lambda: nl.SBSAmplifier(pump=-1.0, gain=1.0), "pump"),
])
def test_bad_input_raises(call: object, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        call()


def test_wrong_dtype_raises() -> None:
    with pytest.raises(ValueError, match="power"):
        nl.eit_activation(torch.tensor([1], dtype=torch.int64), 1.0, 1.0)


# --- SBS amplifier ----------------------------------------------------------------------------


def mp_sbs(signal: float, pump: float, gain: float) -> float:
    """S_out by bisection in the log-gain t at 60 digits on the divided two-point relation
    (its spurious root C = 0 removed), written out independently of the library's forms."""
    mpmath = pytest.importorskip("mpmath")
    with mpmath.workdps(60):
        s, p, g = mpmath.mpf(signal), mpmath.mpf(pump), mpmath.mpf(gain)
        if s == 0:
            return 0.0
        b, a = s / p, g * p
        lo, hi = mpmath.mpf(0), min(a, mpmath.log1p(1 / b))
        for _ in range(240):
            t = (lo + hi) / 2
            s_out = s * mpmath.exp(t)
            p_out = s + p - s_out
            c = p - s_out  # = p_out - s
            if p_out <= 0:
                hi = t
                continue
            # ln(S_out P_out / (S P)) / (C g L) - 1 is decreasing in C, so increasing in t.
            lhs = (mpmath.log(s_out / p) + mpmath.log(p_out / s)) / c if c != 0 else 1 / s - 1 / p
            if lhs - g > 0:
                hi = t
            else:
                lo = t
        return float(s * mpmath.exp((lo + hi) / 2))


def test_sbs_matches_mpmath(gen: torch.Generator) -> None:
    signal, pump, gain = sbs_inputs(gen, 24)
    # Two elements near the removable point C = 0 (S_out = P_in): gain ~ 1/S - 1/P.
    signal[:2] = pump[:2] * 1e-3
    gain[:2] = (1 / signal[:2] - 1 / pump[:2]) * (1 + torch.tensor([1e-9, -1e-7], dtype=F64))
    out = nl.sbs_amplifier(signal, pump, gain).signal
    ref = torch.tensor([mp_sbs(*map(float, x)) for x in zip(signal, pump, gain, strict=True)],
                       dtype=F64)
    # exp(t) is as well conditioned as t itself: the error bound is a few ulp times max(1, t).
    t = torch.log(ref / signal)
    err = ((out - ref) / ref).abs()
    assert bool((err <= 16 * torch.finfo(F64).eps * torch.clamp(t, min=1.0)).all()), err.max()


def test_sbs_undepleted_limit(gen: torch.Generator) -> None:
    """S_in -> 0: gain exp(g_B P L / A_eff); S_in = 0 exactly: output 0, d S_out/d S_in = e^a."""
    _, pump, gain = sbs_inputs(gen, log_gain=(1e-3, 8.0))
    signal = 1e-14 * pump
    out = nl.sbs_amplifier(signal, pump, gain)
    torch.testing.assert_close(out.signal / signal, torch.exp(gain * pump), rtol=1e-9, atol=0)
    torch.testing.assert_close(out.pump, pump, rtol=1e-9, atol=0)
    zero = torch.zeros_like(pump).requires_grad_()
    out0 = nl.sbs_amplifier(zero, pump, gain)
    assert torch.equal(out0.signal, torch.zeros_like(pump)) and torch.equal(out0.pump, pump)
    (grad,) = torch.autograd.grad(out0.signal.sum(), zero)
    torch.testing.assert_close(grad, torch.exp(gain * pump), rtol=1e-14, atol=0)


def test_sbs_saturates_to_full_transfer() -> None:
    """A strong pump-limited amplifier hands (nearly) the whole pump to the signal."""
    out = nl.sbs_amplifier(torch.tensor([0.1, 1.0], dtype=F64), 1.0, 2000.0)
    torch.testing.assert_close(out.signal, torch.tensor([1.1, 2.0], dtype=F64), rtol=3e-16,
                               atol=0)
    # What is left of the pump, P_out = P_in e^{-gain S_in} b / (1 + b) (up to e^{-200}
    # corrections; b = S_in / P_in), is resolved to rounding, not lost to S_in + P_in - S_out.
    assert math.isclose(out.pump[0].item(), math.exp(-200.0) / 11, rel_tol=1e-13)
    assert out.pump[1].item() == 0.0  # e^{-2000}: below float64


def test_sbs_conservation_and_invariant(gen: torch.Generator) -> None:
    """Manley-Rowe with equal frequencies: S_out + P_out = S_in + P_in (P_out is computed as
    P_in d, independently of S_out); and the closed-form invariant of the coupled equations,
    ln(S_out P_out / (S_in P_in)) = gain (P_out - S_in)."""
    signal, pump, gain = sbs_inputs(gen)
    out = nl.sbs_amplifier(signal, pump, gain)
    total = signal + pump
    assert bool(((out.signal + out.pump - total).abs() <= 1e-12 * total).all())
    # A pump depleted below float64's normal range is subnormal (fewer significant bits): its
    # log is not accurate to 1e-12, so there the invariant is checked on P_out itself, to a
    # few units of the smallest subnormal (2^-1074).
    normal = out.pump >= torch.finfo(F64).tiny
    lhs = torch.log(out.signal / signal) + torch.log(out.pump / pump)
    rhs = gain * (out.pump - signal)
    assert bool(((lhs - rhs).abs() <= 1e-12 * (1 + lhs.abs() + rhs.abs()))[normal].all())
    predicted = pump * signal / out.signal * torch.exp(rhs)
    assert bool(((out.pump - predicted).abs() <= 64 * 2.0**-1074)[~normal].all())
    eps = torch.finfo(F64).eps
    assert bool((out.signal >= signal).all()) and bool((out.signal <= total * (1 + 4 * eps)).all())


def test_sbs_solves_the_coupled_equations(gen: torch.Generator) -> None:
    """Integrate dS/dz = g P S, dP/dz = g P S from z = 0 (S_in, P_out) to L: the signal must
    leave as S_out and the pump must have entered as P_in (scipy DOP853, rtol 1e-12)."""
    integrate = pytest.importorskip("scipy.integrate")
    signal, pump, gain = sbs_inputs(gen, 8, ratio=(1e-6, 2.0), log_gain=(0.1, 12.0))
    out = nl.sbs_amplifier(signal, pump, gain)
    for s, p, g, s_out, p_out in zip(signal.tolist(), pump.tolist(), gain.tolist(),
                                     out.signal.tolist(), out.pump.tolist(), strict=True):
        sol = integrate.solve_ivp(lambda _z, y, g=g: [g * y[0] * y[1]] * 2, (0.0, 1.0),
                                  [s, p_out], method="DOP853", rtol=1e-12, atol=0.0)
        assert sol.success
        assert math.isclose(sol.y[0, -1], s_out, rel_tol=1e-8)
        assert math.isclose(sol.y[1, -1], p, rel_tol=1e-8)


def test_sbs_monotone(gen: torch.Generator) -> None:
    signal = torch.sort(log_uniform(gen, 1e-9, 2.0, 256)).values  # P_out > 0 in float64
    out = nl.sbs_amplifier(signal, 0.05, 80.0)
    assert bool((out.signal.diff() > 0).all()) and bool((out.pump.diff() < 0).all())
    pump = torch.sort(log_uniform(gen, 1e-4, 1.0, 256)).values
    assert bool((nl.sbs_amplifier(1e-3, pump, 80.0).signal.diff() > 0).all())
    gain = torch.sort(log_uniform(gen, 1e-2, 1e3, 256)).values
    assert bool((nl.sbs_amplifier(1e-3, 0.05, gain).signal.diff() > 0).all())


def test_sbs_float32_is_the_rounded_float64_result(gen: torch.Generator) -> None:
    s32, p32, g32 = (x.float() for x in sbs_inputs(gen))
    out32 = nl.sbs_amplifier(s32, p32, g32)
    out64 = nl.sbs_amplifier(s32.double(), p32.double(), g32.double())
    assert out32.signal.dtype == torch.float32
    torch.testing.assert_close(out32.signal, out64.signal.float(), rtol=0, atol=0)
    torch.testing.assert_close(out32.pump, out64.pump.float(), rtol=0, atol=0)


def test_sbs_gradcheck(gen: torch.Generator) -> None:
    """IFT backward of both outputs in all three arguments (powers of order 1 so that
    gradcheck's absolute perturbation is small), including a strongly depleted element."""
    signal = log_uniform(gen, 1e-2, 1.0, 6)
    pump = log_uniform(gen, 0.3, 2.0, 6)
    gain = log_uniform(gen, 0.2, 8.0, 6)
    gain[0] = 30.0
    args = tuple(x.requires_grad_() for x in (signal, pump, gain))
    assert gradcheck(lambda s, p, g: tuple(nl.sbs_amplifier(s, p, g)), args)


def test_sbs_gradient_matches_finite_differences(gen: torch.Generator) -> None:
    """The issue's check: d(S_out, P_out)/d(S_in, P_in, gain) from the implicit-function
    theorem vs central differences with relative steps, over the regimes."""
    signal, pump, gain = sbs_inputs(gen, 32, ratio=(1e-9, 10.0), log_gain=(1e-3, 30.0))
    args = [x.clone().requires_grad_() for x in (signal, pump, gain)]
    out = nl.sbs_amplifier(*args)
    for k, y in enumerate(out):
        grads = torch.autograd.grad(y.sum(), args, retain_graph=True)
        for j, x in enumerate((signal, pump, gain)):
            h = 1e-6 * x
            up = [signal, pump, gain]
            dn = [signal, pump, gain]
            up[j], dn[j] = x + h, x - h
            fd = (nl.sbs_amplifier(*up)[k] - nl.sbs_amplifier(*dn)[k]) / (2 * h)
            # Central differences: truncation ~1e-12 relative, rounding ~eps |y| / h with
            # |y| <= S_in + P_in, allowed for with margin.
            bound = 1e-6 * fd.abs() + 1e-8 * (signal + pump) / x
            assert bool(((grads[j] - fd).abs() <= bound).all()), (k, j)


def test_sbs_gradient_overflow_raises() -> None:
    signal = torch.zeros(1, dtype=F64, requires_grad=True)
    out = nl.sbs_amplifier(signal, 1.0, 800.0).signal  # d S_out / d S_in = e^800 at S_in = 0
    with pytest.raises(ValueError, match="overflows"):
        out.sum().backward()


def test_sbs_non_convergence_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nl, "_MAX_ITER", 1)
    with pytest.raises(RuntimeError, match=r"gain\*pump in \[.*signal/pump in \["):
        nl.sbs_amplifier(torch.tensor([1e-3, 0.5], dtype=F64), 1.0, 30.0)


def test_brillouin_gain_per_watt() -> None:
    # 1 km of standard fibre: 5e-11 * 1e3 / 80e-12 = 625 per watt of pump.
    assert math.isclose(nl.brillouin_gain_per_watt(1e3), 625.0, rel_tol=1e-15)


# --- per-channel application and modules --------------------------------------------------


def test_per_channel_moves_the_point_only_when_nonlinear(gen: torch.Generator) -> None:
    """Split partially polarised light on a PBS: a nonlinear activation per channel changes
    S1/S0 (the point on H^3), a linear one (any polarisation-blind scaling) does not."""
    n = 16
    light = mu.stokes(log_uniform(gen, 0.1, 10.0, n), torch.rand(n, generator=gen, dtype=F64),
                      0.0, torch.rand(n, generator=gen, dtype=F64))
    m_t, m_r = (m.to(F64) for m in mu.polarizing_beam_splitter())
    p_t = (m_t @ light.unsqueeze(-1))[..., 0, 0]
    p_r = (m_r @ light.unsqueeze(-1))[..., 0, 0]
    before = (p_t - p_r) / (p_t + p_r)
    a_t, a_r = nl.per_channel(nl.EITActivation(od=5.0, p_sat=1.0), p_t, p_r)
    after = (a_t - a_r) / (a_t + a_r)
    assert bool(((after - before).abs() > 1e-6).all())
    l_t, l_r = nl.per_channel(lambda p: 0.3 * p, p_t, p_r)
    torch.testing.assert_close((l_t - l_r) / (l_t + l_r), before, rtol=1e-14, atol=1e-15)
    f_t, f_r = nl.per_channel((torch.exp, torch.sqrt), p_t, p_r)
    assert torch.equal(f_t, torch.exp(p_t)) and torch.equal(f_r, torch.sqrt(p_r))
    with pytest.raises(ValueError, match="one shape"):
        nl.per_channel(torch.exp, p_t, p_r[:3])


def test_modules_match_functions_and_train(gen: torch.Generator) -> None:
    power = log_uniform(gen, 1e-3, 10.0)
    eit = nl.EITActivation(od=8.0, p_sat=0.7, learnable=True)
    sa = nl.SaturableAbsorber(modulation_depth=0.5, p_sat=0.7, nonsaturable_loss=0.1,
                              learnable=True)
    sbs = nl.SBSAmplifier(pump=0.05, gain=100.0, learnable=True)
    torch.testing.assert_close(eit(power), nl.eit_activation(power, 8.0, 0.7))
    torch.testing.assert_close(sa(power), nl.saturable_absorber_activation(power, 0.5, 0.7, 0.1))
    torch.testing.assert_close(sbs(1e-3 * power), nl.sbs_amplifier(1e-3 * power, 0.05, 100.0)[0])
    for module, x in ((eit, power), (sa, power), (sbs, 1e-3 * power)):
        module(x).sum().backward()
        params = list(module.parameters())
        assert params and all(p.grad is not None and bool(torch.isfinite(p.grad).all())
                              for p in params)
    fixed = nl.SBSAmplifier(pump=0.05, gain=100.0)
    assert not list(fixed.parameters())
    assert fixed(power.float()).dtype == torch.float32


def test_module_parameters_stay_physical() -> None:
    """Positivity and passivity by construction, whatever the optimiser does to the raw
    parameters."""
    eit = nl.EITActivation(od=1.0, p_sat=1.0, learnable=True)
    sa = nl.SaturableAbsorber(modulation_depth=0.3, p_sat=1.0, nonsaturable_loss=0.2,
                              learnable=True)
    with torch.no_grad():
        eit.log_od.fill_(-50.0)
        eit.log_p_sat.fill_(40.0)
        sa.logit_depth.fill_(60.0)
    assert eit.od.item() > 0 and eit.p_sat.item() > 0
    assert 0 < sa.modulation_depth.item() <= 1 - 0.2
    t = nl.saturable_absorber_transmission(torch.zeros(1, dtype=F64), sa.modulation_depth,
                                           sa.p_sat, sa.nonsaturable_loss)
    assert t.item() >= 0
