"""Points stay on their manifold over many float32 steps (inside the ball, on the hyperboloid)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from resnetbk import debug_checks
from resnetbk.geometry import Lorentz, PoincareBall, lorentz, poincare
from resnetbk.nn import ManifoldParameter
from resnetbk.optim import RiemannianAdam, RiemannianSGD

OPTIMIZERS: list[tuple[type[torch.optim.Optimizer], dict[str, Any]]] = [
    (RiemannianAdam, {"lr": 0.2, "amsgrad": True, "betas": (0.5, 0.9)}),
    (RiemannianSGD, {"lr": 0.3, "momentum": 0.9, "nesterov": True}),
]
IDS = ["adam", "sgd"]


def _assert_in_ball(x: torch.Tensor, c: float) -> None:
    assert bool(torch.isfinite(x).all())
    scaled = c**0.5 * x.double().norm(dim=-1)
    assert float(scaled.max()) < 1.0


def _assert_on_hyperboloid(x: torch.Tensor, c: float, rtol: float) -> None:
    assert bool(torch.isfinite(x).all())
    xd = x.double()
    assert bool((xd[..., 0] > 0).all())
    err = (c * lorentz.inner(xd, xd) + 1).abs() / (1 + c * xd[..., 0] ** 2)
    assert float(err.max()) <= rtol, f"max relative |c<x,x>_L + 1| = {float(err.max()):.3g}"


@pytest.mark.parametrize(("cls", "config"), OPTIMIZERS, ids=IDS)
def test_poincare_pushed_to_the_boundary_stays_inside(
    cls: type[torch.optim.Optimizer], config: dict[str, Any], gen: torch.Generator
) -> None:
    """Maximising the distance from the origin drives points to the float32 boundary."""
    c = 1.5
    ball = PoincareBall(c)
    x = ManifoldParameter(ball.random(16, 3, std=0.5, generator=gen), ball)
    opt = cls([x], **config)
    with debug_checks():  # the optimizer also checks every new point
        for _ in range(100):
            opt.zero_grad()
            (-poincare.dist0(x, c=c).sum()).backward()
            opt.step()
            _assert_in_ball(x.detach(), c)
    # The points did reach the float32 margin of the ball (artanh(1 - 1e-5) ~ 6.1 / sqrt(c)).
    assert float(poincare.dist0(x.detach(), c=c).min()) > 4.0


@pytest.mark.parametrize(("cls", "config"), OPTIMIZERS, ids=IDS)
@pytest.mark.parametrize("kind", ["poincare", "lorentz"])
def test_float32_points_stay_on_manifold_over_many_steps(
    kind: str, cls: type[torch.optim.Optimizer], config: dict[str, Any], gen: torch.Generator
) -> None:
    """Large steps around far targets (radius up to ~4) for 120 float32 steps; the moment
    (momentum buffer / exp_avg) transported along stays tangent."""
    c = 0.7
    manifold = PoincareBall(c) if kind == "poincare" else Lorentz(c)
    dim = 3 if kind == "poincare" else 4
    x = ManifoldParameter(manifold.random(12, dim, std=1.0, generator=gen), manifold)
    targets = manifold.random(5, dim, std=2.0, generator=gen)
    dist = poincare.dist if kind == "poincare" else lorentz.dist
    opt = cls([x], **config)
    key = "exp_avg" if cls is RiemannianAdam else "momentum_buffer"
    for _ in range(120):
        opt.zero_grad()
        dist(x[:, None], targets[None], c=c).pow(2).mean().backward()
        opt.step()
        if kind == "poincare":
            _assert_in_ball(x.detach(), c)
            continue
        _assert_on_hyperboloid(x.detach(), c, rtol=1e-5)
        # |<x, m>_L| / (x_0 |m|) is rounding-level: float32 maps at x lose ~eps c x_0^2 per
        # step, and the moment carries its past errors, so rows whose moment has decayed below
        # 0.1 are skipped (measured over 80 runs: at most 9% of this tolerance).
        m, xd = opt.state[x][key].double(), x.detach().double()
        big = m.norm(dim=-1) > 0.1
        off = lorentz.inner(xd, m).abs() / (xd[:, 0] * m.norm(dim=-1))
        tol = 100 * torch.finfo(torch.float32).eps * (1 + c * xd[:, 0] ** 2)
        assert bool((off <= tol)[big].all()), f"max off/tol {float((off / tol)[big].max()):.3g}"


@pytest.mark.slow
@pytest.mark.xfail(reason="known float32 limit of Lorentz coordinates (see report): at radius "
                   "~9 (c x_0^2 > 1/eps) <r, r>_L of a tangent vector is lost to cancellation, "
                   "Adam's second moment turns negative and the step is NaN", strict=False)
def test_float32_lorentz_far_from_origin(gen: torch.Generator) -> None:
    c = 1.5
    hyp = Lorentz(c)
    x = ManifoldParameter(hyp.random(8, 4, std=0.5, generator=gen), hyp)
    opt = RiemannianAdam([x], lr=0.1)
    for _ in range(150):
        opt.zero_grad()
        (-lorentz.dist0(x, c=c).sum()).backward()
        opt.step()
    assert bool(torch.isfinite(x).all())
