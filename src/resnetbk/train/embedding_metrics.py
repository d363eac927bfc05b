"""Quality metrics of a graph embedding, computed on all pairs (no sampling).

- Distortion (Sala et al. 2018, "Representation Tradeoffs for Hyperbolic Embeddings"): with
  r_ij = d_M(x_i, x_j) / d_G(i, j) over all pairs i < j, the average distortion is
  mean |r_ij / s - 1| at the global scale s that minimises it (computed exactly: 1/s is the
  r-weighted median of 1/r), and the worst-case distortion is max r / min r (scale-free; 1 for
  an isometry).
- Reconstruction (Nickel & Kiela 2017, "Poincaré Embeddings"): for every node u, rank each
  true neighbour v among all other nodes by embedding distance to u. The rank of v is 1 + the
  number of non-neighbours w != u with d(u, w) <= d(u, v) (ties count against the embedding);
  mean rank averages over all (u, v). AP(u) averages, over v in N(u), the precision of the
  smallest ball around u that contains v; MAP averages AP over nodes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["distortion_metrics", "reconstruction_metrics"]


def _as_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def distortion_metrics(
    d_emb: np.ndarray | torch.Tensor, d_graph: np.ndarray | torch.Tensor
) -> dict[str, float]:
    """Average and worst-case distortion over all pairs i < j of two (n, n) distance matrices.

    Returns ``avg_distortion`` (at the best global scale), ``worst_distortion`` (max/min
    ratio; inf if two distinct nodes share a point), ``best_scale`` (the s used) and
    ``pairs``. ``d_graph`` must be positive off the diagonal.
    """
    de = _as_numpy(d_emb).astype(np.float64)
    dg = _as_numpy(d_graph).astype(np.float64)
    if de.shape != dg.shape or de.ndim != 2 or de.shape[0] != de.shape[1]:
        raise ValueError(
            f"expected two (n, n) distance matrices of one shape, got {de.shape}, {dg.shape}"
        )
    n = de.shape[0]
    if n < 2:
        raise ValueError("distortion needs at least 2 nodes")
    iu = np.triu_indices(n, k=1)
    e, g = de[iu], dg[iu]
    if not np.all(g > 0):
        raise ValueError("graph distances must be positive between distinct nodes")
    if not np.all(np.isfinite(e)) or np.any(e < 0):
        raise ValueError("embedding distances must be finite and non-negative")
    r = e / g
    r_min = float(r.min())
    worst = float(r.max() / r_min) if r_min > 0 else float("inf")
    if float(r.max()) == 0.0:
        return {"avg_distortion": 1.0, "worst_distortion": worst, "best_scale": 0.0,
                "pairs": int(r.size)}
    # mean |t r - 1| = mean r |t - 1/r| is minimised by the r-weighted median of 1/r.
    pos = r > 0
    inv = 1.0 / r[pos]
    w = r[pos]
    order = np.argsort(inv, kind="stable")
    cum = np.cumsum(w[order])
    t = float(inv[order][np.searchsorted(cum, 0.5 * cum[-1])])
    avg = float(np.mean(np.abs(t * r - 1.0)))
    return {"avg_distortion": avg, "worst_distortion": worst, "best_scale": 1.0 / t,
            "pairs": int(r.size)}


def reconstruction_metrics(
    d_emb: np.ndarray | torch.Tensor, neighbors: Sequence[np.ndarray]
) -> dict[str, float]:
    """Mean rank and MAP of reconstructing each node's graph neighbours from distances.

    ``d_emb`` is the (n, n) embedding distance matrix, ``neighbors[u]`` the true neighbours of
    u (no self loops). Nodes without neighbours are skipped. Returns ``mean_rank``, ``map``
    and ``queries`` (number of (u, v) pairs ranked).
    """
    de = _as_numpy(d_emb).astype(np.float64)
    n = de.shape[0]
    if de.shape != (n, n) or len(neighbors) != n:
        raise ValueError(
            f"expected an (n, n) matrix and n neighbour lists, got {de.shape}, {len(neighbors)}"
        )
    ranks: list[np.ndarray] = []
    aps: list[float] = []
    is_nb = np.zeros(n, dtype=bool)
    for u in range(n):
        nb = np.asarray(neighbors[u], dtype=np.int64)
        if nb.size == 0:
            continue
        if np.any(nb == u):
            raise ValueError(f"node {u} lists itself as a neighbour")
        row = de[u]
        is_nb[nb] = True
        is_nb[u] = True  # excluded from the negatives
        neg = row[~is_nb]
        is_nb[nb] = False
        is_nb[u] = False
        dn = row[nb]
        # Ties count against the embedding: a negative at the same distance ranks ahead.
        neg_ahead = (neg[None, :] <= dn[:, None]).sum(axis=1)
        pos_within = (dn[None, :] <= dn[:, None]).sum(axis=1)
        ranks.append(1 + neg_ahead)
        aps.append(float(np.mean(pos_within / (pos_within + neg_ahead))))
    if not aps:
        raise ValueError("no node has a neighbour: nothing to reconstruct")
    all_ranks = np.concatenate(ranks)
    return {"mean_rank": float(all_ranks.mean()), "map": float(np.mean(aps)),
            "queries": int(all_ranks.size)}
