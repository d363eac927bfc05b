"""Tests of resnetbk.bk.GreenTable: interpolation error against the h^2 K''/8 bound, tails,
gradients, bad input, and the Triton backend (interpreter on CPU, compiled on CUDA).

How the Triton tests run on CPU: Triton 3.6 decides between compiling and interpreting when
``@triton.jit`` runs, i.e. when ``resnetbk.bk.green_table`` is first imported, from
``TRITON_INTERPRET`` at that moment. Other test modules import ``resnetbk.bk`` before this one
is collected, so setting the variable here would come too late (and setting it globally would
turn later kernels into interpreted ones on a GPU machine). So ``test_triton_interpreter``
runs this file as a script in a fresh interpreter with ``TRITON_INTERPRET=1`` (the
``__main__`` block at the bottom), on CPU tensors, with a seed drawn from the test's
generator; the GPU test runs the same checks in-process on CUDA tensors.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch

import resnetbk
from resnetbk.bk import GreenTable
from resnetbk.bk import green_table as gt

EPS32 = torch.finfo(torch.float32).eps


def _tables(size: int) -> list[GreenTable]:
    return [
        GreenTable.heat(1.0, size=size),
        GreenTable.heat(0.1, size=size),
        GreenTable.heat(0.5, n=1, size=size),
        GreenTable.resolvent(2.0, size=size),
    ]


def _distances(tab: GreenTable, n: int, gen: torch.Generator) -> torch.Tensor:
    """Random points in [d_min, d_max], the grid points and every segment's midpoint (where the
    interpolation error of a convex/concave segment is largest), in float64."""
    grid = tab.grid()
    rand = tab.d_min + (tab.d_max - tab.d_min) * torch.rand(n, generator=gen, dtype=torch.float64)
    return torch.cat([rand, grid, (grid[1:] + grid[:-1]) / 2])


@pytest.mark.parametrize("size", [256, 1024, 4096])
def test_torch_matches_exact_within_bound(size: int, gen: torch.Generator) -> None:
    for tab in _tables(size):
        d = _distances(tab, 20000, gen)
        exact = tab(d, backend="exact")
        bound = tab.error_bound()
        err64 = (tab(d, backend="torch") - exact).abs().max().item()
        assert err64 <= 1.1 * bound, (tab, err64, bound)
        if tab.d_min == 0:
            # heat kernels: K'' varies little over a segment, so the bound is nearly attained
            # at the midpoints (not vacuous). The resolvent's K'' ~ 1/d^3 falls within the
            # first segment: there the bound is about 2x the error.
            assert err64 >= 0.5 * bound, (tab, err64, bound)
        # float32: the table and the arithmetic round, adding a few eps of max|K|
        d32 = d.float()
        err32 = (tab(d32, backend="torch").double() - tab(d32.double(), backend="exact")).abs()
        assert err32.max().item() <= 1.1 * bound + 8 * EPS32 * exact.abs().max().item(), tab


def test_grid_points_reproduce_the_table() -> None:
    # (d - d_min) * (1/h) rounds, so a grid point may land a few ulp into a segment
    tab = GreenTable.heat(1.0, size=333)
    torch.testing.assert_close(tab(tab.grid()), tab.values, rtol=1e-13, atol=0)


def test_tails_and_nan() -> None:
    for tail in ("clamp", "zero"):
        tab = GreenTable.resolvent(2.0, size=64, tail=tail)
        below = torch.tensor([-3.0, 0.0, 0.01, tab.d_min], dtype=torch.float64)
        above = torch.tensor([tab.d_max + 1e-9, tab.d_max + 5, math.inf], dtype=torch.float64)
        assert torch.equal(tab(below), tab.values[0].expand(4))
        want = tab.values[-1] if tail == "clamp" else torch.tensor(0.0, dtype=torch.float64)
        assert torch.equal(tab(above), want.expand(3))
        assert tab(torch.tensor([tab.d_max], dtype=torch.float64)).item() == tab.values[-1]
        assert tab(torch.tensor([math.nan, 1.0])).isnan().tolist() == [True, False]
        # derivative: 0 outside [d_min, d_max]
        x = torch.cat([below[:3], above[:2]]).requires_grad_()
        tab(x).sum().backward()
        assert torch.equal(x.grad, torch.zeros_like(x))


def test_gradient_is_segment_slope(gen: torch.Generator) -> None:
    tab = GreenTable.heat(0.3, size=500)
    d = (tab.d_max * torch.rand(5000, generator=gen, dtype=torch.float64)).requires_grad_()
    tab(d).sum().backward()
    i = (d.detach() / tab.h).floor().long()
    slope = (tab.values[i + 1] - tab.values[i]) / tab.h
    torch.testing.assert_close(d.grad, slope, rtol=1e-12, atol=1e-15)


def test_half_dtypes_and_shapes(gen: torch.Generator) -> None:
    tab = GreenTable.heat(1.0, size=1024)
    d = 12 * torch.rand(3, 1, 5, generator=gen)
    ref = tab(d)
    for dtype in (torch.bfloat16, torch.float16):
        out = tab(d.to(dtype))
        assert out.dtype == dtype and out.shape == d.shape
        torch.testing.assert_close(out.float(), tab(d.to(dtype).float()).to(dtype).float())
        torch.testing.assert_close(out.float(), ref, rtol=1e-2, atol=1e-5)
    assert tab(d.mT).shape == (3, 5, 1)
    assert tab(torch.empty(0)).shape == (0,)


def test_user_function_and_exact_backend() -> None:
    tab = GreenTable(lambda d: torch.cos(d), 3.0, 2, name="cos")  # a single segment
    d = torch.tensor([0.0, 1.5, 3.0], dtype=torch.float64)
    expected = torch.tensor([1.0, (1 + math.cos(3.0)) / 2, math.cos(3.0)], dtype=torch.float64)
    torch.testing.assert_close(tab(d), expected)
    torch.testing.assert_close(tab(d, backend="exact"), torch.cos(d))
    assert "cos" in repr(tab)


def test_resolvent_normalisation() -> None:
    """G_s solves (-Delta - s(2-s)) G = 0 for d > 0 (radial Laplacian G'' + 2 coth(d) G') and
    carries unit flux -4 pi sinh(d)^2 G'(d) -> 1 as d -> 0."""
    s, step = 1.7, 1e-4
    g = gt.resolvent_h3(s)
    d = torch.tensor([0.3, 1.0, 2.5], dtype=torch.float64)
    g0, gp, gm = g(d), g(d + step), g(d - step)
    lap = (gp - 2 * g0 + gm) / step**2 + 2 / torch.tanh(d) * (gp - gm) / (2 * step)
    torch.testing.assert_close(-lap - s * (2 - s) * g0, torch.zeros_like(d), atol=1e-6, rtol=0)
    r = torch.tensor([1e-4], dtype=torch.float64)
    flux = -4 * math.pi * torch.sinh(r) ** 2 * (g(r + 1e-7) - g(r - 1e-7)) / 2e-7
    assert abs(flux.item() - 1) < 1e-3


def test_bad_input() -> None:
    heat = gt.heat_kernel(1.0)
    d = torch.ones(3)
    bad_tables = [
        lambda: GreenTable(heat, -1.0),
        lambda: GreenTable(heat, 0.0),
        lambda: GreenTable(heat, math.inf),
        lambda: GreenTable(heat, 5.0, 1),
        lambda: GreenTable(heat, 5.0, True),
        lambda: GreenTable(heat, 5.0, 10.0),
        lambda: GreenTable(heat, 5.0, d_min=-0.1),
        lambda: GreenTable(heat, 5.0, d_min=6.0),
        lambda: GreenTable(heat, 5.0, tail="exp"),
        lambda: GreenTable("heat", 5.0),
        lambda: GreenTable(lambda x: x.float(), 5.0),
        lambda: GreenTable(lambda x: x[:3], 5.0),
        lambda: GreenTable(gt.resolvent_h3(2.0), 5.0),  # infinite at d = 0
        lambda: GreenTable.heat(0.0),
        lambda: GreenTable.heat(1.0, n=2),
        lambda: GreenTable.resolvent(1.0),
    ]
    for make in bad_tables:
        with pytest.raises(ValueError):
            make()
    tab = GreenTable(heat, 5.0)
    for call in (
        lambda: tab(torch.ones(3, dtype=torch.int64)),
        lambda: tab([1.0, 2.0]),
        lambda: tab(d, backend="cuda"),
    ):
        with pytest.raises(ValueError):
            call()
    with resnetbk.debug_checks(), pytest.raises(ValueError, match="negative"):
        tab(torch.tensor([1.0, -0.5]))
    with pytest.raises(ValueError):
        gt.heat3_triton(d.to(torch.int64), 1.0)


@pytest.mark.skipif(gt.triton is not None and gt._INTERPRETED, reason="CPU tensors run here")
def test_triton_on_cpu_without_interpreter_raises() -> None:
    with pytest.raises(ValueError, match="triton"):
        GreenTable.heat(1.0)(torch.ones(4), backend="triton")


def test_imports_without_triton() -> None:
    """The package imports and the torch backend works with triton absent; backend="triton"
    then raises a clear ValueError."""
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch, pytest\n"
        "from resnetbk.bk import GreenTable\n"
        "tab = GreenTable.heat(1.0)\n"
        "assert tab(torch.ones(3)).shape == (3,)\n"
        "with pytest.raises(ValueError, match='needs the triton package'):\n"
        "    tab(torch.ones(3), backend='triton')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# ----------------------------------------------------------------------------- triton backend


def _triton_checks(device: str, gen: torch.Generator) -> None:
    """Triton vs torch backend (values, gradients, tails, NaN, half input, shapes) and the
    analytic heat kernel vs float64, on ``device``."""
    for tab in (GreenTable.heat(1.0), GreenTable.resolvent(2.0, size=777, tail="zero")):
        d = (tab.d_max + 3) * torch.rand(4, 3000, generator=gen) - 1  # in and out of range
        d[0, :4] = torch.tensor([math.nan, math.inf, tab.d_min, tab.d_max])
        d = d.to(device)
        kmax = tab.values.abs().max().item()
        out = tab(d, backend="triton")
        torch.testing.assert_close(
            out, tab(d, backend="torch"), rtol=1e-6, atol=1e-6 * kmax, equal_nan=True
        )
        # gradient: analytic backward vs torch autograd through the torch backend
        w = torch.randn(d.shape, generator=gen).to(device)
        grads = []
        for backend in ("triton", "torch"):
            x = d[:, 4:].clone().requires_grad_()
            (tab(x, backend=backend) * w[:, 4:]).sum().backward()
            grads.append(x.grad)
        torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6 * kmax / tab.h)
        # non-contiguous input and a half dtype
        torch.testing.assert_close(
            tab(d.mT, backend="triton"), out.mT, rtol=0, atol=0, equal_nan=True
        )
        half = tab(d.bfloat16(), backend="triton")
        assert half.dtype == torch.bfloat16
        # the float32 -> bfloat16 rounding of the store may differ by one bf16 ulp (2^-8 rel.)
        torch.testing.assert_close(
            half.float(), tab(d.bfloat16(), backend="torch").float(), rtol=2**-7,
            atol=1e-6 * kmax, equal_nan=True,
        )
    assert tab(torch.empty(0, device=device), backend="triton").shape == (0,)
    # the analytic kernel (compute instead of look up) against float64. exp(-a) in float32
    # has relative error ~ eps * a (a = t + d + d^2/4t is rounded; on the GPU also a * log2 e
    # before ex2.approx), so the bound grows with the exponent.
    t = 0.7
    d = 12 * torch.rand(20000, generator=gen)
    d[:3] = torch.tensor([0.0, 0.249, 0.251])  # around the series/closed-form switch
    d = d.to(device)
    exact = gt.heat_kernel(t)(d.double())
    keep = exact > 1e-30  # float32 underflows below
    rel = (gt.heat3_triton(d, t).double() - exact).abs()[keep] / exact[keep]
    bound = 2e-6 + 8 * EPS32 * (t + d + d * d / (4 * t)).double()[keep]
    assert bool((rel <= bound).all()), (rel / bound).max().item()


def test_triton_interpreter(gen: torch.Generator) -> None:
    seed = int(torch.randint(2**31 - 1, (1,), generator=gen))
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run(
        [sys.executable, __file__, str(seed)], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, f"seed {seed}\n{proc.stdout}\n{proc.stderr}"


@pytest.mark.gpu
def test_triton_cuda(gen: torch.Generator) -> None:
    if gt.triton is None or gt._INTERPRETED:
        pytest.skip("needs Triton compiling for CUDA (not the interpreter)")
    _triton_checks("cuda", gen)
    d = torch.rand(1000, device="cuda")
    tab = GreenTable.heat(1.0)
    # auto picks the Triton kernel on CUDA: its backward node is _LutTriton's
    assert "LutTriton" in type(tab(d.requires_grad_()).grad_fn).__name__


if __name__ == "__main__":  # the TRITON_INTERPRET=1 subprocess of test_triton_interpreter
    assert gt._INTERPRETED, "run with TRITON_INTERPRET=1"
    g = torch.Generator()
    g.manual_seed(int(sys.argv[1]))
    _triton_checks("cpu", g)
