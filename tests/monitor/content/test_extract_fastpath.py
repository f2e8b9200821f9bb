"""extract() and ExtractCache.extract with their per-file fixed costs taken out: text files give
exactly the reference decoding (charset_reference's codec, the cap, the counters); nothing runs
before the first item is asked for; a cached format is detected once per call; text reads no
CPU clock (the time budget is for decoders that check it)."""

from __future__ import annotations

import dataclasses
import pickle
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.content import extract as extract_mod
from monitor.content.extract import ExtractCache, Notice, Text, extract
from monitor.stats import Stats
from tests.monitor.content import charset_reference
from tests.monitor.content.helpers import DOCS, limits

JA = "本文書は保護すべき情報を含む。取扱いには注意すること。ｶﾀｶﾅも少し。"
TEXTS = st.text(alphabet=st.sampled_from(list(JA + "abc XYZ\r\n\t.,:0123\x1b\x00\x7f")), max_size=400)
CODECS = ["utf-8", "euc-jp", "cp932", "iso-2022-jp", "utf-16-le", "ascii"]


def reference_text_items(data: bytes, max_text: int) -> tuple[list[Any], dict[str, Any]]:
    """What extract() yields for a file it takes as text, computed from the reference guess."""
    codec = charset_reference.guess(data)
    if codec is None:
        return [], {}
    text = data.decode(codec, "replace")
    counters: dict[str, Any] = {"content": {"decoded[format=text]": 1}}
    if len(text) <= max_text:
        return ([Text(text, f"text:{codec}")] if text else []), counters
    counters["content"]["cap[cap=text]"] = 1
    clipped = text[:max_text]
    return [*([Text(clipped, f"text:{codec}")] if clipped else []), Notice("truncated", "text cap reached")], counters


@settings(max_examples=600, deadline=None, derandomize=True)
@given(TEXTS, st.sampled_from(CODECS), st.sampled_from([0, 1, 5, 50, 10**6]), st.booleans())
def test_text_files_give_the_reference_decoding_cap_and_counters(text, codec, max_text, cached):
    data = text.encode(codec, "replace")
    stats = Stats()
    run = ExtractCache().extract if cached else extract
    items = list(run(data, name="a.txt", mime="text/plain", depth=0, limits=limits(max_text=max_text), stats=stats))
    expected, counters = reference_text_items(data, max_text)
    assert items == expected
    assert stats.snapshot() == counters
    for item in items:
        if isinstance(item, Text) and item.utf8 is not None:
            assert item.utf8 == item.text.encode("utf-8") and len(item.text) <= max_text


def test_nothing_runs_before_the_first_item(monkeypatch):
    seen: list[bytes] = []
    real = extract_mod.detect_format
    monkeypatch.setattr(extract_mod, "detect_format", lambda data, *a: seen.append(data) or real(data, *a))
    stats = Stats()
    pending = extract(b"hello", name="", mime=None, depth=0, limits=limits(), stats=stats)
    assert seen == [] and stats.snapshot() == {}
    assert [i.text for i in pending if isinstance(i, Text)] == ["hello"] and seen == [b"hello"]
    assert stats.snapshot() == {"content": {"decoded[format=text]": 1}}


@pytest.mark.parametrize("name", ["sample.docx", "sample.pdf", "sample.xls"])
def test_a_cached_format_is_detected_once_per_call(name, monkeypatch):
    data = (DOCS / name).read_bytes()
    calls: list[str] = []
    real = extract_mod.detect_format
    monkeypatch.setattr(extract_mod, "detect_format", lambda *a: calls.append("x") or real(*a))
    cache = ExtractCache()
    kw: dict[str, Any] = dict(name=name, mime=None, depth=0, limits=limits(), stats=Stats())
    first = list(cache.extract(data, **kw))
    assert calls == ["x"]
    assert list(cache.extract(data, **kw)) == first and cache.hits == 1 and calls == ["x", "x"]
    assert any(isinstance(i, Text) for i in first)


class CountingClock:
    def __init__(self) -> None:
        self.reads = 0

    def thread_time(self) -> float:
        self.reads += 1
        return time.thread_time()


def test_text_reads_no_clock_and_decoders_that_check_time_do(monkeypatch):
    clock = CountingClock()
    monkeypatch.setattr(extract_mod, "time", clock)
    kw: dict[str, Any] = dict(depth=0, limits=limits(), stats=Stats())
    assert [i.text for i in extract("情報".encode(), name="", mime="text/plain", **kw) if isinstance(i, Text)] == ["情報"]
    assert list(extract(b"\x00\x01binary", name="", mime=None, **kw)) == []
    assert clock.reads == 0
    texts = [i for i in extract((DOCS / "sample.docx").read_bytes(), name="a.docx", mime=None, **kw)
             if isinstance(i, Text)]
    assert texts and clock.reads >= 1


def reference_detect_format(data: bytes, name: str = "", mime: str | None = None) -> str | None:
    """detect_format as it was: each magic number tested in turn, PDF looked for in a copy."""
    mime = (mime or "").lower()
    if mime.startswith(("multipart/", "message/")):
        return None
    head = data[:8]
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        return "ole"
    if head.startswith(b"BZh") and data[4:10] == b"1AY&SY":
        return "bzip2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if data[257:262] == b"ustar":
        return "tar"
    if b"%PDF-" in data[:1024]:
        return "pdf"
    lname = name.lower()
    if (lname.endswith(".tar") or "x-tar" in mime) and len(data) >= 512:
        return "tar"
    if mime.startswith("text/") or lname.endswith(extract_mod._TEXT_NAMES):  # noqa: SLF001
        return "text"
    sample = data[:4096]
    return "text" if sample and charset_reference.guess(sample) is not None else None


PREFIXES = [b"", b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08", b"\x1f\x8b", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
            b"BZh91AY&SY", b"BZh9", b"\xfd7zXZ\x00", b"\xfd7zX", b"%PDF-", b"PK\x03"]


@settings(max_examples=1000, deadline=None, derandomize=True)
@given(st.sampled_from(PREFIXES), st.binary(max_size=1100), st.integers(0, 1100), st.booleans(),
       st.sampled_from(["", "a.txt", "B.TAR", "x.bin"]),
       st.sampled_from([None, "text/plain", "application/x-tar", "multipart/mixed", "application/octet-stream"]))
def test_detect_format_equals_the_test_by_test_original(prefix, tail, pdf_at, tar, name, mime):
    data = prefix + tail
    if pdf_at < len(data):
        data = data[:pdf_at] + b"%PDF-" + data[pdf_at:]
    if tar:
        data = data.ljust(262, b"\x00")[:257] + b"ustar" + data[262:]
    assert extract_mod.detect_format(data, name, mime) == reference_detect_format(data, name, mime)


def test_text_keeps_its_dataclass_behaviour_with_the_cheaper_constructor():
    t = Text("情報", "text:utf-8", "情報".encode())
    assert t == Text(text="情報", where="text:utf-8") and hash(t) == hash(Text("情報", "text:utf-8"))
    assert t != Text("情報", "zip:a.txt") and repr(t) == "Text(text='情報', where='text:utf-8')"
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.text = "x"  # type: ignore[misc]
    assert dataclasses.replace(t, where="pdf:page1") == Text("情報", "pdf:page1")
    assert pickle.loads(pickle.dumps(t)).utf8 == "情報".encode()
    assert [f.name for f in dataclasses.fields(Text)] == ["text", "where", "utf8"]
    assert Text("a", "b").utf8 is None and Text("a", "b").encoded() == b"a"
