"""Data that ships offline: byte corpora and trees built from Python sources (no hub, no
download)."""

from resnetbk.data.corpus import (
    Corpus,
    DataError,
    iter_windows,
    load_corpus,
    sample_windows,
)
from resnetbk.data.trees import Tree, balanced_tree, python_source_tree, stdlib_tree

__all__ = [
    "Corpus",
    "DataError",
    "Tree",
    "balanced_tree",
    "iter_windows",
    "load_corpus",
    "python_source_tree",
    "sample_windows",
    "stdlib_tree",
]
