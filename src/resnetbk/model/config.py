"""``ModelConfig``: every hyper-parameter of the byte language models, and the presets.

Fields have simple types only (str, int, float, bool) so a config saves to TOML/YAML/JSON and
every field is overridable from the command line (``model.<field>=value``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = ["MODEL_PRESETS", "ModelConfig", "baseline_config"]

_CHOICES = {
    "arch": ("megabyte", "transformer"),
    "geometry": ("lorentz", "euclidean"),
    "mixer": ("bk", "attention"),
}


@dataclass
class ModelConfig:
    """Hyper-parameters of ``MegaByteLM`` (arch="megabyte") or ``ByteTransformerLM``.

    MegaByte fields: ``patch_size`` bytes per patch; ``byte_dim`` width of each byte's
    embedding in the patch embedding (``patch_size * byte_dim`` -> ``d_global``); the global
    model (``n_global_layers`` blocks of width ``d_global`` over patches, mixer ``bk`` or
    ``attention``, hidden states on the Lorentz hyperboloid of curvature ``-curvature`` or in
    Euclidean space); the local model (``n_local_layers`` Transformer blocks of width
    ``d_local`` over the bytes of a patch). Residual updates of the global model are bounded
    smoothly: each step to length ``max_step * tanh(|y| / max_step)`` and the hidden state to
    radius (distance from the origin, or Euclidean norm) ``max_radius * tanh(r / max_radius)``
    (docs/MODEL.md: float32 hyperboloid coordinates grow like e^r). ``bk_channels``
    (0: ``d_global // 2``) and ``conv_modes`` configure ``BKMixer``. Transformer baseline
    fields: ``d_model``, ``n_layers``. ``n_heads`` applies to every attention layer,
    ``ff_mult`` to every MLP.
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
    bk_channels: int = 0
    conv_modes: int = 4
    curvature: float = 1.0
    max_step: float = 4.0
    max_radius: float = 10.0
    d_model: int = 256
    n_layers: int = 6

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
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
        for name in ("curvature", "max_step", "max_radius"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"ModelConfig.{name} must be a number > 0, got {value!r}")
        if self.max_step + self.max_radius > 40:
            raise ValueError(
                f"ModelConfig.max_step + max_radius must be <= 40 (float32 hyperboloid "
                f"coordinates ~ e^r), got {self.max_step} + {self.max_radius}")
        for width, heads in (("d_global", "n_heads"), ("d_local", "n_heads"),
                             ("d_model", "n_heads")):
            w, h = getattr(self, width), getattr(self, heads)
            if w % h or (w // h) % 2:
                raise ValueError(
                    f"ModelConfig.{width} ({w}) must be n_heads ({h}) times an even head size"
                )


MODEL_PRESETS: dict[str, ModelConfig] = {
    # 2-core CPU demo: ~0.9 M parameters, contexts of 512 bytes (64 patches).
    "tiny": ModelConfig(byte_dim=16, d_global=128, n_global_layers=2, d_local=64,
                        n_local_layers=1, n_heads=4, ff_mult=2, conv_modes=4),
    # GPU presets: contexts of 8K-64K bytes.
    "small": ModelConfig(byte_dim=64, d_global=512, n_global_layers=6, d_local=256,
                         n_local_layers=2, n_heads=8, ff_mult=4, conv_modes=8),
    "base": ModelConfig(byte_dim=128, d_global=1024, n_global_layers=12, d_local=384,
                        n_local_layers=3, n_heads=8, ff_mult=4, conv_modes=8),
}


def baseline_config(cfg: ModelConfig) -> ModelConfig:
    """A byte-level Transformer (arch="transformer") with about the parameter count of ``cfg``.

    Width is kept at ``d_local`` rounded to the head layout, and depth chosen so the counts
    match within 10% (checked against the built models in the tests).
    """
    from resnetbk.model import build_model  # the count comes from the built models

    target = build_model(cfg).num_parameters()
    d = cfg.d_global
    per_layer = (4 + 2 * cfg.ff_mult) * d * d  # attention (4 d^2) + MLP (2 ff d^2)
    n_layers = max(1, round((target - 2 * 256 * d) / per_layer))
    return dataclasses.replace(cfg, arch="transformer", d_model=d, n_layers=n_layers)
