"""Community ID flow hashing, version 1 (https://github.com/corelight/community-id-spec).

``1:`` + base64(SHA1(seed, lower endpoint address, higher endpoint address, proto, 0,
lower port, higher port)); all integers big-endian. The endpoints are ordered so that both
directions of a flow hash the same. Computed once per flow, at creation.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from monitor.model import Flow

# Protocols whose 4-tuple carries ports (TCP, UDP, SCTP).
_PORT_PROTOS = frozenset({6, 17, 132})
_ICMP = 1
_ICMPV6 = 58

# ICMP type -> the type of its reply, for request/reply pairs the spec treats as two-way.
_ICMP4_PAIRS = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 17: 18, 18: 17, 10: 9, 9: 10}
_ICMP6_PAIRS = {128: 129, 129: 128, 133: 134, 134: 133, 135: 136, 136: 135, 130: 131, 131: 130,
                144: 145, 145: 144}


def community_id(proto: int, src: bytes, dst: bytes, sport: int = 0, dport: int = 0, seed: int = 0) -> str:
    """Community ID v1 of a flow given in either direction.

    For ICMP/ICMPv6 pass the message type as ``sport`` and the code as ``dport``.
    """
    one_way = False
    if proto == _ICMP or proto == _ICMPV6:
        pairs = _ICMP4_PAIRS if proto == _ICMP else _ICMP6_PAIRS
        icmp_type = sport
        if icmp_type in pairs:
            sport, dport = icmp_type, pairs[icmp_type]
        else:
            sport, dport = icmp_type, dport
            one_way = True
    with_ports = proto in _PORT_PROTOS or proto == _ICMP or proto == _ICMPV6
    if not one_way and (src > dst or (src == dst and sport > dport)):
        src, dst, sport, dport = dst, src, dport, sport
    data = struct.pack("!H", seed & 0xFFFF) + src + dst + struct.pack("!BB", proto & 0xFF, 0)
    if with_ports:
        data += struct.pack("!HH", sport & 0xFFFF, dport & 0xFFFF)
    return "1:" + base64.b64encode(hashlib.sha1(data, usedforsecurity=False).digest()).decode("ascii")


def flow_community_id(flow: Flow) -> str:
    """The Community ID of a flow (client -> server orientation does not matter: v1 orders ends)."""
    return community_id(flow.proto, flow.client, flow.server, flow.cport, flow.sport)
