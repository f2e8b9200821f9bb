"""Decoded TCP/UDP packets for unit tests (no capture, no decoder)."""

from __future__ import annotations

import ipaddress

from monitor.model import PROTO_TCP, PROTO_UDP, Packet

S, A, F, R, P, U = 0x02, 0x10, 0x01, 0x04, 0x08, 0x20


def tcp(src: str, dst: str, sport: int, dport: int, flags: int = A, seq: int = 0, ack: int = 0,
        payload: bytes = b"", ts: float = 0.0, urg: int = 0, vlan: tuple[int, ...] = (), cnt: int = 0) -> Packet:
    s = ipaddress.ip_address(src)
    d = ipaddress.ip_address(dst)
    header = 54 if s.version == 4 else 74
    return Packet(ts, cnt, s.version, s.packed, d.packed, PROTO_TCP, sport, dport, payload, tcp_flags=flags,
                  seq=seq & 0xFFFFFFFF, ack=ack & 0xFFFFFFFF, urg_ptr=urg, vlan=vlan,
                  wire_len=header + len(payload))


def udp(src: str, dst: str, sport: int, dport: int, payload: bytes = b"", ts: float = 0.0) -> Packet:
    s = ipaddress.ip_address(src)
    d = ipaddress.ip_address(dst)
    return Packet(ts, 0, s.version, s.packed, d.packed, PROTO_UDP, sport, dport, payload,
                  wire_len=42 + len(payload))
