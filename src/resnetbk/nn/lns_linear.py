"""``LNSLinear``: a linear layer whose weights are stored as LNS codes (issue 6 item 4).

A weight is ``W[n, k] = 2^s * decode(codes[n, k])``: the codes are ``resnetbk.lns`` codes
(sign + fixed-point log2 magnitude, explicit zero; 8 bits in int8, 16 bits in int16, and any
width 4..16 with an explicit ``frac_bits``), and ``s = scale_log2`` is one integer per layer,
chosen when the weights are encoded so that their RMS sits at 1.0, the middle of the format's
log range (a power of two, so the scaled weights are exactly the decoded codes shifted in the
log domain: 8-bit codes span only 2^+-7.9 and could not hold 1/sqrt(fan_in)-sized weights
otherwise). The layer computes ``y = x W^T + b`` with a float bias.

Paths. CUDA inputs in bfloat16 / float16 (or float32 under CUDA autocast) run the Triton kernel
of ``resnetbk.kernels.lns_matmul``: the codes are decoded to the operand dtype inside the
kernel and multiplied on Tensor Cores with float32 accumulation. Everything else (CPU, float32
without autocast, float64, ``backend("torch")``) runs the reference: decode with
``resnetbk.lns.decode`` to the compute dtype (float64 for float64 inputs, else float32), then
``F.linear``; float64 is exact up to the float64 rounding of the products and sums.

Gradients. The input gradient is exact for the decoded weights (``g W`` with the same W as the
forward: the kernel decodes it again in the backward). The weight gradient is dL/dW at the
decoded weights W, delivered to ``lns_weight.grad``: straight-through with respect to the
decoded weight, i.e. exactly the gradient a float layer holding W would get. It is *not* a
gradient with respect to the codes (which are integers: the loss is piecewise constant in
them) nor with respect to log|W|, and it ignores what rounding the update to the code grid
does; ``resnetbk.optim.LNSMadam`` turns it into integer code steps.

Storage (the design decisions, docs/LNS.md "LNSLinear and LNS-Madam"):

* ``codes``: an integer buffer (out_features, in_features). Buffers move with ``.to()``, are
  untouched by ``.half()``, are saved by ``state_dict`` (integers: safetensors and
  ``torch.load(weights_only=True)`` load them) and broadcast by DDP.
* ``lns_format``: an int32 buffer ``[bits, frac_bits, scale_log2]``, so a checkpoint carries its
  format; loading checks bits / frac_bits against the layer (ValueError on a mismatch) and takes
  the checkpoint's scale.
* ``lns_weight``: an :class:`LNSWeight`, the float "gradient carrier": a zero tensor of the
  weight's shape whose value is never read; its ``.grad`` receives dL/dW and its ``.layer`` leads
  the optimizer to the codes. It is a real ``nn.Parameter`` so that ``zero_grad``,
  ``clip_grad_norm_``, DDP gradient averaging and ``model.parameters()`` see it; the price is
  4 bytes per weight (float32) of zeros while the layer is trainable. It is not saved in the
  state dict. ``trainable=False`` builds a layer without it (inference only: the codes and the
  bias are all it holds, and checkpoints load into either kind).
* ``bias``: a float ``nn.Parameter`` like ``nn.Linear``'s, trained by an ordinary optimizer
  (``optim.split_lns_parameters`` separates the two kinds).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from resnetbk.debug import check_floating
from resnetbk.kernels.dispatch import use_kernels
from resnetbk.lns import LNSFormat, decode, encode
from resnetbk.lns.codec import check_codes

__all__ = ["LNSLinear", "LNSWeight", "check_weight_format", "code_dtype"]

# Default fractional bits per width: the codec's default for 16 bits; LNS-Madam's base factor
# gamma = 8 (3 fractional bits) for 8 bits.
DEFAULT_FRAC_BITS = {16: 10, 8: 3}
# Decoded magnitudes may span at most 2^+-64 (bits - 2 - frac_bits <= 6) and, with the scale,
# must stay inside float32's normal exponents (2^-126 .. 2^127): the kernel builds float32 bits.
_MAX_LOG2_SPAN = 64
_MAX_LOG2_FLOAT32 = 126
_HALF = (torch.bfloat16, torch.float16)


def code_dtype(bits: int) -> torch.dtype:
    """Storage dtype of ``bits``-wide weight codes: int8 up to 8 bits, int16 up to 16."""
    return torch.int8 if bits <= 8 else torch.int16


def check_weight_format(bits: int, frac_bits: int, scale_log2: int) -> LNSFormat:
    """The LNS format of a weight tensor, after checking what ``LNSLinear`` and its kernel need:
    a valid codec format of at most 16 bits, a span of at most 2^+-64, and an integer scale
    2^scale_log2 that keeps every scaled magnitude a normal float32. Raises ValueError."""
    fmt = LNSFormat(bits, frac_bits)
    if bits > 16:
        raise ValueError(f"LNSLinear stores codes of at most 16 bits, got bits={bits}")
    span = fmt.max_log / fmt.scale
    if span > _MAX_LOG2_SPAN:
        raise ValueError(
            f"LNSLinear: bits={bits}, frac_bits={frac_bits} spans 2^+-{span:.4g}; weights may span "
            f"at most 2^+-{_MAX_LOG2_SPAN} (frac_bits >= {bits - 8})"
        )
    if isinstance(scale_log2, bool) or not isinstance(scale_log2, int):
        raise ValueError(f"LNSLinear: scale_log2 must be an int, got {scale_log2!r}")
    if span + abs(scale_log2) > _MAX_LOG2_FLOAT32:
        raise ValueError(
            f"LNSLinear: scale 2^{scale_log2} times the format's span 2^+-{span:.4g} leaves "
            f"float32's normal range (2^+-{_MAX_LOG2_FLOAT32})"
        )
    return fmt


class LNSWeight(nn.Parameter):
    """The gradient carrier of an :class:`LNSLinear`: zeros of the weight's shape, never read.

    Its ``.grad`` is dL/dW at the layer's decoded weights W; ``.layer`` is the layer whose
    ``codes`` ``LNSMadam`` updates. Give it to ``LNSMadam`` only: an additive optimizer such as
    AdamW would change its value, which nothing reads, and leave the codes as they are.
    ``copy.deepcopy`` maps ``.layer`` to the copied layer; pickling keeps it.
    """

    layer: LNSLinear

    def __new__(cls, data: torch.Tensor, layer: LNSLinear | None = None,
                requires_grad: bool = True) -> LNSWeight:
        instance = super().__new__(cls, data, requires_grad)
        instance.layer = layer
        return instance

    def __deepcopy__(self, memo: dict[int, Any]) -> LNSWeight:
        if id(self) in memo:
            return memo[id(self)]
        result = type(self)(self.data.clone(memory_format=torch.preserve_format), None,
                            self.requires_grad)
        memo[id(self)] = result
        result.layer = copy.deepcopy(self.layer, memo)
        return result

    def __reduce_ex__(self, proto: int) -> tuple[Any, ...]:
        return _rebuild_lns_weight, (self.data, self.layer, self.requires_grad)

    def __repr__(self) -> str:
        return f"LNSWeight (gradient carrier of {tuple(self.shape)} LNS weights)"


def _rebuild_lns_weight(data: torch.Tensor, layer: LNSLinear, requires_grad: bool) -> LNSWeight:
    return LNSWeight(data, layer, requires_grad)


class LNSLinear(nn.Module):
    """``y = x W^T + b`` with W stored as LNS codes (module docstring: paths, gradients, storage).

    Args:
        in_features, out_features: sizes, as for ``nn.Linear``.
        bias: learn a float bias (default True).
        bits: code width, 4..16 (8 and 16 have default ``frac_bits``).
        frac_bits: fractional bits of the log field; default 10 for 16 bits, 3 for 8 bits.
        trainable: hold the gradient carrier ``lns_weight`` (default True); False builds an
            inference-only layer (the input still gets its gradient).
        device, dtype: of the carrier and the bias (float32 by default); the codes are integers.

    The weights are initialised like ``nn.Linear``'s (uniform in +-1/sqrt(in_features)) and
    encoded; :meth:`from_linear` converts an existing ``nn.Linear``.
    """

    codes: torch.Tensor
    lns_format: torch.Tensor
    lns_weight: LNSWeight | None
    bias: nn.Parameter | None

    def __init__(self, in_features: int, out_features: int, bias: bool = True, bits: int = 16,
                 frac_bits: int | None = None, *, trainable: bool = True,
                 device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        for name, size in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise ValueError(f"LNSLinear: {name} must be a positive int, got {size!r}")
        if frac_bits is None:
            if bits not in DEFAULT_FRAC_BITS:
                raise ValueError(f"LNSLinear: bits={bits} has no default frac_bits; pass one "
                                 f"(defaults exist for {sorted(DEFAULT_FRAC_BITS)})")
            frac_bits = DEFAULT_FRAC_BITS[bits]
        self.in_features = in_features
        self.out_features = out_features
        self.fmt = check_weight_format(bits, frac_bits, 0)
        self.scale_log2 = 0
        factory = {"device": device, "dtype": dtype}
        shape = (out_features, in_features)
        self.register_buffer("codes", torch.full(shape, self.fmt.zero_code,
                                                 dtype=code_dtype(bits), device=device))
        self.register_buffer("lns_format", torch.tensor([bits, frac_bits, 0], dtype=torch.int32,
                                                        device=device))
        self.register_parameter(
            "lns_weight", LNSWeight(torch.zeros(shape, **factory), self) if trainable else None)
        self.register_parameter(
            "bias", nn.Parameter(torch.empty(out_features, **factory)) if bias else None)
        self.reset_parameters()

    @property
    def bits(self) -> int:
        return self.fmt.bits

    @property
    def frac_bits(self) -> int:
        return self.fmt.frac_bits

    def reset_parameters(self) -> None:
        """Draw weights and bias as ``nn.Linear`` does (uniform in +-1/sqrt(in_features)) and
        encode the weights."""
        bound = 1.0 / math.sqrt(self.in_features)
        w = torch.empty(self.codes.shape, dtype=torch.float64).uniform_(-bound, bound)
        self.encode_weight(w)
        if self.bias is not None:
            with torch.no_grad():
                self.bias.uniform_(-bound, bound)

    @torch.no_grad()
    def encode_weight(self, weight: torch.Tensor, scale_log2: int | None = None) -> None:
        """Store ``weight`` (out_features, in_features) as codes, rounded once in the log domain
        (``lns.encode``: half a log-ulp, saturating at the format's range; NaN/Inf raise).

        ``scale_log2`` defaults to round(log2(RMS of weight)) (0 for an all-zero weight), which
        centres the weights in the format's log range."""
        check_floating("weight", weight)
        if tuple(weight.shape) != tuple(self.codes.shape):
            raise ValueError(f"LNSLinear: weight must have shape {tuple(self.codes.shape)}, got "
                             f"{tuple(weight.shape)}")
        w = weight.detach().to(torch.float64)
        if scale_log2 is None:
            rms = w.pow(2).mean().sqrt().item()
            scale_log2 = round(math.log2(rms)) if rms > 0 else 0
        check_weight_format(self.bits, self.frac_bits, scale_log2)
        codes = encode(w * 2.0**-scale_log2, self.bits, self.frac_bits)
        self.codes.copy_(codes.to(self.codes.dtype))
        self._set_scale(scale_log2)

    def _set_scale(self, scale_log2: int) -> None:
        self.scale_log2 = scale_log2
        self.lns_format[2] = scale_log2

    @classmethod
    def from_linear(cls, linear: nn.Linear, bits: int = 16, frac_bits: int | None = None, *,
                    trainable: bool = True) -> LNSLinear:
        """An ``LNSLinear`` holding ``linear``'s weight (encoded) and bias (copied), on its
        device, with the carrier and bias in its dtype."""
        if not isinstance(linear, nn.Linear):
            raise ValueError(f"from_linear needs an nn.Linear, got {type(linear).__name__}")
        w = linear.weight
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, bits,
                    frac_bits, trainable=trainable, device=w.device, dtype=w.dtype)
        layer.encode_weight(w)
        if linear.bias is not None:
            with torch.no_grad():
                layer.bias.copy_(linear.bias)
        return layer

    def decoded_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """W = 2^scale_log2 * decode(codes) as a new tensor of ``dtype`` (no gradient): evaluated
        in float64 and rounded once (exact for float64)."""
        codes = self.codes.to(self.fmt.dtype)
        w = decode(codes, self.bits, self.frac_bits, dtype=torch.float64) * 2.0**self.scale_log2
        return w.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_floating("x", x)
        if x.shape[-1] != self.in_features:
            raise ValueError(f"LNSLinear: x must have {self.in_features} features in its last "
                             f"dimension, got shape {tuple(x.shape)}")
        dtype = x.dtype
        if x.is_cuda and torch.is_autocast_enabled("cuda"):
            dtype = torch.get_autocast_dtype("cuda")
        if dtype in _HALF and use_kernels(x):
            from resnetbk.kernels.lns_matmul import lns_linear

            rows = x.reshape(-1, self.in_features).to(dtype)
            y = lns_linear(rows, self.codes, self.lns_weight, self.bias, self.bits,
                           self.frac_bits, self.scale_log2)
            return y.reshape(*x.shape[:-1], self.out_features)
        return self._reference(x)

    def _reference(self, x: torch.Tensor) -> torch.Tensor:
        """decode, then F.linear in float64 (float64 inputs) or float32 (the others)."""
        cdtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        w = self.decoded_weight(cdtype)
        carrier = self.lns_weight
        if carrier is not None and carrier.requires_grad and torch.is_grad_enabled():
            # Straight-through: the value is w (the carrier term is exactly 0), dL/dw flows
            # into the carrier.
            w = w + (carrier - carrier.detach()).to(cdtype)
        bias = None if self.bias is None else self.bias.to(cdtype)
        return F.linear(x.to(cdtype), w, bias).to(x.dtype)

    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str,
                            keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination.pop(prefix + "lns_weight", None)  # zeros, never read: not saved

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str,
                              local_metadata: dict[str, Any], strict: bool,
                              missing_keys: list[str], unexpected_keys: list[str],
                              error_msgs: list[str]) -> None:
        meta = state_dict.get(prefix + "lns_format")
        codes = state_dict.get(prefix + "codes")
        scale = self._check_loaded(meta, codes)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        if prefix + "lns_weight" in missing_keys:
            missing_keys.remove(prefix + "lns_weight")
        if scale is not None:
            self.scale_log2 = scale

    def _check_loaded(self, meta: torch.Tensor | None, codes: torch.Tensor | None) -> int | None:
        """Validate a checkpoint's format and codes (ValueError); return its scale_log2."""
        scale = None
        if meta is not None:
            if (not isinstance(meta, torch.Tensor) or meta.dtype != torch.int32
                    or tuple(meta.shape) != (3,)):
                raise ValueError("LNSLinear checkpoint: lns_format must be an int32 tensor "
                                 "[bits, frac_bits, scale_log2]")
            bits, frac_bits, scale = (int(v) for v in meta.tolist())
            if (bits, frac_bits) != (self.bits, self.frac_bits):
                raise ValueError(
                    f"LNSLinear checkpoint holds bits={bits}, frac_bits={frac_bits} codes; this "
                    f"layer has bits={self.bits}, frac_bits={self.frac_bits}"
                )
            check_weight_format(bits, frac_bits, scale)
        if codes is not None:
            if not isinstance(codes, torch.Tensor) or codes.dtype != self.codes.dtype:
                raise ValueError(
                    f"LNSLinear checkpoint: {self.bits}-bit codes must be a "
                    f"{self.codes.dtype} tensor, got {getattr(codes, 'dtype', type(codes))}"
                )
            if tuple(codes.shape) != tuple(self.codes.shape):
                raise ValueError(f"LNSLinear checkpoint: codes of shape {tuple(codes.shape)} for "
                                 f"a layer of shape {tuple(self.codes.shape)}")
            check_codes(codes.to(self.fmt.dtype), self.fmt, "checkpoint codes")
        return scale

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, bits={self.bits}, frac_bits={self.frac_bits}, "
                f"scale=2^{self.scale_log2}, trainable={self.lns_weight is not None}")
