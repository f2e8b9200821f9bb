"""Per-flow detection state stays small: streams open at first payload, the flat view's stream
and the match bookkeeping exist only while needed -- without changing what is found."""

from __future__ import annotations

import base64
import random

import pytest

from detectors import matcher as m
from detectors.markers import MarkerSet, MarkerStreams
from detectors.signatures import Rule
from monitor.model import TO_CLIENT, TO_SERVER
from tests.factories import tflow

MARKER = "保護すべき情報"
ENGINES = [e for e in m.ENGINES if e != "hyperscan" or m.hyperscan_available()]


def _rule() -> Rule:
    return Rule(sid=9100001, msg="m", kind="marker", priority=1, category="protected-data-leak", rev=1,
                metadata={}, file="t", line=1, literal=MARKER)


def _mime(payload: bytes) -> bytes:
    return (b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + base64.encodebytes(payload).replace(b"\n", b"\r\n"))


def test_a_flow_without_matches_keeps_only_streams_and_byte_counts(harness):
    h = harness()
    flow = tflow(client="10.1.2.3", server="198.51.100.9")
    h.det.stream_data(flow, TO_SERVER, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 1.0)
    st = flow.detect
    assert st.tally is None and st.pending is None
    assert st.streams[TO_SERVER] is not None and st.streams[TO_CLIENT] is None  # no payload yet
    assert st.seen == [27, 0]
    assert not hasattr(st, "__dict__")  # slots only
    h.det.stream_data(flow, TO_CLIENT, b"", 1.0)
    assert st.streams[TO_CLIENT] is None
    assert h.det.flow_end(flow) == {"alerts": 0, "matches": {}, "signatures_version": h.det.version}
    assert flow.detect is None and "detect" not in flow.metadata


def test_a_matching_flow_creates_its_tally_and_reports_as_before(harness):
    h = harness()
    flow = tflow(client="10.1.2.3", server="198.51.100.9")
    data = b"x" * 100 + MARKER.encode() + b"y" * 100
    h.det.stream_data(flow, TO_SERVER, data[:150], 1.0)
    h.det.stream_data(flow, TO_SERVER, data[150:], 1.0)  # the marker straddles the two segments
    st = flow.detect
    assert st.tally is not None and st.tally.counts == {(9100001, None): 1}
    summary = h.det.flow_end(flow)
    assert summary["matches"] == {"9100001": 1} and summary["alerts"] >= 1
    assert [a["alert"]["signature_id"] for a in h.alerts(9100001)] == [9100001]


@pytest.mark.parametrize("engine", ENGINES)
def test_flat_stream_exists_only_during_a_flat_run(engine):
    ms = MarkerSet([_rule()], engine)
    rnd = random.Random(7)
    st = MarkerStreams(ms)
    assert st.flat is None and st._deferred is None and st._fdeferred is None
    body = _mime(b"Q" * 40 + MARKER.encode() + rnd.randbytes(3000))  # the marker's base64 crosses a line break
    hits = []
    during = []
    for i in range(0, len(body), 1448):
        hits += st.feed(body[i:i + 1448])
        during.append(st.flat is not None)
    assert during[-1] and len({(h.start, h.end) for h in hits}) == 1
    assert {h.variant.split("/")[0] for h in hits} == {"base64"}
    st.feed(rnd.randbytes(2000).replace(b"\n", b""))  # no lines: the run ends
    assert st.flat is None
    # A second body opens a new run and still finds its marker.
    again = [h for i in range(0, len(body), 1448) for h in st.feed(body[i:i + 1448])]
    assert len({(h.start, h.end) for h in again}) == 1
    st.close()
    assert st.flat is None


def test_hyperscan_stream_state_is_allocated_at_first_payload():
    pytest.importorskip("hyperscan")
    st = MarkerStreams(MarkerSet([_rule()], "hyperscan"))
    assert st.raw._hs is None  # type: ignore[attr-defined]
    st.feed(b"payload")
    assert st.raw._hs is not None  # type: ignore[attr-defined]
    st.close()
    assert st.raw._hs is None  # type: ignore[attr-defined]
