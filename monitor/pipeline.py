"""Wires the stages in order: decode -> flows -> reassembly -> app-layer -> content -> detection -> sinks.

The pipeline is also the :class:`~monitor.flow.reassembly.StreamSink` (reassembled bytes in)
and, through :class:`FlowContext`, the :class:`~monitor.applayer.base.AppContext` of every
parser (transactions, files and decoded buffers out). Errors in a parser or decoder are
contained per flow: an ``applayer.parser_error`` anomaly and a counter, and the flow keeps
being matched on its raw stream.
"""

from __future__ import annotations

import logging
import mmap
import time
from collections import OrderedDict
from collections.abc import Callable
from time import monotonic
from typing import TYPE_CHECKING, Any

from alerts.eve import EveWriter, format_ts
from monitor.applayer import registry
from monitor.applayer.base import AppParser
from monitor.config import Config
from monitor.content.extract import ExtractCache, Member, Notice, Text
from monitor.decode import Decoder
from monitor.decode.decoder import ETH_IPV4_TCP, ETH_IPV6_TCP  # Pipeline.process's fused fast path
from monitor.events import Event, EventBus
from monitor.files import STATE_TRUNCATED, FileObject
from monitor.flow.netset import NetSet
from monitor.flow.reassembly import TcpReassembler, gap_bytes
from monitor.flow.table import FlowTable, tcp_flags
from monitor.model import (
    LINKTYPE_ETHERNET,
    PROTO_TCP,
    PROTO_UDP,
    TH_ACK,
    TO_CLIENT,
    TO_SERVER,
    Flow,
    RawPacket,
)
from monitor.names import HostNames
from monitor.stats import Stats

if TYPE_CHECKING:
    from monitor.capture.pcapfile import Capture

log = logging.getLogger("leakmon.pipeline")

# Anomaly events written per kind per second of traffic time; beyond, only the counter grows
# (a flood of malformed packets must not turn into a flood of log lines).
ANOMALY_EVENTS_PER_SECOND = 50
MAX_TX_PER_FLOW = 64
_EVE_FLOW_STATES = frozenset({"new", "established", "closed"})
# Protocols whose in-order bytes are collected into stream chunks (``stream.chunk_size``). Not
# before the protocol is known (detection sees the first bytes as they come), and not FTP
# control: its replies announce data connections, which must be expected before their SYN.
CHUNKED_PROTOCOLS = frozenset({"http", "smtp", "tls", "ftp-data", "failed"})


class StreamChunk:
    """In-order payloads of one flow direction waiting to go on as one buffer.

    Remembers the packet that brought the last payload (time, capture number, arrival), so
    that what the chunk produces carries that packet's numbers, as it would have at once.
    """

    __slots__ = ("parts", "size", "ts", "pcap_cnt", "ingress")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self.ts = 0.0
        self.pcap_cnt = 0
        self.ingress = 0.0


class FlowContext:
    """The AppContext of one flow: what its parser may do."""

    __slots__ = ("flow", "pipeline", "config", "stats", "ts")

    def __init__(self, flow: Flow, pipeline: Pipeline) -> None:
        self.flow = flow
        self.pipeline = pipeline
        self.config = pipeline.cfg
        self.stats = pipeline.stats
        self.ts = flow.start_ts

    # -- events
    def event(self, event_type: str, body: dict[str, Any], *, direction: int | None = None,
              tx_id: int | None = None, ts: float | None = None) -> None:
        if tx_id is not None:
            self.tx_info(tx_id, body)
        self.pipeline.emit(Event(event_type, ts if ts is not None else self.pipeline.now, body, self.flow,
                                 direction=direction, tx_id=tx_id))

    def tx_info(self, tx_id: int, body: dict[str, Any]) -> None:
        metadata = self.flow.metadata
        txs = metadata.get("tx")
        if txs is None:  # not setdefault: that would build a dict on every call
            # A plain dict (insertion-ordered, re-assignment keeps the position) rather than an
            # OrderedDict: the same eviction order for about half the memory per flow.
            txs = metadata["tx"] = {}
        txs[tx_id] = body
        if len(txs) > MAX_TX_PER_FLOW:
            del txs[next(iter(txs))]  # the oldest transaction, as OrderedDict.popitem(last=False)

    def anomaly(self, kind: str, detail: str = "", *, direction: int | None = None,
                tx_id: int | None = None) -> None:
        self.pipeline.anomaly("applayer", kind, detail, flow=self.flow, direction=direction, tx_id=tx_id)

    # -- files and buffers
    def open_file(self, direction: int, *, name: str = "", source: str, protocol: str,
                  tx_id: int | None = None, declared_type: str | None = None,
                  declared_size: int | None = None, charset: str | None = None,
                  app: dict[str, Any] | None = None, parent: FileObject | None = None) -> FileObject:
        p = self.pipeline
        f = FileObject(self.flow, direction, name=name, source=source, protocol=protocol, tx_id=tx_id,
                       declared_type=declared_type, declared_size=declared_size, charset=charset,
                       depth=(parent.depth + 1) if parent else 0, parent=parent,
                       max_buffer=p.cfg.content.max_buffer, listener=p, app=app)
        f.extra["ctx"] = self
        return f

    def inspect(self, data: bytes, *, where: str, direction: int, tx_id: int | None = None,
                file: FileObject | None = None, charset: str | None = None) -> None:
        if data:
            self.pipeline.detection.buffer(self.flow, direction, bytes(data), where=where, ts=self.pipeline.now,
                                           tx_id=tx_id, file=file, charset=charset)

    # -- flow facts
    def set_app_proto(self, name: str) -> None:
        self.flow.app_proto = name

    def learn_name(self, addr: bytes, name: str, source: str) -> None:
        self.pipeline.names.learn(addr, name, source)

    def expect(self, *, server: bytes | None, server_port: int | None, client: bytes | None,
               factory: Callable[[Any], AppParser], info: dict[str, Any]) -> None:
        self.pipeline.expect(server, server_port, client, factory, info)

    def tls(self, info: dict[str, Any]) -> None:
        self.flow.metadata["tls"] = info
        self.pipeline.detection.tls(self.flow, info, self.pipeline.now)


class Pipeline:
    """One sensor pipeline (one per worker process)."""

    def __init__(self, cfg: Config, *, stats: Stats | None = None, eve_path: str | None = None,
                 detection: Any | None = None, replay: bool = False, evidence: bool | None = None) -> None:
        self.cfg = cfg
        self._extract_cache = ExtractCache(cfg.content.cache)
        # The hash set is per process (one pipeline per sensor process): set once here, not per file.
        FileObject.configure_hashes(cfg.content.hashes)
        self.stats = stats or Stats()
        self.bus = EventBus(self.stats)
        self.replay = replay
        self.now = 0.0
        self.started_wall = time.time()
        self.started_mono = time.monotonic()
        self.pcap_cnt = 0
        self.ingress = 0.0
        self._anomaly_window: dict[str, tuple[int, int]] = {}
        self.eve: EveWriter | None = None
        path = eve_path if eve_path is not None else cfg.resolve(cfg.outputs.eve.path)
        if path:
            self.eve = EveWriter(path, cfg.outputs.eve.types, sensor=cfg.sensor.name)
            self.bus.subscribe("eve", self.eve)
        self.names = HostNames()
        self.protected = NetSet(cfg.networks.protected)
        self.decoder = Decoder(cfg, self.stats, self._decode_anomaly)
        self.flows = FlowTable(cfg, self.stats, self.protected)
        self.reassembler = TcpReassembler(cfg, self.stats, self)
        if detection is None:
            from detectors.engine import Detection

            detection = Detection(cfg, self.stats, self.emit, self.names)
        self.detection = detection
        self._expect: OrderedDict[tuple[bytes | None, int | None], tuple[float, bytes | None, Callable[[Any], AppParser], dict[str, Any]]] = OrderedDict()
        self._recorder_factory: Callable[[], Any] | None = None
        if cfg.evidence.enabled if evidence is None else evidence:
            from alerts.evidence import FlowRecorder

            ev_cfg = cfg.evidence
            self._recorder_factory = lambda: FlowRecorder(ev_cfg)
        self._next_timer = 0.0
        self._closed = False
        # Stream chunks: flows holding one (id -> flow), and the bytes they hold together.
        self._chunk_size = cfg.stream.chunk_size
        self._chunk_memcap = cfg.stream.chunk_memcap
        self._chunked: dict[int, Flow] = {}
        self._chunk_held = 0
        # Per-interface [packets, bytes, last packet ts], folded into stats by the timers.
        self._iface_counts: dict[str, list[Any]] = {}
        self._iface_flushed: dict[str, tuple[int, int]] = {}

    def disable_evidence(self) -> None:
        """No per-flow packet recorders (evidence off or no key): saves the per-packet cost."""
        self._recorder_factory = None

    # ------------------------------------------------------------------ events

    def emit(self, event: Event) -> None:
        if event.pcap_cnt is None and self.replay and event.event_type != "stats":
            event.pcap_cnt = self.pcap_cnt
        if event.ingress is None and event.event_type == "alert":
            event.ingress = self.ingress  # packet-to-alert latency histogram
        self.bus.publish(event)

    def anomaly(self, layer: str, kind: str, detail: str = "", *, flow: Flow | None = None,
                direction: int | None = None, tx_id: int | None = None) -> None:
        self.stats.incr(f"{layer}.anomaly", type=kind)
        second = int(self.now)
        start, count = self._anomaly_window.get(kind, (second, 0))
        if start != second:
            start, count = second, 0
        count += 1
        self._anomaly_window[kind] = (start, count)
        if count > ANOMALY_EVENTS_PER_SECOND:
            self.stats.incr("output.anomaly_suppressed")
            return
        body: dict[str, Any] = {"anomaly": {"type": layer, "event": kind}}
        if detail:
            body["anomaly"]["detail"] = detail
        self.emit(Event("anomaly", self.now, body, flow, direction=direction, tx_id=tx_id))

    def _decode_anomaly(self, kind: str, detail: str, raw: RawPacket) -> None:
        layer = kind.split(".", 1)[0]
        layer = layer if layer in ("decode", "defrag", "capture") else "decode"
        self.anomaly(layer, kind, detail)

    # ------------------------------------------------------------------ packets

    def process(self, raw: RawPacket) -> None:
        """The per-packet path. Keep it lean: everything here runs for every frame."""
        data = raw.data
        n = len(data)
        if not self.process_frame(data, 0, n, raw.wire_len or n, raw.ts, raw.pcap_cnt, raw.iface,
                                  raw.linktype, raw):
            self.process_decoded(raw)

    def process_frame(self, buf: bytes | mmap.mmap, start: int, n: int, wire: int, ts: float, cnt: int, iface: str = "",
                      linktype: int = LINKTYPE_ETHERNET, raw: RawPacket | None = None) -> bool:
        """The first half of :meth:`process`, on a frame lying at ``buf[start:start + n]``.

        Numbering, timers and interface counts, then the fused fast path. True when the frame
        was handled; False when :meth:`process_decoded` must take it (with a RawPacket of the
        same frame), which then does only the second half. The capture replay calls this
        straight from the record walk (:meth:`replay_capture`), so a frame that takes the fast path is
        never sliced out of the read buffer nor made a RawPacket; ``raw`` is the frame's
        RawPacket where the caller has one (evidence keeps that object).
        """
        self.pcap_cnt = cnt
        if ts > self.now:
            self.now = ts
            if ts >= self._next_timer:
                self.ingress = monotonic()  # what the timers raise carries this frame's arrival
                self._timers(ts)
        counts = self._iface_counts.get(iface)
        if counts is None:
            counts = self._iface_counts[iface] = [0, 0, 0.0]
        counts[0] += 1
        counts[1] += wire
        counts[2] = ts
        # Fused fast path: an untagged Ethernet frame carrying IPv4 (no options, not a fragment)
        # or IPv6 (no extension header) and TCP without SYN/FIN/RST/URG, of a known flow
        # (found in the table's ``fast_tcp`` by the raw endpoint bytes), that is a pure ACK or
        # the next in-order segment with nothing waiting on either side. For these, decode +
        # FlowTable.lookup + TcpReassembler.packet would only count, note the ACK and hand the
        # payload on: done here without a Packet or a key tuple. Anything else, and any check
        # that fails, returns False (the full path, which stamps the arrival itself) before any
        # flow state was touched.
        fast = self.flows.fast_tcp
        if linktype != LINKTYPE_ETHERNET or n < 54 or fast is None:
            return False
        etype, vhl, tot_len, frag, proto, key, seq, ack, offflags = ETH_IPV4_TCP(buf, start)
        if etype == 0x0800:
            hlen = (offflags >> 12) << 2
            if vhl != 0x45 or proto != PROTO_TCP or frag & 0x3FFF or not 40 <= tot_len <= n - 14 \
                    or not 20 <= hlen <= tot_len - 20 or offflags & 0x27:  # SYN FIN RST URG
                return False
            hit = fast.get(key)
            if hit is None:
                return False
            payload = buf[start + 34 + hlen:start + 14 + tot_len]
        elif etype == 0x86DD and n >= 74:
            etype, vfc, plen, nh, key, seq, ack, offflags = ETH_IPV6_TCP(buf, start)
            hlen = (offflags >> 12) << 2
            if vfc >> 4 != 6 or nh != PROTO_TCP or not 20 <= plen <= n - 54 or not 20 <= hlen <= plen \
                    or offflags & 0x27:
                return False
            hit = fast.get(key)
            if hit is None:
                return False
            payload = buf[start + 54 + hlen:start + 54 + plen]
        else:
            return False
        fast_flow, direction = hit
        streams = fast_flow.streams
        if streams is None:
            return False
        s = streams[direction]
        peer = streams[direction ^ 1]
        if peer.pend or (seq != s.nseq if payload else s.pend):
            return False
        # A flow still "new" (this is the handshake's last ACK, or a pickup's next segment) may
        # change state, as FlowTable.lookup would have it; unless it holds a stream chunk,
        # which the full path would hand on first.
        settling = fast_flow.state == "new"
        if settling and (s.chunk is not None or peer.chunk is not None):
            return False
        # FlowTable.lookup's bookkeeping (no SYN/FIN/RST: a state change only out of "new").
        fast_flow.pkts[direction] += 1
        fast_flow.bytes[direction] += wire
        fast_flow.last_ts = ts
        flags = offflags & 0xFF
        fast_flow.tflags |= flags << (direction << 3)
        if settling:
            self.flows.tcp_state(fast_flow, direction, flags, ack)
        rec = fast_flow.recorder
        if rec is not None:
            rec.add(raw if raw is not None else RawPacket(ts, linktype, buf[start:start + n], cnt, iface, wire))
        if payload:
            # The arrival stamp (monotonic(): the alert latency) only where bytes go on: a pure
            # ACK here hands nothing on (the timers above took their own stamp).
            self.ingress = monotonic()
            self.reassembler.take(s, seq, payload)
            chunk = s.chunk
            if chunk is not None and fast_flow.app_proto in CHUNKED_PROTOCOLS:
                # A direction already collecting: its app state was charged with its first
                # bytes, and the other direction holds no chunk (collecting one hands the
                # other's on first), so on_data -> _collect would only add to the chunk.
                self._add_to_chunk(fast_flow, direction, chunk, payload, ts)
            else:
                self.on_data(fast_flow, direction, payload, ts)
        if flags & TH_ACK:
            peer.ack_seq = ack
        return True

    def process_decoded(self, raw: RawPacket) -> None:
        """The second half of :meth:`process`: decode, flow lookup, reassembly or datagram."""
        self.ingress = monotonic()  # the frame's arrival (alert latency)
        pkt = self.decoder.decode(raw)
        if pkt is None:
            return
        flows = self.flows
        flow, direction, created = flows.lookup(pkt)
        if created:
            self._flow_started(flow, raw)
        elif self._chunked and id(flow) in self._chunked:
            self._flush_flow_chunks(flow)  # what it collected goes first: this packet may end or skip
        rec = flow.recorder
        if rec is not None:
            rec.add(raw)
        if pkt.proto == PROTO_TCP:
            self.reassembler.packet(flow, direction, pkt)
        elif pkt.payload:
            parser = flow.parser
            ts = raw.ts
            if parser is not None:
                try:
                    parser.feed(direction, pkt.payload, ts)
                except Exception as exc:  # noqa: BLE001
                    self._parser_failed(flow, exc)
            self.detection.buffer(flow, direction, pkt.payload, where=f"{flow.app_proto or 'udp'}.datagram",
                                  ts=ts, tx_id=None, file=None, charset=None)
        if flows.ended:
            self._drain_ended("memcap")

    def replay_capture(self, capture: Capture) -> None:
        """Every frame of ``capture`` (from :func:`~monitor.capture.pcapfile.read_capture`) through
        :meth:`process`: the record walk calls :meth:`process_frame` on the frame in its read
        buffer where it can, and builds a RawPacket only for the frames that need one."""
        capture.replay(self.process_frame, self.process_decoded, self.process)

    def inject(self, packets: list[RawPacket]) -> None:
        """Synthetic packets (canary) go through the same path as captured ones."""
        for raw in packets:
            self.process(raw)

    def _flow_started(self, flow: Flow, raw: RawPacket) -> None:
        flow.iface = raw.iface
        ctx = FlowContext(flow, self)
        flow.metadata["ctx"] = ctx
        if self._recorder_factory is not None:
            flow.recorder = self._recorder_factory()
        if flow.proto == PROTO_TCP:
            exp = self._match_expectation(flow)
            if exp is not None:
                factory, info = exp
                flow.metadata["expected"] = info
                flow.parser = factory(ctx)
            else:
                flow.parser = registry.new_tcp_parser(ctx)
        elif flow.proto == PROTO_UDP:
            flow.parser = registry.new_udp_parser(ctx)

    # ------------------------------------------------------------------ expectations (FTP data)

    def expect(self, server: bytes | None, server_port: int | None, client: bytes | None,
               factory: Callable[[Any], AppParser], info: dict[str, Any]) -> None:
        key = (server, server_port)
        self._expect[key] = (self.now + self.cfg.app_layer.ftp_data_timeout, client, factory, info)
        self._expect.move_to_end(key)
        while len(self._expect) > 10_000:
            self._expect.popitem(last=False)
            self.stats.incr("applayer.expectation_evicted")

    def _match_expectation(self, flow: Flow) -> tuple[Callable[[Any], AppParser], dict[str, Any]] | None:
        if not self._expect:
            return None
        for key in ((flow.server, flow.sport), (None, flow.sport), (flow.server, None)):
            hit = self._expect.get(key)
            if hit is None:
                continue
            deadline, client, factory, info = hit
            if deadline < self.now:
                del self._expect[key]
                continue
            if client is not None and client != flow.client:
                continue
            del self._expect[key]
            self.stats.incr("applayer.expectation_matched")
            return factory, info
        return None

    # ------------------------------------------------------------------ StreamSink

    def on_data(self, flow: Flow, direction: int, data: bytes, ts: float) -> None:
        self.flows.charge_app_state(flow)  # memcap: the flow's app-layer state exists from here on
        if self._chunk_size and flow.app_proto in CHUNKED_PROTOCOLS:
            self._collect(flow, direction, data, ts)
            return
        self._hand_on(flow, direction, data, ts)

    def _hand_on(self, flow: Flow, direction: int, data: bytes, ts: float) -> None:
        """In-order bytes to the flow's parser, then to the raw-stream scan."""
        parser = flow.parser
        if parser is not None:
            try:
                parser.feed(direction, data, ts)
            except Exception as exc:  # noqa: BLE001 - a parser bug must not stop the sensor
                self._parser_failed(flow, exc)
        self.detection.stream_data(flow, direction, data, ts, self.pcap_cnt)

    # ------------------------------------------------------------------ stream chunks

    # A parser call and a stream scan cost about as much per segment as per 64 KiB, and the
    # flows of a busy link interleave packet by packet: collecting each direction's in-order
    # bytes and handing them on together removes most of the per-segment cost. The order within a
    # flow stays (the other direction's chunk, and anything the reassembler reports, goes
    # first); across flows, a chunk goes on at the latest after a second of traffic time.

    def _collect(self, flow: Flow, direction: int, data: bytes, ts: float) -> None:
        self._chunk_goes_first(flow, direction ^ 1)  # a request before its response, and so on
        s = flow.streams[direction]
        chunk = s.chunk
        if chunk is None:
            chunk = s.chunk = StreamChunk()
            self._chunked[id(flow)] = flow
        self._add_to_chunk(flow, direction, chunk, data, ts)

    def _add_to_chunk(self, flow: Flow, direction: int, chunk: StreamChunk, data: bytes, ts: float) -> None:
        """``data`` joins the direction's chunk, as of the current packet; a full chunk goes on,
        and all of them when their memcap is passed."""
        chunk.parts.append(data)
        n = len(data)
        chunk.size += n
        chunk.ts = ts
        chunk.pcap_cnt = self.pcap_cnt
        chunk.ingress = self.ingress
        self._chunk_held += n
        if chunk.size >= self._chunk_size:
            self._flush_chunk(flow, direction)
        elif self._chunk_held > self._chunk_memcap:
            self._chunks_over_memcap()

    def _chunks_over_memcap(self) -> None:
        self.stats.incr("memcap.hit", cap="stream.chunks")
        self.flush_chunks()

    def _flush_chunk(self, flow: Flow, direction: int) -> None:
        """Hand one collected chunk on, as of the packet that completed it."""
        streams = flow.streams
        chunk = streams[direction].chunk
        streams[direction].chunk = None
        if streams[direction ^ 1].chunk is None:
            self._chunked.pop(id(flow), None)
        self._chunk_held -= chunk.size
        parts = chunk.parts
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        # Events and alerts name the chunk's last packet (its number, time and arrival), and the
        # parser sees the clock of that packet, not of the packet that made the chunk go on.
        cnt, ingress, now = self.pcap_cnt, self.ingress, self.now
        self.pcap_cnt, self.ingress, self.now = chunk.pcap_cnt, chunk.ingress, chunk.ts
        try:
            self._hand_on(flow, direction, data, chunk.ts)
        finally:
            self.pcap_cnt, self.ingress, self.now = cnt, ingress, now

    def _chunk_goes_first(self, flow: Flow, direction: int) -> None:
        """Hand on what ``direction`` collected before anything else of the flow is handled."""
        streams = flow.streams
        if streams is not None and streams[direction].chunk is not None:
            self._flush_chunk(flow, direction)

    def _flush_flow_chunks(self, flow: Flow) -> None:
        self._chunk_goes_first(flow, TO_SERVER)
        self._chunk_goes_first(flow, TO_CLIENT)
        self._chunked.pop(id(flow), None)

    def flush_chunks(self) -> None:
        """Every collected chunk goes on (timers, end of a live ring block, shutdown)."""
        if self._chunked:
            for flow in list(self._chunked.values()):
                self._flush_flow_chunks(flow)

    def on_gap(self, flow: Flow, direction: int, length: int, ts: float) -> None:
        # The reassembler counts flow.gaps; gap bytes are read with gap_bytes(flow) at flow end.
        self._chunk_goes_first(flow, direction)
        parser = flow.parser
        if parser is not None:
            try:
                parser.gap(direction, length, ts)
            except Exception as exc:  # noqa: BLE001
                self._parser_failed(flow, exc)
        self.detection.stream_gap(flow, direction, length)

    def on_overlap(self, flow: Flow, direction: int, offset: int, kept: bytes, other: bytes, ts: float) -> None:
        self._chunk_goes_first(flow, direction)
        self.anomaly("stream", "stream.overlap_different_data", f"offset={offset} length={len(other)}",
                     flow=flow, direction=direction)
        # A DLP sensor must not be blinded by an ambiguity: the other version is matched too.
        self.detection.stream_alt(flow, direction, other, ts)

    def on_anomaly(self, flow: Flow, direction: int, kind: str, detail: str = "") -> None:
        self._chunk_goes_first(flow, direction)
        self.anomaly("stream", kind, detail, flow=flow, direction=direction)

    def on_depth(self, flow: Flow, direction: int) -> None:
        self._chunk_goes_first(flow, direction)
        self.anomaly("stream", "stream.depth_reached", f"depth={self.cfg.stream.depth}", flow=flow,
                     direction=direction)

    def _parser_failed(self, flow: Flow, exc: Exception) -> None:
        name = getattr(flow.parser, "name", "?")
        log.debug("parser %s failed on flow %d: %r", name, flow.flow_id, exc)
        self.stats.incr("applayer.parser_error", proto=name)
        self.anomaly("applayer", "applayer.parser_error", f"{name}: {type(exc).__name__}", flow=flow)
        flow.parser = None

    # ------------------------------------------------------------------ FileListener

    def on_file_data(self, f: FileObject, data: bytes) -> None:
        self.detection.file_data(f, data, self.now)

    def on_file_gap(self, f: FileObject, length: int) -> None:
        self.detection.file_gap(f, length)

    def on_file_close(self, f: FileObject) -> None:
        self.stats.incr("files", protocol=f.protocol or "other", state=f.state)
        ctx: FlowContext | None = f.extra.get("ctx")
        self.detection.file_closed(f, self.now)
        content = f.content()
        if content is not None and ctx is not None:
            self._extract(f, content, ctx)
        elif f.buffer_overflow:
            self.stats.incr("content.cap", cap="buffer")
        body: dict[str, Any] = dict(f.app)
        body["fileinfo"] = f.fileinfo()
        if f.extra.get("encrypted"):
            body["fileinfo"]["encrypted"] = True
        self.emit(Event("fileinfo", self.now, body, f.flow, direction=f.direction, tx_id=f.tx_id))
        f.buffer = None  # the content has been used; do not keep it with the flow

    def _extract(self, f: FileObject, content: bytes, ctx: FlowContext) -> None:
        limits = self.cfg.content
        if f.depth >= limits.max_depth:
            self.stats.incr("content.cap", cap="depth")
            return
        # Same items and counters as extract(); an identical file seen recently is not decoded again.
        try:
            for item in self._extract_cache.extract(content, name=f.name, mime=f.declared_type or f.detected_type,
                                               depth=f.depth, limits=limits, stats=self.stats):
                if isinstance(item, Text):
                    # encoded(): the decoder's own UTF-8 bytes when it had them (no re-encoding)
                    ctx.inspect(item.encoded(), where=f"{f.source} > {item.where}",
                                direction=f.direction, tx_id=f.tx_id, file=f, charset="utf-8")
                elif isinstance(item, Member):
                    child = ctx.open_file(f.direction, name=item.name, source=f"{f.source} > {item.path}",
                                          protocol=f.protocol, tx_id=f.tx_id, parent=f, app=f.app)
                    child.write(item.data)
                    # A member cut short by a cap must not report a hash of partial data.
                    child.close(STATE_TRUNCATED if getattr(item, "truncated", False) else None)
                elif isinstance(item, Notice):
                    if item.kind == "encrypted":
                        f.extra["encrypted"] = True
                    self.anomaly("content", f"content.{item.kind}", item.detail, flow=f.flow,
                                 direction=f.direction, tx_id=f.tx_id)
        except Exception as exc:  # noqa: BLE001 - extract() promises not to raise; contain if it does
            self.anomaly("content", "content.decoder_error", type(exc).__name__, flow=f.flow)

    # ------------------------------------------------------------------ timers and flow end

    def flush_counters(self) -> None:
        """Fold the per-interface packet/byte counts into stats (cheap; runs on the 1 s timer)."""
        for iface, (pkts, nbytes, last) in self._iface_counts.items():
            name = iface or "pcap"
            done_p, done_b = self._iface_flushed.get(iface, (0, 0))
            if pkts != done_p:
                self.stats.incr("capture.packets", pkts - done_p, iface=name)
                self.stats.incr("capture.bytes", nbytes - done_b, iface=name)
                self._iface_flushed[iface] = (pkts, nbytes)
            self.stats.set("capture.last_packet_ts", last, iface=name)
        self.stats.set("flow.active", len(self.flows))

    @property
    def packets(self) -> int:
        return sum(c[0] for c in self._iface_counts.values())

    @property
    def bytes(self) -> int:
        return sum(c[1] for c in self._iface_counts.values())

    def tick(self, now: float) -> None:
        """Run timers when no packet arrived (live capture idle)."""
        if now > self.now:
            self.now = now
        if now >= self._next_timer:
            self._timers(now)

    def _timers(self, now: float) -> None:
        self._next_timer = now + 1.0
        self.flush_chunks()
        self.flush_counters()
        for flow in self.flows.expire(now):
            self._end_flow(flow, "timeout")
        if self.flows.ended:
            self._drain_ended("memcap")
        self.decoder.expire(now)
        self.reassembler.check_all_timeouts(now)
        if self._expect:
            for key in [k for k, v in self._expect.items() if v[0] < now]:
                del self._expect[key]

    def _drain_ended(self, reason: str) -> None:
        ended = self.flows.ended
        while ended:
            flow = ended.pop()
            # The table says why it ended a flow (memcap eviction, or "forced" by port reuse).
            self._end_flow(flow, flow.end_reason or reason)

    def _end_flow(self, flow: Flow, reason: str) -> None:
        ts = max(self.now, flow.last_ts)
        if flow.proto == PROTO_TCP:
            self.reassembler.close(flow, ts)  # may deliver what waited: it joins the chunk, in order
            if self._chunked and id(flow) in self._chunked:
                self._flush_flow_chunks(flow)
        parser = flow.parser
        if parser is not None:
            try:
                parser.close(ts)
            except Exception as exc:  # noqa: BLE001
                self._parser_failed(flow, exc)
        self.detection.flow_end(flow)
        flow.end_reason = reason
        self.emit(Event("flow", ts, {"flow": self.flow_record(flow, reason)}, flow))
        flow.parser = None
        flow.streams = None
        flow.metadata.pop("ctx", None)

    def flow_record(self, flow: Flow, reason: str) -> dict[str, Any]:
        pkts = flow.pkts
        nbytes = flow.bytes
        state = flow.state
        rec: dict[str, Any] = {
            "pkts_toserver": pkts[TO_SERVER],
            "pkts_toclient": pkts[TO_CLIENT],
            "bytes_toserver": nbytes[TO_SERVER],
            "bytes_toclient": nbytes[TO_CLIENT],
            "start": format_ts(flow.start_ts),
            "end": format_ts(flow.last_ts),
            "age": int(flow.last_ts - flow.start_ts),
            "state": state if state in _EVE_FLOW_STATES else "established",
            "reason": reason,
            "alerted": flow.alerted,
            "gaps": flow.gaps,
            "protected_side": flow.protected_side,
        }
        if flow.proto == PROTO_TCP:
            missing = gap_bytes(flow)
            if missing:
                rec["gap_bytes"] = missing
            ts_flags, tc_flags = tcp_flags(flow)
            rec["tcp_flags_ts"] = f"{ts_flags:02x}"
            rec["tcp_flags_tc"] = f"{tc_flags:02x}"
        return rec

    def stats_event(self) -> Event:
        snap = self.stats.snapshot()
        snap["uptime"] = round(time.monotonic() - self.started_mono, 3)
        return Event("stats", self.now or time.time(), {"stats": snap})

    def finish(self, reason: str = "shutdown") -> None:
        """Flush every flow, write final stats, close outputs. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.flush_chunks()
        for flow in self.flows.flush():
            self._end_flow(flow, reason)
        self._drain_ended(reason)
        self.flush_counters()
        self.emit(self.stats_event())
        if self.eve is not None:
            self.eve.close()

