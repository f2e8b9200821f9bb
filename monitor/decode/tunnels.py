"""Tunnel headers a SPAN/tap deployment meets: GRE (RFC 2784/2890), ERSPAN type I/II/III, VXLAN.

Each parser takes the buffer and the offset of its header and returns where the inner frame
starts and what it is, or None when the header is not one we can follow (counted by the caller).
"""

from __future__ import annotations

# What the inner frame is.
INNER_ETHERNET = 1
INNER_IPV4 = 4
INNER_IPV6 = 6

GRE_CSUM = 0x8000
GRE_ROUTING = 0x4000
GRE_KEY = 0x2000
GRE_SEQ = 0x1000
GRE_VERSION = 0x0007

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
ETHERTYPE_TEB = 0x6558  # transparent Ethernet bridging
ETHERTYPE_ERSPAN_II = 0x88BE  # type I when the GRE header has no sequence number
ETHERTYPE_ERSPAN_III = 0x22EB

VXLAN_FLAG_I = 0x08


def gre(data: bytes, off: int, end: int) -> tuple[int, int] | None:
    """(inner kind, inner offset) for a GRE version 0 header at ``off``."""
    if end - off < 4:
        return None
    flags = (data[off] << 8) | data[off + 1]
    proto = (data[off + 2] << 8) | data[off + 3]
    if flags & (GRE_VERSION | GRE_ROUTING):
        return None  # PPTP's enhanced GRE (v1) and source-routed GRE are not followed
    p = off + 4
    if flags & GRE_CSUM:
        p += 4
    if flags & GRE_KEY:
        p += 4
    if flags & GRE_SEQ:
        p += 4
    if p > end:
        return None
    if proto == ETHERTYPE_IPV4:
        return INNER_IPV4, p
    if proto == ETHERTYPE_IPV6:
        return INNER_IPV6, p
    if proto == ETHERTYPE_TEB:
        return INNER_ETHERNET, p
    if proto == ETHERTYPE_ERSPAN_II:
        if not flags & GRE_SEQ:
            return INNER_ETHERNET, p  # ERSPAN type I: no ERSPAN header
        if end - p < 8 or data[p] >> 4 != 1:
            return None
        return INNER_ETHERNET, p + 8
    if proto == ETHERTYPE_ERSPAN_III:
        if end - p < 12 or data[p] >> 4 != 2:
            return None
        frame_type = (data[p + 10] >> 2) & 0x1F  # FT: 0 = Ethernet, 2 = IP
        q = p + 12 + (8 if data[p + 11] & 0x01 else 0)  # O flag: platform-specific subheader
        if q > end:
            return None
        if frame_type == 0:
            return INNER_ETHERNET, q
        if frame_type == 2 and q < end:
            version = data[q] >> 4
            return (INNER_IPV4, q) if version == 4 else (INNER_IPV6, q) if version == 6 else None
        return None
    return None


def vxlan(data: bytes, off: int, end: int) -> int | None:
    """Offset of the inner Ethernet frame after a VXLAN header (I flag set), else None."""
    if end - off < 8 + 14 or not data[off] & VXLAN_FLAG_I:
        return None
    return off + 8
