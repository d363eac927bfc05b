"""``resnetbk train / eval / generate`` end to end on a small synthetic corpus: outputs,
streaming, config resolution, interruption and resume, and one-line errors (exit code 2)."""

from __future__ import annotations

import io
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

sys.path.insert(0, str(Path(__file__).resolve().parent / "train"))

from _lm_helpers import contract_model, interrupt_at, micro_args, wrap_loss, write_corpus

from resnetbk.cli import main


@pytest.fixture(scope="module", autouse=True)
def _corpus_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Corpus caches go to the test's temporary folder, not ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RESNETBK_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        yield


@pytest.fixture(scope="module", autouse=True)
def _contract_model() -> Iterator[None]:
    """The trainer's mechanics run on ContractLM (tests/train/test_lm_real.py runs the real
    model through the same paths)."""
    with contract_model():
        yield


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def trained(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "run"
    assert main(micro_args(data, out, "steps=6")) == 0
    return out


def one_line_error(err: str, command: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"resnetbk {command}: error: ") and "Traceback" not in err
    return lines[0]


def test_train_prints_the_final_bpb(data: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(micro_args(data, tmp_path / "run", "steps=4")) == 0
    out = capsys.readouterr().out
    assert "final val bpb" in out and "95% CI over 8 windows of 32 bytes" in out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert f"{summary['final_val_bpb']:.4f}" in out


def test_eval(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["eval", str(trained), "--split", "val", "--max-windows", "6", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["split"] == "val" and res["windows"] == 6 and res["step"] == 6
    assert 0 < res["bpb"] < 9 and res["ci95"] > 0
    assert main(["eval", str(trained / "checkpoints")]) == 0
    assert capsys.readouterr().out.startswith("test bpb ")


def test_generate_streams_the_requested_bytes(trained: Path,
                                              capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    assert main(["generate", str(trained), "--prompt", "def f(x):", "--bytes", "23",
                 "--seed", "1"]) == 0
    first = capsysbinary.readouterr()
    assert len(first.out) == 23
    assert b"[23 bytes in" in first.err and b"bytes/s" in first.err
    assert main(["generate", str(trained), "--prompt", "def f(x):", "--bytes", "23",
                 "--seed", "1"]) == 0
    assert capsysbinary.readouterr().out == first.out  # fixed seed: same bytes
    assert main(["generate", str(trained), "--prompt", "x", "--bytes", "0"]) == 0
    assert capsysbinary.readouterr().out == b""


def test_generate_writes_each_byte_as_it_is_produced(
    trained: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ops: list[str] = []

    class Recorder(io.RawIOBase):
        def write(self, b: bytes) -> int:  # type: ignore[override]
            ops.append(f"write {len(b)}")
            return len(b)

        def flush(self) -> None:
            ops.append("flush")

    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(Recorder()))
    assert main(["generate", str(trained), "--prompt", "a", "--bytes", "5",
                 "--temperature", "0"]) == 0
    assert ops[:10] == ["write 1", "flush"] * 5


def test_print_config_and_precedence(data: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "run.yaml"
    cfg.write_text("train:\n  lr: 0.01\n  steps: 7\n")
    rc = main(["train", "--preset", "tiny", "--config", str(cfg), "--data", str(data),
               "lr=0.02", "--print-config"])
    assert rc == 0
    printed = tomllib.loads(capsys.readouterr().out)
    assert printed["train"]["lr"] == 0.02 and printed["train"]["steps"] == 7
    assert printed["data"] == [str(data.resolve())]
    # KEY=VALUE items after --data are overrides, not paths.
    assert main(["train", "--data", str(data), "steps=3", "--print-config"]) == 0
    printed = tomllib.loads(capsys.readouterr().out)
    assert printed["train"]["steps"] == 3 and printed["data"] == [str(data.resolve())]


def test_interrupt_then_resume_from_the_checkpoint_config(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    interrupt_at(monkeypatch, 3)
    assert main(micro_args(data, out)) == 130
    err = capsys.readouterr().err
    assert "interrupted after step 3" in err and f"resnetbk train --out {out} --resume" in err
    monkeypatch.undo()
    # No preset, no data, no overrides: the checkpoint's config is the base.
    assert main(["train", "--out", str(out), "--resume"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 12 and summary["status"] == "completed"


def test_divergence_exits_1_with_a_diagnosis(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str]
) -> None:
    wrap_loss(monkeypatch, lambda k, loss, model: loss * math.inf if k == 2 else loss)
    assert main(micro_args(data, tmp_path / "run")) == 1
    err = capsys.readouterr().err
    assert "training diverged" in err and "non-finite loss at step 2" in err
    assert "no checkpoint had been written yet" in err


@pytest.mark.parametrize(("args", "needle"), [
    (["train", "lrr=1", "--print-config"], "unknown config key 'lrr'"),
    (["train", "steps=many", "--print-config"], "train.steps: expected int"),
    (["train", "--preset", "huge", "--print-config"], "unknown preset 'huge'"),
    (["train", "--config", "/nonexistent/run.toml"], "cannot read config file"),
    (["train", "--data", "/nonexistent/corpus", "--out", "{tmp}/x"], "cannot use the data"),
    (["train", "--out", "{tmp}/x", "--resume"], "holds no checkpoint to resume from"),
    (["eval", "{tmp}/nothing"], "does not exist"),
    (["eval", "{run}", "--max-windows", "1"], "--max-windows must be >= 2"),
    (["eval", "{run}", "--seq-len", "7"], "--seq-len must be a positive multiple"),
    (["generate", "{run}", "--prompt", "a", "--top-k", "0"], "--top-k must be in 1..256"),
    (["generate", "{run}", "--prompt", "a", "--temperature", "-1"], "--temperature"),
    (["generate", "{run}", "--prompt", "a", "--bytes", "-3"], "--bytes must be >= 0"),
])
def test_user_errors_are_one_line(args: list[str], needle: str, tmp_path: Path, trained: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    args = [a.replace("{tmp}", str(tmp_path)).replace("{run}", str(trained)) for a in args]
    assert main(args) == 2
    assert needle in one_line_error(capsys.readouterr().err, args[0])


def test_existing_run_needs_resume(trained: Path, data: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(micro_args(data, trained, "steps=6")) == 2
    assert "pass --resume" in one_line_error(capsys.readouterr().err, "train")


@pytest.mark.parametrize("damage", ["truncate", "garbage_state", "foreign"])
def test_damaged_checkpoint_is_one_line(damage: str, data: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(micro_args(data, out, "steps=2")) == 0
    (ckpt,) = (out / "checkpoints").glob("step-*")
    if damage == "truncate":
        weights = ckpt / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "garbage_state":
        (ckpt / "state.json").write_bytes(b"\x00\xff garbage")
    else:
        torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
        (ckpt / "state.json").write_text(json.dumps({"format": "someone-else"}))
    capsys.readouterr()
    for command in (["eval", str(out)], ["generate", str(out), "--prompt", "a"],
                    ["train", "--out", str(out), "--resume"]):
        assert main(command) == 2
        one_line_error(capsys.readouterr().err, command[0])
