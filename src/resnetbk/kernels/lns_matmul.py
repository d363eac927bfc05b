"""Matrix products with LNS-coded weights, decoded inside Triton kernels (``nn.LNSLinear``).

For a (M, K) operand ``a`` in bfloat16 or float16 and integer codes of a weight W (layout and
scale in ``resnetbk.nn.lns_linear``: W = 2^s decode(codes)):

    lns_matmul(a, codes, ...)                  = a W^T (+ bias)   codes (N, K): forward
    lns_matmul(a, codes, ..., transpose=True)  = a W              codes (K, N): input gradient

Decoding (``_decode``, per code, integer arithmetic; codes as in ``resnetbk.lns.codec``): the
log field L = q 2^f + r (q = L >> f, 0 <= r < 2^f), and

    FAST=False (exact): float32 bits of T[r] + ((q + s) << 23), T[r] = 2^(r / 2^f) rounded to
                        the operand dtype (a 2^f-entry table built once by ``lns.decode``); the
                        exponent add is exact, so the operand is decode(code) 2^s rounded once
                        to bfloat16 / float16, as torch rounds it (the tests check equality).
    FAST=True (GPU):    ex2.approx.ftz(L / 2^f + s) (``fastmath.exp2``; L / 2^f + s formed
                        exactly from the bits of 1.5 * 2^23 + L, no int->float conversion):
                        2 ulp of float32 before the rounding to the operand dtype, so an operand
                        differs from the exact one by one unit of bfloat16 / float16 where the
                        value lies within 2^-22 (relative) of a rounding tie.

then the sign bit, and 0 for the zero code. No transcendental runs on the FAST=False path, which
is the one the interpreter runs. Float16 operands: the layer's scaled magnitudes must stay below
65504 (checked; bfloat16 has float32's range); magnitudes below 2^-14 become float16 subnormals
(absolute error <= 2^-25).

Two paths (``path=``; ``"auto"`` takes ``fused`` for at most ``FUSED_MAX_ROWS`` rows):

* ``fused``: one Triton GEMM, tiles of ``a`` and of the codes loaded per K step, the code tile
  decoded in registers to the operand dtype, ``tl.dot`` on Tensor Cores with float32
  accumulation, bias added in float32, one rounding to the output dtype. Weight traffic is the
  codes themselves (1 or 2 bytes per weight). Every program decodes its (K, BLOCK_N) strip
  again, (M / BLOCK_M) times per weight in all, which competes with the MMAs for issue slots: a
  win where the product is bound by reading the weights (few rows), a cost where it is bound by
  the Tensor Cores (many rows).
* ``decode``: one elementwise Triton kernel decodes W to the operand dtype (reading the codes,
  writing 2 bytes per weight), then cuBLAS (``addmm`` with the bias rounded to the operand
  dtype, as autocast does). The decode costs one pass over the weights, small next to a GEMM
  with many rows.

``FUSED_MAX_ROWS`` = 256 is an estimate (on an H200 a bfloat16 GEMM is bound by the weights
below ~200 rows: 989 TFLOP/s over 4.8 TB/s); ``bench/lns_linear_gpu.py`` times both paths at
every shape so that it can be set from measurements.

Autograd (custom op ``resnetbk::lns_linear``): saved are x and the codes. grad_x = g W by the
same kernels (``transpose=True``: the codes read as (K, N), no transposed copy), dL/dW = g^T x
by cuBLAS with float32 output (``poincare_linear.gemm``) into the gradient carrier, dL/db the
column sums of g in float32.

Launch: CUDA tensors run compiled; CPU tensors only under Triton's interpreter
(``TRITON_INTERPRET=1`` before import), which cannot multiply bfloat16 tiles: there the decoded
operands (already rounded to the operand dtype) are multiplied as float32, exactly.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from resnetbk.kernels.fastmath import exp2
from resnetbk.kernels.lorentz_cdist import LaunchConfig
from resnetbk.kernels.poincare_linear import check_out, check_runnable, gemm
from resnetbk.kernels.rowwise import fast_math
from resnetbk.lns import decode
from resnetbk.nn.lns_linear import check_weight_format, code_dtype

__all__ = ["FUSED_MAX_ROWS", "PATHS", "LaunchConfig", "lns_decode", "lns_linear", "lns_matmul"]

_INTERPRETED: bool = bool(triton.knobs.runtime.interpret)

PATHS = ("auto", "fused", "decode")
FUSED_MAX_ROWS = 256
_HALF = (torch.bfloat16, torch.float16)
_FLOAT16_MAX = 65504.0
_DECODE_BLOCK = 1024
# 1.5 * 2^23: as float32 bits, 0x4B400000 + L is the float 1.5 * 2^23 + L for |L| < 2^22.
_MAGIC = tl.constexpr(0x4B400000)
_MAGIC_VALUE = 12582912.0


_INTERPRETER_CONFIG = LaunchConfig(16, 32, 16, 4, 1)
_GROUP_M = 8


def launch_config(rows: int) -> LaunchConfig:
    """Tiles of the fused kernel for ``rows`` rows of ``a``: narrow row tiles and 64-column
    tiles for few rows (more programs to share the weight stream), 128 x 128 tiles otherwise.
    Chosen from the sm_90 compile (Triton 3.9, ptxas: no spills in either decode; the exact
    table decode needs 150-190 registers a thread, the MUFU one 70-130), not yet from timings
    (``bench/lns_linear_gpu.py`` sweeps a few); the interpreter takes small tiles."""
    if _INTERPRETED:
        return _INTERPRETER_CONFIG
    if rows <= 64:
        return LaunchConfig(max(16, triton.next_power_of_2(rows)), 64, 64, 4, 4)
    return LaunchConfig(128, 128, 64, 8, 3)


# --------------------------------------------------------------------------- device code


@triton.jit
def _decode(code, t_ptr, scale_log2, offset, BITS: tl.constexpr, FRAC: tl.constexpr,
            FAST: tl.constexpr):
    """float32 values 2^s decode(code) of a tile of codes (module docstring)."""
    c = code.to(tl.int32)
    half = 1 << (BITS - 2)
    log = ((c & (2 * half - 1)) ^ half) - half
    if FAST:
        v = (log + _MAGIC).to(tl.float32, bitcast=True)  # 1.5 * 2^23 + L, exactly
        mag = exp2(v * (1.0 / (1 << FRAC)) + offset, True)  # offset = s - 1.5 * 2^23 / 2^f
    else:
        bits = tl.load(t_ptr + (log & ((1 << FRAC) - 1)))
        mag = (bits + (((log >> FRAC) + scale_log2) << 23)).to(tl.float32, bitcast=True)
    value = tl.where(c < 0, -mag, mag)
    return tl.where(log == -half, 0.0, value)


@triton.jit
def _lns_matmul_kernel(a_ptr, c_ptr, t_ptr, bias_ptr, out_ptr, M, N, K,
                       s_am, s_ak, s_ck, s_cn, s_om, s_on, scale_log2, offset,
                       BITS: tl.constexpr, FRAC: tl.constexpr, FAST: tl.constexpr,
                       HAS_BIAS: tl.constexpr, DOT_F32: tl.constexpr, BLOCK_M: tl.constexpr,
                       BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    """out[m, n] = sum_k a[m, k] decode(codes at k * s_ck + n * s_cn) (+ bias[n])."""
    pid = tl.program_id(0)
    grid_m = tl.cdiv(M, BLOCK_M)
    grid_n = tl.cdiv(N, BLOCK_N)
    # Row tiles in groups of GROUP_M, so that programs running together share code strips in L2.
    per_group = GROUP_M * grid_n
    first_m = (pid // per_group) * GROUP_M
    group_rows = tl.minimum(grid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % group_rows
    pid_n = (pid % per_group) // group_rows
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    # Rows and columns past the end wrap around (in bounds, never stored): no row masks.
    a_ptrs = a_ptr + (rm % M).to(tl.int64)[:, None] * s_am + rk[None, :] * s_ak
    c_ptrs = c_ptr + rk[:, None] * s_ck + (rn % N).to(tl.int64)[None, :] * s_cn
    zero_code = 1 << (BITS - 2)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        live = rk < K - k0
        a = tl.load(a_ptrs, mask=live[None, :], other=0.0)
        code = tl.load(c_ptrs, mask=live[:, None], other=zero_code)
        w = _decode(code, t_ptr, scale_log2, offset, BITS, FRAC, FAST).to(a.dtype)
        if DOT_F32:
            acc = tl.dot(a.to(tl.float32), w.to(tl.float32), acc, input_precision="ieee")
        else:
            acc = tl.dot(a, w, acc)
        a_ptrs += BLOCK_K * s_ak
        c_ptrs += BLOCK_K * s_ck
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
    out_ptrs = out_ptr + rm.to(tl.int64)[:, None] * s_om + rn[None, :] * s_on
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty),
             mask=(rm < M)[:, None] & (rn < N)[None, :])


@triton.jit
def _lns_decode_kernel(c_ptr, t_ptr, out_ptr, numel, scale_log2, offset, BITS: tl.constexpr,
                       FRAC: tl.constexpr, FAST: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    code = tl.load(c_ptr + offs, mask=mask, other=1 << (BITS - 2))
    value = _decode(code, t_ptr, scale_log2, offset, BITS, FRAC, FAST)
    tl.store(out_ptr + offs, value.to(out_ptr.dtype.element_ty), mask=mask)


# --------------------------------------------------------------------------- host code


@functools.cache
def _table(bits: int, frac_bits: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """float32 bits (int32) of 2^(r / 2^f) rounded to ``dtype``, r = 0 .. 2^f - 1: the codes r
    (sign clear, log field r) decoded by ``lns.decode`` and rounded as torch rounds."""
    fmt = check_weight_format(bits, frac_bits, 0)
    codes = torch.arange(fmt.scale, dtype=fmt.dtype)
    values = decode(codes, bits, frac_bits).to(dtype).to(torch.float32)
    return values.view(torch.int32).to(device)


def _check_weights(codes: torch.Tensor, bits: int, frac_bits: int, scale_log2: int,
                   dtype: torch.dtype) -> None:
    """Codes and format of W, decoded to the operand ``dtype`` (ValueError)."""
    fmt = check_weight_format(bits, frac_bits, scale_log2)
    if not isinstance(codes, torch.Tensor) or codes.dtype != code_dtype(bits) or codes.dim() != 2:
        raise ValueError(f"codes of {bits} bits must be a 2-D {code_dtype(bits)} tensor, got "
                         f"{getattr(codes, 'dtype', type(codes).__name__)}")
    if not codes.is_contiguous():
        raise ValueError("codes must be contiguous")
    if dtype not in _HALF:
        raise ValueError(f"the operand dtype must be bfloat16 or float16, got {dtype}")
    if dtype == torch.float16 and fmt.max_value * 2.0**scale_log2 > _FLOAT16_MAX:
        raise ValueError(
            f"float16 operands cannot hold these weights: up to {fmt.max_value:.5g} * "
            f"2^{scale_log2} > {_FLOAT16_MAX}; use bfloat16"
        )
    check_runnable(codes)


def _check(a: torch.Tensor, codes: torch.Tensor, bits: int, frac_bits: int, scale_log2: int,
           bias: torch.Tensor | None, transpose: bool, path: str) -> None:
    if not isinstance(a, torch.Tensor) or not a.is_floating_point() or a.dim() != 2:
        raise ValueError("a must be a 2-D bfloat16 or float16 tensor, got "
                         f"{getattr(a, 'dtype', type(a).__name__)} "
                         f"{tuple(getattr(a, 'shape', ()))}")
    _check_weights(codes, bits, frac_bits, scale_log2, a.dtype)
    k_dim, n_dim = codes.shape if transpose else codes.shape[::-1]
    if a.shape[1] != k_dim:
        raise ValueError(f"a{tuple(a.shape)} does not match codes{tuple(codes.shape)} "
                         f"(transpose={transpose})")
    if bias is not None and (bias.shape != (n_dim,) or not bias.is_floating_point()):
        raise ValueError(f"bias must be a floating tensor of shape ({n_dim},), got "
                         f"{bias.dtype} {tuple(bias.shape)}")
    for name, t in (("codes", codes), ("bias", bias)):
        if t is not None and t.device != a.device:
            raise ValueError(f"{name} must be on a's device {a.device}, got {t.device}")
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")


def _fast(fast: bool | None, dtype: torch.dtype, device: torch.device) -> bool:
    if fast is None:
        return fast_math(dtype, device)
    if fast and _INTERPRETED:
        raise ValueError("fast=True needs the GPU: the interpreter runs no inline PTX")
    return fast


def _offset(frac_bits: int, scale_log2: int) -> float:
    """s - 1.5 * 2^23 / 2^f, exact in float32 (an integer, or a multiple of 2^(23 - f))."""
    return scale_log2 - _MAGIC_VALUE / (1 << frac_bits)


def lns_decode(codes: torch.Tensor, bits: int, frac_bits: int, scale_log2: int,
               dtype: torch.dtype, *, fast: bool | None = None) -> torch.Tensor:
    """2^scale_log2 * decode(codes) rounded to ``dtype`` (bfloat16 / float16), by one Triton
    kernel (the ``decode`` path's first pass). ``fast``: the MUFU ex2 decode (default on the
    GPU: ``rowwise.fast_math``); False: the exact table."""
    _check_weights(codes, bits, frac_bits, scale_log2, dtype)
    out = torch.empty(codes.shape, dtype=dtype, device=codes.device)
    numel = codes.numel()
    if numel == 0:
        return out
    _lns_decode_kernel[(triton.cdiv(numel, _DECODE_BLOCK),)](
        codes, _table(bits, frac_bits, dtype, codes.device), out, numel, scale_log2,
        _offset(frac_bits, scale_log2), BITS=bits, FRAC=frac_bits,
        FAST=_fast(fast, dtype, codes.device), BLOCK=_DECODE_BLOCK, num_warps=4,
    )
    return out


def lns_matmul(a: torch.Tensor, codes: torch.Tensor, bits: int, frac_bits: int,
               scale_log2: int, *, bias: torch.Tensor | None = None, transpose: bool = False,
               path: str = "auto", fast: bool | None = None, out: torch.Tensor | None = None,
               config: LaunchConfig | None = None) -> torch.Tensor:
    """a W^T (+ bias) for codes (N, K), or a W for codes (K, N) with ``transpose``; W =
    2^scale_log2 decode(codes). No autograd (see :func:`lns_linear`).

    ``a``: (M, K) bfloat16 / float16, the output dtype too. ``bias``: float (N,), added in
    float32 (fused) or rounded to a's dtype (decode). ``path``: ``PATHS``. ``fast``: the MUFU
    decode (default on the GPU). ``out``: optional contiguous (M, N) result buffer of a's
    dtype. ``config``: tile override of the fused kernel (benchmarks).
    """
    _check(a, codes, bits, frac_bits, scale_log2, bias, transpose, path)
    m, k_dim = a.shape
    n_dim = codes.shape[1] if transpose else codes.shape[0]
    fast = _fast(fast, a.dtype, a.device)
    if out is None:
        out = torch.empty((m, n_dim), dtype=a.dtype, device=a.device)
    else:
        check_out("out", out, (m, n_dim), a)
    if path == "decode" or (path == "auto" and m > FUSED_MAX_ROWS):
        w = lns_decode(codes, bits, frac_bits, scale_log2, a.dtype, fast=fast)
        if transpose:
            return torch.mm(a, w, out=out)
        if bias is None:
            return torch.mm(a, w.t(), out=out)
        return torch.addmm(bias.to(a.dtype), a, w.t(), out=out)
    if m == 0 or n_dim == 0:
        return out
    cfg = config or launch_config(m)
    # codes (N, K): element (k, n) at n K + k; transposed codes (K, N): at k N + n.
    s_ck, s_cn = (codes.stride(0), 1) if transpose else (1, codes.stride(0))
    grid = (triton.cdiv(m, cfg.block_m) * triton.cdiv(n_dim, cfg.block_n),)
    _lns_matmul_kernel[grid](
        a, codes, _table(bits, frac_bits, a.dtype, a.device), bias if bias is not None else out,
        out, m, n_dim, k_dim, a.stride(0), a.stride(1), s_ck, s_cn, out.stride(0), out.stride(1),
        scale_log2, _offset(frac_bits, scale_log2),
        BITS=bits, FRAC=frac_bits, FAST=fast, HAS_BIAS=bias is not None, DOT_F32=_INTERPRETED,
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, GROUP_M=_GROUP_M,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    return out


# --------------------------------------------------------------------------- custom ops


@torch.library.custom_op("resnetbk::lns_linear", mutates_args=())
def lns_linear(x: torch.Tensor, codes: torch.Tensor, carrier: torch.Tensor | None,
               bias: torch.Tensor | None, bits: int, frac_bits: int, scale_log2: int,
               path: str = "auto", fast: bool | None = None) -> torch.Tensor:
    """x (M, K) W^T + bias with W = 2^scale_log2 decode(codes), codes (N, K); differentiable
    in x, the gradient carrier (dL/dW, in its dtype) and the bias. ``carrier`` may be None (no
    weight gradient); its value is not read."""
    return lns_matmul(x, codes, bits, frac_bits, scale_log2, bias=bias, path=path, fast=fast)


@lns_linear.register_fake
def _(x: torch.Tensor, codes: torch.Tensor, carrier: torch.Tensor | None,
      bias: torch.Tensor | None, bits: int, frac_bits: int, scale_log2: int,
      path: str = "auto", fast: bool | None = None) -> torch.Tensor:
    return x.new_empty((x.shape[0], codes.shape[0]))


@torch.library.custom_op("resnetbk::lns_linear_grad_input", mutates_args=())
def _grad_input_op(grad: torch.Tensor, codes: torch.Tensor, bits: int, frac_bits: int,
                   scale_log2: int, path: str, fast: bool | None) -> torch.Tensor:
    return lns_matmul(grad, codes, bits, frac_bits, scale_log2, transpose=True, path=path,
                      fast=fast)


@_grad_input_op.register_fake
def _(grad: torch.Tensor, codes: torch.Tensor, bits: int, frac_bits: int, scale_log2: int,
      path: str, fast: bool | None) -> torch.Tensor:
    return grad.new_empty((grad.shape[0], codes.shape[1]))


def _setup_context(ctx: torch.autograd.function.FunctionCtx, inputs: tuple,
                   output: torch.Tensor) -> None:
    x, codes, carrier, bias, bits, frac_bits, scale_log2, *rest = inputs
    ctx.save_for_backward(x, codes)
    ctx.args = (bits, frac_bits, scale_log2, *rest)
    ctx.carrier_dtype = None if carrier is None else carrier.dtype
    ctx.bias_dtype = None if bias is None else bias.dtype


def _backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple:
    x, codes = ctx.saved_tensors
    bits, frac_bits, scale_log2, *rest = ctx.args
    path = rest[0] if rest else "auto"
    fast = rest[1] if len(rest) > 1 else None
    grad_x = grad_w = grad_b = None
    if ctx.needs_input_grad[0]:
        grad_x = _grad_input_op(grad, codes, bits, frac_bits, scale_log2, path, fast)
    if ctx.needs_input_grad[2]:
        grad_w = gemm(grad.t(), x, torch.float32).to(ctx.carrier_dtype)
    if ctx.needs_input_grad[3]:
        grad_b = grad.float().sum(0).to(ctx.bias_dtype)
    return grad_x, None, grad_w, grad_b, None, None, None, None, None


lns_linear.register_autograd(_backward, setup_context=_setup_context)
