"""Data that ships offline: trees built from Python sources (no hub, no download)."""

from resnetbk.data.trees import Tree, balanced_tree, python_source_tree, stdlib_tree

__all__ = ["Tree", "balanced_tree", "python_source_tree", "stdlib_tree"]
