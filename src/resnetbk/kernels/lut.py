"""Lookup tables: a function sampled on a uniform grid, evaluated by linear interpolation.

A :class:`LookupTable` samples ``fn`` once, in float64, at ``size`` nodes ``lo + j h``,
``h = (hi - lo) / (size - 1)``, and evaluates it at ``x`` through one of four backends:

* ``"exact"``: ``fn`` itself, in float64, rounded to x's dtype (the reference).
* ``"triton"``: a Triton kernel gathers the two neighbouring nodes and interpolates,
  ``T[i] + f (T[i+1] - T[i])`` with ``p = (x - lo) / h``, ``i = floor(p)``, ``f = p - i``
  (:func:`lerp`, a device function other kernels call, e.g. ``kernels.lns_add``).
* ``"texture"``: the table as a 1-D CUDA array read through a texture object with hardware
  linear filtering (created with CuPy, an optional dependency; GPU only), fetched by the same
  Triton kernel through inline PTX ``tex.1d`` (:func:`texture_lerp`). CUDA's filter reads
  texel centres: ``tex(p + 0.5)`` is ``T[i] + a (T[i+1] - T[i])``, where the weight ``a`` is
  held in 9-bit fixed point with 8 fractional bits (CUDA C Programming Guide, "Texture
  fetching", linear filtering).
* ``"mufu"``: no table: the kernel evaluates ``fn`` from its formula with the GPU's MUFU
  approximations (``ex2.approx``, ``lg2.approx``; ``kernels.fastmath`` with FAST=True). Only
  for tables built with a :class:`MufuFormula`, a Triton device function the kernel knows:
  :data:`EXP2`, :data:`LOG2` here, ``lns_add.SB`` and ``lns_add.DB`` (the Gaussian
  logarithms). Under Triton's interpreter the portable path (FAST=False) runs.

Out of range (a documented choice, one per table): ``out_of_range="clamp"`` (default) reads x
below lo as lo and above hi as hi in every backend, ``"exact"`` included, so all backends
compute the same function ``fn(clamp(x, lo, hi))``; NaN gives NaN. ``"raise"`` is the checked
mode: any x outside [lo, hi], or NaN, raises ValueError before a kernel runs (one reduction
over x, a device sync on a GPU).

Error bounds (:meth:`LookupTable.error_bound`), for x in [lo, hi] of the compute dtype (float64
for float64 tables, float32 otherwise), before the final rounding to x's dtype. M0, M1, M2 are
the maxima of |f|, |f'|, |f''| on [lo, hi], u_t and u_c the unit roundoffs of the table dtype
and the compute dtype:

* triton: ``h^2/8 M2`` (the remainder of linear interpolation: |f - p1| <= (x - x_i)(x_{i+1}
  - x) / 2 max|f''| <= h^2/8 M2) plus rounding ``u_t M0 + u_c (M0 + (4 (hi - lo) + |lo| +
  2h) M1)``: the table values, the position p (its error in node units, times the slope
  |T[i+1] - T[i]| <= h M1) and the lerp's three operations.
* texture: the same with float32 texels, plus the weight quantisation ``2^-8 h M1``
  (|a - f| <= 2^-8 of |T[i+1] - T[i]|). For the 1025-node sb table of ``kernels.lns_add``
  (h = 1/64, M1 = 1/2) that term is 3.1e-5, the whole bound 4.2e-5; SPEC 3.3 records 2.06e-5
  measured on an H200 for a 1024-entry sb table.
* mufu: the formula's own bound, ``abs_error + rel_error M0`` (each :class:`MufuFormula`
  derives its constants from the PTX ISA's bounds for ex2.approx / lg2.approx).
* exact: 0.

M0, M1, M2 are estimated from fn on a 16x oversampled grid (first and second differences)
and raised by 10% for what sampling between the points can miss.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from resnetbk.kernels import fastmath
from resnetbk.kernels.rowwise import compute_type, device_scalars

__all__ = ["BACKENDS", "EXP2", "LOG2", "LookupTable", "MufuFormula", "check_device", "lerp",
           "require_cupy", "texture_lerp"]

# Triton decides interpreter vs compiled when @triton.jit runs (at import of this module).
_INTERPRETED: bool = bool(triton.knobs.runtime.interpret)

BACKENDS = ("auto", "exact", "triton", "texture", "mufu")
_OUT_OF_RANGE = ("clamp", "raise")
_TABLE_DTYPES = (torch.float64, torch.float32, torch.bfloat16, torch.float16)
_BLOCK = 1024
_OVERSAMPLE = 16
_SAMPLING_MARGIN = 1.1
TEXTURE_WEIGHT_BITS = 8  # fractional bits of CUDA's linear-filter weight


# --------------------------------------------------------------------------- device functions


@triton.jit
def _position(x, lo, inv_h, last):
    """p = (x - lo) / h clamped to [0, last] (``where`` selects: NaN stays NaN)."""
    p = (x - lo) * inv_h
    return tl.where(p < 0.0, 0.0, tl.where(p > last, last, p))


@triton.jit
def lerp(table_ptr, x, lo, inv_h, last):
    """Linear interpolation of the table at ``table_ptr`` (nodes lo + j h, j = 0..last) at x,
    clamped to [lo, lo + last h]; computed in x's dtype. Every lane reads a valid index (NaN
    and the top end take the last segment), so the loads need no mask."""
    p = _position(x, lo, inv_h, last)
    i = tl.where(p < last, p, last - 1.0).to(tl.int32)
    t0 = tl.load(table_ptr + i).to(p.dtype)
    t1 = tl.load(table_ptr + i + 1).to(p.dtype)
    return t0 + (p - i.to(p.dtype)) * (t1 - t0)


@triton.jit
def _tex1d(handle, coord):
    """``tex.1d`` of a float32 texture object (unified texture mode: the handle is a .u64)."""
    value, _, _, _ = tl.inline_asm_elementwise(
        "tex.1d.v4.f32.f32 {$0, $1, $2, $3}, [$4, {$5}];", "=f,=f,=f,=f,l,f", [handle, coord],
        dtype=(tl.float32, tl.float32, tl.float32, tl.float32), is_pure=True, pack=1)
    return value


@triton.jit
def texture_lerp(handle, x, lo, inv_h, last):
    """Hardware linear filtering of a texture object at x (float32; GPU only): the texel centre
    of node j is j + 0.5. Clamped like :func:`lerp`; NaN stays NaN."""
    p = _position(x.to(tl.float32), lo, inv_h, last)
    value = _tex1d(tl.zeros(p.shape, tl.int64) + handle, p + 0.5)
    return tl.where(p == p, value, p)


@triton.jit(do_not_specialize=["tex"])
def _lookup_kernel(x_ptr, out_ptr, table_ptr, tex, p_ptr, n, BACKEND: tl.constexpr,
                   FORMULA: tl.constexpr, FAST: tl.constexpr, COMPUTE: tl.constexpr,
                   BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    lo, hi = tl.load(p_ptr).to(COMPUTE), tl.load(p_ptr + 1).to(COMPUTE)
    inv_h, last = tl.load(p_ptr + 2).to(COMPUTE), tl.load(p_ptr + 3).to(COMPUTE)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
    if BACKEND == "triton":
        y = lerp(table_ptr, x, lo, inv_h, last)
    elif BACKEND == "texture":
        y = texture_lerp(tex, x, lo, inv_h, last)
    else:
        y = FORMULA(tl.where(x < lo, lo, tl.where(x > hi, hi, x)), FAST)
    tl.store(out_ptr + offs, y.to(out_ptr.dtype.element_ty), mask=mask)


# --------------------------------------------------------------------------- formulas


@dataclass(frozen=True)
class MufuFormula:
    """A function the lookup kernel evaluates from its formula instead of a table.

    ``device_fn(x, FAST)`` is a ``triton.jit`` function of a float32 tensor; FAST=True runs the
    MUFU approximations. Its error bound (FAST=True, float32) is ``abs_error + rel_error |f(x)|``
    on the whole float32 range, derived from the PTX ISA's bounds in the defining module.
    """

    name: str
    device_fn: Callable
    abs_error: float
    rel_error: float


# ex2.approx.ftz: relative 2^-22 (2 ulp); results below 2^-126 flush to 0.
EXP2 = MufuFormula("exp2", fastmath.exp2, abs_error=2.0**-126, rel_error=2.0**-22)
# lg2.approx.ftz: absolute 2^-22 for arguments in [0.5, 2], relative 2^-22 elsewhere.
LOG2 = MufuFormula("log2", fastmath.log2, abs_error=2.0**-22, rel_error=2.0**-22)


# --------------------------------------------------------------------------- the table


def require_cupy() -> object:
    """The cupy module, or ValueError saying how to get it (the texture backend's dependency)."""
    try:
        import cupy
    except ImportError as err:
        raise ValueError("backend='texture' needs CuPy, an optional dependency "
                         "(pip install resnetbk[gpu], or cupy-cuda12x)") from err
    return cupy


class LookupTable:
    """``fn`` on [lo, hi], sampled at ``size`` uniform nodes, evaluated by linear interpolation.

    Args:
        fn: elementwise torch function, evaluated in float64 on the grid (and by the "exact"
            backend); its values on the grid must be finite.
        lo, hi: the range, finite, lo < hi.
        size: number of nodes (>= 2; at most 2^31 - 1).
        dtype: dtype of the stored table for the triton backend (float64, float32, bfloat16,
            float16). A float64 table computes in float64, the others in float32. The texture
            always holds float32 texels.
        mufu: the :class:`MufuFormula` of ``fn`` (needed by backend="mufu"); the caller vouches
            that it computes ``fn`` (the tests compare them).
        out_of_range: "clamp" or "raise" (module docstring).
        name: label for reports (default: ``fn.__name__``).

    Raises:
        ValueError: for any argument outside the above, or ``fn`` values on the grid that are
            not a finite float64 tensor of the grid's shape.
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], lo: float, hi: float,
                 size: int, dtype: torch.dtype = torch.float32, *,
                 mufu: MufuFormula | None = None, out_of_range: str = "clamp",
                 name: str | None = None) -> None:
        if not callable(fn):
            raise ValueError(f"fn must be callable on a float64 tensor, got {type(fn).__name__}")
        for arg, value in (("lo", lo), ("hi", hi)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value):
                raise ValueError(f"{arg} must be a finite number, got {value!r}")
        if not lo < hi:
            raise ValueError(f"lo must be below hi, got lo={lo!r}, hi={hi!r}")
        if isinstance(size, bool) or not isinstance(size, int) or not 2 <= size < 2**31:
            raise ValueError(f"size must be an int in [2, 2^31), got {size!r}")
        if dtype not in _TABLE_DTYPES:
            raise ValueError(f"dtype must be one of {_TABLE_DTYPES}, got {dtype!r}")
        if mufu is not None and not isinstance(mufu, MufuFormula):
            raise ValueError(f"mufu must be a MufuFormula or None, got {type(mufu).__name__}")
        if out_of_range not in _OUT_OF_RANGE:
            raise ValueError(f"out_of_range must be one of {_OUT_OF_RANGE}, got {out_of_range!r}")
        self.fn, self.size, self.dtype, self.mufu = fn, size, dtype, mufu
        self.lo, self.hi, self.out_of_range = float(lo), float(hi), out_of_range
        self.h = (self.hi - self.lo) / (size - 1)
        self.name = name or getattr(fn, "__name__", "f")
        values = fn(self.grid())
        if not (isinstance(values, torch.Tensor) and values.dtype == torch.float64
                and values.shape == (size,) and bool(values.isfinite().all())):
            raise ValueError(f"fn must map the float64 grid of shape ({size},) to finite float64 "
                             f"values of the same shape on [lo, hi] = [{lo}, {hi}]")
        self.values = values.detach()
        self._tables: dict[torch.device, torch.Tensor] = {}
        self._textures: dict[torch.device, tuple[object, object]] = {}

    def __repr__(self) -> str:
        return (f"LookupTable({self.name!r}, [{self.lo:g}, {self.hi:g}], size={self.size}, "
                f"dtype={self.dtype}, out_of_range={self.out_of_range!r})")

    def grid(self) -> torch.Tensor:
        """The float64 nodes lo + j h, j = 0..size-1."""
        return torch.linspace(self.lo, self.hi, self.size, dtype=torch.float64)

    def table(self, device: torch.device | str) -> torch.Tensor:
        """The node values in the table dtype on ``device`` (made once per device)."""
        key = torch.device(device)
        if key not in self._tables:
            self._tables[key] = self.values.to(device=key, dtype=self.dtype)
        return self._tables[key]

    def texture_handle(self, device: torch.device | str) -> int:
        """The ``cudaTextureObject_t`` of the table on a CUDA ``device`` (made once per device):
        a float32 1-D CUDA array, linear filtering, clamped addressing, unnormalised texel
        coordinates. The table keeps the array and the object alive."""
        key = torch.device(device)
        if key.type != "cuda":
            raise ValueError(f"texture tables live on CUDA devices, got {key}")
        key = torch.device("cuda", torch.cuda.current_device() if key.index is None else key.index)
        if key not in self._textures:
            cupy = require_cupy()
            from cupy.cuda import runtime, texture

            width = self.size
            limit = runtime.getDeviceProperties(key.index)["maxTexture1D"]
            if width > limit:
                raise ValueError(f"size {width} exceeds this GPU's 1-D texture width {limit}")
            with cupy.cuda.Device(key.index):
                channel = texture.ChannelFormatDescriptor(
                    32, 0, 0, 0, runtime.cudaChannelFormatKindFloat)
                array = texture.CUDAarray(channel, width)
                array.copy_from(self.values.to(torch.float32).numpy())
                resource = texture.ResourceDescriptor(runtime.cudaResourceTypeArray, cuArr=array)
                sampler = texture.TextureDescriptor(
                    addressModes=(runtime.cudaAddressModeClamp,),
                    filterMode=runtime.cudaFilterModeLinear,
                    readMode=runtime.cudaReadModeElementType, normalizedCoords=0)
                self._textures[key] = (array, texture.TextureObject(resource, sampler))
        return int(self._textures[key][1].ptr)

    @functools.cached_property
    def _maxima(self) -> tuple[float, float, float]:
        """(M0, M1, M2): max |f|, |f'|, |f''| on [lo, hi] from a 16x oversampled grid (first
        and second differences), raised by 10% for what sampling can miss."""
        n = (self.size - 1) * _OVERSAMPLE + 1
        step = (self.hi - self.lo) / (n - 1)
        f = self.fn(torch.linspace(self.lo, self.hi, n, dtype=torch.float64))
        m0 = float(f.abs().max())
        m1 = float(f.diff().abs().max()) / step
        m2 = float(f.diff(n=2).abs().max()) / step**2
        return m0 * _SAMPLING_MARGIN, m1 * _SAMPLING_MARGIN, m2 * _SAMPLING_MARGIN

    def error_bound(self, backend: str) -> float:
        """Bound on |result - fn(x)| for x in [lo, hi] of the compute dtype, before the
        rounding to x's dtype (derivation in the module docstring)."""
        if backend not in BACKENDS[1:]:
            raise ValueError(f"backend must be one of {BACKENDS[1:]}, got {backend!r}")
        if backend == "exact":
            return 0.0
        m0, m1, m2 = self._maxima
        if backend == "mufu":
            self._require_formula()
            return self.mufu.abs_error + self.mufu.rel_error * m0
        table_dtype = torch.float32 if backend == "texture" else self.dtype
        u_table = torch.finfo(table_dtype).eps / 2
        u_compute = torch.finfo(torch.float64 if table_dtype == torch.float64
                                else torch.float32).eps / 2
        position = 4 * (self.hi - self.lo) + abs(self.lo) + 2 * self.h
        bound = self.h**2 / 8 * m2 + u_table * m0 + u_compute * (m0 + position * m1)
        if backend == "texture":
            bound += 2.0**-TEXTURE_WEIGHT_BITS * self.h * m1
        return bound

    def _require_formula(self) -> None:
        if self.mufu is None:
            raise ValueError(f"backend='mufu' needs a table built with a MufuFormula "
                             f"(mufu=...); {self!r} has none")

    def __call__(self, x: torch.Tensor, backend: str = "auto") -> torch.Tensor:
        """``fn`` at x (any shape, floating dtype) by ``backend``; the result has x's dtype.

        "auto" takes "triton" for CUDA tensors, "exact" otherwise. "triton" and "mufu" run on
        CUDA tensors, or on CPU tensors under TRITON_INTERPRET=1; "texture" needs a CUDA tensor
        and CuPy. x is read in the compute dtype (float32 unless the table is float64).
        """
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be a floating tensor, got {got}")
        if backend == "auto":
            backend = "triton" if x.is_cuda else "exact"
        if backend == "mufu":
            self._require_formula()
        if backend != "exact":
            check_device(x, backend, "x")
        if self.out_of_range == "raise":
            outside = (x < self.lo) | (x > self.hi) | x.isnan()
            if bool(outside.any()):
                raise ValueError(f"x holds values outside [lo, hi] = [{self.lo}, {self.hi}] "
                                 f"or NaN ({int(outside.sum())} of {x.numel()}); "
                                 "out_of_range='raise'")
        if backend == "exact":
            return self.fn(x.to(torch.float64).clamp(self.lo, self.hi)).to(x.dtype)
        return self._launch(x.contiguous(), backend)

    def _launch(self, x: torch.Tensor, backend: str) -> torch.Tensor:
        out = torch.empty_like(x)
        if not x.numel():
            return out
        compute = torch.float64 if backend == "triton" and self.dtype == torch.float64 \
            else torch.float32
        params = device_scalars((self.lo, self.hi, 1.0 / self.h, float(self.size - 1)),
                                compute, x.device)
        table = self.table(x.device)
        tex = self.texture_handle(x.device) if backend == "texture" else 0
        formula = self.mufu.device_fn if backend == "mufu" else None
        _lookup_kernel[(triton.cdiv(x.numel(), _BLOCK),)](
            x, out, table, tex, params, x.numel(), BACKEND=backend, FORMULA=formula,
            FAST=x.is_cuda, COMPUTE=compute_type(compute), BLOCK=_BLOCK)
        return out


def check_device(t: torch.Tensor, backend: str, name: str) -> None:
    """ValueError unless ``t`` can run the Triton ``backend`` here: CUDA tensors when compiled,
    CPU tensors under TRITON_INTERPRET=1 (texture: CUDA and CuPy, never the interpreter)."""
    if backend == "texture":
        require_cupy()
        if _INTERPRETED or not t.is_cuda:
            raise ValueError(f"backend='texture' needs CUDA tensors and compiled Triton (no "
                             f"TRITON_INTERPRET=1); got {name} on {t.device}")
        return
    want = "cpu" if _INTERPRETED else "cuda"
    if t.device.type != want:
        raise ValueError(
            f"backend={backend!r} runs Triton kernels on {want} tensors here (TRITON_INTERPRET="
            f"{int(_INTERPRETED)} when resnetbk.kernels was imported); got {name} on {t.device}")
