"""``BKMixer``: the causal sequence mixer of the ResNet-BK language model (SPEC 3.4, 3.5).

For x of shape (B, N, D) (batch, sequence, ``d_model``):

    a_t = W_a x_t + b_a,   k_t = softplus(W_k x_t + b_k) >= 0          (C BK channels)
    z_c = e_c + i (softplus(g_c) + min_im_energy)                      (Im z_c > 0)
    G_t = causal_green(a, k, z)_t        (Green's function of the leading block, complex)
    gate_t = sigmoid(W_g [Re(Im z G_t), Im(Im z G_t)] + b_g)            (D)
    v_t = W_v x_t + b_v,   y_t = sum_{s<=t} h(t - s) v_s + skip * v_t   (per feature d)
    out_t = W_o (gate_t * y_t) + b_o

with the long-convolution kernel a sum of M damped oscillations per feature (S4D-style)

    h_d(t) = Re sum_j w_dj exp(lambda_dj t),   lambda_dj = -rate_dj + i freq_dj, rate_dj > 0.

Every term reads positions <= t only, so the mixer is causal. Because the kernel is exactly a
sum of exponentials, the convolution equals the diagonal complex recurrence
``s_j <- exp(lambda_j) s_j + v_t, y_t = Re sum_j w_j s_j`` (the S4D duality); together with the
Green's recursion ``G_t = 1 / ((a_t - z) - k_{t-1} G_{t-1})`` this gives an O(1)-per-token
:meth:`BKMixer.step` for generation that reproduces :meth:`BKMixer.forward`.

Dtypes: the module's parameters set the dtype (``.double()`` for float64 work). The Green's
scan, the kernel and the convolution run in float32 for half-precision inputs (``causal_green``
accepts float32/float64 only, and the scan's float32 error is already the problem's
conditioning, see docs/BK.md); under CUDA autocast (bf16) the Linear layers run in bf16 and
``a``, ``k`` are cast to float32 before the scan.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from resnetbk.bk.green import causal_green
from resnetbk.bk.toeplitz import causal_conv
from resnetbk.debug import check_floating
from resnetbk.geometry.numerics import compute_dtype
from resnetbk.nn._checks import check_size

__all__ = ["BKMixer", "BKMixerState"]

_COMPLEX = {torch.float32: torch.complex64, torch.float64: torch.complex128}

# Initial decay rates of the kernel modes are log-uniform in this range: memories from about
# one step (rate 1) to about a thousand steps (rate 1e-3), as Mamba/S4D spread their time scales.
_RATE_INIT = (1e-3, 1.0)


class BKMixerState(NamedTuple):
    """What :meth:`BKMixer.step` carries from token t-1 to token t (all O(1) in t).

    green: (B, C) complex, G_{t-1} of each BK channel (0 before the first token).
    coupling: (B, C) real, k_{t-1} (0 before the first token, so that r_0 = a_0 - z).
    modes: (B, D, M) complex, s_j = sum_{s<=t-1} exp(lambda_j (t-1-s)) v_s per feature and mode.
    """

    green: torch.Tensor
    coupling: torch.Tensor
    modes: torch.Tensor


def _inverse_softplus(y: float) -> float:
    """x with softplus(x) = y > 0: log(expm1(y)), written to stay accurate for small y."""
    return y + math.log(-math.expm1(-y))


class BKMixer(nn.Module):
    r"""Causal BK mixer: BK-Core Green's features gating an S4D-style causal long convolution.

    See the module docstring for the equations. Input (B, N, ``d_model``), output the same.

    Design choices (why):

    * The Green's features are ``Im z * G``: ``|G_t| <= 1/Im z`` is a theorem for k >= 0 and
      Im z > 0, so ``|Im z G_t| <= 1`` exactly, for any input and any learnt z. This bounds the
      gate's input without statistics over the batch or the sequence (a running or global
      normaliser would break causality or the equivalence of ``step`` and ``forward``).
    * ``Im z = softplus(g) + min_im_energy``: positive by construction, and the floor keeps it
      away from 0 even where softplus underflows (float32, g < -100), so ``|G| <= 1 /
      min_im_energy`` and the float32 scan error, which grows like ``1/Im z^2`` (docs/BK.md,
      "Accuracy"), stays bounded. It starts at Im z = 1 (|G| <= 1) and Re z uniform in
      (-2, 2), across the spectrum of H at initialisation (a = O(1), k around 0.7).
    * The kernel is a sum of M damped oscillations per feature (S4D / Hyena family): defined
      for any N at O(D M N) cost, and it has an exact O(1)-per-token recurrent form for
      generation. Mode j is scaled by ``1 - exp(-rate_j)``, its l1 norm's inverse, so its gain
      is at most ``|w_j|`` whatever the decay: slow modes are averages, not unbounded sums.
    * ``a`` and ``k`` come from one fused Linear(D -> 2C) (same maps as two Linears, one GEMM).
    * No normalisation inside: the block around the mixer does that.

    Args:
        d_model: feature size D of input and output.
        bk_channels: number C of BK channels (Hamiltonians); default ``max(1, d_model // 2)``
            so that the gate reads 2C = D features.
        conv_modes: damped oscillations M per feature in the convolution kernel.
        bias: biases in the Linear layers.
        min_im_energy: floor added to Im z, in (0, 1) (see above).
        conv_method: ``causal_conv`` method: "auto" (direct conv1d for N <= 64, else FFT),
            "fft" or "direct" (exactly causal in floating point, O(N^2)).

    Shapes: ``forward`` (B, N, D) -> (B, N, D); ``step`` (B, D) -> (B, D).
    """

    def __init__(
        self,
        d_model: int,
        bk_channels: int | None = None,
        conv_modes: int = 4,
        bias: bool = True,
        *,
        min_im_energy: float = 1e-2,
        conv_method: Literal["auto", "fft", "direct"] = "auto",
    ) -> None:
        super().__init__()
        check_size("BKMixer", "d_model", d_model)
        bk_channels = max(1, d_model // 2) if bk_channels is None else bk_channels
        check_size("BKMixer", "bk_channels", bk_channels)
        check_size("BKMixer", "conv_modes", conv_modes)
        if (
            isinstance(min_im_energy, bool)
            or not isinstance(min_im_energy, (int, float))
            or not (0 < min_im_energy < 1)
        ):
            raise ValueError(
                f"BKMixer: min_im_energy must be a float in (0, 1) (a floor under the initial "
                f"Im z = 1), got {min_im_energy!r}"
            )
        if conv_method not in ("auto", "fft", "direct"):
            raise ValueError(
                f"BKMixer: conv_method must be 'auto', 'fft' or 'direct', got {conv_method!r}"
            )
        self.d_model = d_model
        self.bk_channels = bk_channels
        self.conv_modes = conv_modes
        self.min_im_energy = float(min_im_energy)
        self.conv_method = conv_method
        self.potential = nn.Linear(d_model, 2 * bk_channels, bias=bias)  # -> (a, k before softplus)
        self.gate_proj = nn.Linear(2 * bk_channels, d_model, bias=bias)
        self.value_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        self.energy_real = nn.Parameter(torch.empty(bk_channels))
        self.energy_imag = nn.Parameter(torch.empty(bk_channels))  # Im z before softplus + floor
        self.mode_log_rate = nn.Parameter(torch.empty(d_model, conv_modes))
        self.mode_freq = nn.Parameter(torch.empty(d_model, conv_modes))
        self.mode_weight = nn.Parameter(torch.empty(d_model, conv_modes, 2))  # (Re w, Im w)
        self.skip = nn.Parameter(torch.empty(d_model))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Linear layers: PyTorch's default. Energies: Re z ~ U(-2, 2), Im z = 1. Modes: decay
        rates log-uniform in [1e-3, 1], frequencies U(0, pi), weights N(0, 1/(2M)) per real
        component (so the M modes sum to O(1)). Skip: 1."""
        for layer in (self.potential, self.gate_proj, self.value_proj, self.out_proj):
            layer.reset_parameters()
        with torch.no_grad():
            self.energy_real.uniform_(-2.0, 2.0)
            self.energy_imag.fill_(_inverse_softplus(1.0 - self.min_im_energy))
            lo, hi = (math.log(r) for r in _RATE_INIT)
            self.mode_log_rate.uniform_(lo, hi)
            self.mode_freq.uniform_(0.0, math.pi)
            self.mode_weight.normal_(0.0, (2.0 * self.conv_modes) ** -0.5)
            self.skip.fill_(1.0)

    # ------------------------------------------------------------------------- pieces

    def energy(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The complex energies z (C,), Im z >= ``min_im_energy``, in the complex dtype matching
        ``dtype`` (float32 or float64; default: the compute dtype of the parameters)."""
        dtype = compute_dtype(self.energy_real.dtype) if dtype is None else dtype
        im = F.softplus(self.energy_imag.to(dtype)) + self.min_im_energy
        return torch.complex(self.energy_real.to(dtype), im)

    def _modes(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(lambda, w) of the kernel, each (D, M) complex in the dtype matching ``dtype``; w
        includes the gain normalisation 1 - exp(-rate) (computed by expm1: exact for tiny
        rates, where 1 - exp(-rate) would cancel)."""
        rate = self.mode_log_rate.to(dtype).exp()
        lam = torch.complex(-rate, self.mode_freq.to(dtype))
        w = torch.view_as_complex(self.mode_weight.to(dtype).contiguous())
        return lam, w * (-torch.expm1(-rate))

    def conv_kernel(self, length: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The causal kernel h (D, length), ``h_d(t) = Re sum_j w_dj exp(lambda_dj t)``.

        Built from ``exp(lambda t)`` directly (not by repeated products), O(D M length) time
        and memory, independent of the batch.
        """
        check_size("BKMixer.conv_kernel", "length", length)
        lam, w = self._modes(dtype)
        t = torch.arange(length, device=lam.device, dtype=dtype)
        return (w[..., None] * torch.exp(lam[..., None] * t)).real.sum(dim=-2)

    def _potentials(self, x: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(a, k) (..., C) of the Hamiltonian, cast to the scan dtype *before* softplus (under
        autocast the Linear runs in bf16; the scan and k must be float32)."""
        a, k = self.potential(x).to(dtype).chunk(2, dim=-1)
        return a, F.softplus(k)

    @staticmethod
    def _features(g: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """[Re, Im] of ``Im z * G`` along the last axis: (..., C) complex -> (..., 2C) real, each
        pair of modulus <= 1 (|G| <= 1/Im z)."""
        s = g * z.imag
        return torch.cat([s.real, s.imag], dim=-1)

    def _green_features(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        a, k = self._potentials(x, dtype)  # (B, N, C)
        z = self.energy(dtype)
        # k >= 0 and Im z > 0 by construction: no value checks (each would sync a GPU)
        g = causal_green(a.transpose(1, 2), k.transpose(1, 2), z[:, None],
                         check_values=False)  # (B, C, N)
        return self._features(g.transpose(1, 2), z)

    def _check_input(self, x: torch.Tensor, ndim: int, layout: str) -> None:
        check_floating("x", x)
        if x.dim() != ndim or x.shape[-1] != self.d_model or x.numel() == 0:
            raise ValueError(
                f"BKMixer: x must be a non-empty {layout} tensor with d_model = "
                f"{self.d_model}, got x{tuple(x.shape)}"
            )

    # ------------------------------------------------------------------------- full sequence

    def green_features(self, x: torch.Tensor) -> torch.Tensor:
        """The gate's input features (B, N, 2C): ``[Re, Im]`` of ``Im z_c * G_t,c``.

        Each (Re, Im) pair has modulus <= 1 (the bound ``|G| <= 1/Im z``). Causal.
        """
        self._check_input(x, 3, "(batch, sequence, d_model)")
        return self._green_features(x, compute_dtype(x.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mix x (B, N, D) causally along N; returns (B, N, D) in the dtype of x (the Linear
        layers' dtype under autocast)."""
        self._check_input(x, 3, "(batch, sequence, d_model)")
        dtype = compute_dtype(x.dtype)
        gate = torch.sigmoid(self.gate_proj(self._green_features(x, dtype).to(x.dtype)))
        v = self.value_proj(x)  # (B, N, D)
        h = self.conv_kernel(x.shape[1], dtype)  # (D, N)
        y = causal_conv(h, v.transpose(1, 2), method=self.conv_method).transpose(1, 2)
        y = y + self.skip.to(dtype) * v
        return self.out_proj((gate * y).to(x.dtype))

    # ------------------------------------------------------------------------- one step

    def init_state(
        self,
        batch: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> BKMixerState:
        """The state before the first token, for inputs of ``dtype`` (default: the parameters'
        device and dtype). Half dtypes keep a float32 state (the compute dtype)."""
        check_size("BKMixer.init_state", "batch", batch)
        ref = self.value_proj.weight
        device = ref.device if device is None else device
        real = compute_dtype(ref.dtype if dtype is None else dtype)
        if real not in _COMPLEX:
            raise ValueError(f"BKMixer.init_state: dtype must be floating, got {dtype}")
        cplx = _COMPLEX[real]
        c, d, m = self.bk_channels, self.d_model, self.conv_modes
        return BKMixerState(
            green=torch.zeros(batch, c, dtype=cplx, device=device),
            coupling=torch.zeros(batch, c, dtype=real, device=device),
            modes=torch.zeros(batch, d, m, dtype=cplx, device=device),
        )

    def _check_state(self, state: BKMixerState, batch: int, dtype: torch.dtype) -> None:
        c, d, m = self.bk_channels, self.d_model, self.conv_modes
        want = (
            ("green", (batch, c), _COMPLEX[dtype]),
            ("coupling", (batch, c), dtype),
            ("modes", (batch, d, m), _COMPLEX[dtype]),
        )
        for name, shape, dt in want:
            got = getattr(state, name)
            if tuple(got.shape) != shape or got.dtype != dt:
                raise ValueError(
                    f"BKMixer.step: state.{name} must be {dt} of shape {shape} for x_t of batch "
                    f"{batch}, got {got.dtype} {tuple(got.shape)} (make it with init_state)"
                )

    def step(self, x_t: torch.Tensor, state: BKMixerState) -> tuple[torch.Tensor, BKMixerState]:
        """One token: x_t (B, D) and the state after t-1 -> (out_t (B, D), state after t).

        Feeding x_0, x_1, ... one at a time from ``init_state`` gives the rows of
        ``forward(x)`` (up to rounding: the forward pass uses a chunked scan and an FFT or
        conv1d, the step the plain recursions). O(C + D M) work and memory per token.
        """
        self._check_input(x_t, 2, "(batch, d_model)")
        dtype = compute_dtype(x_t.dtype)
        self._check_state(state, x_t.shape[0], dtype)
        a, k = self._potentials(x_t, dtype)  # (B, C)
        z = self.energy(dtype)
        # r_t = (a_t - z) - k_{t-1} G_{t-1}, in the order causal_green's reference uses
        g = torch.reciprocal((a - z) - state.coupling * state.green)
        gate = torch.sigmoid(self.gate_proj(self._features(g, z).to(x_t.dtype)))
        v = self.value_proj(x_t)  # (B, D)
        lam, w = self._modes(dtype)
        modes = torch.exp(lam) * state.modes + v.to(dtype)[..., None]
        y = (w * modes).real.sum(dim=-1) + self.skip.to(dtype) * v
        out = self.out_proj((gate * y).to(x_t.dtype))
        return out, BKMixerState(green=g, coupling=k, modes=modes)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, bk_channels={self.bk_channels}, "
            f"conv_modes={self.conv_modes}, bias={self.potential.bias is not None}, "
            f"min_im_energy={self.min_im_energy:g}, conv_method={self.conv_method!r}"
        )
