"""Both matcher engines: the same matches in block and stream mode, on the same inputs."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors import matcher as m

ENGINES = [e for e in m.ENGINES if e != "hyperscan" or m.hyperscan_available()]


def both(patterns: list[m.Pattern]) -> list[m.Matcher]:
    return [m.compile(patterns, e) for e in ENGINES]


def stream_all(matcher: m.Matcher, chunks: list[bytes]) -> list[m.Match]:
    s = matcher.stream()
    out: list[m.Match] = []
    for c in chunks:
        out.extend(s.feed(c))
    s.close()
    return sorted(out, key=lambda x: (x[2], x[0], x[1]))


def test_hyperscan_is_installed_here():
    # CI installs the wheel; the property tests below are only meaningful with both engines.
    assert m.hyperscan_available()
    assert m.resolve_engine("auto") == "hyperscan"


@pytest.mark.parametrize("engine", ENGINES)
def test_literals_overlapping_and_nul_bytes(engine):
    pats = [m.Pattern(0, b"aba"), m.Pattern(1, "秘".encode("utf-16-le") + b"\x00\x00"), m.Pattern(2, b"ab")]
    mt = m.compile(pats, engine)
    data = b"xababa" + "秘".encode("utf-16-le") + b"\x00\x00z"
    assert mt.scan(data) == [(2, 1, 3), (0, 1, 4), (2, 3, 5), (0, 3, 6), (1, 6, 10)]


@pytest.mark.parametrize("engine", ENGINES)
def test_nocase_is_ascii_only(engine):
    mt = m.compile([m.Pattern(7, b"secret", nocase=True), m.Pattern(8, b"Exact")], engine)
    assert mt.scan(b"SeCrEt exact Exact") == [(7, 0, 6), (8, 13, 18)]


@pytest.mark.parametrize("engine", ENGINES)
def test_regex_fixed_and_variable_width(engine):
    pats = [m.Pattern(1, rb"JDA-[0-9]{4}-[0-9]{5}", regex=True),
            m.Pattern(2, rb"ID:[0-9]{2,4}", regex=True)]
    mt = m.compile(pats, engine)
    data = b"doc JDA-2024-00042 ID:12345 JDA-2024-0004x"
    assert mt.scan(data) == [(1, 4, 18), (2, 19, 24), (2, 19, 25), (2, 19, 26)]


@pytest.mark.parametrize("engine", ENGINES)
def test_stream_finds_patterns_straddling_chunks(engine):
    marker = "保護すべき情報".encode("cp932")
    mt = m.compile([m.Pattern(0, marker), m.Pattern(1, rb"JDA-[0-9]{4}", regex=True)], engine)
    data = b"head " + marker + b" JDA-1234 tail"
    for cut in range(1, len(data)):
        got = stream_all(mt, [data[:cut], data[cut:]])
        assert got == [(0, 5, 5 + len(marker)), (1, 20, 28)], cut
    # One byte at a time.
    assert stream_all(mt, [data[i:i + 1] for i in range(len(data))]) == [(0, 5, 19), (1, 20, 28)]


@pytest.mark.parametrize("engine", ENGINES)
def test_stream_reset_forgets_history(engine):
    mt = m.compile([m.Pattern(0, b"abcd")], engine)
    s = mt.stream()
    assert s.feed(b"xxab") == []
    s.reset()
    assert s.feed(b"cdab") == []
    assert s.feed(b"cd") == [(0, 2, 6)]


def test_unsupported_regexes_are_rejected_with_a_reason():
    for bad, why in [(rb"^abc", "anchors"), (rb"ab+c", "unbounded"), (rb"[a-z]{3}", "required literal"),
                     (rb"(?=x)abc", "lookahead"), (rb"(a)\1bc", "back references"), (rb"a?", "empty")]:
        with pytest.raises(m.PatternError, match=why):
            m.compile([m.Pattern(0, bad, regex=True)], "ahocorasick")


def test_empty_pattern_set_and_unknown_engine():
    mt = m.compile([], "ahocorasick")
    assert mt.scan(b"anything") == []
    assert mt.stream().feed(b"x") == []
    with pytest.raises(ValueError, match="unknown matcher engine"):
        m.resolve_engine("re2")


# ------------------------------------------------------------------ property: engines agree

ALPHABET = b"abAB\x00\x82\xa0-0123"
lits = st.binary(min_size=1, max_size=5).map(lambda b: bytes(ALPHABET[x % len(ALPHABET)] for x in b))
REGEXES = [rb"ab[0-9]{1,3}", rb"a\x00[bB]", rb"(?:ab|BA)-[0-9]{2}", rb"\x82[\xa0a]{1,2}0", rb"[ab]{2}1"]


@st.composite
def cases(draw):
    literals = draw(st.lists(lits, min_size=1, max_size=8))
    pats = [m.Pattern(i, lit, nocase=draw(st.booleans())) for i, lit in enumerate(literals)]
    for j, rx in enumerate(draw(st.lists(st.sampled_from(REGEXES), max_size=3, unique=True))):
        pats.append(m.Pattern(100 + j, rx, nocase=draw(st.booleans()), regex=True))
    data = draw(st.binary(max_size=200).map(lambda b: bytes(ALPHABET[x % len(ALPHABET)] for x in b)))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    return pats, data, cuts


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_engines_report_identical_matches(case):
    pats, data, cuts = case
    matchers = both(pats)
    block = [mt.scan(data) for mt in matchers]
    assert all(b == block[0] for b in block), block
    bounds = [0, *cuts, len(data)]
    chunks = [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    for mt in matchers:
        assert stream_all(mt, chunks) == block[0]


# ---------------------------------------------------------------- Hyperscan call conventions
# The Hyperscan engine calls the extension positionally, reuses one block collector per matcher
# and opens streams through Database.stream (see the module doc): these pin what that must keep.

needs_hyperscan = pytest.mark.skipif(not m.hyperscan_available(), reason="hyperscan not installed")


@needs_hyperscan
def test_block_scans_and_streams_of_one_matcher_do_not_share_hits():
    mt = m.compile([m.Pattern(1, b"secret"), m.Pattern(2, b"abc")], "hyperscan")
    s = mt.stream()
    assert s.feed(b"xxsec") == []  # the marker straddles this feed and the next
    assert mt.scan(b"abc abc") == [(2, 0, 3), (2, 4, 7)]
    assert mt.scan(b"nothing here") == []  # no hit of the previous block scan left over
    assert s.feed(b"ret abc") == [(1, 2, 8), (2, 9, 12)]  # nor of the block scans in the stream
    assert mt.scan(b"abc") == [(2, 0, 3)]
    s.close()


@needs_hyperscan
def test_a_failed_block_scan_leaves_no_hits_for_the_next(monkeypatch):
    mt = m.compile([m.Pattern(1, b"ab")], "hyperscan")
    real = m._on_hit
    calls = []

    def failing(pid, start, end, flags, ctx):
        real(pid, start, end, flags, ctx)
        calls.append(end)
        if len(calls) == 2:
            raise RuntimeError("callback failed")

    monkeypatch.setattr(m, "_on_hit", failing)
    with pytest.raises(RuntimeError):
        mt.scan(b"ab ab ab")
    monkeypatch.setattr(m, "_on_hit", real)
    assert mt.scan(b"xx ab") == [(1, 3, 5)]


@needs_hyperscan
def test_many_streams_open_feed_and_close_independently():
    """Streams come from Database.stream + __enter__ (whose reference counts only balance as a
    pair): thousands opened, interleaved and closed, each reports exactly its own match."""
    import gc

    mt = m.compile([m.Pattern(7, b"straddle")], "hyperscan")
    streams = [mt.stream() for _ in range(3000)]
    for i, s in enumerate(streams):
        assert s.feed(b"x" * (i % 5) + b"stra") == []
    gc.collect()
    for i, s in enumerate(streams):
        start = i % 5
        assert s.feed(b"ddle") == [(7, start, start + 8)]
        s.close()
        if i % 2:
            s.reset()
            assert s.feed(b"straddle") == [(7, 0, 8)]  # a reset stream reopens at offset 0
            s.close()
    gc.collect()
