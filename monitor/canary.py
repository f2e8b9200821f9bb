"""Canary self-test: prove end to end, periodically, that detection still works.

Every ``canary.interval`` the canary injects a synthetic TCP conversation into the pipeline
(the same path as captured packets): a three-way handshake, one data segment carrying
``canary.marker``, and a FIN exchange, from ``CANARY_CLIENT`` (192.0.2.0/24, TEST-NET-1) to
``CANARY_SERVER`` (198.51.100.0/24, TEST-NET-2). These documentation ranges never appear on a
real network, so the flow cannot be confused with traffic; the pipeline treats
``CANARY_PROTECTED_CIDR`` as protected so the flow is protected -> outside.

Subscribed to the EventBus, the canary watches for the alert of its flow (sid
``canary.sid`` or category ``canary``). When it comes, ``canary.last_success`` is set and
Prometheus exports it as ``leakmon_canary_last_success_timestamp_seconds``; the rule
``LeakmonCanaryStale`` fires when it grows old. The canary alert is not a leak: its category
is ``canary`` and incidents/notifications ignore it.

Frames are built with ``struct`` (no packet library), once per run: five small packets.
"""

from __future__ import annotations

import ipaddress
import logging
import struct
import time
from collections.abc import Callable
from typing import Any

from monitor.config import CanaryConfig
from monitor.events import Event
from monitor.model import LINKTYPE_ETHERNET, TH_ACK, TH_FIN, TH_PSH, TH_SYN, RawPacket

log = logging.getLogger("leakmon.canary")

CANARY_PROTECTED_CIDR = "192.0.2.0/24"
CANARY_CLIENT = "192.0.2.77"
CANARY_SERVER = "198.51.100.77"
CANARY_SERVER_PORT = 80  # a plain-text HTTP upload: the HTTP parser and the raw stream both see the marker
CANARY_IFACE = "canary"
CATEGORY = "canary"
# Locally administered MACs (bit 1 of the first octet): never a real NIC's address.
_CLIENT_MAC = bytes.fromhex("02c0ffee0001")
_SERVER_MAC = bytes.fromhex("02c0ffee0002")
_PORT_BASE = 40000
_PORT_SPAN = 20000

Inject = Callable[[list[RawPacket]], None]


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def tcp_frame(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int,
              payload: bytes = b"", ip_id: int = 0) -> bytes:
    """One Ethernet/IPv4/TCP frame with correct IP and TCP checksums."""
    tcp_len = 20 + len(payload)
    tcp_hdr = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags,
                          65535, 0, 0)
    pseudo = src + dst + struct.pack("!BBH", 0, 6, tcp_len)
    csum = _checksum(pseudo + tcp_hdr + payload)
    tcp_hdr = tcp_hdr[:16] + struct.pack("!H", csum) + tcp_hdr[18:]
    total_len = 20 + tcp_len
    ip_hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total_len, ip_id & 0xFFFF, 0x4000, 64, 6, 0, src, dst)
    ip_hdr = ip_hdr[:10] + struct.pack("!H", _checksum(ip_hdr)) + ip_hdr[12:]
    src_mac, dst_mac = (_CLIENT_MAC, _SERVER_MAC) if src == _packed(CANARY_CLIENT) else (_SERVER_MAC, _CLIENT_MAC)
    return dst_mac + src_mac + b"\x08\x00" + ip_hdr + tcp_hdr + payload


def _packed(ip: str) -> bytes:
    return ipaddress.ip_address(ip).packed


def canary_payload(marker: str, run: int) -> bytes:
    """An HTTP upload whose body carries the marker (the request line names the run only)."""
    body = f"canary-run={run}&note={marker}\r\n".encode()
    head = (f"POST /leakmon-canary HTTP/1.1\r\nHost: {CANARY_SERVER}\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    return head + body


def canary_flow(marker: str, run: int, ts: float) -> list[RawPacket]:
    """Handshake, one data segment, FIN/ACK exchange: 8 frames, 1 ms apart."""
    c, s = _packed(CANARY_CLIENT), _packed(CANARY_SERVER)
    cport = _PORT_BASE + run % _PORT_SPAN
    sport = CANARY_SERVER_PORT
    isn_c, isn_s = 0x10000000 + run * 7919, 0x20000000 + run * 104729
    data = canary_payload(marker, run)
    c1, s1 = isn_c + 1, isn_s + 1
    frames = [
        tcp_frame(c, s, cport, sport, isn_c, 0, TH_SYN, ip_id=1),
        tcp_frame(s, c, sport, cport, isn_s, c1, TH_SYN | TH_ACK, ip_id=1),
        tcp_frame(c, s, cport, sport, c1, s1, TH_ACK, ip_id=2),
        tcp_frame(c, s, cport, sport, c1, s1, TH_PSH | TH_ACK, data, ip_id=3),
        tcp_frame(s, c, sport, cport, s1, c1 + len(data), TH_ACK, ip_id=2),
        tcp_frame(c, s, cport, sport, c1 + len(data), s1, TH_FIN | TH_ACK, ip_id=4),
        tcp_frame(s, c, sport, cport, s1, c1 + len(data) + 1, TH_FIN | TH_ACK, ip_id=3),
        tcp_frame(c, s, cport, sport, c1 + len(data) + 1, s1 + 1, TH_ACK, ip_id=5),
    ]
    return [RawPacket(ts + i * 0.001, LINKTYPE_ETHERNET, f, 0, CANARY_IFACE, len(f)) for i, f in enumerate(frames)]


class Canary:
    """Periodic synthetic leak; an EventBus sink that confirms the alert came back."""

    def __init__(self, cfg: CanaryConfig, inject: Inject, stats: Any | None = None) -> None:
        self.cfg = cfg
        self.inject = inject
        self.stats = stats
        self.runs = 0
        self.last_success = 0.0
        self._next = 0.0
        self._pending: tuple[int, float] | None = None  # (client port, deadline)
        self._client = _packed(CANARY_CLIENT)
        self._server = _packed(CANARY_SERVER)

    def tick(self, now: float) -> None:
        """Called by the pipeline's timer: inject when due, count a failure when the alert is late."""
        if not self.cfg.enabled:
            return
        if self._pending is not None and now > self._pending[1]:
            self._pending = None
            self._count("canary.failures")
            log.warning("canary: no alert within %.0fs; detection is not proven to work", self.cfg.timeout)
        if now >= self._next:
            self._next = now + self.cfg.interval
            self.run(now)

    def run(self, now: float | None = None) -> None:
        """Inject one canary flow now."""
        ts = time.time() if now is None else now
        self.runs += 1
        packets = canary_flow(self.cfg.marker, self.runs, ts)
        self._pending = (_PORT_BASE + self.runs % _PORT_SPAN, ts + self.cfg.timeout)
        self._count("canary.runs")
        try:
            self.inject(packets)
        except Exception:  # noqa: BLE001 - a broken canary must not stop the sensor
            log.exception("canary injection failed")
            self._count("canary.failures")
            self._pending = None

    def __call__(self, event: Event) -> None:
        """EventBus sink: the alert of the pending canary flow proves detection."""
        if event.event_type != "alert" or self._pending is None:
            return
        flow = event.flow
        if flow is None or {flow.client, flow.server} != {self._client, self._server}:
            return
        if self._pending[0] not in (flow.cport, flow.sport):
            return
        alert = event.body.get("alert") or {}
        if alert.get("signature_id") != self.cfg.sid and alert.get("category") != CATEGORY:
            return
        self._pending = None
        self.last_success = time.time()
        self._count("canary.successes")
        if self.stats is not None:
            self.stats.set("canary.last_success", self.last_success)

    def _count(self, name: str) -> None:
        if self.stats is not None:
            self.stats.incr(name)


def is_canary_flow(flow: Any) -> bool:
    """For incidents/notifications: events of the canary flow are never a leak."""
    try:
        return CANARY_CLIENT_PACKED in (flow.client, flow.server) and CANARY_SERVER_PACKED in (flow.client, flow.server)
    except AttributeError:
        return False


CANARY_CLIENT_PACKED = _packed(CANARY_CLIENT)
CANARY_SERVER_PACKED = _packed(CANARY_SERVER)
