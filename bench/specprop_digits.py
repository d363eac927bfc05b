"""SpecProp on scikit-learn's digits (issue 8): test accuracy of backprop, synthetic gradients
(DGM, conditioned DGM), SpecProp with correction and with uncertainty scaling, and training
only the last layer, on a narrow network (64-16-16-10, ReLU), mean and spread over seeds.

Protocol (docs/SPECPROP.md): ``load_digits`` scaled to [0, 1], one stratified 80/20 split
(random_state 0); per seed a fresh initialisation and batch order; batch 32, 30 epochs, Adam
1e-3 for the network; every hidden layer is a stage with its own DGM (linear, zero-initialised,
Adam ``dgm_lr``). The anchors (numpy, same network and recipe; ../shared/notes/
training_anchors.md section 8) are roughly 0.95 (backprop), 0.93-0.95 (cDNI), 0.62-0.76 (DNI),
0.38-0.44 (last layer only).

Usage: ``python bench/specprop_digits.py [--seeds 5] [--epochs 30]``; writes
``bench/results/specprop_digits.json`` and prints a markdown table. 2 CPU cores: a few
minutes.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from resnetbk.train.specprop import LossHead, SpecProp, SpecPropConfig, split_sequential

RESULTS = Path(__file__).resolve().parent / "results"
HIDDEN = 16
BATCH = 32
LR = 1e-3
DGM_LR = SpecPropConfig().dgm_lr

# Method -> SpecProp settings (None: only the last layer is trained).
METHODS: dict[str, SpecPropConfig | None] = {
    "backprop": SpecPropConfig(speculate=False, delay=0),
    "delayed_backprop": SpecPropConfig(speculate=False, delay=1),
    "dgm": SpecPropConfig(target="bootstrap", correction="noise", delay=0),
    "dgm_conditioned": SpecPropConfig(target="bootstrap", correction="noise", delay=0,
                                      context_dim=10),
    "specprop_correction": SpecPropConfig(delay=1),
    "specprop_uncertainty": SpecPropConfig(delay=1, uncertainty=True),
    "specprop_noise": SpecPropConfig(correction="noise", delay=1),
    "specprop_noise_uncertainty": SpecPropConfig(correction="noise", delay=1,
                                                 uncertainty=True),
    "last_layer_only": None,
}


def digits_split(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
    """(x_train, y_train, x_test, y_test): digits / 16, stratified 80/20, random_state 0."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x / 16.0, y, test_size=0.2, stratify=y,
                                          random_state=0)
    return (torch.tensor(xtr, dtype=dtype), torch.tensor(ytr), torch.tensor(xte, dtype=dtype),
            torch.tensor(yte))


def network(seed: int, hidden: int = HIDDEN) -> nn.Sequential:
    """64-h-h-10 ReLU network, initialised from ``seed``."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, 10))


def adam(module: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.Adam(module.parameters(), lr=LR)


def train(method: SpecPropConfig | None, seed: int, data: tuple[torch.Tensor, ...],
          epochs: int, hidden: int = HIDDEN) -> float:
    """Test accuracy after training ``method`` (None: last layer only) from ``seed``."""
    xtr, ytr, xte, yte = data
    model = network(seed, hidden).to(xtr.dtype)
    body, head = split_sequential(model, [2, 4])[:2], split_sequential(model, [4])[1]
    if method is None:
        for p in model[:4].parameters():
            p.requires_grad_(False)
        opt = adam(head)
        step = None
    else:
        context = (lambda y: F.one_hot(y, 10).to(xtr.dtype)) if method.context_dim else None
        sp = SpecProp(body, LossHead(head, F.cross_entropy), [hidden, hidden], adam, method,
                      context_fn=context)
        step = sp.step
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(xtr), generator=g)
        for i in range(0, len(xtr), BATCH):
            idx = order[i:i + BATCH]
            if step is not None:
                loss = step(xtr[idx], ytr[idx])
            else:
                loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    if step is not None:
        sp.flush()
    if not torch.isfinite(loss):
        raise FloatingPointError(f"training diverged (loss {float(loss)})")
    with torch.no_grad():
        return float((model(xte).argmax(-1) == yte).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--methods", nargs="*", default=list(METHODS))
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = digits_split()
    rows = {}
    for name in args.methods:
        t0 = time.perf_counter()
        accs = [train(METHODS[name], seed, data, args.epochs) for seed in range(args.seeds)]
        rows[name] = {"accuracy": accs, "mean": statistics.mean(accs),
                      "min": min(accs), "max": max(accs),
                      "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                      "seconds_per_run": (time.perf_counter() - t0) / args.seeds,
                      "config": None if METHODS[name] is None else asdict(METHODS[name])}
        r = rows[name]
        print(f"{name:28s} {r['mean']:.4f} ± {r['std']:.4f}  [{r['min']:.4f}, {r['max']:.4f}]  "
              f"{r['seconds_per_run']:.1f} s/run", flush=True)
    print("\n| method | test accuracy (mean ± std) | min - max |\n|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['mean']:.3f} ± {r['std']:.3f} | {r['min']:.3f} - {r['max']:.3f} |")
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        out = RESULTS / "specprop_digits.json"
        out.write_text(json.dumps({
            "benchmark": "specprop_digits", "seeds": args.seeds, "epochs": args.epochs,
            "hidden": HIDDEN, "batch": BATCH, "lr": LR, "dgm_lr": DGM_LR,
            "split": "stratified 80/20, random_state 0", "torch": torch.__version__,
            "machine": platform.processor() or platform.machine(), "methods": rows,
        }, indent=2) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
