"""Triton backend of causal_green (resnetbk.bk.causal_green_triton).

CPU: the kernels run under Triton's interpreter in ONE subprocess started with
TRITON_INTERPRET=1 (this file run as a script). Triton fixes interpreter-vs-compiled when a
kernel is decorated, i.e. when its module is first imported in a process, so setting the
variable inside this pytest process would depend on import order and would also turn every
other Triton kernel of the process (GPU tests included) into interpreted code. The worker runs
every check once and prints the measured errors as JSON; the tests below assert on them.

Both variants are checked: row-parallel (parts "f64", "f32", "misc") and chunked (part
"chunked", forced with ``variant="chunked"`` and short chunks so that small N has several).

GPU (``-m gpu``, run on the H200): the compiled kernels of both variants against the torch
backend in float64 at M = 4096, N = 8192, at small M with long N (8 x 2^17) and at small odd
sizes, and ``backend="auto"`` choosing triton on CUDA.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import zlib
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
# (M, N, chunk length) for the chunked variant: N = 1; N < L (one chunk: passes 1-2 skipped);
# M = 9 over 4 chunks of 8, the last partial (BLOCK_N = 8, two row blocks); N = 37 not a
# multiple of L = 16 (3 chunks, BLOCK_N = 16). The last size also runs in float32.
CHUNK_SIZES = [(3, 1, 16), (4, 10, 16), (9, 26, 8), (5, 37, 16)]
F64_TOL = 1e-10  # relative, as for the torch backend (docs/BK.md "Accuracy")
F32_GRAD_TOL = 1e-3  # float32 gradients vs float64, relative to the largest (docs/BK.md)
WORKER_TIMEOUT_S = 300
PARTS = ("f64", "f32", "misc", "chunked", "time_major")
# (B, N, C, chunk length or None for row-parallel) of the time-major checks: C = 20 is not a
# multiple of the 128 rows of a time-major program, N = 37 not of its 8 positions.
TIME_MAJOR_SIZES = [(2, 37, 20, None), (2, 37, 20, 16), (3, 9, 16, 8)]


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
    if part == "chunked":
        return out | _chunked_checks(tri, gen)
    if part == "time_major":
        return out | _time_major_checks(tri, gen)
    # float32 skips the longest size: the adversarial float32 chains below cover N > 37.
    sizes = {"f64": SIZES, "f32": SIZES[:2], "misc": []}[part]
    for m, n in sizes:
        a, k = GT.chain(gen, (m, n))
        z = GT.energies(gen, (m, 1), im_min=1e-2)
        gg = torch.complex(*torch.randn(2, m, n, generator=gen, dtype=F64))
        if part == "f64":  # against the torch backend and the sequential loop
            g = tri.forward(a, k, z, variant="row")
            out[f"f64_fwd_vs_torch_{m}x{n}"] = _rel(g, _forward_torch(a, k, z))
            out[f"f64_fwd_vs_reference_{m}x{n}"] = _rel(g, causal_green_reference(a, k, z))
            _f64_grads(out, "f64", f"{m}x{n}", tri.backward(a, k, z, g, gg, variant="row"),
                       _grads64(a, k, z, gg))
            continue
        # float32: on float32-representable inputs, against float64 (error * Im z, as in
        # test_green.py), and gradients relative to the largest float64 gradient.
        a32, k32 = (x.float() for x in GT.f32_exact(a, k))
        z32 = z.to(torch.complex64)
        g32 = tri.forward(a32, k32, z32, variant="row")
        g64 = _forward_torch(a32.double(), k32.double(), z32.to(C128))
        out[f"f32_fwd_err_{m}x{n}"] = float(((g32.to(C128) - g64).abs() * z.imag).max())
        for name, mine, want in zip(
            ("a", "k", "z"),
            tri.backward(a32, k32, z32, g32, gg.to(torch.complex64), variant="row"),
            _grads64(a32, k32, z32, gg),
            strict=True,
        ):
            out[f"f32_grad_{name}_{m}x{n}"] = _rel(mine, want)
    if part == "f32":
        # Adversarial chains (huge a, large/small k, mixed scales) with Im z down to 1e-3.
        z = GT.tiny_im_energies(4)
        for name, a64, k64 in GT.adversarial(gen, 4, 40):
            a64, k64 = GT.f32_exact(a64, k64)
            g32 = tri.forward(a64.float(), k64.float(), z.to(torch.complex64), variant="row")
            err = (g32.to(C128) - _forward_torch(a64, k64, z)).abs() * z.imag
            out[f"f32_adv_{name}"] = float(err.max())
    if part != "misc":
        return out

    # Causality: perturbing positions > t leaves G_0..G_t bit-identical.
    a, k = GT.chain(gen, (3, 37))
    z = GT.energies(gen, (3, 1))
    out["causal_bit_identical"] = _prefix_unchanged(lambda *x: tri.forward(*x, variant="row"),
                                                    a, k, z, (0, 15, 30))

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

    # torch.compile keeps the Triton passes as opaque custom ops: one graph (fullgraph), the
    # same values and gradients as eager; opcheck validates the ops' registrations.
    def green(*v: torch.Tensor) -> torch.Tensor:
        return causal_green(*v, backend="triton", check_values=False)

    a, k = GT.chain(gen, (3, 20))
    z = GT.energies(gen, (3, 1))
    xs = tuple(x.requires_grad_() for x in (a, k + 0.1, z))
    compiled = torch.compile(green, backend="aot_eager", fullgraph=True)(*xs)
    eager = green(*xs)
    out["compiled_fwd_equal"] = torch.equal(compiled, eager)
    grads = [torch.autograd.grad(g.abs().square().sum(), xs) for g in (compiled, eager)]
    out["compiled_grads_equal"] = all(map(torch.equal, *grads))
    ops = torch.ops.resnetbk
    plain = tuple(x.detach() for x in xs)
    torch.library.opcheck(ops.causal_green_forward.default, plain)
    torch.library.opcheck(ops.causal_green_backward.default,
                          (*plain, eager.detach(), torch.randn_like(eager.detach())))
    out["opcheck"] = True
    return out


def _f64_grads(out: dict[str, Any], prefix: str, size: str, grads: tuple, want: tuple) -> None:
    """Records the float64 gradient errors and whether grad_k_{N-1} is exactly 0."""
    for name, mine, ref in zip(("a", "k", "z"), grads, want, strict=True):
        out[f"{prefix}_grad_{name}_{size}"] = _rel(mine, ref)
    out[f"{prefix}_last_grad_k_is_zero_{size}"] = bool((grads[1][:, -1] == 0).all())


def _prefix_unchanged(fwd: Any, a: torch.Tensor, k: torch.Tensor, z: torch.Tensor,
                      positions: tuple[int, ...]) -> bool:
    """Causality: perturbing positions > t leaves G_0..G_t bit-identical, for each t."""
    base = fwd(a, k, z)
    bits = True
    for t in positions:
        a2, k2 = a.clone(), k.clone()
        a2[:, t + 1 :] += 1.0
        k2[:, t:] += 1.0  # k_t is not read for G_t either
        bits &= torch.equal(fwd(a2, k2, z)[:, : t + 1], base[:, : t + 1])
    return bool(bits)


def _time_major_checks(tri: ModuleType, gen: torch.Generator) -> dict[str, Any]:
    """Time-major inputs ((B, N, C) tensors seen as (B, C, N), as BKMixer passes them; one
    energy per channel, expanded over the batch): read in place, G and the gradients
    time-major, float64 values equal to the row-major launch bit for bit (same arithmetic per
    row) and to the torch backend; and through causal_green with autograd."""
    out: dict[str, Any] = {}
    for nb, n, c, chunk in TIME_MAJOR_SIZES:
        # The same positions per tile in both layouts: grad_z's partial sums follow the tile.
        opts = {"variant": "row", "block_n": 8} if chunk is None else {
            "variant": "chunked", "chunk": chunk, "block_n": 8}
        a, k = (x.transpose(1, 2).contiguous().transpose(1, 2)
                for x in GT.chain(gen, (nb, c, n)))
        z = GT.energies(gen, (1, c, 1), im_min=1e-2).expand(nb, c, 1)
        gg = torch.complex(*torch.randn(2, nb, c, n, generator=gen, dtype=F64))  # row-major
        size = f"{nb}x{c}x{n}_L{chunk}"
        g = tri.forward(a, k, z, **opts)
        grads = tri.backward(a, k, z, g, gg, **opts)
        out[f"tm_layout_{size}"] = all(x.stride(1) == 1 for x in (g, *grads[:2]))
        flat = [x.reshape(-1, x.shape[-1]) for x in (a, k, z, g, gg)]
        want_g = tri.forward(*flat[:3], **opts)
        want_grads = tri.backward(*flat[:3], want_g, flat[4], **opts)
        out[f"tm_equal_row_major_{size}"] = torch.equal(flat[3], want_g) and all(
            torch.equal(x.reshape(y.shape), y) for x, y in zip(grads, want_grads, strict=True))
        out[f"tm_fwd_vs_torch_{size}"] = _rel(flat[3], _forward_torch(*flat[:3]))
    # The custom ops' fake implementations allocate what the kernels return (compiled code
    # relies on fake strides), for time-major 3-D, transposed and contiguous 2-D arguments.
    from torch._subclasses.fake_tensor import FakeTensorMode

    ops = torch.ops.resnetbk
    c, n = 20, 10
    a3, k3 = (x.transpose(1, 2) for x in GT.chain(gen, (2, n, c)))
    z3 = GT.energies(gen, (2, c, 1))
    a2, k2 = (x.t() for x in GT.chain(gen, (n, c)))
    z2 = GT.energies(gen, (c, 1))
    same = []
    for args in ((a3, k3, z3), (a2, k2, z2), (a2.contiguous(), k2.contiguous(), z2)):
        g = ops.causal_green_forward(*args)
        gg = torch.randn_like(g)
        grads = ops.causal_green_backward(*args, g, gg)
        mode = FakeTensorMode()
        fake = [mode.from_tensor(x) for x in (*args, g, gg)]
        with mode:
            fake_g = ops.causal_green_forward(*fake[:3])
            fake_grads = ops.causal_green_backward(*fake)
        same += [x.stride() == y.stride() and x.shape == y.shape
                 for x, y in zip((g, *grads), (fake_g, *fake_grads), strict=True)]
    out["tm_fake_strides_match"] = all(same)
    # A time-major G (and grad_G) with other strides than the kernels' own allocation (batch
    # stride 0): the backward copies them to its layout instead of misreading them.
    a, k = (x.transpose(1, 2) for x in GT.chain(gen, (1, n, c)))
    z = GT.energies(gen, (1, c, 1))
    g = tri.forward(a, k, z)
    ae, ke, ze, ge = (x.expand(2, *x.shape[1:]) for x in (a, k, z, g))
    gg = torch.complex(*torch.randn(2, 2, c, n, generator=gen, dtype=F64))
    mine = tri.backward(ae, ke, ze, ge, gg)
    want = _backward_torch(*(x.reshape(-1, x.shape[-1]).contiguous() for x in (ae, ke, ze, ge,
                                                                               gg)))
    out["tm_strided_g_grads"] = max(_rel(x.reshape(y.shape), y)
                                    for x, y in zip(mine, want, strict=True))

    # The public entry point with autograd, as BKMixer calls it.
    nb, n, c = 2, 21, 17
    a, k = (x.transpose(1, 2).requires_grad_() for x in GT.chain(gen, (nb, n, c)))
    z = GT.energies(gen, (c,), im_min=1e-2).requires_grad_()
    gg = torch.complex(*torch.randn(2, nb, c, n, generator=gen, dtype=F64))
    mine, want = (causal_green(a, k, z[:, None], backend=b) for b in ("triton", "torch"))
    out["tm_causal_green_fwd"] = _rel(mine, want)
    grads = [torch.autograd.grad((g * gg.conj()).real.sum(), (a, k, z)) for g in (mine, want)]
    out["tm_causal_green_grads"] = max(_rel(x, y) for x, y in zip(*grads, strict=True))
    return out


def _chunked_checks(tri: ModuleType, gen: torch.Generator) -> dict[str, Any]:
    """The chunked variant: float64 vs the torch backend and the loop, float32 within the
    documented bound (adversarial chains over 3 chunks), gradients, causality."""
    out: dict[str, Any] = {}
    for m, n, chunk in CHUNK_SIZES:
        opts = {"variant": "chunked", "chunk": chunk}
        a, k = GT.chain(gen, (m, n))
        z = GT.energies(gen, (m, 1), im_min=1e-2)
        gg = torch.complex(*torch.randn(2, m, n, generator=gen, dtype=F64))
        size = f"{m}x{n}_L{chunk}"
        g = tri.forward(a, k, z, **opts)
        out[f"chunked_f64_fwd_vs_torch_{size}"] = _rel(g, _forward_torch(a, k, z))
        out[f"chunked_f64_fwd_vs_reference_{size}"] = _rel(g, causal_green_reference(a, k, z))
        _f64_grads(out, "chunked_f64", size, tri.backward(a, k, z, g, gg, **opts),
                   _grads64(a, k, z, gg))
    # float32 on float32-representable inputs vs float64 (the last size's inputs).
    a32, k32 = (x.float() for x in GT.f32_exact(a, k))
    z32 = z.to(torch.complex64)
    g32 = tri.forward(a32, k32, z32, **opts)
    g64 = _forward_torch(a32.double(), k32.double(), z32.to(C128))
    out["chunked_f32_fwd_err"] = float(((g32.to(C128) - g64).abs() * z.imag).max())
    grads = tri.backward(a32, k32, z32, g32, gg.to(torch.complex64), **opts)
    for name, mine, want in zip(("a", "k", "z"), grads, _grads64(a32, k32, z32, gg),
                                strict=True):
        out[f"chunked_f32_grad_{name}"] = _rel(mine, want)
    # The adversarial chains of 4 rows each, stacked into one call (each interpreted launch
    # costs ~0.1 s), over 3 chunks of 16.
    chains = GT.adversarial(gen, 4, 40)
    a64, k64 = GT.f32_exact(torch.cat([c[1] for c in chains]), torch.cat([c[2] for c in chains]))
    z = GT.tiny_im_energies(4).repeat(len(chains), 1)
    g32 = tri.forward(a64.float(), k64.float(), z.to(torch.complex64), variant="chunked",
                      chunk=16)
    err = (g32.to(C128) - _forward_torch(a64, k64, z)).abs() * z.imag
    for i, (name, _, _) in enumerate(chains):
        out[f"chunked_f32_adv_{name}"] = float(err[4 * i : 4 * i + 4].max())
    # Causality across a chunk boundary (L = 16): the last position of a chunk, the first of
    # the next.
    a, k = GT.chain(gen, (3, 37))
    out["chunked_causal_bit_identical"] = _prefix_unchanged(
        lambda *x: tri.forward(*x, variant="chunked", chunk=16), a, k, GT.energies(gen, (3, 1)),
        (15, 16),
    )
    return out


@pytest.fixture(scope="module")
def interp() -> dict[str, Any]:
    """Runs the worker parts once per module, in parallel (seeded from the run seed, so
    RESNETBK_TEST_SEED reproduces them; shown on failure)."""
    seed = int(os.environ["RESNETBK_TEST_SEED"]) ^ zlib.crc32(b"causal_green_triton")
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


@pytest.mark.parametrize("what", ["fwd_vs_torch", "fwd_vs_reference", "grad_a", "grad_k",
                                  "grad_z"])
def test_chunked_float64_matches_torch_backend(interp: dict[str, Any], what: str) -> None:
    errs = _pick(interp, f"chunked_f64_{what}")
    assert len(errs) == len(CHUNK_SIZES)
    assert max(errs.values()) < F64_TOL, f"seed {interp['seed']}: {errs}"


def test_chunked_last_coupling_gets_zero_gradient(interp: dict[str, Any]) -> None:
    assert all(_pick(interp, "chunked_f64_last_grad_k_is_zero").values())


def test_chunked_float32_within_documented_bound(interp: dict[str, Any]) -> None:
    errs = _pick(interp, "chunked_f32_fwd_err") | _pick(interp, "chunked_f32_adv")
    assert max(errs.values()) < GT.F32_BOUND, f"seed {interp['seed']}: {errs}"
    grads = _pick(interp, "chunked_f32_grad")
    assert max(grads.values()) < F32_GRAD_TOL, f"seed {interp['seed']}: {grads}"


def test_chunked_causality_is_bit_exact(interp: dict[str, Any]) -> None:
    assert interp["chunked_causal_bit_identical"] is True


def test_time_major_is_read_in_place_and_exact(interp: dict[str, Any]) -> None:
    assert all(_pick(interp, "tm_layout_").values())
    assert all(_pick(interp, "tm_equal_row_major_").values())
    assert max(_pick(interp, "tm_fwd_vs_torch_").values()) < F64_TOL
    assert interp["tm_causal_green_fwd"] < F64_TOL
    assert interp["tm_causal_green_grads"] < F64_TOL
    assert interp["tm_fake_strides_match"] is True
    assert interp["tm_strided_g_grads"] < F64_TOL


def test_dispatcher_rule_and_chunk_length() -> None:
    from resnetbk.bk import causal_green_triton as tri

    # (M, N, time-major, variant) -> chunk length CH of the launch (CH = N: row-parallel).
    def plan(m: int, n: int, variant: str = "auto", chunk: int | None = None,
             time_major: bool = False) -> tuple[int, int, int, int]:
        return tri._plan(m, n, time_major, variant, chunk, None, None, None)

    assert plan(4, 8)[0] == 8  # short N: row-parallel
    assert plan(4096, 8192)[0] == tri.CHUNK
    assert plan(tri.CHUNKED_MAX_M, 8192)[0] == 8192
    assert plan(tri.CHUNKED_MAX_M, 8192, time_major=True)[0] == tri.CHUNK
    assert plan(tri.CHUNKED_MAX_M_TIME_MAJOR, 256, time_major=True)[0] == 256
    assert plan(4096, 8192, "row")[0] == 8192
    assert plan(2, 10, "chunked", 16)[:3] == (10, 8, 16)  # N < L
    assert plan(2, 100, "chunked", 32)[:3] == (32, 8, 16)
    assert plan(2, 100, "chunked", 32, time_major=True)[:3] == (32, 128, 8)
    assert tri._plan(2, 100, True, "chunked", 32, None, None, None, backward=True)[:3] == (
        32, 64, 4)
    # Chunks on the grid's second axis: at most 65535, the default length grows to fit.
    n = 2**24
    assert -(-n // plan(1, n, "chunked")[0]) <= 65535
    with pytest.raises(ValueError, match="variant"):
        plan(1, 8, "tree")
    with pytest.raises(ValueError, match="chunk"):
        plan(1, 2**20, "chunked", 8)


def test_layout_rule() -> None:
    """Time-major iff channels are adjacent, there are enough of them and N > 1; the fake
    implementations allocate what the kernels return."""
    from resnetbk.bk import causal_green_triton as tri

    c = tri.TIME_MAJOR_MIN_C
    x = torch.empty(2, 9, c).transpose(1, 2)  # (B, N, C) seen as (B, C, N)
    assert tri.is_time_major(x)
    assert not tri.is_time_major(x.contiguous())
    assert not tri.is_time_major(torch.empty(2, 9, c - 1).transpose(1, 2))  # too few channels
    assert not tri.is_time_major(torch.empty(2, 1, c).transpose(1, 2))  # N = 1
    assert not tri.is_time_major(torch.empty(c, 9))  # 2-D: row-major
    out = tri.empty_like_layout(x, torch.complex64, True)
    assert out.shape == x.shape and out.stride() == (9 * c, 1, c)
    assert tri.empty_like_layout(x, torch.float32, False).is_contiguous()


def test_gradcheck_through_causal_green(interp: dict[str, Any]) -> None:
    assert interp["gradcheck"] is True


def test_compiles_as_one_graph(interp: dict[str, Any]) -> None:
    assert interp["compiled_fwd_equal"] is True and interp["compiled_grads_equal"] is True
    assert interp["opcheck"] is True


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


def _time_major(*xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(M, N) tensors as time-major (B, M / B, N) views (BKMixer's layout: channels
    adjacent), (M, 1) ones as (B, M / B, 1); B = 2 where that leaves >= 16 channels, else 1."""
    m = xs[0].shape[0]
    b = 2 if m % 2 == 0 and m // 2 >= 16 else 1
    return tuple(x.reshape(b, m // b, x.shape[-1]) if x.shape[-1] == 1 else
                 x.reshape(b, m // b, x.shape[-1]).transpose(1, 2).contiguous().transpose(1, 2)
                 for x in xs)


def _run_layout(tri: ModuleType, layout: str, a: torch.Tensor, k: torch.Tensor,
                z: torch.Tensor, gg: torch.Tensor, **opts: Any) -> tuple[torch.Tensor, tuple]:
    """Forward and backward on (M, N) inputs given in ``layout``; results as (M, N) / (M, 1)."""
    if layout == "time-major":
        a, k, z, gg = _time_major(a, k, z, gg)
    g = tri.forward(a, k, z, **opts)
    grads = tri.backward(a, k, z, g, gg, **opts)
    if layout == "time-major" and a.shape[1] >= tri.TIME_MAJOR_MIN_C and a.shape[2] > 1:
        assert all(x.stride(1) == 1 for x in (g, *grads[:2])), "not time-major"
    m, n = g.numel() // g.shape[-1], g.shape[-1]
    return g.reshape(m, n), tuple(x.reshape(m, -1) for x in grads)


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["row-major", "time-major"])
@pytest.mark.parametrize("variant", ["row", "chunked"])
@pytest.mark.parametrize(
    "m, n", [(1, 1), (9, 37), (33, 1000), (3, 4099), (4096, 8192), (8, 2**17), (200, 3000)]
)
def test_cuda_matches_float64_torch_backend(
    gen: torch.Generator, m: int, n: int, variant: str, layout: str
) -> None:
    tri = _compiled()
    a, k = GT.chain(gen, (m, n))
    z = GT.energies(gen, (m, 1), im_min=1e-2)
    gg = torch.complex(*torch.randn(2, m, n, generator=gen, dtype=F64))
    a32, k32 = (x.float().cuda() for x in GT.f32_exact(a, k))
    z32, gg32 = z.to(torch.complex64).cuda(), gg.to(torch.complex64).cuda()
    g32, grads32 = _run_layout(tri, layout, a32, k32, z32, gg32, variant=variant)
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
@pytest.mark.parametrize("layout", ["row-major", "time-major"])
@pytest.mark.parametrize("variant", ["row", "chunked"])
@pytest.mark.parametrize("m, n", [(9, 300), (8, 2**17), (40, 1000)])  # chunked: 3 to 1024 chunks
def test_cuda_float64_matches_torch_backend(
    gen: torch.Generator, m: int, n: int, variant: str, layout: str
) -> None:
    tri = _compiled()
    a, k = (x.cuda() for x in GT.chain(gen, (m, n)))
    z = GT.energies(gen, (m, 1)).cuda()
    gg = torch.complex(*torch.randn(2, m, n, generator=gen, dtype=F64)).cuda()
    g, grads = _run_layout(tri, layout, a, k, z, gg, variant=variant)
    assert _rel(g, _forward_torch(a, k, z)) < F64_TOL
    for mine, want in zip(grads, _grads64(a, k, z, gg), strict=True):
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
