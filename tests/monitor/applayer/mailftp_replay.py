"""Replay captures through the real capture -> decode -> flow -> reassembly stages into the SMTP
and FTP parsers, resolving FTP data-channel expectations the way the pipeline does: when a new
flow matches an expectation (server, server port, client; None = any), its parser is the
expectation's factory instead of protocol detection. Also renders what the parsers reported
as EVE lines so tests can validate them against the schema.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alerts.eve import dumps, eve_record
from alerts.schema import validate_lines
from monitor.applayer import registry
from monitor.capture.pcapfile import read_capture
from monitor.config import Config, default_config
from monitor.decode import Decoder
from monitor.events import Event
from monitor.flow.netset import NetSet
from monitor.flow.reassembly import TcpReassembler
from monitor.flow.table import FlowTable
from monitor.model import PROTO_TCP, Flow
from monitor.stats import Stats
from tests.factories import RecordingContext


@dataclass
class Expectation:
    server: bytes | None
    server_port: int | None
    client: bytes | None
    factory: Callable[[Any], Any]
    info: dict[str, Any]

    def matches(self, flow: Flow) -> bool:
        return ((self.server is None or self.server == flow.server)
                and (self.server_port is None or self.server_port == flow.sport)
                and (self.client is None or self.client == flow.client))


@dataclass
class ExpectingContext(RecordingContext):
    """RecordingContext that also publishes expectations to the replay, and keeps event order."""

    pending: list[Expectation] | None = None
    log: list[Event] = field(default_factory=list)

    def expect(self, *, server: bytes | None, server_port: int | None, client: bytes | None,
               factory: Callable[[Any], Any], info: dict[str, Any]) -> None:
        super().expect(server=server, server_port=server_port, client=client, factory=factory, info=info)
        if self.pending is not None:
            self.pending.append(Expectation(server, server_port, client, factory, info))

    def event(self, event_type: str, body: dict[str, Any], *, direction: int | None = None,
              tx_id: int | None = None, ts: float | None = None) -> None:
        super().event(event_type, body, direction=direction, tx_id=tx_id, ts=ts)
        self.log.append(Event(event_type, ts or 0.0, body, flow=self.flow, direction=direction, tx_id=tx_id))

    def anomaly(self, kind: str, detail: str = "", *, direction: int | None = None,
                tx_id: int | None = None) -> None:
        super().anomaly(kind, detail, direction=direction, tx_id=tx_id)
        body = {"anomaly": {"type": "applayer", "event": kind, "layer": "applayer"}}
        self.log.append(Event("anomaly", 0.0, body, flow=self.flow, direction=direction, tx_id=tx_id))


@dataclass
class MailFtpReplay:
    cfg: Config
    stats: Stats = field(default_factory=Stats)
    contexts: list[ExpectingContext] = field(default_factory=list)
    pending: list[Expectation] = field(default_factory=list)
    matched: int = 0

    # StreamSink
    def on_data(self, flow: Flow, direction: int, data: bytes, ts: float) -> None:
        if flow.parser is not None:
            flow.parser.feed(direction, data, ts)

    def on_gap(self, flow: Flow, direction: int, length: int, ts: float) -> None:
        if flow.parser is not None:
            flow.parser.gap(direction, length, ts)

    def on_overlap(self, flow: Flow, direction: int, offset: int, kept: bytes, other: bytes, ts: float) -> None:
        pass

    def on_anomaly(self, flow: Flow, direction: int, kind: str, detail: str = "") -> None:
        pass

    def on_depth(self, flow: Flow, direction: int) -> None:
        pass

    # results
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

    def eve(self, types: tuple[str, ...] = ("smtp", "ftp", "ftp_data", "anomaly")) -> list[dict[str, Any]]:
        """The events of ``types`` the parsers reported, as validated EVE records (header included)."""
        lines = [dumps(eve_record(ev)) for c in self.contexts for ev in c.log if ev.event_type in types]
        return validate_lines(lines)

    def file_named(self, name: str) -> list[Any]:
        return [f for f in self.files if f.name == name]


def replay(path: str | Path, cfg: Config | None = None,
           ports: dict[int, Callable[[Any], Any]] | None = None) -> MailFtpReplay:
    """``ports`` forces a parser by server port (captures that protocol detection cannot
    classify, e.g. one direction only); other flows go through the registry's detection."""
    cfg = cfg or default_config()
    r = MailFtpReplay(cfg)
    decoder = Decoder(cfg, r.stats, lambda kind, detail, raw: None)
    table = FlowTable(cfg, r.stats, NetSet(cfg.networks.protected))
    reasm = TcpReassembler(cfg, r.stats, r)
    flows: list[Flow] = []
    last_ts = 0.0
    for raw in read_capture(path, stats=r.stats):
        last_ts = raw.ts
        pkt = decoder.decode(raw)
        if pkt is None or pkt.proto != PROTO_TCP:
            continue
        flow, direction, created = table.lookup(pkt)
        if created:
            ctx = ExpectingContext(flow=flow, config=cfg, stats=r.stats, pending=r.pending)
            r.contexts.append(ctx)
            flows.append(flow)
            exp = next((e for e in r.pending if e.matches(flow)), None)
            if exp is not None:
                r.pending.remove(exp)
                r.matched += 1
                flow.parser = exp.factory(ctx)
            elif ports and flow.sport in ports:
                flow.parser = ports[flow.sport](ctx)
            else:
                flow.parser = registry.new_tcp_parser(ctx)
        reasm.packet(flow, direction, pkt)
        for ended in table.expire(raw.ts):
            _finish(reasm, ended, raw.ts)
    for flow in flows:
        if flow.parser is not None:
            _finish(reasm, flow, last_ts)
    return r


def _finish(reasm: TcpReassembler, flow: Flow, ts: float) -> None:
    if flow.parser is None:
        return
    reasm.close(flow, ts)
    flow.parser.close(ts)
    flow.parser = None
