"""Community ID flow hashing, version 1 (https://github.com/corelight/community-id-spec).

``1:`` + base64(SHA1(seed, lower endpoint address, higher endpoint address, proto, 0,
lower port, higher port)); all integers big-endian. The endpoints are ordered so that both
directions of a flow hash the same. Computed once per flow, when its first EVE record is written
(every flow writes at least its ``flow`` record, so once per flow in practice).
"""

from __future__ import annotations

import base64
import hashlib
import struct
from binascii import b2a_base64
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from monitor.model import Flow

# Protocols whose 4-tuple carries ports (TCP, UDP, SCTP).
_PORT_PROTOS = frozenset({6, 17, 132})
_ICMP = 1
# seed 0, then per port protocol: protocol, padding byte (the middle of every hashed tuple).
_SEED0 = b"\x00\x00"
_PROTO_PAD = {p: bytes((p, 0)) for p in _PORT_PROTOS}
_PORTS = struct.Struct("!HH")
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
    """The Community ID of a flow (client -> server orientation does not matter: v1 orders ends).

    TCP, UDP and SCTP (every flow but ICMP and port-less protocols) take a short path: seed 0,
    the ends ordered, one SHA-1 over one concatenation; :func:`community_id` does the rest.
    """
    proto = flow.proto
    pad = _PROTO_PAD.get(proto)
    if pad is None:
        return community_id(proto, flow.client, flow.server, flow.cport, flow.sport)
    a, b, pa, pb = flow.client, flow.server, flow.cport & 0xFFFF, flow.sport & 0xFFFF
    if a > b or (a == b and pa > pb):
        a, b, pa, pb = b, a, pb, pa
    digest = hashlib.sha1(_SEED0 + a + b + pad + _PORTS.pack(pa, pb), usedforsecurity=False).digest()
    return "1:" + b2a_base64(digest, newline=False).decode("ascii")
