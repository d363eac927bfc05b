"""Training: tree embeddings in hyperbolic and Euclidean space (more methods to come)."""

from resnetbk.train.embedding_metrics import distortion_metrics, reconstruction_metrics
from resnetbk.train.tree_embedding import (
    MANIFOLDS,
    EmbeddingConfig,
    EmbeddingResult,
    TreeEmbedding,
    embed_tree,
    evaluate,
)

__all__ = [
    "MANIFOLDS",
    "EmbeddingConfig",
    "EmbeddingResult",
    "TreeEmbedding",
    "distortion_metrics",
    "embed_tree",
    "evaluate",
    "reconstruction_metrics",
]
