"""``resnetbk embed-tree`` end to end on a small balanced tree with a tiny budget."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from resnetbk.cli import build_parser, main

HAVE_MPL = importlib.util.find_spec("matplotlib") is not None


def test_embed_tree_cli_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    rc = main(["embed-tree", "--tree", "balanced", "--branching", "2", "--depth", "3",
               "--steps", "20", "--log-every", "10", "--seed", "3", "--manifold", "all",
               "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "[poincare] step" in text and "ETA" in text
    for name in ("poincare", "lorentz", "euclidean"):
        assert any(line.startswith(name) for line in text.splitlines())
    report = json.loads((out / "metrics.json").read_text())
    assert report["tree"]["nodes"] == 15 and report["tree"]["edges"] == 14
    assert set(report["runs"]) == {"poincare", "lorentz", "euclidean"}
    for run in report["runs"].values():
        assert run["config"]["steps"] == 20 and run["config"]["seed"] == 3
        for key in ("avg_distortion", "worst_distortion", "mean_rank", "map", "train_s"):
            assert key in run
    assert report["machine"]["torch"]
    if HAVE_MPL:
        png = out / "embedding.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert report["plot"] == str(png)


def test_embed_tree_cli_without_matplotlib(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec

    def fake(name: str, *args: object, **kwargs: object) -> object:
        return None if name == "matplotlib" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", fake)
    rc = main(["embed-tree", "--tree", "balanced", "--branching", "2", "--depth", "2",
               "--steps", "5", "--out", str(tmp_path)])
    assert rc == 0
    text = capsys.readouterr().out
    assert text.count("matplotlib is not installed") == 1
    assert (tmp_path / "metrics.json").is_file()
    assert not (tmp_path / "embedding.png").exists()


def test_embed_tree_defaults() -> None:
    args = build_parser().parse_args(["embed-tree"])
    assert args.tree == "stdlib" and args.dim == 2
    assert args.manifold == ["poincare", "euclidean"]
    assert args.out == "runs/embed-tree"


def test_embed_tree_rejects_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["embed-tree", "--folder", str(tmp_path), "--steps", "1",
               "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "no Python module" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    rc = main(["embed-tree", "--tree", "balanced", "--steps", "-3", "--out", str(tmp_path)])
    assert rc == 2
    assert "steps" in capsys.readouterr().err
