"""HyperbolicEmbedding: rows on the manifold, index checks, learnable curvature, copying."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from resnetbk.geometry.manifolds import Lorentz, PoincareBall
from resnetbk.nn import HyperbolicEmbedding, ManifoldParameter

DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]
MANIFOLDS = ["poincare", "lorentz"]
F64 = torch.float64


def rand_c(gen: torch.Generator) -> float:
    return float(torch.empty((), dtype=F64).uniform_(0.3, 3.0, generator=gen))


def assert_on_manifold(y: torch.Tensor, name: str, c: float) -> None:
    yd = y.double()
    assert torch.isfinite(yd).all()
    if name == "poincare":
        assert (math.sqrt(c) * yd.norm(dim=-1) < 1).all()
        return
    rtol = {torch.float64: 1e-12, torch.float32: 1e-6}.get(y.dtype, 2e-2)
    assert (yd[..., 0] > 0).all()
    err = (c * (yd[..., 1:].pow(2).sum(-1) - yd[..., 0].pow(2)) + 1).abs()
    assert (err <= rtol * (1 + c * yd[..., 0].pow(2))).all()


def tangent_norm0(y: torch.Tensor, name: str, c: float) -> torch.Tensor:
    """Euclidean norm of the coordinates of log_0(y) (float64): dist0(y) on the hyperboloid,
    dist0(y) / 2 on the ball (whose metric at the origin is 2^2 times the Euclidean one)."""
    yd, sc = y.double(), math.sqrt(c)
    if name == "poincare":
        return torch.atanh(sc * yd.norm(dim=-1)) / sc
    return torch.asinh(sc * yd[..., 1:].norm(dim=-1)) / sc


@pytest.mark.parametrize("name", MANIFOLDS)
@pytest.mark.parametrize("learnable_c", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_points_on_manifold(name: str, learnable_c: bool, dtype: torch.dtype,
                            gen: torch.Generator) -> None:
    c = rand_c(gen)
    emb = HyperbolicEmbedding(50, 4, manifold=name, c=c, init_std=0.5, learnable_c=learnable_c,
                              dtype=dtype)
    if learnable_c:
        emb = emb.to(dtype)  # the curvature too
    coords = 5 if name == "lorentz" else 4
    assert isinstance(emb.weight, ManifoldParameter) and emb.weight.shape == (50, coords)
    idx = torch.randint(0, 50, (3, 7), generator=gen)
    y = emb(idx)
    assert y.shape == (3, 7, coords) and y.dtype == dtype
    assert_on_manifold(y, name, float(emb.manifold.c_detached()))
    if not learnable_c:
        assert torch.equal(y, emb.weight.detach()[idx])


@pytest.mark.parametrize("name", MANIFOLDS)
@pytest.mark.parametrize("learnable_c", [False, True])
def test_initial_spread(name: str, learnable_c: bool) -> None:
    """exp_0 of N(0, std^2) tangent coordinates: E|log_0 y|^2 = d std^2 at the output
    curvature, whether the rows are stored at c or (learnable c) at 1."""
    c, std, d = 2.0, 0.05, 8
    emb = HyperbolicEmbedding(4000, d, manifold=name, c=c, init_std=std, learnable_c=learnable_c)
    r2 = tangent_norm0(emb(torch.arange(4000)), name, c).pow(2).mean().item()
    assert r2 == pytest.approx(d * std**2, rel=0.1)


@pytest.mark.parametrize("name", MANIFOLDS)
def test_learnable_curvature_scales_unit_model(name: str, gen: torch.Generator) -> None:
    """Learnable c: rows live on the c = 1 model, the output is w / sqrt(c), an isometry up to
    the factor 1/sqrt(c) on distances."""
    c = rand_c(gen)
    emb = HyperbolicEmbedding(20, 3, manifold=name, c=c, learnable_c=True, init_std=1.0,
                              dtype=F64).double()
    assert emb.weight.manifold.c == 1.0 and emb.manifold.learnable
    c_now = float(emb.manifold.c_detached())
    idx = torch.arange(20)
    y, w = emb(idx), emb.weight.detach()
    model = (PoincareBall if name == "poincare" else Lorentz)
    unit, scaled = model(1.0), model(c_now)
    torch.testing.assert_close(y, w / math.sqrt(c_now) if name == "poincare" else
                               torch.cat([torch.sqrt(1 / c_now + (w[:, 1:] / math.sqrt(c_now))
                                                     .pow(2).sum(-1, keepdim=True)),
                                          w[:, 1:] / math.sqrt(c_now)], -1),
                               rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(scaled.dist(y[:10], y[10:]),
                               unit.dist(w[:10], w[10:]) / math.sqrt(c_now),
                               rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", MANIFOLDS)
@pytest.mark.parametrize("learnable_c", [False, True])
def test_gradients(name: str, learnable_c: bool, gen: torch.Generator) -> None:
    c = rand_c(gen)
    emb = HyperbolicEmbedding(10, 3, manifold=name, c=c, learnable_c=learnable_c, init_std=0.3)
    idx = torch.tensor([1, 4, 4, 7])
    (emb(idx) * torch.randn(4, emb.weight.shape[1], generator=gen)).sum().backward()
    names = {n for n, _ in emb.named_parameters()}
    assert names == ({"weight", "manifold.log_c"} if learnable_c else {"weight"})
    for n, p in emb.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
        assert p.grad.abs().sum() > 0, f"{n} got a zero gradient"
    used = torch.zeros(10, dtype=torch.bool)
    used[idx] = True
    assert (emb.weight.grad[~used] == 0).all()
    assert (emb.weight.grad[used].abs().sum(-1) > 0).all()

    # gradcheck in float64 with respect to the table and the curvature.
    emb = emb.double()
    pnames = [n for n, _ in emb.named_parameters()]
    params = [p.detach().clone().requires_grad_() for _, p in emb.named_parameters()]

    def f(*ps: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(emb, dict(zip(pnames, ps, strict=True)), (idx,))

    assert torch.autograd.gradcheck(f, tuple(params))


def test_index_errors() -> None:
    emb = HyperbolicEmbedding(5, 2)
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 4\].*max 5"):
        emb(torch.tensor([0, 5]))
    with pytest.raises(ValueError, match=r"min -1"):
        emb(torch.tensor([-1, 2]))
    for bad in (torch.tensor([0.0, 1.0]), torch.tensor([True, False])):
        with pytest.raises(ValueError, match="integer dtype"):
            emb(bad)
    with pytest.raises(ValueError, match=r"torch\.Tensor"):
        emb([0, 1])  # type: ignore[arg-type]
    assert emb(torch.zeros(0, dtype=torch.long)).shape == (0, 2)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int32, torch.int64])
def test_integer_dtypes_index_rows(dtype: torch.dtype) -> None:
    """uint8 must select rows, not act as a boolean mask."""
    emb = HyperbolicEmbedding(5, 2)
    idx = torch.tensor([3, 1, 1], dtype=dtype)
    assert torch.equal(emb(idx), emb.weight.detach()[[3, 1, 1]])


def test_constructor_errors() -> None:
    with pytest.raises(ValueError, match="manifold must be one of"):
        HyperbolicEmbedding(5, 2, manifold="klein")
    with pytest.raises(ValueError, match="init_std"):
        HyperbolicEmbedding(5, 2, init_std=0.0)
    with pytest.raises(ValueError, match="num_embeddings"):
        HyperbolicEmbedding(0, 2)
    with pytest.raises(ValueError, match="c must be > 0"):
        HyperbolicEmbedding(5, 2, c=-2.0)


@pytest.mark.parametrize("name", MANIFOLDS)
@pytest.mark.parametrize("learnable_c", [False, True])
def test_deepcopy_and_state_dict(name: str, learnable_c: bool, gen: torch.Generator) -> None:
    c = rand_c(gen)
    emb = HyperbolicEmbedding(8, 3, manifold=name, c=c, learnable_c=learnable_c, init_std=0.3)
    idx = torch.arange(8)
    out = emb(idx)
    twin = copy.deepcopy(emb)
    assert isinstance(twin.weight, ManifoldParameter)
    assert (twin.weight.manifold is twin.manifold) == (not learnable_c)
    assert twin.weight.manifold is not emb.weight.manifold
    assert torch.equal(twin(idx), out)
    with torch.no_grad():
        twin.weight.mul_(0.5)
    assert torch.equal(emb(idx), out), "deepcopy shares storage with the original"
    fresh = HyperbolicEmbedding(8, 3, manifold=name, c=2 * c + 1, learnable_c=learnable_c)
    fresh.load_state_dict(emb.state_dict())
    assert float(fresh.manifold.c_detached()) == pytest.approx(c, rel=1e-6)
    assert torch.equal(fresh(idx), out)
    assert isinstance(fresh.weight, ManifoldParameter)


def test_repr() -> None:
    r = repr(HyperbolicEmbedding(7, 3, manifold="lorentz", init_std=0.02))
    assert "7, 3, manifold='lorentz', init_std=0.02" in r
