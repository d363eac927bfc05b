"""Fast transcendental helpers (resnetbk.kernels.fastmath) against float64 torch.

Each helper runs once over fresh random float32 inputs spread over its domain (tiny, around 1,
large, huge, negative where defined, exact boundary values and the branch points of the
implementation), written into a NaN-poisoned buffer, for each FAST mode of ``fast_modes``
(portable only under the interpreter). The error against float64 torch on the same float32
inputs must stay within ``|y - f(x)| <= rel |f(x)| + abs``: for the portable paths the design
bound of the module docstring plus about one eps (eps = 2^-23: a few float32 ulp), for the PTX
paths twice the documented (or derived) bound. Special values (0, +-1, +-inf) are checked
exactly, NaN must propagate; the packed bfloat16x2 / float16x2 forms run only on a GPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from resnetbk.kernels import fastmath

# Special values make numpy (the interpreter) warn about inf - inf, x / 0 and overflow on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")
EPS = 2.0**-23
BAND = 384  # samples per band of a domain


def _logu(gen: torch.Generator, lo: float, hi: float, n: int = BAND) -> torch.Tensor:
    """Log-uniform magnitudes in [lo, hi] (float64)."""
    u = torch.empty(n, dtype=torch.float64).uniform_(math.log(lo), math.log(hi), generator=gen)
    return u.exp()


def _uni(gen: torch.Generator, lo: float, hi: float, n: int = BAND) -> torch.Tensor:
    return torch.empty(n, dtype=torch.float64).uniform_(lo, hi, generator=gen)


def _both(t: torch.Tensor) -> torch.Tensor:
    return torch.cat([t, -t])


def _tanh_domain(gen: torch.Generator) -> list[torch.Tensor]:
    return [_both(_logu(gen, 1e-30, 1e-3)), _uni(gen, -3, 3), _both(_logu(gen, 3, 20)),
            _both(_logu(gen, 20, 1e38)),
            torch.tensor([0.0, 0.55, -0.55, 0.5499999, 0.005, -0.005, 0.004997, 9.0, 3e38])]


DOMAINS: dict[str, Callable[[torch.Generator], list[torch.Tensor]]] = {
    "tanh": _tanh_domain,
    "tanh_ex2_rcp": _tanh_domain,
    "exp2": lambda g: [_uni(g, -125, 127), _both(_logu(g, 1e-30, 1)),
                       torch.arange(-125, 128, dtype=torch.float64), torch.tensor([0.0, 0.5])],
    "log2": lambda g: [_logu(g, 1e-37, 3e38), 1 + _both(_logu(g, 1e-7, 0.4)),
                       torch.tensor([1.0, 0.5, 2.0, 0.75, 1.5, 1.1754944e-38, 3e38])],
    "sqrt": lambda g: [_logu(g, 1e-37, 3e38), torch.tensor([0.0, 1.0, 2.0, 4.0, 3e38])],
    "rsqrt": lambda g: [_logu(g, 1e-37, 3e38), torch.tensor([1.0, 2.0, 4.0, 0.25])],
    "rcp": lambda g: [_both(_logu(g, 1e-37, 1e37)), torch.tensor([1.0, -1.0, 3.0, 0.1])],
    "log1p": lambda g: [_both(_logu(g, 1e-30, 1e-3)), _uni(g, -0.999, 10),
                        _logu(g, 10, 3e38), -1 + _logu(g, 6e-8, 1e-2),
                        torch.tensor([0.0, -0.5, -0.2928932, -0.2928933, 0.41421356, 0.4142136,
                                      -0.99999994, 1.0, 2.0**24, 3e38])],
    "artanh": lambda g: [_both(_logu(g, 1e-30, 1e-3)), _uni(g, -0.999, 0.999),
                         _both(1 - _logu(g, 6e-8, 1e-2)),
                         torch.tensor([0.0, 0.5, -0.5, 0.99999994, -0.99999994])],
    "acosh": lambda g: [1 + _logu(g, 1e-7, 1), _uni(g, 1, 10), _logu(g, 10, 3e38),
                        torch.tensor([1.0, 1.0000001, 2.0, 8191.999, 8192.0, 8193.0, 3e38])],
    "exp": lambda g: [_uni(g, -87, 88.7), _both(_logu(g, 1e-30, 1)),
                      torch.tensor([0.0, 1.0, -1.0, 88.72, -87.3, 10.0, -10.0])],
}

REFERENCE: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "tanh": torch.tanh,
    "tanh_ex2_rcp": torch.tanh,
    "exp2": torch.exp2,
    "log2": torch.log2,
    "sqrt": torch.sqrt,
    "rsqrt": torch.rsqrt,
    "rcp": torch.reciprocal,
    "log1p": torch.log1p,
    "artanh": torch.atanh,
    "acosh": torch.acosh,
    "exp": torch.exp,
}

# (relative, absolute) bounds: portable = the design bound of the module docstring plus about
# one eps; FAST = twice the documented PTX bound (derived from it for the composite helpers).
PORTABLE: dict[str, tuple[float, float]] = {
    "tanh": (6 * EPS, 0.0),
    "tanh_ex2_rcp": (2.0**-16, 0.0),
    "exp2": (4 * EPS, 0.0),
    "log2": (4 * EPS, 0.0),
    "sqrt": (EPS, 0.0),
    "rsqrt": (4 * EPS, 0.0),
    "rcp": (4 * EPS, 0.0),
    "log1p": (4 * EPS, 0.0),
    "artanh": (8 * EPS, 0.0),
    "acosh": (8 * EPS, 0.0),
    "exp": (4 * EPS, 0.0),
}
FAST: dict[str, tuple[float, float]] = {
    "tanh": (2 * 2.0**-11, 0.0),
    "tanh_ex2_rcp": (2.0**-15, 0.0),
    "exp2": (4 * EPS, 0.0),
    "log2": (4 * EPS, 2 * 2.0**-22),  # absolute 2^-22 on [0.5, 2]
    "sqrt": (4 * EPS, 0.0),
    "rsqrt": (2 * 2.0**-22.9, 0.0),
    "rcp": (2 * EPS, 0.0),
    "log1p": (2.0**-20, 0.0),
    "artanh": (2.0**-19, 0.0),
    "acosh": (2.0**-19, 0.0),
    "exp": (4 * EPS, 0.0),  # plus 2 * 1.173 |x| ulp, see _bound
}


def _bound(name: str, fast: bool, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    rel, floor = (FAST if fast else PORTABLE)[name]
    rel = torch.full_like(ref, rel)
    if fast and name == "exp":  # CUDA's __expf: 2 + 1.173 |x| ulp
        rel = rel + 2 * 1.173 * x.abs() * EPS
    return rel * ref.abs() + floor


def _inputs(name: str, gen: torch.Generator, device: str) -> torch.Tensor:
    x = torch.cat(DOMAINS[name](gen)).to(torch.float32)
    return x[torch.randperm(x.numel(), generator=gen)].to(device)


@pytest.mark.parametrize("name", fastmath.FUNCTIONS)
def test_helper_accuracy(name: str, gen: torch.Generator, device: str,
                         fast_modes: tuple[bool, ...]) -> None:
    x = _inputs(name, gen, device)
    ref = REFERENCE[name](x.double())
    for fast in fast_modes:
        out = torch.full_like(x, float("nan"))
        y = fastmath.apply(name, x, fast=fast, out=out)
        assert y is out
        assert torch.isfinite(y).all(), f"{name} fast={fast}: non-finite at x={x[~y.isfinite()]}"
        err = (y.double() - ref).abs()
        bound = _bound(name, fast, x.double(), ref)
        rel = (err / ref.abs().clamp_min(1e-300)).max().item()
        print(f"{name} fast={fast}: max rel err {rel:.3e} = {rel / EPS:.2f} eps")
        bad = err > bound
        assert not bad.any(), (
            f"{name} fast={fast}: {int(bad.sum())} outside the bound, worst at x = "
            f"{x[bad][(err[bad] / bound[bad]).argmax()].item()!r}: max rel err {rel:.3e}")


# (name, input, exact output): IEEE special values (PTX specifies them for the instructions
# too) and boundary values of the composite helpers, checked in every FAST mode ...
SPECIAL: list[tuple[str, float, float]] = [
    ("tanh", 0.0, 0.0), ("tanh", float("inf"), 1.0), ("tanh", float("-inf"), -1.0),
    ("tanh_ex2_rcp", 0.0, 0.0),
    ("exp2", 0.0, 1.0), ("exp2", float("-inf"), 0.0), ("exp2", float("inf"), float("inf")),
    ("log2", 0.0, float("-inf")), ("log2", float("inf"), float("inf")),
    ("sqrt", 0.0, 0.0), ("sqrt", float("inf"), float("inf")),
    ("rsqrt", 0.0, float("inf")), ("rsqrt", float("inf"), 0.0),
    ("rcp", 0.0, float("inf")), ("rcp", float("inf"), 0.0),
    ("log1p", 0.0, 0.0), ("log1p", -1.0, float("-inf")), ("log1p", float("inf"), float("inf")),
    ("artanh", 0.0, 0.0), ("artanh", 1.0, float("inf")), ("artanh", -1.0, float("-inf")),
    ("acosh", 1.0, 0.0), ("acosh", 0.5, 0.0), ("acosh", -3.0, 0.0),
    ("acosh", float("inf"), float("inf")),
    ("exp", 0.0, 1.0), ("exp", float("-inf"), 0.0), ("exp", -200.0, 0.0),
    ("exp", float("inf"), float("inf")), ("exp", 89.0, float("inf")),
]
# ... and exact results that only the portable path promises (an approximate rcp or tanh
# instruction need not return exactly 1 or 0.5).
SPECIAL_PORTABLE: list[tuple[str, float, float]] = [
    ("tanh", 1e30, 1.0), ("tanh", -1e30, -1.0), ("tanh_ex2_rcp", float("inf"), 1.0),
    ("tanh_ex2_rcp", float("-inf"), -1.0), ("log2", 2.0, 1.0), ("log2", 1.0, 0.0),
    ("sqrt", 4.0, 2.0), ("rcp", 2.0, 0.5), ("exp2", 3.0, 8.0),
]


@pytest.mark.parametrize("name", fastmath.FUNCTIONS)
def test_special_values(name: str, device: str, fast_modes: tuple[bool, ...]) -> None:
    for fast in fast_modes:
        cases = [(x, y) for n, x, y in SPECIAL + ([] if fast else SPECIAL_PORTABLE) if n == name]
        x = torch.tensor([c[0] for c in cases], dtype=torch.float32, device=device)
        want = torch.tensor([c[1] for c in cases], dtype=torch.float32, device=device)
        y = fastmath.apply(name, x, fast=fast, out=torch.full_like(x, float("nan")))
        assert torch.equal(y, want), f"{name} fast={fast}: x={x.tolist()} gave {y.tolist()}"


@pytest.mark.parametrize("name", fastmath.FUNCTIONS)
def test_nan_propagates(name: str, device: str, fast_modes: tuple[bool, ...]) -> None:
    x = torch.full((3,), float("nan"), device=device)
    for fast in fast_modes:
        assert fastmath.apply(name, x, fast=fast).isnan().all(), f"{name} fast={fast}"


def test_portable_continuous_at_branch_points(device: str) -> None:
    """Both sides of each branch point agree to a few ulp (no jump where the formula changes)."""
    edges = {"tanh": 0.55, "tanh_ex2_rcp": 0.004997253418, "log1p": 0.41421356,
             "acosh": 8192.0}
    for name, edge in edges.items():
        x = torch.tensor([edge], dtype=torch.float32)
        x = torch.cat([torch.nextafter(x, torch.tensor(0.0)), x, torch.nextafter(x, x * 2)])
        y = fastmath.apply(name, x.to(device), fast=False).cpu().double()
        ref = REFERENCE[name](x.double())
        assert ((y - ref).abs() <= PORTABLE[name][0] * ref.abs()).all(), (name, y, ref)


def test_portable_log2_of_subnormal(device: str) -> None:
    """The portable logarithm rescales subnormal arguments instead of flushing them."""
    x = torch.tensor([1e-45, 1e-40, 3e-39, 1.1754942e-38], dtype=torch.float32)
    y = fastmath.apply("log2", x.to(device), fast=False).cpu().double()
    ref = torch.log2(x.double())
    assert ((y - ref).abs() <= PORTABLE["log2"][0] * ref.abs()).all(), (y, ref)


@pytest.mark.gpu
@pytest.mark.parametrize(("name", "rel"), [("tanh_bf16x2", 2.0**-7), ("tanh_f16x2", 2.0**-9)])
def test_packed_tanh(name: str, rel: float, gen: torch.Generator, device: str) -> None:
    """tanh.approx.bf16x2 / f16x2 within two units of the output format (GPU only)."""
    if device != "cuda":
        pytest.skip("inline PTX needs a CUDA device")
    dtype = fastmath.PACKED[name]
    # odd length (384 + 768 + 3): the last pair is half masked
    x = torch.cat([_uni(gen, -10, 10), _both(_logu(gen, 1e-3, 1)), torch.zeros(3)])
    x = x.to(dtype).to(device)
    out = torch.full_like(x, float("nan"))
    y = fastmath.apply(name, x, out=out)
    assert y is out and torch.isfinite(y).all()
    ref = torch.tanh(x.double())
    err = (y.double() - ref).abs()
    print(f"{name}: max rel err {(err / ref.abs().clamp_min(1e-300)).max().item():.3e}")
    assert (err <= rel * ref.abs()).all()


def test_bad_input(device: str) -> None:
    x = torch.ones(4, device=device)
    with pytest.raises(ValueError, match="unknown fastmath helper"):
        fastmath.apply("cosh", x)
    with pytest.raises(ValueError, match="float32 input"):
        fastmath.apply("tanh", x.double())
    with pytest.raises(ValueError, match="out must match"):
        fastmath.apply("tanh", x, out=torch.empty(5, device=device))
    with pytest.raises(ValueError, match="contiguous"):
        fastmath.apply("tanh", x, out=torch.empty(4, 2, device=device)[:, 0])
    if device == "cpu":
        with pytest.raises(ValueError, match="CUDA device"):
            fastmath.apply("tanh", x, fast=True)
        with pytest.raises(ValueError, match="CUDA device"):
            fastmath.apply("tanh_bf16x2", x.bfloat16())
