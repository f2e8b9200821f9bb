"""The in-order fast path of TcpReassembler.packet must be invisible: for any segment schedule
(reordering, duplicates, different-data overlaps, holes, urgent data, FIN, RST, acknowledgements,
sequence wraparound) the sink sees exactly what the general path alone produces.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pktfactory import A, F, P, R, S, U, tcp
from stream_harness import Recorder, stream_config

from monitor.flow.reassembly import TcpReassembler
from monitor.flow.table import FlowTable
from monitor.model import TO_CLIENT, TO_SERVER
from monitor.stats import Stats

C, SV = "10.0.0.5", "203.0.113.7"


class Side:
    """A FlowTable + TcpReassembler + Recorder; ``fast`` False forces the general path."""

    def __init__(self, fast: bool, **stream) -> None:
        cfg = stream_config(**stream)
        self.stats = Stats()
        self.rec = Recorder()
        self.table = FlowTable(cfg, self.stats)
        self.r = TcpReassembler(cfg, self.stats, self.rec)
        if not fast:
            self.r.fast = False
        self.flow = None

    def feed(self, pkt) -> None:
        flow, d, _ = self.table.lookup(pkt)
        self.flow = flow
        self.r.packet(flow, d, pkt)

    def finish(self) -> tuple:
        self.r.close(self.flow, 1e6)
        res = self.rec.result(self.flow)
        return (bytes(res.marked[0]), bytes(res.marked[1]), res.gaps, res.overlaps, res.anomalies,
                dict(self.stats.counters), self.r.held)


# A segment is a chunk of the message cut at shared points (so segments meet exactly, as real
# ones do: hole fillers, in-order runs after a hole) or, now and then, an arbitrary range.
events = st.lists(
    st.tuples(
        st.sampled_from([TO_SERVER, TO_SERVER, TO_CLIENT]),  # direction
        st.one_of(st.integers(0, 12).map(lambda i: ("chunk", i)),
                  st.tuples(st.integers(-2, 150), st.integers(0, 40)).map(lambda r: ("range", r))),
        st.sampled_from(["", "", "", "", "mutate", "fin", "urg", "rst", "noack", "bare"]),
        st.integers(-5, 165),  # acknowledged offset of the other direction
        st.floats(0, 3),  # time step (gap_wait is 2 s)
    ),
    min_size=1, max_size=40)
cuts = st.lists(st.integers(1, 159), min_size=3, max_size=12, unique=True).map(lambda c: [0, *sorted(c), 160])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(isn_c=st.integers(0, 2**32 - 1), isn_s=st.integers(0, 2**32 - 1), handshake=st.booleans(),
       schedule=events, urgent=st.sampled_from(["oob", "inline"]), gap_bytes=st.sampled_from([8, 1 << 20]),
       caps=st.sampled_from([(1 << 28, 1 << 22), (48, 1 << 22), (1 << 28, 24)]),
       msg=st.binary(min_size=160, max_size=160), cut=cuts)
def test_fast_path_equals_general_path(isn_c, isn_s, handshake, schedule, urgent, gap_bytes, caps, msg, cut):
    memcap, flow_memcap = caps  # tiny caps: the recent window and waiting segments hit them
    stream = dict(urgent_policy=urgent, gap_wait_bytes=gap_bytes, memcap=memcap, per_flow_memcap=flow_memcap)
    sides = [Side(True, **stream), Side(False, **stream)]
    isn = (isn_c, isn_s)
    ends = ((C, SV, 40000, 80), (SV, C, 80, 40000))
    ts = 0.0
    packets = []
    if handshake:
        packets.append(tcp(C, SV, 40000, 80, S, seq=isn_c, ts=ts))
        packets.append(tcp(SV, C, 80, 40000, S | A, seq=isn_s, ack=isn_c + 1, ts=ts))
        packets.append(tcp(C, SV, 40000, 80, A, seq=isn_c + 1, ack=isn_s + 1, ts=ts))
    for direction, (how, which), kind, acked, step in schedule:
        ts += step
        if how == "chunk":
            i = which % (len(cut) - 1)
            start, length = cut[i], cut[i + 1] - cut[i]
        else:
            start, length = which
        data = b"" if kind == "bare" else msg[max(start, 0):max(start, 0) + length]
        if kind == "mutate" and data:
            data = bytes(b ^ 0x5A for b in data)
        flags = A | P
        if kind == "fin":
            flags |= F
        elif kind == "rst":
            flags = R | A
        elif kind == "noack":
            flags = P
        urg = 0
        if kind == "urg" and data:
            flags |= U
            urg = len(data)
        src, dst, sp, dp = ends[direction]
        packets.append(tcp(src, dst, sp, dp, flags, seq=isn[direction] + 1 + start,
                           ack=isn[1 - direction] + 1 + acked, payload=data, ts=ts, urg=urg))
    for pkt in packets:
        for side in sides:
            side.feed(pkt)
    fast, general = (side.finish() for side in sides)
    assert fast == general


def test_long_in_order_stream_takes_the_fast_path_across_the_wrap():
    # 2,000 segments of 1,000 bytes from an ISN 1 MB before 2**32: every data segment after the
    # first is on the fast path, the bytes arrive whole and in order, pure ACKs cost nothing.
    side = Side(True)
    isn_c, isn_s = 2**32 - 1_000_000, 7
    side.feed(tcp(C, SV, 40000, 80, S, seq=isn_c))
    side.feed(tcp(SV, C, 80, 40000, S | A, seq=isn_s, ack=isn_c + 1))
    side.feed(tcp(C, SV, 40000, 80, A, seq=isn_c + 1, ack=isn_s + 1))
    general = [0]
    original = side.r._general

    def counting(*args):
        general[0] += 1
        return original(*args)

    side.r._general = counting  # type: ignore[method-assign]
    body = bytes(range(256)) * 4
    for i in range(2000):
        chunk = body[:1000]
        side.feed(tcp(C, SV, 40000, 80, A | P, seq=isn_c + 1 + i * 1000, ack=isn_s + 1, payload=chunk))
        side.feed(tcp(SV, C, 80, 40000, A, seq=isn_s + 1, ack=isn_c + 1 + (i + 1) * 1000))
    assert general[0] == 0
    res = side.rec.result(side.flow)
    assert bytes(res.data[TO_SERVER]) == body[:1000] * 2000 and res.gaps == [[], []]
    s = side.flow.streams[TO_SERVER]
    assert s.next == 2_000_000 and s.nseq == (isn_c + 1 + 2_000_000) & 0xFFFFFFFF
    # The recent window stays bounded (trimmed in batches) and is all that is held.
    assert 16384 <= s.recent_bytes <= 2 * 16384 and side.r.held == s.recent_bytes
    # A retransmission of the last segment is recognised as such against that window.
    side.feed(tcp(C, SV, 40000, 80, A | P, seq=isn_c + 1 + 1999 * 1000, ack=isn_s + 1, payload=body[:1000]))
    assert side.stats.get("stream.retransmission") == 1 and res.overlaps == []
