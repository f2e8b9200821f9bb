"""pcaps/stream-evasions.pcap (pcaps/make_stream_evasions.py): each segmentation evasion gives
back the exact upload, with the gaps, overlaps and anomalies it should cause."""

from __future__ import annotations

import sys

import pytest
from stream_harness import gap_marker, run

from monitor.model import TO_CLIENT, TO_SERVER
from tests.conftest import PCAPS

sys.path.insert(0, str(PCAPS))
import make_stream_evasions as gen  # noqa: E402

PCAP = PCAPS / "stream-evasions.pcap"


@pytest.fixture(scope="module")
def flows():
    result = run(PCAP)
    by_port = {r.flow.cport: r for r in result.tcp()}
    assert sorted(by_port) == [41001, 41002, 41003, 41004, 41005, 41006]
    return by_port, result.stats


def test_committed_capture_is_what_the_generator_makes(tmp_path):
    fresh = tmp_path / "again.pcap"
    gen.main(["x", str(fresh)])
    assert fresh.read_bytes() == PCAP.read_bytes()


@pytest.mark.parametrize("port", [41001, 41002, 41003])
def test_tiny_reordered_and_duplicated_segments_give_the_whole_request(flows, port):
    r = flows[0][port]
    assert bytes(r.marked[TO_SERVER]) == gen.REQUEST
    assert bytes(r.marked[TO_CLIENT]) == gen.RESPONSE
    assert r.gaps == [[], []] and r.overlaps == [] and r.anomalies == []
    assert r.flow.state == "closed" and r.flow.addresses() == ("10.77.0.1", "10.77.0.2")


def test_duplicates_are_counted_as_retransmissions(flows):
    r = flows[0][41003]
    segments = (len(gen.REQUEST) + 31) // 32
    assert r.flow.pkts[TO_SERVER] == 2 + 2 * segments + 1 + 2  # SYN, ACK, data twice, stale copy, FIN, ACK
    # Each of the 6 duplicates plus the late copy of the first segment.
    assert flows[1].get("stream.retransmission") == segments + 1


def test_overlap_with_different_bytes_keeps_first_and_reports_decoy(flows):
    r = flows[0][41004]
    assert bytes(r.data[TO_SERVER]) == gen.REQUEST
    at = gen.REQUEST.index(gen.MARKER.encode())
    assert r.overlaps == [(TO_SERVER, at, b"PROTECTED-DOC-7731", b"x" * 18)]
    assert r.anomalies == [(TO_SERVER, "stream.overlap_different_data")]


def test_lost_segment_is_a_reported_gap(flows):
    r = flows[0][41005]
    assert bytes(r.marked[TO_SERVER]) == gen.REQUEST[:64] + gap_marker(64) + gen.REQUEST[128:]
    assert r.gaps == [[64], []] and r.flow.gaps == 1


def test_midstream_pickup(flows):
    r = flows[0][41006]
    start = gen.REQUEST.index(b"Content-Type")
    assert bytes(r.data[TO_SERVER]) == gen.REQUEST[start:]
    assert r.flow.cport == 41006 and r.flow.addresses()[0] == "10.77.0.1"
    assert bytes(r.data[TO_CLIENT]) == gen.RESPONSE
    assert flows[1].get("stream.midstream_pickup") == 2
