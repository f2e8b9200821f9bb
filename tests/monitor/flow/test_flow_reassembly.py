"""TcpReassembler on crafted segments: ordering, retransmissions, overlap policies, gaps,
memcaps, depth, urgent data, sequence wraparound, huge offsets, connection end."""

from __future__ import annotations

import pytest
from pktfactory import A, F, P, R, S, U, tcp
from stream_harness import Recorder, gap_marker, stream_config

from monitor.flow.reassembly import TcpReassembler, gap_bytes
from monitor.flow.table import FlowTable
from monitor.model import TO_CLIENT, TO_SERVER
from monitor.stats import Stats

C, SV = "10.0.0.5", "203.0.113.7"


class Conn:
    """One TCP connection fed through FlowTable + TcpReassembler."""

    def __init__(self, isn_c: int = 1000, isn_s: int = 5000, handshake: bool = True,
                 rec: Recorder | None = None, **stream) -> None:
        self.cfg = stream_config(**stream)
        self.stats = Stats()
        self.rec = rec if rec is not None else Recorder()
        self.table = FlowTable(self.cfg, self.stats)
        self.r = TcpReassembler(self.cfg, self.stats, self.rec)
        self.isn = [isn_c, isn_s]
        self.flow = None
        self.ts = 0.0
        if handshake:
            self.send(TO_SERVER, 0, flags=S, seq=isn_c)
            self.send(TO_CLIENT, 0, flags=S | A, seq=isn_s, ack=isn_c + 1)
            self.send(TO_SERVER, 1, flags=A, ack=isn_s + 1)

    def send(self, direction: int, off: int, data: bytes = b"", flags: int = A | P, seq: int | None = None,
             ack: int | None = None, ts: float | None = None, urg: int = 0) -> None:
        """A segment carrying ``data`` at stream offset ``off`` (ISN+1 is offset 0 ... here off 1)."""
        if ts is not None:
            self.ts = ts
        if seq is None:
            seq = self.isn[direction] + 1 + off if off >= 0 else self.isn[direction]
        if ack is None:
            ack = self.isn[1 - direction] + 1
        src, dst, sp, dp = (C, SV, 40000, 80) if direction == TO_SERVER else (SV, C, 80, 40000)
        if not flags & A:
            ack = 0
        pkt = tcp(src, dst, sp, dp, flags, seq=seq, ack=ack, payload=data, ts=self.ts, urg=urg)
        flow, d, _ = self.table.lookup(pkt)
        self.flow = flow
        self.r.packet(flow, d, pkt)

    def data(self, direction: int = TO_SERVER, off: int = 0, payload: bytes = b"", **kw) -> None:
        self.send(direction, off, payload, **kw)

    def ack(self, direction: int, upto: int, ts: float | None = None) -> None:
        """The other side acknowledges ``direction``'s bytes up to offset ``upto``."""
        self.send(1 - direction, 0, b"", flags=A, seq=self.isn[1 - direction] + 1,
                  ack=self.isn[direction] + 1 + upto, ts=ts)

    def close(self) -> None:
        self.r.close(self.flow, self.ts)

    def out(self, direction: int = TO_SERVER) -> bytes:
        return bytes(self.rec.result(self.flow).marked[direction])

    @property
    def res(self):
        return self.rec.result(self.flow)


class ChunkRecorder(Recorder):
    """Also keeps each on_data call's bytes, to see what was handed on when."""

    def __init__(self) -> None:
        super().__init__()
        self.chunks: list[bytes] = []

    def on_data(self, flow, direction, data, ts) -> None:
        self.chunks.append(data)
        super().on_data(flow, direction, data, ts)


def test_in_order_is_delivered_immediately_and_streamed():
    c = Conn(rec=ChunkRecorder())
    chunks = c.rec.chunks
    c.data(off=0, payload=b"hello ")
    assert chunks == [b"hello "]  # no waiting for more
    c.data(off=6, payload=b"world")
    c.data(TO_CLIENT, 0, b"OK")
    assert chunks == [b"hello ", b"world", b"OK"]
    assert c.r.held == min(16384, len(b"hello world")) + 2  # only the recent window


def test_one_byte_segments_out_of_order_and_duplicates():
    c = Conn()
    msg = b"SECRET-DOC"
    order = [3, 0, 1, 9, 2, 2, 5, 4, 8, 6, 7, 0, 9]
    for i in order:
        c.data(off=i, payload=msg[i:i + 1])
    assert c.out() == msg
    assert c.stats.get("stream.retransmission") == 3
    assert c.res.overlaps == [] and c.res.gaps == [[], []]
    assert c.r.held == len(msg)  # recent window only; nothing waiting


def test_retransmission_with_different_bytes_is_reported_first_wins():
    c = Conn()
    c.data(off=0, payload=b"GOOD")
    c.data(off=0, payload=b"EVIL")
    assert c.out() == b"GOOD"
    assert c.res.overlaps == [(TO_SERVER, 0, b"GOOD", b"EVIL")]
    assert c.res.anomalies == [(TO_SERVER, "stream.overlap_different_data")]
    assert c.stats.get("stream.overlap_different_data") == 1


# Overlap policy table: an old segment held out of order ("A"), then a new one overlapping it
# ("B"), then the hole before them filled ("."). Positions count from stream offset 2.
OLD = (2, b"AAAAAAAA")  # covers positions 2..10
CASES = {
    # name: (new segment, {policy: expected stream from offset 2})
    "same start, same end": ((2, b"BBBBBBBB"), {"first": "..AAAAAAAA", "last": "..BBBBBBBB", "bsd": "..AAAAAAAA",
                                                "windows": "..AAAAAAAA", "linux": "..AAAAAAAA"}),
    "same start, longer": ((2, b"BBBBBBBBBB"), {"first": "..AAAAAAAABB", "last": "..BBBBBBBBBB",
                                                "bsd": "..AAAAAAAABB", "windows": "..AAAAAAAABB",
                                                "linux": "..BBBBBBBBBB"}),
    "starts before, covers": ((1, b"BBBBBBBBBBB"), {"first": ".BAAAAAAAABB", "last": ".BBBBBBBBBBB",
                                                    "bsd": ".BBBBBBBBBBB", "windows": ".BBBBBBBBBBB",
                                                    "linux": ".BBBBBBBBBBB"}),
    "starts before, ends inside": ((0, b"BBBBBB"), {"first": "BBAAAAAAAA", "last": "BBBBBBAAAA",
                                                    "bsd": "BBBBBBAAAA", "windows": "BBBBBBAAAA",
                                                    "linux": "BBBBBBAAAA"}),
    "starts inside, ends after": ((6, b"BBBBBBBB"), {"first": "..AAAAAAAABBBB", "last": "..AAAABBBBBBBB",
                                                     "bsd": "..AAAAAAAABBBB", "windows": "..AAAAAAAABBBB",
                                                     "linux": "..AAAAAAAABBBB"}),
    "inside": ((4, b"BBB"), {"first": "..AAAAAAAA", "last": "..AABBBAAA", "bsd": "..AAAAAAAA",
                             "windows": "..AAAAAAAA", "linux": "..AAAAAAAA"}),
}


@pytest.mark.parametrize("policy", ["first", "last", "bsd", "windows", "linux"])
@pytest.mark.parametrize("case", list(CASES))
def test_overlap_policies(policy, case):
    (n_off, n_data), table = CASES[case]
    expected = table[policy]
    c = Conn(overlap_policy=policy)
    c.data(off=0, payload=b"xx")
    c.data(off=OLD[0] + 2, payload=OLD[1])
    c.data(off=n_off + 2, payload=n_data)
    hole = min(OLD[0], n_off)
    if hole:
        c.data(off=2, payload=b"." * hole)
    c.ack(TO_SERVER, 2 + len(expected))
    want = b"xx" + expected.encode()
    assert c.out() == want
    # Different bytes overlapped: reported once per overlapped segment, with both versions.
    assert len(c.res.overlaps) == 1
    _, offset, kept, other = c.res.overlaps[0]
    assert want[offset:offset + len(kept)] == kept
    assert set(kept) ^ set(other) == {ord("A"), ord("B")}
    assert c.res.anomalies == [(TO_SERVER, "stream.overlap_different_data")]


def test_last_policy_replaces_unacknowledged_in_order_bytes():
    # Suricata eve-overlap-payload-02 (old-linux/last): "GOOD" then "EVIL" at the same place,
    # acknowledged afterwards: the receiver keeps EVIL.
    c = Conn(overlap_policy="last")
    c.data(off=0, payload=b"GOOD")
    assert c.out() == b""  # waits for the acknowledgement
    c.data(off=0, payload=b"EVIL")
    c.ack(TO_SERVER, 4)
    assert c.out() == b"EVIL"
    assert c.res.overlaps == [(TO_SERVER, 0, b"EVIL", b"GOOD")]
    # Once acknowledged, a later copy cannot win any more.
    c.data(off=0, payload=b"BAD!")
    assert c.out() == b"EVIL"
    assert c.res.overlaps[-1] == (TO_SERVER, 0, b"EVIL", b"BAD!")


def test_unacknowledged_bytes_wait_at_most_gap_wait_under_other_policies():
    c = Conn(overlap_policy="linux", gap_wait=2.0)
    c.data(off=0, payload=b"one-way", ts=10.0)
    c.data(off=7, payload=b" capture", ts=11.0)
    assert c.out() == b""
    c.data(off=15, payload=b"!", ts=12.5)
    assert c.out() == b"one-way capture!"


def test_hole_skipped_when_receiver_acknowledges_past_it():
    c = Conn()
    c.data(off=0, payload=b"VERY")
    c.data(off=8, payload=b"DATA")  # 4..8 never captured
    assert c.out() == b"VERY"
    c.ack(TO_SERVER, 12)
    assert c.out() == b"VERY" + gap_marker(4) + b"DATA"
    assert c.res.gaps[TO_SERVER] == [4] and c.flow.gaps == 1 and gap_bytes(c.flow) == 4
    assert c.stats.get("stream.gap") == 1 and c.stats.get("stream.gap_bytes") == 4


def test_hole_skipped_when_a_fin_or_data_segment_acknowledges_past_it():
    # Not only pure ACKs carry acknowledgements: a FIN/ACK or a data segment of the other
    # side that acknowledges past the hole releases it too.
    for flags, payload in ((F | A, b""), (A | P, b"reply")):
        c = Conn()
        c.data(off=0, payload=b"VERY")
        c.data(off=8, payload=b"DATA")  # 4..8 never captured
        c.send(TO_CLIENT, 0, payload, flags=flags, ack=c.isn[TO_SERVER] + 1 + 12)
        assert c.out() == b"VERY" + gap_marker(4) + b"DATA"


def test_hole_skipped_after_gap_wait():
    c = Conn(gap_wait=2.0)
    c.data(off=0, payload=b"abc", ts=1.0)
    c.data(off=5, payload=b"fgh", ts=1.5)
    c.r.check_timeouts(c.flow, 3.4)
    assert c.out() == b"abc"
    c.r.check_timeouts(c.flow, 3.5)
    assert c.out() == b"abc" + gap_marker(2) + b"fgh"
    assert c.stats.get("stream.gap_forced", why="time") == 1
    # The late segment is then old news.
    c.data(off=3, payload=b"de", ts=4.0)
    assert c.out() == b"abc" + gap_marker(2) + b"fgh"
    assert c.stats.get("stream.retransmission_unverified") == 1


def test_retransmissions_around_a_skipped_hole_are_checked_against_the_right_bytes():
    # The recent window restarts after a hole, so old and new copies are compared at the right
    # offsets: the same bytes are a retransmission, never a false "different data" report.
    c = Conn()
    c.data(off=0, payload=b"AAAA")
    c.data(off=8, payload=b"CCCC")  # 4..8 never captured
    c.ack(TO_SERVER, 12)
    c.data(off=12, payload=b"DDDD")  # in order after the hole (the fast path)
    assert c.out() == b"AAAA" + gap_marker(4) + b"CCCCDDDD"
    c.data(off=8, payload=b"CCCCDDDD")  # a retransmission after the hole: verified
    assert c.stats.get("stream.retransmission") == 1 and c.res.overlaps == []
    c.data(off=0, payload=b"AAAA")  # before the hole: too old to compare, dropped
    c.data(off=4, payload=b"BBBB")  # the lost bytes, late: inside the skipped hole, dropped
    assert c.stats.get("stream.retransmission_unverified") == 2 and c.res.overlaps == []
    c.data(off=10, payload=b"XX")  # different bytes after the hole: reported at their offset
    assert c.res.overlaps == [(TO_SERVER, 10, b"CC", b"XX")]
    assert c.out() == b"AAAA" + gap_marker(4) + b"CCCCDDDD"


def test_check_all_timeouts_visits_only_waiting_flows():
    c = Conn(gap_wait=2.0)
    c.data(off=0, payload=b"abc", ts=1.0)
    assert c.r.waiting == {}
    c.data(off=5, payload=b"fgh", ts=1.5)
    assert list(c.r.waiting) == [c.flow.flow_id]
    c.r.check_all_timeouts(3.0)
    assert c.out() == b"abc" and c.r.waiting
    c.r.check_all_timeouts(3.5)
    assert c.out() == b"abc" + gap_marker(2) + b"fgh"
    assert c.r.waiting == {}


def test_hole_skipped_when_gap_wait_bytes_queue_behind_it():
    c = Conn(gap_wait_bytes=1000, gap_wait=3600.0)
    c.data(off=0, payload=b"x")
    for k in range(4):
        c.data(off=101 + 300 * k, payload=b"y" * 300)
    assert c.out() == b"x" + gap_marker(100) + b"y" * 1200
    assert c.stats.get("stream.gap_forced", why="bytes") == 1


def test_per_flow_memcap_forces_delivery_and_counts():
    c = Conn(per_flow_memcap=1000, gap_wait_bytes=10**9, gap_wait=3600.0)
    c.data(off=0, payload=b"a")
    c.data(off=11, payload=b"b" * 600)
    c.data(off=700, payload=b"c" * 600)  # would hold 1200 > 1000
    assert c.stats.get("stream.memcap", cap="flow") == 1
    assert c.out() == b"a" + gap_marker(10) + b"b" * 600
    c.close()
    assert c.out() == b"a" + gap_marker(10) + b"b" * 600 + gap_marker(89) + b"c" * 600
    assert c.r.held == 0


def test_global_memcap_is_shared_and_counted():
    cfg = stream_config(memcap=4096, gap_wait=3600.0, gap_wait_bytes=10**9)
    stats, rec = Stats(), Recorder()
    table = FlowTable(cfg, stats)
    r = TcpReassembler(cfg, stats, rec)
    flows = []
    for k in range(4):
        isn = 100
        syn = tcp(C, SV, 1000 + k, 80, S, seq=isn)
        f, d, _ = table.lookup(syn)
        r.packet(f, d, syn)
        # A hole at 0..10, then 1500 bytes waiting.
        seg = tcp(C, SV, 1000 + k, 80, A, seq=isn + 11, payload=bytes([65 + k]) * 1500)
        r.packet(f, table.lookup(seg)[1], seg)
        flows.append(f)
        assert r.held <= 4096
    assert stats.get("stream.memcap", cap="global") >= 1
    # The flow that hit the cap delivered its bytes (after a reported gap) instead of dropping them.
    assert any(rec.result(f).gaps[TO_SERVER] for f in flows)
    for f in flows:
        r.close(f, 1.0)
        assert bytes(rec.result(f).data[TO_SERVER]).count(bytes([65 + flows.index(f)])) == 1500
    assert r.held == 0


def test_depth_reached_once_and_counted():
    c = Conn(depth=10)
    c.data(off=0, payload=b"0123456")
    c.data(off=7, payload=b"789abc")
    c.data(off=13, payload=b"more")
    assert c.out() == b"0123456789"
    assert c.res.depth == [TO_SERVER]
    assert c.stats.get("stream.depth_reached") == 1
    c.data(TO_CLIENT, 0, b"per dir")
    assert c.out(TO_CLIENT) == b"per dir"  # each direction has its own depth


def test_urgent_byte_removed_out_of_band():
    c = Conn(urgent_policy="oob")
    c.data(off=0, payload=b"GET /malic")
    c.data(off=10, payload=b"X", flags=A | P | U, urg=1)
    c.data(off=11, payload=b"ious HTTP/1.0\r\n")
    assert c.out() == b"GET /malicious HTTP/1.0\r\n"
    inline = Conn(urgent_policy="inline")
    inline.data(off=0, payload=b"GET /malic")
    inline.data(off=10, payload=b"X", flags=A | P | U, urg=1)
    assert inline.out() == b"GET /malicX"


def test_sequence_wraparound():
    c = Conn(isn_c=0xFFFFFFF0)
    data = bytes(range(48))
    for k in range(0, 48, 8):
        c.data(off=k, payload=data[k:k + 8])
    assert c.out() == data
    assert c.res.gaps == [[], []]


def test_huge_sparse_offsets_do_not_buffer():
    # Segments 1.5 GB apart (a sparsely captured multi-GB transfer): each jump is a gap,
    # acknowledged by the receiver; nothing large is ever held.
    c = Conn(isn_c=123)
    c.data(off=0, payload=b"start")
    off = 5
    for k in range(4):
        off += 1_500_000_000
        c.data(off=off, payload=b"chunk%d" % k)
        c.ack(TO_SERVER, off + 6)
        off += 6
        assert c.r.held < 100
    assert c.res.gaps[TO_SERVER] == [1_500_000_000] * 4
    assert c.out().endswith(b"chunk3")
    assert gap_bytes(c.flow) == 6_000_000_000


def test_midstream_pickup_and_syn_data():
    c = Conn(handshake=False)
    c.send(TO_SERVER, 0, b"middle of ", flags=A | P, seq=777, ack=1)
    c.send(TO_SERVER, 0, b"a stream", flags=A | P, seq=787, ack=1)
    assert c.out() == b"middle of a stream"
    assert c.stats.get("stream.midstream_pickup") == 1
    d = Conn(handshake=False)
    d.send(TO_SERVER, 0, b"fastopen", flags=S, seq=41)
    d.send(TO_SERVER, 0, b"+more", flags=A | P, seq=50, ack=1)
    assert d.out() == b"fastopen+more"


def test_simultaneous_open_and_split_handshake():
    c = Conn(handshake=False)
    c.send(TO_SERVER, 0, flags=S, seq=1000)
    c.send(TO_CLIENT, 0, flags=S, seq=5000)
    c.send(TO_SERVER, 0, flags=S | A, seq=1000, ack=5001)
    c.send(TO_CLIENT, 0, flags=S | A, seq=5000, ack=1001)
    c.data(TO_SERVER, 0, b"EVIL")
    c.data(TO_CLIENT, 0, b"ok")
    assert c.out() == b"EVIL" and c.out(TO_CLIENT) == b"ok"


def test_half_close_fin_and_rst():
    c = Conn()
    c.data(off=0, payload=b"request")
    c.send(TO_SERVER, 7, flags=F | A)
    c.data(TO_CLIENT, 0, b"response after client FIN")
    assert c.out(TO_CLIENT) == b"response after client FIN"
    c.send(TO_CLIENT, 25, flags=R)
    assert c.flow.state == "closed" and c.stats.get("stream.rst") == 1


def test_close_flushes_waiting_bytes_and_reports_missing_tail():
    c = Conn(gap_wait=3600.0)
    c.data(off=0, payload=b"head")
    c.data(off=10, payload=b"tail")
    c.send(TO_SERVER, 20, flags=F | A)  # bytes 14..20 never seen
    assert c.out() == b"head"
    c.close()
    assert c.out() == b"head" + gap_marker(6) + b"tail" + gap_marker(6)
    assert c.r.held == 0
    c.close()  # idempotent
    c.data(off=30, payload=b"after close")
    assert c.out().endswith(gap_marker(6))
