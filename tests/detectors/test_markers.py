"""The raw/flat views of detectors/markers.py: the line probe, flat runs in stream mode, each
occurrence counted once; the redacted ISO-2022-JP context; containment and counters of the
engine's hot path."""

from __future__ import annotations

import base64
import quopri
import random

import pytest

from detectors import matcher as m
from detectors.alert import redacted_context
from detectors.markers import MarkerSet, MarkerStreams
from detectors.signatures import Rule
from tests.factories import tflow

MARKER = "保護すべき情報"
SID = 9100001
ENGINES = [e for e in m.ENGINES if e != "hyperscan" or m.hyperscan_available()]


def _rule(text: str = MARKER, sid: int = SID) -> Rule:
    return Rule(sid=sid, msg="m", kind="marker", priority=1, category="protected-data-leak", rev=1, metadata={},
                file="t", line=1, literal=text)


def _mime(payload: bytes) -> bytes:
    """A MIME part: headers, an empty line, base64 in 76-character CRLF lines."""
    return (b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + base64.encodebytes(payload).replace(b"\n", b"\r\n"))


def _segments(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("engine", ENGINES)
def test_line_probe_in_block_mode(engine):
    mt = m.compile([m.Pattern(0, b"needle")], engine, line_probe=True)
    rnd = random.Random(1)
    assert mt.scan(_mime(rnd.randbytes(3000)))[0] == (m.LINE_PROBE, 0, 0)
    assert mt.scan(b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(rnd.randbytes(200)))[0][0] == m.LINE_PROBE
    assert mt.scan(quopri.encodestring(("日本語の本文です。" * 20).encode()))[0][0] == m.LINE_PROBE
    # Binary data, prose, HTTP headers and an unbroken base64 run have no MIME-style lines.
    for data in (rnd.randbytes(20000), b"The quick brown fox.\n" * 200,
                 b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", base64.b64encode(rnd.randbytes(3000))):
        assert all(x[0] != m.LINE_PROBE for x in mt.scan(data))
    assert mt.scan(b"xx needle") == [(0, 3, 9)]


def test_hyperscan_stream_probe_fires_once_per_mime_body():
    pytest.importorskip("hyperscan")
    mt = m.compile([m.Pattern(0, b"needle")], "hyperscan", line_probe=True)
    st = mt.stream()
    rnd = random.Random(2)
    first, second = _mime(rnd.randbytes(100_000)), _mime(rnd.randbytes(50_000))
    data = b"HEAD\r\n" + first + rnd.randbytes(30_000) + second
    probes = [x[1] for seg in _segments(data, 1448) for x in st.feed(seg) if x[0] == m.LINE_PROBE]
    st.close()
    # The segments where each body's base64 starts (the padded last line of a body may add one);
    # not one per line: a 100 kB body has 1,800 lines.
    starts = {(data.index(body) + body.index(b"\r\n\r\n") + 4 + 40) // 1448 * 1448 for body in (first, second)}
    assert starts <= set(probes) and len(probes) <= 4, probes


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("seg", [7, 50, 1448])
def test_split_marker_in_each_of_two_mime_bodies_with_binary_between(engine, seg):
    """A flat run ends in the binary part and restarts at the second body: both split markers
    are found, once each, with the right variant."""
    ms = MarkerSet([_rule()], engine)
    rnd = random.Random(3)
    marker = MARKER.encode("utf-8")
    # 40 bytes of filler put the marker's base64 across the first line break (76 characters = 57 bytes).
    body = _mime(b"Q" * 40 + marker + rnd.randbytes(2000))
    data = body + rnd.randbytes(9000).replace(b"\n", b"") + b"\r\n" + body
    st = MarkerStreams(ms)
    hits = [h for s in _segments(data, seg) for h in st.feed(s)]
    st.close()
    assert len({(h.start, h.end) for h in hits}) == 2, [(h.variant, h.start) for h in hits]
    assert {h.variant.split("/")[0] for h in hits} == {"base64"}


@pytest.mark.parametrize("engine", ENGINES)
def test_unbroken_base64_inside_a_mime_body_counts_once(engine):
    ms = MarkerSet([_rule()], engine)
    marker = MARKER.encode("utf-8")
    body = _mime(b"P" + marker + b"Q" * 80 + marker + b"tail" * 30)  # two occurrences, both within a line
    st = MarkerStreams(ms)
    stream_hits = [h for s in _segments(body, 100) for h in st.feed(s)]
    st.close()
    assert len(stream_hits) == 2, [(h.variant, h.start) for h in stream_hits]
    assert len(ms.scan(body)) == 2


@pytest.mark.parametrize("engine", ENGINES)
def test_first_base64_line_straddling_segments(engine):
    """The probe fires in the segment after the one where the first base64 line starts; the line's
    beginning still joins the flat view."""
    ms = MarkerSet([_rule()], engine)
    marker = MARKER.encode("utf-8")
    body = _mime(b"Z" * 30 + marker + b"tail" * 40)  # the marker's base64 crosses the first line break
    first_line = body.index(b"\r\n\r\n") + 4
    for cut in range(first_line + 1, first_line + 45):
        st = MarkerStreams(ms)
        hits = st.feed(body[:cut]) + st.feed(body[cut:])
        st.close()
        assert [h.variant.split("/")[0] for h in hits] == ["base64"], cut


def test_iso2022jp_context_hides_the_jis_neighbours():
    text = "この資料は保護すべき情報を含むため、社外に出さないこと。"
    jis = text.encode("iso2022_jp")
    run = MARKER.encode("iso2022_jp")[3:-3]
    at = jis.index(run)
    for lo in range(0, 12):
        ctx = redacted_context(jis[lo:], at - lo, at - lo + len(run), "iso-2022-jp", len(MARKER), 8)
        assert "■" * len(MARKER) in ctx
        assert not any(c in ctx for c in "$;!\"#"), ctx  # no JIS byte pair survives as punctuation
        assert "、" in ctx  # real punctuation of the neighbourhood still shows the structure
    qp = quopri.encodestring(jis)
    qrun = quopri.encodestring(run)
    q = qp.index(qrun)
    ctx = redacted_context(qp, q, q + len(qrun), "qp/iso-2022-jp", len(MARKER), 8)
    assert ctx.startswith("○") and "■" * len(MARKER) in ctx and "$" not in ctx, ctx
    mixed = b"Subject: \x1b$B" + run + b"\x1b(B hello 123"
    assert redacted_context(mixed, 12, 12 + len(run), "iso-2022-jp", len(MARKER), 8) == \
        "○○○○○○: " + "■" * len(MARKER) + " ○○○○○ ○"  # 8 characters each side: "ubject: ", " hello 1"


def test_hot_path_contains_a_bug_and_folds_counters(harness, monkeypatch):
    h = harness()
    flow = tflow()
    h.det.stream_data(flow, 0, b"x" * 1000, 1.0, 1)
    h.det.stream_data(flow, 0, b"y" * 500, 1.0, 2)
    assert h.stats.get("detect.bytes", view="stream") == 0  # counted locally ...
    h.det.flow_end(flow)
    assert h.stats.get("detect.bytes", view="stream") == 1500  # ... folded at flow end

    def broken(self, data):
        raise RuntimeError("bug")

    monkeypatch.setattr(MarkerStreams, "feed", broken)
    monkeypatch.setattr(h.det, "strict", False)
    flow2 = tflow()
    h.det.stream_data(flow2, 0, b"data", 1.0, 3)  # does not raise
    assert h.stats.get("detect.internal_error", call="stream_data") == 1
    monkeypatch.setattr(h.det, "strict", True)
    with pytest.raises(RuntimeError):
        h.det.stream_data(flow2, 0, b"data", 1.0, 4)


def _flatten_reference(data: bytes) -> bytes:
    """flatten() as first written: soft line breaks (CRLF, then LF) out, then every CR and LF."""
    if b"\n" not in data and b"\r" not in data:
        return data
    if b"=" in data and (b"=\n" in data or b"=\r\n" in data):
        data = data.replace(b"=\r\n", b"").replace(b"=\n", b"")
    return data.replace(b"\r", b"").replace(b"\n", b"")


def test_flatten_matches_its_reference_on_generated_line_breaks():
    from detectors.markers import flatten

    rnd = random.Random(20261126)
    pieces = [b"=", b"\r", b"\n", b"=\r\n", b"=\n", b"==", b"\r\r\n", b"A", b"x=3D", b"\xe3\x81\x82"]
    for _ in range(5000):
        data = b"".join(rnd.choice(pieces) for _ in range(rnd.randrange(0, 30)))
        assert flatten(data) == _flatten_reference(data), data
    qp = quopri.encodestring(("保護すべき情報 " * 40).encode()).replace(b"\n", b"\r\n")
    assert flatten(qp) == _flatten_reference(qp) == qp.replace(b"=\r\n", b"").replace(b"\r\n", b"")
