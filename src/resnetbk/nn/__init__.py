"""Hyperbolic layers. Parameters that live on a manifold are ``ManifoldParameter``s.

Poincaré ball (HNN++): ``PoincareLinear``, ``PoincareMLR``. Lorentz hyperboloid (fully
hyperbolic, HyboNet): ``LorentzLinear``. Both: ``HyperbolicEmbedding``. Each layer owns its
manifold object (``layer.manifold``), so a learnable curvature is a parameter of the layer.
Sequence mixers of the language models: ``BKMixer``, ``CausalSelfAttention`` and
``TransformerBlock`` (with ``KVCache``). 2:4 structured sparsity: ``SparseLorentzLinear``,
``prune_2_4`` (docs/SPARSITY.md). Weights as LNS codes: ``LNSLinear`` (docs/LNS.md).
"""

from resnetbk.nn.attention import CausalSelfAttention, KVCache, TransformerBlock
from resnetbk.nn.bk_mixer import BKMixer
from resnetbk.nn.embedding import HyperbolicEmbedding
from resnetbk.nn.lns_linear import LNSLinear, LNSWeight
from resnetbk.nn.lorentz import LorentzLinear
from resnetbk.nn.parameter import ManifoldParameter
from resnetbk.nn.poincare import PoincareLinear, PoincareMLR
from resnetbk.nn.sparse import SparseLorentzLinear, prune_2_4

__all__ = [
    "BKMixer",
    "CausalSelfAttention",
    "HyperbolicEmbedding",
    "KVCache",
    "LNSLinear",
    "LNSWeight",
    "LorentzLinear",
    "ManifoldParameter",
    "PoincareLinear",
    "PoincareMLR",
    "SparseLorentzLinear",
    "TransformerBlock",
    "prune_2_4",
]
