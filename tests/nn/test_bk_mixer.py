"""BKMixer: shapes, causality, step mode == forward, gradients, the |G| bound, bad input, and a
small learning task. Random inputs come from the ``gen`` fixture (fresh seed per run);
parameter initialisation from the global RNG, which tests/nn/conftest.py seeds from it."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

from resnetbk.bk.green import causal_green_reference
from resnetbk.nn import BKMixer
from resnetbk.nn.bk_mixer import BKMixerState

DTYPES = [torch.float32, torch.float64]


def _mixer(d_model: int, dtype: torch.dtype, **kwargs: object) -> BKMixer:
    return BKMixer(d_model, **kwargs).to(dtype)


def _randn(gen: torch.Generator, *shape: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype)


def _run_steps(mixer: BKMixer, x: torch.Tensor) -> torch.Tensor:
    state = mixer.init_state(x.shape[0], dtype=x.dtype)
    outs = []
    for t in range(x.shape[1]):
        out, state = mixer.step(x[:, t], state)
        outs.append(out)
    return torch.stack(outs, dim=1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 5, 70])
def test_shapes_and_dtypes(gen: torch.Generator, dtype: torch.dtype, n: int) -> None:
    mixer = _mixer(6, dtype)
    x = _randn(gen, 2, n, 6, dtype=dtype)
    y = mixer(x)
    assert y.shape == (2, n, 6) and y.dtype == dtype and bool(torch.isfinite(y).all())
    feats = mixer.green_features(x)
    assert feats.shape == (2, n, 2 * mixer.bk_channels) and feats.dtype == dtype
    out, state = mixer.step(x[:, 0], mixer.init_state(2))
    assert out.shape == (2, 6) and out.dtype == dtype
    assert isinstance(state, BKMixerState) and state.modes.shape == (2, 6, mixer.conv_modes)
    assert mixer.conv_kernel(n, dtype).shape == (6, n)


def test_defaults_init_and_repr() -> None:
    mixer = BKMixer(10, bias=False)
    assert mixer.bk_channels == 5 and mixer.conv_modes == 4
    assert BKMixer(1).bk_channels == 1
    # Im z starts at 1 (|G| <= 1), Re z inside (-2, 2); reset_parameters restores it
    torch.testing.assert_close(mixer.energy().imag, torch.ones(5))
    with torch.no_grad():
        mixer.energy_imag.fill_(-3.0)
    mixer.reset_parameters()
    torch.testing.assert_close(mixer.energy().imag, torch.ones(5))
    assert bool((mixer.energy().real.abs() < 2).all())
    assert all(layer.bias is None for layer in (mixer.potential, mixer.out_proj))
    text = repr(mixer)
    assert "d_model=10" in text and "bk_channels=5" in text and "bias=False" in text


@pytest.mark.parametrize("dtype", DTYPES)
def test_causal_bit_identical_with_direct_conv(gen: torch.Generator, dtype: torch.dtype) -> None:
    """Perturbing x after t leaves outputs up to t bit-identical: the chunked Green's scan
    computes positions <= t from positions <= t only, and conv1d likewise."""
    n = 40
    mixer = _mixer(6, dtype, conv_method="direct")
    x = _randn(gen, 2, n, 6, dtype=dtype)
    t = int(torch.randint(0, n - 1, (1,), generator=gen))
    x2 = x.clone()
    x2[:, t + 1 :] += _randn(gen, 2, n - t - 1, 6, dtype=dtype)
    with torch.no_grad():
        y, y2 = mixer(x), mixer(x2)
    assert torch.equal(y[:, : t + 1], y2[:, : t + 1])
    assert not torch.equal(y[:, t + 1 :], y2[:, t + 1 :])  # the perturbation does reach later t
    assert torch.equal(mixer.green_features(x)[:, : t + 1], mixer.green_features(x2)[:, : t + 1])


def test_causal_with_fft_conv(gen: torch.Generator) -> None:
    """With the FFT every output is a sum over all frequencies of the whole padded sequence, so
    its *rounding* depends on later inputs (not its value): equal to 1e-12 in float64, not
    bitwise. The Green's features stay bit-identical (the scan is exactly causal)."""
    n = 200
    mixer = _mixer(8, torch.float64, conv_method="fft")
    x = _randn(gen, 2, n, 8)
    t = int(torch.randint(0, n - 1, (1,), generator=gen))
    x2 = x.clone()
    x2[:, t + 1 :] += 10 * _randn(gen, 2, n - t - 1, 8)
    with torch.no_grad():
        y, y2 = mixer(x), mixer(x2)
    scale = float(y.abs().max())
    assert float((y[:, : t + 1] - y2[:, : t + 1]).abs().max()) <= 1e-12 * scale
    assert torch.equal(mixer.green_features(x)[:, : t + 1], mixer.green_features(x2)[:, : t + 1])


@pytest.mark.parametrize(
    ("dtype", "n", "tol"), [(torch.float64, 150, 1e-10), (torch.float32, 100, 1e-5)]
)
def test_step_matches_forward(gen: torch.Generator, dtype: torch.dtype, n: int, tol: float) -> None:
    """n > 64: the forward pass uses the FFT and several chunks of the Green's scan, the step the
    plain recursions (Green's continued fraction, diagonal SSM of the kernel modes)."""
    mixer = _mixer(8, dtype)
    x = _randn(gen, 3, n, 8, dtype=dtype)
    with torch.no_grad():
        torch.testing.assert_close(_run_steps(mixer, x), mixer(x), atol=tol, rtol=tol)


def test_kernel_is_the_damped_oscillation_sum() -> None:
    """h_d(t) = Re sum_j w_dj (1 - e^-rate_dj) exp(lambda_dj t), lambda = -rate + i freq, from
    the parameters; a shorter kernel is a prefix of a longer one (defined for any N)."""
    mixer = _mixer(3, torch.float64, conv_modes=2)
    with torch.no_grad():
        h = mixer.conv_kernel(50, torch.float64)
        rate = mixer.mode_log_rate.exp()
        lam = torch.complex(-rate, mixer.mode_freq)
        w = torch.complex(*mixer.mode_weight.unbind(-1)) * (1 - torch.exp(-rate))
        for t in (0, 1, 7, 49):
            want = (w * torch.exp(lam * t)).real.sum(dim=-1)
            torch.testing.assert_close(h[:, t], want, atol=1e-14, rtol=1e-12)
        torch.testing.assert_close(mixer.conv_kernel(20, torch.float64), h[:, :20])


@pytest.mark.parametrize("bias", [True, False])
def test_every_parameter_gets_a_gradient(gen: torch.Generator, bias: bool) -> None:
    mixer = _mixer(6, torch.float64, bias=bias)
    x = _randn(gen, 2, 12, 6)
    weights = _randn(gen, 2, 12, 6)
    (mixer(x) * weights).sum().backward()
    for name, p in mixer.named_parameters():
        assert p.grad is not None and bool(p.grad.abs().sum() > 0), name


@pytest.mark.parametrize("conv_method", ["direct", "fft"])
def test_gradcheck(gen: torch.Generator, conv_method: str) -> None:
    """Gradients w.r.t. the input and every parameter (B=1, N=6, D=3, float64)."""
    mixer = _mixer(3, torch.float64, conv_method=conv_method)
    names = [name for name, _ in mixer.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in mixer.parameters())
    x = _randn(gen, 1, 6, 3).requires_grad_(True)

    def fn(x: torch.Tensor, *ps: torch.Tensor) -> torch.Tensor:
        return functional_call(mixer, dict(zip(names, ps, strict=True)), (x,))

    assert torch.autograd.gradcheck(fn, (x, *params))


@pytest.mark.parametrize("dtype", DTYPES)
def test_green_features_bounded_and_exact(gen: torch.Generator, dtype: torch.dtype) -> None:
    """Features are Im z * G (checked against the float64 reference loop) and each (Re, Im)
    pair has modulus <= 1, also for huge potentials and Im z pushed down to its floor."""
    mixer = _mixer(6, dtype, bk_channels=4)
    with torch.no_grad():
        mixer.energy_imag[:2] = -200.0  # softplus ~ 0 (float64) or exactly 0 (float32)
    z = mixer.energy(torch.float64).detach()
    assert bool((z.imag >= mixer.min_im_energy).all())
    eps = torch.finfo(dtype).eps
    for scale in (1.0, 100.0):
        x = scale * _randn(gen, 2, 30, 6, dtype=dtype)
        with torch.no_grad():
            feats = mixer.green_features(x)
            a, k = mixer.potential(x).double().chunk(2, dim=-1)
            g = causal_green_reference(a.mT, nn.functional.softplus(k).mT, z[:, None]).mT
        c = mixer.bk_channels
        modulus = torch.hypot(feats[..., :c], feats[..., c:])
        assert float(modulus.max()) <= 1 + 8 * eps
        want = torch.cat([(g * z.imag).real, (g * z.imag).imag], dim=-1)
        # float32: the scan's documented error, |G32 - G64| Im z <= 2e-3 (docs/BK.md)
        atol = 1e-10 if dtype == torch.float64 else 2e-3
        torch.testing.assert_close(feats.double(), want, atol=atol, rtol=0)


def test_bad_arguments_raise() -> None:
    for kwargs in (
        {"d_model": 0},
        {"d_model": 4, "bk_channels": 0},
        {"d_model": 4, "conv_modes": 0},
        {"d_model": 4, "conv_modes": 2.0},
        {"d_model": 4, "min_im_energy": 0.0},
        {"d_model": 4, "conv_method": "circular"},
    ):
        with pytest.raises(ValueError):
            BKMixer(**kwargs)  # type: ignore[arg-type]


def test_bad_input_raises(gen: torch.Generator) -> None:
    mixer = BKMixer(4)
    bad = [
        _randn(gen, 10, 4, dtype=torch.float32),  # no batch axis
        _randn(gen, 2, 10, 5, dtype=torch.float32),  # wrong d_model
        _randn(gen, 2, 0, 4, dtype=torch.float32),  # empty sequence
        torch.ones(2, 10, 4, dtype=torch.int64),  # not floating
    ]
    for x in bad:
        with pytest.raises(ValueError):
            mixer(x)
        with pytest.raises(ValueError):
            mixer.green_features(x)
    state = mixer.init_state(2)
    with pytest.raises(ValueError, match="d_model"):
        mixer.step(_randn(gen, 2, 1, 4, dtype=torch.float32), state)
    with pytest.raises(ValueError, match="init_state"):
        mixer.step(_randn(gen, 3, 4, dtype=torch.float32), state)  # batch 3 against state of 2
    with pytest.raises(ValueError, match="init_state"):
        mixer.step(_randn(gen, 2, 4, dtype=torch.float32), mixer.init_state(2, dtype=torch.float64))


def test_half_precision_computes_the_scan_in_float32(gen: torch.Generator) -> None:
    """CPU autocast (bf16) stands in for CUDA autocast: the Linear layers run in bf16, the
    Green's scan and the convolution in float32. A bf16 module without autocast works too."""
    mixer = BKMixer(8)
    x = _randn(gen, 2, 40, 8, dtype=torch.float32)
    ref = mixer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert mixer.green_features(x).dtype == torch.float32
        y = mixer(x)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), ref, atol=5e-2, rtol=5e-2)
    y.float().sum().backward()
    assert all(p.grad is not None for p in mixer.parameters())
    half = BKMixer(8).to(torch.bfloat16)
    out = half(x.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16 and bool(torch.isfinite(out).all())
    step_out, state = half.step(x[:, 0].to(torch.bfloat16), half.init_state(2))
    assert step_out.dtype == torch.bfloat16 and state.green.dtype == torch.complex64


def test_learns_to_copy_a_past_token(gen: torch.Generator) -> None:
    """Predict the token 3 steps back from i.i.d. random tokens: the current input carries no
    information about it (chance is 1/8), so the task needs the mixer's causal mixing.
    Embedding + residual mixer + linear readout, 150 Adam steps (about 1.5 s on one core)."""
    vocab, d_model, lag, n = 8, 16, 3, 24
    emb, mixer, head = nn.Embedding(vocab, d_model), BKMixer(d_model), nn.Linear(d_model, vocab)
    params = [*emb.parameters(), *mixer.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=1e-2)

    def logits(tokens: torch.Tensor) -> torch.Tensor:
        x = emb(tokens)
        return head(x + mixer(x))[:, lag:]

    for _ in range(150):
        tokens = torch.randint(0, vocab, (32, n), generator=gen)
        loss = nn.functional.cross_entropy(
            logits(tokens).reshape(-1, vocab), tokens[:, :-lag].reshape(-1)
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    tokens = torch.randint(0, vocab, (256, n), generator=gen)
    with torch.no_grad():
        accuracy = float((logits(tokens).argmax(-1) == tokens[:, :-lag]).double().mean())
    assert accuracy > 0.9, accuracy
