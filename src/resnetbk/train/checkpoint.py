"""Checkpoints of language-model training runs: written atomically, loaded with clear errors.

Layout under a run directory::

    RUN/checkpoints/LATEST                   name of the current checkpoint directory
    RUN/checkpoints/step-00000200/model.safetensors   weights (safetensors: no pickle)
    RUN/checkpoints/step-00000200/optim.pt            optimizer states (torch.save, tensors only)
    RUN/checkpoints/step-00000200/extra.pt            optional: other training state, e.g.
                                                      SpecProp's draft gradient models
    RUN/checkpoints/step-00000200/state.json          format tag, step, config, data id,
                                                      sizes and SHA-256 of the other files

A save writes a fresh directory (files fsynced), renames it into place, then replaces
``LATEST`` atomically (``os.replace`` of an fsynced temporary file) and only then deletes the
older checkpoint: a crash at any point leaves ``LATEST`` naming a complete checkpoint.
Loading verifies sizes and checksums before parsing, so a truncated or corrupted file is
reported as such; the weights are read with safetensors, the optimizer and extra state with
``torch.load(weights_only=True)``. Every problem raises ``CheckpointError`` naming the path.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import nn

import resnetbk
from resnetbk.model import build_model
from resnetbk.train.config import ConfigError, RunConfig

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "CheckpointError",
    "find_checkpoint",
    "load_extra_state",
    "load_optimizer_states",
    "load_trained_model",
    "load_weights",
    "read_state",
    "save_checkpoint",
]

FORMAT = "resnetbk-lm-checkpoint"
FORMAT_VERSION = 1
LATEST = "LATEST"
CKPT_DIR = "checkpoints"
MODEL_FILE = "model.safetensors"
OPTIM_FILE = "optim.pt"
EXTRA_FILE = "extra.pt"
STATE_FILE = "state.json"
_REQUIRED = {"format": str, "format_version": int, "step": int, "config": dict, "files": dict}


class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated, corrupted, foreign or does not fit the model."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _digest(path: Path) -> dict[str, Any]:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return {"bytes": path.stat().st_size, "sha256": h.hexdigest()}


def save_checkpoint(
    run_dir: str | Path,
    *,
    model: nn.Module,
    optimizers: Mapping[str, torch.optim.Optimizer],
    state: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint of ``model``, ``optimizers`` and ``state`` (JSON-serialisable, must
    hold ``step`` and ``config``) under ``run_dir/checkpoints``; return its directory.
    ``extra``: other training state by name (tensors, numbers, strings, lists and dicts of
    them: what ``torch.load(weights_only=True)`` reads), see :func:`load_extra_state`.

    The previous checkpoint stays valid until this one is complete (module docstring).
    """
    root = Path(run_dir) / CKPT_DIR
    root.mkdir(parents=True, exist_ok=True)
    step = int(state["step"])
    tmp = root / f".tmp-step-{step:08d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    # Tied weights share storage, which safetensors refuses: store each name's own copy.
    tensors = {k: v.detach().to("cpu", copy=True).contiguous()
               for k, v in model.state_dict().items()}
    safetensors.torch.save_file(tensors, tmp / MODEL_FILE,
                                metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
    torch.save({name: opt.state_dict() for name, opt in optimizers.items()}, tmp / OPTIM_FILE)
    files = [MODEL_FILE, OPTIM_FILE]
    if extra:
        torch.save(dict(extra), tmp / EXTRA_FILE)
        files.append(EXTRA_FILE)
    for name in files:
        _fsync_file(tmp / name)
    full_state = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "resnetbk_version": resnetbk.__version__,
        "torch_version": torch.__version__,
        **state,
        "files": {name: _digest(tmp / name) for name in files},
    }
    with open(tmp / STATE_FILE, "w") as f:
        json.dump(full_state, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(tmp)

    current = _latest_name(root)
    name = f"step-{step:08d}"
    n = 1
    while (root / name).exists():  # a stale directory of a crashed save, or the current one
        if name != current:
            shutil.rmtree(root / name)
            continue
        name = f"step-{step:08d}.{n}"
        n += 1
    os.replace(tmp, root / name)
    _fsync_dir(root)
    pointer = root / f".{LATEST}.tmp"
    with open(pointer, "w") as f:
        f.write(name + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(pointer, root / LATEST)
    _fsync_dir(root)
    for old in root.iterdir():  # the previous checkpoint and leftovers of crashed saves
        if old.name != name and old.is_dir():
            shutil.rmtree(old)
    return root / name


def _latest_name(root: Path) -> str | None:
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    return pointer.read_text().strip() or None


def find_checkpoint(path: str | Path) -> Path | None:
    """The checkpoint directory that ``path`` names: a run directory, its ``checkpoints``
    folder or a checkpoint directory itself; None when there is none (and no ``LATEST``)."""
    path = Path(path)
    if (path / STATE_FILE).is_file() or (path / MODEL_FILE).is_file():
        return path
    for root in (path / CKPT_DIR, path):
        name = _latest_name(root)
        if name is not None:
            target = root / name
            if not target.is_dir():
                raise CheckpointError(f"{root / LATEST} names {name!r}, which does not exist in "
                                      f"{root}: the checkpoint folder was modified by hand")
            return target
    return None


def read_state(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """(checkpoint directory, verified ``state.json``) for a run or checkpoint ``path``.

    Checks the format tag and version, the required keys, and the size and SHA-256 of the
    weight, optimizer and (if present) extra-state files.
    """
    ckpt = find_checkpoint(path)
    if ckpt is None:
        what = "does not exist" if not Path(path).exists() else "holds no checkpoint"
        raise CheckpointError(f"{path} {what} (expected a run directory from `resnetbk train` "
                              f"or one of its checkpoints/step-* directories)")
    state_path = ckpt / STATE_FILE
    if not state_path.is_file():
        raise CheckpointError(f"{ckpt} is not a complete checkpoint: {STATE_FILE} is missing")
    try:
        state = json.loads(state_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{state_path} is not valid JSON (truncated or corrupted): "
                              f"{e}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{state_path} is not a resnetbk language-model checkpoint "
                              f"(format {found!r}, expected {FORMAT!r})")
    for key, kind in _REQUIRED.items():
        if not isinstance(state.get(key), kind):
            raise CheckpointError(f"{state_path} lacks {key!r} (or it is not a "
                                  f"{kind.__name__}): not a complete {FORMAT}")
    if state["format_version"] > FORMAT_VERSION:
        raise CheckpointError(f"{state_path} has format version {state['format_version']}, "
                              f"newer than this resnetbk ({resnetbk.__version__}) reads "
                              f"({FORMAT_VERSION}): upgrade resnetbk")
    for name in (MODEL_FILE, OPTIM_FILE):
        _verify_file(ckpt / name, state["files"].get(name))
    if EXTRA_FILE in state["files"]:
        _verify_file(ckpt / EXTRA_FILE, state["files"][EXTRA_FILE])
    return ckpt, state


def _verify_file(path: Path, expected: Any) -> None:
    if not isinstance(expected, dict) or not {"bytes", "sha256"} <= expected.keys():
        raise CheckpointError(f"{path.parent / STATE_FILE} has no size and checksum for "
                              f"{path.name}: not a complete {FORMAT}")
    if not path.is_file():
        raise CheckpointError(f"{path} is missing from the checkpoint")
    size = path.stat().st_size
    if size != expected["bytes"]:
        raise CheckpointError(f"{path} is truncated or altered: {size} bytes, the checkpoint "
                              f"recorded {expected['bytes']}")
    if _digest(path)["sha256"] != expected["sha256"]:
        raise CheckpointError(f"{path} is corrupted: its SHA-256 checksum does not match the "
                              f"one recorded in {STATE_FILE}")


def load_weights(model: nn.Module, ckpt: Path) -> None:
    """Load ``ckpt/model.safetensors`` into ``model`` after checking names and shapes."""
    path = ckpt / MODEL_FILE
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except (safetensors.SafetensorError, OSError) as e:
        raise CheckpointError(f"{path} cannot be read as safetensors (corrupted?): {e}") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not resnetbk weights (metadata format "
                              f"{meta.get('format')!r}, expected {FORMAT!r})")
    expected = model.state_dict()
    missing = sorted(expected.keys() - tensors.keys())
    unexpected = sorted(tensors.keys() - expected.keys())
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing tensors {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected tensors {_short(unexpected)}")
        raise CheckpointError(f"{path} does not match the model built from its config: "
                              f"{'; '.join(parts)}")
    for k, want in expected.items():
        t = tensors[k]
        if t.shape != want.shape:
            raise CheckpointError(f"{path}: tensor {k!r} has shape {tuple(t.shape)} but the model "
                                  f"expects {tuple(want.shape)}")
        if t.dtype != want.dtype:
            raise CheckpointError(f"{path}: tensor {k!r} has dtype {t.dtype} but the model "
                                  f"expects {want.dtype}")
    model.load_state_dict(tensors)


def _short(names: list[str], n: int = 5) -> str:
    more = f" and {len(names) - n} more" if len(names) > n else ""
    return ", ".join(repr(k) for k in names[:n]) + more


def _load_tensors_only(path: Path, why: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; CheckpointError if it fails."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile, OSError) as e:
        # torch's messages run to several sentences of advice: keep the first one.
        first = str(e).strip().split(". ")[0].splitlines()[0] if str(e).strip() \
            else type(e).__name__
        raise CheckpointError(f"{path} cannot be read ({why}): {first}") from None


def load_optimizer_states(optimizers: Mapping[str, torch.optim.Optimizer], ckpt: Path) -> None:
    """Load ``ckpt/optim.pt`` (tensors only: ``weights_only=True``) into ``optimizers``."""
    path = ckpt / OPTIM_FILE
    states = _load_tensors_only(path, "corrupted, or not a resnetbk optimizer state")
    if not isinstance(states, dict) or set(states) != set(optimizers):
        found = sorted(states) if isinstance(states, dict) else type(states).__name__
        raise CheckpointError(f"{path} holds optimizer states {found}, but this model needs "
                              f"{sorted(optimizers)}")
    for name, opt in optimizers.items():
        try:
            opt.load_state_dict(states[name])
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{path}: the {name} state does not fit this model's "
                                  f"parameters: {e}") from None


def load_extra_state(ckpt: Path, name: str) -> Any:
    """The entry ``name`` of ``ckpt/extra.pt`` (``save_checkpoint(extra=...)``; read with
    ``weights_only=True``, after :func:`read_state` verified the file)."""
    path = ckpt / EXTRA_FILE
    if not path.is_file():
        raise CheckpointError(f"{ckpt} holds no {name} state ({EXTRA_FILE} is missing): it was "
                              f"written by a run without {name}")
    extra = _load_tensors_only(path, "corrupted?")
    if not isinstance(extra, dict) or name not in extra:
        found = sorted(extra) if isinstance(extra, dict) else type(extra).__name__
        raise CheckpointError(f"{path} holds {found}, not the {name} state")
    return extra[name]


def load_trained_model(
    path: str | Path, device: torch.device | str = "cpu"
) -> tuple[nn.Module, RunConfig, dict[str, Any]]:
    """(model in eval mode on ``device``, its run config, its verified state) from a run or
    checkpoint directory."""
    ckpt, state = read_state(path)
    try:
        run = RunConfig.from_dict(state["config"])
        run.validate()
    except ConfigError as e:
        raise CheckpointError(f"{ckpt / STATE_FILE}: the stored config cannot be used by this "
                              f"version of resnetbk: {e}") from None
    model = build_model(run.model)
    load_weights(model, ckpt)
    return model.to(device).eval(), run, state
