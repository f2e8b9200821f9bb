"""ExtractCache: a repeated identical file gives the same items and the same counters as
extract(), without decoding it again; what it must not keep, it does not."""

from __future__ import annotations

import gzip
import io
import random
import tarfile
import zipfile

import pytest

from bench.gen import Content
from monitor.content import extract as extract_mod
from monitor.content.extract import ExtractCache, Member, Text, extract
from monitor.content.magic import HEAD_BYTES, detect_type
from monitor.stats import Stats
from tests.monitor.content.helpers import DOCS, limits

DOCUMENTS = sorted(p.name for p in DOCS.iterdir() if p.suffix in (".docx", ".xlsx", ".pptx", ".odt", ".ods",
                                                                  ".odp", ".pdf", ".doc", ".xls", ".zip"))


def plain(data: bytes, **kw) -> tuple[list, dict]:
    stats = Stats()
    return list(extract(data, stats=stats, **kw)), stats.snapshot()


def cached(cache: ExtractCache, data: bytes, **kw) -> tuple[list, dict]:
    stats = Stats()
    return list(cache.extract(data, stats=stats, **kw)), stats.snapshot()


@pytest.mark.parametrize("name", DOCUMENTS)
def test_miss_and_hit_give_extracts_items_and_counters(name, monkeypatch):
    data = (DOCS / name).read_bytes()
    kw = dict(name=name, mime=None, depth=0, limits=limits(max_text=5000))
    expected = plain(data, **kw)
    cache = ExtractCache()
    assert cached(cache, data, **kw) == expected
    monkeypatch.setattr(extract_mod, "extract", lambda *a, **k: pytest.fail("decoded again"))
    assert cached(cache, data, **kw) == expected
    assert cache.hits == 1
    texts = [i for i in expected[0] if isinstance(i, Text)]
    assert texts or name.startswith(("encrypted", "nested"))


def test_name_and_mime_are_not_the_key_for_magic_formats_but_limits_and_depth_are():
    data = (DOCS / "sample.docx").read_bytes()
    cache = ExtractCache()
    base = dict(depth=0, limits=limits())
    first = cached(cache, data, name="a.docx", mime=None, **base)
    assert cached(cache, data, name="/files/7f3a", mime="application/octet-stream", **base) == first
    assert cache.hits == 1
    cached(cache, data, name="a.docx", mime=None, depth=1, limits=limits())
    cached(cache, data, name="a.docx", mime=None, depth=0, limits=limits(max_text=10))
    assert cache.hits == 1


@pytest.mark.parametrize("mime", ["multipart/form-data", "message/rfc822"])
def test_multipart_bodies_are_not_taken_for_their_first_part(mime):
    data = (DOCS / "sample.docx").read_bytes()
    cache = ExtractCache()
    cached(cache, data, name="a.docx", mime=None, depth=0, limits=limits())
    assert cached(cache, data, name="body", mime=mime, depth=0, limits=limits()) == ([], {})
    assert cache.hits == 0


def test_gzip_and_text_are_not_kept():
    cache = ExtractCache()
    for data, name in ((gzip.compress(b"hello", mtime=0), "a.txt.gz"), ("本文".encode() * 100, "a.txt")):
        for _ in range(2):
            assert cached(cache, data, name=name, mime=None, depth=0, limits=limits()) == \
                plain(data, name=name, mime=None, depth=0, limits=limits())
    assert cache.hits == 0 and cache.size == 0


def test_time_capped_result_is_not_kept(monkeypatch):
    from tests.monitor.content.pdfbuild import one_page

    monkeypatch.setattr(extract_mod, "EXTRACT_SECONDS", 0.0)
    data = one_page(b"BT " + b"(x) Tj " * 20000 + b"ET")
    cache = ExtractCache()
    items, stats = cached(cache, data, name="slow.pdf", mime=None, depth=0, limits=limits())
    assert [getattr(i, "kind", None) for i in items] == ["truncated"]
    assert cache.size == 0
    monkeypatch.setattr(extract_mod, "EXTRACT_SECONDS", 5.0)
    items, _ = cached(cache, data, name="slow.pdf", mime=None, depth=0, limits=limits())
    assert any(isinstance(i, Text) for i in items)


def test_partly_read_result_is_not_kept():
    data = (DOCS / "sample.docx").read_bytes()
    cache = ExtractCache()
    gen = cache.extract(data, name="a.docx", mime=None, depth=0, limits=limits(), stats=Stats())
    next(gen)
    gen.close()
    assert cache.size == 0


def test_bounded_least_recently_used(tmp_path):
    docs = []
    for i in range(12):
        path = tmp_path / f"{i}.zip"
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("a.txt", f"document {i} ".encode() * 2000)
        docs.append(path.read_bytes())
    cache = ExtractCache(max_bytes=200_000)
    kw = dict(name="a.zip", mime=None, depth=0, limits=limits())
    for data in docs:
        cached(cache, data, **kw)
        assert cache.size <= cache.max_bytes
    cached(cache, docs[-1], **kw)
    assert cache.hits == 1
    cached(cache, docs[0], **kw)  # long evicted
    assert cache.hits == 1


# -- member results: a repeated archive's members are not extracted again either

def _zip_of(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, body in members.items():
            z.writestr(name, body)
    return buf.getvalue()


def _tar_of(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            t.addfile(info, io.BytesIO(body))
    return buf.getvalue()


def nested_documents() -> list[tuple[str, bytes]]:
    """Archives whose members are text in several charsets, a gzip, a tar, a zip and a docx,
    some tiny, plus the bench generator's zips and Word documents."""
    text = ("秘密の報告書 " * 900 + "confidential report\n" * 50)
    inner = _zip_of({"inner.txt": text.encode("euc-jp"), "tiny.txt": b"tiny"})
    members = {
        "utf8.txt": text.encode(), "sjis.csv": text.encode("cp932"), "utf16.txt": text.encode("utf-16"),
        "short.txt": "短い".encode(), "page.html": b"<html><body>" + b"<p>x</p>" * 800 + b"</body></html>",
        "data.bin": bytes(range(256)) * 40, "log.txt.gz": gzip.compress(text.encode() * 2, mtime=0),
        "bundle.tar": _tar_of({"a.txt": text.encode(), "b.txt": b"b" * 5000}), "inner.zip": inner,
        "report.docx": (DOCS / "sample.docx").read_bytes(),
    }
    content = Content(random.Random(20261126))
    return ([("mixed.zip", _zip_of(members))] + [(f"z{i}.zip", z) for i, z in enumerate(content.zips[:6])]
            + [(f"d{i}.docx", d) for i, d in enumerate(content.docx[:4])])


def pipeline_walk(run, data: bytes, name: str, depth: int, lim, stats: Stats) -> list:
    """(depth, item) of a file and its members, recursing as Pipeline._extract does: a member's
    content is the Member's own bytes object and its MIME type the magic of its head."""
    out: list = []
    if depth >= lim.max_depth:
        return out
    mime = detect_type(data[:HEAD_BYTES])
    for item in run(data, name=name, mime=mime, depth=depth, limits=lim, stats=stats):
        out.append((depth, item))
        if isinstance(item, Member):
            out.extend(pipeline_walk(run, item.data, item.name, depth + 1, lim, stats))
    return out


def test_repeated_archives_give_extracts_items_and_counters_without_extracting_members_again(monkeypatch):
    lim = limits(max_text=200_000)
    documents = nested_documents()
    expected = []
    for name, data in documents:
        stats = Stats()
        expected.append((pipeline_walk(extract, data, name, 0, lim, stats), stats.snapshot()))
    cache = ExtractCache()
    calls: list[int] = []
    real_items = extract_mod._items  # noqa: SLF001

    def counted(*args):
        calls.append(len(args[0]))
        return real_items(*args)

    monkeypatch.setattr(extract_mod, "_items", counted)
    for rep in range(4):
        calls.clear()
        for (name, data), want in zip(documents, expected, strict=True):
            stats = Stats()
            assert (pipeline_walk(cache.extract, data, name, 0, lim, stats), stats.snapshot()) == want
        if rep == 3:
            # Each pass keeps one level more (a member is registered when the outcome holding it
            # is kept, at its end): by the fourth nothing is extracted again.
            assert calls == []
    assert cache.member_hits > 0
    assert cache.size == sum(e.size for e in cache._entries.values())  # noqa: SLF001


def test_a_member_is_known_by_its_object_not_its_content():
    text = ("社外秘 " * 3000).encode()
    data = _zip_of({"a.txt": text})
    cache = ExtractCache()
    items = list(cache.extract(data, name="a.zip", mime=None, depth=0, limits=limits(), stats=Stats()))
    member = next(i for i in items if isinstance(i, Member))
    for _ in range(2):
        assert cached(cache, member.data, name="a.txt", mime=None, depth=1, limits=limits()) == \
            plain(member.data, name="a.txt", mime=None, depth=1, limits=limits())
    assert cache.member_hits == 1
    copy = bytes(bytearray(member.data))
    assert cached(cache, copy, name="a.txt", mime=None, depth=1, limits=limits()) == \
        plain(copy, name="a.txt", mime=None, depth=1, limits=limits())
    # The name and MIME type are part of a member's key: "text/plain" makes it text by itself.
    assert cached(cache, member.data, name="a.bin", mime="text/plain", depth=1, limits=limits()) == \
        plain(member.data, name="a.bin", mime="text/plain", depth=1, limits=limits())
    assert cache.member_hits == 1


def test_members_leave_with_their_entry(tmp_path):
    cache = ExtractCache(max_bytes=300_000)
    kept = []
    for i in range(8):
        data = _zip_of({"a.txt": f"文書 {i} ".encode() * 3000, "b.txt": f"note {i} ".encode() * 900})
        items = list(cache.extract(data, name="a.zip", mime=None, depth=0, limits=limits(), stats=Stats()))
        for m in items:
            if isinstance(m, Member):
                list(cache.extract(m.data, name=m.name, mime=None, depth=1, limits=limits(), stats=Stats()))
        kept.append(items)
        assert cache.size <= cache.max_bytes
        assert cache.size == sum(e.size for e in cache._entries.values())  # noqa: SLF001
        owners = {id(e) for e in cache._entries.values()}  # noqa: SLF001
        assert all(id(m.owner) in owners for m in cache._members.values())  # noqa: SLF001
    assert len(cache._entries) < 8  # noqa: SLF001 - some were evicted, and their members with them
    assert len(cache._members) == 2 * len(cache._entries)  # noqa: SLF001


def test_a_time_capped_member_result_is_not_kept(monkeypatch):
    data = _zip_of({"bundle.tar": _tar_of({"a.txt": b"a" * 5000, "b.txt": b"b" * 5000})})
    cache = ExtractCache()
    items = list(cache.extract(data, name="a.zip", mime=None, depth=0, limits=limits(), stats=Stats()))
    member = next(i for i in items if isinstance(i, Member))
    monkeypatch.setattr(extract_mod, "EXTRACT_SECONDS", -1.0)
    items, stats = cached(cache, member.data, name="bundle.tar", mime=None, depth=1, limits=limits())
    assert [getattr(i, "kind", None) for i in items] == ["truncated"]
    monkeypatch.setattr(extract_mod, "EXTRACT_SECONDS", 5.0)
    items, _ = cached(cache, member.data, name="bundle.tar", mime=None, depth=1, limits=limits())
    assert [i.name for i in items if isinstance(i, Member)] == ["a.txt", "b.txt"]
    assert cache.member_hits == 0
