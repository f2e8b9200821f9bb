"""Pipeline.process's fused fast path must be invisible.

The same frames go through two pipelines: one as built (established TCP flows found by raw
endpoint bytes, pure ACKs and in-order segments handled without a Packet), one with the
table's ``fast_tcp`` index switched off, so every frame takes decode -> FlowTable.lookup ->
TcpReassembler.packet. Both must hand the same bytes to ``on_data`` in the same order and
produce the same events and counters: on the committed captures, on capture-corpus files
and on generated sessions (IPv4/IPv6, VLAN, TCP options, reordering, retransmissions with
different data, holes, urgent data, FIN/RST, self-connections, port reuse).
"""

from __future__ import annotations

import dataclasses
import re
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerts.eve import dumps
from monitor.capture.pcapfile import read_capture
from monitor.config import Config, StreamConfig
from monitor.events import Event
from monitor.flow.table import FlowIds
from monitor.model import LINKTYPE_ETHERNET, RawPacket
from monitor.pipeline import Pipeline
from monitor.stats import Stats

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT.parent / "shared" / "corpus"
_FILE_ID = re.compile(r'("(?:parent_)?file_id":)(\d+)')


class RecordingPipeline(Pipeline):
    """A Pipeline that also records every hand-off of in-order bytes to the parser and the scan.

    Recorded at ``_hand_on``, where every path meets: ``on_data`` without stream chunks, the
    chunk's flush with them (the fused path appends to a chunk being collected without
    ``on_data``), each as of the packet whose numbers the results carry.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.handed: list[tuple[int, int, int, bytes, float]] = []

    def _hand_on(self, flow: Any, direction: int, data: bytes, ts: float) -> None:
        self.handed.append((flow.flow_id, direction, self.pcap_cnt, bytes(data), ts))
        super()._hand_on(flow, direction, data, ts)


# Without stream chunks: the full path hands every packet's bytes on at once (it makes any
# collected chunk go on first), the fused path collects them; chunks have their own test
# (test_pipeline_chunks.py). Here the two paths must agree segment by segment.
UNCHUNKED = dataclasses.replace(Config(), stream=dataclasses.replace(StreamConfig(), chunk_size=0))


def observed(events: list[Event], stats: Stats) -> tuple[list, dict]:
    """Events as comparable values (file ids renumbered per run, stats without timing) and the
    counters (signature loading differs between two pipelines of one process)."""
    seen = []
    file_ids: dict[str, str] = {}

    def file_id(m: re.Match[str]) -> str:  # a per-process counter: renumbered per run
        return m.group(1) + file_ids.setdefault(m.group(2), str(len(file_ids)))

    for ev in events:
        body = ev.body
        if ev.event_type == "stats":
            body = {k: v for k, v in body["stats"].items() if k not in ("uptime", "signatures")}
        seen.append((ev.event_type, ev.ts, ev.direction, ev.pcap_cnt, ev.tx_id,
                     None if ev.flow is None else ev.flow.flow_id, _FILE_ID.sub(file_id, dumps(body))))
    counters = {k: v for k, v in stats.counters.items()
                if not (k[0] if isinstance(k, tuple) else k).startswith("signatures.")}
    return seen, counters


def _run(frames: list[RawPacket], fast: bool) -> tuple[list, list, dict]:
    stats = Stats()
    pipeline = RecordingPipeline(UNCHUNKED, stats=stats, eve_path="", replay=True, evidence=False)
    pipeline.flows._ids = FlowIds(salt=12345)  # the same flow ids in both runs
    if not fast:
        pipeline.flows.fast_tcp = None
    events: list[Event] = []
    pipeline.bus.subscribe("recorder", events.append)
    for raw in frames:
        # A fresh RawPacket per run: the pipeline may keep references (evidence, events).
        pipeline.process(RawPacket(raw.ts, raw.linktype, raw.data, raw.pcap_cnt, raw.iface, raw.wire_len))
    pipeline.finish()
    seen, counters = observed(events, stats)
    return pipeline.handed, seen, counters


def _assert_same(frames: list[RawPacket]) -> list:
    fast = _run(frames, fast=True)
    slow = _run(frames, fast=False)
    assert fast[0] == slow[0]
    assert fast[1] == slow[1]
    assert fast[2] == slow[2]
    return fast[0]


COMMITTED = sorted(p for p in (ROOT / "pcaps").iterdir() if p.suffix in (".pcap", ".pcapng"))


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.name)
def test_committed_captures_same_with_and_without_fast_path(path):
    frames = list(read_capture(path, stats=Stats()))
    handed = _assert_same(frames)
    if path.name == "sample-leak-http.pcap":
        assert sum(len(h[3]) for h in handed) > 2000  # the check saw real streams


def _corpus_captures() -> list[Path]:
    if not CORPUS.is_dir():
        return []
    found = sorted(p for p in CORPUS.rglob("*") if p.suffix in (".pcap", ".pcapng") and p.stat().st_size < 3_000_000)
    return found[::6][:60]  # a spread sample: the whole corpus takes minutes


@pytest.mark.parametrize("path", _corpus_captures(), ids=lambda p: str(p.relative_to(CORPUS)))
def test_corpus_captures_same_with_and_without_fast_path(path):
    try:
        frames = list(read_capture(path, stats=Stats()))
    except Exception:  # noqa: BLE001 - not every corpus file is a readable capture
        pytest.skip("not readable as a capture")
    _assert_same(frames)


# ------------------------------------------------------------------ generated sessions

HOSTS4 = [bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), bytes([192, 168, 1, 9])]
HOSTS6 = [bytes(15) + b"\x01", bytes(15) + b"\x02"]


def _frame(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int, payload: bytes,
           vlan: int | None, options: bytes, urg: int, pad: int) -> bytes:
    hlen = 20 + len(options)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, (hlen // 4) << 4, flags,
                      65535, 0, urg) + options + payload
    if len(src) == 4:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0x4000, 64, 6, 0, src, dst) + tcp
        etype = 0x0800
    else:
        ip = struct.pack("!IHBB16s16s", 0x60000000, len(tcp), 6, 64, src, dst) + tcp
        etype = 0x86DD
    tag = b"" if vlan is None else struct.pack("!HH", 0x8100, vlan)
    return b"\x02" * 6 + b"\x04" * 6 + tag + struct.pack("!H", etype) + ip + b"\0" * pad


FLAGS = [0x10, 0x10, 0x10, 0x10, 0x18, 0x18, 0x18, 0x00, 0x11, 0x14, 0x04, 0x30, 0x02, 0x12, 0x08]

segment = st.tuples(
    st.integers(0, 2),  # flow index
    st.booleans(),  # from the client
    # Chunk index into the direction's message (None: the next one, as in-order traffic goes;
    # negative or beyond the message: a pure ACK).
    st.one_of(st.none(), st.none(), st.none(), st.integers(-3, 40)),
    st.sampled_from(FLAGS),
    st.sampled_from(["", "", "", "mutate", "short", "ack-back", "ack-ahead"]),
    st.floats(0, 3),  # time step
)
flow_spec = st.tuples(
    st.sampled_from(["v4", "v4", "v6", "self"]),
    st.one_of(st.none(), st.just(7)),  # VLAN
    st.sampled_from([b"", b"", b"\x01\x01\x08\x0a" + bytes(8)]),  # TCP options (NOP NOP timestamps)
    st.integers(0, (1 << 32) - 1),  # client ISN
    st.integers(0, (1 << 32) - 1),  # server ISN
    st.booleans(),  # starts with a handshake
)


def _session(specs: list[tuple], schedule: list[tuple], chunk: int) -> list[RawPacket]:
    flows = []
    for i, (kind, vlan, options, isn_c, isn_s, handshake) in enumerate(specs):
        if kind == "v6":
            c, s = HOSTS6[0], HOSTS6[1]
        elif kind == "self":
            c = s = HOSTS4[0]
        else:
            c, s = HOSTS4[i % 3], HOSTS4[(i + 1) % 3]
        cport, sport = 40000 + i, 80 if kind != "self" else 40000 + i + 100
        flows.append((c, s, cport, sport, vlan, options, isn_c, isn_s, handshake))
    frames: list[bytes] = []
    times: list[float] = []
    ts = 1_700_000_000.0

    def emit(frame: bytes) -> None:
        frames.append(frame)
        times.append(ts)

    for c, s, cport, sport, vlan, options, isn_c, isn_s, handshake in flows:
        if handshake:
            emit(_frame(c, s, cport, sport, isn_c - 1, 0, 0x02, b"", vlan, options, 0, 0))
            emit(_frame(s, c, sport, cport, isn_s - 1, isn_c, 0x12, b"", vlan, options, 0, 0))
            emit(_frame(c, s, cport, sport, isn_c, isn_s, 0x10, b"", vlan, options, 0, 0))
    message = bytes(range(256)) * 4
    next_chunk: dict[tuple[int, bool], int] = {}
    for index, from_client, k, flags, how, step in schedule:
        index %= len(flows)
        c, s, cport, sport, vlan, options, isn_c, isn_s, _ = flows[index]
        if k is None:
            k = next_chunk.get((index, from_client), 0)
        next_chunk[index, from_client] = k + 1
        ts += step
        src, dst, sp, dp, isn, peer_isn = (c, s, cport, sport, isn_c, isn_s) if from_client else \
            (s, c, sport, cport, isn_s, isn_c)
        payload = message[k * chunk:(k + 1) * chunk] if k >= 0 else b""
        if how == "mutate" and payload:
            payload = bytes([payload[0] ^ 0xFF]) + payload[1:]
        elif how == "short":
            payload = payload[: len(payload) // 2]
        ack = peer_isn + (chunk * 6 if how == "ack-ahead" else -chunk if how == "ack-back" else chunk * 2)
        emit(_frame(src, dst, sp, dp, isn + max(k, 0) * chunk, ack, flags, payload, vlan, options,
                    len(payload) // 2 if flags & 0x20 else 0, 6 if not payload and len(src) == 4 else 0))
    return [RawPacket(t, LINKTYPE_ETHERNET, f, i + 1, "", len(f)) for i, (t, f) in enumerate(zip(times, frames, strict=True))]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(flow_spec, min_size=1, max_size=3), st.lists(segment, min_size=1, max_size=60),
       st.sampled_from([1, 7, 100]))
def test_generated_sessions_same_with_and_without_fast_path(specs, schedule, chunk):
    _assert_same(_session(specs, schedule, chunk))


def test_generated_in_order_session_takes_the_fast_path():
    """Not vacuous: an ordinary session's data is handed on from the fast path."""
    schedule = [(0, True, k, 0x18, "", 0.01) for k in range(10)] + [(0, False, -1, 0x10, "", 0.01)]
    frames = _session([("v4", None, b"", 1000, 5000, True)], schedule, 100)
    stats = Stats()
    pipeline = RecordingPipeline(Config(), stats=stats, eve_path="", replay=True, evidence=False)
    decoded = []
    decode = pipeline.decoder.decode
    pipeline.decoder.decode = lambda raw: decoded.append(raw.pcap_cnt) or decode(raw)  # type: ignore[method-assign]
    states = []
    for raw in frames:
        pipeline.process(raw)
        states.extend(flow.state for flow in pipeline.flows.flows.values())
    # SYN and SYN/ACK go the full way (they create the flow, its streams and ISNs); the
    # handshake's last ACK (which makes the flow established), the in-order data and the
    # final ACK never reach the decoder.
    assert decoded == [1, 2]
    assert states[:3] == ["new", "new", "established"]
    assert b"".join(h[3] for h in pipeline.handed) == (bytes(range(256)) * 4)[:1000]


# ------------------------------------------------------------------ the replay driver
#
# Pipeline.replay_capture hands frames to Pipeline.process_frame straight from the pcap
# reader's buffer and builds a RawPacket only for the frames that go the full way. It must be
# invisible too: the same hand-offs, events, counters, reader counters, pcap_cnt numbering and
# evidence packets as iterating read_capture into Pipeline.process.


def _recorded(recorders: list[Any]) -> list[list[tuple]]:
    """Every evidence recorder's packets, as plain values."""
    return [[(r.ts, r.linktype, bytes(r.data), r.pcap_cnt, r.iface, r.wire_len) for r in [*rec.head, *rec.tail]]
            + [rec.dropped, rec.dropped_bytes] for rec in recorders]


def _run_file(path: Path, driver: bool, *, evidence: bool = False, shard: tuple[int, int] | None = None,
              bpf: str = "", start_cnt: int = 0) -> tuple:
    stats = Stats()
    pipeline = RecordingPipeline(Config(), stats=stats, eve_path="", replay=True, evidence=evidence)
    pipeline.flows._ids = FlowIds(salt=12345)
    recorders: list[Any] = []
    factory = pipeline._recorder_factory
    if factory is not None:
        pipeline._recorder_factory = lambda: recorders.append(factory()) or recorders[-1]
    events: list[Event] = []
    pipeline.bus.subscribe("recorder", events.append)
    capture = read_capture(path, stats=stats, shard=shard, bpf=bpf, start_cnt=start_cnt)
    if driver:
        pipeline.replay_capture(capture)
    else:
        for raw in capture:
            pipeline.process(raw)
    last_cnt = capture.last_cnt
    pcap_cnt = pipeline.pcap_cnt
    recorded = _recorded(recorders)  # before finish: flows ending keep their recorders, but read now
    pipeline.finish()
    # A stats event of a pipeline that saw no packet carries the wall clock: its ts is left out.
    seen = [(ev.event_type, None if ev.event_type == "stats" else ev.ts, ev.direction, ev.pcap_cnt, ev.tx_id,
             None if ev.flow is None else ev.flow.flow_id,
             dumps({k: v for k, v in ev.body["stats"].items() if k not in ("uptime", "signatures")})
             if ev.event_type == "stats" else _FILE_ID.sub("", dumps(ev.body))) for ev in events]
    counters = {k: v for k, v in stats.counters.items()
                if not (k[0] if isinstance(k, tuple) else k).startswith("signatures.")}
    return pipeline.handed, seen, counters, recorded, last_cnt, pcap_cnt, pipeline.packets, pipeline.bytes


def _assert_driver_same(path: Path, **kwargs: Any) -> tuple:
    driven = _run_file(path, True, **kwargs)
    iterated = _run_file(path, False, **kwargs)
    for got, want in zip(driven, iterated, strict=True):
        assert got == want
    return driven


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.name)
def test_committed_captures_same_through_the_replay_driver(path):
    driven = _assert_driver_same(path, evidence=True)
    assert driven[6] == len(list(read_capture(path, stats=Stats())))  # every frame counted once
    if path.name == "sample-leak-http.pcap":
        assert sum(len(h[3]) for h in driven[0]) > 2000
        assert any(len(r) > 3 for r in driven[3])  # evidence recorded packets of the fast path


@pytest.mark.parametrize("path", _corpus_captures(), ids=lambda p: str(p.relative_to(CORPUS)))
def test_corpus_captures_same_through_the_replay_driver(path):
    try:
        list(read_capture(path, stats=Stats()))
    except Exception:  # noqa: BLE001 - not every corpus file is a readable capture
        pytest.skip("not readable as a capture")
    _assert_driver_same(path, evidence=True)


@pytest.mark.parametrize("options", [dict(shard=(0, 2)), dict(shard=(1, 2)), dict(start_cnt=1000),
                                     dict(bpf="tcp port 8080")], ids=str)
def test_replay_driver_same_with_shards_numbering_and_bpf(options):
    path = ROOT / "pcaps" / "http-uploads.pcap"
    driven = _assert_driver_same(path, evidence=True, **options)
    assert driven[6] > 0


def _write_pcap(path: Path, frames: list[RawPacket]) -> None:
    """A classic microsecond pcap of the frames (timestamps rounded to what the format holds)."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_ETHERNET)]
    for raw in frames:
        usec = round(raw.ts * 1e6)
        out.append(struct.pack("<IIII", usec // 1_000_000, usec % 1_000_000, len(raw.data), raw.wire_len))
        out.append(raw.data)
    path.write_bytes(b"".join(out))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(st.lists(flow_spec, min_size=1, max_size=3), st.lists(segment, min_size=1, max_size=60),
       st.sampled_from([1, 7, 100]), st.booleans())
def test_generated_sessions_same_through_the_replay_driver(tmp_path, specs, schedule, chunk, evidence):
    path = tmp_path / "session.pcap"
    _write_pcap(path, _session(specs, schedule, chunk))
    _assert_driver_same(path, evidence=evidence)


def test_replay_driver_builds_raw_packets_only_for_the_full_path(tmp_path):
    """Not vacuous: in-order data and ACKs (the handshake's last too) never become RawPackets, and
    never reach process()."""
    schedule = [(0, True, k, 0x18, "", 0.01) for k in range(10)] + [(0, False, -1, 0x10, "", 0.01)]
    path = tmp_path / "in-order.pcap"
    _write_pcap(path, _session([("v4", None, b"", 1000, 5000, True)], schedule, 100))
    pipeline = RecordingPipeline(Config(), stats=Stats(), eve_path="", replay=True, evidence=False)
    full: list[int] = []
    decoded = pipeline.process_decoded
    pipeline.process_decoded = lambda raw: full.append(raw.pcap_cnt) or decoded(raw)  # type: ignore[method-assign]
    pipeline.process = lambda raw: pytest.fail("the driver took the RawPacket path")  # type: ignore[method-assign]
    pipeline.replay_capture(read_capture(path, stats=Stats()))
    assert full == [1, 2]  # SYN and SYN/ACK (the handshake's last ACK takes the fused path)
    assert [h[2] for h in pipeline.handed] == list(range(4, 14))  # pcap_cnt of each data segment
    assert b"".join(h[3] for h in pipeline.handed) == (bytes(range(256)) * 4)[:1000]
    assert pipeline.packets == 14
