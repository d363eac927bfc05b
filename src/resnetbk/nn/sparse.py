"""2:4 structured sparsity for the Lorentz linear layer (issue 6, docs/SPARSITY.md).

``SparseLorentzLinear`` is a ``LorentzLinear`` whose spatial weight block W[:, 1:] (the
``in_features`` columns that read the input's spatial coordinates) is pruned 2:4 by magnitude:
in every group of 4 consecutive columns of a row, the 2 entries of largest |w| are kept and the
other 2 are exactly zero. The time-input column W[:, 0] and the bias stay dense.

Why the groups run along ``in_features``: y_s = W x sums over the input coordinates, and 2:4
sparse Tensor Cores skip half of the products of each such dot product, so the pattern must lie
along the reduction (k) axis. ``torch.sparse.to_sparse_semi_structured`` compresses the *first*
operand A (m, k) of A @ B with groups of 4 along k, i.e. along each row of A, and
``F.linear(x, S)`` with a compressed weight S (out, in) runs as (S x^T)^T: the weight is that
first operand, its rows are the layer's output rows and its k axis is ``in_features``.

The mask is fixed: a ``torch.nn.utils.parametrize`` parametrization makes ``layer.weight`` read
``where(mask, original, 0)``, so the weight used by every forward is exactly 2:4 whatever an
optimizer does, the gradient of the pruned entries of ``original`` is exactly zero, and those
entries (zero from the pruning) stay zero under SGD, Adam, AdamW and the Riemannian optimizers,
weight decay included (a zero gradient and a zero value give a zero update).

Two forward paths, with the same math:

* dense masked (default, training, CPU, any dtype): ``LorentzLinear.forward`` with the masked
  weight, i.e. exactly the dense layer with the pruned weight (its CUDA path is the fused
  cuBLAS + Triton epilogue of ``kernels/lorentz_linear.py``);
* semi-structured (after :meth:`SparseLorentzLinear.compress`, without autograd, CUDA sm_80+,
  float16/bfloat16 inputs): the sparse GEMM of torch (cuSPARSELt or CUTLASS) followed by the
  same fused Triton epilogue. Where that path cannot run, the first such forward warns once per
  reason (:class:`SparseFallbackWarning`) and the dense masked form runs.

Training uses the dense masked form: a tensor from ``to_sparse_semi_structured`` has no
backward (its transposed copy, which grad_x = grad_y W needs, is not built), and torch's sparse
training path (``prune_dense_static_sort``) re-prunes every step with its own 4x4-tile pattern,
not a fixed magnitude mask.

Recipe: train dense, ``model = prune_2_4(model)``, build the optimizer, fine-tune (the mask
stays fixed), then ``layer.compress()`` on each ``SparseLorentzLinear`` for inference.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from resnetbk.kernels.dispatch import curvature_value, use_kernels
from resnetbk.nn._checks import check_input
from resnetbk.nn.lorentz import LorentzLinear

__all__ = ["BACKENDS", "SparseFallbackWarning", "SparseLorentzLinear", "mask_2_4", "prune_2_4"]

GROUP = 4  # consecutive input weights per group
KEEP = 2  # kept per group
BACKENDS = ("auto", "cusparselt", "cutlass")
_HALF = (torch.float16, torch.bfloat16)
_warned: set[str] = set()


class SparseFallbackWarning(UserWarning):
    """A compressed ``SparseLorentzLinear`` ran its dense masked form (same math) instead of
    the semi-structured kernel; the message names the reason. Issued once per reason."""


def _warn_once(reason: str) -> None:
    if reason not in _warned:
        _warned.add(reason)
        warnings.warn(f"SparseLorentzLinear: {reason}; running the dense masked form instead "
                      "(the dense layer with the pruned weight)", SparseFallbackWarning,
                      stacklevel=2)


def mask_2_4(weight: torch.Tensor) -> torch.Tensor:
    """The 2:4 magnitude mask of a matrix (bool, same shape): in each group of 4 consecutive
    entries of a row (along the last axis), True at the 2 largest |w|; ties keep the lower
    index. Raises ValueError for a non-matrix, a width that is not a multiple of 4, or
    non-finite entries (whose magnitudes cannot be ranked)."""
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or not weight.is_floating_point():
        raise ValueError(f"weight must be a floating matrix, got "
                         f"{getattr(weight, 'shape', type(weight).__name__)}")
    rows, cols = weight.shape
    if cols % GROUP:
        raise ValueError(f"weight: its {cols} columns must be a multiple of {GROUP} (the 2:4 "
                         "groups run along the last axis)")
    w = weight.detach()
    if not bool(torch.isfinite(w).all()):
        raise ValueError("weight has non-finite entries: their magnitudes cannot be ranked")
    groups = w.abs().reshape(rows, cols // GROUP, GROUP)
    # A stable descending sort puts the larger of two equal magnitudes' lower index first.
    kept = torch.sort(groups, dim=-1, descending=True, stable=True).indices[..., :KEEP]
    mask = torch.zeros(groups.shape, dtype=torch.bool, device=w.device)
    return mask.scatter_(-1, kept, True).reshape(rows, cols)


def _layer_mask(weight: torch.Tensor) -> torch.Tensor:
    """The mask of a whole LorentzLinear weight (out, in + 1): the time-input column kept, the
    spatial block 2:4 by magnitude."""
    spatial = mask_2_4(weight[:, 1:])
    return torch.cat([torch.ones_like(spatial[:, :1]), spatial], dim=1)


class _FixedMask(nn.Module):
    """Parametrization weight = where(mask, original, 0): the pruned entries are exactly zero
    in every forward and receive an exactly zero gradient; assigning ``layer.weight`` stores the
    masked value (``right_inverse``)."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        return torch.where(self.mask, original, 0)

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        return torch.where(self.mask, weight, 0)


class _CompressedCache:
    """The semi-structured copy of the weight, its torch backend and the key it was made for:
    (torch class, dtype, device, versions and storage of the weight and mask). Not copied by
    ``deepcopy`` (the copy rebuilds its own)."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.tensor: torch.Tensor | None = None
        self.backend: str | None = None

    def __deepcopy__(self, memo: dict) -> _CompressedCache:
        return _CompressedCache()


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _augmented_weight(weight: torch.Tensor, width: int) -> torch.Tensor:
    """The sparse GEMM operand (out, width) of a masked weight (out, in + 1): the spatial block,
    then the time-input column as the group (w_0, 0, 0, 0), then zero columns up to ``width``
    (a multiple of the backend's column granule). Every group of 4 holds at most 2 nonzeros, so
    the whole operand is 2:4 and the time column costs no separate pass."""
    out, d = weight.shape[0], weight.shape[1] - 1
    pad = weight.new_zeros(out, width - d - 1)
    return torch.cat([weight[:, 1:], weight[:, :1], pad], dim=1).contiguous()


def _augmented_input(xr: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The dense operand (rows, width) matching :func:`_augmented_weight`: (x_s, x_0, 0, ...),
    so that x' W'^T = x W^T. float16 rows are divided by 2^e, e = frexp exponent of max|x_row|
    (exact, but for entries below 2^-14 2^e, which round to float16's subnormal grid: off by at
    most 2^-25 2^e), so |x'| <= 1 and x' W'^T cannot pass 65504 where x W^T could (the dense
    path's GEMM writes float32); the returned 2^e (rows, 1), float32, undoes it."""
    rows, d = xr.shape[0], xr.shape[1] - 1
    x_aug = torch.cat([xr[:, 1:], xr[:, :1], xr.new_zeros(rows, width - d - 1)], dim=1)
    if xr.dtype != torch.float16:
        return x_aug, None
    _, exponent = torch.frexp(xr.abs().amax(dim=1, keepdim=True).float())
    scale = torch.ldexp(torch.ones_like(exponent, dtype=torch.float32), exponent)
    return x_aug.div_(scale), scale


def _check_2_4(operand: torch.Tensor) -> None:
    """Internal invariant before compression: at most 2 nonzeros per group of 4 (a compressor
    given more would silently drop some)."""
    per_group = (operand.reshape(operand.shape[0], -1, GROUP) != 0).sum(-1)
    if int(per_group.max()) > KEEP:
        raise RuntimeError("SparseLorentzLinear: the sparse operand is not 2:4 (internal error)")


def _semi_structured_class(backend: str) -> type | str:
    """The torch tensor class of ``backend`` ("auto": cuSPARSELt where this torch build has it
    and ``SparseSemiStructuredTensor._FORCE_CUTLASS`` is off, as ``to_sparse_semi_structured``
    chooses, else CUTLASS), or the reason it cannot run."""
    sparse = torch.sparse
    have_cusparselt = torch.backends.cusparselt.is_available()
    if backend == "cusparselt" and not have_cusparselt:
        return "cuSPARSELt is not available in this torch build (try compress(backend='cutlass'))"
    if backend == "cutlass" or (backend == "auto" and (
            not have_cusparselt or sparse.SparseSemiStructuredTensor._FORCE_CUTLASS)):
        return sparse.SparseSemiStructuredTensorCUTLASS
    return sparse.SparseSemiStructuredTensorCUSPARSELT


class SparseLorentzLinear(LorentzLinear):
    r"""``LorentzLinear`` with its spatial weight block pruned 2:4 by magnitude (fixed mask).

    Same arguments and math as :class:`~resnetbk.nn.LorentzLinear` (points of
    ``in_features + 1`` coordinates, time first, to points of ``out_features + 1``), with
    ``in_features`` a multiple of 4. Construction prunes the dense initialisation; use
    :meth:`from_dense` (or :func:`prune_2_4`) to prune a trained layer. ``layer.weight`` is the
    masked weight; the trainable tensor is ``layer.parametrizations.weight.original`` and the
    mask a buffer (both in the state dict; save with ``state_dict``, as torch requires for
    parametrized modules). ``layer.mask`` is the spatial mask (out_features, in_features).

    The forward is the dense layer with the masked weight, unless :meth:`compress` was called:
    then, without autograd, on CUDA sm_80+ with float16/bfloat16 inputs, it runs torch's 2:4
    semi-structured GEMM and the fused Lorentz epilogue (:meth:`fallback_reason` says which
    path a given input takes). Its output differs from the dense masked layer's only by
    rounding: the sparse GEMM writes W x in the input dtype (the dense path keeps float32).
    """

    def __init__(self, in_features: int, out_features: int, c: float = 1.0, bias: bool = True,
                 learnable_c: bool = False, max_distance: float | None = None) -> None:
        super().__init__(in_features, out_features, c=c, bias=bias, learnable_c=learnable_c,
                         max_distance=max_distance)
        if in_features % GROUP:
            raise ValueError(f"SparseLorentzLinear: in_features must be a multiple of {GROUP} "
                             f"(2:4 groups of input weights), got {in_features}")
        mask = _layer_mask(self.weight)
        with torch.no_grad():
            self.weight.copy_(torch.where(mask, self.weight, 0))
        parametrize.register_parametrization(self, "weight", _FixedMask(mask))
        self._semi_backend: str | None = None
        self._compressed = _CompressedCache()

    @classmethod
    def from_dense(cls, layer: LorentzLinear) -> SparseLorentzLinear:
        """A 2:4 copy of a dense ``LorentzLinear``: the spatial block pruned by magnitude, the
        time-input column, bias, curvature, ``max_distance``, device, dtypes, ``requires_grad``
        flags and train/eval mode as in ``layer`` (which is left unchanged)."""
        if not isinstance(layer, LorentzLinear) or isinstance(layer, SparseLorentzLinear):
            raise ValueError(f"layer must be a dense LorentzLinear, got {type(layer).__name__}")
        if layer.in_features % GROUP:
            raise ValueError(f"SparseLorentzLinear.from_dense: in_features must be a multiple "
                             f"of {GROUP} (2:4 groups of input weights), got {layer.in_features}")
        weight = layer.weight.detach()
        sparse = cls(layer.in_features, layer.out_features, bias=layer.bias is not None,
                     max_distance=layer.max_distance).to(device=weight.device, dtype=weight.dtype)
        sparse.manifold = copy.deepcopy(layer.manifold)
        if layer.bias is not None:
            sparse.bias = nn.Parameter(layer.bias.detach().clone(),
                                       requires_grad=layer.bias.requires_grad)
        sparse.prune_(weight)
        sparse.parametrizations.weight.original.requires_grad_(layer.weight.requires_grad)
        return sparse.train(layer.training)

    @property
    def mask(self) -> torch.Tensor:
        """The 2:4 mask of the spatial block (out_features, in_features), bool."""
        return self.parametrizations.weight[0].mask[:, 1:]

    def prune_(self, weight: torch.Tensor) -> SparseLorentzLinear:
        """Load a dense weight (out_features, in_features + 1) and prune it: a new magnitude
        mask, the pruned entries stored as exact zeros. In place (optimizers keep their
        parameter); the compressed copy is rebuilt on the next semi-structured forward."""
        expected = (self.out_features, self.in_features + 1)
        if tuple(weight.shape) != expected:
            raise ValueError(f"weight must have shape {expected}, got {tuple(weight.shape)}")
        mask = _layer_mask(weight)
        plist = self.parametrizations.weight
        with torch.no_grad():
            plist.original.copy_(torch.where(mask, weight, 0))
            plist[0].mask.copy_(mask)
        return self

    def reset_parameters(self) -> None:
        """``LorentzLinear``'s initialisation, then a fresh magnitude mask."""
        if not parametrize.is_parametrized(self, "weight"):  # inside LorentzLinear.__init__
            super().reset_parameters()
            return
        fresh = LorentzLinear(self.in_features, self.out_features, bias=False)
        self.prune_(fresh.weight.detach().to(self.parametrizations.weight.original))
        if self.bias is not None:
            with torch.no_grad():
                self.bias.zero_()

    # ------------------------------------------------------------------- semi-structured path

    def compress(self, backend: str = "auto") -> SparseLorentzLinear:
        """Run inference through torch's 2:4 semi-structured kernels from now on.

        ``backend``: "cusparselt", "cutlass", or "auto" (what ``to_sparse_semi_structured``
        would pick). The compressed copy of the masked weight is made on the first forward that
        can use it, in that input's dtype and device, and rebuilt when the weight changes
        (tracked by the parameters' version counters; writes through ``.data`` bypass them:
        call ``compress()`` again after those). Forwards that need autograd, and inputs the
        kernels cannot take (see :meth:`fallback_reason`), run the dense masked form after a
        :class:`SparseFallbackWarning` (once per reason)."""
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self._semi_backend = backend
        self._compressed = _CompressedCache()
        return self

    def decompress(self) -> SparseLorentzLinear:
        """Back to the dense masked form for every forward; frees the compressed copy."""
        self._semi_backend = None
        self._compressed = _CompressedCache()
        return self

    @property
    def compressed_backend(self) -> str | None:
        """The torch backend ("cusparselt" / "cutlass") of the compressed copy made by the last
        semi-structured forward, or None if there is none."""
        return self._compressed.backend

    def fallback_reason(self, x: torch.Tensor) -> str | None:
        """None if a forward on ``x`` (now, under the current grad mode) runs the
        semi-structured kernel; otherwise why it runs the dense masked form."""
        if self._semi_backend is None:
            return "compress() was not called"
        if torch.is_grad_enabled() and (x.requires_grad or any(
                p.requires_grad for p in self.parameters())):
            return ("autograd is on and torch's semi-structured tensors have no backward (use "
                    "torch.no_grad() or torch.inference_mode() for the sparse kernel)")
        if not x.is_cuda:
            return f"x is on {x.device.type}: the semi-structured kernels need a CUDA GPU"
        if x.dtype not in _HALF:
            return f"x is {x.dtype}: the semi-structured kernels take float16 or bfloat16"
        major, minor = torch.cuda.get_device_capability(x.device)
        if major < 8:
            return f"the GPU is sm_{major}{minor}: 2:4 sparse Tensor Cores need sm_80 or newer"
        cls = _semi_structured_class(self._semi_backend)
        if isinstance(cls, str):
            return cls
        if cls is torch.sparse.SparseSemiStructuredTensorCUTLASS and major != 8:
            # torch's CUTLASS 2:4 kernels are built for sm_8x only (they raise on an H200)
            return (f"the GPU is sm_{major}{minor}: torch's CUTLASS 2:4 kernels run only on sm_8x "
                    "(use compress(backend='cusparselt'))")
        rows = cls._DTYPE_SHAPE_CONSTRAINTS[x.dtype].sparse_min_rows
        if self.out_features % rows:
            return (f"out_features={self.out_features} is not a multiple of {rows} (the "
                    f"{cls.BACKEND} minimum for {x.dtype} weights)")
        if not use_kernels(x, c=1.0):
            return ("the fused Lorentz epilogue is off (RESNETBK_BACKEND=torch, or Triton is "
                    "not installed)")
        return None

    def _compressed_weight(self, x: torch.Tensor) -> torch.Tensor:
        """The semi-structured operand of :func:`_augmented_weight` in x's dtype and device,
        cached until the weight or the mask changes."""
        cls = _semi_structured_class(self._semi_backend)
        plist = self.parametrizations.weight
        key = (cls, x.dtype, x.device, plist.original._version, plist.original.data_ptr(),
               plist[0].mask._version, plist[0].mask.data_ptr())
        if self._compressed.key != key:
            width = _round_up(self.in_features + GROUP,
                              cls._DTYPE_SHAPE_CONSTRAINTS[x.dtype].sparse_min_cols)
            with torch.no_grad():
                operand = _augmented_weight(self.weight.to(device=x.device, dtype=x.dtype),
                                            width)
            _check_2_4(operand)
            self._compressed.key, self._compressed.tensor = key, cls.from_dense(operand)
            self._compressed.backend = cls.BACKEND
        return self._compressed.tensor

    def _semi_structured_forward(self, x: torch.Tensor) -> torch.Tensor:
        sparse_weight = self._compressed_weight(x)
        xr = x.reshape(-1, self.in_features + 1)
        x_aug, row_scale = _augmented_input(xr, sparse_weight.shape[1])
        v = F.linear(x_aug, sparse_weight)
        if row_scale is not None:
            v = v.float().mul_(row_scale)
        from resnetbk.kernels.lorentz_linear import lorentz_linear_epilogue

        y, _ = lorentz_linear_epilogue(v.contiguous(), self.bias,
                                       curvature_value(self.manifold.c), self.max_distance,
                                       x.dtype)
        return y.view(*x.shape[:-1], self.out_features + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map points x (..., in_features + 1) to points (..., out_features + 1), time first."""
        check_input("SparseLorentzLinear", x, self.in_features + 1,
                    "in_features + 1 coordinates, time first")
        if self._semi_backend is not None and x.numel() > 0:
            reason = self.fallback_reason(x)
            if reason is None:
                return self._semi_structured_forward(x)
            _warn_once(reason)
        with parametrize.cached():
            return super().forward(x)

    def extra_repr(self) -> str:
        s = super().extra_repr() + ", sparsity=2:4"
        if self._semi_backend is not None:
            s += f", compressed={self._semi_backend}"
        return s


def prune_2_4(model: nn.Module,
              select: Callable[[str, LorentzLinear], bool] | None = None) -> nn.Module:
    """Replace every dense ``LorentzLinear`` of ``model`` (those for which
    ``select(qualified_name, layer)`` is true, if given) by ``SparseLorentzLinear.from_dense``:
    the first step of prune-then-fine-tune. Returns the model, or the new layer when ``model``
    itself is a ``LorentzLinear``: use the return value. Build the optimizer afterwards (the
    sparse layers' parameters are new tensors), then train as usual: the mask stays fixed.

    Raises ValueError, before changing anything, if no layer is selected or a selected layer's
    ``in_features`` is not a multiple of 4 (exclude it with ``select``)."""
    chosen = [(name, layer) for name, layer in model.named_modules()
              if isinstance(layer, LorentzLinear) and not isinstance(layer, SparseLorentzLinear)
              and (select is None or select(name, layer))]
    if not chosen:
        raise ValueError("prune_2_4: model has no dense LorentzLinear layer to prune")
    for name, layer in chosen:
        if layer.in_features % GROUP:
            raise ValueError(f"prune_2_4: layer {name or '<model>'} has in_features="
                             f"{layer.in_features}, not a multiple of {GROUP}; exclude it with "
                             "select=")
    if chosen[0][0] == "":
        return SparseLorentzLinear.from_dense(model)
    for name, layer in chosen:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, SparseLorentzLinear.from_dense(layer))
    return model
