"""train_lm end to end on a small synthetic corpus with a micro model: outputs, exact resume
(after SIGINT and after a crash), NaN/Inf stops that keep the last good checkpoint, time
budget, and clear errors for bad data and bad resumes."""

from __future__ import annotations

import json
import math
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from _lm_helpers import (
    contract_model,
    interrupt_at,
    micro_run,
    state_dict_of,
    wrap_loss,
    write_corpus,
)

from resnetbk.train import lm
from resnetbk.train.checkpoint import read_state
from resnetbk.train.config import ConfigError, load_config
from resnetbk.train.lm import TrainingDiverged, read_metrics, train_lm

# Fields that depend on wall time, not on the computation.
TIMING = {"bytes_per_s", "train_time_s"}


@pytest.fixture(autouse=True)
def _contract_model() -> Iterator[None]:
    """The trainer's mechanics run on ContractLM (tests/train/test_lm_real.py runs the real
    model through the same paths)."""
    with contract_model():
        yield


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


def events(run: Path, kind: str | None = None) -> list[dict[str, Any]]:
    return [{k: v for k, v in e.items() if k not in TIMING} for e in read_metrics(
        run / "metrics.jsonl") if e["event"] != "resume" and (kind is None or e["event"] == kind)]


def test_trains_and_writes_its_outputs(tmp_path: Path, data: Path) -> None:
    run = micro_run(data, "steps=24", "log_every=4", "eval_every=8")
    summary = train_lm(run, tmp_path / "run")
    out = tmp_path / "run"
    assert summary["status"] == "completed" and summary["steps"] == 24
    assert json.loads((out / "summary.json").read_text()) == summary
    train = events(out, "train")
    assert [e["step"] for e in train] == [4, 8, 12, 16, 20, 24]
    assert train[-1]["loss"] < train[0]["loss"]
    assert all(e["bpb"] == pytest.approx(e["loss"] / math.log(2)) for e in train)
    assert train[-1]["bytes_seen"] == 24 * 4 * 32
    val = events(out, "val")
    assert [(e["step"], e["final"]) for e in val] == [(8, False), (16, False), (24, True)]
    assert val[-1]["windows"] == 8 and val[-1]["bpb"] == summary["final_val_bpb"]
    assert 0 < summary["final_val_bpb"] < 8.0  # better than a uniform guess
    assert summary["final_val_ci95"] > 0
    assert read_state(out)[1]["step"] == 24
    assert load_config(out / "config.toml") == run
    if summary.get("plot"):
        assert (out / "bpb.png").read_bytes()[:4] == b"\x89PNG"


def test_seed_changes_the_run(tmp_path: Path, data: Path) -> None:
    a = train_lm(micro_run(data, "steps=4"), tmp_path / "a")
    b = train_lm(micro_run(data, "steps=4", "seed=1"), tmp_path / "b")
    assert a["final_val_bpb"] != b["final_val_bpb"]


def _assert_same_run(full: Path, resumed: Path) -> None:
    assert events(resumed) == events(full)  # every loss, lr, grad norm and val bpb, exactly
    wa, wb = state_dict_of(full), state_dict_of(resumed)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_resume_after_sigint_equals_uninterrupted(
    tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = train_lm(micro_run(data), tmp_path / "full")
    before = signal.getsignal(signal.SIGINT)
    interrupt_at(monkeypatch, 7)
    part = train_lm(micro_run(data), tmp_path / "part")
    assert signal.getsignal(signal.SIGINT) is before  # handler restored
    assert part["status"] == "interrupted" and part["steps"] == 7
    assert part["final_val_bpb"] is None and read_state(tmp_path / "part")[1]["step"] == 7
    monkeypatch.undo()
    resumed = train_lm(micro_run(data), tmp_path / "part", resume=True)
    assert resumed["status"] == "completed"
    assert resumed["final_val_bpb"] == full["final_val_bpb"]
    _assert_same_run(tmp_path / "full", tmp_path / "part")


def test_resume_after_crash_equals_uninterrupted(
    tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A crash at step 8 loses steps 6-7 (logged, not checkpointed): the resume from step 5
    # must drop their events and redo them identically.
    train_lm(micro_run(data), tmp_path / "full")

    def crash(k: int, loss: torch.Tensor, model: torch.nn.Module) -> torch.Tensor:
        if k == 8:
            raise MemoryError("simulated crash")
        return loss

    wrap_loss(monkeypatch, crash)
    with pytest.raises(MemoryError):
        train_lm(micro_run(data), tmp_path / "part")
    assert read_state(tmp_path / "part")[1]["step"] == 5
    monkeypatch.undo()
    train_lm(micro_run(data), tmp_path / "part", resume=True)
    _assert_same_run(tmp_path / "full", tmp_path / "part")


def test_stop_signal_restores_the_previous_handler() -> None:
    before = signal.getsignal(signal.SIGINT)
    with lm._StopSignal() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        assert stop.received == signal.SIGINT
        assert signal.getsignal(signal.SIGINT) is before  # a second Ctrl-C acts at once
    assert signal.getsignal(signal.SIGINT) is before


class InfGrad(torch.autograd.Function):
    """Zero in the forward pass, an infinite gradient for its input in the backward pass."""

    @staticmethod
    def forward(ctx: Any, p: torch.Tensor) -> torch.Tensor:
        ctx.shape = p.shape
        return p.new_zeros(())

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return torch.full(ctx.shape, math.inf, dtype=grad.dtype)


@pytest.mark.parametrize("where", ["loss", "grad"])
def test_non_finite_stops_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    names: list[str] = []

    def poison(k: int, loss: torch.Tensor, model: torch.nn.Module) -> torch.Tensor:
        if k != 8:
            return loss
        if where == "loss":
            return loss * math.nan
        # An infinite gradient in one weight while the loss stays finite.
        name, p = next((n, p) for n, p in model.named_parameters() if p.ndim >= 2)
        names.append(name)
        return loss + InfGrad.apply(p)

    wrap_loss(monkeypatch, poison)
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged) as info:
        train_lm(micro_run(data), run)
    msg = str(info.value)
    assert "at step 8" in msg and "last finite loss" in msg and "at step 7" in msg
    assert "step-00000005" in msg and "is kept" in msg
    if where == "loss":
        assert "non-finite loss" in msg
    else:
        assert "non-finite gradient norm" in msg and names[0] in msg
    ckpt, state = read_state(run)
    assert state["step"] == 5 and ckpt.name == "step-00000005"
    assert json.loads((run / "summary.json").read_text())["status"] == "diverged"
    assert read_metrics(run / "metrics.jsonl")[-1]["event"] == "diverged"


def test_time_budget_stops_with_a_checkpoint(tmp_path: Path, data: Path) -> None:
    summary = train_lm(micro_run(data, "steps=1000", "time_budget_s=1e-9"), tmp_path / "run")
    assert summary["status"] == "time_budget" and summary["steps"] == 1
    assert summary["final_val_bpb"] is not None and read_state(tmp_path / "run")[1]["step"] == 1


def test_resume_policy_errors(tmp_path: Path, data: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match="no checkpoint to resume from"):
        train_lm(micro_run(data), run, resume=True)
    train_lm(micro_run(data, "steps=5"), run)
    with pytest.raises(ConfigError, match=r"already holds a checkpoint.*--resume"):
        train_lm(micro_run(data, "steps=5"), run)
    with pytest.raises(ConfigError, match=r"cannot resume.*train\.seq_len: 32 -> 64"):
        train_lm(micro_run(data, "steps=6", "seq_len=64"), run, resume=True)
    geometry = "euclidean" if micro_run(data).model.geometry != "euclidean" else "lorentz"
    with pytest.raises(ConfigError, match=r"cannot resume.*model\.geometry"):
        train_lm(micro_run(data, "steps=6", f"model.geometry={geometry}"), run, resume=True)
    lines: list[str] = []
    summary = train_lm(micro_run(data, "steps=6", "lr=4e-3"), run, resume=True,
                       log=lines.append)
    assert summary["steps"] == 6
    assert any("warning" in line and "train.lr" in line for line in lines)
    assert not any("train.steps" in line and "warning" not in line for line in lines)


def test_changed_data_refuses_resume(tmp_path: Path) -> None:
    data = write_corpus(tmp_path / "data")
    train_lm(micro_run(data, "steps=2"), tmp_path / "run")
    with open(data / "a.py", "a") as f:
        f.write("more text\n" * 100)
    with pytest.raises(ConfigError, match="training data changed since the checkpoint"):
        train_lm(micro_run(data, "steps=4"), tmp_path / "run", resume=True)


def test_bad_data(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot use the data"):
        train_lm(micro_run(tmp_path / "missing"), tmp_path / "run")
    small = tmp_path / "small"
    small.mkdir()
    (small / "a.txt").write_text("x" * 400)
    with pytest.raises(ConfigError, match="validation split"):
        train_lm(micro_run(small), tmp_path / "run")


def test_seq_len_must_fit_the_model(tmp_path: Path, data: Path) -> None:
    multiple = lm.build_model(micro_run(data).model).seq_multiple
    if multiple == 1:
        pytest.skip("the model accepts any length")
    with pytest.raises(ConfigError, match=f"multiple of {multiple}"):
        train_lm(micro_run(data, f"seq_len={multiple * 4 + 1}"), tmp_path / "run")


def test_threads_restored(tmp_path: Path, data: Path) -> None:
    before = torch.get_num_threads()
    train_lm(micro_run(data, "steps=1", "threads=1"), tmp_path / "run")
    assert torch.get_num_threads() == before
