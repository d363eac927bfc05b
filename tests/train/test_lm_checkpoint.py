"""Checkpoints: round trip, atomic replacement (a crash mid-write leaves the previous one
loadable), and a clear CheckpointError for missing, truncated, corrupted and foreign files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import safetensors.torch
import torch
from torch import nn

from resnetbk.train import checkpoint as ck
from resnetbk.train.checkpoint import (
    CheckpointError,
    find_checkpoint,
    load_extra_state,
    load_optimizer_states,
    load_weights,
    read_state,
    save_checkpoint,
)


def _model(out: int = 4) -> nn.Module:
    return nn.Sequential(nn.Linear(3, out), nn.Tanh(), nn.Linear(out, 2))


def _trained(gen: torch.Generator, steps: int = 2) -> tuple[nn.Module, torch.optim.Optimizer]:
    model = _model()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    for _ in range(steps):
        model(torch.randn(5, 3, generator=gen)).square().sum().backward()
        opt.step()
        opt.zero_grad()
    return model, opt


def _save(run: Path, model: nn.Module, opt: torch.optim.Optimizer, step: int) -> Path:
    return save_checkpoint(run, model=model, optimizers={"adamw": opt},
                           state={"step": step, "config": {"note": "test"}})


def test_round_trip(tmp_path: Path, gen: torch.Generator) -> None:
    model, opt = _trained(gen)
    path = _save(tmp_path, model, opt, 7)
    assert path == tmp_path / "checkpoints" / "step-00000007"
    ckpt, state = read_state(tmp_path)
    assert ckpt == path and state["step"] == 7 and state["format"] == ck.FORMAT
    fresh = _model()
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=0.1)
    load_weights(fresh, ckpt)
    load_optimizer_states({"adamw": fresh_opt}, ckpt)
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    sa, sb = opt.state_dict()["state"], fresh_opt.state_dict()["state"]
    for k in sa:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(sa[k][name], sb[k][name])
    # Every path form names the same checkpoint.
    assert find_checkpoint(tmp_path / "checkpoints") == path == find_checkpoint(path)


def test_tied_weights_are_saved(tmp_path: Path) -> None:
    model = _model()
    model[2].weight = nn.Parameter(model[0].weight[:2, :3].clone())
    model.tied = model[0]  # the same module under two names: shared storage in state_dict
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ckpt = _save(tmp_path, model, opt, 1)
    load_weights(model, ckpt)


def test_new_checkpoint_replaces_the_old(tmp_path: Path, gen: torch.Generator) -> None:
    model, opt = _trained(gen)
    _save(tmp_path, model, opt, 5)
    _save(tmp_path, model, opt, 10)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["LATEST", "step-00000010"]
    # Saving twice at one step (a resume that stops at once) keeps a valid checkpoint.
    again = _save(tmp_path, model, opt, 10)
    assert read_state(tmp_path)[0] == again and again.name == "step-00000010.1"


@pytest.mark.parametrize("fail_at", ["optimizer", "pointer"])
def test_crash_mid_write_keeps_the_previous_checkpoint(
    tmp_path: Path, gen: torch.Generator, monkeypatch: pytest.MonkeyPatch, fail_at: str
) -> None:
    model, opt = _trained(gen)
    _save(tmp_path, model, opt, 5)
    good = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)

    class Crash(Exception):
        pass

    if fail_at == "optimizer":
        def torch_save(obj: object, f: object) -> None:
            Path(f).write_bytes(b"partial")  # type: ignore[arg-type]
            raise Crash

        monkeypatch.setattr(ck.torch, "save", torch_save)
    else:
        real = ck.os.replace

        def replace(src: object, dst: object) -> None:
            if Path(dst).name == ck.LATEST:  # type: ignore[arg-type]
                raise Crash
            real(src, dst)  # type: ignore[arg-type]

        monkeypatch.setattr(ck.os, "replace", replace)
    with pytest.raises(Crash):
        _save(tmp_path, model, opt, 10)
    monkeypatch.undo()
    ckpt, state = read_state(tmp_path)
    assert state["step"] == 5
    fresh = _model()
    load_weights(fresh, ckpt)
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, good[k])
    # The next save cleans up what the crash left behind.
    _save(tmp_path, model, opt, 15)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["LATEST", "step-00000015"]


@pytest.fixture
def saved(tmp_path: Path, gen: torch.Generator) -> Path:
    model, opt = _trained(gen)
    return _save(tmp_path / "run", model, opt, 3)


def _load_all(path: Path) -> None:
    ckpt, _ = read_state(path)
    model = _model()
    load_weights(model, ckpt)
    load_optimizer_states({"adamw": torch.optim.AdamW(model.parameters())}, ckpt)


def _rewrite(ckpt: Path, name: str, data: bytes, update_digest: bool) -> None:
    (ckpt / name).write_bytes(data)
    if update_digest:  # a file that passes the checksum: the parser must catch the problem
        state = json.loads((ckpt / "state.json").read_text())
        state["files"][name] = ck._digest(ckpt / name)
        (ckpt / "state.json").write_text(json.dumps(state))


@pytest.mark.parametrize(("case", "needles"), [
    ("truncate_weights", ["model.safetensors", "truncated"]),
    ("flip_weights", ["model.safetensors", "corrupted", "SHA-256"]),
    ("garbage_weights", ["model.safetensors", "cannot be read as safetensors"]),
    ("garbage_optim", ["optim.pt", "cannot be read"]),
    ("truncate_optim_checked", ["optim.pt", "cannot be read"]),
    ("foreign_weights", ["not resnetbk weights"]),
    ("foreign_optim", ["optim.pt", "holds optimizer states ['sgd']", "['adamw']"]),
    ("missing_optim", ["optim.pt", "missing"]),
    ("state_not_json", ["state.json", "not valid JSON"]),
    ("state_wrong_tag", ["not a resnetbk language-model checkpoint", "'other-format'"]),
    ("state_no_files", ["lacks 'files'"]),
    ("state_future", ["format version 99", "upgrade"]),
    ("state_missing", ["state.json is missing"]),
    ("pointer_dangling", ["LATEST names 'step-00000099'", "does not exist"]),
])
def test_damaged_checkpoints_give_clear_errors(saved: Path, case: str,
                                               needles: list[str]) -> None:
    weights, optim = (saved / "model.safetensors").read_bytes(), (saved / "optim.pt").read_bytes()
    state = json.loads((saved / "state.json").read_text())
    if case == "truncate_weights":
        _rewrite(saved, "model.safetensors", weights[: len(weights) // 2], False)
    elif case == "flip_weights":
        _rewrite(saved, "model.safetensors", weights[:-1] + bytes([weights[-1] ^ 1]), False)
    elif case == "garbage_weights":
        _rewrite(saved, "model.safetensors", b"\x00garbage" * 50, True)
    elif case == "garbage_optim":
        _rewrite(saved, "optim.pt", b"not a zip file at all" * 10, True)
    elif case == "truncate_optim_checked":
        _rewrite(saved, "optim.pt", optim[: len(optim) // 2], True)
    elif case == "foreign_weights":
        safetensors.torch.save_file({k: v.contiguous() for k, v in _model().state_dict().items()},
                                    saved / "model.safetensors")
        _rewrite(saved, "model.safetensors", (saved / "model.safetensors").read_bytes(), True)
    elif case == "foreign_optim":
        torch.save({"sgd": {}}, saved / "optim.pt")
        _rewrite(saved, "optim.pt", (saved / "optim.pt").read_bytes(), True)
    elif case == "missing_optim":
        (saved / "optim.pt").unlink()
    elif case == "state_not_json":
        (saved / "state.json").write_text('{"format": "resnetbk-lm-chec')
    elif case == "state_wrong_tag":
        (saved / "state.json").write_text(json.dumps({**state, "format": "other-format"}))
    elif case == "state_no_files":
        del state["files"]
        (saved / "state.json").write_text(json.dumps(state))
    elif case == "state_future":
        (saved / "state.json").write_text(json.dumps({**state, "format_version": 99}))
    elif case == "state_missing":
        (saved / "state.json").unlink()
    elif case == "pointer_dangling":
        (saved.parent / "LATEST").write_text("step-00000099\n")
    with pytest.raises(CheckpointError) as info:
        _load_all(saved.parent.parent)
    msg = str(info.value)
    for needle in needles:
        assert needle in msg, (needle, msg)
    assert "Traceback" not in msg and len(msg) < 400


def test_shape_mismatch_names_the_tensor(saved: Path) -> None:
    with pytest.raises(CheckpointError, match=r"tensor '0.weight' has shape \(4, 3\) but the "
                       r"model expects \(5, 3\)"):
        load_weights(_model(out=5), saved)


def test_missing_and_unexpected_tensors(saved: Path) -> None:
    other = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2), nn.Linear(2, 2))
    with pytest.raises(CheckpointError, match=r"missing tensors '3.bias', '3.weight'"):
        load_weights(other, saved)
    with pytest.raises(CheckpointError, match=r"unexpected tensors '2.bias', '2.weight'"):
        load_weights(nn.Sequential(nn.Linear(3, 4)), saved)


def test_not_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        read_state(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        read_state(tmp_path / "empty")


def test_extra_state_round_trip_and_errors(tmp_path: Path, gen: torch.Generator) -> None:
    """Extra training state (e.g. SpecProp's DGMs) is saved beside the optimizers, verified
    by checksum like the other files and read back tensors-only; a missing entry, a missing
    file and a corrupted file are clear CheckpointErrors."""
    model, opt = _trained(gen)
    extra = {"specprop": {"t": 3, "stages": [{"cosine": torch.randn(4, generator=gen)}]}}
    save_checkpoint(tmp_path / "with", model=model, optimizers={"adamw": opt},
                    state={"step": 1, "config": {}}, extra=extra)
    ckpt, state = read_state(tmp_path / "with")
    assert "extra.pt" in state["files"]
    got = load_extra_state(ckpt, "specprop")
    assert got["t"] == 3 and torch.equal(got["stages"][0]["cosine"],
                                         extra["specprop"]["stages"][0]["cosine"])
    with pytest.raises(CheckpointError, match=r"holds \['specprop'\], not the other state"):
        load_extra_state(ckpt, "other")
    data = (ckpt / "extra.pt").read_bytes()
    (ckpt / "extra.pt").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(CheckpointError, match=r"extra\.pt is corrupted"):
        read_state(tmp_path / "with")
    _rewrite(ckpt, "extra.pt", b"not a zip file" * 10, True)
    with pytest.raises(CheckpointError, match=r"extra\.pt cannot be read"):
        load_extra_state(read_state(tmp_path / "with")[0], "specprop")
    plain = _save(tmp_path / "plain", model, opt, 1)
    assert "extra.pt" not in read_state(tmp_path / "plain")[1]["files"]
    with pytest.raises(CheckpointError, match="holds no specprop state"):
        load_extra_state(plain, "specprop")
