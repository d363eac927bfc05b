"""The real ResNet-BK model (``resnetbk.model``) and corpus loader through the trainer:
exact resume, checkpoint reload and generation (micro sizes), and the tiny preset on the
stdlib corpus (a few steps)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _lm_helpers import interrupt_at, micro_run, state_dict_of, write_corpus

from resnetbk.train.checkpoint import load_trained_model
from resnetbk.train.config import run_preset
from resnetbk.train.lm import read_metrics, train_lm

# Shrink the tiny preset's model so that a step takes well under a second on one CPU thread.
REAL_MICRO = ["model.byte_dim=8", "model.d_global=32", "model.n_global_layers=1",
              "model.d_local=16", "model.n_local_layers=1", "model.n_heads=2",
              "model.ff_mult=2", "model.conv_modes=2",
              "model.dropout=0.1"]  # dropout: the per-step reseeding must make resume exact

TIMING = {"bytes_per_s", "train_time_s"}


def _events(run: Path) -> list[dict[str, object]]:
    return [{k: v for k, v in e.items() if k not in TIMING}
            for e in read_metrics(run / "metrics.jsonl") if e["event"] in ("train", "val")]


def test_real_model_resume_is_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = write_corpus(tmp_path / "data")
    overrides = (*REAL_MICRO, "steps=8", "ckpt_every=3", "eval_every=4")
    full = train_lm(micro_run(data, *overrides), tmp_path / "full")
    interrupt_at(monkeypatch, 5)
    part = train_lm(micro_run(data, *overrides), tmp_path / "part")
    assert part["status"] == "interrupted" and part["steps"] == 5
    monkeypatch.undo()
    resumed = train_lm(micro_run(data, *overrides), tmp_path / "part", resume=True)
    assert resumed["final_val_bpb"] == full["final_val_bpb"]
    assert _events(tmp_path / "part") == _events(tmp_path / "full")
    wa, wb = state_dict_of(tmp_path / "full"), state_dict_of(tmp_path / "part")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    model, run, state = load_trained_model(tmp_path / "part")
    assert state["step"] == 8 and run == micro_run(data, *overrides)
    out = list(model.generate(torch.tensor(list(b"def f(x):")), 12, temperature=0.0))
    assert len(out) == 12 and all(0 <= b < 256 for b in out)


def test_tiny_preset_on_the_stdlib_corpus(tmp_path: Path) -> None:
    run = run_preset("tiny")
    run.train.steps, run.train.final_eval_windows = 3, 8
    summary = train_lm(run, tmp_path / "run")
    assert summary["status"] == "completed" and 0 < summary["final_val_bpb"] < 9
