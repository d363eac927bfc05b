"""Backend selection (resnetbk.kernels.dispatch): environment, context manager, dispatch rules."""

from __future__ import annotations

import pytest
import torch

from resnetbk.geometry import poincare
from resnetbk.kernels import dispatch as be


def test_env_and_context(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(be.ENV_VAR, "torch")
    assert be.requested_backend() == "torch"
    with be.backend("triton"):
        assert be.requested_backend() == "triton"
        with be.backend("auto"):
            assert be.requested_backend() == "auto"
        assert be.requested_backend() == "triton"
    assert be.requested_backend() == "torch"
    monkeypatch.setenv(be.ENV_VAR, "cuda")
    with pytest.raises(ValueError, match="RESNETBK_BACKEND must be one of"):
        be.requested_backend()
    with pytest.raises(ValueError, match="backend must be one of"), be.backend("fast"):
        pass


def test_cpu_float64_and_learnable_curvature_use_reference() -> None:
    x = torch.zeros(4, 3)
    with be.backend("triton"):
        assert not be.use_kernels(x)  # CPU tensors: always the reference
        assert not be.use_kernels(x.double())
        assert not be.use_kernels(x, c=torch.tensor(1.0, requires_grad=True))
        assert not be.use_row_kernel(x, torch.zeros(1, 3))  # broadcasting: reference


@pytest.mark.gpu
def test_cuda_dispatch(gen: torch.Generator) -> None:
    x = (torch.rand(64, 16, generator=gen) - 0.5).cuda() / 8
    y = (torch.rand(64, 16, generator=gen) - 0.5).cuda() / 8
    with be.backend("triton"):
        assert be.use_row_kernel(x, y, c=1.0)
        fused = poincare.mobius_add(x, y, c=1.0)
        assert not be.use_kernels(x.double())
        # with autograd the compiled reference runs (faster fwd+bwd on the H200)
        assert not be.use_row_kernel(x.requires_grad_(), y, c=1.0)
        with torch.no_grad():
            assert be.use_row_kernel(x, y, c=1.0)
    with be.backend("torch"):
        assert not be.use_row_kernel(x, y, c=1.0)
        ref = poincare.mobius_add(x, y, c=1.0)
    assert (fused - ref).abs().max() < 1e-6


@pytest.mark.gpu
def test_lorentz_cdist_dispatch(monkeypatch: pytest.MonkeyPatch, gen: torch.Generator) -> None:
    """CUDA float32 inputs of one dtype take the fused cdist; mixed dtypes, a per-row curvature
    and backend("torch") take the reference; both agree on well-separated points."""
    from resnetbk.geometry import lorentz
    from resnetbk.kernels import lorentz_cdist as module

    calls = []
    real = module.lorentz_cdist
    monkeypatch.setattr(module, "lorentz_cdist", lambda *a: calls.append(1) or real(*a))
    x = lorentz.expmap0(torch.cat([torch.zeros(50, 1), torch.randn(50, 32, generator=gen)], -1)
                        .cuda(), c=1.0)
    y = lorentz.expmap0(torch.cat([torch.zeros(40, 1), torch.randn(40, 32, generator=gen)], -1)
                        .cuda(), c=1.0)
    with be.backend("triton"):
        fused = lorentz.cdist(x, y, c=1.0)
        assert len(calls) == 1
        lorentz.cdist(x, y.double(), c=1.0)
        lorentz.cdist(x, y, c=torch.ones(50, 1, device="cuda"))
        assert len(calls) == 1
    with be.backend("torch"):
        ref = lorentz.cdist(x.double(), y.double(), c=1.0)
    assert len(calls) == 1
    assert ((fused - ref) / ref).abs().max() < 1e-4
