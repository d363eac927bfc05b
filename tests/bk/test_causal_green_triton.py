"""Triton backend of causal_green (resnetbk.bk.causal_green_triton).

CPU: the kernels run under Triton's interpreter in ONE subprocess started with
TRITON_INTERPRET=1 (this file run as a script). Triton fixes interpreter-vs-compiled when a
kernel is decorated, i.e. when its module is first imported in a process, so setting the
variable inside this pytest process would depend on import order and would also turn every
other Triton kernel of the process (GPU tests included) into interpreted code. The worker runs
every check once and prints the measured errors as JSON; the tests below assert on them.

GPU (``-m gpu``, run on the H200): the compiled kernels against the torch backend in float64 at
M = 4096, N = 8192 and at small odd sizes, and ``backend="auto"`` choosing triton on CUDA.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from resnetbk.bk import causal_green
from resnetbk.bk import green as green_mod
from resnetbk.bk.green import _backward_torch, _forward_torch, causal_green_reference

pytest.importorskip("triton", reason="triton is not installed")

F64, C128 = torch.float64, torch.complex128
# (M, N) for the interpreter checks: M = 9 is not a multiple of BLOCK_M = 8, N = 37 and 130
# are not multiples of BLOCK_N = 16, N = 1 is a single step.
SIZES = [(3, 1), (9, 37), (2, 130)]
F64_TOL = 1e-10  # relative, as for the torch backend (docs/BK.md "Accuracy")
F32_GRAD_TOL = 1e-3  # float32 gradients vs float64, relative to the largest (docs/BK.md)
WORKER_TIMEOUT_S = 300
PARTS = ("f64", "f32", "misc")


def _load_green_tests() -> ModuleType:
    """The input generators and float32 bound of tests/bk/test_green.py (one definition)."""
    path = Path(__file__).with_name("test_green.py")
    spec = importlib.util.spec_from_file_location("_bk_green_tests", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GT = _load_green_tests()


def _rel(x: torch.Tensor, ref: torch.Tensor) -> float:
    """max |x - ref| / max |ref| (absolute when ref is all zero, e.g. grad_k at N = 1)."""
    err, scale = (x.to(ref.dtype) - ref).abs().max(), ref.abs().max()
    return float(err / scale if scale > 0 else err)


def _grads64(a: torch.Tensor, k: torch.Tensor, z: torch.Tensor, gg: torch.Tensor) -> tuple:
    """The torch backend's exact float64 vector-Jacobian product (the oracle)."""
    a, k, z, gg = a.double(), k.double(), z.to(C128), gg.to(C128)
    return _backward_torch(a, k, z, _forward_torch(a, k, z), gg)


# ----------------------------------------------------------------------------- worker


def _interpreter_checks(part: str, seed: int) -> dict[str, Any]:
    """One part ("f64", "f32" or "misc") of the interpreter measurements, run inside a
    TRITON_INTERPRET=1 subprocess (the parts run in parallel: each kernel step costs the
    interpreter milliseconds)."""
    from resnetbk.bk import causal_green_triton as tri

    gen = torch.Generator().manual_seed(seed)
    out: dict[str, Any] = {f"interpreted_{part}": tri._INTERPRETED}
    # float32 skips the longest size: the adversarial float32 chains below cover N > 37.
    sizes = {"f64": SIZES, "f32": SIZES[:2], "misc": []}[part]
    for m, n in sizes:
        a, k = GT.chain(gen, (m, n))
        z = GT.energies(gen, (m, 1), im_min=1e-2)
        gg = torch.complex(*torch.randn(2, m, n, generator=gen, dtype=F64))
        if part == "f64":  # against the torch backend and the sequential loop
            g = tri.forward(a, k, z)
            out[f"f64_fwd_vs_torch_{m}x{n}"] = _rel(g, _forward_torch(a, k, z))
            out[f"f64_fwd_vs_reference_{m}x{n}"] = _rel(g, causal_green_reference(a, k, z))
            grads = tri.backward(a, k, z, g, gg)
            for name, mine, want in zip(
                ("a", "k", "z"), grads, _grads64(a, k, z, gg), strict=True
            ):
                out[f"f64_grad_{name}_{m}x{n}"] = _rel(mine, want)
            out[f"f64_last_grad_k_is_zero_{m}x{n}"] = bool((grads[1][:, -1] == 0).all())
            continue
        # float32: on float32-representable inputs, against float64 (error * Im z, as in
        # test_green.py), and gradients relative to the largest float64 gradient.
        a32, k32 = (x.float() for x in GT.f32_exact(a, k))
        z32 = z.to(torch.complex64)
        g32 = tri.forward(a32, k32, z32)
        g64 = _forward_torch(a32.double(), k32.double(), z32.to(C128))
        out[f"f32_fwd_err_{m}x{n}"] = float(((g32.to(C128) - g64).abs() * z.imag).max())
        for name, mine, want in zip(
            ("a", "k", "z"),
            tri.backward(a32, k32, z32, g32, gg.to(torch.complex64)),
            _grads64(a32, k32, z32, gg),
            strict=True,
        ):
            out[f"f32_grad_{name}_{m}x{n}"] = _rel(mine, want)
    if part == "f32":
        # Adversarial chains (huge a, large/small k, mixed scales) with Im z down to 1e-3.
        z = GT.tiny_im_energies(4)
        for name, a64, k64 in GT.adversarial(gen, 4, 40):
            a64, k64 = GT.f32_exact(a64, k64)
            g32 = tri.forward(a64.float(), k64.float(), z.to(torch.complex64))
            err = (g32.to(C128) - _forward_torch(a64, k64, z)).abs() * z.imag
            out[f"f32_adv_{name}"] = float(err.max())
    if part != "misc":
        return out

    # Causality: perturbing positions > t leaves G_0..G_t bit-identical.
    a, k = GT.chain(gen, (3, 37))
    z = GT.energies(gen, (3, 1))
    base = tri.forward(a, k, z)
    bits = True
    for t in (0, 15, 30):  # 15: the last position of the first tile
        a2, k2 = a.clone(), k.clone()
        a2[:, t + 1 :] += 1.0
        k2[:, t:] += 1.0  # k_t is not read for G_t either
        bits &= torch.equal(tri.forward(a2, k2, z)[:, : t + 1], base[:, : t + 1])
    out["causal_bit_identical"] = bool(bits)

    # gradcheck through the public entry point (autograd wiring, broadcasting, complex z).
    a, k = GT.chain(gen, (2, 2, 5))
    z = GT.energies(gen, (2, 1))
    xs = tuple(x.requires_grad_() for x in (a, k + 0.1, z))
    # fast_mode (random projections of the Jacobian): the full Jacobian takes ~100 kernel
    # calls, seconds each batch under the interpreter.
    out["gradcheck"] = bool(
        torch.autograd.gradcheck(
            lambda *v: causal_green(*v, backend="triton"), xs, fast_mode=True
        )
    )
    return out


@pytest.fixture(scope="module")
def interp() -> dict[str, Any]:
    """Runs the worker parts once per module, in parallel (fresh seed, shown on failure)."""
    seed = int.from_bytes(os.urandom(4), "little") >> 1
    env = dict(os.environ, TRITON_INTERPRET="1")
    start = time.perf_counter()
    procs = {
        part: subprocess.Popen(
            [sys.executable, __file__, part, str(seed)], env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        for part in PARTS
    }
    res: dict[str, Any] = {"seed": seed}
    for part, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=WORKER_TIMEOUT_S)
        assert proc.returncode == 0, f"worker {part} failed (seed {seed}):\n{stderr[-4000:]}"
        res |= json.loads(stdout.strip().splitlines()[-1])
    res["wall_s"] = time.perf_counter() - start
    return res


def _pick(res: dict[str, Any], prefix: str) -> dict[str, Any]:
    got = {key: v for key, v in res.items() if key.startswith(prefix)}
    assert got, f"no results named {prefix}*"
    return got


# ----------------------------------------------------------------------------- CPU tests


def test_worker_runs_interpreted(interp: dict[str, Any]) -> None:
    assert all(interp[f"interpreted_{part}"] for part in PARTS)


@pytest.mark.parametrize("what", ["fwd_vs_torch", "fwd_vs_reference", "grad_a", "grad_k",
                                  "grad_z"])
def test_float64_matches_torch_backend(interp: dict[str, Any], what: str) -> None:
    errs = _pick(interp, f"f64_{what}")
    assert max(errs.values()) < F64_TOL, f"seed {interp['seed']}: {errs}"


def test_last_coupling_gets_zero_gradient(interp: dict[str, Any]) -> None:
    assert all(_pick(interp, "f64_last_grad_k_is_zero").values())


@pytest.mark.parametrize("what", ["fwd_err", "adv"])
def test_float32_forward_within_documented_bound(interp: dict[str, Any], what: str) -> None:
    errs = _pick(interp, f"f32_{what}")
    assert max(errs.values()) < GT.F32_BOUND, f"seed {interp['seed']}: {errs}"


@pytest.mark.parametrize("name", ["a", "k", "z"])
def test_float32_gradients_are_close(interp: dict[str, Any], name: str) -> None:
    errs = _pick(interp, f"f32_grad_{name}")
    assert max(errs.values()) < F32_GRAD_TOL, f"seed {interp['seed']}: {errs}"


def test_causality_is_bit_exact(interp: dict[str, Any]) -> None:
    assert interp["causal_bit_identical"] is True


def test_gradcheck_through_causal_green(interp: dict[str, Any]) -> None:
    assert interp["gradcheck"] is True


def test_cpu_tensors_raise_without_interpreter() -> None:
    from resnetbk.bk import causal_green_triton as tri

    if tri._INTERPRETED:
        pytest.skip("TRITON_INTERPRET=1 was set when this process imported the kernels")
    a = torch.zeros(2, 4, dtype=F64)
    with pytest.raises(ValueError, match="runs on CUDA tensors"):
        causal_green(a, a, 0.5j, backend="triton")


def test_auto_is_torch_on_cpu(gen: torch.Generator) -> None:
    a, k = GT.chain(gen, (2, 40))
    z = GT.energies(gen, (2, 1))
    assert torch.equal(causal_green(a, k, z), causal_green(a, k, z, backend="torch"))


# ----------------------------------------------------------------------------- GPU tests


def _compiled() -> ModuleType:
    from resnetbk.bk import causal_green_triton as tri

    if tri._INTERPRETED:
        pytest.fail("TRITON_INTERPRET=1 was set in this pytest process before the Triton "
                    "kernels were imported: run Triton interpreter tests in a subprocess")
    return tri


@pytest.mark.gpu
@pytest.mark.parametrize("m, n", [(1, 1), (9, 37), (33, 1000), (3, 4099), (4096, 8192)])
def test_cuda_matches_float64_torch_backend(gen: torch.Generator, m: int, n: int) -> None:
    tri = _compiled()
    a, k = GT.chain(gen, (m, n))
    z = GT.energies(gen, (m, 1), im_min=1e-2)
    gg = torch.complex(*torch.randn(2, m, n, generator=gen, dtype=F64))
    a32, k32 = (x.float().cuda() for x in GT.f32_exact(a, k))
    z32, gg32 = z.to(torch.complex64).cuda(), gg.to(torch.complex64).cuda()
    g32 = tri.forward(a32, k32, z32)
    grads32 = tri.backward(a32, k32, z32, g32, gg32)
    torch.cuda.synchronize()
    # The oracle: the torch backend in float64 on the same (float32-representable) inputs.
    a64, k64, z64, gg64 = a32.double(), k32.double(), z32.to(C128), gg32.to(C128)
    g64 = _forward_torch(a64, k64, z64)
    err = float(((g32.to(C128) - g64).abs() * z64.imag).max())
    assert err < GT.F32_BOUND, f"forward error * Im z = {err:.3g}"
    for name, mine, want in zip(
        ("a", "k", "z"), grads32, _backward_torch(a64, k64, z64, g64, gg64), strict=True
    ):
        assert bool(torch.isfinite(mine).all()), f"grad_{name} is not finite"
        assert _rel(mine, want) < F32_GRAD_TOL, f"grad_{name}: {_rel(mine, want):.3g}"


@pytest.mark.gpu
def test_cuda_float64_matches_torch_backend(gen: torch.Generator) -> None:
    tri = _compiled()
    a, k = (x.cuda() for x in GT.chain(gen, (9, 300)))
    z = GT.energies(gen, (9, 1)).cuda()
    gg = torch.complex(*torch.randn(2, 9, 300, generator=gen, dtype=F64)).cuda()
    g = tri.forward(a, k, z)
    assert _rel(g, _forward_torch(a, k, z)) < F64_TOL
    for mine, want in zip(tri.backward(a, k, z, g, gg), _grads64(a, k, z, gg), strict=True):
        assert _rel(mine, want) < F64_TOL


@pytest.mark.gpu
def test_auto_picks_triton_on_cuda(gen: torch.Generator, monkeypatch: pytest.MonkeyPatch) -> None:
    _compiled()
    calls: list[str] = []
    fwd, bwd = green_mod._BACKENDS["triton"]

    def spy(a: torch.Tensor, k: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        calls.append("triton")
        return fwd(a, k, z)

    monkeypatch.setitem(green_mod._BACKENDS, "triton", (spy, bwd))
    a, k = (x.float().cuda().requires_grad_() for x in GT.chain(gen, (4, 64)))
    z = GT.energies(gen, (4, 1)).to(torch.complex64).cuda()
    causal_green(a, k, z).real.sum().backward()
    assert calls == ["triton"]
    assert a.grad is not None and bool(torch.isfinite(a.grad).all())


if __name__ == "__main__":
    print(json.dumps(_interpreter_checks(sys.argv[1], int(sys.argv[2]))))
