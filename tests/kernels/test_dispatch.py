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
