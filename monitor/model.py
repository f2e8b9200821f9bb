"""Typed records shared by every stage: captured packets, decoded packets, flows.

Hot-path objects use ``__slots__`` dataclasses and packed addresses (bytes); text forms are
computed once per flow, when an event is written.
"""

from __future__ import annotations

import builtins
import ipaddress
from dataclasses import dataclass, field
from typing import Any

# Directions of a flow, relative to the client (the side that sent the SYN, or the first packet).
TO_SERVER = 0
TO_CLIENT = 1
DIRECTION_NAMES = ("to_server", "to_client")

# IP protocol numbers we name in events.
PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMPV6 = 58
PROTO_NAMES = {PROTO_ICMP: "ICMP", PROTO_TCP: "TCP", PROTO_UDP: "UDP", PROTO_ICMPV6: "IPv6-ICMP"}

# Link types (LINKTYPE_* values of pcap/pcapng).
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

# TCP flag bits.
TH_FIN = 0x01
TH_SYN = 0x02
TH_RST = 0x04
TH_PSH = 0x08
TH_ACK = 0x10
TH_URG = 0x20


@dataclass(slots=True)
class RawPacket:
    """One captured frame, as every capture source yields it."""

    ts: float  # seconds since the epoch, UTC
    linktype: int
    data: bytes
    pcap_cnt: int  # 1-based packet number within the replay (or the live session)
    iface: str = ""
    wire_len: int = 0  # original length on the wire (>= len(data) when snaplen cut it)


@dataclass(slots=True)
class Packet:
    """A decoded packet: only what flows, reassembly and detection need."""

    ts: float
    pcap_cnt: int
    ip_version: int
    src: bytes  # packed address, 4 or 16 bytes
    dst: bytes
    proto: int
    sport: int
    dport: int
    payload: bytes
    tcp_flags: int = 0
    seq: int = 0
    ack: int = 0
    urg_ptr: int = 0
    vlan: tuple[int, ...] = ()
    src_mac: bytes = b""
    dst_mac: bytes = b""
    wire_len: int = 0
    raw: RawPacket | None = None  # kept for evidence; the frame as captured


def ip_text(packed: bytes) -> str:
    """Packed IPv4/IPv6 address to its canonical text form."""
    return str(ipaddress.ip_address(packed))


@dataclass(slots=True, eq=False)
class Flow:
    """A bidirectional conversation. Each stage enriches it; nothing here is per-packet heavy."""

    flow_id: int  # 64-bit, the same on every event of the flow
    proto: int
    client: bytes  # packed address of the client
    server: bytes
    cport: int
    sport: int
    vlan: tuple[int, ...] = ()
    ip_version: int = 4
    start_ts: float = 0.0
    last_ts: float = 0.0
    pkts: list[int] = field(default_factory=lambda: [0, 0])  # indexed by direction
    bytes: list[int] = field(default_factory=lambda: [0, 0])
    state: str = "new"  # new | established | closed
    app_proto: str | None = None
    # Which side is inside networks.protected: "client", "server", "both" or None.
    protected_side: str | None = None
    community_id: str = ""
    # Stage-owned state (reassembly streams, app-layer parser, evidence recorder, detection state).
    streams: Any = None
    parser: Any = None
    recorder: Any = None
    detect: Any = None
    gaps: int = 0
    alerted: bool = False
    # ``builtins.bytes``: inside this class ``bytes`` names the per-direction byte counters above.
    client_mac: builtins.bytes = b""
    server_mac: builtins.bytes = b""
    iface: str = ""
    end_reason: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    _text: tuple[str, str] | None = None

    def addresses(self) -> tuple[str, str]:
        """(client ip, server ip) as text, computed once."""
        if self._text is None:
            self._text = (ip_text(self.client), ip_text(self.server))
        return self._text

    def endpoints(self, direction: int) -> tuple[str, int, str, int]:
        """(src_ip, src_port, dest_ip, dest_port) for data flowing in ``direction``."""
        c, s = self.addresses()
        if direction == TO_CLIENT:
            return s, self.sport, c, self.cport
        return c, self.cport, s, self.sport

    def outbound_direction(self) -> int | None:
        """The direction in which data leaves the protected side, or None if neither/both."""
        if self.protected_side == "client":
            return TO_SERVER
        if self.protected_side == "server":
            return TO_CLIENT
        return None
