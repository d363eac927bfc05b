"""Optical nonlinearities as activations, applied to the power of each polarising-beam-splitter
channel, batched and differentiable (float32 and float64).

Why per channel: a polarisation-blind nonlinearity rescales the whole Stokes vector, S -> f(S0)
S / S0, which leaves the point s / S0 on H^3 where it was. Split the beam first (``mueller.
polarizing_beam_splitter``), apply the nonlinearity to each output power, and the ratio of the
channel powers (hence S1 / S0, the point) changes: ``per_channel``.

Activations (powers in any one unit, the same for every power argument):

- ``eit_activation``: T(P) P with T(P) = exp(-OD / (1 + P/P_sat)). In EIT (on two-photon
  resonance, ground-state dephasing limited) the probe absorption falls as 1 / (1 + P_c/P_sat)
  with the control power P_c; ``eit_transmission`` gives T for that cross-driven use,
  ``eit_activation`` the self-driven form of issue 7 (also the two-level saturable absorber
  saturated at its input power).
- ``saturable_absorber_activation``: T(P) P with the thin-absorber law T(P) = 1 - alpha_ns -
  dT / (1 + P/P_sat) (modulation depth dT, non-saturable loss alpha_ns).
- ``sbs_amplifier``: a Brillouin amplifier with pump depletion (lossless two-wave model, exact
  steady state), solved by a bracketed Newton iteration and differentiated by the implicit-
  function theorem. docs/OPTICS.md lists physical parameter values and their sources.

Bad values raise ValueError naming the argument (checked on the CPU always, on accelerators in
debug mode, as in ``mueller``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from resnetbk.optics.mueller import Scalar, as_tensors, require, values_checked

__all__ = [
    "EITActivation",
    "SBSAmplifier",
    "SBSOutput",
    "SaturableAbsorber",
    "brillouin_gain_per_watt",
    "eit_activation",
    "eit_transmission",
    "per_channel",
    "saturable_absorber_activation",
    "saturable_absorber_transmission",
    "sbs_amplifier",
]

Activation = Callable[[torch.Tensor], torch.Tensor]


def _non_negative(name: str, t: torch.Tensor, what: str) -> None:
    require(name, t, lambda x: x >= 0, f"non-negative ({what})")


def _positive(name: str, t: torch.Tensor, what: str) -> None:
    require(name, t, lambda x: x > 0, f"positive ({what})")


# ---------------------------------------------------------------------------------------------
# EIT and saturable absorption: closed forms, autograd differentiates them.


def eit_transmission(power: Scalar, od: Scalar, p_sat: Scalar) -> torch.Tensor:
    """Intensity transmission exp(-od / (1 + power / p_sat)) of a saturable (EIT) medium.

    ``od``: optical depth (>= 0) at zero power; ``p_sat``: saturation power (> 0), in the unit
    of ``power``. T rises from exp(-od) at power 0 to 1 as power / p_sat -> infinity.
    """
    p, d, s = as_tensors(power=power, od=od, p_sat=p_sat)
    _non_negative("power", p, "an optical power")
    _non_negative("od", d, "an optical depth")
    _positive("p_sat", s, "a saturation power")
    return torch.exp(-d / (1 + p / s))


def eit_activation(power: Scalar, od: Scalar, p_sat: Scalar) -> torch.Tensor:
    """Output power T(power) * power of a self-saturating EIT medium (``eit_transmission``)."""
    p, d, s = as_tensors(power=power, od=od, p_sat=p_sat)
    return eit_transmission(p, d, s) * p


def saturable_absorber_transmission(power: Scalar, modulation_depth: Scalar, p_sat: Scalar,
                                    nonsaturable_loss: Scalar = 0.0) -> torch.Tensor:
    """Transmission 1 - nonsaturable_loss - modulation_depth / (1 + power / p_sat).

    The fast thin-absorber law used to characterise graphene, nanotube and SESAM absorbers:
    absorption alpha(P) = alpha_ns + dT / (1 + P/P_sat) with T = 1 - alpha (the layer is
    optically thin, so exp(-alpha) ~ 1 - alpha; a thick two-level medium is the EIT law).
    Requires modulation_depth, nonsaturable_loss >= 0 with sum <= 1 (a passive element).
    """
    p, m, s, loss = as_tensors(power=power, modulation_depth=modulation_depth, p_sat=p_sat,
                               nonsaturable_loss=nonsaturable_loss)
    _non_negative("power", p, "an optical power")
    _non_negative("modulation_depth", m, "a fraction of the power")
    _non_negative("nonsaturable_loss", loss, "a fraction of the power")
    _positive("p_sat", s, "a saturation power")
    if values_checked(m) and not bool((m + loss <= 1).all()):
        raise ValueError("modulation_depth + nonsaturable_loss must be <= 1 (a passive absorber)")
    return 1 - loss - m / (1 + p / s)


def saturable_absorber_activation(power: Scalar, modulation_depth: Scalar, p_sat: Scalar,
                                  nonsaturable_loss: Scalar = 0.0) -> torch.Tensor:
    """Output power T(power) * power of a saturable absorber
    (``saturable_absorber_transmission``)."""
    p, m, s, loss = as_tensors(power=power, modulation_depth=modulation_depth, p_sat=p_sat,
                               nonsaturable_loss=nonsaturable_loss)
    return saturable_absorber_transmission(p, m, s, loss) * p


# ---------------------------------------------------------------------------------------------
# SBS amplifier with pump depletion.
#
# Signal S(z) enters at z = 0 and travels +z, the pump P(z) enters at z = L and travels -z:
#     dS/dz = g P S,  dP/dz = g P S,  g = g_B / A_eff (pump and Stokes frequencies equal),
# so P(z) - S(z) = C is constant (photon-number / Manley-Rowe conservation) and integrating
# dS / (S (S + C)) = g dz gives the two-point relation (Tang 1966)
#     S_out P_out = S_in P_in exp(g L C),  C = P_in - S_out = P_out - S_in.
# C = 0 always solves it (a spurious root), so we solve the divided form: with b = S_in / P_in,
# a = g L P_in, u = S_out / P_in, d = P_out / P_in = 1 + b - u and c = C / P_in = 1 - u,
#     psi(c) = [log1p(c / b) + log1p(-c)] / c = a.
# The numerator of psi is strictly concave in c and vanishes at c = 0, so psi (its slope from
# the origin) strictly decreases on (-b, 1): one physical root. The unknown is
# w = ln(S_out P_in / (S_in P_out)) >= 0 (log-gain plus pump depletion in nepers): u and d are
# logistic in w (u = (1 + b) sigmoid(w + ln b)), psi(c(w)) - a is increasing in w, nearly linear
# at both ends (small signal: w ~ ln gain; depleted pump: w ~ -ln d), is -a at w = 0 and >= 0
# at w = min(a, ln(1 + 1/b)) + a (1 + b) (gain <= e^a; -ln d <= g L S_out <= a (1 + b)).

_SERIES_RADIUS = 0.1
_SERIES_TERMS = 18  # |x| < 0.1: the truncated series of log1p(x) / x is exact to ~1e-19
_MAX_ITER = 100
_TOL = 4 * torch.finfo(torch.float64).eps
_STEP_TOL = 1e-9
_MIN_RATIO = 1e-300  # signal / pump, and its inverse: keeps every exponential in range


def _log1p_ratio_series(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """q(x) = log1p(x) / x and q'(x) for |x| < 0.1 by their power series (Horner)."""
    q = torch.zeros_like(x)
    dq = torch.zeros_like(x)
    for n in range(_SERIES_TERMS, -1, -1):  # q = sum_n (-x)^n / (n + 1)
        coef = (-1.0) ** n / (n + 1)
        q = q * x + coef
        if n >= 1:
            dq = dq * x + n * coef
    return q, dq


def _softplus(z: torch.Tensor) -> torch.Tensor:
    """log(1 + e^z) without overflow or the cut-off of ``torch.nn.functional.softplus``."""
    return torch.clamp(z, min=0) + torch.log1p(torch.exp(-z.abs()))


class _SBSState(NamedTuple):
    residual: torch.Tensor  # psi(c(w)) - a
    slope: torch.Tensor  # d residual / dw = D / (1 + b) > 0
    dk: torch.Tensor  # D = d K, K = -u psi'(c) = d residual / d ln(gain) at fixed (a, b)
    u: torch.Tensor  # S_out / P_in
    d: torch.Tensor  # P_out / P_in
    gain: torch.Tensor  # S_out / S_in


def _sbs_state(w: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> _SBSState:
    """Everything at a trial w for b > 0, each in a cancellation-free form: near c = 0 the
    quotients log1p(x) / x are power series, near full depletion the logarithms come from w."""
    lb, l1b = torch.log(b), torch.log1p(b)
    z = w + lb  # ln(S_out / P_out)
    y = z + lb  # c = 0 at y = 0
    low = z <= 0
    e = torch.exp(torch.clamp(z, max=0))  # S_out / P_out where z <= 0
    r = torch.exp(-torch.clamp(z, min=0))  # P_out / S_out where z > 0
    sp = _softplus(z)
    u = (1 + b) * torch.where(low, e / (1 + e), 1 / (1 + r))
    d = (1 + b) * torch.where(low, 1 / (1 + e), r / (1 + r))
    gain = torch.where(low, (1 + b) * torch.exp(torch.clamp(w, max=-lb)) / (1 + e),
                       (1 + 1 / b) / (1 + r))
    # c / b; the clamps only touch the branch not taken (|ln b| <= ln 1e300 < 700).
    x1 = torch.where(low, -torch.expm1(torch.clamp(y, max=700.0)) / (b * (1 + e)),
                     torch.expm1(torch.clamp(-y, max=700.0)) / (1 + r))
    c = b * x1
    # psi = A - B with A = q(c / b) / b, B = q(-c); dA, dB: d times their c-derivatives.
    small1 = x1.abs() < _SERIES_RADIUS
    q1, dq1 = _log1p_ratio_series(torch.where(small1, x1, torch.zeros_like(x1)))
    x1l = torch.where(small1, torch.ones_like(x1), x1)
    c1l = b * x1l
    log1 = torch.where(x1l < -0.5, l1b - sp - lb, torch.log1p(x1l))  # ln(d / b)
    a_l = log1 / c1l
    big_a = torch.where(small1, q1 / b, a_l)
    d_a = torch.where(small1, (1 + x1) * dq1 / b, (1 - d * a_l) / c1l)
    small2 = c.abs() < _SERIES_RADIUS
    q2, dq2 = _log1p_ratio_series(torch.where(small2, -c, torch.zeros_like(c)))
    c2l = torch.where(small2, torch.ones_like(c), c)
    log2 = torch.where(c2l > 0.5, l1b + z - sp, torch.log1p(-c2l))  # ln u
    b_l = -log2 / c2l
    big_b = torch.where(small2, q2, b_l)
    # D = -u (dA + dB); in the log branch u dB = d (1 - u B) / (-c), free of 1/u.
    dk = torch.where(small2, -u * (d_a + d * dq2), -u * d_a + d * (1 - u * b_l) / c2l)
    # Away from c = 0, psi = ln(u d / b) / c with the logarithm summed analytically in w
    # (A and B alone are ~|ln b| and would cancel).
    far = ~small1 & ~small2
    log_udb = torch.where(low, 2 * l1b + w - 2 * sp,
                          2 * torch.log1p(1 / b) - w - 2 * torch.log1p(r))
    psi = torch.where(far, log_udb / torch.where(far, c, torch.ones_like(c)), big_a - big_b)
    return _SBSState(psi - a, dk / (1 + b), dk, u, d, gain)


def _sbs_solve(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The root w of psi(c(w)) = a for b > 0: Newton's method safeguarded by bisection on the
    bracket above (Numerical Recipes' rtsafe), all elements in lockstep until each converged:
    a Newton step below 1e-9 (relative) has been taken, or the bracket is ~4 ulp wide.
    The start is the small-signal root (w = a) where the undepleted output S_in e^a stays below
    P_in, else the depleted-pump estimate ln(1 + 1/b) + a b; at most ~15 steps either way."""
    lo = torch.zeros_like(a)
    hi = torch.minimum(a, torch.log1p(1 / b)) + a * (1 + b)
    small_signal = b * torch.exp(torch.clamp(a, max=700.0)) <= 1
    w = torch.where(small_signal, a, torch.minimum(hi, torch.log1p(1 / b) + a * b))
    dx = hi - lo
    dx_old = dx
    active = torch.ones_like(a, dtype=torch.bool)
    for _ in range(_MAX_ITER):
        st = _sbs_state(w, a, b)
        f = st.residual
        hi = torch.where(f > 0, w, hi)
        lo = torch.where(f < 0, w, lo)
        step = f / st.slope
        tol = _TOL * torch.clamp(w.abs(), min=1.0)
        newton = w - step
        use_newton = (torch.isfinite(newton) & (newton >= lo) & (newton <= hi)
                      & (2 * step.abs() <= dx_old.abs()))
        # A Newton step below _STEP_TOL ends the iteration once taken (kept in the bracket): the
        # next would move w by ~step^2 (quadratic convergence), below the residual's rounding.
        last_step = step.abs() <= _STEP_TOL * torch.clamp(w.abs(), min=1.0)
        w_new = torch.where(use_newton, newton, 0.5 * (lo + hi))
        w_new = torch.where(last_step, torch.minimum(torch.maximum(newton, lo), hi), w_new)
        w_new = torch.where(f == 0, w, w_new)
        done = (f == 0) | last_step | (hi - lo <= tol)
        dx_old = torch.where(active, dx, dx_old)
        dx = torch.where(active, w_new - w, dx)
        w = torch.where(active, w_new, w)
        active = active & ~done
        if not bool(active.any()):
            return w
    raise RuntimeError(
        f"SBS solve did not converge in {_MAX_ITER} iterations for {int(active.sum())} "
        f"element(s): {_range('gain*pump', a, active)}, {_range('signal/pump', b, active)}")


def _range(name: str, t: torch.Tensor, mask: torch.Tensor) -> str:
    return f"{name} in [{t[mask].min().item():.6g}, {t[mask].max().item():.6g}]"


def _sbs_at(w: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> _SBSState:
    """``_sbs_state`` where b > 0; the undepleted limit (gain e^a, D = d = 1, u = 0) at b = 0."""
    live = b > 0
    st = _sbs_state(w, a, torch.where(live, b, torch.ones_like(b)))
    one, zero = torch.ones_like(b), torch.zeros_like(b)
    return _SBSState(torch.where(live, st.residual, zero), torch.where(live, st.slope, one),
                     torch.where(live, st.dk, one), torch.where(live, st.u, zero),
                     torch.where(live, st.d, one), torch.where(live, st.gain, torch.exp(a)))


class _SBSSolve(torch.autograd.Function):
    """Output signal and pump powers of the depleted-pump Brillouin amplifier.

    Backward by the implicit-function theorem on psi(c) = a (no differentiation through the
    iteration): with the gain G = S_out / S_in and D = d K as in ``_SBSState``,
        dS_out/dS_in = G / D,  dS_out/dP_in = u (a d / D + 1 - 1 / D),
        dS_out/dgain = S_out P_in d / D,
    and P_out = S_in + P_in - S_out for the pump. The forward computes P_out = P_in d instead,
    accurate to rounding even when the pump is nearly spent.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, signal: torch.Tensor,
                pump: torch.Tensor, gain: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, p, g = (x.detach().to(torch.float64) for x in (signal, pump, gain))
        a, b = g * p, s / p
        bad = ~(torch.isfinite(a) & ((b == 0) | ((b >= _MIN_RATIO) & (b <= 1 / _MIN_RATIO))))
        if bool(bad.any()):
            raise ValueError("sbs_amplifier: gain * pump must be finite and signal / pump 0 or "
                             f"in [{_MIN_RATIO:g}, {1 / _MIN_RATIO:g}]; got " + ", ".join(
                                 _range(n, v, bad) for n, v in
                                 (("signal", s), ("pump", p), ("gain", g))))
        live = b > 0
        w = torch.where(live, _sbs_solve(torch.where(live, a, torch.zeros_like(a)),
                                         torch.where(live, b, torch.ones_like(b))), a)
        st = _sbs_at(w, a, b)
        out = torch.where(live, s * st.gain, torch.zeros_like(s))
        ctx.save_for_backward(s, p, g, w)
        return out.to(signal.dtype), (p * st.d).to(signal.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_signal: torch.Tensor,
                 grad_pump: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s, p, g, w = ctx.saved_tensors
        a, b = g * p, s / p
        st = _sbs_at(w, a, b)
        out = torch.where(b > 0, s * st.gain, torch.zeros_like(s))
        jac = (st.gain / st.dk,  # d S_out / d (signal, pump, gain)
               st.u * (a * st.d / st.dk + 1 - 1 / st.dk),
               out * p * st.d / st.dk)
        gs, gp = grad_signal.to(torch.float64), grad_pump.to(torch.float64)
        grads = [(gs - gp) * j + gp * e for j, e in zip(jac, (1.0, 1.0, 0.0), strict=True)]
        if not all(bool(torch.isfinite(x).all()) for x in grads):
            raise ValueError("sbs_amplifier: the gradient overflows float64 (small-signal gain "
                             f"exp(gain * pump) with gain * pump up to {a.max().item():.6g})")
        return tuple(x.to(grad_signal.dtype) for x in grads)


class SBSOutput(NamedTuple):
    """Output powers of the Brillouin amplifier: the amplified signal and the depleted pump."""

    signal: torch.Tensor
    pump: torch.Tensor


def sbs_amplifier(signal: Scalar, pump: Scalar, gain: Scalar) -> SBSOutput:
    """Steady state of a lossless Brillouin amplifier with pump depletion.

    ``signal``: input Stokes power (>= 0) entering at z = 0; ``pump``: counter-propagating
    pump power (> 0) entering at z = L; ``gain``: g_B L / A_eff (>= 0) per unit of power
    (``brillouin_gain_per_watt``). Returns the output signal S_out and the exiting pump P_out:
    the root of S_out P_out = S_in P_in exp(gain (P_out - S_in)) with S_out + P_out = S_in +
    P_in, to a few ulp of the log-gain (solved in float64; float32 results are rounded from
    it). Small signals see the undepleted gain exp(gain * pump); large ones take the whole pump.
    Differentiable in all three arguments (implicit-function theorem).
    """
    s, p, g = as_tensors(signal=signal, pump=pump, gain=gain)
    _non_negative("signal", s, "an optical power")
    _positive("pump", p, "an optical power; without pump there is no amplifier")
    _non_negative("gain", g, "g_B L / A_eff")
    return SBSOutput(*_SBSSolve.apply(s, p, g))


def brillouin_gain_per_watt(length: float, area: float = 80e-12, g_b: float = 5e-11) -> float:
    """g_B L / A_eff in 1/W: the small-signal log-gain per watt of pump (``sbs_amplifier``).

    ``length`` in m, ``area`` the effective mode area in m^2 (standard single-mode fibre at
    1550 nm: ~80 um^2), ``g_b`` the peak Brillouin gain coefficient in m/W (silica: ~5e-11).
    """
    for name, v in (("length", length), ("area", area), ("g_b", g_b)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (
                math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a positive finite float, got {v!r}")
    return g_b * length / area


# ---------------------------------------------------------------------------------------------
# Per-channel application and modules.


def per_channel(activation: Activation | tuple[Activation, Activation],
                transmitted: torch.Tensor, reflected: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply ``activation`` to the two output powers of a polarising beam splitter.

    One callable acts on both channels (the same device in each arm); a pair (f_t, f_r) gives
    each channel its own. The channel powers must have one shape (the same beams, split).
    """
    for name, t in (("transmitted", transmitted), ("reflected", reflected)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if transmitted.shape != reflected.shape:
        raise ValueError("transmitted and reflected channel powers must have one shape, got "
                         f"{tuple(transmitted.shape)} and {tuple(reflected.shape)}")
    f_t, f_r = activation if isinstance(activation, tuple) else (activation, activation)
    return f_t(transmitted), f_r(reflected)


def _register(module: nn.Module, name: str, value: float, learnable: bool, arg: str) -> None:
    """Store ``value`` (argument ``arg`` mapped to an unconstrained space) as a float64
    parameter or buffer ``name``."""
    t = torch.tensor(value, dtype=torch.float64)
    if learnable:
        if not math.isfinite(value):
            raise ValueError(f"{arg} is at the edge of its range; a learnable parameter must "
                             "start strictly inside it")
        module.register_parameter(name, nn.Parameter(t))
    else:
        module.register_buffer(name, t)


def _log(name: str, value: float, allow_zero: bool) -> float:
    """log(value) for a positive (or, if allowed, zero) float parameter."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
            value) or value < 0 or (value == 0 and not allow_zero):
        expected = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be a {expected} finite float, got {value!r}")
    return math.log(value) if value > 0 else -math.inf


class EITActivation(nn.Module):
    """``eit_activation`` as a module; with ``learnable`` the optical depth and saturation
    power train, stored as logarithms (positive by construction)."""

    def __init__(self, *, od: float, p_sat: float, learnable: bool = False) -> None:
        super().__init__()
        _register(self, "log_od", _log("od", od, allow_zero=True), learnable, "od")
        _register(self, "log_p_sat", _log("p_sat", p_sat, allow_zero=False), learnable,
                  "p_sat")

    @property
    def od(self) -> torch.Tensor:
        return self.log_od.exp()

    @property
    def p_sat(self) -> torch.Tensor:
        return self.log_p_sat.exp()

    def forward(self, power: torch.Tensor) -> torch.Tensor:
        return eit_activation(power, self.od.to(power.dtype), self.p_sat.to(power.dtype))


class SaturableAbsorber(nn.Module):
    """``saturable_absorber_activation`` as a module. With ``learnable`` the saturation power
    (as a logarithm) and the modulation depth train; the depth is (1 - nonsaturable_loss)
    sigmoid(logit), so the element stays passive. The non-saturable loss stays fixed."""

    def __init__(self, *, modulation_depth: float, p_sat: float, nonsaturable_loss: float = 0.0,
                 learnable: bool = False) -> None:
        super().__init__()
        for name, v in (("modulation_depth", modulation_depth),
                        ("nonsaturable_loss", nonsaturable_loss)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
                raise ValueError(f"{name} must be a float in [0, 1], got {v!r}")
        if nonsaturable_loss == 1:
            raise ValueError("nonsaturable_loss must be < 1 (the absorber must pass some light)")
        if modulation_depth + nonsaturable_loss > 1:
            raise ValueError("modulation_depth + nonsaturable_loss must be <= 1 (a passive "
                             "absorber)")
        frac = modulation_depth / (1 - nonsaturable_loss)
        logit = (math.log(frac) - math.log1p(-frac) if 0 < frac < 1
                 else math.copysign(math.inf, frac - 0.5))
        _register(self, "logit_depth", logit, learnable, "modulation_depth")
        _register(self, "log_p_sat", _log("p_sat", p_sat, allow_zero=False), learnable,
                  "p_sat")
        self.register_buffer("nonsaturable_loss",
                             torch.tensor(nonsaturable_loss, dtype=torch.float64))

    @property
    def modulation_depth(self) -> torch.Tensor:
        return (1 - self.nonsaturable_loss) * torch.sigmoid(self.logit_depth)

    @property
    def p_sat(self) -> torch.Tensor:
        return self.log_p_sat.exp()

    def forward(self, power: torch.Tensor) -> torch.Tensor:
        dt = power.dtype
        return saturable_absorber_activation(power, self.modulation_depth.to(dt),
                                             self.p_sat.to(dt), self.nonsaturable_loss.to(dt))


class SBSAmplifier(nn.Module):
    """``sbs_amplifier`` as a module returning the output signal power. With ``learnable`` the
    pump power and gain g_B L / A_eff train, stored as logarithms (positive by construction)."""

    def __init__(self, *, pump: float, gain: float, learnable: bool = False) -> None:
        super().__init__()
        _register(self, "log_pump", _log("pump", pump, allow_zero=False), learnable, "pump")
        _register(self, "log_gain", _log("gain", gain, allow_zero=True), learnable, "gain")

    @property
    def pump(self) -> torch.Tensor:
        return self.log_pump.exp()

    @property
    def gain(self) -> torch.Tensor:
        return self.log_gain.exp()

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        return sbs_amplifier(signal, self.pump.to(signal.dtype),
                             self.gain.to(signal.dtype)).signal
