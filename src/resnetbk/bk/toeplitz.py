"""Toeplitz operators: FFT matvec, causal convolution, Levinson and preconditioned CG solves.

A Toeplitz matrix T (N x N) has T[i, j] = t_{i-j}. Following ``scipy.linalg.toeplitz`` it is
given by its first column ``c`` (t_0, t_1, ..., t_{N-1}) and first row ``r`` (t_0, t_{-1}, ...,
t_{-(N-1)}). **``r[..., 0]`` is ignored**: the diagonal is ``c[..., 0]``, exactly as scipy does
(so scipy is an exact oracle). Checking ``r[0] == c[0]`` instead would need a tolerance (the two
often come from different computations) and a host synchronisation on CUDA; the cost of
ignoring it is that ``r[..., 0]`` receives a zero gradient, which the tests pin down.
``r=None`` means the Hermitian matrix ``r = conj(c)``.

Shapes: the sequence is the last dimension; everything before it is a batch that broadcasts
between the arguments. Several right-hand sides / columns are handled by broadcasting, e.g.
``x`` of shape (..., M, N) with ``c`` of shape (..., 1, N).

Dtypes: float32, float64, complex64, complex128; float16/bfloat16 are computed in float32 (FFT
of half types needs power-of-two sizes on CUDA and loses all accuracy) and cast back. Real
inputs use ``rfft``. Everything is torch code (no numpy), so it runs on CUDA tensors, and is
differentiable: the FFT paths through torch autograd, the solves through an analytic backward
(one adjoint Toeplitz solve and one FFT correlation, O(N) memory instead of the O(N^2) graph of
the Levinson loop).

Sources: circulant embedding, Strang and T. Chan preconditioners: R. Chan & M. Ng, "Conjugate
gradient methods for Toeplitz systems", SIAM Review 38 (1996); Levinson recursion for
nonsymmetric Toeplitz systems: Golub & Van Loan, "Matrix Computations", 4th ed., section 4.7,
and N. Levinson (1947).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NamedTuple

import torch

__all__ = [
    "ToeplitzCGResult",
    "ToeplitzConvergenceError",
    "block_toeplitz_matvec",
    "causal_conv",
    "solve_toeplitz",
    "solve_toeplitz_cg",
    "toeplitz_matvec",
    "toeplitz_to_dense",
]

# Filter lengths up to this many taps use torch's direct conv1d in causal_conv(method="auto");
# longer ones use the FFT. Measured by bench/toeplitz_cpu.py (bench/results/toeplitz_cpu.json,
# float32, x of (8, 16, N), CPU): at N = 4096 the two tie at 64 taps and the FFT is faster from
# 128 taps on (8x at 1024); with full-length filters (K = N) the FFT is faster at every
# N >= 64. On an H200 (bench/conv_gpu.py, x of (8, 256, 4096)) direct is faster up to 16 taps
# and the FFT from 64 (1.1x; 2.9x at 256), so the same threshold serves CUDA.
DIRECT_CONV_MAX_TAPS = 64

_HALF_TO_COMPUTE = {
    torch.float16: torch.float32,
    torch.bfloat16: torch.float32,
    torch.complex32: torch.complex64,
}


# ----------------------------------------------------------------------------- validation


def check_sequence(name: str, t: object, min_dim: int = 1) -> torch.Tensor:
    """Raise ValueError unless ``t`` is a floating/complex tensor with a non-empty last dim."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not (t.is_floating_point() or t.is_complex()):
        raise ValueError(f"{name} must have a floating or complex dtype, got {t.dtype}")
    if t.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dimension(s), got shape "
                         f"{tuple(t.shape)}")
    if t.shape[-1] == 0:
        raise ValueError(f"{name} must have a non-empty last (sequence) dimension")
    return t


def batch_shape(named: dict[str, torch.Tensor], trailing: int = 1) -> torch.Size:
    """Broadcast the batch shapes (all but the last ``trailing`` dims); ValueError if they clash.

    Also checks that all tensors are on one device.
    """
    devices = {t.device for t in named.values()}
    if len(devices) > 1:
        where = ", ".join(f"{k} on {t.device}" for k, t in named.items())
        raise ValueError(f"arguments must be on one device, got {where}")
    try:
        return torch.broadcast_shapes(*(t.shape[: t.dim() - trailing] for t in named.values()))
    except RuntimeError:
        shapes = ", ".join(f"{k}{tuple(t.shape)}" for k, t in named.items())
        raise ValueError(f"batch shapes do not broadcast: {shapes}") from None


def compute_dtype(*tensors: torch.Tensor) -> tuple[torch.dtype, torch.dtype]:
    """(dtype of the result, dtype to compute in): the promoted dtype, half types -> 32 bit."""
    out = tensors[0].dtype
    for t in tensors[1:]:
        out = torch.promote_types(out, t.dtype)
    return out, _HALF_TO_COMPUTE.get(out, out)


def _same_length(names: tuple[str, ...], tensors: tuple[torch.Tensor, ...]) -> int:
    lengths = {t.shape[-1] for t in tensors}
    if len(lengths) != 1:
        shapes = ", ".join(f"{n}{tuple(t.shape)}" for n, t in zip(names, tensors, strict=True))
        raise ValueError(f"last (sequence) dimensions must agree, got {shapes}")
    return lengths.pop()


# ----------------------------------------------------------------------------- FFT helpers


def fast_fft_len(n: int) -> int:
    """Smallest 5-smooth integer (2^a 3^b 5^c) >= n: fast for pocketfft and cuFFT alike."""
    best = 1 << max(n - 1, 0).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def _fft(x: torch.Tensor, n: int, real: bool) -> torch.Tensor:
    return torch.fft.rfft(x, n=n) if real else torch.fft.fft(x, n=n)


def _ifft(y: torch.Tensor, n: int, real: bool) -> torch.Tensor:
    return torch.fft.irfft(y, n=n) if real else torch.fft.ifft(y, n=n)


def _embedding_spectrum(c: torch.Tensor, r: torch.Tensor, length: int, real: bool) -> torch.Tensor:
    """Spectrum of the circulant of size ``length`` >= 2N-1 whose leading N x N block is T.

    Its first column is (t_0, ..., t_{N-1}, 0, ..., 0, t_{-(N-1)}, ..., t_{-1}).
    """
    n = c.shape[-1]
    c, r = torch.broadcast_tensors(c, r)
    zeros = c.new_zeros((*c.shape[:-1], length - 2 * n + 1))
    column = torch.cat([c, zeros, r[..., 1:].flip(-1)], dim=-1)
    return _fft(column, length, real)


def _toeplitz_apply(
    spectrum: torch.Tensor, x: torch.Tensor, length: int, real: bool
) -> torch.Tensor:
    """T x from the embedding spectrum: zero-pad x to ``length``, multiply, keep N entries."""
    n = x.shape[-1]
    return _ifft(spectrum * _fft(x, length, real), length, real)[..., :n]


def _prepare(tensors: tuple[torch.Tensor, ...]) -> tuple[list[torch.Tensor], torch.dtype, bool]:
    """Cast to the compute dtype; return (tensors, result dtype, all real)."""
    out_dtype, dtype = compute_dtype(*tensors)
    return [t.to(dtype) for t in tensors], out_dtype, not dtype.is_complex


def _toeplitz_args(
    c: torch.Tensor, r: torch.Tensor | None, other: torch.Tensor, other_name: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.dtype, bool]:
    """Validate (c, r, other) of one sequence length; r=None -> conj(c). Cast to compute dtype."""
    check_sequence("c", c)
    check_sequence(other_name, other)
    if r is None:
        r = c.conj()
    check_sequence("r", r)
    _same_length(("c", "r", other_name), (c, r, other))
    batch_shape({"c": c, "r": r, other_name: other})
    (c, r, other), out_dtype, real = _prepare((c, r, other))
    return c, r, other, out_dtype, real


# ----------------------------------------------------------------------------- matvec / conv


def toeplitz_to_dense(c: torch.Tensor, r: torch.Tensor | None = None) -> torch.Tensor:
    """The dense (..., N, N) Toeplitz matrix with first column c and first row r (r[0] ignored).

    O(N^2) memory; meant for tests and small problems. Matches ``scipy.linalg.toeplitz``.
    """
    check_sequence("c", c)
    if r is None:
        r = c.conj()
    check_sequence("r", r)
    n = _same_length(("c", "r"), (c, r))
    batch_shape({"c": c, "r": r})
    c, r = torch.broadcast_tensors(*(t.to(torch.promote_types(c.dtype, r.dtype)) for t in (c, r)))
    # diagonals t_{-(N-1)}, ..., t_{-1}, t_0, ..., t_{N-1}; entry (i, j) is t_{i-j}
    diagonals = torch.cat([r[..., 1:].flip(-1), c], dim=-1)
    i = torch.arange(n, device=c.device)
    return diagonals[..., i[:, None] - i[None, :] + n - 1]


def toeplitz_matvec(c: torch.Tensor, r: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """y = T x for the Toeplitz T with first column c and first row r, by FFT.

    T is embedded in a circulant of size L >= 2N-1 (rounded up to a 5-smooth FFT size), whose
    action is a pointwise product in Fourier space: y = ifft(fft(col) * fft(x padded))[:N].
    Cost O(L log L) per batch element instead of O(N^2). ``r[..., 0]`` is ignored (scipy's
    convention, see the module docstring); ``r=None`` means r = conj(c) (Hermitian T).

    Args:
        c: (..., N) first column (t_0, ..., t_{N-1}).
        r: (..., N) first row (ignored, t_{-1}, ..., t_{-(N-1)}), or None.
        x: (..., N); matrices of several columns as (..., M, N) with c, r of shape (..., 1, N).

    Returns: (..., N), batch shapes broadcast, dtype promoted from the inputs.
    """
    c, r, x, out_dtype, real = _toeplitz_args(c, r, x, "x")
    length = fast_fft_len(2 * x.shape[-1] - 1)
    y = _toeplitz_apply(_embedding_spectrum(c, r, length, real), x, length, real)
    return y.to(out_dtype)


def causal_conv(
    h: torch.Tensor, x: torch.Tensor, method: Literal["auto", "fft", "direct"] = "auto"
) -> torch.Tensor:
    """Causal convolution y_t = sum_{s=0}^{t} h_s x_{t-s}, t = 0..N-1 (a lower-triangular T).

    ``fft``: zero-pad both to L >= N + K - 1 (K = filter length), so the circular convolution
    of length L equals the linear one on the kept outputs: no wrap-around. O(L log L).
    ``direct``: torch ``conv1d`` (depthwise, left-padded by K-1), O(N K).
    ``auto``: direct for K <= ``DIRECT_CONV_MAX_TAPS`` (the measured CPU crossover), else FFT.

    Args:
        h: (..., K) filter; taps beyond N-1 cannot reach any output and are dropped (exact).
        x: (..., N) signal. Batch shapes broadcast, e.g. h (C, K) against x (B, C, N).
        method: "auto", "fft" or "direct".

    Returns: (..., N); real inputs give a real output.
    """
    check_sequence("h", h)
    check_sequence("x", x)
    if method not in ("auto", "fft", "direct"):
        raise ValueError(f"method must be 'auto', 'fft' or 'direct', got {method!r}")
    shape = batch_shape({"h": h, "x": x})
    (h, x), out_dtype, real = _prepare((h, x))
    n = x.shape[-1]
    h = h[..., :n]
    k = h.shape[-1]
    if method == "fft" or (method == "auto" and k > DIRECT_CONV_MAX_TAPS):
        length = fast_fft_len(n + k - 1)
        y = _ifft(_fft(h, length, real) * _fft(x, length, real), length, real)[..., :n]
    else:
        y = _direct_causal_conv(h, x, shape)
    return y.to(out_dtype)


def _direct_causal_conv(h: torch.Tensor, x: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Depthwise conv1d. Leading batch dims along which h is constant become conv1d's batch,
    the rest its groups, so h (C, K) against x (B, C, N) does not copy h B times."""
    n, k = x.shape[-1], h.shape[-1]
    h_dims = (1,) * (len(shape) - (h.dim() - 1)) + tuple(h.shape[:-1])
    split = 0
    while split < len(shape) and h_dims[split] == 1:
        split += 1
    groups = 1
    for s in shape[split:]:
        groups *= s
    batch = 1
    for s in shape[:split]:
        batch *= s
    xs = x.expand(*shape, n).reshape(batch, groups, n)
    weight = h.reshape(*h_dims[split:], k).expand(*shape[split:], k).reshape(groups, 1, k)
    weight = weight.flip(-1)  # conv1d correlates; flipping makes it a convolution
    y = torch.nn.functional.conv1d(torch.nn.functional.pad(xs, (k - 1, 0)), weight, groups=groups)
    return y.reshape(*shape, n)


def block_toeplitz_matvec(
    blocks_c: torch.Tensor, blocks_r: torch.Tensor | None, x: torch.Tensor
) -> torch.Tensor:
    """Block-Toeplitz matvec y_i = sum_j T_{i-j} x_j with (p x m) blocks, by FFT over i - j.

    Layout (sequence last): ``blocks_c[..., :, :, k]`` is T_k (k >= 0, the first block column),
    ``blocks_r[..., :, :, k]`` is T_{-k} (the first block row; its k = 0 block is ignored, as r[0]
    in ``toeplitz_matvec``); ``blocks_r=None`` means T_{-k} = T_k^H (Hermitian, needs p = m).
    Componentwise y[..., a, i] = sum_{b, j} T_{i-j}[a, b] x[..., b, j].
    Cost O(p m L log L) FFTs plus O(p m L) products, L >= 2N-1, vs O(p m N^2) dense.

    Args:
        blocks_c: (..., p, m, N); blocks_r: (..., p, m, N) or None; x: (..., m, N).

    Returns: (..., p, N).
    """
    check_sequence("blocks_c", blocks_c, min_dim=3)
    check_sequence("x", x, min_dim=2)
    if blocks_r is None:
        blocks_r = blocks_c.transpose(-3, -2).conj()
    check_sequence("blocks_r", blocks_r, min_dim=3)
    if blocks_r.shape[-3:] != blocks_c.shape[-3:]:
        raise ValueError(f"blocks_r{tuple(blocks_r.shape)} must have the block shape and length "
                         f"of blocks_c{tuple(blocks_c.shape)}")
    if x.shape[-2:] != blocks_c.shape[-2:]:
        raise ValueError(f"x{tuple(x.shape)} must be (..., m, N) with m, N from "
                         f"blocks_c{tuple(blocks_c.shape)} = (..., p, m, N)")
    batch_shape({"blocks_c": blocks_c, "blocks_r": blocks_r}, trailing=3)
    batch_shape({"blocks_c": blocks_c, "x": x[..., None, :, :]}, trailing=3)
    (bc, br, x), out_dtype, real = _prepare((blocks_c, blocks_r, x))
    n = x.shape[-1]
    length = fast_fft_len(2 * n - 1)
    spectrum = _embedding_spectrum(bc, br, length, real)  # (..., p, m, F)
    y = (spectrum * _fft(x, length, real)[..., None, :, :]).sum(-2)
    return _ifft(y, length, real)[..., :n].to(out_dtype)


# ----------------------------------------------------------------------------- solves


def _adjoint(c: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(first column, first row) of T^H: column conj(t_0, t_{-1}, ...), row conj(c)."""
    return torch.cat([c[..., :1], r[..., 1:]], dim=-1).conj(), c.conj()


class _ToeplitzSolve(torch.autograd.Function):
    """x = T^{-1} b with an analytic backward (the torch.linalg.solve rule, Toeplitz-projected).

    gb = T^{-H} gx; dL/dT = -gb x^H, and dL/dt_k sums that over the k-th diagonal:
    dL/dc_k = -sum_j gb_{j+k} conj(x_j), dL/dr_k = -sum_i gb_i conj(x_{i+k}) (k >= 1),
    both read off one FFT cross-correlation. dL/dr_0 = 0 since r[0] is ignored.
    ``solver(c, r, b)`` does the forward solve (Levinson or CG); the backward reuses it for T^H.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        c: torch.Tensor,
        r: torch.Tensor,
        b: torch.Tensor,
        solver: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> torch.Tensor:
        x = solver(c, r, b)
        ctx.save_for_backward(c, r, x)
        ctx.solver = solver
        return x

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, gx: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        c, r, x = ctx.saved_tensors
        ch, rh = _adjoint(c, r)
        gb = _ToeplitzSolve.apply(ch, rh, gx, ctx.solver)
        gc = gr = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            n = x.shape[-1]
            real = not x.is_complex()
            length = fast_fft_len(2 * n - 1)
            xf = _fft(x, length, real)
            corr = _ifft(_fft(gb, length, real) * xf.conj(), length, real)
            gc = -corr[..., :n]
            gr = torch.cat([torch.zeros_like(gc[..., :1]), -corr[..., length - n + 1 :].flip(-1)],
                           dim=-1)
        return gc, gr, gb, None


def _solve_args(
    c: torch.Tensor, r: torch.Tensor | None, b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.dtype]:
    c, r, b, out_dtype, _ = _toeplitz_args(c, r, b, "b")
    c, r, b = torch.broadcast_tensors(c, r, b)
    return c, r, b, out_dtype


def solve_toeplitz(c: torch.Tensor, r: torch.Tensor | None, b: torch.Tensor) -> torch.Tensor:
    """Solve T x = b for a general (nonsymmetric) Toeplitz T by the Levinson recursion.

    With T_k the leading k x k block, the recursion keeps f (T_k f = e_1), g (T_k g = e_k) and
    x (T_k x = b[:k]). Growing to k+1 with e_f = sum_i t_{k-i} f_i, e_g = sum_i t_{-(i+1)} g_i,
    e_x = sum_i t_{k-i} x_i and den = 1 - e_f e_g:
        f <- ([f; 0] - e_f [0; g]) / den,  g <- ([0; g] - e_g [f; 0]) / den,
        x <- [x; 0] + (b_k - e_x) g.
    O(N^2) work and O(N) memory per batch element; the batch is vectorised, the loop over k is
    Python (N steps of a few tensor ops). Differentiable (analytic backward: one more Levinson
    solve with T^H). Float64 is recommended: Levinson is weakly stable for symmetric positive
    definite T (Cybenko 1980), and for nonsymmetric or indefinite T its error grows with the
    conditioning of *all* leading blocks T_k, not only of T.

    Raises:
        torch.linalg.LinAlgError: when the recursion breaks down, i.e. a leading principal
            block T_k is (numerically) singular: |t_0| <= N eps max|t| or some |den| <= N eps.
            Such T may still be invertible; use ``torch.linalg.solve(toeplitz_to_dense(c, r),
            b)`` or ``solve_toeplitz_cg``. Also raised when the solution is not finite
            (overflow, or non-finite input), so a NaN is never returned. The check costs one
            host synchronisation at the end.
        ValueError: bad arguments (shapes, dtypes, devices).

    Args:
        c: (..., N) first column; r: (..., N) first row (r[0] ignored) or None (Hermitian);
        b: (..., N) right-hand side (several: (..., M, N) with c of shape (..., 1, N)).
    """
    c, r, b, out_dtype = _solve_args(c, r, b)
    return _ToeplitzSolve.apply(c, r, b, _levinson).to(out_dtype)


@torch.no_grad()
def _levinson(c: torch.Tensor, r: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Levinson recursion on broadcast (..., N) tensors of one dtype; see ``solve_toeplitz``."""
    n = b.shape[-1]
    eps = torch.finfo(b.dtype).eps
    t0 = c[..., :1]
    f = torch.zeros_like(b)  # f occupies f[..., :k]
    g = torch.zeros_like(b)  # g is right-aligned: it occupies g[..., n-k:]
    x = torch.zeros_like(b)
    f[..., :1] = 1 / t0
    g[..., -1:] = 1 / t0
    x[..., :1] = b[..., :1] / t0
    c_rev = c.flip(-1)  # c_rev[..., n-1-k : n-1] = (t_k, ..., t_1), row k of T
    # pivots[..., k] = den of step k (dimensionless); pivots[..., 0] = t_0 / max |t|
    pivots = torch.empty_like(b)
    pivots[..., :1] = t0 / torch.cat([c, r[..., 1:]], dim=-1).abs().amax(-1, keepdim=True)
    # The loop is bound by per-op overhead up to N ~ 1000: few ops per step, in place, and
    # elementwise products + sums (measured faster than a batched matmul for these shapes).
    for k in range(1, n):
        row = c_rev[..., n - 1 - k : n - 1]
        fk = f[..., : k + 1]  # [f; 0]
        gk = g[..., n - k - 1 :]  # [0; g]
        e_f = (row * fk[..., :k]).sum(-1, keepdim=True)
        e_x = (row * x[..., :k]).sum(-1, keepdim=True)
        e_g = (r[..., 1 : k + 1] * gk[..., 1:]).sum(-1, keepdim=True)
        den = 1 - e_f * e_g
        pivots[..., k : k + 1] = den
        inv = 1 / den
        f_new = torch.addcmul(fk, e_f, gk, value=-1)
        gk.addcmul_(e_g, fk, value=-1).mul_(inv)
        torch.mul(f_new, inv, out=fk)
        x[..., : k + 1].addcmul_(b[..., k : k + 1] - e_x, gk)
    # A zero pivot makes every later one NaN: ignore those, the zero is on record
    pivots = pivots.abs()
    worst = torch.where(torch.isnan(pivots), torch.inf, pivots).amin(-1)
    # One sync for the whole batch. A NaN that no small pivot explains (overflow, NaN input)
    # fails the second test.
    if bool((worst <= n * eps).any()):
        raise torch.linalg.LinAlgError(
            "solve_toeplitz: the Levinson recursion broke down, a leading principal block of T is "
            f"numerically singular (smallest relative pivot {float(worst.min()):.3g} <= N eps = "
            f"{n * eps:.3g}); T itself may be invertible: use a dense solve or solve_toeplitz_cg"
        )
    if not bool(torch.isfinite(x).all()):
        raise torch.linalg.LinAlgError(
            "solve_toeplitz: the solution is not finite (overflow, or non-finite c, r or b)"
        )
    return x


class ToeplitzCGResult(NamedTuple):
    """What ``solve_toeplitz_cg`` returns.

    solution: (..., N). iterations: (...) int64, iterations each system needed.
    residual: (...) real, the final relative residual |b - T x| / |b| (recomputed from x).
    """

    solution: torch.Tensor
    iterations: torch.Tensor
    residual: torch.Tensor


class ToeplitzConvergenceError(RuntimeError):
    """``solve_toeplitz_cg`` did not reach ``tol`` within ``maxiter``; ``.result`` holds the
    last iterate (a ``ToeplitzCGResult``), so a caller may still use it knowingly."""

    def __init__(self, message: str, result: ToeplitzCGResult) -> None:
        super().__init__(message)
        self.result = result


def _circulant_preconditioner(
    c: torch.Tensor, r: torch.Tensor, kind: str, real: bool
) -> torch.Tensor | None:
    """Eigenvalues (rfft/fft of the first column) of an N x N circulant approximating T.

    strang: copy the central diagonals, col_k = t_k (k <= N/2), t_{k-N} (k > N/2).
    chan:   T. Chan's optimal circulant, argmin_C |C - T|_F: col_k = ((N-k) t_k + k t_{k-N}) / N.
    For Hermitian positive definite T, Chan's is Hermitian positive definite; Strang's may not.
    """
    if kind == "none":
        return None
    n = c.shape[-1]
    # t_{k-N} for k = 1..N-1 is r_{N-k}: reverse r[1:], and put t_0 first
    wrapped = torch.cat([c[..., :1], r[..., 1:].flip(-1)], dim=-1)
    k = torch.arange(n, device=c.device, dtype=c.real.dtype)
    if kind == "strang":
        # the middle diagonal of an even N is shared by t_{N/2} and t_{-N/2}: average them,
        # which keeps the circulant Hermitian when T is
        column = torch.where(k < n / 2, c, torch.where(k > n / 2, wrapped, (c + wrapped) / 2))
    else:
        column = ((n - k) * c + k * wrapped) / n
    return _fft(column, n, real)


def solve_toeplitz_cg(
    c: torch.Tensor,
    r: torch.Tensor | None,
    b: torch.Tensor,
    *,
    tol: float | None = None,
    maxiter: int | None = None,
    preconditioner: Literal["chan", "strang", "none"] = "chan",
) -> ToeplitzCGResult:
    """Iterative Toeplitz solve for large N: circulant-preconditioned CG, O(N log N) per step.

    Supported systems:

    - ``r=None``: T Hermitian (r = conj(c)) **positive definite**: preconditioned conjugate
      gradients (PCG) with a circulant preconditioner P applied by FFT. Stops when the true
      residual |b - T x| <= tol |b|. For t_k summable with a positive generating function the
      spectrum of P^{-1} T clusters at 1 and PCG converges superlinearly, in a number of
      iterations nearly independent of N (R. Chan & Ng 1996). Raises ValueError if it meets
      p^H T p <= 0 (T not positive definite).
    - ``r`` given (general nonsingular T): preconditioned CGNR (CGLS on the normal equations of
      P^{-1} T x = P^{-1} b, i.e. minimising |P^{-1}(b - T x)|). Stops when
      |P^{-1}(b - T x)| <= tol |P^{-1} b|. Convergence depends on the *squared* singular values
      of P^{-1} T: fine when they cluster (Chan's preconditioner for a nonvanishing symbol),
      slow otherwise. For a symmetric indefinite T this is also the supported path.

    Each step costs one T-apply (FFT of size >= 2N-1) and one P^{-1}-apply (FFT of size N);
    CGNR twice that. The batch is solved together; converged systems are frozen. Differentiable
    through the same analytic backward as ``solve_toeplitz`` (one adjoint CG solve).

    Args:
        c, r, b: as in ``solve_toeplitz``.
        tol: relative residual target; default 1e-10 (float64) or 1e-5 (float32).
        maxiter: iteration cap, default N.
        preconditioner: "chan" (T. Chan's optimal circulant, default), "strang", or "none".

    Returns:
        ToeplitzCGResult(solution, iterations, residual).

    Raises:
        ToeplitzConvergenceError: some system did not reach ``tol`` in ``maxiter`` steps (the
            last iterate is attached as ``.result``): never a silent partial answer.
        ValueError: bad arguments; a preconditioner that is singular, or not positive definite
            for a Hermitian T (Strang's can be); T found not positive definite (r=None).
    """
    hermitian = r is None
    c, r, b, out_dtype = _solve_args(c, r, b)
    n = b.shape[-1]
    if preconditioner not in ("chan", "strang", "none"):
        raise ValueError(
            f"preconditioner must be 'chan', 'strang' or 'none', got {preconditioner!r}"
        )
    if tol is None:
        tol = 1e-10 if b.real.dtype == torch.float64 else 1e-5
    if not 0 < tol < 1:
        raise ValueError(f"tol must be in (0, 1), got {tol}")
    maxiter = n if maxiter is None else maxiter
    if isinstance(maxiter, bool) or not isinstance(maxiter, int) or maxiter < 1:
        raise ValueError(f"maxiter must be a positive int, got {maxiter!r}")
    info: dict[str, torch.Tensor] = {}

    def solver(c: torch.Tensor, r: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        run = _pcg if hermitian else _pcgnr
        x, iterations, converged = run(c, r, b, tol, maxiter, preconditioner)
        if not info:  # the forward solve: its caller below reports non-convergence
            info.update(iterations=iterations, converged=converged)
        elif not bool(converged.all()):  # the adjoint solve of the backward pass
            residual = _relative_residual(c, r, x, b)
            raise ToeplitzConvergenceError(
                "solve_toeplitz_cg: the adjoint solve of the backward pass did not reach "
                f"tol={tol:g} in maxiter={maxiter} iterations (largest final relative residual "
                f"{float(residual.max()):.3g})",
                ToeplitzCGResult(x, iterations, residual),
            )
        return x

    x = _ToeplitzSolve.apply(c, r, b, solver)
    residual = _relative_residual(c, r, x.detach(), b.detach())
    result = ToeplitzCGResult(x.to(out_dtype), info["iterations"], residual)
    if not bool(info["converged"].all()):
        failed = int((~info["converged"]).sum())
        raise ToeplitzConvergenceError(
            f"solve_toeplitz_cg: {failed} of {info['converged'].numel()} system(s) did not "
            f"reach tol={tol:g} in maxiter={maxiter} iterations (largest final relative "
            f"residual {float(residual.max()):.3g}); raise maxiter, use a preconditioner, or "
            "check that T is well conditioned",
            result,
        )
    return result


def _relative_residual(
    c: torch.Tensor, r: torch.Tensor, x: torch.Tensor, b: torch.Tensor
) -> torch.Tensor:
    real = not x.is_complex()
    length = fast_fft_len(2 * x.shape[-1] - 1)
    res = b - _toeplitz_apply(_embedding_spectrum(c, r, length, real), x, length, real)
    bnorm = torch.linalg.vector_norm(b, dim=-1)
    # b = 0 has the exact solution x = 0: report 0 rather than 0/0
    return torch.where(bnorm > 0, torch.linalg.vector_norm(res, dim=-1) / bnorm, 0.0)


def _check_preconditioner(lam: torch.Tensor, hermitian: bool, kind: str) -> None:
    if hermitian and bool((lam.real <= 0).any()):
        raise ValueError(
            f"preconditioner={kind!r} is not positive definite for this T (min eigenvalue "
            f"{float(lam.real.min()):.3g}); use 'chan', which is for positive definite T"
        )
    if not hermitian and bool((lam == 0).any()):
        raise ValueError(f"preconditioner={kind!r} is singular for this T; use another")


def _cg_operators(
    c: torch.Tensor, r: torch.Tensor, kind: str, hermitian: bool
) -> tuple[Callable[[torch.Tensor], torch.Tensor], ...]:
    """(T, T^H, P^{-1}, P^{-H}) as functions of (..., N) tensors."""
    n = c.shape[-1]
    real = not c.is_complex()
    length = fast_fft_len(2 * n - 1)
    spec = _embedding_spectrum(c, r, length, real)
    spec_h = _embedding_spectrum(*_adjoint(c, r), length, real)
    lam = _circulant_preconditioner(c, r, kind, real)
    if lam is not None:
        _check_preconditioner(lam, hermitian, kind)

    def t_op(v: torch.Tensor) -> torch.Tensor:
        return _toeplitz_apply(spec, v, length, real)

    def th_op(v: torch.Tensor) -> torch.Tensor:
        return _toeplitz_apply(spec_h, v, length, real)

    def p_inv(v: torch.Tensor) -> torch.Tensor:
        return v if lam is None else _ifft(_fft(v, n, real) / lam, n, real)

    def ph_inv(v: torch.Tensor) -> torch.Tensor:
        return v if lam is None else _ifft(_fft(v, n, real) / lam.conj(), n, real)

    return t_op, th_op, p_inv, ph_inv


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Re <a, b> = Re sum conj(a) b over the last dim, keepdim (real for Hermitian forms)."""
    return (a.conj() * b).real.sum(-1, keepdim=True)


@torch.no_grad()
def _pcg(
    c: torch.Tensor, r: torch.Tensor, b: torch.Tensor, tol: float, maxiter: int, kind: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Preconditioned CG for Hermitian positive definite T; returns (x, iterations, converged)."""
    t_op, _, p_inv, _ = _cg_operators(c, r, kind, hermitian=True)
    x = torch.zeros_like(b)
    res = b.clone()
    z = p_inv(res)
    p = z
    rz = _dot(res, z)
    target = tol * torch.linalg.vector_norm(b, dim=-1, keepdim=True)
    iterations = torch.zeros(b.shape[:-1], dtype=torch.int64, device=b.device)
    active = torch.linalg.vector_norm(res, dim=-1, keepdim=True) > target
    for _ in range(maxiter):
        if not bool(active.any()):
            break
        tp = t_op(p)
        ptp = _dot(p, tp)
        if bool((active & (ptp <= 0)).any()):
            raise ValueError("solve_toeplitz_cg: T (r=None, Hermitian) is not positive definite "
                             "(p^H T p <= 0); pass r explicitly to use CGNR")
        # Frozen (converged) systems take zero steps; where() keeps their 0/0 out of x and p.
        alpha = torch.where(active, rz / ptp, 0.0)
        x = x + alpha * p
        res = res - alpha * tp
        z = p_inv(res)
        rz_new = _dot(res, z)
        beta = torch.where(active, rz_new / rz, 0.0)
        p = z + beta * p
        rz = torch.where(active, rz_new, rz)
        iterations += active[..., 0]
        active = active & (torch.linalg.vector_norm(res, dim=-1, keepdim=True) > target)
    return x, iterations, ~active[..., 0]


@torch.no_grad()
def _pcgnr(
    c: torch.Tensor, r: torch.Tensor, b: torch.Tensor, tol: float, maxiter: int, kind: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CGLS on A = P^{-1} T, rhs P^{-1} b; returns (x, iterations, converged)."""
    t_op, th_op, p_inv, ph_inv = _cg_operators(c, r, kind, hermitian=False)

    def a_op(v: torch.Tensor) -> torch.Tensor:
        return p_inv(t_op(v))

    def ah_op(v: torch.Tensor) -> torch.Tensor:
        return th_op(ph_inv(v))

    x = torch.zeros_like(b)
    s = p_inv(b)  # residual of the preconditioned system
    grad = ah_op(s)
    p = grad
    gamma = _dot(grad, grad)
    target = tol * torch.linalg.vector_norm(s, dim=-1, keepdim=True)
    iterations = torch.zeros(b.shape[:-1], dtype=torch.int64, device=b.device)
    active = torch.linalg.vector_norm(s, dim=-1, keepdim=True) > target
    for _ in range(maxiter):
        if not bool(active.any()):
            break
        q = a_op(p)
        alpha = torch.where(active, gamma / _dot(q, q), 0.0)
        x = x + alpha * p
        s = s - alpha * q
        grad = ah_op(s)
        gamma_new = _dot(grad, grad)
        beta = torch.where(active, gamma_new / gamma, 0.0)
        p = grad + beta * p
        gamma = torch.where(active, gamma_new, gamma)
        iterations += active[..., 0]
        active = active & (torch.linalg.vector_norm(s, dim=-1, keepdim=True) > target)
    return x, iterations, ~active[..., 0]
