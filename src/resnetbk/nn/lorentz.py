"""Fully hyperbolic linear layer on the Lorentz hyperboloid (time coordinate first).

Chen et al., "Fully Hyperbolic Neural Networks", ACL 2022 (HyboNet), and Yang et al.,
"Hypformer", KDD 2024: instead of mapping to a tangent space, applying a Euclidean linear map
and mapping back (log_0 -> linear -> exp_0, which fixes the origin and so can never express a
boost), the layer maps all d_in + 1 ambient coordinates linearly to the d_out spatial
coordinates of the output and recomputes the time coordinate so the result lies on the
hyperboloid. Every Lorentz transformation (boosts and rotations) is a member of this family.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from resnetbk.geometry import lorentz
from resnetbk.geometry.manifolds import Lorentz
from resnetbk.geometry.numerics import (
    as_curvature,
    asinhc,
    clip_factor,
    compute_dtype,
    max_rapidity,
    norm,
    sinhc,
    sqrt_c,
    tanhc,
)
from resnetbk.kernels.dispatch import curvature_value, use_kernels
from resnetbk.nn._checks import check_input, check_size

__all__ = ["LorentzLinear"]

def _overflow_safe_norm(x: torch.Tensor) -> torch.Tensor:
    """|x| over the last axis (keepdim) without overflowing the sum of squares, floored at the
    smallest normal number (so x / |x| is 0, not NaN, at x = 0, with gradient 0 there)."""
    tiny = torch.finfo(x.dtype).tiny
    scale = x.detach().abs().amax(dim=-1, keepdim=True).clamp_min(tiny)
    return (scale * norm(x / scale)).clamp_min(tiny)


def _bound_factor(space: torch.Tensor, sc: float | torch.Tensor,
                  max_distance: float) -> torch.Tensor:
    """The factor f with sqrt(c)|f y_s| = sinh(D' tanh(theta / D')), theta = asinh(sqrt(c)|y_s|),
    D' = sqrt(c) D: f = sinhc(theta') tanhc(theta / D') asinhc(sqrt(c)|y_s|), each factor
    evaluated without cancellation, so f -> 1 smoothly as y_s -> 0 (no singularity)."""
    scaled_norm = sc * _overflow_safe_norm(space)
    theta = torch.asinh(scaled_norm)
    big_d = sc * max_distance
    bounded = big_d * torch.tanh(theta / big_d)
    return sinhc(bounded) * tanhc(theta / big_d) * asinhc(scaled_norm)


class LorentzLinear(nn.Module):
    r"""Fully hyperbolic Lorentz linear layer (Chen et al., ACL 2022; Hypformer, KDD 2024).

    ``in_features`` and ``out_features`` are manifold dimensions d: points have d + 1
    coordinates, time first, on <x, x>_L = -1/c. With weight W of shape
    ``(out_features, in_features + 1)`` and bias b of shape ``(out_features,)``:

        y_s = W x + b                           (spatial output from all input coordinates)
        y_0 = sqrt(1/c + |y_s|^2)               (as ``lorentz.project``)

    For a Lorentz transform L (L^T J L = J, J = diag(-1, 1, ..., 1)), W = L[1:, :] and b = 0
    give y = L x exactly, because L x is already on the hyperboloid.

    Range guard: a spatial output with sqrt(c)|y_s| > sinh(MAX_RAPIDITY[dtype]) (the largest
    distance from the origin that the geometry functions keep representable in the output
    dtype: 350 in float64, 43 in float32/bfloat16, 11 in float16) is scaled back radially to
    that distance, as ``lorentz.expmap`` does, and also to |y_s| <= finfo(dtype).max / 4 so
    that every coordinate, time included, is finite in the output dtype (matters for float16
    with c < 1). Inside that range the layer is exact.

    Optional distance bound (``max_distance`` = D, default off), a smooth stand-in for HyboNet's
    time normalisation: the output's distance from the origin d = asinh(sqrt(c)|y_s|)/sqrt(c)
    is mapped to D tanh(d / D) along the same direction (identity to first order for d << D,
    strictly below D, smooth and monotone), which keeps deep stacks from drifting to the range
    limits. HyboNet itself instead takes the time coordinate from an extra output row,
    y_0 = (1.1 + sigmoid(t) e^s)/sqrt(c), and rescales W x to match; its direction W x / |W x|
    is undefined at W x = 0, which HyboNet's own initialisation (time column and bias 0) produces
    for every input at the origin, so its gradients there are Inf/NaN. With a bound the layer no
    longer contains the Lorentz transforms exactly.

    Initialisation: spatial-input columns of W ~ U(-1/sqrt(in), 1/sqrt(in)) (nn.Linear's
    fan-in bound), the time-input column 0 and b = 0 as in HyboNet, so that at initialisation
    the large time coordinate x_0 >= 1/sqrt(c) does not act as a bias.

    Inputs of any floating dtype: parameters are cast to the compute dtype (float32 for half
    inputs), the output is in the input dtype.
    """

    def __init__(self, in_features: int, out_features: int, c: float = 1.0, bias: bool = True,
                 learnable_c: bool = False, max_distance: float | None = None) -> None:
        super().__init__()
        check_size("LorentzLinear", "in_features", in_features)
        check_size("LorentzLinear", "out_features", out_features)
        if max_distance is not None and not (
                isinstance(max_distance, (int, float)) and not isinstance(max_distance, bool)
                and math.isfinite(max_distance) and max_distance > 0):
            raise ValueError(f"LorentzLinear: max_distance must be None or a finite float > 0, "
                             f"got {max_distance!r}")
        self.in_features = in_features
        self.out_features = out_features
        self.max_distance = None if max_distance is None else float(max_distance)
        self.manifold = Lorentz(c, learnable=learnable_c)
        self.weight = nn.Parameter(torch.empty(out_features, in_features + 1))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_features)
        with torch.no_grad():
            self.weight.uniform_(-bound, bound)
            self.weight[:, 0] = 0
            if self.bias is not None:
                self.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map points x (..., in_features + 1) to points (..., out_features + 1), time first."""
        check_input("LorentzLinear", x, self.in_features + 1,
                    "in_features + 1 coordinates, time first")
        c = self.manifold.c
        if use_kernels(x, self.weight, c=c):
            # The GEMM runs in x's dtype (a float32 weight is rounded to bfloat16 for bfloat16
            # x, as autocast does), then one fused epilogue (kernels/lorentz_linear.py).
            from resnetbk.kernels.lorentz_linear import lorentz_linear

            return lorentz_linear(x, self.weight, self.bias, curvature_value(c),
                                  self.max_distance)
        cdtype = compute_dtype(x.dtype)
        weight = self.weight.to(cdtype)
        bias = self.bias.to(cdtype) if self.bias is not None else None
        out = F.linear(x.to(cdtype), weight, bias)
        cc = as_curvature(c, out)
        sc = sqrt_c(cc)
        space = out
        if self.max_distance is not None:
            space = space * _bound_factor(space, sc, self.max_distance)
        # Cap the rapidity here with an overflow-safe norm: a linear map's output can exceed
        # sqrt(finfo.max), where the plain norm inside the geometry's cap is Inf and would
        # send the point to the origin instead of to the cap.
        limit = math.sinh(max_rapidity(x.dtype)) / sc
        limit = (limit.clamp_max(torch.finfo(x.dtype).max / 4) if isinstance(limit, torch.Tensor)
                 else min(limit, torch.finfo(x.dtype).max / 4))
        # clip_factor, not limit / max(norm, limit): the quotient's backward overflows to Inf
        # (then NaN in the weight gradient) once the norm nears 1e19.
        space = space * clip_factor(_overflow_safe_norm(space), limit)
        return lorentz._from_spatial(space, cc, x.dtype).to(x.dtype)

    def extra_repr(self) -> str:
        s = (f"in_features={self.in_features}, out_features={self.out_features}, "
             f"bias={self.bias is not None}")
        if self.max_distance is not None:
            s += f", max_distance={self.max_distance:g}"
        return s
