"""Distortion, mean rank and MAP on hand-made examples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from resnetbk.data import balanced_tree
from resnetbk.train import distortion_metrics, reconstruction_metrics


def test_isometry_up_to_scale_has_no_distortion() -> None:
    tree = balanced_tree(3, 3)
    d = tree.distances()
    m = distortion_metrics(3.0 * d, d)
    assert m["avg_distortion"] == pytest.approx(0.0, abs=1e-12)
    assert m["worst_distortion"] == pytest.approx(1.0)
    assert m["best_scale"] == pytest.approx(3.0)
    assert m["pairs"] == tree.n_nodes * (tree.n_nodes - 1) // 2


def test_distortion_by_hand() -> None:
    # Path 0 - 1 - 2: graph distances (1, 2, 1) for pairs (01, 02, 12).
    dg = np.array([[0, 1, 2], [1, 0, 1], [2, 1, 0]])
    # Ratios r = (1, 1, 3) -> worst 3. mean |r/s - 1| is (0 + 0 + 2)/3 at s = 1 but
    # (2/3 + 2/3 + 0)/3 = 4/9 at s = 3, the minimum (the r-weighted median of 1/r is 1/3).
    de = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 3.0], [2.0, 3.0, 0.0]])
    m = distortion_metrics(de, dg)
    assert m["worst_distortion"] == pytest.approx(3.0)
    assert m["best_scale"] == pytest.approx(3.0)
    assert m["avg_distortion"] == pytest.approx(4.0 / 9.0)


def test_best_scale_minimises_average_distortion(gen: torch.Generator) -> None:
    tree = balanced_tree(2, 4)
    dg = tree.distances()
    noise = torch.rand(dg.shape, generator=gen, dtype=torch.float64).numpy() * 2 + 0.2
    de = dg * (noise + noise.T) / 2
    m = distortion_metrics(de, dg)
    iu = np.triu_indices(len(dg), 1)
    r = de[iu] / dg[iu]
    grid = np.linspace(0.3, 3.0, 2001)
    best_grid = min(np.mean(np.abs(r / s - 1)) for s in grid)
    assert m["avg_distortion"] <= best_grid + 1e-12
    assert m["avg_distortion"] == pytest.approx(np.mean(np.abs(r / m["best_scale"] - 1)))


def test_collapsed_points_give_infinite_worst_distortion() -> None:
    dg = balanced_tree(2, 1).distances()
    de = np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    assert distortion_metrics(de, dg)["worst_distortion"] == float("inf")


def test_distortion_rejects_bad_input() -> None:
    dg = balanced_tree(2, 1).distances()
    with pytest.raises(ValueError, match="shape"):
        distortion_metrics(np.zeros((2, 2)), dg)
    with pytest.raises(ValueError, match="finite"):
        distortion_metrics(np.full((3, 3), np.nan), dg)
    with pytest.raises(ValueError, match="positive"):
        distortion_metrics(np.ones((3, 3)), np.zeros((3, 3)))


def test_perfect_embedding_has_map_one() -> None:
    tree = balanced_tree(3, 3)
    d = tree.distances().astype(float)
    m = reconstruction_metrics(d, tree.neighbors)
    assert m["map"] == 1.0 and m["mean_rank"] == 1.0
    assert m["queries"] == 2 * tree.n_edges
    # torch input works too
    assert reconstruction_metrics(torch.from_numpy(d), tree.neighbors)["map"] == 1.0


def test_reconstruction_by_hand() -> None:
    # Star: 0 is the centre, 1 and 2 are leaves. Leaves are closer to each other (1.0) than
    # to the centre (2.0), and the centre sees leaf 2 first.
    neighbors = [np.array([1, 2]), np.array([0]), np.array([0])]
    de = np.array([[0.0, 3.0, 2.0], [3.0, 0.0, 1.0], [2.0, 1.0, 0.0]])
    m = reconstruction_metrics(de, neighbors)
    # Node 0: neighbours 1 and 2, no negatives: ranks 1, 1, AP 1.
    # Node 1: neighbour 0 at 3.0, negative 2 at 1.0 ahead: rank 2, AP 1/2. Same for node 2.
    assert m["mean_rank"] == pytest.approx((1 + 1 + 2 + 2) / 4)
    assert m["map"] == pytest.approx((1 + 0.5 + 0.5) / 3)


def test_ties_count_against_the_embedding() -> None:
    tree = balanced_tree(2, 1)
    collapsed = np.zeros((3, 3))
    m = reconstruction_metrics(collapsed, tree.neighbors)
    # Node 1's only neighbour 0 ties with negative 2: rank 2, precision 1/2.
    assert m["mean_rank"] == pytest.approx((1 + 1 + 2 + 2) / 4)
    assert m["map"] == pytest.approx((1 + 0.5 + 0.5) / 3)


def test_average_precision_mixes_positions() -> None:
    # Node 0 has neighbours 1, 2; sorted by distance: 1 (pos), 3 (neg), 2 (pos), 4 (neg).
    neighbors = [np.array([1, 2]), np.array([0]), np.array([0]), np.array([]), np.array([])]
    de = np.zeros((5, 5))
    row = np.array([0.0, 1.0, 3.0, 2.0, 4.0])
    de[0], de[:, 0] = row, row
    m = reconstruction_metrics(de, neighbors)
    ap0 = (1 / 1 + 2 / 3) / 2
    # Nodes 1 and 2 see node 0 behind other points at distance 0 (ties): rank 4, precision 1/4.
    assert m["map"] == pytest.approx((ap0 + 0.25 + 0.25) / 3)
    assert m["mean_rank"] == pytest.approx((1 + 2 + 4 + 4) / 4)


def test_reconstruction_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="itself"):
        reconstruction_metrics(np.zeros((2, 2)), [np.array([0]), np.array([0])])
    with pytest.raises(ValueError, match="no node"):
        reconstruction_metrics(np.zeros((2, 2)), [np.array([]), np.array([])])
    with pytest.raises(ValueError, match="n neighbour lists"):
        reconstruction_metrics(np.zeros((2, 2)), [np.array([1])])
