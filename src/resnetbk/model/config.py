"""``ModelConfig``: every hyper-parameter of the byte language models, and the presets.

Fields have simple types only (str, int, float) so a config saves to TOML/YAML/JSON and every
field is overridable from the command line (``model.<field>=value``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = ["MODEL_PRESETS", "ModelConfig", "baseline_config"]

_CHOICES = {
    "arch": ("megabyte", "transformer"),
    "geometry": ("lorentz", "euclidean"),
    "mixer": ("bk", "attention"),
    "conv_method": ("auto", "fft", "direct"),
}

# Largest max_radius + max_step. Every point the global model forms lies within this distance
# of the origin; float32 coordinates there are ~e^r / 2, and exp_h caps its rapidity at ~44.
_MAX_REACH = 40.0


@dataclass
class ModelConfig:
    """Hyper-parameters of ``MegaByteLM`` (arch="megabyte") or ``ByteTransformerLM``.

    MegaByte fields: ``patch_size`` bytes per patch; ``byte_dim`` width of each byte's
    embedding in the patch embedding (``patch_size * byte_dim`` -> ``d_global``); the global
    model (``n_global_layers`` blocks of width ``d_global`` over patches, mixer ``bk`` or
    ``attention``, hidden states on the Lorentz hyperboloid of curvature ``-curvature`` or in
    Euclidean space); the local model (``n_local_layers`` Transformer blocks of width
    ``d_local`` over the bytes of a patch). Residual updates of the global model are bounded
    smoothly: each step to length ``max_step``, the hidden state to radius (distance from the
    origin, or Euclidean norm) ``max_radius`` (docs/MODEL.md). ``bk_channels`` (0:
    ``d_global // 2``), ``conv_modes`` and ``conv_method`` ("auto": direct convolution up to 64
    patches, FFT beyond; "direct" makes causality bit-exact at any length) configure
    ``BKMixer``. Transformer baseline fields: ``d_model``, ``n_layers``. ``n_heads`` applies
    to every attention layer, ``ff_mult`` to every MLP, ``dropout`` to every sublayer output.
    """

    arch: str = "megabyte"
    geometry: str = "lorentz"
    mixer: str = "bk"
    patch_size: int = 8
    byte_dim: int = 32
    d_global: int = 256
    n_global_layers: int = 4
    d_local: int = 128
    n_local_layers: int = 2
    n_heads: int = 4
    ff_mult: int = 4
    dropout: float = 0.0
    bk_channels: int = 0
    conv_modes: int = 4
    conv_method: str = "auto"
    curvature: float = 1.0
    max_step: float = 3.0
    max_radius: float = 8.0
    d_model: int = 256
    n_layers: int = 6

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field and its value."""
        for name, allowed in _CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"ModelConfig.{name} must be one of {allowed}, got {value!r}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "int" and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"ModelConfig.{f.name} must be an int, got {value!r}")
            if f.type == "int" and value < (0 if f.name == "bk_channels" else 1):
                raise ValueError(f"ModelConfig.{f.name} must be positive, got {value}")
            if f.type == "float" and (isinstance(value, bool)
                                      or not isinstance(value, (int, float))):
                raise ValueError(f"ModelConfig.{f.name} must be a number, got {value!r}")
        for name in ("curvature", "max_step", "max_radius"):
            if not getattr(self, name) > 0:
                raise ValueError(f"ModelConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"ModelConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if self.max_step + self.max_radius > _MAX_REACH:
            raise ValueError(
                f"ModelConfig.max_step + max_radius must be <= {_MAX_REACH} (the farthest the "
                f"hidden state may get from the origin; docs/MODEL.md), got "
                f"{self.max_step} + {self.max_radius}")
        for width in ("d_global", "d_local", "d_model"):
            w, h = getattr(self, width), self.n_heads
            if w % h or (w // h) % 2:
                raise ValueError(
                    f"ModelConfig.{width} ({w}) must be n_heads ({h}) times an even head size"
                )


MODEL_PRESETS: dict[str, ModelConfig] = {
    # 2-core CPU demo, contexts of 256-512 bytes (32-64 patches).
    "tiny": ModelConfig(byte_dim=16, d_global=128, n_global_layers=2, d_local=64,
                        n_local_layers=1, n_heads=4, ff_mult=2, conv_modes=4),
    # GPU presets: contexts of 8K bytes and more.
    "small": ModelConfig(byte_dim=64, d_global=512, n_global_layers=6, d_local=256,
                         n_local_layers=2, n_heads=8, ff_mult=4, conv_modes=8),
    "base": ModelConfig(byte_dim=128, d_global=1024, n_global_layers=12, d_local=384,
                        n_local_layers=3, n_heads=8, ff_mult=4, conv_modes=8),
}


def baseline_config(cfg: ModelConfig) -> ModelConfig:
    """A byte-level Transformer (arch="transformer") with about the parameter count of ``cfg``.

    Width ``d_global``; depth chosen from the per-layer count (attention 4 d^2, MLP 2 ff d^2)
    so that the counts match within 10% (checked against the built models in the tests).
    """
    import torch

    from resnetbk.debug import debug_checks
    from resnetbk.model import build_model  # the count comes from the built model

    # Shapes only, on the meta device: no memory, no initialisation work (and no debug-mode
    # value checks, which cannot read meta tensors).
    with torch.device("meta"), debug_checks(False):
        target = build_model(cfg).num_parameters()
    d = cfg.d_global
    per_layer = (4 + 2 * cfg.ff_mult) * d * d
    n_layers = max(1, round((target - 2 * 256 * d) / per_layer))
    return dataclasses.replace(cfg, arch="transformer", d_model=d, n_layers=n_layers)
