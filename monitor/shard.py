"""Symmetric flow sharding for ``--workers``: both directions of a flow go to the same worker.

The shard is computed from the IP address pair only (XOR of the two addresses), read at fixed
offsets of the frame without a full decode. Ports are left out on purpose: IP fragments carry
no ports, and all fragments of a datagram must reach the worker that owns its flow. The cost
is balance when one host pair dominates; gateways see many hosts.
"""

from __future__ import annotations

from struct import Struct

from monitor.model import (
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
)

_U16 = Struct("!H")
_V4 = Struct("!II")
_V6 = Struct("!QQQQ")
_VLAN_TYPES = (0x8100, 0x88A8, 0x9100)


def _ip_offset(buf: bytes, start: int, length: int, linktype: int) -> int:
    """Offset of the IP header relative to the frame at ``buf[start:start + length]``, or -1."""
    if linktype == LINKTYPE_ETHERNET:
        off = 12
        etype = _U16.unpack_from(buf, start + off)[0] if length >= 14 else 0
        while etype in _VLAN_TYPES and length >= off + 6:
            off += 4
            etype = _U16.unpack_from(buf, start + off)[0]
        return off + 2 if etype in (0x0800, 0x86DD) else -1
    if linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6):
        return 0
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        return 4
    if linktype == LINKTYPE_LINUX_SLL:
        return 16
    if linktype == LINKTYPE_LINUX_SLL2:
        return 20
    return -1


# n == 2 (two workers): the hash's lowest bit is the parity of the lowest bit of every address
# byte. The fold (h ^= h >> 16; h ^= h >> 8) makes bit 0 of h the XOR of bits 0, 8, 16 and 24 of
# ``source ^ destination``, and those are these bits of both addresses together.
PAIR_PARITY_BITS = 0x0101010101010101


def v4_pair_shard(pair: int, n: int) -> int:
    """:func:`shard_at` of an IPv4 frame from its two addresses read as one big-endian 64-bit
    number (``source << 32 | destination``). The capture reader inlines the ``n == 2`` case."""
    if n == 2:
        return (pair & PAIR_PARITY_BITS).bit_count() & 1
    h = (pair ^ pair >> 32) & 0xFFFFFFFF
    h ^= h >> 16
    h ^= h >> 8
    return h % n


def shard_of(data: bytes, linktype: int, n: int) -> int:
    """Worker index in [0, n) for a frame; non-IP frames go to worker 0."""
    return shard_at(data, 0, len(data), linktype, n)


def shard_at(buf: bytes, start: int, length: int, linktype: int, n: int) -> int:
    """:func:`shard_of` of the frame ``buf[start:start + length]``, read in place (no slice).

    The capture reader calls this on its block buffer to skip other workers' frames before
    it builds them.
    """
    off = _ip_offset(buf, start, length, linktype)
    if off < 0 or length < off + 20:
        return 0
    at = start + off
    version = buf[at] >> 4
    if version == 4:
        a, b = _V4.unpack_from(buf, at + 12)
        h = a ^ b
    elif version == 6 and length >= off + 40:
        w = _V6.unpack_from(buf, at + 8)
        h = w[0] ^ w[1] ^ w[2] ^ w[3]
    else:
        return 0
    h ^= h >> 16
    h ^= h >> 8
    return h % n
