"""Replay a capture through the real capture -> decode -> flow -> reassembly stages into
app-layer parsers (one :class:`tests.factories.RecordingContext` per flow).

Detection and the rest of the pipeline are left out so app-layer tests assert exactly
what the parsers report (files, events, buffers, anomalies).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitor.applayer import registry
from monitor.capture.pcapfile import read_capture
from monitor.config import Config, default_config
from monitor.decode import Decoder
from monitor.flow.netset import NetSet
from monitor.flow.reassembly import TcpReassembler
from monitor.flow.table import FlowTable
from monitor.model import PROTO_TCP, PROTO_UDP, Flow
from monitor.stats import Stats
from tests.factories import RecordingContext


@dataclass
class Replay:
    cfg: Config
    stats: Stats = field(default_factory=Stats)
    contexts: list[RecordingContext] = field(default_factory=list)

    # StreamSink (parser errors contained as Pipeline.on_data does: the detecting parser puts
    # the protocol parser itself in flow.parser once it has decided)
    def on_data(self, flow: Flow, direction: int, data: bytes, ts: float) -> None:
        if flow.parser is not None:
            try:
                flow.parser.feed(direction, data, ts)
            except Exception as exc:  # noqa: BLE001
                parser_failed(flow, exc)

    def on_gap(self, flow: Flow, direction: int, length: int, ts: float) -> None:
        if flow.parser is not None:
            try:
                flow.parser.gap(direction, length, ts)
            except Exception as exc:  # noqa: BLE001
                parser_failed(flow, exc)

    def on_overlap(self, flow: Flow, direction: int, offset: int, kept: bytes, other: bytes, ts: float) -> None:
        pass

    def on_anomaly(self, flow: Flow, direction: int, kind: str, detail: str = "") -> None:
        pass

    def on_depth(self, flow: Flow, direction: int) -> None:
        pass

    # helpers over all flows
    @property
    def files(self) -> list[Any]:
        return [f for c in self.contexts for f in c.files]

    @property
    def anomalies(self) -> list[str]:
        return [a for c in self.contexts for a in c.anomalies]

    @property
    def inspected(self) -> list[Any]:
        return [i for c in self.contexts for i in c.inspected]

    def events(self, event_type: str) -> list[dict[str, Any]]:
        return [b for c in self.contexts for b in c.event_bodies(event_type)]


def parser_failed(flow: Flow, exc: Exception) -> None:
    ctx: RecordingContext = flow.metadata["ctx"]
    ctx.anomaly("applayer.parser_error", f"{getattr(flow.parser, 'name', '?')}: {type(exc).__name__}")
    flow.parser = None


def replay(path: str | Path, cfg: Config | None = None) -> Replay:
    cfg = cfg or default_config()
    r = Replay(cfg)
    decoder = Decoder(cfg, r.stats, lambda kind, detail, raw: None)
    table = FlowTable(cfg, r.stats, NetSet(cfg.networks.protected))
    reasm = TcpReassembler(cfg, r.stats, r)
    flows: list[Flow] = []
    last_ts = 0.0
    for raw in read_capture(path, stats=r.stats):
        last_ts = raw.ts
        pkt = decoder.decode(raw)
        if pkt is None:
            continue
        flow, direction, created = table.lookup(pkt)
        if created:
            ctx = RecordingContext(flow=flow, config=cfg, stats=r.stats)
            flow.metadata["ctx"] = ctx
            r.contexts.append(ctx)
            flows.append(flow)
            if flow.proto == PROTO_TCP:
                flow.parser = registry.new_tcp_parser(ctx)
            elif flow.proto == PROTO_UDP:
                flow.parser = registry.new_udp_parser(ctx)
        if pkt.proto == PROTO_TCP:
            reasm.packet(flow, direction, pkt)
        elif pkt.payload and flow.parser is not None:
            r.on_data(flow, direction, pkt.payload, pkt.ts)
    for flow in flows:
        if flow.proto == PROTO_TCP:
            reasm.close(flow, last_ts)
        if flow.parser is not None:
            try:
                flow.parser.close(last_ts)
            except Exception as exc:  # noqa: BLE001
                parser_failed(flow, exc)
    return r


def eve_lines(contexts: list[RecordingContext], ts: float = 1_700_000_000.0) -> list[str]:
    """EVE lines for everything the contexts recorded (app events and closed files)."""
    from alerts.eve import dumps, eve_record
    from monitor.events import Event

    lines = []
    for ctx in contexts:
        for event_type, body, tx_id in ctx.events:
            lines.append(dumps(eve_record(Event(event_type, ts, body, ctx.flow, tx_id=tx_id))))
        for f in ctx.closed_files:
            body = dict(f.app)
            body["fileinfo"] = f.fileinfo()
            lines.append(dumps(eve_record(Event("fileinfo", ts, body, ctx.flow, direction=f.direction,
                                                tx_id=f.tx_id))))
    return lines
