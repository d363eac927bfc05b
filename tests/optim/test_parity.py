"""Trajectory parity: manifold parameters against geoopt, Euclidean ones against torch.optim.

geoopt conventions matched here:
* ``PoincareBallExact(c)``: retraction = exact expmap, transport = parallel transport (gyration).
* ``Lorentz(k=1/c)``: ``retr = expmap`` (exact, after projecting the step onto T_x; it clamps
  <u,u>_L at 1e-8, so it stops being exact for steps of Lorentz norm below 1e-4, which the tests
  assert they never take), transport = parallel transport written with logmaps.
* Both get their curvature as a float64 tensor: from a Python float geoopt stores it in float32
  (PoincareBall through a float32 softplus), a relative error of ~1e-8 that would dominate.
* geoopt's RiemannianSGD starts the momentum buffer as ``grad.clone()`` of the raw Euclidean
  gradient (before weight decay and egrad2rgrad) and then applies ``mul_(momentum).add_(rgrad)``
  on the first step, so its first step is ``-lr (momentum egrad + (1 - dampening) rgrad)``;
  torch.optim.SGD (and this package) start with ``buf = grad``. The tests pre-seed geoopt's
  buffer with ``dampening/momentum * rgrad_0`` so that both follow torch's definition.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import geoopt
import pytest
import torch

from resnetbk.geometry import Lorentz, PoincareBall, lorentz, poincare
from resnetbk.nn import ManifoldParameter
from resnetbk.optim import RiemannianAdam, RiemannianSGD

F64 = torch.float64
STEPS = 20
ATOL = 1e-10

SGD_CONFIGS: list[dict[str, Any]] = [
    {"lr": 0.05},
    {"lr": 0.05, "momentum": 0.9},
    {"lr": 0.05, "momentum": 0.8, "dampening": 0.3},
    {"lr": 0.03, "momentum": 0.9, "nesterov": True},
    {"lr": 0.05, "weight_decay": 0.1},
    {"lr": 0.05, "momentum": 0.5, "weight_decay": 0.1},
]
ADAM_CONFIGS: list[dict[str, Any]] = [
    {"lr": 0.05},
    {"lr": 0.05, "amsgrad": True},
    {"lr": 0.05, "weight_decay": 0.1},
    {"lr": 0.02, "betas": (0.8, 0.99), "eps": 1e-6, "amsgrad": True, "weight_decay": 0.05},
]


def _problem(kind: str, gen: torch.Generator) -> tuple[Any, Any, torch.Tensor, Callable]:
    """(our manifold, geoopt manifold, x0, loss) for a sum of squared distances to targets."""
    c = float(torch.empty(()).uniform_(0.5, 2.0, generator=gen))
    ct = torch.tensor(c, dtype=F64)
    if kind == "poincare":
        ours, theirs = PoincareBall(c), geoopt.PoincareBallExact(c=ct)
        x0 = ours.random(6, 3, std=0.7, dtype=F64, generator=gen)
        targets = ours.random(5, 3, std=0.7, dtype=F64, generator=gen)

        def loss(x: torch.Tensor) -> torch.Tensor:
            return poincare.dist(x[:, None], targets[None], c=c).pow(2).mean()
    else:
        ours, theirs = Lorentz(c), geoopt.Lorentz(k=1 / ct)
        x0 = ours.random(6, 4, std=0.7, dtype=F64, generator=gen)
        targets = ours.random(5, 4, std=0.7, dtype=F64, generator=gen)

        def loss(x: torch.Tensor) -> torch.Tensor:
            return lorentz.dist(x[:, None], targets[None], c=c).pow(2).mean()
    return ours, theirs, x0, loss


def _seed_geoopt_momentum(opt: geoopt.optim.RiemannianSGD, p: torch.Tensor,
                          config: dict[str, Any]) -> None:
    """Make geoopt's first momentum step follow torch's ``buf = grad`` (see module doc)."""
    momentum = config.get("momentum", 0.0)
    if momentum == 0:
        return
    with torch.no_grad():
        egrad = p.grad.clone() + config.get("weight_decay", 0.0) * p
        rgrad = p.manifold.egrad2rgrad(p, egrad)
    opt.state[p]["momentum_buffer"] = config.get("dampening", 0.0) / momentum * rgrad


@pytest.mark.parametrize("kind", ["poincare", "lorentz"])
@pytest.mark.parametrize(
    ("name", "config"),
    [("sgd", c) for c in SGD_CONFIGS] + [("adam", c) for c in ADAM_CONFIGS],
    ids=lambda v: v if isinstance(v, str) else "-".join(f"{k}={w}" for k, w in v.items()),
)
def test_manifold_trajectory_matches_geoopt(
    kind: str, name: str, config: dict[str, Any], gen: torch.Generator
) -> None:
    ours_m, geo_m, x0, loss = _problem(kind, gen)
    a = ManifoldParameter(x0.clone(), ours_m)
    b = geoopt.ManifoldParameter(x0.clone(), manifold=geo_m)
    if name == "sgd":
        opt_a = RiemannianSGD([a], **config)
        opt_b = geoopt.optim.RiemannianSGD([b], **config)
    else:
        opt_a = RiemannianAdam([a], **config)
        opt_b = geoopt.optim.RiemannianAdam([b], **config)
    for k in range(STEPS):
        for p, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            loss(p).backward()
        if k == 0 and name == "sgd":
            _seed_geoopt_momentum(opt_b, b, config)
        before = a.detach().clone()
        opt_a.step()
        opt_b.step()
        torch.testing.assert_close(a.detach(), b.detach(), atol=ATOL, rtol=0,
                                   msg=lambda m, k=k: f"step {k + 1}: {m}")
        if kind == "lorentz":
            # geoopt's Lorentz expmap is exact only for steps of Lorentz norm >= 1e-4.
            moved = lorentz.dist(before, a.detach(), c=ours_m.c)
            assert float(moved.min()) > 2e-4, "a step too small for geoopt's clamped expmap"
    if name == "adam":
        torch.testing.assert_close(opt_a.state[a]["exp_avg"], opt_b.state[b]["exp_avg"],
                                   atol=ATOL, rtol=0)
        torch.testing.assert_close(opt_a.state[a]["exp_avg_sq"], opt_b.state[b]["exp_avg_sq"],
                                   atol=ATOL, rtol=1e-10)
    elif config.get("momentum", 0) > 0:
        torch.testing.assert_close(opt_a.state[a]["momentum_buffer"],
                                   opt_b.state[b]["momentum_buffer"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("kind", ["poincare", "lorentz"])
def test_first_momentum_step_is_plain_riemannian_step(kind: str, gen: torch.Generator) -> None:
    """buf starts as the Riemannian gradient (torch's convention), whatever the momentum."""
    ours_m, _, x0, loss = _problem(kind, gen)
    a = ManifoldParameter(x0.clone(), ours_m)
    opt = RiemannianSGD([a], lr=0.05, momentum=0.9, dampening=0.5)
    loss(a).backward()
    with torch.no_grad():
        expected = ours_m.retr(x0, -0.05 * ours_m.egrad2rgrad(x0, a.grad))
        rgrad = ours_m.egrad2rgrad(x0, a.grad)
    opt.step()
    torch.testing.assert_close(a.detach(), expected, atol=0, rtol=0)
    with torch.no_grad():
        transported = ours_m.transp(x0, a.detach(), rgrad)
    torch.testing.assert_close(opt.state[a]["momentum_buffer"], transported, atol=0, rtol=0)


def _euclidean_params(gen: torch.Generator, dtype: torch.dtype) -> list[torch.Tensor]:
    shapes: list[tuple[int, ...]] = [(3, 4), (5,), ()]
    return [torch.randn(s, dtype=dtype, generator=gen) for s in shapes]


def _euclidean_loss(ps: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    w, b, s = ps
    out = torch.tanh(w @ target[:4] + b[:3]) * (1 + 0.5 * torch.tanh(s))
    return (out - target[4:7]).pow(2).sum() + torch.log(torch.cosh(b)).sum() + 0.1 * s.pow(2)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(
    ("name", "config"),
    [("sgd", c) for c in SGD_CONFIGS] + [("adam", c) for c in ADAM_CONFIGS],
    ids=lambda v: v if isinstance(v, str) else "-".join(f"{k}={w}" for k, w in v.items()),
)
def test_euclidean_trajectory_is_torch_bitwise(
    name: str, config: dict[str, Any], foreach: bool, dtype: torch.dtype, gen: torch.Generator
) -> None:
    init = _euclidean_params(gen, dtype)
    target = torch.randn(7, dtype=dtype, generator=gen)
    ours = [torch.nn.Parameter(t.clone()) for t in init]
    # A ManifoldParameter on Euclidean() is a plain parameter too.
    ours[1] = ManifoldParameter(init[1].clone())
    ref = [torch.nn.Parameter(t.clone()) for t in init]
    if name == "sgd":
        opt, ref_opt = RiemannianSGD(ours, **config), torch.optim.SGD(ref, foreach=foreach,
                                                                        **config)
    else:
        opt, ref_opt = RiemannianAdam(ours, **config), torch.optim.Adam(ref, foreach=foreach,
                                                                         **config)
    for _ in range(STEPS):
        for ps, o in ((ours, opt), (ref, ref_opt)):
            o.zero_grad()
            _euclidean_loss(ps, target).backward()
            o.step()
        for p, q in zip(ours, ref, strict=True):
            torch.testing.assert_close(p.detach(), q.detach(), atol=0, rtol=0)
    for p, q in zip(ours, ref, strict=True):
        for key, value in ref_opt.state[q].items():
            torch.testing.assert_close(opt.state[p][key], value, atol=0, rtol=0)
