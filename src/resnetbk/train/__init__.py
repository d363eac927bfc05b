"""Training: the byte language model (``train_lm``, ``evaluate_bpb``, configs, checkpoints),
speculative backpropagation (``SpecProp``, one process or one stage per GPU) and tree
embeddings in hyperbolic and Euclidean space.

The language-model names are imported on first use (PEP 562), so that the tree-embedding
tools do not load the model and data packages.
"""

from __future__ import annotations

import importlib
from typing import Any

from resnetbk.train.embedding_metrics import distortion_metrics, reconstruction_metrics
from resnetbk.train.tree_embedding import (
    MANIFOLDS,
    EmbeddingConfig,
    EmbeddingResult,
    TreeEmbedding,
    embed_tree,
    evaluate,
)

_LAZY = {
    "CheckpointError": "resnetbk.train.checkpoint",
    "load_trained_model": "resnetbk.train.checkpoint",
    "ConfigError": "resnetbk.train.config",
    "RunConfig": "resnetbk.train.config",
    "TrainConfig": "resnetbk.train.config",
    "TRAIN_PRESETS": "resnetbk.train.config",
    "apply_overrides": "resnetbk.train.config",
    "load_config": "resnetbk.train.config",
    "run_preset": "resnetbk.train.config",
    "save_config": "resnetbk.train.config",
    "evaluate_bpb": "resnetbk.train.evaluate",
    "TrainingDiverged": "resnetbk.train.lm",
    "train_lm": "resnetbk.train.lm",
    "SpecProp": "resnetbk.train.specprop",
    "SpecPropConfig": "resnetbk.train.specprop",
    "split_lm": "resnetbk.train.specprop",
    "split_sequential": "resnetbk.train.specprop",
    "run_gpipe": "resnetbk.train.specprop_dist",
    "run_specprop": "resnetbk.train.specprop_dist",
}

__all__ = [
    "MANIFOLDS",
    "TRAIN_PRESETS",
    "CheckpointError",
    "ConfigError",
    "EmbeddingConfig",
    "EmbeddingResult",
    "RunConfig",
    "SpecProp",
    "SpecPropConfig",
    "TrainConfig",
    "TrainingDiverged",
    "TreeEmbedding",
    "apply_overrides",
    "distortion_metrics",
    "embed_tree",
    "evaluate",
    "evaluate_bpb",
    "load_config",
    "load_trained_model",
    "reconstruction_metrics",
    "run_gpipe",
    "run_preset",
    "run_specprop",
    "save_config",
    "split_lm",
    "split_sequential",
    "train_lm",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'resnetbk.train' has no attribute {name!r}")
