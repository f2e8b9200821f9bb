"""Synthetic events, packets and configs for the incident/evidence/audit/notify tests.

Until the pipeline lands, these stand in for it: an HTTP POST flow built packet by packet
(SYN .. FIN), recorded by a FlowRecorder the way the pipeline will, and alert/flow Events with
the bodies the detection stage emits.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import struct
from pathlib import Path
from typing import Any

from alerts.evidence import FlowRecorder
from monitor.config import (
    AuditConfig,
    Config,
    Contact,
    EvidenceConfig,
    IncidentsConfig,
    ReportingConfig,
    SensorConfig,
)
from monitor.events import Event
from monitor.files import FileObject
from monitor.model import LINKTYPE_ETHERNET, TO_SERVER, Flow, RawPacket
from tests.factories import tflow

EV_KEY = bytes(range(32))
MARKER = "保護すべき情報"
CLIENT_MAC = bytes.fromhex("020000000001")
SERVER_MAC = bytes.fromhex("020000000002")


def make_config(tmp: Path, **sections: Any) -> Config:
    """A Config rooted at ``tmp`` (relative paths resolve there) with an evidence key file."""
    key = tmp / "evidence.key"
    if not key.exists():
        key.write_text(EV_KEY.hex() + "\n")
        os.chmod(key, 0o600)
    base = dict(
        sensor=SensorConfig(name="sensor-tokyo-1"),
        evidence=EvidenceConfig(dir="evidence", key_file="evidence.key", ring_packets=100, ring_bytes=1 << 20),
        incidents=IncidentsConfig(db="db/leakmon.db", window=3600.0),
        audit=AuditConfig(path="audit/audit.jsonl"),
        reporting=ReportingConfig(company="防衛装備株式会社", contract="契約第R6-1234号", chain=[
            Contact(role="責任者", name="山田 太郎", organization="情報セキュリティ室", phone="03-0000-0001",
                    email="yamada@example.co.jp"),
            Contact(role="連絡担当者", name="佐藤 花子", organization="情報システム部", phone="03-0000-0002",
                    email="sato@example.co.jp"),
        ]),
    )
    base.update(sections)
    return dataclasses.replace(Config(), base_dir=str(tmp), source=str(tmp / "leakmon.yaml"), **base)


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def frame(flow: Flow, direction: int, flags: int, seq: int, ack: int, payload: bytes = b"") -> bytes:
    """An Ethernet/IPv4/TCP frame with valid checksums (what a capture would have)."""
    if direction == TO_SERVER:
        src, dst, sp, dp, smac, dmac = flow.client, flow.server, flow.cport, flow.sport, CLIENT_MAC, SERVER_MAC
    else:
        src, dst, sp, dp, smac, dmac = flow.server, flow.client, flow.sport, flow.cport, SERVER_MAC, CLIENT_MAC
    tcp = struct.pack("!HHIIBBHHH", sp, dp, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags, 65535, 0, 0)
    pseudo = src + dst + struct.pack("!BBH", 0, 6, len(tcp) + len(payload))
    c = _csum(pseudo + tcp + payload)
    tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(payload), 1, 0x4000, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
    return dmac + smac + b"\x08\x00" + ip + tcp + payload


def http_post_flow(body: bytes = b"x" * 100, *, client: str = "10.77.0.1", server: str = "203.0.113.7",
                   t0: float = 1_700_000_000.0, cport: int = 50123) -> tuple[Flow, list[RawPacket]]:
    """A complete HTTP POST conversation, SYN to FIN, as RawPackets; the flow's counters are set."""
    flow = tflow(client=client, server=server, cport=cport, sport=80)
    flow.client_mac, flow.server_mac = CLIENT_MAC, SERVER_MAC
    flow.app_proto = "http"
    req = (b"POST /upload HTTP/1.1\r\nHost: files.example.net\r\nContent-Length: %d\r\n\r\n" % len(body)) + body
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    c, s = 1000, 5000
    steps = [
        (TO_SERVER, 0x02, c, 0, b""), (1, 0x12, s, c + 1, b""), (TO_SERVER, 0x10, c + 1, s + 1, b""),
        (TO_SERVER, 0x18, c + 1, s + 1, req), (1, 0x10, s + 1, c + 1 + len(req), b""),
        (1, 0x18, s + 1, c + 1 + len(req), resp), (TO_SERVER, 0x11, c + 1 + len(req), s + 1 + len(resp), b""),
        (1, 0x11, s + 1 + len(resp), c + 2 + len(req), b""), (TO_SERVER, 0x10, c + 2 + len(req), s + 2 + len(resp), b""),
    ]
    pkts = []
    for i, (d, fl, seq, ack, pl) in enumerate(steps, 1):
        data = frame(flow, d, fl, seq, ack, pl)
        pkts.append(RawPacket(ts=t0 + i * 0.01, linktype=LINKTYPE_ETHERNET, data=data, pcap_cnt=i))
        flow.pkts[d] += 1
        flow.bytes[d] += len(data)
    flow.start_ts, flow.last_ts = pkts[0].ts, pkts[-1].ts
    flow.state = "closed"
    return flow, pkts


def record_flow(flow: Flow, pkts: list[RawPacket], cfg: Config) -> FlowRecorder:
    flow.recorder = FlowRecorder(cfg.evidence)
    for p in pkts:
        flow.recorder.add(p)
    return flow.recorder


def alert_event(flow: Flow, ts: float, *, sid: int = 9100001, signature: str = "保護すべき情報 label",
                category: str = "protected-data-leak", severity: int = 1, where: str = "http.request.body",
                encoding: str = "cp932", marker_id: str = "M-0001", context: str = "見積書の■■■■■■■について",
                file: FileObject | None = None, app: dict[str, Any] | None = None, pcap_cnt: int = 4,
                kind: str = "marker", extra_lm: dict[str, Any] | None = None) -> Event:
    c, _ = flow.addresses()
    body: dict[str, Any] = {
        "alert": {"action": "allowed", "gid": 1, "signature_id": sid, "rev": 1, "signature": signature,
                  "category": category, "severity": severity, "metadata": {}},
        "leakmon": {"kind": kind, "marker_id": marker_id, "encoding": encoding, "where": where, "count": 2,
                    "protected_host": c, "context": context, **(extra_lm or {})},
    }
    body.update(app if app is not None else {"http": {"hostname": "files.example.net", "url": "/upload",
                                                      "http_method": "POST", "http_user_agent": "curl/8.0"}})
    ev = Event("alert", ts, body, flow=flow, direction=TO_SERVER, pcap_cnt=pcap_cnt, tx_id=0)
    if file is not None:
        body["fileinfo"] = file.fileinfo()
        ev.extra["file"] = file
    return ev


def flow_event(flow: Flow, ts: float | None = None) -> Event:
    from alerts.eve import format_ts

    body = {"flow": {"pkts_toserver": flow.pkts[0], "pkts_toclient": flow.pkts[1], "bytes_toserver": flow.bytes[0],
                     "bytes_toclient": flow.bytes[1], "start": format_ts(flow.start_ts), "end": format_ts(flow.last_ts),
                     "age": int(flow.last_ts - flow.start_ts), "state": "closed", "reason": "timeout",
                     "alerted": True, "protected_side": flow.protected_side}}
    return Event("flow", ts if ts is not None else flow.last_ts, body, flow=flow)


def closed_file(flow: Flow, content: bytes, name: str = "見積書.docx") -> FileObject:
    f = FileObject(flow, TO_SERVER, name=name, source="http.request.body", protocol="http", tx_id=0)
    f.write(content)
    f.close()
    return f


class Names:
    """The HostNames interface (lookup/sources) with fixed answers."""

    def __init__(self, table: dict[str, dict[str, str]]) -> None:
        self.table = {ipaddress.ip_address(k).packed: v for k, v in table.items()}

    def lookup(self, addr: bytes) -> list[str]:
        return list(self.table.get(addr, {}))

    def sources(self, addr: bytes) -> dict[str, str]:
        return dict(self.table.get(addr, {}))
