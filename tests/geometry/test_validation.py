"""Bad input: cheap checks always raise ValueError with a useful message; expensive checks
(on-manifold, tangency, finiteness) run only in debug mode and do nothing when it is off."""

from __future__ import annotations

import math

import _geo as G
import pytest
import torch

import resnetbk
from resnetbk.geometry import convert, lorentz, poincare

C = 1.0


def ball_points(gen: torch.Generator, n: int = 4, d: int = 3) -> torch.Tensor:
    return G.ball(gen, n, d, C)


# ----------------------------------------------------------------------------- cheap checks

POINCARE_BINARY = [poincare.mobius_add, poincare.mobius_sub, poincare.dist, poincare.logmap,
                   poincare.expmap]
LORENTZ_BINARY = [lorentz.dist, lorentz.logmap, lorentz.expmap, lorentz.proju,
                  lorentz.egrad2rgrad]


def op_id(f: object) -> str:
    return f"{f.__module__}.{f.__name__}"


@pytest.mark.parametrize("fn", POINCARE_BINARY + LORENTZ_BINARY, ids=op_id)
def test_mismatched_manifold_dimension(fn) -> None:
    a = torch.zeros(4, 3, dtype=G.F64)
    b = torch.zeros(4, 4, dtype=G.F64)
    with pytest.raises(ValueError, match=r"last \(manifold\) dimensions differ: x\(4, 3\), "):
        fn(a, b, c=C)


@pytest.mark.parametrize("fn", POINCARE_BINARY + LORENTZ_BINARY, ids=op_id)
def test_non_broadcastable_shapes(fn) -> None:
    a = torch.zeros(2, 3, dtype=G.F64)
    b = torch.zeros(5, 3, dtype=G.F64)
    with pytest.raises(ValueError, match=r"shapes do not broadcast: x\(2, 3\), "):
        fn(a, b, c=C)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.complex64])
def test_non_floating_dtype(dtype: torch.dtype) -> None:
    bad = torch.zeros(4, 3, dtype=dtype)
    good = torch.zeros(4, 3)
    with pytest.raises(ValueError, match=r"x must have a floating dtype .* got torch\."):
        poincare.mobius_add(bad, good, c=C)
    with pytest.raises(ValueError, match=r"y must have a floating dtype"):
        poincare.dist(good, bad, c=C)
    with pytest.raises(ValueError, match=r"u must have a floating dtype"):
        lorentz.expmap0(bad, c=C)
    with pytest.raises(ValueError, match=r"p must have a floating dtype"):
        convert.poincare_to_lorentz(bad, c=C)


def test_not_a_tensor_and_zero_dim() -> None:
    with pytest.raises(ValueError, match=r"x must be a torch.Tensor, got list"):
        poincare.dist0([0.1, 0.2], c=C)
    with pytest.raises(ValueError, match=r"x must have at least one dimension"):
        poincare.dist0(torch.tensor(0.1), c=C)


BAD_C = [0.0, -1.0, -1e-300, math.nan, -math.inf]


@pytest.mark.parametrize("c", BAD_C)
def test_non_positive_float_curvature(c: float) -> None:
    x = torch.zeros(2, 3)
    for call in (lambda: poincare.expmap0(x, c=c), lambda: poincare.dist(x, x, c=c),
                 lambda: lorentz.dist(lorentz.project(x, c=1.0), lorentz.project(x, c=1.0), c=c),
                 lambda: convert.lorentz_to_klein(x, c=c), lambda: lorentz.origin(2, c=c)):
        with pytest.raises(ValueError, match=r"c must be > 0 \(the curvature is -c\); got c = "):
            call()


@pytest.mark.parametrize("c", [0.0, -2.0])
def test_non_positive_tensor_curvature(c: float) -> None:
    x = torch.zeros(2, 3)
    ct = torch.tensor([[1.0], [c]])
    with pytest.raises(ValueError, match=r"c must be > 0 .* got min\(c\) = "):
        poincare.mobius_add(x, x, c=ct)
    with pytest.raises(ValueError, match=r"c must be > 0"):
        lorentz.dist(lorentz.project(x, c=1.0), lorentz.project(x, c=1.0), c=ct)


@pytest.mark.parametrize("c", ["1.0", None, True, 1 + 0j, [1.0],
                               torch.tensor([1], dtype=torch.int64)])
def test_curvature_of_wrong_type(c: object) -> None:
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"c must be a positive float"):
        poincare.dist(x, x, c=c)
    with pytest.raises(ValueError, match=r"c must be a positive float"):
        lorentz.expmap0(x, c=c)


def test_integer_curvature_is_accepted() -> None:
    x = torch.full((2, 3), 0.1)
    torch.testing.assert_close(poincare.dist(x, -x, c=2), poincare.dist(x, -x, c=2.0))


@pytest.mark.parametrize("fn", [lorentz.dist0, lorentz.logmap0, lorentz.project, lorentz.expmap0,
                                convert.lorentz_to_poincare, convert.lorentz_to_klein])
def test_lorentz_vectors_need_two_coordinates(fn) -> None:
    with pytest.raises(ValueError, match=r"needs at least 2 coordinates \(time first\), got 1"):
        fn(torch.ones(4, 1), c=C)


def test_lorentz_binary_need_two_coordinates() -> None:
    one = torch.ones(4, 1)
    with pytest.raises(ValueError, match=r"x needs at least 2 coordinates"):
        lorentz.dist(one, one, c=C)
    with pytest.raises(ValueError, match=r"needs at least 2 coordinates"):
        lorentz.parallel_transport(one, one, one, c=C)


@pytest.mark.parametrize("dim", [-1, 2])
def test_midpoint_and_centroid_reject_the_manifold_axis(gen: torch.Generator, dim: int) -> None:
    x = ball_points(gen, 6).reshape(2, 3, 3)
    with pytest.raises(ValueError, match=r"dim must select the points, not the last"):
        poincare.midpoint(x, c=C, dim=dim)
    X = lorentz.project(torch.zeros(2, 3, 4), c=C)
    with pytest.raises(ValueError, match=r"dim must select the points, not the last"):
        lorentz.centroid(X, c=C, dim=-1 if dim == -1 else 2)


def test_midpoint_and_centroid_dim_out_of_range(gen: torch.Generator) -> None:
    x = ball_points(gen, 6).reshape(2, 3, 3)
    with pytest.raises(ValueError, match=r"dim 3 is out of range for x of shape \(2, 3, 3\)"):
        poincare.midpoint(x, c=C, dim=3)
    with pytest.raises(ValueError, match=r"dim -4 is out of range"):
        lorentz.centroid(lorentz.project(torch.zeros(2, 3, 4), c=C), c=C, dim=-4)


def test_centroid_weights(gen: torch.Generator) -> None:
    X = lorentz.project(torch.randn(5, 3, generator=gen), c=C)
    with pytest.raises(ValueError, match=r"centroid weights must be non-negative"):
        lorentz.centroid(X, c=C, weights=torch.tensor([1.0, -1, 1, 1, 1]), dim=0)
    with pytest.raises(ValueError, match=r"weights must be a floating tensor"):
        lorentz.centroid(X, c=C, weights=torch.ones(5, dtype=torch.int64), dim=0)


def test_matvec_shape_mismatch(gen: torch.Generator) -> None:
    x = ball_points(gen)
    for m in (torch.zeros(3, 4), torch.zeros(3), torch.zeros(2, 3, 3)):
        with pytest.raises(ValueError, match=r"m must be a matrix of shape \(out, 3\) for "
                                             r"x\(4, 3\), got m"):
            poincare.mobius_matvec(m, x, c=C)
    with pytest.raises(ValueError, match=r"m must have a floating dtype"):
        poincare.mobius_matvec(torch.zeros(3, 3, dtype=torch.int64), x, c=C)


def test_cdist_shapes() -> None:
    with pytest.raises(ValueError, match=r"cdist needs \(\.\.\., n, d\+1\) and "):
        lorentz.cdist(torch.ones(3), torch.ones(4, 3), c=C)
    with pytest.raises(ValueError, match=r"last \(manifold\) dimensions differ"):
        lorentz.cdist(torch.ones(2, 3), torch.ones(4, 4), c=C)
    with pytest.raises(ValueError, match=r"shapes do not broadcast"):
        lorentz.cdist(torch.ones(2, 2, 3), torch.ones(3, 4, 3), c=C)


def test_unidirectional_mlr_shapes(gen: torch.Generator) -> None:
    x = ball_points(gen)
    with pytest.raises(ValueError, match=r"expected z of shape \(3, k\) and r of shape \(k,\)"):
        poincare.unidirectional_mlr(x, torch.zeros(4, 2), torch.zeros(2), c=C)


# ----------------------------------------------------------------------------- debug mode


def outside_ball() -> torch.Tensor:
    return torch.tensor([[0.9, 0.9, 0.0]], dtype=G.F64)


def off_hyperboloid() -> torch.Tensor:
    return torch.tensor([[2.0, 0.3, 0.1]], dtype=G.F64)


def debug_failures(gen: torch.Generator) -> list[tuple[str, object]]:
    """(expected message, call) pairs that must raise in debug mode and not raise otherwise."""
    p = ball_points(gen, 1)
    X = lorentz.project(torch.randn(1, 3, generator=gen, dtype=G.F64), c=C)
    not_tangent = torch.tensor([[1.0, 0.0, 0.0]], dtype=G.F64)
    nan_p = p.clone()
    nan_p[0, 0] = math.nan
    inf_X = X.clone()
    inf_X[0, 1] = math.inf
    lower = -X
    return [
        (r"x is not inside the Poincaré ball: max c\*\|x\|\^2 = 1\.62, expected < 1",
         lambda: poincare.dist0(outside_ball(), c=C)),
        (r"y is not inside the Poincaré ball", lambda: poincare.dist(p, outside_ball(), c=C)),
        (r"p is not inside the Poincaré ball",
         lambda: convert.poincare_to_lorentz(outside_ball(), c=C)),
        (r"k is not inside the Poincaré ball",
         lambda: convert.klein_to_poincare(outside_ball(), c=C)),
        (r"x contains 1 non-finite values", lambda: poincare.dist0(nan_p, c=C)),
        (r"u contains 1 non-finite values", lambda: poincare.expmap(p, nan_p, c=C)),
        (r"grad contains 1 non-finite values", lambda: poincare.egrad2rgrad(p, nan_p, c=C)),
        (r"x is not on the hyperboloid <x,x>_L = -1/c",
         lambda: lorentz.dist0(off_hyperboloid(), c=C)),
        (r"x is not on the hyperboloid", lambda: convert.lorentz_to_poincare(off_hyperboloid(),
                                                                             c=C)),
        (r"y is not on the upper sheet", lambda: lorentz.dist(X, lower, c=C)),
        (r"x contains 1 non-finite values", lambda: lorentz.logmap(inf_X, X, c=C)),
        (r"u is not tangent at the point: max relative \|<x,u>_L\|",
         lambda: lorentz.expmap(X, not_tangent + X * 0, c=C)),
        (r"v is not tangent at the point",
         lambda: lorentz.parallel_transport(X, X, not_tangent, c=C)),
        (r"u must be tangent at the origin",
         lambda: lorentz.expmap0(torch.tensor([[0.5, 0.1, 0.2]], dtype=G.F64), c=C)),
    ]


def test_debug_checks_raise_inside_the_context(gen: torch.Generator) -> None:
    for message, call in debug_failures(gen):
        with resnetbk.debug_checks(), pytest.raises(ValueError, match=message):
            call()


def test_debug_checks_via_environment(gen: torch.Generator, monkeypatch: pytest.MonkeyPatch
                                      ) -> None:
    monkeypatch.setenv("RESNETBK_DEBUG", "1")
    assert resnetbk.debug_enabled()
    for message, call in debug_failures(gen):
        with pytest.raises(ValueError, match=message):
            call()
    # An explicit debug_checks(False) wins over the environment.
    with resnetbk.debug_checks(False):
        for _, call in debug_failures(gen):
            call()


@pytest.mark.parametrize("value", ["0", "", "false"])
def test_debug_checks_off_do_nothing(gen: torch.Generator, monkeypatch: pytest.MonkeyPatch,
                                     value: str) -> None:
    """Off (the default), invalid points are not inspected: the calls return (whatever the
    formulas give), they do not raise."""
    monkeypatch.setenv("RESNETBK_DEBUG", value)
    assert not resnetbk.debug_enabled()
    for _, call in debug_failures(gen):
        call()


def test_debug_check_of_rounded_boundary_points(gen: torch.Generator) -> None:
    """A valid point rounded past the boundary by its dtype passes; one beyond that fails."""
    x = G.ball_boundary(gen, 64, 3, 1.0)
    with resnetbk.debug_checks():
        for dtype in (torch.bfloat16, torch.float16):
            poincare.dist0(x.to(dtype), c=1.0)
            with pytest.raises(ValueError, match=r"expected < 1 \(up to rounding: < 1\.0"):
                poincare.dist0((1.05 * x).to(dtype), c=1.0)
        with pytest.raises(ValueError, match=r"expected < 1$"):
            poincare.dist0(x / (1 - 1e-6) * (1 + 1e-15), c=1.0)


def test_debug_checks_accept_valid_inputs_in_every_regime(gen: torch.Generator) -> None:
    """No false alarms: boundary points, far points and their tangent vectors pass, in every
    dtype (the tolerances are per dtype)."""
    for dtype in (torch.float64, torch.float32, torch.bfloat16, torch.float16):
        # float16 overflows at cosh(sqrt(c) d) / sqrt(c) > 65504 (d ~ 8.3 for c = 2): keep X
        # and Y = expmap(X, U) inside that range.
        far, step = (30.0, None) if dtype != torch.float16 else (6.0, 2.0)
        with resnetbk.debug_checks():
            x = G.ball_boundary(gen, 8, 3, 2.0).to(dtype)
            y = G.ball(gen, 8, 3, 2.0).to(dtype)
            poincare.dist(x, y, c=2.0)
            big = (100 * torch.ones_like(y)).to(dtype)  # tangent vectors: any size
            poincare.parallel_transport(x, y, big, c=2.0)
            poincare.expmap(x, big, c=2.0)
            poincare.egrad2rgrad(x, big, c=2.0)
            poincare.inner(x, big, big, c=2.0)
            poincare.gyration(x, y, big, c=2.0)
            poincare.parallel_transport0(y, big, c=2.0)
            X = G.hyperboloid_at(far, G.unit(gen, 8, 3), 2.0)
            U = G.lorentz_tangent(gen, X, 2.0, length=step)
            Y = lorentz.expmap(X.to(dtype), U.to(dtype), c=2.0) if dtype == torch.float64 else (
                lorentz.expmap(X, U, c=2.0).to(dtype))
            lorentz.logmap(X.to(dtype), Y, c=2.0)
            lorentz.parallel_transport(X.to(dtype), Y, U.to(dtype), c=2.0)
            convert.lorentz_to_poincare(Y, c=2.0)
