"""Manifold objects and ManifoldParameter: delegation, learnable curvature, copying, saving."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch

from resnetbk.geometry import Euclidean, Lorentz, PoincareBall, lorentz, poincare
from resnetbk.nn import ManifoldParameter


@pytest.mark.parametrize("manifold_cls", [PoincareBall, Lorentz])
def test_random_points_lie_on_the_manifold(manifold_cls: type, gen: torch.Generator) -> None:
    m = manifold_cls(c=0.7)
    x = m.random(64, 6, std=1.0, dtype=torch.float64, generator=gen)
    if isinstance(m, PoincareBall):
        assert bool((0.7 * x.pow(2).sum(-1) < 1).all())
    else:
        assert torch.allclose(lorentz.inner(x, x), torch.full((64,), -1 / 0.7, dtype=x.dtype))


def test_methods_delegate_to_math(gen: torch.Generator) -> None:
    m = PoincareBall(c=2.0)
    x = m.random(8, 4, std=0.3, dtype=torch.float64, generator=gen)
    u = torch.randn(8, 4, dtype=torch.float64, generator=gen)
    assert torch.equal(m.retr(x, u), poincare.expmap(x, u, c=2.0))
    assert torch.equal(m.egrad2rgrad(x, u), poincare.egrad2rgrad(x, u, c=2.0))
    y = m.retr(x, u)
    assert torch.equal(m.transp(x, y, u), poincare.parallel_transport(x, y, u, c=2.0))


def test_learnable_curvature_is_a_positive_parameter_with_gradient(gen: torch.Generator) -> None:
    m = PoincareBall(c=0.5, learnable=True)
    assert [name for name, _ in m.named_parameters()] == ["log_c"]
    assert isinstance(m.c, torch.Tensor) and torch.isclose(m.c, torch.tensor(0.5))
    x = torch.randn(16, 3, generator=gen) * 0.3
    poincare.dist0(x, c=m.c).sum().backward()
    assert m.log_c.grad is not None and m.log_c.grad.abs().item() > 0


def test_fixed_curvature_survives_state_dict_round_trip() -> None:
    a, b = Lorentz(c=0.25), Lorentz(c=1.0)
    b.load_state_dict(a.state_dict())
    assert b.c == pytest.approx(0.25)


def test_curvature_must_be_positive() -> None:
    with pytest.raises(ValueError, match="c must be > 0"):
        PoincareBall(c=0.0)
    with pytest.raises(ValueError, match="c must be > 0"):
        Lorentz(c=-1.0)


def _model() -> torch.nn.Module:
    model = torch.nn.Module()
    model.manifold = PoincareBall(c=0.5, learnable=True)
    model.points = ManifoldParameter(torch.zeros(3, 2), model.manifold)
    model.linear = torch.nn.Linear(2, 2)
    return model


def test_manifold_parameter_deepcopy_keeps_manifold_and_sharing() -> None:
    model = _model()
    clone = copy.deepcopy(model)
    assert isinstance(clone.points, ManifoldParameter)
    assert clone.points.manifold is clone.manifold  # shared object stays shared in the copy
    assert clone.points.manifold is not model.manifold
    assert clone.points.data_ptr() != model.points.data_ptr()


def test_manifold_parameter_pickles() -> None:
    p = ManifoldParameter(torch.randn(4, 3), Lorentz(c=2.0), requires_grad=False)
    q = pickle.loads(pickle.dumps(p))
    assert isinstance(q, ManifoldParameter) and isinstance(q.manifold, Lorentz)
    assert q.manifold.c == 2.0 and not q.requires_grad and torch.equal(p, q)


def test_state_dict_loads_with_weights_only() -> None:
    model = _model()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh = _model()
    fresh.load_state_dict(state)
    assert isinstance(fresh.points, ManifoldParameter)


def test_default_manifold_is_euclidean() -> None:
    p = ManifoldParameter(torch.zeros(2))
    assert isinstance(p.manifold, Euclidean)
    assert "ManifoldParameter on Euclidean" in repr(p)


def test_fixed_curvature_keeps_float64_through_half_casts() -> None:
    m = PoincareBall(c=0.7).to(torch.bfloat16)
    assert m.log_c.dtype == torch.float64
    fresh = PoincareBall(c=1.0)
    fresh.load_state_dict(m.state_dict())
    assert fresh.c == pytest.approx(0.7, rel=1e-15)
