"""The ``resnetbk embed-tree`` demo: embed one tree on several manifolds and compare them.

``run_demo`` trains one embedding per manifold with the same budget and seed, prints a
comparison table, and writes ``metrics.json`` and (for dim 2, when matplotlib is installed)
``embedding.png`` into the output folder.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from resnetbk.data.trees import Tree
from resnetbk.geometry import poincare
from resnetbk.train.tree_embedding import EmbeddingConfig, EmbeddingResult, embed_tree

__all__ = ["format_table", "machine_info", "plot_embeddings", "run_demo"]

_TITLES = {"poincare": "Poincaré disk", "lorentz": "Lorentz, drawn in the Poincaré disk",
           "euclidean": "Euclidean plane"}
_KIND_STYLE = {  # colour, marker size
    "root": ("#000000", 40.0),
    "package": ("#d62728", 14.0),
    "module": ("#1f77b4", 5.0),
    "class": ("#2ca02c", 2.0),
    "function": ("#9467bd", 2.0),
    "node": ("#1f77b4", 5.0),
}


def machine_info() -> dict[str, object]:
    """CPU, core count, torch version and thread count of this process."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        models = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines()
                  if ln.startswith("model name")]
        cpu = models[0] if models else cpu
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads_default": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def format_table(tree: Tree, results: dict[str, EmbeddingResult]) -> str:
    """Plain-text comparison table, one row per manifold."""
    head = (f"{'manifold':<10} {'dim':>3} {'nodes':>6} {'edges':>6} {'avg dist':>9} "
            f"{'worst dist':>11} {'mean rank':>10} {'MAP':>6} {'train s':>8} {'wall s':>7}")
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        m = r.metrics
        lines.append(
            f"{name:<10} {r.config.dim:>3} {tree.n_nodes:>6} {tree.n_edges:>6} "
            f"{m['avg_distortion']:>9.3f} {m['worst_distortion']:>11.4g} "
            f"{m['mean_rank']:>10.2f} {m['map']:>6.3f} {r.train_s:>8.1f} "
            f"{r.train_s + r.eval_s:>7.1f}"
        )
    return "\n".join(lines)


def _geodesic_segments(p: np.ndarray, edges: np.ndarray, c: float, k: int = 12) -> np.ndarray:
    """Points along the Poincaré geodesic of every edge: (E, k, 2) (x ⊕ t ⊗ ((-x) ⊕ y))."""
    x = torch.from_numpy(p[edges[:, 0]])
    y = torch.from_numpy(p[edges[:, 1]])
    u = poincare.logmap(x, y, c=c)
    t = torch.linspace(0.0, 1.0, k, dtype=x.dtype)[None, :, None]
    seg = poincare.expmap(x[:, None, :].expand(-1, k, -1), t * u[:, None, :], c=c)
    return seg.numpy()


def _labelled_nodes(tree: Tree, count: int = 10) -> list[int]:
    """The root and the children of the root with the largest subtrees."""
    size = np.ones(tree.n_nodes, dtype=np.int64)
    for i in range(tree.n_nodes - 1, 0, -1):
        size[tree.parent[i]] += size[i]
    kids = sorted(tree.children[0], key=lambda i: (-size[i], i))
    return [0, *[k for k in kids[:count] if size[k] > 1]]


def plot_embeddings(tree: Tree, results: dict[str, EmbeddingResult], path: str | Path) -> None:
    """Draw every 2-D embedding side by side, tree edges included, into a PNG at ``path``.

    Hyperbolic embeddings are drawn in the Poincaré disk (geodesic edges), Euclidean ones as
    they are (straight edges, equal axes). Needs matplotlib (the ``plot`` extra).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    panels = [(n, r) for n, r in results.items() if r.config.dim == 2]
    if not panels:
        raise ValueError("plot_embeddings needs at least one 2-D embedding")
    fig, axes = plt.subplots(1, len(panels), figsize=(7.5 * len(panels), 8.3), squeeze=False)
    edges = tree.edges()
    colours = np.array([_KIND_STYLE[k][0] for k in tree.kinds])
    # Markers grow for small trees so that a 15-node tree is as readable as a 2000-node one.
    grow = min(8.0, max(1.0, math.sqrt(1000.0 / tree.n_nodes)))
    sizes = np.array([_KIND_STYLE[k][1] for k in tree.kinds]) * grow
    label_ids = _labelled_nodes(tree)
    for ax, (_, r) in zip(axes[0], panels, strict=True):
        hyperbolic = r.config.manifold != "euclidean"
        pts = r.poincare_points() if hyperbolic else r.points
        pts = pts.detach().to(torch.float64)
        # Move the root to the centre by an isometry (Möbius / plain translation): distances,
        # and so every metric, are unchanged, and the tree fans out from the middle.
        if hyperbolic:
            pts = poincare.mobius_add(-pts[:1].expand_as(pts), pts, c=r.config.c)
        else:
            pts = pts - pts[:1]
        p = pts.numpy()
        if hyperbolic:
            radius = 1.0 / math.sqrt(r.config.c)
            seg = _geodesic_segments(p, edges, r.config.c)
            ax.add_patch(plt.Circle((0, 0), radius, fill=False, color="0.3", lw=1.0))
            lo, hi = np.array([-1.03 * radius] * 2), np.array([1.03 * radius] * 2)
        else:
            seg = p[edges]
            lo, hi = p.min(axis=0), p.max(axis=0)
            pad = 0.04 * float((hi - lo).max())
            lo, hi = lo - pad, hi + pad
        mid, half = (lo + hi) / 2, float((hi - lo).max()) / 2
        ax.add_collection(LineCollection(seg, colors="0.5", linewidths=0.3, alpha=0.5))
        ax.scatter(p[:, 0], p[:, 1], s=sizes, c=colours, linewidths=0, zorder=3)
        for i in label_ids:
            ax.annotate(tree.names[i], p[i], fontsize=7, zorder=4, xytext=(2, 2),
                        textcoords="offset points",
                        bbox={"boxstyle": "round,pad=0.15", "fc": "white", "alpha": 0.7,
                              "lw": 0})
        m = r.metrics
        where = " (root at the centre)" if hyperbolic else ""
        ax.set_title(f"{_TITLES[r.config.manifold]}{where}\n"
                     f"MAP {m['map']:.3f}, mean rank {m['mean_rank']:.1f}, "
                     f"avg distortion {m['avg_distortion']:.3f}", fontsize=11)
        ax.set_xlim(mid[0] - half, mid[0] + half)
        ax.set_ylim(mid[1] - half, mid[1] + half)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    kinds_present = [k for k in _KIND_STYLE if k in set(tree.kinds)]
    handles = [plt.Line2D([], [], ls="", marker="o", color=_KIND_STYLE[k][0], label=k)
               for k in kinds_present]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
    cfg = panels[0][1].config
    fig.suptitle(f"{tree.names[0]}: {tree.n_nodes} nodes, {tree.n_edges} edges, dim 2; "
                 f"{cfg.loss} loss, {cfg.steps} steps, seed {cfg.seed} for every panel",
                 fontsize=12)
    fig.tight_layout(rect=(0, 0.04, 1, 0.95))
    fig.savefig(path, dpi=130)
    plt.close(fig)


def run_demo(
    tree: Tree,
    manifolds: Sequence[str],
    out: str | Path,
    *,
    base: EmbeddingConfig | None = None,
    plot: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, object]:
    """Embed ``tree`` on each manifold with the same config, print the table, write files.

    Writes ``metrics.json`` (tree summary, config, machine, per-manifold metrics) and, for
    dim 2 with ``plot`` and matplotlib installed, ``embedding.png``. Returns the JSON dict.
    """
    base = base or EmbeddingConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    d_graph = tree.distances()
    summary = tree.summary()
    log(f"tree {tree.names[0]} ({summary['source']}): {summary['nodes']} nodes, "
        f"{summary['edges']} edges, {summary['closure_edges']} closure pairs, height "
        f"{summary['height']}, max degree {summary['max_degree']}")
    results: dict[str, EmbeddingResult] = {}
    for name in manifolds:
        cfg = EmbeddingConfig(**{**base.__dict__, "manifold": name})
        results[name] = embed_tree(tree, cfg, d_graph=d_graph, log=log)
    log("")
    log(format_table(tree, results))
    report: dict[str, object] = {
        "tree": summary,
        "machine": machine_info(),
        "runs": {name: r.to_dict() for name, r in results.items()},
    }
    metrics_path = out / "metrics.json"
    png_path = out / "embedding.png"
    if plot and base.dim == 2:
        if importlib.util.find_spec("matplotlib") is None:
            log("matplotlib is not installed: skipping embedding.png "
                "(install the 'plot' extra: pip install 'resnetbk[plot]')")
        else:
            plot_embeddings(tree, results, png_path)
            report["plot"] = str(png_path)
    elif plot:
        log(f"embedding.png is drawn for dim 2 only (got dim {base.dim}): skipped")
    report["total_s"] = time.perf_counter() - t0
    metrics_path.write_text(json.dumps(report, indent=2) + "\n")
    log(f"wrote {metrics_path}" + (f" and {png_path}" if "plot" in report else ""))
    return report
