"""Training signal of the byte language models: gradients, overfitting, determinism, dropout."""

from __future__ import annotations

import pytest
import torch
from _model_variants import VARIANTS, P, make, random_bytes

from resnetbk.nn import ManifoldParameter
from resnetbk.optim import RiemannianAdam


@pytest.mark.parametrize("name", VARIANTS)
def test_every_parameter_gets_a_finite_nonzero_gradient(name: str,
                                                        gen: torch.Generator) -> None:
    model = make(name, dtype=torch.float32)
    model.loss(random_bytes(gen, 2, 4 * P)).backward()
    for n, p in model.named_parameters():
        assert p.grad is not None, n
        assert torch.isfinite(p.grad).all(), n
        assert p.grad.abs().sum() > 0, n


def _train(model: torch.nn.Module, x: torch.Tensor, steps: int, lr: float) -> list[float]:
    """Adam steps on one batch, with the trainer's split: RiemannianAdam for manifold
    parameters (it keeps the Lorentz pad on the hyperboloid), Adam for the rest."""
    manifold = [p for p in model.parameters() if isinstance(p, ManifoldParameter)]
    rest = [p for p in model.parameters() if not isinstance(p, ManifoldParameter)]
    opts: list[torch.optim.Optimizer] = [torch.optim.Adam(rest, lr=lr)]
    if manifold:
        opts.append(RiemannianAdam(manifold, lr=lr))
    losses = []
    for _ in range(steps):
        for o in opts:
            o.zero_grad()
        loss = model.loss(x)
        loss.backward()
        for o in opts:
            o.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("name", ["lorentz-bk", "euclidean-bk", "transformer"])
def test_overfits_one_batch(name: str, gen: torch.Generator) -> None:
    """Random bytes (8 bits of entropy each) are memorised to < 0.05 nats/byte."""
    model = make(name, dtype=torch.float32)
    x = random_bytes(gen, 2, 8 * P)
    losses = _train(model, x, 150, 1e-2)
    assert losses[0] > 5.0
    final = model.loss(x).item()
    assert final < 0.05, (losses[::25], final)


def test_pad_stays_on_the_hyperboloid_in_training(gen: torch.Generator) -> None:
    model = make("lorentz-bk", dtype=torch.float32)
    assert isinstance(model.pad, ManifoldParameter)
    assert not isinstance(make("euclidean-bk").pad, ManifoldParameter)
    _train(model, random_bytes(gen, 2, 4 * P), 20, 1e-2)
    pad = model.pad.detach().double()
    assert abs(float(-pad[0] ** 2 + pad[1:].square().sum()) + 1.0) < 1e-4
    assert float(pad[1:].norm()) > 0.1  # it moved and it is not the origin


@pytest.mark.parametrize("name", ["lorentz-bk", "transformer"])
def test_deterministic_with_seed(name: str, gen: torch.Generator) -> None:
    x = random_bytes(gen, 2, 4 * P)

    def loss_after_two_steps(seed: int) -> float:
        torch.manual_seed(seed)
        model = make(name, dtype=torch.float32)
        _train(model, x, 2, 1e-3)
        return model.loss(x).item()

    assert loss_after_two_steps(3) == loss_after_two_steps(3)
    assert loss_after_two_steps(3) != loss_after_two_steps(4)


@pytest.mark.parametrize("name", ["lorentz-bk", "transformer"])
def test_dropout_only_in_training_mode(name: str, gen: torch.Generator) -> None:
    model = make(name, dropout=0.5)
    x = random_bytes(gen, 2, 4 * P)
    assert not torch.equal(model(x), model(x))  # train mode: fresh masks
    model.eval()
    torch.testing.assert_close(model.step_logits(x), model(x), rtol=1e-10, atol=1e-10)
