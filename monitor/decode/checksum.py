"""Internet checksum (RFC 1071) over bytes, summed in C by ``array`` rather than a Python loop.

Words are summed in native byte order: the one's-complement sum is byte-order independent, so
a valid header or segment folds to 0xFFFF either way.
"""

from __future__ import annotations

import struct
from array import array


def ones_sum(*parts: bytes) -> int:
    """Folded 16-bit one's-complement sum of the concatenated parts."""
    data = b"".join(parts)
    if len(data) & 1:
        data += b"\0"
    total = sum(array("H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def ipv4_header_ok(header: bytes) -> bool:
    return ones_sum(header) == 0xFFFF


def transport_ok(version: int, src: bytes, dst: bytes, proto: int, segment: bytes) -> bool:
    """TCP/UDP checksum over the pseudo-header and the segment (UDP/IPv4 checksum 0 = not computed)."""
    if proto == 17 and version == 4 and len(segment) >= 8 and segment[6:8] == b"\0\0":
        return True
    if version == 4:
        pseudo = src + dst + struct.pack("!BBH", 0, proto, len(segment))
    else:
        pseudo = src + dst + struct.pack("!IxxxB", len(segment), proto)
    return ones_sum(pseudo, segment) == 0xFFFF
