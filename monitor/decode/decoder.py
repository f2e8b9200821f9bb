"""Frames to :class:`Packet`: link layer, VLAN/MPLS/PPPoE, IPv4/IPv6, tunnels, TCP/UDP.

The hot path (Ethernet -> IPv4 -> TCP) is a few ``struct.unpack_from`` calls on the captured
bytes, addressed by offset, with one slice for the payload at the end: no per-layer objects
and no copies. Every layer gets ``(data, off, end)``: ``end`` is where the enclosing IP
datagram stops, so Ethernet padding and trailers never leak into a payload.

Outcomes of :meth:`Decoder.decode`:

* a TCP or UDP packet -> :class:`Packet` (tunnels are followed to the innermost one);
* ICMP, non-IP frames, other protocols -> None, counted (``decoder.icmpv4``, ``decoder.non_ip``, ...);
* malformed -> None, counted under the anomaly kind and reported through ``anomaly`` (kinds such
  as ``decoder.ipv4.trunc_pkt``, ``decoder.tcp.bad_offset``);
* a fragment -> None until its datagram is complete; then the whole datagram as one Packet
  (``pcap_cnt``/``raw`` of the fragment that completed it, ``wire_len`` summed over all fragments).

VLAN tags are those of the innermost Ethernet header (outermost tag first): in a tunnel, the
outer tags describe the transport network, not the monitored conversation.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from monitor.config import Config
from monitor.decode import checksum, tunnels
from monitor.decode.defrag import Defragmenter
from monitor.model import (
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    PROTO_TCP,
    PROTO_UDP,
    Packet,
    RawPacket,
)
from monitor.stats import Stats

Anomaly = Callable[[str, str, RawPacket], None]

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
ETH_VLAN_TAGS = frozenset((0x8100, 0x88A8, 0x9100, 0x9200))  # 802.1Q, 802.1ad, legacy QinQ
ETH_MPLS = frozenset((0x8847, 0x8848))
ETH_PPPOE_SESSION = 0x8864
PPP_IPV4 = 0x0021
PPP_IPV6 = 0x0057

# BSD loopback address families for IPv6 differ per OS (NetBSD/OpenBSD 24, FreeBSD 28, macOS 30).
AF_INET = 2
AF_INET6 = frozenset((10, 24, 28, 30))

IPPROTO_HOPOPTS = 0
IPPROTO_ICMP = 1
IPPROTO_IPIP = 4
IPPROTO_IPV6 = 41
IPPROTO_ROUTING = 43
IPPROTO_FRAGMENT = 44
IPPROTO_GRE = 47
IPPROTO_ESP = 50
IPPROTO_AH = 51
IPPROTO_ICMPV6 = 58
IPPROTO_NONE = 59
IPPROTO_DSTOPTS = 60
IPV6_SKIPPED_EXT = frozenset((IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_DSTOPTS, 135, 139, 140))
MAX_IPV6_EXT = 16

_ipv4_hdr = struct.Struct("!BBHHHBBH4s4s").unpack_from
# Ethernet + IPv4 in one unpack for the fast path: dmac, smac, ethertype, vhl, tot_len, frag, proto, src, dst.
_eth_ipv4 = struct.Struct("!6s6sHBxHxxHxBxx4s4s").unpack_from
_tcp_hdr = struct.Struct("!HHIIHHHH").unpack_from
# The pipeline's fused fast path (Pipeline.process) reads these from untagged Ethernet frames,
# the endpoints being the flow table's ``fast_tcp`` key (src, dst, sport, dport, contiguous).
# IPv4 (frame bytes 0-47): ethertype, vhl, tot_len, frag, proto, the 12 endpoint bytes (the
# ``fast_tcp`` key, taken by the same unpack rather than by a slice), seq, ack, data offset + flags.
ETH_IPV4_TCP = struct.Struct("!12xHBxH2xHxB2x12sIIH").unpack_from
# IPv6 (frame bytes 0-67): ethertype, version/class byte, payload length, next header, the 36
# endpoint bytes, seq, ack, data offset + flags.
ETH_IPV6_TCP = struct.Struct("!12xHB3xHBx36sIIH").unpack_from
_udp_hdr = struct.Struct("!HHHH").unpack_from
_u16 = struct.Struct("!H").unpack_from


class Decoder:
    """Stateless per frame except for IP defragmentation (``expire(now)`` ages it)."""

    def __init__(self, cfg: Config, stats: Stats, anomaly: Anomaly) -> None:
        self.stats = stats
        self.anomaly = anomaly
        self.checksums = cfg.decoder.checksum_validation
        self.vxlan_ports = frozenset(cfg.decoder.vxlan_ports)
        self.gre = cfg.decoder.decapsulate_gre
        self.max_layers = cfg.decoder.max_layers
        self.defrag = Defragmenter(cfg.defrag, stats, anomaly)

    # ------------------------------------------------------------------ entry points

    def decode(self, raw: RawPacket) -> Packet | None:
        try:
            lt = raw.linktype
            data = raw.data
            if lt == LINKTYPE_ETHERNET:
                # Fast path: untagged Ethernet, IPv4 without options or fragmentation, TCP.
                n = len(data)
                if n >= 54 and not self.checksums:
                    dmac, smac, etype, vhl, tot_len, frag, proto, src, dst = _eth_ipv4(data, 0)
                    if etype == 0x0800 and vhl == 0x45 and proto == PROTO_TCP and not frag & 0x3FFF \
                            and 40 <= tot_len <= n - 14:
                        sport, dport, seq, ack, offflags, _win, _csum, urg = _tcp_hdr(data, 34)
                        hlen = (offflags >> 12) << 2
                        if 20 <= hlen <= tot_len - 20:
                            return Packet(raw.ts, raw.pcap_cnt, 4, src, dst, PROTO_TCP, sport, dport,
                                          data[34 + hlen:14 + tot_len], offflags & 0xFF, seq, ack, urg, (),
                                          smac, dmac, raw.wire_len or n, raw)
                return self._ether(data, 0, len(data), raw, 0)
            if lt == LINKTYPE_LINUX_SLL:
                return self._sll(data, raw)
            if lt == LINKTYPE_RAW:
                return self._ip_by_version(data, 0, len(data), raw, (), b"", b"", 0)
            if lt == LINKTYPE_IPV4:
                return self._ipv4(data, 0, len(data), raw, (), b"", b"", 0)
            if lt == LINKTYPE_IPV6:
                return self._ipv6(data, 0, len(data), raw, (), b"", b"", 0)
            if lt == LINKTYPE_NULL or lt == LINKTYPE_LOOP:
                return self._null(data, raw)
            if lt == LINKTYPE_LINUX_SLL2:
                return self._sll2(data, raw)
            self.stats.incr("decoder.unsupported_linktype")
            return None
        except Exception as exc:  # noqa: BLE001 - a decoder bug must not stop the sensor
            return self._bad("decoder.internal_error", type(exc).__name__, raw)

    def expire(self, now: float) -> None:
        self.defrag.expire(now)

    # ------------------------------------------------------------------ link layers

    def _ether(self, data: bytes, off: int, end: int, raw: RawPacket, layers: int) -> Packet | None:
        if end - off < 14:
            return self._bad("decoder.ethernet.pkt_too_small", "", raw)
        dmac = data[off:off + 6]
        smac = data[off + 6:off + 12]
        etype = (data[off + 12] << 8) | data[off + 13]
        p = off + 14
        vlan: tuple[int, ...] = ()
        while etype in ETH_VLAN_TAGS:
            layers += 1
            if layers > self.max_layers:
                return self._bad("decoder.layer_limit", f"more than {self.max_layers} layers", raw)
            if end - p < 4:
                return self._bad("decoder.vlan.pkt_too_small", "", raw)
            vlan += (((data[p] << 8) | data[p + 1]) & 0x0FFF,)
            etype = (data[p + 2] << 8) | data[p + 3]
            p += 4
        if etype == ETH_IPV4:
            return self._ipv4(data, p, end, raw, vlan, smac, dmac, layers)
        if etype == ETH_IPV6:
            return self._ipv6(data, p, end, raw, vlan, smac, dmac, layers)
        return self._ethertype_other(etype, data, p, end, raw, vlan, smac, dmac, layers)

    def _ethertype_other(self, etype: int, data: bytes, p: int, end: int, raw: RawPacket, vlan: tuple[int, ...],
                         smac: bytes, dmac: bytes, layers: int) -> Packet | None:
        if etype in ETH_MPLS:
            while True:
                layers += 1
                if layers > self.max_layers:
                    return self._bad("decoder.layer_limit", f"more than {self.max_layers} layers", raw)
                if end - p < 4:
                    return self._bad("decoder.mpls.pkt_too_small", "", raw)
                bottom = data[p + 2] & 0x01
                p += 4
                if bottom:
                    break
            if p < end and data[p] >> 4 in (4, 6):
                return self._ip_by_version(data, p, end, raw, vlan, smac, dmac, layers)
            self.stats.incr("decoder.mpls.unsupported_payload")
            return None
        if etype == ETH_PPPOE_SESSION:
            if end - p < 8:
                return self._bad("decoder.pppoe.pkt_too_small", "", raw)
            ppp = (data[p + 6] << 8) | data[p + 7]
            if ppp == PPP_IPV4:
                return self._ipv4(data, p + 8, end, raw, vlan, smac, dmac, layers + 1)
            if ppp == PPP_IPV6:
                return self._ipv6(data, p + 8, end, raw, vlan, smac, dmac, layers + 1)
        self.stats.incr("decoder.non_ip")
        return None

    def _sll(self, data: bytes, raw: RawPacket) -> Packet | None:
        if len(data) < 16:
            return self._bad("decoder.sll.pkt_too_small", "", raw)
        addr_len = (data[4] << 8) | data[5]
        smac = data[6:12] if addr_len == 6 else b""
        return self._after_link(data, 16, (data[14] << 8) | data[15], raw, smac)

    def _sll2(self, data: bytes, raw: RawPacket) -> Packet | None:
        if len(data) < 20:
            return self._bad("decoder.sll2.pkt_too_small", "", raw)
        smac = data[12:18] if data[11] == 6 else b""
        return self._after_link(data, 20, (data[0] << 8) | data[1], raw, smac)

    def _after_link(self, data: bytes, p: int, etype: int, raw: RawPacket, smac: bytes) -> Packet | None:
        """Cooked captures carry an ethertype (possibly a VLAN tag) but no destination MAC."""
        end = len(data)
        vlan: tuple[int, ...] = ()
        layers = 0
        while etype in ETH_VLAN_TAGS:
            layers += 1
            if layers > self.max_layers:
                return self._bad("decoder.layer_limit", f"more than {self.max_layers} layers", raw)
            if end - p < 4:
                return self._bad("decoder.vlan.pkt_too_small", "", raw)
            vlan += (((data[p] << 8) | data[p + 1]) & 0x0FFF,)
            etype = (data[p + 2] << 8) | data[p + 3]
            p += 4
        if etype == ETH_IPV4:
            return self._ipv4(data, p, end, raw, vlan, smac, b"", layers)
        if etype == ETH_IPV6:
            return self._ipv6(data, p, end, raw, vlan, smac, b"", layers)
        return self._ethertype_other(etype, data, p, end, raw, vlan, smac, b"", layers)

    def _null(self, data: bytes, raw: RawPacket) -> Packet | None:
        if len(data) < 4:
            return self._bad("decoder.null.pkt_too_small", "", raw)
        family = int.from_bytes(data[:4], "little")
        if family > 0xFFFF:  # written by a big-endian host (or LOOP, network order)
            family = int.from_bytes(data[:4], "big")
        if family == AF_INET:
            return self._ipv4(data, 4, len(data), raw, (), b"", b"", 0)
        if family in AF_INET6:
            return self._ipv6(data, 4, len(data), raw, (), b"", b"", 0)
        self.stats.incr("decoder.non_ip")
        return None

    # ------------------------------------------------------------------ IP

    def _ip_by_version(self, data: bytes, off: int, end: int, raw: RawPacket, vlan: tuple[int, ...],
                       smac: bytes, dmac: bytes, layers: int) -> Packet | None:
        if off >= end:
            return self._bad("decoder.ip.pkt_too_small", "", raw)
        version = data[off] >> 4
        if version == 4:
            return self._ipv4(data, off, end, raw, vlan, smac, dmac, layers)
        if version == 6:
            return self._ipv6(data, off, end, raw, vlan, smac, dmac, layers)
        return self._bad("decoder.ip.wrong_version", f"version {version}", raw)

    def _ipv4(self, data: bytes, off: int, end: int, raw: RawPacket, vlan: tuple[int, ...],
              smac: bytes, dmac: bytes, layers: int) -> Packet | None:
        avail = end - off
        if avail < 20:
            return self._bad("decoder.ipv4.pkt_too_small", f"{avail} bytes", raw)
        vhl, _tos, tot_len, ident, frag, _ttl, proto, _csum, src, dst = _ipv4_hdr(data, off)
        hlen = (vhl & 0x0F) << 2
        if vhl >> 4 != 4:
            return self._bad("decoder.ipv4.wrong_ip_version", f"version {vhl >> 4}", raw)
        if hlen < 20:
            return self._bad("decoder.ipv4.hlen_too_small", f"IHL {hlen}", raw)
        if tot_len == 0:
            # Segmentation offload on the capturing host leaves the length unset.
            self.stats.incr("decoder.ipv4.zero_total_len")
            tot_len = avail
        if tot_len < hlen:
            return self._bad("decoder.ipv4.iplen_smaller_than_hlen", f"total {tot_len} < header {hlen}", raw)
        if tot_len > avail:
            return self._bad("decoder.ipv4.trunc_pkt", f"total {tot_len} > captured {avail}", raw)
        end = off + tot_len
        if self.checksums and not checksum.ipv4_header_ok(data[off:off + hlen]):
            self.stats.incr("decoder.checksum_invalid")
            return None
        p = off + hlen
        wire = 0
        if frag & 0x3FFF:  # more fragments, or a non-zero offset
            if frag & 0x4000:
                # DF and fragmented at once: no conforming stack sends this (Zeek's fragment_with_DF).
                self.anomaly("defrag.fragment_with_df", f"offset {(frag & 0x1FFF) << 3}", raw)
                self.stats.incr("defrag.fragment_with_df")
            key = (4, src, dst, ident, proto, vlan)
            done = self.defrag.add(key, (frag & 0x1FFF) << 3, bool(frag & 0x2000), proto, data[p:end], raw)
            if done is None:
                return None
            data, proto, wire = done
            p, end = 0, len(data)
        if proto == PROTO_TCP:
            return self._tcp(data, p, end, 4, src, dst, raw, vlan, smac, dmac, wire)
        if proto == PROTO_UDP:
            return self._udp(data, p, end, 4, src, dst, raw, vlan, smac, dmac, wire, layers)
        return self._ip_proto_other(proto, 4, data, p, end, raw, vlan, smac, dmac, layers)

    def _ipv6(self, data: bytes, off: int, end: int, raw: RawPacket, vlan: tuple[int, ...],
              smac: bytes, dmac: bytes, layers: int) -> Packet | None:
        avail = end - off
        if avail < 40:
            return self._bad("decoder.ipv6.pkt_too_small", f"{avail} bytes", raw)
        if data[off] >> 4 != 6:
            return self._bad("decoder.ipv6.wrong_ip_version", f"version {data[off] >> 4}", raw)
        plen = (data[off + 4] << 8) | data[off + 5]
        nh = data[off + 6]
        src = data[off + 8:off + 24]
        dst = data[off + 24:off + 40]
        if plen == 0:
            self.stats.incr("decoder.ipv6.zero_payload_len")  # offload, or a jumbogram
            plen = avail - 40
        if plen > avail - 40:
            return self._bad("decoder.ipv6.trunc_pkt", f"payload {plen} > captured {avail - 40}", raw)
        p = off + 40
        end = p + plen
        wire = 0
        ext = 0
        while True:
            if nh == PROTO_TCP:
                return self._tcp(data, p, end, 6, src, dst, raw, vlan, smac, dmac, wire)
            if nh == PROTO_UDP:
                return self._udp(data, p, end, 6, src, dst, raw, vlan, smac, dmac, wire, layers)
            if nh in IPV6_SKIPPED_EXT or nh == IPPROTO_FRAGMENT or nh == IPPROTO_AH:
                ext += 1
                if ext > MAX_IPV6_EXT:
                    return self._bad("decoder.ipv6.exthdr_limit", f"more than {MAX_IPV6_EXT} extension headers", raw)
                if end - p < 8:
                    return self._bad("decoder.ipv6.exthdr_trunc", f"header {nh}", raw)
                if nh == IPPROTO_FRAGMENT:
                    nxt = data[p]
                    offm = (data[p + 2] << 8) | data[p + 3]
                    if not offm & 0xFFF9:  # offset 0 and M clear: an atomic fragment (RFC 6946)
                        self.stats.incr("decoder.ipv6.atomic_fragment")
                        nh = nxt
                        p += 8
                        continue
                    ident = int.from_bytes(data[p + 4:p + 8], "big")
                    done = self.defrag.add((6, src, dst, ident, vlan), offm & 0xFFF8, bool(offm & 1), nxt,
                                           data[p + 8:end], raw)
                    if done is None:
                        return None
                    data, nh, wire = done
                    p, end = 0, len(data)
                    continue
                hl = (data[p + 1] + 2) << 2 if nh == IPPROTO_AH else (data[p + 1] + 1) << 3
                nh = data[p]
                p += hl
                if p > end:
                    return self._bad("decoder.ipv6.exthdr_trunc", "extension header runs past the payload", raw)
                continue
            if nh == IPPROTO_ESP:
                self.stats.incr("decoder.ipv6.esp")
                return None
            if nh == IPPROTO_NONE:
                self.stats.incr("decoder.ipv6.no_next_header")
                return None
            return self._ip_proto_other(nh, 6, data, p, end, raw, vlan, smac, dmac, layers)

    def _ip_proto_other(self, proto: int, version: int, data: bytes, p: int, end: int, raw: RawPacket,
                        vlan: tuple[int, ...], smac: bytes, dmac: bytes, layers: int) -> Packet | None:
        stats = self.stats
        if proto == IPPROTO_ICMP and version == 4:
            stats.incr("decoder.icmpv4")
            return None
        if proto == IPPROTO_ICMPV6 and version == 6:
            stats.incr("decoder.icmpv6")
            return None
        if proto == IPPROTO_GRE and self.gre:
            if layers + 1 > self.max_layers:
                return self._bad("decoder.layer_limit", f"more than {self.max_layers} layers", raw)
            inner = tunnels.gre(data, p, end)
            if inner is None:
                stats.incr("decoder.gre.unsupported")
                return None
            stats.incr("decoder.gre")
            return self._inner(inner[0], data, inner[1], end, raw, vlan, smac, dmac, layers + 1)
        if proto == IPPROTO_IPIP or proto == IPPROTO_IPV6:
            if layers + 1 > self.max_layers:
                return self._bad("decoder.layer_limit", f"more than {self.max_layers} layers", raw)
            stats.incr("decoder.ipip")
            if proto == IPPROTO_IPIP:
                return self._ipv4(data, p, end, raw, vlan, smac, dmac, layers + 1)
            return self._ipv6(data, p, end, raw, vlan, smac, dmac, layers + 1)
        stats.incr("decoder.other_proto")
        return None

    def _inner(self, kind: int, data: bytes, p: int, end: int, raw: RawPacket, vlan: tuple[int, ...],
               smac: bytes, dmac: bytes, layers: int) -> Packet | None:
        if kind == tunnels.INNER_ETHERNET:
            return self._ether(data, p, end, raw, layers)
        if kind == tunnels.INNER_IPV4:
            return self._ipv4(data, p, end, raw, vlan, smac, dmac, layers)
        return self._ipv6(data, p, end, raw, vlan, smac, dmac, layers)

    # ------------------------------------------------------------------ transport

    def _tcp(self, data: bytes, p: int, end: int, version: int, src: bytes, dst: bytes, raw: RawPacket,
             vlan: tuple[int, ...], smac: bytes, dmac: bytes, wire: int) -> Packet | None:
        if end - p < 20:
            return self._bad("decoder.tcp.pkt_too_small", f"{end - p} bytes", raw)
        sport, dport, seq, ack, offflags, _win, _csum, urg = _tcp_hdr(data, p)
        hlen = (offflags >> 12) << 2
        if hlen < 20 or hlen > end - p:
            return self._bad("decoder.tcp.bad_offset", f"data offset {hlen}, segment {end - p}", raw)
        if self.checksums and not checksum.transport_ok(version, src, dst, PROTO_TCP, data[p:end]):
            self.stats.incr("decoder.checksum_invalid")
            return None
        return Packet(raw.ts, raw.pcap_cnt, version, src, dst, PROTO_TCP, sport, dport, data[p + hlen:end],
                      offflags & 0xFF, seq, ack, urg, vlan, smac, dmac, wire or raw.wire_len or len(raw.data), raw)

    def _udp(self, data: bytes, p: int, end: int, version: int, src: bytes, dst: bytes, raw: RawPacket,
             vlan: tuple[int, ...], smac: bytes, dmac: bytes, wire: int, layers: int) -> Packet | None:
        if end - p < 8:
            return self._bad("decoder.udp.pkt_too_small", f"{end - p} bytes", raw)
        sport, dport, ulen, _csum = _udp_hdr(data, p)
        if ulen == 0 and version == 6:
            ulen = end - p  # jumbogram / offload
        if ulen < 8 or ulen > end - p:
            return self._bad("decoder.udp.bad_len", f"length {ulen}, datagram {end - p}", raw)
        end = p + ulen
        if self.checksums and not checksum.transport_ok(version, src, dst, PROTO_UDP, data[p:end]):
            self.stats.incr("decoder.checksum_invalid")
            return None
        if dport in self.vxlan_ports:
            inner = tunnels.vxlan(data, p + 8, end)
            if inner is not None:
                if layers + 1 > self.max_layers:
                    return self._bad("decoder.layer_limit", f"more than {self.max_layers} layers", raw)
                self.stats.incr("decoder.vxlan")
                return self._ether(data, inner, end, raw, layers + 1)
        return Packet(raw.ts, raw.pcap_cnt, version, src, dst, PROTO_UDP, sport, dport, data[p + 8:end],
                      0, 0, 0, 0, vlan, smac, dmac, wire or raw.wire_len or len(raw.data), raw)

    # ------------------------------------------------------------------ anomalies

    def _bad(self, kind: str, detail: str, raw: RawPacket) -> Packet | None:
        self.stats.incr(kind)
        self.anomaly(kind, detail, raw)
        return None
