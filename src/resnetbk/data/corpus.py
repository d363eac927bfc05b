"""Byte corpora for the byte language model: discovery, deterministic splits, a memory-mapped
cache, and window sampling. Nothing is ever downloaded.

``load_corpus()`` with no paths uses the Python standard library source of the running
interpreter (every ``*.py`` under ``sysconfig.get_paths()["stdlib"]``, without
``site-packages``/``dist-packages``/``__pycache__``). ``load_corpus(paths)`` takes files,
folders (recursive; hidden names skipped and listed) and glob patterns.

Files are split by a hash of their name (``file-hash`` rule); if that leaves a held-out split
empty, the concatenated bytes are split by position instead (``position`` rule, recorded in the
manifest). Each split is the plain concatenation of its files' bytes in name order (no
separator) stored as ``<split>.bin`` next to ``manifest.json`` (content only: names, sizes,
sha256s, split rule; identical on every machine for identical files) and ``sources.json``
(machine-local stat cache: absolute paths, mtimes). Layout, fields and errors: docs/DATA.md.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import platform
import stat
import sysconfig
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "SPLITS",
    "Corpus",
    "DataError",
    "iter_windows",
    "load_corpus",
    "sample_windows",
]

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
FORMAT = "resnetbk-corpus"
VERSION = 1
# Files fall into one of BUCKETS hash buckets; fractions are resolved to 1/BUCKETS.
BUCKETS = 10_000
# Folders never entered in the default (stdlib) corpus.
STDLIB_EXCLUDED = frozenset({"site-packages", "dist-packages", "__pycache__"})
_CHUNK = 1 << 20
_GLOB_CHARS = frozenset("*?[")


class DataError(ValueError):
    """Unusable corpus input or cache: the message names the offending path or pattern."""


@dataclass(frozen=True)
class _Source:
    """One input file: its corpus name (relative, '/'-separated), where it is, its stat."""

    name: str
    path: str
    size: int
    mtime_ns: int

    def stat_record(self) -> list[Any]:
        return [self.name, self.path, self.size, self.mtime_ns]


# ---- the corpus ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Corpus:
    """A built corpus: the cache directory ``root`` and its parsed ``manifest.json``.

    ``split(name)`` memory-maps ``root/<name>.bin`` read-only; the manifest is content-only
    (see docs/DATA.md), so equal manifests mean equal bytes in every split.
    """

    root: Path
    manifest: dict

    def split(self, name: str) -> np.ndarray:
        """The bytes of split ``name`` (``'train'``, ``'val'`` or ``'test'``) as a read-only
        uint8 ``np.memmap``. Raises ValueError for another name, an empty split, or a split
        file whose size no longer matches the manifest (modified after loading)."""
        if name not in SPLITS:
            raise ValueError(f"split must be 'train', 'val' or 'test', got {name!r}")
        info = self.manifest["splits"][name]
        n = int(info["bytes"])
        if n == 0:
            raise ValueError(
                f"the {name} split of this corpus is empty ({self.description}); use more "
                "data or a larger fraction for it"
            )
        path = self.root / info["file"]
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            size = None
        if size != n:
            # Checked on every call: mapping a truncated file would read garbage or SIGBUS.
            found = "missing" if size is None else f"{size} bytes"
            raise DataError(
                f"corpus cache file {path} is {found}, its manifest says {n} bytes: the cache "
                "was changed after loading; call load_corpus again to rebuild it"
            )
        return np.memmap(path, dtype=np.uint8, mode="r", shape=(n,))

    @property
    def description(self) -> str:
        """One line: the source and the bytes of each split."""
        m = self.manifest
        src = m["source"]
        if src["kind"] == "stdlib":
            what = f"{src['implementation']} {src['python']} stdlib source"
        else:
            inputs = src["inputs"]
            shown = ", ".join(inputs[:3]) + (f", +{len(inputs) - 3} more" if len(inputs) > 3
                                             else "")
            what = f"data [{shown}]"
        sizes = ", ".join(f"{s} {m['splits'][s]['bytes']:,} B" for s in SPLITS)
        return f"{what}: {len(m['files'])} files; {sizes} ({m['rule']['name']} split)"


# ---- discovery -----------------------------------------------------------------------------
def _probe(path: str, shown: str) -> os.stat_result:
    """Stat of a regular file, opened once so unreadable files fail here (also for root-owned
    trees, where os.access lies to root)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        raise DataError(f"cannot read data file {shown}: {e.strerror or e}") from None
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def _stdlib_sources() -> tuple[list[_Source], dict[str, Any], str]:
    root = sysconfig.get_paths()["stdlib"]
    if not os.path.isdir(root):
        raise DataError(f"the standard library folder {root} does not exist")
    sources = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in STDLIB_EXCLUDED)
        for fn in filenames:
            if not fn.endswith(".py"):
                continue
            path = os.path.join(dirpath, fn)
            st = _probe(path, path)
            if not stat.S_ISREG(st.st_mode):
                continue
            name = Path(os.path.relpath(path, root)).as_posix()
            sources.append(_Source(name, path, st.st_size, st.st_mtime_ns))
    if not sources:
        raise DataError(f"the standard library folder {root} holds no *.py file")
    source = {
        "kind": "stdlib",
        "implementation": platform.python_implementation(),
        "python": platform.python_version(),
        "include": "*.py",
        "exclude_dirs": sorted(STDLIB_EXCLUDED),
    }
    return sorted(sources, key=lambda s: s.name), source, root


def _walk_folder(
    folder: str, prefix: str, cache_root: str, skipped: list[dict[str, str]]
) -> list[_Source]:
    """Every regular file under ``folder`` (not following folder symlinks), named
    ``prefix/<relative path>``; hidden names and non-regular files are skipped and listed in
    ``skipped``, the corpus cache itself is left out."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder, onerror=_raise_walk_error):
        rel = os.path.relpath(dirpath, folder)
        base = prefix if rel == "." else f"{prefix}/{Path(rel).as_posix()}"
        keep = []
        for d in sorted(dirnames):
            full = os.path.join(dirpath, d)
            if d.startswith("."):
                skipped.append({"path": f"{base}/{d}/", "reason": "hidden folder"})
            elif os.path.islink(full):
                skipped.append({"path": f"{base}/{d}/", "reason": "symlink to a folder"})
            elif os.path.realpath(full) == cache_root:
                pass  # our own output (not listed: it may not exist yet)
            else:
                keep.append(d)
        dirnames[:] = keep
        for fn in sorted(filenames):
            full = os.path.join(dirpath, fn)
            name = f"{base}/{fn}"
            if fn.startswith("."):
                skipped.append({"path": name, "reason": "hidden file"})
                continue
            try:
                mode = os.stat(full).st_mode
            except OSError as e:  # e.g. a dangling symlink
                raise DataError(f"cannot read data file {full}: {e.strerror or e}") from None
            if not stat.S_ISREG(mode):
                skipped.append({"path": name, "reason": "not a regular file"})
                continue
            st = _probe(full, full)
            out.append(_Source(name, os.path.abspath(full), st.st_size, st.st_mtime_ns))
    return out


def _raise_walk_error(e: OSError) -> None:
    raise DataError(f"cannot list data folder {e.filename}: {e.strerror or e}")


def _path_sources(
    paths: Sequence[str | os.PathLike[str]], cache_root: str
) -> tuple[list[_Source], dict[str, Any], list[dict[str, str]]]:
    sources: list[_Source] = []
    skipped: list[dict[str, str]] = []
    inputs = []
    for p in paths:
        text = os.fspath(p)
        if not isinstance(text, str):
            raise DataError(f"data paths must be str or os.PathLike[str], got {p!r}")
        if not text:
            raise DataError("an empty string is not a data path")
        matches = [text]
        if not os.path.lexists(text):
            # Only strings with glob characters are patterns; a plain missing path is an error.
            if isinstance(p, str) and _GLOB_CHARS & set(text):
                matches = sorted(glob.glob(text, recursive=True))
                if not matches:
                    raise DataError(f"data pattern {text!r} matches no file or folder")
            else:
                raise DataError(f"data path {text} does not exist")
        if matches == [text]:
            base, label = text, _display(text)
            inputs.append(label)
        else:
            # Matches are named from the pattern's fixed leading folder: "data/**/*.txt"
            # names data/sub/a.txt "data/sub/a.txt" wherever data/ is.
            base = _fixed_prefix(text)
            label = _display(base)
            inputs.append(f"{label}/{Path(os.path.relpath(text, base)).as_posix()}")
        for m in matches:
            name = label if m == base else \
                f"{label}/{Path(os.path.relpath(m, base)).as_posix()}"
            if os.path.isdir(m):
                if _inside(os.path.realpath(m), cache_root):
                    continue  # our own output (not listed: it may not exist yet)
                sources += _walk_folder(m, name, cache_root, skipped)
            elif os.path.isfile(m):
                if _inside(os.path.realpath(m), cache_root):
                    continue  # our own output (not listed: it may not exist yet)
                st = _probe(m, m)
                sources.append(_Source(name, os.path.abspath(m), st.st_size, st.st_mtime_ns))
            else:
                raise DataError(f"data path {m} is neither a regular file nor a folder")
    # One entry per real file (a file reached twice counts once), then sorted by name.
    seen: set[str] = set()
    unique = []
    for s in sources:
        real = os.path.realpath(s.path)
        if real not in seen:
            seen.add(real)
            unique.append(s)
    unique.sort(key=lambda s: (s.name, s.path))
    if not unique:
        raise DataError(
            f"no data file found in {', '.join(map(os.fspath, paths))}"
            + (f" (skipped: {_skipped_text(skipped)})" if skipped else "")
        )
    if sum(s.size for s in unique) == 0:
        raise DataError(
            f"all {len(unique)} data files are empty: "
            + ", ".join(s.path for s in unique[:5]) + (" ..." if len(unique) > 5 else "")
        )
    return unique, {"kind": "paths", "inputs": inputs}, skipped


def _fixed_prefix(pattern: str) -> str:
    """The leading folders of a glob pattern that hold no glob character ("." if none)."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts[:-1]:
        if _GLOB_CHARS & set(part):
            break
        fixed.append(part)
    return str(Path(*fixed)) if fixed else "."


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _display(path: str) -> str:
    """Machine-independent name of an input: its last component (the folder or file name)."""
    name = Path(os.path.abspath(path)).name
    return name or "/"


def _skipped_text(skipped: list[dict[str, str]]) -> str:
    head = ", ".join(f"{s['path']} ({s['reason']})" for s in skipped[:5])
    return head + (f", +{len(skipped) - 5} more" if len(skipped) > 5 else "")


# ---- splitting -----------------------------------------------------------------------------
def _bucket(name: str) -> int:
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def _assign(sources: list[_Source], val_fraction: float, test_fraction: float) -> list[str]:
    """file-hash rule: test below round(test*BUCKETS), then val, then train."""
    t = round(test_fraction * BUCKETS)
    v = t + round(val_fraction * BUCKETS)
    out = []
    for s in sources:
        b = _bucket(s.name)
        out.append("test" if b < t else "val" if b < v else "train")
    return out


def _plan(
    sources: list[_Source], val_fraction: float, test_fraction: float
) -> tuple[dict[str, Any], list[str] | None, dict[str, tuple[int, int]] | None]:
    """The split rule: per-file splits (file-hash) or byte ranges of the concatenation
    (position) when a held-out split with a positive fraction would get no bytes."""
    rule: dict[str, Any] = {
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "buckets": BUCKETS,
    }
    assign = _assign(sources, val_fraction, test_fraction)
    nbytes = dict.fromkeys(SPLITS, 0)
    for s, a in zip(sources, assign, strict=True):
        nbytes[a] += s.size
    wanted = {"train": 1.0, "val": val_fraction, "test": test_fraction}
    empty = [k for k in SPLITS if wanted[k] > 0 and nbytes[k] == 0]
    if not empty:
        return {"name": "file-hash", **rule}, assign, None
    total = sum(s.size for s in sources)
    # floor keeps train non-empty: total - floor(a) - floor(b) >= total * (1 - fv - ft) > 0.
    n_val, n_test = int(total * val_fraction), int(total * test_fraction)
    ranges = {
        "train": (0, total - n_val - n_test),
        "val": (total - n_val - n_test, total - n_test),
        "test": (total - n_test, total),
    }
    reason = (f"the file-hash split of {len(sources)} files leaves {' and '.join(empty)} "
              "without bytes")
    log.info("corpus: %s; splitting by position instead", reason)
    return {"name": "position", **rule, "reason": reason}, None, ranges


# ---- building ------------------------------------------------------------------------------
class _SplitWriter:
    """A temporary split file in the cache folder, hashed and counted as it is written."""

    def __init__(self, root: Path, name: str) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=root)
        self.name, self.tmp = name, Path(tmp)
        self.file = os.fdopen(fd, "wb")
        self.sha = hashlib.sha256()
        self.bytes = 0

    def write(self, chunk: bytes | memoryview) -> None:
        self.file.write(chunk)
        self.sha.update(chunk)
        self.bytes += len(chunk)

    def commit(self, final: Path) -> None:
        # fsync before the rename: after a crash the name points at complete bytes or nothing.
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp, final)

    def discard(self) -> None:
        if not self.file.closed:
            self.file.close()
        self.tmp.unlink(missing_ok=True)


def _build(
    root: Path,
    sources: list[_Source],
    source_info: dict[str, Any],
    skipped: list[dict[str, str]],
    val_fraction: float,
    test_fraction: float,
    key_info: dict[str, Any],
) -> dict[str, Any]:
    root.mkdir(parents=True, exist_ok=True)
    # The manifest goes first and comes back last, so an interrupted build never looks valid.
    for name in ("manifest.json", "sources.json"):
        (root / name).unlink(missing_ok=True)
    rule, assign, ranges = _plan(sources, val_fraction, test_fraction)
    writers = {k: _SplitWriter(root, k) for k in SPLITS}
    files: list[dict[str, Any]] = []
    stats: list[list[Any]] = []
    position = 0  # offset in the concatenation of all files (position rule)
    try:
        for i, s in enumerate(sources):
            if ranges is None:
                assert assign is not None
                target = writers[assign[i]]
                entry = {"name": s.name, "size": 0, "sha256": "", "split": assign[i],
                         "offset": target.bytes}

                def sink(chunk: memoryview, target: _SplitWriter = target) -> None:
                    target.write(chunk)
            else:
                entry = {"name": s.name, "size": 0, "sha256": "", "split": None,
                         "offset": position}
                cursor = [position]  # advances chunk by chunk within the file

                def sink(chunk: memoryview, cursor: list[int] = cursor) -> None:
                    _route(chunk, cursor[0], ranges, writers)
                    cursor[0] += len(chunk)

            sha, size, mtime_ns = _copy(s, sink)
            entry["size"], entry["sha256"] = size, sha
            files.append(entry)
            stats.append([s.name, s.path, size, mtime_ns])
            position += size
        splits: dict[str, Any] = {}
        split_stats: dict[str, list[int]] = {}
        for k, w in writers.items():
            final = root / f"{k}.bin"
            w.commit(final)
            st = final.stat()
            splits[k] = {"file": final.name, "bytes": w.bytes, "sha256": w.sha.hexdigest(),
                         "files": sum(1 for f in files if f["split"] == k)}
            split_stats[k] = [st.st_size, st.st_mtime_ns]
    finally:
        for w in writers.values():
            w.discard()

    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "source": source_info,
        "rule": rule,
        "total_bytes": position,
        "splits": splits,
        "files": files,
        "skipped": skipped,
    }
    _write_json(root / "sources.json", {"key": key_info, "files": stats, "splits": split_stats})
    _write_json(root / "manifest.json", manifest)
    return manifest


def _route(
    chunk: memoryview, start: int, ranges: dict[str, tuple[int, int]],
    writers: dict[str, _SplitWriter],
) -> None:
    """Write the bytes [start, start + len(chunk)) of the concatenation to their splits."""
    end = start + len(chunk)
    for k, (lo, hi) in ranges.items():
        a, b = max(lo, start), min(hi, end)
        if a < b:
            writers[k].write(chunk[a - start : b - start])


def _copy(s: _Source, sink: Any) -> tuple[str, int, int]:
    """Stream one source into ``sink``; (sha256 hex, size, mtime_ns). A file that changes
    size while being read is an error rather than a silently inconsistent cache."""
    sha = hashlib.sha256()
    size = 0
    try:
        with open(s.path, "rb") as f:
            st = os.fstat(f.fileno())
            buf = bytearray(_CHUNK)
            view = memoryview(buf)
            while n := f.readinto(buf):
                chunk = view[:n]
                sha.update(chunk)
                sink(chunk)
                size += n
    except OSError as e:
        raise DataError(f"cannot read data file {s.path}: {e.strerror or e}") from None
    if size != st.st_size:
        raise DataError(f"data file {s.path} changed while it was read ({st.st_size} bytes "
                        f"before, {size} read)")
    return sha.hexdigest(), size, st.st_mtime_ns


def _write_json(path: Path, obj: Any) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=1, ensure_ascii=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


# ---- loading -------------------------------------------------------------------------------
def _cache_base() -> Path:
    env = os.environ.get("RESNETBK_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "resnetbk"


_OURS = ("manifest.json", "sources.json", *(f"{k}.bin" for k in SPLITS))


def _check_cache_dir(root: Path) -> None:
    """Refuse to write into a folder holding anything but a corpus cache (e.g. a data folder
    passed by mistake): a rebuild replaces the files there."""
    if not root.exists():
        return
    if not root.is_dir():
        raise DataError(f"corpus cache {root} exists and is not a folder")
    foreign = [p.name for p in root.iterdir()
               if p.name not in _OURS and not (p.name.startswith(".") and p.name.endswith(".tmp"))]
    if foreign:
        raise DataError(f"corpus cache folder {root} holds other files ({', '.join(foreign[:3])}"
                        f"{' ...' if len(foreign) > 3 else ''}); choose an empty folder")


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None


def _stale_reason(
    root: Path,
    sources: list[_Source],
    source_info: dict[str, Any],
    skipped: list[dict[str, str]],
    key_info: dict[str, Any],
) -> tuple[str | None, dict[str, Any] | None]:
    """(why the cache cannot be used or None, the manifest)."""
    manifest = _read_json(root / "manifest.json")
    if manifest is None:
        return "no cache yet", None
    recorded = _read_json(root / "sources.json")
    if not isinstance(manifest, dict) or not isinstance(recorded, dict):
        return "unreadable cache metadata", None
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        return f"cache format {manifest.get('format')} v{manifest.get('version')}", None
    if recorded.get("key") != key_info:
        return "built from other sources or split fractions", None
    if recorded.get("files") != [s.stat_record() for s in sources]:
        return "the source files changed (names, sizes or mtimes)", None
    if manifest.get("source") != source_info or manifest.get("skipped") != skipped:
        return "the source description or the skipped entries changed", None
    try:
        for k in SPLITS:
            info = manifest["splits"][k]
            path = root / info["file"]
            try:
                st = path.stat()
            except FileNotFoundError:
                return f"{path.name} is missing", None
            if st.st_size != info["bytes"]:
                return f"{path.name} has {st.st_size} bytes, the manifest says {info['bytes']}", \
                    None
            # Same size but touched since the build: verify the content (a full hash).
            if [st.st_size, st.st_mtime_ns] != recorded["splits"][k] \
                    and _sha256_file(path) != info["sha256"]:
                return f"{path.name} does not match its sha256", None
    except (KeyError, TypeError):
        return "malformed manifest", None
    return None, manifest


def _validate_fractions(val_fraction: float, test_fraction: float) -> None:
    for name, v in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {v!r}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError("val_fraction + test_fraction must be < 1 (the rest is training "
                         f"data), got {val_fraction + test_fraction}")


def load_corpus(
    paths: Sequence[str | os.PathLike[str]] | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    val_fraction: float = 0.05,
    test_fraction: float = 0.05,
) -> Corpus:
    """Build (or reuse) the cached corpus of ``paths`` and return it.

    ``paths``: files, folders (recursive; hidden names skipped and listed in the manifest) and
    glob patterns (``str`` only, ``**`` allowed); a single path is accepted too. None: the
    standard library source of the running interpreter.
    ``cache_dir``: the folder for this corpus (default
    ``$RESNETBK_CACHE/corpus/<key>``, ``RESNETBK_CACHE`` defaulting to ``~/.cache/resnetbk``;
    ``<key>`` hashes the resolved inputs and fractions). It is rebuilt when the source files
    (names, sizes, mtimes) or fractions changed or a split file is damaged.
    ``val_fraction``/``test_fraction``: shares of the held-out splits (file-hash rule, or the
    position rule when a held-out split would get no bytes; docs/DATA.md).

    Raises ``DataError`` (a ValueError) naming the path or pattern for a missing path, a pattern
    without matches, an unreadable file, no files or only empty files, and ValueError for bad
    fractions.
    """
    _validate_fractions(val_fraction, test_fraction)
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if paths is not None and len(paths) == 0:
        raise DataError("no data paths given (pass None for the standard library corpus)")
    key_info: dict[str, Any] = {"version": VERSION, "val_fraction": val_fraction,
                                "test_fraction": test_fraction}
    if paths is None:
        key_info["stdlib"] = sysconfig.get_paths()["stdlib"]
    else:
        key_info["paths"] = [os.path.abspath(os.fspath(p)) for p in paths]
    if cache_dir is None:
        digest = hashlib.sha256(json.dumps(key_info, sort_keys=True).encode()).hexdigest()
        root = _cache_base() / "corpus" / digest[:16]
    else:
        root = Path(cache_dir).expanduser()
    root = root.absolute()
    _check_cache_dir(root)

    if paths is None:
        sources, source_info, _ = _stdlib_sources()
        skipped: list[dict[str, str]] = []
    else:
        sources, source_info, skipped = _path_sources(paths, os.path.realpath(root))
    reason, manifest = _stale_reason(root, sources, source_info, skipped, key_info)
    if reason is None:
        assert manifest is not None
        return Corpus(root=root, manifest=manifest)
    total = sum(s.size for s in sources)
    level = logging.INFO if reason == "no cache yet" else logging.WARNING
    log.log(level, "corpus cache %s: %s; building (%d files, %d bytes)", root, reason,
            len(sources), total)
    if skipped:
        log.info("corpus: skipped %d entries: %s", len(skipped), _skipped_text(skipped))
    manifest = _build(root, sources, source_info, skipped, val_fraction, test_fraction,
                      key_info)
    corpus = Corpus(root=root, manifest=manifest)
    for k in ("val", "test"):
        share = val_fraction if k == "val" else test_fraction
        if share > 0 and manifest["splits"][k]["bytes"] == 0:
            log.warning("corpus: the %s split is empty (%d bytes in all)", k, total)
    return corpus


# ---- windows -------------------------------------------------------------------------------
def _check_data(data: np.ndarray, length: int) -> None:
    if not isinstance(data, np.ndarray) or data.ndim != 1 or data.dtype != np.uint8:
        raise ValueError(f"data must be a 1-D uint8 array (a corpus split), got "
                         f"{type(data).__name__} {getattr(data, 'dtype', '')} "
                         f"{getattr(data, 'shape', '')}")
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"length must be a positive int, got {length!r}")
    if len(data) < length:
        raise ValueError(f"the split has {len(data)} bytes, fewer than one window of "
                         f"length {length}: it must hold at least {length} bytes (use a "
                         "shorter length or more data)")


def sample_windows(
    data: np.ndarray, batch: int, length: int, generator: torch.Generator
) -> torch.Tensor:
    """``batch`` random contiguous windows of ``length`` bytes of ``data``: an int64 tensor
    (batch, length) on the CPU, values in [0, 255].

    Starts are uniform in [0, len(data) - length], drawn by one ``torch.randint`` call on
    ``generator``, so equal generators give equal batches (what resumed training relies on).
    Raises ValueError when ``data`` is shorter than ``length``.
    """
    _check_data(data, length)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive int, got {batch!r}")
    starts = torch.randint(0, len(data) - length + 1, (batch,), generator=generator,
                           device=generator.device).tolist()
    # Row slices of the memmap read only the pages of the windows.
    rows = np.stack([data[s : s + length] for s in starts])
    return torch.from_numpy(rows).to(torch.int64)


def _window_starts(n_bytes: int, length: int, max_windows: int | None) -> np.ndarray:
    """Starts of the disjoint windows: all of them, or ``max_windows`` evenly spaced ones."""
    total = n_bytes // length
    if max_windows is None or max_windows >= total:
        return np.arange(total, dtype=np.int64) * length
    # Distinct indices because max_windows < total.
    idx = np.floor(np.arange(max_windows) * (total / max_windows)).astype(np.int64)
    return idx * length


def iter_windows(
    data: np.ndarray, length: int, batch: int, *, max_windows: int | None = None
) -> Iterator[torch.Tensor]:
    """Consecutive non-overlapping windows ``data[i*length:(i+1)*length]`` (the tail shorter
    than ``length`` is dropped), as int64 tensors of up to ``batch`` rows, in order.

    With ``max_windows`` smaller than the number of windows, window indices
    ``floor(j * total / max_windows)`` for j < max_windows are taken (evenly spread,
    deterministic). Raises ValueError when ``data`` is shorter than ``length``.
    """
    _check_data(data, length)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive int, got {batch!r}")
    if max_windows is not None and (isinstance(max_windows, bool) or max_windows < 1):
        raise ValueError(f"max_windows must be a positive int or None, got {max_windows!r}")
    starts = _window_starts(len(data), length, max_windows)
    for i in range(0, len(starts), batch):
        rows = np.stack([data[s : s + length] for s in starts[i : i + batch]])
        yield torch.from_numpy(rows).to(torch.int64)
