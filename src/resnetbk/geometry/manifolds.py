"""Manifold objects: what a ``ManifoldParameter`` and the Riemannian optimizers need to know.

Each class delegates to the math module of its model (``poincare`` or ``lorentz``). They are
``nn.Module``s so that a learnable curvature registers as a parameter of the layer owning the
manifold. A learnable curvature is stored as log(c), so c stays positive by construction.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from resnetbk.debug import check_curvature
from resnetbk.geometry import lorentz, poincare


class Manifold(nn.Module):
    """Interface used by optimizers: projection, gradients, retraction, transport."""

    name: str = "manifold"

    def __init__(self, c: float = 1.0, learnable: bool = False) -> None:
        super().__init__()
        check_curvature(c)
        log_c = torch.tensor(math.log(c), dtype=torch.float64)
        if learnable:
            self.log_c = nn.Parameter(log_c.float())
        else:
            self.register_buffer("log_c", log_c, persistent=True)
        self.learnable = learnable
        self._c_float = float(c)

    @property
    def c(self) -> float | torch.Tensor:
        """The curvature magnitude: a float when fixed, a positive tensor when learnable."""
        return self.log_c.exp() if self.learnable else self._c_float

    def extra_repr(self) -> str:
        return f"c={float(self.log_c.detach().exp()):.4g}, learnable={self.learnable}"

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._c_float = float(self.log_c.detach().exp())

    def _apply(self, fn, recurse=True):
        # `.to(bfloat16)` / `.half()` would round a fixed curvature's buffer (0.7 -> 0.6992);
        # keep it float64 on whatever device the module moved to.
        module = super()._apply(fn, recurse)
        if not self.learnable and self.log_c.dtype != torch.float64:
            self._buffers["log_c"] = torch.tensor(
                math.log(self._c_float), dtype=torch.float64, device=self.log_c.device
            )
        return module

    def c_detached(self) -> float | torch.Tensor:
        c = self.c
        return c.detach() if isinstance(c, torch.Tensor) else c

    # The methods below take and return tensors of points/tangent vectors (last axis).
    def check_point(self, x: torch.Tensor) -> None:
        raise NotImplementedError

    def project(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def proju(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def egrad2rgrad(self, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def inner(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Riemannian inner product <u, v>_x with keepdim (shape (..., 1))."""
        raise NotImplementedError

    def retr(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Retraction used by the optimizers: the exact exponential map."""
        raise NotImplementedError

    def transp(self, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Vector transport from T_x to T_y: parallel transport."""
        raise NotImplementedError

    def dist(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def random(self, *shape: int, std: float = 1e-2, dtype: torch.dtype | None = None,
               device: torch.device | str | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Points exp_0(v) with v ~ N(0, std^2) in the tangent space at the origin.

        ``shape`` is the full shape including the last (ambient) axis.
        """
        raise NotImplementedError


class Euclidean(Manifold):
    """Flat space, so that every parameter can be treated alike."""

    name = "euclidean"

    def __init__(self) -> None:
        super().__init__(c=1.0)

    def extra_repr(self) -> str:
        return ""

    def check_point(self, x: torch.Tensor) -> None:
        return None

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def proju(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return u

    def egrad2rgrad(self, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return grad

    def inner(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return (u * v).sum(-1, keepdim=True)

    def retr(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return x + u

    def transp(self, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return v

    def dist(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (x - y).norm(dim=-1)

    def random(self, *shape: int, std: float = 1e-2, dtype: torch.dtype | None = None,
               device: torch.device | str | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(*shape, dtype=dtype, device=device, generator=generator) * std


class PoincareBall(Manifold):
    """Poincaré ball of curvature -c (``resnetbk.geometry.poincare``)."""

    name = "poincare"

    def check_point(self, x: torch.Tensor) -> None:
        poincare.check_point("x", x, self.c)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return poincare.project(x, c=self.c)

    def proju(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return u

    def egrad2rgrad(self, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return poincare.egrad2rgrad(x, grad, c=self.c)

    def inner(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return poincare.inner(x, u, v, c=self.c, keepdim=True)

    def retr(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return poincare.expmap(x, u, c=self.c)

    def transp(self, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return poincare.parallel_transport(x, y, v, c=self.c)

    def dist(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return poincare.dist(x, y, c=self.c)

    def random(self, *shape: int, std: float = 1e-2, dtype: torch.dtype | None = None,
               device: torch.device | str | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        v = torch.randn(*shape, dtype=dtype, device=device, generator=generator) * std
        return poincare.expmap0(v, c=self.c)


class Lorentz(Manifold):
    """Lorentz hyperboloid of curvature -c, time first (``resnetbk.geometry.lorentz``)."""

    name = "lorentz"

    def check_point(self, x: torch.Tensor) -> None:
        lorentz.check_point("x", x, self.c)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return lorentz.project(x, c=self.c)

    def proju(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return lorentz.proju(x, u, c=self.c)

    def egrad2rgrad(self, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return lorentz.egrad2rgrad(x, grad, c=self.c)

    def inner(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return lorentz.inner(u, v, keepdim=True)

    def retr(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return lorentz.expmap(x, u, c=self.c)

    def transp(self, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return lorentz.parallel_transport(x, y, v, c=self.c)

    def dist(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return lorentz.dist(x, y, c=self.c)

    def random(self, *shape: int, std: float = 1e-2, dtype: torch.dtype | None = None,
               device: torch.device | str | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        v = torch.randn(*shape, dtype=dtype, device=device, generator=generator) * std
        v[..., 0] = 0
        return lorentz.expmap0(v, c=self.c)
