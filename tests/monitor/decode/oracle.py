"""tshark as an independent oracle for per-packet decoding: 5-tuple and payload length per frame."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from pathlib import Path

from monitor.capture.pcapfile import read_capture
from monitor.config import Config
from monitor.decode import Decoder
from monitor.model import ip_text
from monitor.stats import Stats

Row = tuple[str, str, int, int, int, int]  # src, dst, proto, sport, dport, payload length

FIELDS = ["frame.number", "frame.protocols", "ip.src", "ip.dst", "ipv6.src", "ipv6.dst", "tcp.srcport",
          "tcp.dstport", "tcp.len", "udp.srcport", "udp.dstport", "udp.length"]


def have_tshark() -> bool:
    return shutil.which("tshark") is not None


def tshark_rows(path: Path) -> dict[int, Row]:
    """Frames that tshark decodes to TCP or UDP (innermost layer), keyed by frame number."""
    out = subprocess.run(["tshark", "-n", "-r", str(path), "-T", "fields", "-E", "occurrence=l",
                          *(x for f in FIELDS for x in ("-e", f))],
                         capture_output=True, text=True, timeout=120).stdout
    rows: dict[int, Row] = {}
    for line in out.splitlines():
        v = dict(zip(FIELDS, line.split("\t"), strict=False))
        protos = v["frame.protocols"].split(":")
        if "icmp" in protos or "icmpv6" in protos or "teredo" in protos:
            continue  # headers quoted inside ICMP errors are not packets; Teredo is not decapsulated
        ips = [i for i, p in enumerate(protos) if p in ("ip", "ipv6")]
        l4 = [i for i, p in enumerate(protos) if p in ("tcp", "udp")]
        if not ips or not l4 or l4[-1] < ips[-1]:
            continue
        fam = "ipv6" if protos[ips[-1]] == "ipv6" else "ip"
        src, dst = v[f"{fam}.src"], v[f"{fam}.dst"]
        if protos[l4[-1]] == "tcp":
            if not v["tcp.len"]:
                continue
            row = (src, dst, 6, int(v["tcp.srcport"]), int(v["tcp.dstport"]), int(v["tcp.len"]))
        else:
            if not v["udp.length"]:
                continue
            row = (src, dst, 17, int(v["udp.srcport"]), int(v["udp.dstport"]), int(v["udp.length"]) - 8)
        rows[int(v["frame.number"])] = (str(ipaddress.ip_address(row[0])), str(ipaddress.ip_address(row[1])),
                                        *row[2:])  # type: ignore[assignment]
    return rows


def leakmon_rows(path: Path, cfg: Config | None = None) -> tuple[dict[int, Row], Stats, list[str]]:
    stats = Stats()
    anomalies: list[str] = []
    dec = Decoder(cfg or Config(), stats, lambda kind, detail, raw: anomalies.append(kind))
    rows: dict[int, Row] = {}
    for raw in read_capture(path, stats=stats):
        pkt = dec.decode(raw)
        if pkt is not None:
            rows[pkt.pcap_cnt] = (ip_text(pkt.src), ip_text(pkt.dst), pkt.proto, pkt.sport, pkt.dport,
                                  len(pkt.payload))
    return rows, stats, anomalies
