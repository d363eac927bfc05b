"""Tree builders: invariants, distances against BFS, closure, the stdlib tree, errors."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch

from resnetbk.data import Tree, balanced_tree, python_source_tree, stdlib_tree

STDLIB = Path(sysconfig.get_paths()["stdlib"])


def random_tree(n: int, gen: torch.Generator) -> Tree:
    """A random recursive tree: node i hangs under a uniformly drawn earlier node."""
    parent = [-1] + [int(torch.randint(i, (1,), generator=gen)) for i in range(1, n)]
    return Tree(names=tuple(map(str, range(n))), parent=np.asarray(parent),
                kinds=("root",) + ("node",) * (n - 1))


def check_invariants(tree: Tree) -> np.ndarray:
    n = tree.n_nodes
    parent = tree.parent
    assert parent.shape == (n,)
    assert np.flatnonzero(parent < 0).tolist() == [0], "exactly one root, at index 0"
    assert np.all(parent[1:] < np.arange(1, n)), "parents precede children (hence acyclic)"
    assert len(tree.names) == len(set(tree.names)) == n, "names are unique"
    d = tree.distances()
    assert d.shape == (n, n)
    assert np.array_equal(d, d.T), "distances are symmetric"
    assert np.all(np.diag(d) == 0)
    assert np.all(d[~np.eye(n, dtype=bool)] > 0)
    edges = tree.edges()
    assert edges.shape == (n - 1, 2)
    assert np.all(d[edges[:, 0], edges[:, 1]] == 1), "d(parent, child) = 1"
    assert np.array_equal(d[0], tree.depth)
    return d


@pytest.mark.parametrize(("b", "h"), [(1, 0), (1, 4), (2, 3), (3, 4), (5, 2)])
def test_balanced_tree(b: int, h: int) -> None:
    tree = balanced_tree(b, h)
    expected = h + 1 if b == 1 else (b ** (h + 1) - 1) // (b - 1)
    assert tree.n_nodes == expected and tree.n_edges == expected - 1
    if tree.n_nodes == 1:
        assert tree.distances().tolist() == [[0]]
        return
    d = check_invariants(tree)
    assert tree.height == h
    assert int(d.max()) == (2 * h if b > 1 else h)
    assert all(len(tree.children[i]) in (0, b) for i in range(tree.n_nodes))


def test_distances_match_bfs_on_random_trees(gen: torch.Generator) -> None:
    for n in (2, 3, 17, 150):
        tree = random_tree(n, gen)
        d = check_invariants(tree)
        for s in range(n):
            assert np.array_equal(d[s], tree.bfs_distances(s))


def test_tree_metric_is_depth_formula(gen: torch.Generator) -> None:
    # d(u, v) = depth(u) + depth(v) - 2 depth(lca(u, v)), lca found by walking up.
    tree = random_tree(80, gen)
    d = tree.distances()

    def ancestors(u: int) -> list[int]:
        out = [u]
        while tree.parent[out[-1]] >= 0:
            out.append(int(tree.parent[out[-1]]))
        return out

    for _ in range(200):
        u, v = (int(t) for t in torch.randint(80, (2,), generator=gen))
        au = ancestors(u)
        lca = next(a for a in ancestors(v) if a in au)
        assert d[u, v] == tree.depth[u] + tree.depth[v] - 2 * tree.depth[lca]


def test_closure_edges() -> None:
    tree = balanced_tree(2, 2)  # 0 -> 1, 2; 1 -> 3, 4; 2 -> 5, 6
    pairs = {tuple(p) for p in tree.closure_edges().tolist()}
    assert pairs == {(0, 1), (0, 2), (1, 3), (0, 3), (1, 4), (0, 4), (2, 5), (0, 5), (2, 6),
                     (0, 6)}
    big = balanced_tree(3, 4)
    closure = big.closure_edges()
    assert len(closure) == int(big.depth.sum()) == big.summary()["closure_edges"]
    d = big.distances()
    # every (ancestor, descendant) pair is at distance depth(desc) - depth(anc) > 0
    assert np.all(d[closure[:, 0], closure[:, 1]] ==
                  big.depth[closure[:, 1]] - big.depth[closure[:, 0]])


def test_neighbors() -> None:
    tree = balanced_tree(2, 2)
    assert tree.neighbors[0].tolist() == [1, 2]
    assert tree.neighbors[1].tolist() == [0, 3, 4]
    assert tree.neighbors[6].tolist() == [2]
    assert tree.max_degree == 3


@pytest.mark.parametrize(
    ("parent", "match"),
    [
        ([-1, 0, -1], "exactly one root"),
        ([0, -1, 0], "exactly one root"),
        ([-1, 2, 0], "precede"),
        ([-1, 1], "precede"),
    ],
)
def test_tree_rejects_invalid_parents(parent: list[int], match: str) -> None:
    n = len(parent)
    with pytest.raises(ValueError, match=match):
        Tree(names=tuple(map(str, range(n))), parent=np.asarray(parent), kinds=("node",) * n)


def test_tree_rejects_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="shape"):
        Tree(names=("a", "b"), parent=np.asarray([-1, 0, 0]), kinds=("root", "node"))
    with pytest.raises(ValueError, match="kinds"):
        Tree(names=("a", "b"), parent=np.asarray([-1, 0]), kinds=("root",))


def test_parent_array_is_read_only() -> None:
    tree = balanced_tree(2, 2)
    with pytest.raises(ValueError):
        tree.parent[1] = 0


def test_bfs_rejects_bad_source() -> None:
    with pytest.raises(ValueError, match="source"):
        balanced_tree(2, 1).bfs_distances(3)


def test_stdlib_tree() -> None:
    tree = stdlib_tree()
    check_invariants(tree)
    assert tree.names[0] == "<stdlib>" and tree.kinds[0] == "root"
    assert 1000 <= tree.n_nodes <= 3000, tree.n_nodes
    index = {name: i for i, name in enumerate(tree.names)}
    for name, kind, par in [
        ("json", "package", "<stdlib>"),
        ("json.decoder", "module", "json"),
        ("json.decoder.JSONDecoder", "class", "json.decoder"),
        ("email.mime", "package", "email"),
        ("email.mime.text", "module", "email.mime"),
    ]:
        assert tree.kinds[index[name]] == kind
        assert tree.names[tree.parent[index[name]]] == par
    assert not any(n.split(".")[0] in ("test", "site-packages") for n in tree.names)
    assert not any(k == "class" and n.rsplit(".", 1)[1].startswith("_")
                   for n, k in zip(tree.names, tree.kinds, strict=True))


def test_stdlib_tree_is_deterministic() -> None:
    a = stdlib_tree(members="none")
    b = stdlib_tree(members="none")
    assert a.names == b.names and np.array_equal(a.parent, b.parent)
    assert set(a.kinds) == {"root", "package", "module"}
    c = python_source_tree(STDLIB / "email", members="all", max_members=5)
    d = python_source_tree(STDLIB / "email", members="all", max_members=5)
    assert c.names == d.names and np.array_equal(c.parent, d.parent) and c.kinds == d.kinds
    assert {"class", "function"} <= set(c.kinds)


def test_python_source_tree_on_a_made_up_folder(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "tests").mkdir()
    (pkg / "data").mkdir()  # no __init__.py: not a package
    (pkg / "__init__.py").write_text("class Top: ...\n")
    (pkg / "a.py").write_text("class A: ...\nclass _Hidden: ...\ndef f(): ...\nclass B: ...\n"
                              "class C: ...\n")
    (pkg / "broken.py").write_text("def (:\n")
    (pkg / "not-a-module.py").write_text("x = 1\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "z.py").write_text("async def g(): ...\n")
    (pkg / "tests" / "__init__.py").write_text("")
    (pkg / "tests" / "test_a.py").write_text("")
    (pkg / "data" / "d.py").write_text("")
    (tmp_path / "top.py").write_text("")
    (tmp_path / "README.txt").write_text("")

    tree = python_source_tree(tmp_path, members="classes", max_members=2, root_name="R")
    assert tree.names == ("R", "pkg", "pkg.Top", "pkg.a", "pkg.a.A", "pkg.a.B", "pkg.broken",
                          "pkg.sub", "pkg.sub.z", "top")
    assert tree.kinds == ("root", "package", "class", "module", "class", "class", "module",
                          "package", "module", "module")
    check_invariants(tree)

    full = python_source_tree(tmp_path, members="all", max_members=10, include_tests=True)
    assert "pkg.a.f" in full.names and "pkg.sub.z.g" in full.names
    assert "pkg.tests.test_a" in full.names and "pkg.data" not in full.names
    assert python_source_tree(tmp_path, members="none").n_nodes == 7


def test_python_source_tree_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a folder"):
        python_source_tree(tmp_path / "missing")
    with pytest.raises(ValueError, match="no Python module"):
        python_source_tree(tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "nopkg").mkdir()
    (tmp_path / "nopkg" / "x.py").write_text("")
    with pytest.raises(ValueError, match="no Python module"):
        python_source_tree(tmp_path)
    with pytest.raises(ValueError, match="members"):
        python_source_tree(tmp_path, members="methods")  # type: ignore[arg-type]


@pytest.mark.parametrize(("b", "h"), [(0, 2), (2, -1)])
def test_balanced_tree_errors(b: int, h: int) -> None:
    with pytest.raises(ValueError, match="branching"):
        balanced_tree(b, h)
