"""Poincaré-ball layers of HNN++ (Shimizu, Mukuta & Harada, "Hyperbolic Neural Networks++",
ICLR 2021): the fully-connected layer ``PoincareLinear`` and the multinomial logistic
regression head ``PoincareMLR``. Both are built on the unidirectional hyperplane logits

    v_k(x) = 2|z_k|/sqrt(c) asinh(lambda_x sqrt(c) <x, z_k/|z_k|> cosh(2 sqrt(c) r_k)
                                  - (lambda_x - 1) sinh(2 sqrt(c) r_k))

(``resnetbk.geometry.poincare.unidirectional_mlr``, HNN++ eq. 6), the signed distance of x to
the k-th hyperplane scaled by the norm of its normal.

Dtypes: parameters are cast to the compute dtype of the input (float32 for bfloat16/float16
inputs, else the input dtype), the math runs in that dtype and the output is returned in the
input dtype. So a float32 layer accepts half inputs, and a float64 copy of a layer is an exact
reference for it.
"""

from __future__ import annotations

import torch
from torch import nn

from resnetbk.geometry import poincare
from resnetbk.geometry.manifolds import PoincareBall
from resnetbk.geometry.numerics import as_curvature, compute_dtype, sqrt_c
from resnetbk.nn._checks import check_input, check_size

__all__ = ["PoincareLinear", "PoincareMLR"]


def _hnnpp_init(weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    """HNN++ initialisation: z ~ N(0, sigma^2) with sigma = (2 n_in n_out)^-1/2, r = 0."""
    n_in, n_out = weight.shape
    with torch.no_grad():
        weight.normal_(0.0, (2.0 * n_in * n_out) ** -0.5)
        if bias is not None:
            bias.zero_()


def _params(weight: torch.Tensor, bias: torch.Tensor | None,
            dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    z = weight.to(dtype)
    r = bias.to(dtype) if bias is not None else z.new_zeros(z.shape[1])
    return z, r


def _ball_point_from_distances(v: torch.Tensor, c: float | torch.Tensor) -> torch.Tensor:
    """The point y whose signed distances to the coordinate hyperplanes are v (HNN++ eq. 8).

    y = w / (1 + sqrt(1 + c|w|^2)) with w_k = sinh(sqrt(c) v_k) / sqrt(c). sinh overflows for
    sqrt(c)|v_k| beyond ~89 (float32) / ~710 (float64), where the naive formula gives Inf/Inf.
    With s = sqrt(c) v, m = max_k |s_k| and u = sinh(s) e^-m (every |u_k| <= 1/2 + e^-2m/2) the
    same point is, exactly,

        sqrt(c) y = u / (e^-m + sqrt(e^-2m + |u|^2)),

    free of overflow. m is treated as a constant in autograd: the value does not depend on it.
    u_k is taken from sinh directly where |s_k| < 1 (no cancellation) and from
    (e^(s_k - m) - e^(-s_k - m)) / 2 elsewhere (no overflow, at most one bit lost).
    """
    sc = sqrt_c(c)
    s = sc * v
    m = s.detach().abs().amax(dim=-1, keepdim=True)
    em = torch.exp(-m)
    small = s.abs() < 1
    u = torch.where(
        small,
        torch.sinh(s.clamp(-1.0, 1.0)) * em,
        0.5 * (torch.exp(s - m) - torch.exp(-s - m)),
    )
    den = em + torch.sqrt(em * em + u.pow(2).sum(dim=-1, keepdim=True))
    return u / (den * sc)


class PoincareLinear(nn.Module):
    r"""HNN++ Poincaré fully-connected layer (Shimizu et al., ICLR 2021, Sec. 3.2, eq. 8).

    For x in the ball of curvature -c (last axis ``in_features``), with weight z of shape
    ``(in_features, out_features)`` and bias r of shape ``(out_features,)``:

        v = unidirectional_mlr(x, z, r)                (signed scaled hyperplane distances)
        w = sinh(sqrt(c) v) / sqrt(c)
        y = w / (1 + sqrt(1 + c |w|^2))

    y is the point whose signed distance to the hyperplane through the origin orthogonal to the
    k-th axis equals v_k(x). It is computed without overflow for any v (see
    ``_ball_point_from_distances``) and projected with ``poincare.project`` so that it stays
    strictly inside the ball after rounding to the output dtype.

    Initialisation as in HNN++: z ~ N(0, (2 in out)^-1), r = 0.

    Args:
        in_features: manifold dimension of the input.
        out_features: manifold dimension of the output.
        c: curvature magnitude (curvature -c), > 0.
        bias: learn the hyperplane offsets r (else r = 0).
        learnable_c: make c a parameter (stored as log c in ``manifold``).
    """

    def __init__(self, in_features: int, out_features: int, c: float = 1.0, bias: bool = True,
                 learnable_c: bool = False) -> None:
        super().__init__()
        check_size("PoincareLinear", "in_features", in_features)
        check_size("PoincareLinear", "out_features", out_features)
        self.in_features = in_features
        self.out_features = out_features
        self.manifold = PoincareBall(c, learnable=learnable_c)
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _hnnpp_init(self.weight, self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map points x (..., in_features) of the ball to points (..., out_features)."""
        check_input("PoincareLinear", x, self.in_features, "in_features")
        c = self.manifold.c
        cdtype = compute_dtype(x.dtype)
        z, r = _params(self.weight, self.bias, cdtype)
        v = poincare.unidirectional_mlr(x.to(cdtype), z, r, c=c)
        y = _ball_point_from_distances(v, as_curvature(c, v))
        return poincare.project(y.to(x.dtype), c=c)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class PoincareMLR(nn.Module):
    r"""HNN++ Poincaré multinomial logistic regression (Shimizu et al., ICLR 2021, eq. 6).

    Returns the logits v_k(x) = ``unidirectional_mlr(x, z, r)``, shape (..., num_classes):

        v_k(x) = 2|z_k|/sqrt(c) asinh(lambda_x sqrt(c) <x, z_k/|z_k|> cosh(2 sqrt(c) r_k)
                                      - (lambda_x - 1) sinh(2 sqrt(c) r_k)),

    i.e. lambda_{q_k} |a_k| times the signed distance of x to the hyperplane through
    q_k = exp_0(r_k z_k/|z_k|) with normal a_k = P_{0->q_k}(z_k) (Ganea et al. 2018's MLR
    with HNN++'s unidirectional reparameterisation). Feed them to ``cross_entropy``.

    Initialisation as in HNN++: z ~ N(0, (2 in num_classes)^-1), r = 0.
    """

    def __init__(self, in_features: int, num_classes: int, c: float = 1.0,
                 learnable_c: bool = False) -> None:
        super().__init__()
        check_size("PoincareMLR", "in_features", in_features)
        check_size("PoincareMLR", "num_classes", num_classes)
        self.in_features = in_features
        self.num_classes = num_classes
        self.manifold = PoincareBall(c, learnable=learnable_c)
        self.weight = nn.Parameter(torch.empty(in_features, num_classes))
        self.bias = nn.Parameter(torch.empty(num_classes))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _hnnpp_init(self.weight, self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (..., num_classes) of points x (..., in_features), in the dtype of x."""
        check_input("PoincareMLR", x, self.in_features, "in_features")
        cdtype = compute_dtype(x.dtype)
        z, r = _params(self.weight, self.bias, cdtype)
        return poincare.unidirectional_mlr(x.to(cdtype), z, r, c=self.manifold.c).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, num_classes={self.num_classes}"
