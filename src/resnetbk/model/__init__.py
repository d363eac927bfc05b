"""Byte language models: ResNet-BK (MegaByte patches, BK global model on the hyperboloid) and
the same-size Transformer baseline, behind one interface (``ByteLM``); docs/MODEL.md."""

from resnetbk.model.base import ByteLM
from resnetbk.model.config import MODEL_PRESETS, ModelConfig, baseline_config
from resnetbk.model.megabyte import MegaByteLM
from resnetbk.model.transformer import ByteTransformerLM

__all__ = [
    "MODEL_PRESETS",
    "ByteLM",
    "ByteTransformerLM",
    "MegaByteLM",
    "ModelConfig",
    "baseline_config",
    "build_model",
]


def build_model(cfg: ModelConfig) -> ByteLM:
    """The model ``cfg`` describes (validated first)."""
    cfg.validate()
    return MegaByteLM(cfg) if cfg.arch == "megabyte" else ByteTransformerLM(cfg)
