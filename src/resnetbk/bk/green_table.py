"""Lookup tables of kernels of hyperbolic distance, K(d), evaluated by linear interpolation.

A :class:`GreenTable` samples a function ``K`` (evaluated once, in float64) on the uniform grid
``d_j = d_min + j h``, ``h = (d_max - d_min) / (size - 1)``, ``j = 0..size-1``, and evaluates

    K(d) ~ T[i] + f (T[i+1] - T[i]),   x = (d - d_min) / h,  i = min(floor(x), size - 2),  f = x - i

(``x`` clamped to ``[0, size - 1]``). Linear interpolation errs by at most ``h^2/8 max|K''|`` on
each segment (the remainder of the interpolating line, e.g. Burden & Faires, *Numerical
Analysis*, Thm. 3.3 with n = 1); :meth:`GreenTable.error_bound` estimates it from a numerical K''.

Outside the grid (documented, tested):

* ``d < d_min`` gives ``K(d_min)``: for a kernel singular at 0 (the resolvent) ``d_min > 0``
  is a softening radius; distances are >= 0, so with ``d_min = 0`` this only affects invalid
  input (which ``resnetbk.debug_checks()`` rejects).
* ``d > d_max`` gives ``K(d_max)`` (``tail="clamp"``, continuous) or 0 (``tail="zero"``).
* NaN gives NaN (the clamps are ``where`` selects that keep NaN, never min/max).

The derivative is that of the interpolant: the slope ``(T[i+1] - T[i]) / h`` of the segment on
``[d_min, d_max]`` (piecewise constant), 0 outside. The gradient flows to ``d`` only.

Backends of ``GreenTable.__call__``: ``"torch"`` (gather + lerp in torch, autograd by torch),
``"triton"`` (one Triton kernel for the forward and the analytic backward, wrapped in an
``autograd.Function``), ``"exact"`` (calls ``fn`` in float64: no table, no clamps, no tail) and
``"auto"`` (triton for CUDA tensors when Triton is installed, torch otherwise).

Why the Triton kernel has no ``FAST`` switch: it is a gather and a lerp (no transcendental),
so there is no PTX approximation to choose; the same code runs on the GPU and under
``TRITON_INTERPRET=1``. The analytic H^3 heat-kernel kernel (:func:`heat3_triton`, kept for
the LUT-vs-compute benchmark) uses ``tl.exp``, which Triton already lowers to ``ex2.approx.f32``
for float32 on NVIDIA GPUs, so it needs no switch either.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.autograd.function import once_differentiable

from resnetbk.debug import debug_enabled
from resnetbk.geometry.numerics import inv_sinhc

try:
    import triton
    import triton.language as tl
except ImportError:  # Triton is optional (the "gpu" extra): the torch backend needs none.
    triton = None

__all__ = ["GreenTable", "heat3_triton", "heat_kernel", "resolvent_h3"]

_BLOCK = 1024
_TAILS = ("clamp", "zero")
_BACKENDS = ("auto", "torch", "triton", "exact")
# The H^n heat kernel's default d_max: where its Gaussian factor exp(-d^2/(4t)) (times factors
# <= 1) falls below 1e-12 of its value at 0.
_HEAT_CUTOFF = 1e-12
# Default table range of the H^3 resolvent: softening radius and decay exp(-s d) to 1e-8.
_RESOLVENT_D_MIN = 0.05
_RESOLVENT_CUTOFF = 1e-8
# The analytic kernel's d/sinh(d) uses its Taylor series below this d: the closed form
# 2d / (1 - e^{-2d}) loses about eps/(2d) to cancellation there (2.4e-7 at the switch), the
# series (to d^6) has truncation error d^8/4725 = 3e-9 at the switch.
_HEAT3_SERIES_SWITCH = 0.25


# ----------------------------------------------------------------------------- built-in kernels


def heat_kernel(t: float, n: int = 3) -> Callable[[torch.Tensor], torch.Tensor]:
    """The heat kernel K_t(d) of H^n (curvature -1) at time t, n in {1, 3}, as a function of d.

    * n = 1 (the line): ``K_t(d) = (4 pi t)^{-1/2} exp(-d^2/(4t))``.
    * n = 3: ``K_t(d) = (4 pi t)^{-3/2} d/sinh(d) exp(-t - d^2/(4t))`` (Grigor'yan & Noguchi,
      "The heat kernel on hyperbolic space", Bull. LMS 30 (1998); Davies, *Heat kernels and
      spectral theory*, 5.7). ``d/sinh d`` is ``inv_sinhc`` (finite value and gradient at 0).

    n = 2 has no closed form (an integral over [d, inf)); it is not built in: pass a function.
    """
    if not t > 0:
        raise ValueError(f"t must be > 0 (diffusion time), got {t!r}")
    if n == 1:
        scale = (4 * math.pi * t) ** -0.5
        return lambda d: scale * torch.exp(-(d * d) / (4 * t))
    if n == 3:
        scale = (4 * math.pi * t) ** -1.5
        return lambda d: scale * inv_sinhc(d) * torch.exp(-t - (d * d) / (4 * t))
    raise ValueError(f"n must be 1 or 3 (closed forms), got {n!r}; pass the H^2 kernel as fn")


def resolvent_h3(s: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """The resolvent kernel of H^3: ``G_s(d) = exp(-(s - 1) d) / (4 pi sinh d)``, s > 1.

    It is the kernel of ``(-Delta - s(2 - s))^{-1}`` (Delta the Laplace-Beltrami operator of H^3,
    spectrum of -Delta = [1, inf); s(2 - s) < 1 for s > 1). Check: with ``G = u/sinh d`` the
    radial equation ``G'' + 2 coth(d) G' + s(2 - s) G = 0`` becomes ``u'' = (s - 1)^2 u``; and
    ``G ~ 1/(4 pi d)`` as d -> 0 is the Euclidean R^3 Green's function, i.e. unit flux
    ``-4 pi sinh(d)^2 G'(d) -> 1``. It is singular at d = 0 (infinite there).
    """
    if not s > 1:
        raise ValueError(f"s must be > 1 (below the spectrum of -Delta on H^3), got {s!r}")
    return lambda d: torch.exp(-(s - 1) * d) / (4 * math.pi * torch.sinh(d))


# ----------------------------------------------------------------------------- triton kernels

if triton is not None:
    from resnetbk.kernels.lut import lerp

    @triton.jit
    def _lut_kernel(
        d_ptr, g_ptr, table_ptr, out_ptr, n_elem, d_min, inv_h, last,
        ZERO_TAIL: tl.constexpr, BACKWARD: tl.constexpr, BLOCK: tl.constexpr,
    ):
        """Forward: out = lerp of the table at (d - d_min) * inv_h. Backward: out = g * slope.

        ``last`` = size - 1 (float). The clamps are ``where`` selects so that NaN propagates the
        same way on the GPU and in the interpreter (min/max leave NaN handling unspecified).
        """
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n_elem
        d = tl.load(d_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        x = (d - d_min) * inv_h
        if BACKWARD:
            xc = tl.where(x < 0.0, 0.0, tl.where(x > last, last, x))
            # floor(xc) for xc in [0, last); the top end and NaN take the last segment
            i = tl.where(xc < last, xc, last - 1.0).to(tl.int32)
            lo = tl.load(table_ptr + i, mask=mask, other=0.0)
            hi = tl.load(table_ptr + i + 1, mask=mask, other=0.0)
            g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            outside = (x < 0.0) | (x > last)
            res = tl.where(outside, 0.0, g * ((hi - lo) * inv_h))
        else:
            res = lerp(table_ptr, d, d_min, inv_h, last)  # kernels.lut: same clamp and lerp
            if ZERO_TAIL:
                res = tl.where(x > last, 0.0, res)
        tl.store(out_ptr + offs, res, mask=mask)

    @triton.jit
    def _heat3_kernel(d_ptr, out_ptr, n_elem, t, inv_4t, scale, SWITCH: tl.constexpr,
                      BLOCK: tl.constexpr):
        """K = scale * r(d) * exp(-t - d - d^2/(4t)), r(d) = 2d/(1 - e^{-2d}) = e^d d/sinh(d)."""
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n_elem
        d = tl.load(d_ptr + offs, mask=mask, other=1.0).to(tl.float32)
        d2 = d * d
        # r(d) = 1 + d + d^2/3 - d^4/45 + 2 d^6/945 - ... (d coth d + d)
        series = 1.0 + d + d2 * (1.0 / 3.0 + d2 * (-1.0 / 45.0 + d2 * (2.0 / 945.0)))
        closed = 2.0 * d / (1.0 - tl.exp(-2.0 * d))
        r = tl.where(d < SWITCH, series, closed)
        tl.store(out_ptr + offs, scale * r * tl.exp(-t - d - d2 * inv_4t), mask=mask)

    # The interpreter is chosen when the decorator runs (TRITON_INTERPRET=1 at import time) and
    # then needs CPU tensors; the compiled kernel needs CUDA tensors.
    _INTERPRETED = not isinstance(_lut_kernel, triton.runtime.JITFunction)


def _check_distances(d: object) -> None:
    """d must be a floating tensor (any shape); negative entries only raise in debug mode (a
    reduction, i.e. a device sync on a GPU)."""
    if not isinstance(d, torch.Tensor) or not d.is_floating_point():
        got = d.dtype if isinstance(d, torch.Tensor) else type(d).__name__
        raise ValueError(f"d must be a floating tensor of distances, got {got}")
    if debug_enabled() and bool((d < 0).any()):
        raise ValueError("d holds negative distances")


def _triton_device_check(d: torch.Tensor) -> None:
    if triton is None:
        raise ValueError("backend='triton' needs the triton package (pip install resnetbk[gpu])")
    want = "cpu" if _INTERPRETED else "cuda"
    if d.device.type != want:
        raise ValueError(
            f"backend='triton' needs {want} tensors here (TRITON_INTERPRET="
            f"{int(_INTERPRETED)} when resnetbk was imported), got d on {d.device}"
        )
    if d.dtype == torch.float64:
        raise ValueError("backend='triton' computes in float32; use backend='torch' for float64")


def _grid(n: int) -> tuple[int]:
    return (triton.cdiv(n, _BLOCK),)


def heat3_triton(d: torch.Tensor, t: float) -> torch.Tensor:
    """The H^3 heat kernel computed analytically inside a Triton kernel (forward only).

    Two ``exp`` per element (``e^{-2d}`` and the Gaussian-times-``e^{-d}`` factor) and one
    division; the benchmark's "compute instead of look up" peer of the LUT. Float32 error
    against float64: relative about eps32 times the exponent ``t + d + d^2/(4t)`` (its rounding
    before exp); measured 2.9e-6 over [0, 10.5] at t = 1.
    """
    _check_distances(d)
    _triton_device_check(d)
    if not t > 0:
        raise ValueError(f"t must be > 0 (diffusion time), got {t!r}")
    dc = d.contiguous()
    out = torch.empty_like(dc)
    if dc.numel():
        _heat3_kernel[_grid(dc.numel())](
            dc, out, dc.numel(), t, 1 / (4 * t), (4 * math.pi * t) ** -1.5,
            SWITCH=_HEAT3_SERIES_SWITCH, BLOCK=_BLOCK,
        )
    return out


def _launch_lut(
    d: torch.Tensor, g: torch.Tensor | None, table: torch.Tensor, d_min: float, inv_h: float,
    zero_tail: bool,
) -> torch.Tensor:
    out = torch.empty_like(d)
    if d.numel():
        _lut_kernel[_grid(d.numel())](
            d, d if g is None else g, table, out, d.numel(), d_min, inv_h,
            float(table.numel() - 1), ZERO_TAIL=zero_tail, BACKWARD=g is not None, BLOCK=_BLOCK,
        )
    return out


class _LutTriton(torch.autograd.Function):
    """Triton LUT lookup with the analytic backward dK/dd = segment slope (saves d only)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, d: torch.Tensor, table: torch.Tensor,
        d_min: float, inv_h: float, zero_tail: bool,
    ) -> torch.Tensor:
        d = d.contiguous()
        ctx.save_for_backward(d)
        ctx.table, ctx.params = table, (d_min, inv_h, zero_tail)
        return _launch_lut(d, None, table, d_min, inv_h, zero_tail)

    @staticmethod
    @once_differentiable
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        (d,) = ctx.saved_tensors
        grad_d = _launch_lut(d, grad.contiguous(), ctx.table, *ctx.params)
        return grad_d, None, None, None, None


# ----------------------------------------------------------------------------- the table


class GreenTable:
    """A kernel of hyperbolic distance K(d), tabulated on a uniform grid, looked up by lerp.

    Args:
        fn: torch function of distance (elementwise), evaluated in float64 on the grid (and by
            the ``"exact"`` backend). Its values on the grid must be finite.
        d_max: end of the grid (> d_min).
        size: number of grid points (>= 2); the spacing is ``h = (d_max - d_min) / (size - 1)``.
        d_min: start of the grid (>= 0); below it the table returns ``K(d_min)`` (a softening
            radius for kernels singular at 0).
        tail: beyond ``d_max``: ``"clamp"`` (``K(d_max)``, continuous) or ``"zero"``.
        name: label for reports (default: ``fn.__name__``).

    Uniform grid: the index is one multiply (no search), and the error bound
    ``h^2/8 max|K''|`` is what :meth:`error_bound` reports. A kernel that varies fast near 0
    needs a larger ``size`` or a ``d_min > 0`` (the resolvent's ``1/d`` has ``K'' ~ 1/d^3``).

    Raises:
        ValueError: non-callable ``fn``, ``d_min < 0``, ``d_max <= d_min`` or not finite,
            ``size < 2``, an unknown tail, or ``fn`` values on the grid that are not a finite
            float tensor of the grid's shape.
    """

    def __init__(
        self, fn: Callable[[torch.Tensor], torch.Tensor], d_max: float, size: int = 1024, *,
        d_min: float = 0.0, tail: str = "clamp", name: str | None = None,
    ) -> None:
        if not callable(fn):
            raise ValueError(f"fn must be a callable of a distance tensor, got {type(fn).__name__}")
        if isinstance(size, bool) or not isinstance(size, int) or size < 2:
            raise ValueError(f"size must be an int >= 2 (grid points), got {size!r}")
        if not (math.isfinite(d_min) and d_min >= 0):
            raise ValueError(f"d_min must be finite and >= 0, got {d_min!r}")
        if not (math.isfinite(d_max) and d_max > d_min):
            raise ValueError(f"d_max must be finite and > d_min = {d_min!r}, got {d_max!r}")
        if tail not in _TAILS:
            raise ValueError(f"tail must be one of {_TAILS}, got {tail!r}")
        self.fn, self.size, self.tail = fn, size, tail
        self.d_min, self.d_max = float(d_min), float(d_max)
        self.name = name or getattr(fn, "__name__", "K")
        self.h = (self.d_max - self.d_min) / (size - 1)
        values = fn(self.grid())
        if not (
            isinstance(values, torch.Tensor)
            and values.dtype == torch.float64
            and values.shape == (size,)
            and bool(torch.isfinite(values).all())
        ):
            raise ValueError(
                f"fn must map the float64 grid of shape ({size},) to finite float64 values of the "
                "same shape on [d_min, d_max]"
            )
        self.values = values.detach()
        self._tables: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    @classmethod
    def heat(
        cls, t: float, n: int = 3, *, d_max: float | None = None, size: int = 1024,
        tail: str = "clamp",
    ) -> GreenTable:
        """Table of the H^n heat kernel (:func:`heat_kernel`) on [0, d_max]; by default d_max is
        where ``exp(-d^2/(4t))`` reaches 1e-12, i.e. ``sqrt(4 t ln 1e12)``."""
        fn = heat_kernel(t, n)
        if d_max is None:
            d_max = math.sqrt(-4 * t * math.log(_HEAT_CUTOFF))
        return cls(fn, d_max, size, tail=tail, name=f"heat H^{n} t={t:g}")

    @classmethod
    def resolvent(
        cls, s: float, *, d_min: float = _RESOLVENT_D_MIN, d_max: float | None = None,
        size: int = 1024, tail: str = "clamp",
    ) -> GreenTable:
        """Table of the H^3 resolvent kernel (:func:`resolvent_h3`) on [d_min, d_max].

        ``G`` is infinite at 0, so the table starts at the softening radius ``d_min`` (default
        0.05: ``G(d) = G(d_min)`` below it). Its relative interpolation error is largest there,
        about ``h^2/(4 d_min^2)`` (``G ~ 1/(4 pi d)``). Default ``d_max``: where
        ``exp(-s d)`` reaches 1e-8, i.e. ``ln(1e8)/s``.
        """
        fn = resolvent_h3(s)
        if d_max is None:
            d_max = -math.log(_RESOLVENT_CUTOFF) / s
        return cls(fn, d_max, size, d_min=d_min, tail=tail, name=f"resolvent H^3 s={s:g}")

    def __repr__(self) -> str:
        return (
            f"GreenTable({self.name!r}, d=[{self.d_min:g}, {self.d_max:g}], size={self.size}, "
            f"tail={self.tail!r})"
        )

    def grid(self) -> torch.Tensor:
        """The float64 grid points ``d_min + j h``, j = 0..size-1."""
        return torch.linspace(self.d_min, self.d_max, self.size, dtype=torch.float64)

    def table(self, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
        """The table values cast to ``dtype`` on ``device`` (cached: one copy per pair)."""
        key = (torch.device(device), dtype)
        if key not in self._tables:
            self._tables[key] = self.values.to(device=key[0], dtype=dtype)
        return self._tables[key]

    def error_bound(self, oversample: int = 16) -> float:
        """Estimated bound ``h^2/8 max|K''|`` on the interpolation error over [d_min, d_max].

        ``K''`` comes from central second differences of ``fn`` (float64) on a grid
        ``oversample`` times finer than the table's, at its interior points; the maximum over
        the sample can miss the true one by O(h/oversample), so callers keep a small margin.
        """
        d = torch.linspace(
            self.d_min, self.d_max, (self.size - 1) * oversample + 1, dtype=torch.float64
        )
        k = self.fn(d)
        # second differences at the interior fine points (one fine step inside the ends)
        second = (k[2:] - 2 * k[1:-1] + k[:-2]) / (self.h / oversample) ** 2
        return self.h**2 / 8 * float(second.abs().max())

    def __call__(self, d: torch.Tensor, backend: str = "auto") -> torch.Tensor:
        """K at the distances ``d`` (any shape, floating dtype; result of the same dtype/shape).

        float64 computes in float64; float32, bfloat16 and float16 compute in float32 (table in
        float32) and round the result. ``backend``: "auto", "torch", "triton" (float32/half on
        CUDA, or on CPU under TRITON_INTERPRET=1), "exact" (``fn`` in float64). Under
        ``resnetbk.debug_checks()`` a negative distance raises ``ValueError``.
        """
        if backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
        _check_distances(d)
        if backend == "auto":
            use_triton = triton is not None and d.is_cuda and d.dtype != torch.float64
            backend = "triton" if use_triton else "torch"
        if backend == "exact":
            return self.fn(d.to(torch.float64)).to(d.dtype)
        if backend == "triton":
            _triton_device_check(d)
            table = self.table(torch.float32, d.device)
            return _LutTriton.apply(d, table, self.d_min, 1 / self.h, self.tail == "zero")
        return self._lookup_torch(d)

    def _lookup_torch(self, d: torch.Tensor) -> torch.Tensor:
        """Gather + lerp in torch, the same arithmetic as ``_lut_kernel`` (autograd by torch:
        the ``where`` clamps give the segment slope inside and 0 outside)."""
        dtype = torch.float64 if d.dtype == torch.float64 else torch.float32
        table = self.table(dtype, d.device)
        last = float(self.size - 1)
        x = (d.to(dtype) - self.d_min) * (1 / self.h)
        xc = torch.where(x < 0, 0.0, torch.where(x > last, last, x))
        i = torch.where(xc < last, xc, last - 1).detach().floor().long()
        lo, hi = table[i], table[i + 1]
        res = lo + (xc - i.to(dtype)) * (hi - lo)
        if self.tail == "zero":
            res = torch.where(x > last, 0.0, res)
        return res.to(d.dtype)
