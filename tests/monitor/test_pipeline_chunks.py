"""Stream chunks (``stream.chunk_size``): fewer, larger hand-offs, the same findings.

A flow direction's in-order bytes are collected and handed to the parser and the raw-stream
scan together. What may change is only *when* within the flow a result appears (it carries
the chunk's last packet: its time and number) and the order of events of different flows;
every event's content, every alert and every counter must be the same as segment by segment.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
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
from tests.monitor.test_pipeline_fastpath import _corpus_captures, _frame, _session, flow_spec, segment

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT.parent / "shared" / "corpus"
COMMITTED = sorted(p for p in (ROOT / "pcaps").iterdir() if p.suffix in (".pcap", ".pcapng"))
_FILE_ID = re.compile(r'("(?:parent_)?file_id":)(\d+)')
_MATCH = re.compile("■+")


def _config(chunk_size: int, **stream: Any) -> Config:
    """The shipped signatures, the sample captures' and the generated uploads' clients protected,
    and the chunk settings under test."""
    cfg = Config()
    return dataclasses.replace(cfg, signatures=[str(ROOT / "signatures")],
                               networks=dataclasses.replace(cfg.networks, protected=["10.77.0.1/32", "fd77::1/128", "10.0.0.5/32"]),
                               stream=dataclasses.replace(StreamConfig(), chunk_size=chunk_size, **stream))


class FeedCounting(Pipeline):
    """Counts the hand-offs to parsers and what each flow direction was handed in all."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hand_offs = 0
        self.streams: dict[tuple[int, int], bytearray] = {}
        # (flow id, direction, pcap_cnt) of each hand-off: the packet whose numbers its results
        # carry (a chunk's last packet; the fused path appends to a chunk without on_data).
        self.handed_cnt: set[tuple[int, int, int]] = set()

    def _hand_on(self, flow: Any, direction: int, data: bytes, ts: float) -> None:
        self.handed_cnt.add((flow.flow_id, direction, self.pcap_cnt))
        self.hand_offs += 1
        self.streams.setdefault((flow.flow_id, direction), bytearray()).extend(data)
        super()._hand_on(flow, direction, data, ts)


def _run(frames: list[RawPacket], cfg: Config) -> tuple[FeedCounting, list[Event], dict]:
    stats = Stats()
    pipeline = FeedCounting(cfg, stats=stats, eve_path="", replay=True, evidence=False)
    pipeline.flows._ids = FlowIds(salt=4242)
    events: list[Event] = []
    pipeline.bus.subscribe("recorder", events.append)
    for raw in frames:
        pipeline.process(RawPacket(raw.ts, raw.linktype, raw.data, raw.pcap_cnt, raw.iface, raw.wire_len))
    pipeline.finish()
    counters = {k: v for k, v in stats.counters.items()
                if not (k[0] if isinstance(k, tuple) else k).startswith("signatures.")}
    return pipeline, events, counters


def _settled(ev: Event) -> dict[str, Any]:
    """An alert describes its file and transaction as far as they had come when it was raised:
    the size of a file still open and the body lengths so far are the chunk's, not the segment's."""
    body = ev.body
    if ev.event_type != "alert":
        return body
    body = dict(body)
    fileinfo = body.get("fileinfo")
    if fileinfo is not None and fileinfo.get("state") == "OPEN":
        body["fileinfo"] = {k: v for k, v in fileinfo.items() if k != "size"}
    http = body.get("http")
    if http is not None:
        body["http"] = {k: v for k, v in http.items() if k not in ("length", "request_length")}
    leakmon = body.get("leakmon")
    if leakmon is not None and "context" in leakmon:
        # The redacted context shows what lay around the match in the buffer scanned: a chunk
        # holds more of it than a segment. The redacted match itself is the same.
        body["leakmon"] = dict(leakmon, context=_MATCH.findall(leakmon["context"]))
    return body


def _content(events: list[Event]) -> Counter:
    """Every event without its time and packet number (what chunks may move), as a multiset."""
    file_ids: dict[str, str] = {}

    def file_id(m: re.Match[str]) -> str:
        return m.group(1) + file_ids.setdefault(m.group(2), str(len(file_ids)))

    out: Counter = Counter()
    for ev in events:
        if ev.event_type == "stats":
            continue  # counters are compared on their own
        flow_id = None if ev.flow is None else ev.flow.flow_id
        out[(ev.event_type, ev.direction, ev.tx_id, flow_id, dumps(_settled(ev)))] += 1
    # File ids number files in the order they open, which chunks may change across flows.
    return Counter({(t, d, tx, f, _FILE_ID.sub(r"\1", body)): n for (t, d, tx, f, body), n in out.items()})


def _assert_same_findings(frames: list[RawPacket], cfg: Config | None = None,
                          ) -> tuple[FeedCounting, FeedCounting, list[Event]]:
    chunked, chunked_events, chunked_counters = _run(frames, cfg or _config(65536))
    single, single_events, single_counters = _run(frames, _config(0))
    assert chunked.streams == single.streams  # every flow direction handed the same bytes
    assert _content(chunked_events) == _content(single_events)
    chunked_counters.pop(("memcap.hit", (("cap", "stream.chunks"),)), None)  # chunks only
    assert chunked_counters == single_counters
    # An alert names a packet of its own flow and direction that brought bytes, no earlier than
    # the packet that completed the match segment by segment (the n-th alert of a flow, rule and
    # direction against the n-th).
    def alert_cnts(events: list[Event]) -> dict[tuple, list[int]]:
        out: dict[tuple, list[int]] = {}
        for ev in events:
            if ev.event_type == "alert" and ev.flow is not None:
                key = (ev.flow.flow_id, ev.body["alert"]["signature_id"], ev.direction)
                out.setdefault(key, []).append(ev.pcap_cnt)
        return out

    got, want = alert_cnts(chunked_events), alert_cnts(single_events)
    assert got.keys() == want.keys()
    for key, cnts in got.items():
        for chunk_cnt, segment_cnt in zip(cnts, want[key], strict=True):
            assert chunk_cnt >= segment_cnt
            assert chunk_cnt == segment_cnt or (key[0], key[2], chunk_cnt) in chunked.handed_cnt
    return chunked, single, chunked_events


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.name)
def test_committed_captures_same_findings_in_chunks(path):
    _assert_same_findings(list(read_capture(path, stats=Stats())))


@pytest.mark.parametrize("path", _corpus_captures(), ids=lambda p: str(p.relative_to(CORPUS)))
def test_corpus_captures_same_findings_in_chunks(path):
    try:
        frames = list(read_capture(path, stats=Stats()))
    except Exception:  # noqa: BLE001 - not every corpus file is a readable capture
        pytest.skip("not readable as a capture")
    _assert_same_findings(frames)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(flow_spec, min_size=1, max_size=3), st.lists(segment, min_size=1, max_size=60),
       st.sampled_from([1, 7, 100, 1460]),
       st.sampled_from([(65536, None), (1, None), (150, None), (3000, None), (65536, 200), (65536, 2000)]))
def test_generated_sessions_same_findings_in_chunks(specs, schedule, chunk, limits):
    # Chunks that fill up (chunk_size) or together pass chunk_memcap within a session, while
    # the fused path appends to them, as well as chunks that go on only at the flow's end.
    chunk_size, chunk_memcap = limits
    cfg = _config(chunk_size) if chunk_memcap is None else _config(chunk_size, chunk_memcap=chunk_memcap)
    _assert_same_findings(_session(specs, schedule, chunk), cfg)


def _interleaved_uploads(n_flows: int, body: bytes, mss: int = 1448) -> list[RawPacket]:
    """``n_flows`` HTTP POSTs of ``body`` sent side by side, segment by segment, each segment
    acknowledged by the server, then a 200 response and FIN/ACKs: a busy link's interleaving."""
    client, server = bytes([10, 0, 0, 5]), bytes([192, 168, 1, 9])
    head = b"POST /upload HTTP/1.1\r\nHost: example.net\r\nContent-Type: application/octet-stream\r\n" \
        b"Content-Length: %d\r\n\r\n" % len(body)
    request = head + body
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    isn_c, isn_s = 1000, 5000
    frames: list[bytes] = []
    for i in range(n_flows):
        port = 41000 + i
        frames.append(_frame(client, server, port, 80, isn_c - 1, 0, 0x02, b"", None, b"", 0, 0))
        frames.append(_frame(server, client, 80, port, isn_s - 1, isn_c, 0x12, b"", None, b"", 0, 0))
        frames.append(_frame(client, server, port, 80, isn_c, isn_s, 0x10, b"", None, b"", 0, 6))
    for off in range(0, len(request), mss):
        for i in range(n_flows):
            port = 41000 + i
            seg = request[off:off + mss]
            frames.append(_frame(client, server, port, 80, isn_c + off, isn_s, 0x18, seg, None, b"", 0, 0))
            frames.append(_frame(server, client, 80, port, isn_s, isn_c + off + len(seg), 0x10, b"", None, b"", 0, 6))
    end_c = isn_c + len(request)
    for i in range(n_flows):
        port = 41000 + i
        frames.append(_frame(server, client, 80, port, isn_s, end_c, 0x18, response, None, b"", 0, 0))
        frames.append(_frame(client, server, port, 80, end_c, isn_s + len(response), 0x11, b"", None, b"", 0, 6))
        frames.append(_frame(server, client, 80, port, isn_s + len(response), end_c + 1, 0x11, b"", None, b"", 0, 6))
        frames.append(_frame(client, server, port, 80, end_c + 1, isn_s + len(response) + 1, 0x10, b"", None, b"",
                             0, 6))
    return [RawPacket(1_700_000_000.0 + i * 0.001, LINKTYPE_ETHERNET, f, i + 1, "", len(f))
            for i, f in enumerate(frames)]


def test_interleaved_uploads_reach_the_parser_in_few_large_buffers():
    # The label straddles a segment boundary in every flow, deep inside a 200 kB body.
    label = "保護すべき情報".encode()
    body = bytes(range(256)) * 400
    cut = 1448 * 60 - 5
    body = body[:cut] + label + body[cut:]
    chunked, single, events = _assert_same_findings(_interleaved_uploads(3, body))
    assert single.hand_offs > 10 * chunked.hand_offs  # the point of it
    alerts = [ev for ev in events if ev.event_type == "alert"]
    # The label, and clear-text transmission of protected data (基準 10(5)エ), in every flow.
    assert Counter(a.body["alert"]["signature_id"] for a in alerts) == {9100001: 3, 9000001: 3}
    assert len({a.flow.flow_id for a in alerts if a.flow is not None}) == 3
    files = [ev.body["fileinfo"] for ev in events if ev.event_type == "fileinfo"]
    assert sum(1 for f in files if f.get("size") == len(body)) == 3


def test_leaking_sample_uploads_alert_with_chunks():
    frames = list(read_capture(ROOT / "pcaps" / "sample-leak-http.pcap", stats=Stats()))
    _, _, events = _assert_same_findings(frames)
    alerts = [ev for ev in events if ev.event_type == "alert" and ev.body["alert"]["signature_id"] == 9100001]
    assert len({a.flow.flow_id for a in alerts if a.flow is not None}) == 3  # the three leaking uploads


def test_ftp_data_connection_still_expected_with_chunks():
    """FTP control is never collected: its PASV reply must announce the data connection in time."""
    frames = list(read_capture(ROOT / "pcaps" / "ftp-ftplib.pcap", stats=Stats()))
    _, events, counters = _run(frames, _config(65536))
    assert counters[("applayer.expectation_matched", ())] >= 1
    data_flows = [ev for ev in events if ev.event_type == "flow" and ev.flow is not None
                  and ev.flow.app_proto == "ftp-data"]
    assert data_flows
    assert any(ev.event_type == "fileinfo" for ev in events)


def test_chunk_memcap_hands_every_chunk_on_and_counts():
    frames = list(read_capture(ROOT / "pcaps" / "http-uploads.pcap", stats=Stats()))
    tight, tight_events, tight_counters = _run(frames, _config(65536, chunk_memcap=1))
    single, single_events, _ = _run(frames, _config(0))
    assert tight_counters[("memcap.hit", (("cap", "stream.chunks"),))] > 0
    assert tight.streams == single.streams
    assert _content(tight_events) == _content(single_events)


class HandOffRecording(FeedCounting):
    """Also lists every hand-off as (direction, pcap_cnt, length), in order."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hand_off_list: list[tuple[int, int, int]] = []

    def _hand_on(self, flow: Any, direction: int, data: bytes, ts: float) -> None:
        self.hand_off_list.append((direction, self.pcap_cnt, len(data)))
        super()._hand_on(flow, direction, data, ts)


def _nine_segment_upload() -> tuple[list[RawPacket], list[int]]:
    """One upload whose request is exactly nine 1448-byte segments (each acknowledged), and
    the pcap_cnt of each data segment."""
    head = b"POST /upload HTTP/1.1\r\nHost: example.net\r\nContent-Type: application/octet-stream\r\n" \
        b"Content-Length: %d\r\n\r\n"
    size = 9 * 1448 - len(head % 10_000)  # a 5-digit length either way
    body = (bytes(range(256)) * 60)[:size]
    frames = _interleaved_uploads(1, body)
    data_cnts = [raw.pcap_cnt for raw in frames if len(raw.data) == 54 + 1448]
    assert len(data_cnts) == 9
    return frames, data_cnts


@pytest.mark.parametrize("limits", [{"chunk_size": 3 * 1448}, {"chunk_size": 65536, "chunk_memcap": 2 * 1448 + 1}],
                         ids=["chunk_size", "chunk_memcap"])
def test_chunk_filled_by_appended_segments_goes_on_at_its_limit(limits):
    """The first segment goes on alone (it tells the protocol); the second starts a chunk
    (on_data), the next two join it on the fused path, and the fourth reaches the size (or the
    memcap, nothing else being held) and the chunk goes on as of that packet; so again from the
    fifth; the last two go on at the FIN."""
    frames, data_cnts = _nine_segment_upload()
    cfg = _config(limits["chunk_size"], **{k: v for k, v in limits.items() if k != "chunk_size"})
    stats = Stats()
    pipeline = HandOffRecording(cfg, stats=stats, eve_path="", replay=True, evidence=False)
    for raw in frames:
        pipeline.process(raw)
    pipeline.finish()
    to_server = [(cnt, n) for d, cnt, n in pipeline.hand_off_list if d == 0]
    assert to_server == [(data_cnts[0], 1448), (data_cnts[3], 3 * 1448), (data_cnts[6], 3 * 1448),
                         (data_cnts[8], 2 * 1448)]
    hits = stats.counters.get(("memcap.hit", (("cap", "stream.chunks"),)), 0)
    assert hits == (2 if "chunk_memcap" in limits else 0)
    assert pipeline._chunk_held == 0 and not pipeline._chunked
    _assert_same_findings(frames, cfg)


def test_flush_chunks_hands_on_what_waits():
    """What a live ring block left in chunks goes on when the block is done (flush_chunks)."""
    label = "保護すべき情報".encode()
    body = b"x" * 5000 + label + b"y" * 100_000
    frames = _interleaved_uploads(2, body)
    pipeline = FeedCounting(_config(1 << 30), stats=Stats(), eve_path="", replay=True, evidence=False)
    alerts: list[Event] = []
    pipeline.bus.subscribe("alerts", lambda ev: ev.event_type == "alert" and alerts.append(ev))
    half = len(frames) // 2
    for raw in frames[:half]:
        pipeline.process(raw)
    waiting = pipeline._chunk_held
    assert waiting > 5000 and len(pipeline._chunked) == 2
    assert not alerts  # the label waits in a chunk
    handed = sum(len(b) for b in pipeline.streams.values())
    pipeline.flush_chunks()
    assert pipeline._chunk_held == 0 and not pipeline._chunked
    assert sum(len(b) for b in pipeline.streams.values()) == handed + waiting
    for raw in frames[half:]:
        pipeline.process(raw)
    pipeline.finish()
    assert len({a.flow.flow_id for a in alerts if a.body["alert"]["signature_id"] == 9100001}) == 2
