"""The fallback engine's fast paths against slow references.

* The gram filter (detectors/matcher.py ``_GramFilter``): pyahocorasick scans only windows where
  a key may start. Both engines must still report identical matches on buffers long enough to
  take the filter, with keys sharing first grams, overlapping windows and (with a tiny hash
  table) hash collisions on every other gram.
* The line probe: the windowed QP probe and the literal pre-checks must answer exactly as the
  plain regex searches over the whole buffer did.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors import matcher as m

ALPHABET = b"abAB\x00\x82-0=\r\n"
HAVE_HS = m.hyperscan_available()


def _text(b: bytes) -> bytes:
    return bytes(ALPHABET[x % len(ALPHABET)] for x in b)


lits = st.binary(min_size=1, max_size=12).map(_text)
REGEXES = [rb"ab[0-9]{1,3}", rb"a\x00[bB]", rb"(?:abAB|BAba)-[0-9]{2}", rb"\x82[\xa0a]{1,2}0", rb"abab[AB]{1,9}"]


@st.composite
def cases(draw):
    literals = draw(st.lists(lits, min_size=1, max_size=12))
    pats = [m.Pattern(i, lit, nocase=draw(st.booleans())) for i, lit in enumerate(literals)]
    for j, rx in enumerate(draw(st.lists(st.sampled_from(REGEXES), max_size=3, unique=True))):
        pats.append(m.Pattern(100 + j, rx, nocase=draw(st.booleans()), regex=True))
    # Long data built from pieces of the literals (so keys occur, overlap and abut) and noise.
    pieces = draw(st.lists(st.one_of(st.sampled_from(literals), st.binary(max_size=40).map(_text)),
                           max_size=60))
    data = b"".join(pieces)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    return pats, data, cuts


def reference(pats: list[m.Pattern], data: bytes) -> list[m.Match]:
    """Literals by brute force (every start, every pattern); regexes as the ahocorasick engine
    confirms them, over the whole buffer without any prefilter."""
    out: list[m.Match] = []
    folded = data.lower()
    for p in pats:
        if p.regex:
            info = m.RegexInfo.analyse(p)
            for end in range(1, len(data) + 1):
                hit = info.ends_at.search(data, max(0, end - info.max_width), end)
                if hit is not None:
                    out.append((p.id, hit.start(), end))
            continue
        hay, needle = (folded, p.data.lower()) if p.nocase else (data, p.data)
        out.extend((p.id, i, i + len(needle)) for i in range(len(hay)) if hay.startswith(needle, i))
    return sorted(out, key=lambda x: (x[2], x[0], x[1]))


def stream_all(matcher: m.Matcher, chunks: list[bytes]) -> list[m.Match]:
    s = matcher.stream()
    out = [x for c in chunks for x in s.feed(c)]
    s.close()
    return sorted(out, key=lambda x: (x[2], x[0], x[1]))


@pytest.fixture(params=["filter-always", "tiny-table"])
def filtered(request, monkeypatch):
    """Every buffer takes the gram filter; with ``tiny-table`` most grams collide in the hash."""
    monkeypatch.setattr(m, "FILTER_MIN_BYTES", 0)
    if request.param == "tiny-table":
        monkeypatch.setattr(m, "_TABLE_BITS", 3)
    return request.param


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(case=cases())
def test_filtered_engine_matches_reference_and_hyperscan(filtered, case):
    pats, data, cuts = case
    aho = m.compile(pats, "ahocorasick")
    want = reference(pats, data)
    assert aho.scan(data) == want
    bounds = [0, *cuts, len(data)]
    chunks = [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    assert stream_all(aho, chunks) == want
    if HAVE_HS:
        assert m.compile(pats, "hyperscan").scan(data) == want


def test_filter_windows_cover_keys_and_skip_the_rest():
    f = m._GramFilter([b"secret-key", b"secr", b"\x00a\x00b"])
    data = b"x" * 300 + b"secret-key" + b"y" * 300 + b"\x00a\x00b" + b"z" * 5
    assert f.windows(data) == [(300, 310), (610, 614)]
    assert f.windows(b"no key in here at all " * 20) == []
    assert f.windows(b"sec") == []


def test_long_buffer_with_a_case_sensitive_literal_and_a_nocase_one():
    mt = m.compile([m.Pattern(1, b"Exact-Marker"), m.Pattern(2, b"nocase-marker", nocase=True)], "ahocorasick")
    data = b"\x01" * 500 + b"exact-marker NOCASE-MARKER Exact-Marker" + b"\x02" * 500
    assert mt.scan(data) == [(2, 513, 526), (1, 527, 539)]


# ------------------------------------------------------------------ line probe

probe_text = st.lists(st.sampled_from([b"\n", b"\r\n", b"=", b"-----", b"QUJD" * 11, b"abc def", b"=3D",
                                       b"\x00\xff", b"x" * 70, b"=\r\n", b"=\n"]), max_size=40).map(b"".join)


def probe_reference(buf: bytes, fresh_from: int, at_start: bool) -> bool:
    """The line probe as it was: each probe regex searched over the whole buffer."""
    if b"\n" not in buf:
        return False
    for rx in m._PROBE_RES:
        pos = 0 if at_start else max(1, fresh_from - m._PROBE_HISTORY)
        hit = rx.search(buf, pos)
        while hit is not None and hit.end() <= fresh_from:
            hit = rx.search(buf, hit.start() + 1)
        if hit is not None:
            return True
    return False


@settings(max_examples=500, deadline=None)
@given(buf=probe_text, data=st.data())
def test_line_probe_answers_as_the_whole_buffer_search(buf, data):
    fresh_from = data.draw(st.integers(0, len(buf)))
    at_start = data.draw(st.booleans())
    assert m._probe_after(buf, fresh_from, at_start) == probe_reference(buf, fresh_from, at_start)
    assert m.has_line_structure(buf) == any(rx.search(buf) for rx in m._PROBE_RES)


def test_qp_probe_found_in_a_long_buffer():
    body = b"\x00" * 400 + b"\r\n" + b"Q" * 70 + b"=\r\n" + b"\x00" * 400
    assert m.has_line_structure(body)
    assert not m.has_line_structure(body.replace(b"=\r\n", b"=\r\x00"))
    assert not m.has_line_structure(b"\x00" * 400 + b"\r\n" + b"Q" * 77 + b"=\r\n")  # line too long
