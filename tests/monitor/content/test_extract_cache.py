"""ExtractCache: a repeated identical file gives the same items and the same counters as
extract(), without decoding it again; what it must not keep, it does not."""

from __future__ import annotations

import gzip
import zipfile

import pytest

from monitor.content import extract as extract_mod
from monitor.content.extract import ExtractCache, Text, extract
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
