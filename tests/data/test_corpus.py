"""Byte corpus: stdlib discovery, deterministic splits, cache reuse/rebuild/damage, errors,
window sampling. User data is fresh random bytes each run (seeded by the run seed)."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch

from resnetbk.data import DataError, corpus, iter_windows, load_corpus, sample_windows

STDLIB = Path(sysconfig.get_paths()["stdlib"])
LOGGER = "resnetbk.data.corpus"
# Held-out fractions for random trees of 100 files: a split gets no file with p < 1e-9, so
# the file-hash rule applies (the position fallback is tested on its own).
FR = {"val_fraction": 0.2, "test_fraction": 0.2}


def bucket(name: str) -> int:
    """The documented rule, written independently: sha256(name) first 8 bytes mod 10000."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % 10_000


def expected_split(name: str, val: float, test: float) -> str:
    b = bucket(name)
    t = round(test * 10_000)
    return "test" if b < t else "val" if b < t + round(val * 10_000) else "train"


def random_tree(root: Path, gen: torch.Generator, n_files: int = 100) -> dict[str, bytes]:
    """Random files (random names, sizes 0..3000, some nested) under root/'data'; returns
    {corpus name: bytes}. Also hidden entries that must not appear in the corpus."""
    data = root / "data"
    files: dict[str, bytes] = {}
    for i in range(n_files):
        size = int(torch.randint(0, 3000, (1,), generator=gen))
        body = bytes(torch.randint(0, 256, (size,), generator=gen, dtype=torch.uint8).tolist())
        tag = int(torch.randint(0, 10**9, (1,), generator=gen))
        rel = f"sub{i % 3}/f{tag}_{i}.bin" if i % 2 else f"f{tag}_{i}.txt"
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_bytes(body)
        files[f"data/{rel}"] = body
    (data / ".git").mkdir()
    (data / ".git" / "HEAD").write_bytes(b"HIDDEN-DIR-CONTENT")
    (data / ".hidden").write_bytes(b"HIDDEN-FILE-CONTENT")
    return files


def split_bytes(c: corpus.Corpus, name: str) -> bytes:
    n = c.manifest["splits"][name]["bytes"]
    return c.split(name).tobytes() if n else b""


def check_file_hash_layout(c: corpus.Corpus, files: dict[str, bytes], val_fraction: float,
                           test_fraction: float) -> None:
    """Every file in exactly one split, the documented one; each split is the concatenation
    of its files in name order; the manifest's sizes and hashes match."""
    m = c.manifest
    val, test = val_fraction, test_fraction
    assert m["rule"]["name"] == "file-hash"
    names = [f["name"] for f in m["files"]]
    assert names == sorted(files) and len(set(names)) == len(names)
    for k in corpus.SPLITS:
        members = sorted(n for n in files if expected_split(n, val, test) == k)
        assert [f["name"] for f in m["files"] if f["split"] == k] == members
        expect = b"".join(files[n] for n in members)
        got = split_bytes(c, k)
        assert got == expect, f"{k} split is not the concatenation of its files"
        assert m["splits"][k]["bytes"] == len(expect)
        assert m["splits"][k]["sha256"] == hashlib.sha256(expect).hexdigest()
    for f in m["files"]:
        assert f["size"] == len(files[f["name"]])
        assert f["sha256"] == hashlib.sha256(files[f["name"]]).hexdigest()
    assert m["total_bytes"] == sum(map(len, files.values()))


def building(caplog: pytest.LogCaptureFixture) -> bool:
    return any("building" in r.getMessage() for r in caplog.records if r.name == LOGGER)


# ---- the default corpus --------------------------------------------------------------------
@pytest.fixture(scope="module")
def stdlib_corpus(tmp_path_factory: pytest.TempPathFactory) -> corpus.Corpus:
    return load_corpus(cache_dir=tmp_path_factory.mktemp("stdlib") / "cache")


def stdlib_listing() -> list[str]:
    out = []
    for p in STDLIB.rglob("*.py"):
        rel = p.relative_to(STDLIB)
        if not {"site-packages", "dist-packages", "__pycache__"} & set(rel.parts[:-1]) \
                and p.is_file():
            out.append(rel.as_posix())
    return sorted(out)


def test_stdlib_corpus_files_and_splits(stdlib_corpus: corpus.Corpus) -> None:
    m = stdlib_corpus.manifest
    names = [f["name"] for f in m["files"]]
    assert names == stdlib_listing()
    assert len(names) > 100 and "os.py" in names and "json/__init__.py" in names
    assert any(n.startswith("test/") for n in names), "test files are part of the corpus"
    assert m["source"]["kind"] == "stdlib"
    files = {n: (STDLIB / n).read_bytes() for n in names}
    check_file_hash_layout(stdlib_corpus, files, 0.05, 0.05)
    desc = stdlib_corpus.description
    assert "stdlib" in desc and f"{m['splits']['val']['bytes']:,}" in desc
    assert "\n" not in desc


def test_stdlib_corpus_is_deterministic(stdlib_corpus: corpus.Corpus, tmp_path: Path) -> None:
    again = load_corpus(cache_dir=tmp_path / "other")
    assert again.manifest == stdlib_corpus.manifest
    for k in corpus.SPLITS:
        assert np.array_equal(again.split(k), stdlib_corpus.split(k))


# ---- user data -----------------------------------------------------------------------------
def test_folder_corpus_layout_and_determinism(tmp_path: Path, gen: torch.Generator) -> None:
    files = random_tree(tmp_path / "a", gen)
    c1 = load_corpus([tmp_path / "a" / "data"], cache_dir=tmp_path / "c1", **FR)
    check_file_hash_layout(c1, files, **FR)
    skipped = {s["path"]: s["reason"] for s in c1.manifest["skipped"]}
    assert skipped == {"data/.git/": "hidden folder", "data/.hidden": "hidden file"}
    for k in corpus.SPLITS:
        assert b"HIDDEN" not in split_bytes(c1, k)
    # The same files elsewhere (another absolute path) give the same manifest and bytes.
    os.rename(tmp_path / "a", tmp_path / "b")
    c2 = load_corpus([str(tmp_path / "b" / "data")], cache_dir=tmp_path / "c2", **FR)
    assert c2.manifest == c1.manifest
    # The test split does not move when only val_fraction changes.
    c3 = load_corpus([tmp_path / "b" / "data"], cache_dir=tmp_path / "c3",
                     val_fraction=0.3, test_fraction=0.2)
    assert split_bytes(c3, "test") == split_bytes(c1, "test")
    assert c3.manifest["splits"]["val"]["bytes"] > c1.manifest["splits"]["val"]["bytes"]


def test_files_globs_and_duplicates(tmp_path: Path, gen: torch.Generator) -> None:
    files = random_tree(tmp_path, gen, n_files=20)
    txt = {n: b for n, b in files.items() if n.endswith(".txt")}
    c = load_corpus([str(tmp_path / "data" / "*.txt")], cache_dir=tmp_path / "c")
    assert [f["name"] for f in c.manifest["files"]] == sorted(txt)
    assert c.manifest["source"]["inputs"] == ["data/*.txt"]
    # A file given directly and through its folder counts once.
    one = next(iter(sorted(files)))
    c = load_corpus([tmp_path / one, tmp_path / "data"], cache_dir=tmp_path / "c2")
    assert len(c.manifest["files"]) == len(files)
    assert c.manifest["total_bytes"] == sum(map(len, files.values()))
    rec = load_corpus([str(tmp_path / "data" / "**" / "*.bin")], cache_dir=tmp_path / "c3")
    assert [f["name"] for f in rec.manifest["files"]] == sorted(
        n for n in files if n.endswith(".bin"))


def test_cache_inside_the_data_is_not_data(tmp_path: Path, gen: torch.Generator,
                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    files = random_tree(tmp_path, gen, n_files=20)
    data = tmp_path / "data"
    for paths in ([data], [str(data / "**")]):
        cache = data / "cache"
        c = load_corpus(paths, cache_dir=cache)
        caplog.clear()
        again = load_corpus(paths, cache_dir=cache)
        assert not building(caplog), "the cache's own files must not count as sources"
        assert again.manifest == c.manifest
        assert c.manifest["total_bytes"] == sum(map(len, files.values()))
        assert len(c.manifest["skipped"]) == 2  # .git/ and .hidden; the cache is not data


def test_position_fallback_single_file(tmp_path: Path, gen: torch.Generator) -> None:
    n = int(torch.randint(1000, 5000, (1,), generator=gen))
    body = bytes(torch.randint(0, 256, (n,), generator=gen, dtype=torch.uint8).tolist())
    (tmp_path / "one.bin").write_bytes(body)
    c = load_corpus([tmp_path / "one.bin"], cache_dir=tmp_path / "c", val_fraction=0.1,
                    test_fraction=0.05)
    assert c.manifest["rule"]["name"] == "position"
    assert "reason" in c.manifest["rule"]
    n_val, n_test = int(n * 0.1), int(n * 0.05)
    assert split_bytes(c, "train") == body[: n - n_val - n_test]
    assert split_bytes(c, "val") == body[n - n_val - n_test : n - n_test]
    assert split_bytes(c, "test") == body[n - n_test :]


def test_position_fallback_spans_files(tmp_path: Path, gen: torch.Generator) -> None:
    # Two files: the file-hash rule cannot fill three splits, the concatenation is cut instead.
    parts = [bytes(torch.randint(0, 256, (k,), generator=gen, dtype=torch.uint8).tolist())
             for k in (700, 300)]
    for name, b in zip(("a", "b"), parts, strict=True):
        (tmp_path / name).write_bytes(b)
    c = load_corpus([tmp_path / "b", tmp_path / "a"], cache_dir=tmp_path / "c",
                    val_fraction=0.2, test_fraction=0.2)
    assert c.manifest["rule"]["name"] == "position"
    assert [f["offset"] for f in c.manifest["files"]] == [0, 700]
    whole = parts[0] + parts[1]
    assert split_bytes(c, "train") + split_bytes(c, "val") + split_bytes(c, "test") == whole
    assert split_bytes(c, "test") == whole[800:]


# ---- cache ---------------------------------------------------------------------------------
def split_stats(root: Path) -> list[tuple[int, int]]:
    return [((root / f"{k}.bin").stat().st_ino, (root / f"{k}.bin").stat().st_mtime_ns)
            for k in corpus.SPLITS]


def test_cache_reuse_and_rebuild_on_change(tmp_path: Path, gen: torch.Generator,
                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    files = random_tree(tmp_path, gen)
    data, cache = tmp_path / "data", tmp_path / "cache"
    c1 = load_corpus([data], cache_dir=cache, **FR)
    assert building(caplog)
    before = split_stats(cache)
    caplog.clear()
    c2 = load_corpus([data], cache_dir=cache, **FR)
    assert not building(caplog), "an unchanged corpus must not be rebuilt"
    assert split_stats(cache) == before and c2.manifest == c1.manifest

    # Same size, new content, new mtime: rebuilt, and the new bytes are in the splits.
    name = max(files, key=lambda n: len(files[n]))
    new = bytes(255 - b for b in files[name])
    (tmp_path / name).write_bytes(new)
    st = (tmp_path / name).stat()
    os.utime(tmp_path / name, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    files[name] = new
    caplog.clear()
    c3 = load_corpus([data], cache_dir=cache, **FR)
    assert building(caplog)
    check_file_hash_layout(c3, files, **FR)

    # A new file: rebuilt.
    (data / "zz_new.txt").write_bytes(b"new file")
    files["data/zz_new.txt"] = b"new file"
    caplog.clear()
    c4 = load_corpus([data], cache_dir=cache, **FR)
    assert building(caplog)
    check_file_hash_layout(c4, files, **FR)

    # A new hidden file changes only the skipped list: rebuilt, so it matches a fresh build.
    (data / ".new_hidden").write_bytes(b"x")
    caplog.clear()
    c4b = load_corpus([data], cache_dir=cache, **FR)
    assert building(caplog)
    assert c4b.manifest == load_corpus([data], cache_dir=tmp_path / "fresh", **FR).manifest

    # Other fractions into the same folder: rebuilt with them.
    caplog.clear()
    c5 = load_corpus([data], cache_dir=cache, val_fraction=0.3, test_fraction=0.2)
    assert building(caplog)
    check_file_hash_layout(c5, files, 0.3, 0.2)


def test_truncated_or_corrupted_cache(tmp_path: Path, gen: torch.Generator,
                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    files = random_tree(tmp_path, gen)
    data, cache = tmp_path / "data", tmp_path / "cache"
    c = load_corpus([data], cache_dir=cache, **FR)
    train = split_bytes(c, "train")
    with open(cache / "train.bin", "r+b") as f:
        f.truncate(len(train) // 2)
    # A loaded corpus refuses the damaged file instead of mapping garbage ...
    with pytest.raises(DataError, match=r"train\.bin"):
        c.split("train")
    # ... and the next load notices and rebuilds.
    caplog.clear()
    c2 = load_corpus([data], cache_dir=cache, **FR)
    assert building(caplog)
    assert any(r.levelno == logging.WARNING and "train.bin" in r.getMessage()
               for r in caplog.records)
    check_file_hash_layout(c2, files, **FR)

    # Same size, different bytes (mtime changes): caught by the sha256 check.
    flipped = bytearray(train)
    flipped[len(flipped) // 3] ^= 0xFF
    (cache / "train.bin").write_bytes(bytes(flipped))
    caplog.clear()
    c3 = load_corpus([data], cache_dir=cache, **FR)
    assert building(caplog)
    assert split_bytes(c3, "train") == train

    # A garbled manifest: rebuilt, not an exception.
    (cache / "manifest.json").write_text("{not json")
    caplog.clear()
    assert load_corpus([data], cache_dir=cache, **FR).manifest == c3.manifest
    assert building(caplog)


def test_interrupted_build_leaves_no_valid_cache(tmp_path: Path, gen: torch.Generator,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    files = random_tree(tmp_path, gen, n_files=10)
    data, cache = tmp_path / "data", tmp_path / "cache"
    load_corpus([data], cache_dir=cache)
    (data / "extra").write_bytes(b"x" * 100)  # forces a rebuild
    files["data/extra"] = b"x" * 100
    real_copy = corpus._copy
    calls = []

    def dying_copy(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_copy(*args, **kwargs)

    monkeypatch.setattr(corpus, "_copy", dying_copy)
    with pytest.raises(KeyboardInterrupt):
        load_corpus([data], cache_dir=cache)
    assert not (cache / "manifest.json").exists()
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(corpus, "_copy", real_copy)
    fresh = load_corpus([data], cache_dir=tmp_path / "fresh")
    assert fresh.manifest["total_bytes"] == sum(map(len, files.values()))
    assert load_corpus([data], cache_dir=cache).manifest == fresh.manifest


def test_default_cache_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "t.txt").write_bytes(b"hello world\n" * 50)
    monkeypatch.setenv("RESNETBK_CACHE", str(tmp_path / "cachebase"))
    c = load_corpus([tmp_path / "t.txt"])
    assert c.root.parent == tmp_path / "cachebase" / "corpus"
    assert (c.root / "manifest.json").is_file()
    other = load_corpus([tmp_path / "t.txt"], test_fraction=0.1)
    assert other.root != c.root and other.root.parent == c.root.parent


# ---- errors --------------------------------------------------------------------------------
def test_errors_name_the_offending_input(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    missing = tmp_path / "nope.txt"
    with pytest.raises(DataError, match=str(missing)):
        load_corpus([missing], cache_dir=cache)
    with pytest.raises(DataError, match=r"nothing_\*\.zz"):
        load_corpus([str(tmp_path / "nothing_*.zz")], cache_dir=cache)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        load_corpus([tmp_path / "empty"], cache_dir=cache)
    (tmp_path / "hidden_only" / ".git").mkdir(parents=True)
    (tmp_path / "hidden_only" / ".git" / "x").write_bytes(b"abc")
    with pytest.raises(DataError, match="hidden folder"):
        load_corpus([tmp_path / "hidden_only"], cache_dir=cache)
    (tmp_path / "zero").mkdir()
    (tmp_path / "zero" / "a").write_bytes(b"")
    (tmp_path / "zero" / "b").write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        load_corpus([tmp_path / "zero"], cache_dir=cache)
    with pytest.raises(ValueError, match="no data paths"):
        load_corpus([], cache_dir=cache)
    (tmp_path / "ok.txt").write_bytes(b"some text")
    for kw in ({"val_fraction": -0.1}, {"test_fraction": 1.0},
               {"val_fraction": 0.6, "test_fraction": 0.5}):
        with pytest.raises(ValueError, match="fraction"):
            load_corpus([tmp_path / "ok.txt"], cache_dir=cache, **kw)
    assert not (cache / "manifest.json").exists()
    # A folder that is not a corpus cache is never written into.
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_bytes(b"keep me")
    with pytest.raises(DataError, match="other files"):
        load_corpus([tmp_path / "ok.txt"], cache_dir=tmp_path / "notes")
    assert sorted(p.name for p in (tmp_path / "notes").iterdir()) == ["mine.txt"]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="needs POSIX permissions and a non-root user")
def test_unreadable_file_chmod(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_bytes(b"fine")
    bad = tmp_path / "d" / "b.txt"
    bad.write_bytes(b"secret")
    bad.chmod(0)
    try:
        with pytest.raises(DataError, match=r"b\.txt"):
            load_corpus([tmp_path / "d"], cache_dir=tmp_path / "cache")
    finally:
        bad.chmod(0o644)


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Works as root too: the open itself is made to fail for one file.
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_bytes(b"fine")
    bad = tmp_path / "d" / "b.txt"
    bad.write_bytes(b"secret")
    real_open = os.open

    def deny(path, flags, *args, **kwargs):
        if os.fspath(path) == str(bad):
            raise PermissionError(errno.EACCES, "Permission denied", str(bad))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", deny)
    with pytest.raises(DataError, match=r"b\.txt.*Permission denied"):
        load_corpus([tmp_path / "d"], cache_dir=tmp_path / "cache")


def test_bad_and_empty_split(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_bytes(b"0123456789" * 30)
    c = load_corpus([tmp_path / "t.txt"], cache_dir=tmp_path / "c", val_fraction=0.0)
    with pytest.raises(ValueError, match="'train', 'val' or 'test'"):
        c.split("validation")
    with pytest.raises(ValueError, match=r"val split .* empty"):
        c.split("val")
    assert c.manifest["rule"]["name"] == "position"
    assert len(c.split("test")) == 15 and len(c.split("train")) == 285
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest == c.manifest


# ---- windows -------------------------------------------------------------------------------
def random_data(gen: torch.Generator, n: int) -> np.ndarray:
    return torch.randint(0, 256, (n,), generator=gen, dtype=torch.uint8).numpy()


def test_sample_windows(gen: torch.Generator) -> None:
    data = random_data(gen, 4000)
    seed = int(torch.randint(0, 2**31, (1,), generator=gen))
    a = sample_windows(data, 16, 24, torch.Generator().manual_seed(seed))
    b = sample_windows(data, 16, 24, torch.Generator().manual_seed(seed))
    c = sample_windows(data, 16, 24, torch.Generator().manual_seed(seed + 1))
    assert a.shape == (16, 24) and a.dtype == torch.int64
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert int(a.min()) >= 0 and int(a.max()) <= 255
    windows = np.lib.stride_tricks.sliding_window_view(data, 24)
    for row in a.numpy():
        hits = np.flatnonzero((windows == row).all(axis=1))
        assert hits.size >= 1, "every row is a contiguous window of the data"
    # Uniform over [0, n - length]: with n - length = 2 all three starts show up, incl. the end.
    small = random_data(gen, 26)
    g = torch.Generator().manual_seed(seed)
    starts = {int(np.flatnonzero((np.lib.stride_tricks.sliding_window_view(small, 24) == r)
                                 .all(axis=1))[0])
              for r in sample_windows(small, 200, 24, g).numpy()}
    assert starts == {0, 1, 2}
    # Memmaps (corpus splits) work the same as arrays.
    assert sample_windows(np.asarray(small), 1, 26, g)[0].tolist() == small.tolist()


def test_window_errors(gen: torch.Generator) -> None:
    data = random_data(gen, 100)
    with pytest.raises(ValueError, match=r"100 bytes.*at least 101"):
        sample_windows(data, 2, 101, gen)
    with pytest.raises(ValueError, match=r"100 bytes.*at least 101"):
        next(iter_windows(data, 101, 2))
    with pytest.raises(ValueError, match="uint8"):
        sample_windows(data.astype(np.int64), 2, 10, gen)
    with pytest.raises(ValueError, match="batch"):
        sample_windows(data, 0, 10, gen)
    with pytest.raises(ValueError, match="max_windows"):
        next(iter_windows(data, 10, 2, max_windows=0))


def test_iter_windows(gen: torch.Generator) -> None:
    n = int(torch.randint(500, 1000, (1,), generator=gen))
    data = random_data(gen, n)
    length, batch = 16, 7
    total = n // length
    chunks = list(iter_windows(data, length, batch))
    assert [len(c) for c in chunks[:-1]] == [batch] * (len(chunks) - 1)
    assert 1 <= len(chunks[-1]) <= batch and all(c.dtype == torch.int64 for c in chunks)
    rows = torch.cat(chunks)
    assert rows.shape == (total, length)
    assert rows.numpy().astype(np.uint8).tobytes() == data[: total * length].tobytes()
    # max_windows: evenly spaced windows floor(j * total / k), in order; all when k >= total.
    k = 5
    some = torch.cat(list(iter_windows(data, length, batch, max_windows=k)))
    idx = [int(j * total / k) for j in range(k)]
    assert len(set(idx)) == k
    expect = np.stack([data[i * length : (i + 1) * length] for i in idx])
    assert np.array_equal(some.numpy(), expect)
    everything = torch.cat(list(iter_windows(data, length, batch, max_windows=total + 3)))
    assert torch.equal(everything, rows)
