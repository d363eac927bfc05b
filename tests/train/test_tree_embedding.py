"""Tree embedding: hyperbolic beats Euclidean on a balanced tree, determinism, all manifolds.

Thresholds for ``test_poincare_beats_euclidean_on_a_balanced_tree`` were measured over seeds
0-11 (balanced tree b=3, h=4, 121 nodes; 300 steps of the ranking loss, 128 edges x 20
negatives per step, lr 0.1 for both):
Poincaré avg distortion 0.197-0.237, MAP 0.834-0.889, worst distortion 17-65;
Euclidean avg distortion 0.330-0.396, MAP 0.686-0.739, worst distortion 247-5914.
The asserts leave a margin of about 0.04 (distortion) / 0.05 (MAP) beyond those ranges.
"""

from __future__ import annotations

import math

import pytest
import torch

from resnetbk.data import balanced_tree
from resnetbk.geometry import lorentz, poincare
from resnetbk.nn import ManifoldParameter
from resnetbk.train import EmbeddingConfig, TreeEmbedding, embed_tree


def seed_from(gen: torch.Generator) -> int:
    return int(torch.randint(2**31 - 1, (1,), generator=gen))


def test_poincare_beats_euclidean_on_a_balanced_tree(gen: torch.Generator) -> None:
    """Per seed: lower average distortion and higher MAP in the Poincaré ball. The worst
    distortion (a maximum over pairs) is lower in the median of 5 seeds: over 15 seeds the
    Poincaré / Euclidean ratio was 0.01-0.12 but 1.12 once (seed 437117505: two Poincaré
    points left nearly on top of each other after 300 steps)."""
    tree = balanced_tree(3, 4)
    d = tree.distances()
    worst_ratios = []
    for i in range(5):
        seed = seed_from(gen)
        common = {"steps": 300, "lr": 0.1, "rank_batch": 128, "negatives": 20, "seed": seed}
        hyp = embed_tree(tree, EmbeddingConfig(manifold="poincare", **common), d_graph=d,
                         log=None)
        euc = embed_tree(tree, EmbeddingConfig(manifold="euclidean", **common), d_graph=d,
                         log=None)
        h, e = hyp.metrics, euc.metrics
        worst_ratios.append(h["worst_distortion"] / e["worst_distortion"])
        if i > 0:
            continue  # the per-seed checks on the first seed
        msg = f"seed {seed}: poincare {h}, euclidean {e}"
        assert h["avg_distortion"] < 0.28, msg
        assert h["map"] > 0.78, msg
        assert h["avg_distortion"] < e["avg_distortion"] - 0.05, msg
        assert h["map"] > e["map"] + 0.04, msg
        assert (hyp.points.abs().sum(-1) > 0).all()
        assert poincare.lambda_x(hyp.points, c=1.0).isfinite().all()  # strictly inside the ball
    assert sorted(worst_ratios)[2] < 0.5, worst_ratios


def test_same_seed_same_embedding() -> None:
    tree = balanced_tree(2, 3)
    cfg = EmbeddingConfig(steps=25, seed=7, rank_batch=32, negatives=5)
    a = embed_tree(tree, cfg, log=None)
    b = embed_tree(tree, cfg, log=None)
    c = embed_tree(tree, EmbeddingConfig(steps=25, seed=8, rank_batch=32, negatives=5),
                   log=None)
    assert torch.equal(a.points, b.points)
    assert a.metrics == b.metrics
    assert not torch.equal(a.points, c.points)


@pytest.mark.parametrize("loss", ["ranking", "distortion", "both"])
@pytest.mark.parametrize("manifold", ["poincare", "lorentz", "euclidean"])
def test_every_manifold_and_loss_trains(manifold: str, loss: str, gen: torch.Generator) -> None:
    tree = balanced_tree(2, 3)
    cfg = EmbeddingConfig(manifold=manifold, loss=loss, steps=60, dim=3, seed=seed_from(gen),
                          rank_batch=32, negatives=5, batch_pairs=128, log_every=20)
    lines: list[str] = []
    r = embed_tree(tree, cfg, log=lines.append)
    assert len(lines) == 3 and "step" in lines[0] and "ETA" in lines[0] and "steps/s" in lines[0]
    assert [s for s, _ in r.history] == [20, 40, 60]
    assert math.isfinite(r.final_loss)
    ambient = 4 if manifold == "lorentz" else 3
    assert r.points.shape == (tree.n_nodes, ambient) and r.points.dtype == torch.float64
    if manifold == "lorentz":
        err = (lorentz.inner(r.points, r.points) + 1).abs().max()
        assert err < 1e-9, "points stay on the hyperboloid"
        assert r.poincare_points().shape == (tree.n_nodes, 3)
    m = r.metrics
    assert 0 <= m["map"] <= 1 and m["mean_rank"] >= 1 and m["avg_distortion"] >= 0
    if loss == "ranking":
        assert r.scale == 1.0 and r.to_dict()["learned_scale"] is None
    else:
        assert r.scale != 1.0, "the distortion loss learns the scale"


def test_model_uses_manifold_parameters() -> None:
    g = torch.Generator().manual_seed(0)
    for name in ("poincare", "lorentz", "euclidean"):
        model = TreeEmbedding(5, EmbeddingConfig(manifold=name), g)
        assert isinstance(model.points, ManifoldParameter)
        assert model.points.manifold.name == name
        d = model.all_distances()
        assert d.shape == (5, 5) and torch.equal(d, d.T) and (d.diagonal() == 0).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"manifold": "sphere"}, "manifold"),
        ({"loss": "hinge"}, "loss"),
        ({"dim": 0}, "dim"),
        ({"steps": -1}, "steps"),
        ({"negatives": 0}, "negatives"),
        ({"edge_fraction": 1.5}, "edge_fraction"),
        ({"c": 0.0}, "c must be positive"),
        ({"init_scale": -1.0}, "init_scale"),
    ],
)
def test_config_validation(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EmbeddingConfig(**kwargs)  # type: ignore[arg-type]


def test_single_node_tree_is_rejected() -> None:
    with pytest.raises(ValueError, match="at least 2 nodes"):
        embed_tree(balanced_tree(2, 0), EmbeddingConfig(steps=1), log=None)
