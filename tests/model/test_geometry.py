"""The global model's residual space: hyperboloid constraint, bounds, extreme activations."""

from __future__ import annotations

import math

import pytest
import torch
from _model_variants import MICRO, P, make, random_bytes

from resnetbk.geometry import lorentz
from resnetbk.model.megabyte import ResidualSpace, soft_bound


def _global_states(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The global model's input and the output of each block, for bytes x (B, K P)."""
    b, t = x.shape
    h = model._embed_patches(x.view(b, t // P, P))
    h = torch.cat([model._pad_state().to(h.dtype).expand(b, 1, -1), h[:, :-1]], 1)
    states = [h]
    for block in model.global_blocks:
        h = block(h)
        states.append(h)
    return states


@pytest.mark.parametrize("scale", [1.0, 30.0, 1e4])
def test_hidden_states_stay_on_the_hyperboloid(scale: float, gen: torch.Generator) -> None:
    """In float32, with the embeddings and every sublayer's output scaled up (huge
    activations): each state is finite, on the hyperboloid (|c<h,h>_L + 1| <= 1e-5 (1 + c h_0^2):
    float32 rounding of coordinates ~cosh(r)) and within max_radius of the origin; the loss
    and every gradient are finite."""
    model = make("lorentz-bk", dtype=torch.float32)
    c = MICRO.curvature
    with torch.no_grad():
        model.patch_proj.weight.mul_(scale)
        for block in model.global_blocks:
            block.mixer.out_proj.weight.mul_(scale)
            block.mlp[2].weight.mul_(scale)
    x = random_bytes(gen, 2, 6 * P)
    with torch.no_grad():
        for h in _global_states(model, x):
            assert torch.isfinite(h).all()
            err = (c * lorentz.inner(h, h) + 1).abs()
            assert (err <= 1e-5 * (1 + c * h[..., 0] ** 2)).all(), err.max()
            assert (h[..., 0] > 0).all()
            assert (lorentz.dist0(h, c=c) <= MICRO.max_radius * (1 + 1e-5)).all()
    model.loss(x).backward()
    for n, p in model.named_parameters():
        assert torch.isfinite(p.grad).all(), n


def test_hidden_states_in_float64_are_exactly_on_the_hyperboloid(gen: torch.Generator) -> None:
    """Every state the model computes is on the hyperboloid to float64 rounding, the pad too
    (a parameter initialised in float32 and cast: the model reads it through project)."""
    model = make("lorentz-bk")
    with torch.no_grad():
        for h in _global_states(model, random_bytes(gen, 2, 6 * P)):
            err = (MICRO.curvature * lorentz.inner(h, h) + 1).abs()
            assert (err <= 1e-12 * (1 + h[..., 0] ** 2)).all()


def test_euclidean_states_are_bounded_too(gen: torch.Generator) -> None:
    model = make("euclidean-bk", dtype=torch.float32)
    with torch.no_grad():
        model.patch_proj.weight.mul_(1e4)
        for h in _global_states(model, random_bytes(gen, 2, 6 * P)):
            assert (h.norm(dim=-1) <= MICRO.max_radius * (1 + 1e-5)).all()


def test_gyro_addition_of_a_short_step_is_the_tangent_sum_near_the_origin() -> None:
    """Near the origin the hyperboloid is flat: log_o(h (+) y) = log_o(h) + y + O(|u|^2 |y|)."""
    model = make("lorentz-bk")
    space = model.space
    u = 1e-4 * torch.randn(3, MICRO.d_global, dtype=torch.float64)
    y = 1e-4 * torch.randn(3, MICRO.d_global, dtype=torch.float64)
    got = space.read(space.add(space.lift(u), y))
    torch.testing.assert_close(got, u + y, rtol=0, atol=2e-9)  # |u|, |y| ~ 6e-4
    assert not torch.allclose(got, u + y, rtol=0, atol=1e-13)  # it is not plain addition


def test_gyro_addition_from_the_origin_is_the_exponential_map() -> None:
    """o (+) y = exp_o(y) exactly: the state after one step from the origin has radius
    R tanh(|y|_bounded / R) (the step bound, then the radius bound)."""
    model = make("lorentz-bk")
    space = model.space
    o = lorentz.origin(MICRO.d_global, c=MICRO.curvature, dtype=torch.float64)
    y = torch.randn(MICRO.d_global, dtype=torch.float64)
    y = y * (2.5 / y.norm())
    h = space.add(o, y)
    s, r = MICRO.max_step, MICRO.max_radius
    want = r * math.tanh(s * math.tanh(2.5 / s) / r)
    assert math.isclose(float(lorentz.dist0(h, c=MICRO.curvature)), want, rel_tol=1e-12)
    direction = space.read(h) / space.read(h).norm()
    torch.testing.assert_close(direction, y / y.norm(), rtol=0, atol=1e-12)


def test_soft_bound_values_and_gradients() -> None:
    v = torch.randn(5, 7, dtype=torch.float64)
    lengths = torch.tensor([0.0, 1e-30, 1e-3, 0.7, 50.0], dtype=torch.float64)[:, None]
    v = v / v.norm(dim=-1, keepdim=True) * lengths
    out = soft_bound(v, 2.0)
    want = 2.0 * torch.tanh(lengths / 2.0)
    torch.testing.assert_close(out.norm(dim=-1, keepdim=True), want, rtol=1e-14, atol=0)
    assert torch.equal(soft_bound(torch.zeros(3), 1.0), torch.zeros(3))
    for dtype, big in ((torch.float32, 1e30), (torch.float64, 1e300)):
        x = torch.tensor([[0.0, 0.0], [3e-3, 4e-3], [3.0, 4.0], [big, big]], dtype=dtype,
                         requires_grad=True)
        soft_bound(x, 2.0).sum().backward()
        assert torch.isfinite(x.grad).all(), dtype
        torch.testing.assert_close(x.grad[0], torch.ones(2, dtype=dtype))  # identity at 0
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: soft_bound(t, 0.5), (x,))
    small = (1e-3 * torch.randn(4, 3, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: soft_bound(t, 0.5), (small,))


@pytest.mark.parametrize("name", ["lorentz-bk", "euclidean-bk", "lorentz-attention"])
def test_bf16_autocast_is_finite(name: str, gen: torch.Generator) -> None:
    model = make(name, dtype=torch.float32)
    x = random_bytes(gen, 2, 8 * P)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model.loss(x)
        states = _global_states(model, x)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert all(h.dtype == torch.float32 for h in states)  # the residual stream stays float32
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert abs(loss.item() - model.loss(x).item()) < 0.1


@pytest.mark.parametrize("name", ["lorentz-bk", "euclidean-bk"])
def test_add_read_returns_the_features_of_the_new_state(name: str) -> None:
    """The features add_read hands to the next sublayer are read() of the state it returns."""
    space = make(name).space
    h = space.lift(3 * torch.randn(4, MICRO.d_global, dtype=torch.float64))
    new, features = space.add_read(h, 5 * torch.randn(4, MICRO.d_global, dtype=torch.float64))
    torch.testing.assert_close(features, space.read(new), rtol=1e-12, atol=1e-12)


def _add_read_by_public_ops(space: ResidualSpace, h: torch.Tensor,
                            y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The residual update written with the validated public geometry ops (ResidualSpace's
    docstring): what the one-function update must equal."""
    y = soft_bound(y.to(h.dtype), space.max_step)
    if not space.hyperbolic:
        h = soft_bound(h + y, space.max_radius)
        return h, h
    c = space.c
    v = torch.cat([torch.zeros_like(y[..., :1]), y], -1)
    o = lorentz.origin(space.dim, c=c, dtype=h.dtype, device=h.device).expand_as(h)
    h = lorentz.expmap(h, lorentz.parallel_transport(o, h, v, c=c), c=c)
    u = soft_bound(lorentz.logmap0(h, c=c)[..., 1:], space.max_radius)
    return lorentz.expmap0(torch.cat([torch.zeros_like(u[..., :1]), u], -1), c=c), u


@pytest.mark.parametrize("name", ["lorentz-bk", "euclidean-bk"])
def test_add_read_equals_the_public_ops(name: str, gen: torch.Generator) -> None:
    """The update as one function (one compiled call on CUDA) is the same arithmetic as the
    public ops: bit-identical on the CPU, where both run eagerly."""
    space = make(name).space
    h = space.lift(3 * torch.randn(4, 7, MICRO.d_global, dtype=torch.float64, generator=gen))
    y = 5 * torch.randn(4, 7, MICRO.d_global, dtype=torch.float64, generator=gen)
    for got, want in zip(space.add_read(h, y), _add_read_by_public_ops(space, h, y),
                         strict=True):
        assert torch.equal(got, want)


@pytest.mark.parametrize("name", ["lorentz-bk", "euclidean-bk"])
def test_add_read_traces_as_one_graph(name: str, gen: torch.Generator) -> None:
    """torch.compile takes the whole update, forward and backward, as one graph (fullgraph:
    a graph break would split the one compiled call into several)."""
    space = make(name, dtype=torch.float32).space
    h = space.lift(torch.randn(2, 5, MICRO.d_global, generator=gen)).requires_grad_()
    y = torch.randn(2, 5, MICRO.d_global, generator=gen, requires_grad=True)
    traced = torch.compile(space._update, backend="aot_eager", fullgraph=True)
    got = traced(h, y, space.c)
    want = space._update(h, y, space.c)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    grads = torch.autograd.grad(sum(t.sum() for t in got), (h, y))
    ref = torch.autograd.grad(sum(t.sum() for t in want), (h, y))
    for a, b in zip(grads, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["lorentz-bk", "euclidean-bk"])
def test_compiled_add_read_matches_eager(name: str, gen: torch.Generator) -> None:
    """On CUDA the update runs compiled (Inductor): values and gradients as accurate as the
    eager float32 update (backend "torch"), both measured against the eager update in float64,
    bf16 sublayer outputs included. (Compiled and eager float32 differ from each other by their
    rounding: near max_radius the coordinates are ~e^8 / 2, so elementwise agreement between
    the two is not a meaningful bound.)"""
    from resnetbk.kernels import dispatch

    space = make(name, dtype=torch.float32).space
    h0 = space.lift(3 * torch.randn(8, 64, MICRO.d_global, generator=gen)).cuda()
    y0 = (5 * torch.randn(8, 64, MICRO.d_global, generator=gen)).cuda().bfloat16()
    results = []
    for choice, dtype in (("torch", torch.float64), ("auto", torch.float32),
                          ("torch", torch.float32)):
        h, y = h0.to(dtype, copy=True).requires_grad_(), y0.clone().requires_grad_()
        with dispatch.backend(choice):
            out = space.add_read(h, y)
        loss = sum((t.double() ** 2).sum() for t in out)
        grads = torch.autograd.grad(loss, (h, y))
        results.append([t.double() for t in (*out, *grads)])
    for name_, ref, compiled, eager in zip(("h", "read", "grad h", "grad y"), *results,
                                           strict=True):
        assert compiled.isfinite().all(), name_
        err_compiled = (compiled - ref).abs().max().item()
        err_eager = (eager - ref).abs().max().item()
        floor = 1e-6 * ref.abs().max().item()
        assert err_compiled <= 2 * err_eager + floor, (name_, err_compiled, err_eager)
