"""Hypothesis: mutated real documents and random bytes never raise, never exceed a cap, stay fast."""

from __future__ import annotations

import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.content.charset import guess
from monitor.content.extract import Member, Notice, Text, extract, walk
from monitor.content.items import NOTICE_KINDS
from monitor.content.textnorm import normalize
from monitor.stats import Stats
from tests.monitor.content.helpers import DOCS, limits

CAPS = dict(max_decompressed=4 << 20, max_text=200_000, max_members=40, max_depth=3)
SECONDS = 3.0
SEEDS = {p.name: p.read_bytes() for p in sorted(DOCS.iterdir()) if p.is_file() and p.suffix != ".md"}
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


def check(data: bytes, name: str) -> None:
    cfg = limits(**CAPS)
    stats = Stats()
    t0 = time.thread_time()
    out_bytes = 0
    text_chars = 0
    for item in extract(data, name=name, mime=None, depth=0, limits=cfg, stats=stats):
        if isinstance(item, Member):
            out_bytes += len(item.data)
        elif isinstance(item, Text):
            text_chars += len(item.text)
        else:
            assert isinstance(item, Notice) and item.kind in NOTICE_KINDS
    assert out_bytes <= cfg.max_decompressed
    assert text_chars <= cfg.max_text
    assert time.thread_time() - t0 < SECONDS
    for _ in walk(data, name=name, limits=cfg, stats=stats):
        pass
    assert time.thread_time() - t0 < 2 * SECONDS + 1


mutations = st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)),
                     min_size=1, max_size=12)


@FUZZ
@given(name=st.sampled_from(sorted(SEEDS)), muts=mutations, cut=st.floats(min_value=0.05, max_value=1.0))
def test_mutated_real_documents(name, muts, cut):
    data = bytearray(SEEDS[name])
    for pos, value in muts:
        data[pos % len(data)] = value
    check(bytes(data[: max(1, int(len(data) * cut))]), name)


@FUZZ
@given(prefix=st.sampled_from([b"PK\x03\x04", b"PK\x05\x06", b"%PDF-1.7\n", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
                               b"\x1f\x8b\x08\x00", b"BZh91AY&SY", b"\xfd7zXZ\x00", b""]),
       body=st.binary(max_size=4096))
def test_random_bodies_behind_magic(prefix, body):
    check(prefix + body, "x")


pdf_tokens = st.sampled_from([b"BT", b"ET", b"Tj", b"TJ", b"Tf", b"Td", b"Tm", b"T*", b"'", b'"', b"Do", b"q",
                              b"Q", b"BI", b"ID", b"EI", b"[", b"]", b"<<", b">>", b"(a(b)", b"<4142>", b"/F1",
                              b"12", b"-3.5", b"obj", b"endobj", b"stream", b"endstream", b"1 0 R", b"\\"])


@FUZZ
@given(ops=st.lists(pdf_tokens, max_size=300))
def test_random_pdf_content_streams(ops):
    from tests.monitor.content.pdfbuild import one_page

    check(one_page(b" ".join(ops), fonts=b"/F1 5 0 R",
                   extra={5: b"<< /Type /Font /Subtype /Type0 /Encoding /Identity-H /DescendantFonts [] >>"}),
          "x.pdf")


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.binary(max_size=2048))
def test_charset_guess_total(data):
    cs = guess(data)
    if cs is not None:
        data.decode(cs, "replace")


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.text(max_size=500))
def test_normalize_is_deterministic_and_clean(text):
    a = normalize(text)
    assert a == normalize(text)
    assert a == a.strip() and "  " not in a
