"""Embed a tree in the Poincaré ball, the Lorentz hyperboloid or Euclidean space.

Each node gets one point, a ``ManifoldParameter`` on the chosen manifold, trained with
``resnetbk.optim.RiemannianAdam``; metrics are computed on all pairs (``embedding_metrics``).

Losses:

- ``"ranking"`` (default): Nickel & Kiela (2017, eq. 6) over the tree's edges: for a batch of
  directed edges (u, v) and ``negatives`` random nodes w that are not neighbours of u, the
  cross-entropy of softmax(-d(u, v), -d(u, w_1), ...) with target v.
- ``"distortion"``: mean over sampled pairs of (d_M(x_i, x_j) / (s d_G(i, j)) - 1)^2 with a
  learned scale s = exp(log_s) (a plain parameter). Batches mix pairs drawn uniformly from all
  pairs with a fraction ``edge_fraction`` of tree edges.
- ``"both"``: the sum of the two.

Why ranking is the default (measured on the stdlib tree, dim 2, docs/RESULTS.md): in the
Poincaré disk it reached MAP 0.85 and average distortion 0.18 (worst 52) in 2000 steps, while
the distortion loss, which optimises distortion directly, reached MAP 0.16 and average
distortion 0.16 (worst 1500) in 3000 steps: starting from points near the origin it settles in
a local minimum with a small scale (about 2.4, also from an initial scale of 3 or 6) where the
199 children of the root are crowded together. The ranking loss
pushes non-neighbours apart first, which unfolds the tree; its distances come out nearly
proportional to tree distances as a by-product. "both" landed in between (MAP 0.70).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from resnetbk.data.trees import Tree
from resnetbk.geometry import lorentz, poincare
from resnetbk.geometry.convert import lorentz_to_poincare
from resnetbk.geometry.manifolds import Euclidean, Lorentz, Manifold, PoincareBall
from resnetbk.nn import ManifoldParameter
from resnetbk.train.embedding_metrics import distortion_metrics, reconstruction_metrics

__all__ = [
    "MANIFOLDS",
    "EmbeddingConfig",
    "EmbeddingResult",
    "TreeEmbedding",
    "embed_tree",
    "evaluate",
]

MANIFOLDS = ("poincare", "lorentz", "euclidean")
LOSSES = ("distortion", "ranking", "both")

# Learning rates measured on the stdlib tree (dim 2, ranking loss, 2000 steps, seed 0): for each
# manifold the rate with the best MAP among 0.005-0.2 (sweep in docs/RESULTS.md).
DEFAULT_LR = {"poincare": 0.05, "lorentz": 0.05, "euclidean": 0.01}


@dataclass
class EmbeddingConfig:
    """Hyper-parameters of one embedding run (all have defaults used by the CLI)."""

    manifold: str = "poincare"
    dim: int = 2
    steps: int = 2000
    batch_pairs: int = 4096
    edge_fraction: float = 0.25
    lr: float | None = None
    c: float = 1.0
    loss: str = "ranking"
    rank_batch: int = 512
    negatives: int = 50
    init_std: float = 1e-3
    init_scale: float = 1.0
    seed: int = 0
    log_every: int = 250
    dtype: torch.dtype = torch.float64
    # torch intra-op threads while training (restored afterwards); None keeps the current
    # setting. The ops here are small (about 26k distances a step), where a second thread
    # measured up to 4x slower on a busy 2-core machine and no faster on an idle one.
    threads: int | None = 1

    def __post_init__(self) -> None:
        if self.manifold not in MANIFOLDS:
            raise ValueError(f"manifold must be one of {MANIFOLDS}, got {self.manifold!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        counts = {"dim": self.dim, "batch_pairs": self.batch_pairs,
                  "rank_batch": self.rank_batch, "negatives": self.negatives,
                  "log_every": self.log_every}
        bad = {k: v for k, v in counts.items() if v < 1}
        if self.threads is not None and self.threads < 1:
            bad["threads"] = self.threads
        if bad or self.steps < 0:
            raise ValueError(f"need steps >= 0 and these >= 1, got {bad or {'steps': self.steps}}")
        if not 0.0 <= self.edge_fraction <= 1.0:
            raise ValueError(f"edge_fraction must be in [0, 1], got {self.edge_fraction}")
        if self.init_scale <= 0:
            raise ValueError(f"init_scale must be positive, got {self.init_scale}")
        if self.c <= 0:
            raise ValueError(f"c must be positive, got {self.c}")

    @property
    def learning_rate(self) -> float:
        """``lr`` if set, else the default for the manifold."""
        return self.lr if self.lr is not None else DEFAULT_LR[self.manifold]

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly view (dtype as a string, the effective learning rate filled in)."""
        d = asdict(self)
        d["dtype"] = str(self.dtype).removeprefix("torch.")
        d["lr"] = self.learning_rate
        return d


@dataclass
class EmbeddingResult:
    """Outcome of ``embed_tree``: the points, the learned scale, metrics and timings."""

    config: EmbeddingConfig
    points: torch.Tensor
    scale: float
    metrics: dict[str, float]
    train_s: float
    eval_s: float
    final_loss: float
    history: list[tuple[int, float]] = field(default_factory=list)

    def poincare_points(self) -> torch.Tensor | None:
        """Points in the Poincaré ball (Lorentz ones converted); None for Euclidean."""
        if self.config.manifold == "poincare":
            return self.points
        if self.config.manifold == "lorentz":
            return lorentz_to_poincare(self.points, c=self.config.c)
        return None

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly summary (no points)."""
        return {
            "config": self.config.to_dict(),
            "learned_scale": self.scale if self.config.loss != "ranking" else None,
            "final_loss": self.final_loss,
            "train_s": self.train_s,
            "eval_s": self.eval_s,
            **self.metrics,
        }


def make_manifold(name: str, c: float = 1.0) -> Manifold:
    """The manifold object for ``"poincare"``, ``"lorentz"`` or ``"euclidean"``."""
    if name == "poincare":
        return PoincareBall(c=c)
    if name == "lorentz":
        return Lorentz(c=c)
    if name == "euclidean":
        return Euclidean()
    raise ValueError(f"manifold must be one of {MANIFOLDS}, got {name!r}")


class TreeEmbedding(nn.Module):
    """One point per node (a ``ManifoldParameter``) and a learned positive distance scale."""

    def __init__(self, n_nodes: int, config: EmbeddingConfig, generator: torch.Generator):
        super().__init__()
        self.manifold_name = config.manifold
        self.c = config.c
        self.manifold = make_manifold(config.manifold, config.c)
        ambient = config.dim + 1 if config.manifold == "lorentz" else config.dim
        init = self.manifold.random(
            n_nodes, ambient, std=config.init_std, dtype=config.dtype, generator=generator
        )
        self.points = ManifoldParameter(init, manifold=self.manifold)
        self.log_scale = nn.Parameter(
            torch.tensor(math.log(config.init_scale), dtype=config.dtype)
        )

    @property
    def scale(self) -> torch.Tensor:
        """s = exp(log_scale): target distance of one tree edge."""
        return self.log_scale.exp()

    def distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Geodesic distance between broadcasting batches of points (last axis)."""
        if self.manifold_name == "poincare":
            return poincare.dist(x, y, c=self.c)
        if self.manifold_name == "lorentz":
            return lorentz.dist(x, y, c=self.c)
        return (x - y).norm(dim=-1)

    def pair_distance(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """Distances between nodes i and j (index tensors of one shape)."""
        return self.distance(self.points[i], self.points[j])

    @torch.no_grad()
    def all_distances(self, chunk: int = 256) -> torch.Tensor:
        """(n, n) matrix of embedding distances, computed in row chunks (exact per-pair dist)."""
        x = self.points.detach()
        rows = [self.distance(x[k : k + chunk, None, :], x[None, :, :])
                for k in range(0, x.shape[0], chunk)]
        d = torch.cat(rows, dim=0)
        d.fill_diagonal_(0.0)
        return d


def evaluate(model: TreeEmbedding, tree: Tree, d_graph: np.ndarray) -> dict[str, float]:
    """All-pairs distortion and neighbour-reconstruction metrics of a trained model."""
    d = model.all_distances().numpy()
    out = distortion_metrics(d, d_graph)
    out.update(reconstruction_metrics(d, tree.neighbors))
    return out


class _PairSampler:
    """Batches of node pairs: uniform over all i != j, plus a fraction of tree edges."""

    def __init__(self, tree: Tree, d_graph: torch.Tensor, config: EmbeddingConfig,
                 generator: torch.Generator) -> None:
        self.n = tree.n_nodes
        self.edges = torch.from_numpy(tree.edges())
        self.d_graph = d_graph
        self.n_edge = round(config.batch_pairs * config.edge_fraction) if self.n > 1 else 0
        self.n_uniform = config.batch_pairs - self.n_edge
        self.g = generator

    def sample(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        i = torch.randint(self.n, (self.n_uniform,), generator=self.g)
        j = torch.randint(self.n - 1, (self.n_uniform,), generator=self.g)
        j = j + (j >= i).long()  # uniform over j != i
        if self.n_edge:
            e = self.edges[torch.randint(len(self.edges), (self.n_edge,), generator=self.g)]
            i = torch.cat([i, e[:, 0]])
            j = torch.cat([j, e[:, 1]])
        return i, j, self.d_graph[i, j]


def _distortion_loss(model: TreeEmbedding, i: torch.Tensor, j: torch.Tensor,
                     dg: torch.Tensor) -> torch.Tensor:
    d = model.pair_distance(i, j)
    return (d / (model.scale * dg) - 1).pow(2).mean()


def _ranking_loss(model: TreeEmbedding, adjacency: torch.Tensor, edges: torch.Tensor,
                  batch: int, negatives: int, g: torch.Generator) -> torch.Tensor:
    # Nickel & Kiela (2017) eq. 6: softmax of -d over one neighbour and sampled non-neighbours.
    e = edges[torch.randint(len(edges), (batch,), generator=g)]
    u, v = e[:, 0], e[:, 1]
    neg = torch.randint(adjacency.shape[0], (batch, negatives), generator=g)
    cand = torch.cat([v[:, None], neg], dim=1)
    d = model.pair_distance(u[:, None].expand_as(cand), cand)
    invalid = adjacency[u[:, None], neg] | (neg == u[:, None])
    logits = torch.cat([-d[:, :1], (-d[:, 1:]).masked_fill(invalid, -math.inf)], dim=1)
    return torch.nn.functional.cross_entropy(logits, torch.zeros_like(u))


def embed_tree(
    tree: Tree,
    config: EmbeddingConfig | None = None,
    *,
    d_graph: np.ndarray | None = None,
    log: Callable[[str], None] | None = print,
) -> EmbeddingResult:
    """Train an embedding of ``tree`` and evaluate it on all pairs.

    ``d_graph`` (the all-pairs graph distances) is computed when not given. ``log`` receives
    a progress line every ``config.log_every`` steps (None: silent). Deterministic given
    ``config.seed`` (single process, same torch build and thread count).
    """
    from resnetbk.optim import RiemannianAdam  # written alongside; imported where used

    config = config or EmbeddingConfig()
    if tree.n_nodes < 2:
        raise ValueError("embedding needs a tree with at least 2 nodes")
    previous_threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        return _embed_tree(tree, config, d_graph, log, RiemannianAdam)
    finally:
        torch.set_num_threads(previous_threads)


def _embed_tree(tree: Tree, config: EmbeddingConfig, d_graph: np.ndarray | None,
                log: Callable[[str], None] | None, optimizer: type) -> EmbeddingResult:
    if d_graph is None:
        d_graph = tree.distances()
    g = torch.Generator().manual_seed(config.seed)
    model = TreeEmbedding(tree.n_nodes, config, g)
    opt = optimizer(model.parameters(), lr=config.learning_rate)
    dg = torch.from_numpy(d_graph).to(config.dtype)
    sampler = _PairSampler(tree, dg, config, g)
    adjacency = dg == 1
    directed = torch.from_numpy(np.concatenate([tree.edges(), tree.edges()[:, ::-1]]))
    if config.loss == "ranking":
        # The ranking loss has no use for the scale: keep it fixed.
        model.log_scale.requires_grad_(False)

    history: list[tuple[int, float]] = []
    name = config.manifold
    t0 = time.perf_counter()
    t_last, k_last = t0, 0
    loss_val = float("nan")
    for step in range(1, config.steps + 1):
        opt.zero_grad(set_to_none=True)
        loss = torch.zeros((), dtype=config.dtype)
        if config.loss in ("distortion", "both"):
            loss = loss + _distortion_loss(model, *sampler.sample())
        if config.loss in ("ranking", "both"):
            loss = loss + _ranking_loss(model, adjacency, directed, config.rank_batch,
                                        config.negatives, g)
        loss.backward()
        opt.step()
        if step % config.log_every == 0 or step == config.steps:
            loss_val = float(loss.detach())
            history.append((step, loss_val))
            if log is not None:
                now = time.perf_counter()
                rate = (step - k_last) / max(now - t_last, 1e-9)
                eta = (config.steps - step) / rate
                scale = (f"  scale {model.log_scale.exp().item():.3f}"
                         if config.loss != "ranking" else "")
                log(f"[{name}] step {step:>6}/{config.steps}  loss {loss_val:.5f}{scale}  "
                    f"{rate:6.1f} steps/s  ETA {eta:5.1f} s")
                t_last, k_last = now, step
    train_s = time.perf_counter() - t0
    if not math.isfinite(loss_val) and config.steps > 0:
        raise FloatingPointError(f"[{name}] training diverged: final loss {loss_val}")
    t1 = time.perf_counter()
    metrics = evaluate(model, tree, d_graph)
    eval_s = time.perf_counter() - t1
    return EmbeddingResult(
        config=config,
        points=model.points.detach().clone(),
        scale=model.log_scale.exp().item(),
        metrics=metrics,
        train_s=train_s,
        eval_s=eval_s,
        final_loss=loss_val,
        history=history,
    )
