"""The compiled-database cache: hits give the same matches as a compile, every cache problem
falls back to compiling (counted), entries are private, and nothing crashes."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from detectors import dbcache
from detectors import matcher as m
from detectors.dbcache import DatabaseCache, database_key
from detectors.markers import MarkerSet
from detectors.signatures import load_signatures

pytestmark = pytest.mark.skipif(not m.hyperscan_available(), reason="hyperscan not installed")

ROOT = Path(__file__).resolve().parents[2]
PATTERNS = [m.Pattern(1, "保護すべき情報".encode()), m.Pattern(2, b"JDA Confidential", nocase=True),
            m.Pattern(3, rb"JDA-[0-9]{4}-[0-9]{5}", regex=True), m.Pattern(4, b"ab\x00cd")]
SAMPLE = (b"x jda confidential y \xe4\xbf\x9d" + "保護すべき情報".encode() + b" JDA-1234-56789 ab\x00cd\r\n\r\n"
          + b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5\r\n" * 3)


@pytest.fixture(autouse=True)
def store_every_compile(monkeypatch):
    monkeypatch.setattr(dbcache, "MIN_COMPILE_SECONDS", 0.0)


def _matches(matcher: m.Matcher) -> tuple[list[m.Match], list[m.Match]]:
    st = matcher.stream()
    streamed = [x for i in range(0, len(SAMPLE), 7) for x in st.feed(SAMPLE[i:i + 7])]
    return matcher.scan(SAMPLE), streamed


def _entries(d: Path) -> list[Path]:
    return sorted(d.glob("*" + dbcache.SUFFIX))


def test_second_compile_is_a_hit_with_identical_matches(tmp_path):
    reference = _matches(m.compile(PATTERNS, "hyperscan", line_probe=True))
    assert reference[0] and reference[1]
    cache = DatabaseCache(str(tmp_path / "c"))
    first = m.compile(PATTERNS, "hyperscan", line_probe=True, cache=cache)
    assert cache.outcomes == {"miss": 2}
    assert len(_entries(tmp_path / "c")) == 2  # block and stream database
    cache.outcomes.clear()
    second = m.compile(PATTERNS, "hyperscan", line_probe=True, cache=cache)
    assert cache.outcomes == {"hit": 2}
    assert _matches(first) == reference
    assert _matches(second) == reference


def test_entries_and_directory_are_private(tmp_path):
    d = tmp_path / "c"
    m.compile(PATTERNS, "hyperscan", cache=DatabaseCache(str(d)))
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    for entry in _entries(d):
        assert stat.S_IMODE(entry.stat().st_mode) == 0o600
    assert not list(d.glob(".tmp-*"))


@pytest.mark.parametrize("damage", ["flip-blob-byte", "truncate", "garbage", "wrong-key", "empty"])
def test_damaged_entry_is_recompiled_counted_and_rewritten(tmp_path, damage, caplog):
    d = tmp_path / "c"
    m.compile(PATTERNS, "hyperscan", cache=DatabaseCache(str(d)))
    entries = _entries(d)
    original = {e: e.read_bytes() for e in entries}
    for entry in entries:
        data = original[entry]
        if damage == "flip-blob-byte":
            data = data[:-10] + bytes([data[-10] ^ 0xFF]) + data[-9:]
        elif damage == "truncate":
            data = data[: len(data) // 2]
        elif damage == "garbage":
            data = os.urandom(len(data))
        elif damage == "wrong-key":
            data = original[entries[1] if entry == entries[0] else entries[0]]
        else:
            data = b""
        entry.write_bytes(data)
        os.chmod(entry, 0o600)
    cache = DatabaseCache(str(d))
    caplog.set_level(logging.DEBUG, logger="detectors.dbcache")
    matcher = m.compile(PATTERNS, "hyperscan", cache=cache)
    assert cache.outcomes == {"invalid": 2}
    assert _matches(matcher) == _matches(m.compile(PATTERNS, "hyperscan"))
    assert "保護".encode() not in caplog.text.encode() and "JDA" not in caplog.text
    cache.outcomes.clear()
    m.compile(PATTERNS, "hyperscan", cache=cache)
    assert cache.outcomes == {"hit": 2}  # rewritten


def test_an_entry_the_engine_refuses_is_recompiled(tmp_path, monkeypatch):
    d = tmp_path / "c"
    m.compile(PATTERNS, "hyperscan", cache=DatabaseCache(str(d)))

    def refuse(blob, mode):
        raise m._hs.DatabasePlatformError("compiled for another CPU")

    monkeypatch.setattr(m._hs, "loadb", refuse)
    cache = DatabaseCache(str(d))
    matcher = m.compile(PATTERNS, "hyperscan", cache=cache)
    assert cache.outcomes == {"invalid": 2}
    assert _matches(matcher) == _matches(m.compile(PATTERNS, "hyperscan"))


def test_entries_others_could_have_written_are_not_trusted(tmp_path):
    d = tmp_path / "c"
    m.compile(PATTERNS, "hyperscan", cache=DatabaseCache(str(d)))
    for entry in _entries(d):
        os.chmod(entry, 0o644)
    cache = DatabaseCache(str(d))
    m.compile(PATTERNS, "hyperscan", cache=cache)
    assert cache.outcomes == {"invalid": 2}

    os.chmod(d, 0o777)  # a directory anyone can write to: not used at all
    cache = DatabaseCache(str(d))
    matcher = m.compile(PATTERNS, "hyperscan", cache=cache)
    assert cache.outcomes == {"unusable": 2}
    assert _matches(matcher) == _matches(m.compile(PATTERNS, "hyperscan"))


def test_a_symlinked_entry_is_not_followed(tmp_path):
    d = tmp_path / "c"
    m.compile(PATTERNS, "hyperscan", cache=DatabaseCache(str(d)))
    for entry in _entries(d):
        target = tmp_path / (entry.name + ".real")
        entry.rename(target)
        entry.symlink_to(target)
    cache = DatabaseCache(str(d))
    m.compile(PATTERNS, "hyperscan", cache=cache)
    assert cache.outcomes == {"invalid": 2}
    assert all(not e.is_symlink() for e in _entries(d))  # replaced by real entries


def test_an_unusable_directory_never_fails_the_compile(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_bytes(b"not a directory")
    for directory in (blocker, blocker / "sub"):
        cache = DatabaseCache(str(directory))
        matcher = m.compile(PATTERNS, "hyperscan", cache=cache)
        assert sum(cache.outcomes.values()) == 2
        assert _matches(matcher) == _matches(m.compile(PATTERNS, "hyperscan"))


def test_cheap_compiles_are_not_stored(tmp_path, monkeypatch):
    monkeypatch.setattr(dbcache, "MIN_COMPILE_SECONDS", 3600.0)
    cache = DatabaseCache(str(tmp_path / "c"))
    m.compile(PATTERNS, "hyperscan", cache=cache)
    assert cache.outcomes == {"miss": 2}
    assert not (tmp_path / "c").exists() or not _entries(tmp_path / "c")


def test_old_entries_are_pruned(tmp_path, monkeypatch):
    monkeypatch.setattr(dbcache, "KEEP_ENTRIES", 3)
    cache = DatabaseCache(str(tmp_path / "c"))
    for i in range(4):
        m.compile([m.Pattern(1, b"marker-%d" % i)], "hyperscan", cache=cache)
    assert len(_entries(tmp_path / "c")) == 3


def test_key_covers_every_input_without_ambiguity():
    base = database_key([b"ab", b"c"], [1, 2], [0, 0], 1, b"v1")
    assert base == database_key([b"ab", b"c"], [1, 2], [0, 0], 1, b"v1")
    variants = [
        database_key([b"a", b"bc"], [1, 2], [0, 0], 1, b"v1"),  # same concatenation
        database_key([b"ab", b"c"], [2, 1], [0, 0], 1, b"v1"),
        database_key([b"ab", b"c"], [1, 2], [0, 8], 1, b"v1"),
        database_key([b"ab", b"c"], [1, 2], [0, 0], 2, b"v1"),
        database_key([b"ab", b"c"], [1, 2], [0, 0], 1, b"v2"),
        database_key([b"c", b"ab"], [2, 1], [0, 0], 1, b"v1"),  # order matters to the compiler
    ]
    assert len({base, *variants}) == 7


def test_cache_directory_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(dbcache.ENV_DIR, str(tmp_path / "x"))
    assert dbcache.default_dir() == str(tmp_path / "x")
    for off in ("off", ""):
        monkeypatch.setenv(dbcache.ENV_DIR, off)
        assert dbcache.default_dir() is None
    monkeypatch.delenv(dbcache.ENV_DIR)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert dbcache.default_dir() == str(tmp_path / "xdg" / "leakmon")


def test_shipped_signatures_through_the_cache_match_like_a_compile(tmp_path):
    rules = load_signatures([str(ROOT / "signatures")]).markers
    cold = MarkerSet(rules, "hyperscan")
    cache = DatabaseCache(str(tmp_path / "c"))
    MarkerSet(rules, "hyperscan", cache)
    warm = MarkerSet(rules, "hyperscan", cache)
    assert cache.outcomes == {"miss": 2, "hit": 2}
    corpus = sorted((ROOT / "pcaps").glob("*.pcap"))
    assert corpus
    for path in corpus:
        data = path.read_bytes()
        assert [(h.rule.sid, h.variant, h.start, h.end) for h in warm.scan(data)] == \
            [(h.rule.sid, h.variant, h.start, h.end) for h in cold.scan(data)]
        a, b = cold.raw.matcher.stream(), warm.raw.matcher.stream()
        for i in range(0, len(data), 1448):
            assert a.feed(data[i:i + 1448]) == b.feed(data[i:i + 1448])


def test_detection_counts_cache_outcomes(harness, monkeypatch, tmp_path):
    monkeypatch.setenv(dbcache.ENV_DIR, str(tmp_path / "cache"))
    first = harness()
    assert first.stats.total("signatures.db_cache") == 2
    second = harness()
    assert second.stats.counters[("signatures.db_cache", (("result", "hit"),))] == 2


def test_importing_the_engine_does_not_import_numpy():
    code = "import sys, detectors.engine; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
