"""Shared helpers of the language-model training tests: a small synthetic corpus on disk, a
micro run config, and ``ContractLM``, a small model that implements the ``ByteLM`` contract
(``resnetbk.model``) so that the trainer's mechanics (resume, failure handling, checkpoints,
CLI) are tested fast and independently of the real architecture. ``test_lm_real.py`` runs
the real model through the same paths."""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from resnetbk.geometry import lorentz
from resnetbk.geometry.manifolds import Lorentz
from resnetbk.nn import ManifoldParameter
from resnetbk.train import checkpoint, lm
from resnetbk.train.config import RunConfig, apply_overrides, run_preset

MICRO_TRAIN = [
    "train.steps=12", "train.batch_size=4", "train.seq_len=32", "train.warmup_steps=3",
    "train.eval_every=6", "train.eval_windows=4", "train.final_eval_windows=8",
    "train.log_every=1", "train.ckpt_every=5", "train.threads=1", "train.device=cpu",
    "train.lr=3e-3", "train.min_lr=3e-4",
]

_WORDS = ("def", "class", "return", "self", "import", "for", "in", "if", "else", "print",
          "while", "lambda", "yield", "None", "True", "False", "(x)", "[i]", ":", "=")


def write_corpus(root: Path, n_lines: int = 1500, seed: int = 0) -> Path:
    """A folder with two text files of pseudo-code (about 60 KB), deterministic in ``seed``."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for name in ("a.py", "b.txt"):
        lines = ["    " * rng.randrange(3) + " ".join(rng.choice(_WORDS) for _ in range(6))
                 for _ in range(n_lines // 2)]
        (root / name).write_text("\n".join(lines) + "\n")
    return root


def micro_run(data: Path, *overrides: str) -> RunConfig:
    """The tiny preset shrunk to a micro model and a 12-step budget on ``data``."""
    run = run_preset("tiny")
    run.data = [str(data)]
    return apply_overrides(run, [*MICRO_TRAIN, *overrides])


def micro_args(data: Path, out: Path, *overrides: str) -> list[str]:
    """``resnetbk train`` arguments equivalent to ``micro_run``."""
    return ["train", "--data", str(data), "--out", str(out), *MICRO_TRAIN, *overrides]


def state_dict_of(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of the checkpoint a run directory points to."""
    from safetensors.torch import load_file

    from resnetbk.train.checkpoint import find_checkpoint

    ckpt = find_checkpoint(path)
    assert ckpt is not None
    return load_file(ckpt / "model.safetensors")


def wrap_loss(monkeypatch: pytest.MonkeyPatch,
              hook: Callable[[int, torch.Tensor, torch.nn.Module], torch.Tensor]) -> None:
    """Make ``train_lm`` build models whose training loss passes through ``hook(k, loss,
    model)``, k = 1, 2, ... counting training steps (evaluation calls are not counted)."""
    real_build = lm.build_model

    def build(cfg: Any) -> torch.nn.Module:
        model = real_build(cfg)
        real_loss = model.loss
        count = [0]

        def loss(x: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
            out = real_loss(x, reduction=reduction)
            if not model.training:
                return out
            count[0] += 1
            return hook(count[0], out, model)

        model.loss = loss  # type: ignore[method-assign]
        return model

    monkeypatch.setattr(lm, "build_model", build)


def interrupt_at(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """Send SIGINT to this process during training step ``step``."""
    def hook(k: int, loss: torch.Tensor, model: torch.nn.Module) -> torch.Tensor:
        if k == step:
            os.kill(os.getpid(), signal.SIGINT)
        return loss

    wrap_loss(monkeypatch, hook)


class ContractLM(nn.Module):
    """The ``ByteLM`` contract on a previous-byte model (two embeddings, an MLP, a head) with
    a Lorentz ``ManifoldParameter`` (4 anchor points) when ``config.geometry`` is lorentz, so
    that both optimizers run. About 15k parameters; a step takes milliseconds."""

    def __init__(self, config: Any, width: int = 16) -> None:
        super().__init__()
        self.config = config
        self.seq_multiple = int(getattr(config, "patch_size", 1))
        self.emb = nn.Embedding(256, width)
        self.prev = nn.Embedding(256, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(),
                                 nn.Linear(4 * width, width))
        self.head = nn.Linear(width, 256)
        self.anchor = None
        if config.geometry == "lorentz":
            manifold = Lorentz(c=1.0)
            self.anchor = ManifoldParameter(manifold.random(4, width + 1, std=0.1),
                                            manifold=manifold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prev = nn.functional.pad(x, (1, 0))[:, :-1]
        h = self.emb(x) + self.prev(prev)
        if self.anchor is not None:
            h = h + lorentz.logmap0(self.anchor, c=1.0)[..., 1:].mean(0)
        return self.head(h + self.mlp(h))

    def loss(self, x: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        logits = self.forward(x[:, :-1]).float()
        nll = nn.functional.cross_entropy(logits.transpose(1, 2), x[:, 1:], reduction="none")
        nll = nn.functional.pad(nll, (1, 0), value=float(torch.log(torch.tensor(256.0))))
        return nll.mean() if reduction == "mean" else nll

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, max_new_bytes: int, *, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None
                 ) -> Iterator[int]:
        last = int(prompt[-1]) if len(prompt) else 10
        for _ in range(max_new_bytes):
            logits = self.forward(torch.tensor([[last]], device=prompt.device))[0, -1].float()
            if temperature == 0:
                last = int(logits.argmax())
            else:
                logits = logits / temperature
                if top_k is not None:
                    logits[logits < logits.topk(top_k).values[-1]] = -math.inf
                # Sampled on the CPU, as ByteLM.generate does (a CPU generator).
                last = int(torch.multinomial(logits.softmax(-1).cpu(), 1, generator=generator))
            yield last

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


@contextlib.contextmanager
def contract_model() -> Iterator[None]:
    """Make the trainer and the checkpoint loader build ``ContractLM``s."""
    mp = pytest.MonkeyPatch()
    for module in (lm, checkpoint):
        mp.setattr(module, "build_model", ContractLM)
    try:
        yield
    finally:
        mp.undo()
