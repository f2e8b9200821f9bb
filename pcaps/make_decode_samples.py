"""Generate the decoder/capture sample captures (pcaps/decode-*.pcap*), crafted with scapy.

    python3 pcaps/make_decode_samples.py [OUTDIR]     # default: the folder of this script

Containers are written here with ``struct`` (not scapy's writers) so every variant the reader
must handle is present exactly once: pcapng with three interfaces of different link types and
timestamp resolutions (plus name-resolution, statistics and simple-packet blocks), nanosecond
big-endian pcap, a gzip-compressed pcap whose name does not say so, cooked (SLL/SLL2), BSD
loopback in both byte orders, tunnels, IP fragments with overlapping different data, and a
deliberately damaged file. Deterministic: fixed addresses, ports and timestamps.
"""

from __future__ import annotations

import gzip
import struct
import sys
from pathlib import Path

from scapy.layers.inet import GRE, IP, TCP, UDP, IPOption_RR, fragment
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import Dot1AD, Dot1Q, Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Raw

T0 = 1_700_000_000  # fixed epoch second for every capture

C4, S4 = "10.66.0.1", "10.66.0.2"
C6, S6 = "fd66::1", "fd66::2"
MAC_C, MAC_S = "02:66:00:00:00:01", "02:66:00:00:00:02"


def eth(payload: object) -> bytes:
    return bytes(Ether(src=MAC_C, dst=MAC_S) / payload)


def tcp4(sport: int, dport: int, data: bytes, flags: str = "PA", seq: int = 1000) -> IP:
    return IP(src=C4, dst=S4, id=7) / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=1) / Raw(data)


def udp4(sport: int, dport: int, data: bytes) -> IP:
    return IP(src=C4, dst=S4, id=8) / UDP(sport=sport, dport=dport) / Raw(data)


def tcp6(sport: int, dport: int, data: bytes) -> IPv6:
    return IPv6(src=C6, dst=S6) / TCP(sport=sport, dport=dport, flags="PA", seq=5, ack=1) / Raw(data)


# ------------------------------------------------------------------ containers


def pcap(records: list[tuple[float, bytes]] | list[tuple[int, bytes]], linktype: int, *, endian: str = "<", nanos: bool = False,
         snaplen: int = 262144, wire: dict[int, int] | None = None) -> bytes:
    magic = 0xA1B23C4D if nanos else 0xA1B2C3D4
    out = [struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for i, (ts, data) in enumerate(records):
        if isinstance(ts, int):  # integer nanoseconds: exact
            sec, frac = divmod(ts, 10**9)
            frac = frac if nanos else frac // 1000
        else:
            sec = int(ts)
            frac = round((ts - sec) * (1e9 if nanos else 1e6))
        length = (wire or {}).get(i, len(data))
        out.append(struct.pack(endian + "IIII", sec, frac, len(data), length) + data)
    return b"".join(out)


def _block(btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    n = len(body) + 12
    return struct.pack("<II", btype, n) + body + struct.pack("<I", n)


def _opt(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def pcapng_two_links() -> bytes:
    """SHB, IDB Ethernet (µs, 'span0'), IDB SLL2 (ns, 'any'), IDB raw IP (2^-10 s, no name)."""
    shb = _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + _opt(4, b"leakmon make_decode_samples") + _opt(0, b""))
    idb0 = _block(1, struct.pack("<HHI", 1, 0, 65535) + _opt(2, b"span0") + _opt(0, b""))
    idb1 = _block(1, struct.pack("<HHI", 276, 0, 65535) + _opt(2, b"any") + _opt(9, b"\x09") + _opt(0, b""))
    idb2 = _block(1, struct.pack("<HHI", 101, 0, 65535) + _opt(9, b"\x8a") + _opt(0, b""))
    nrb = _block(4, struct.pack("<HH", 1, 14) + bytes([10, 66, 0, 2]) + b"server\0\0\0\0" + struct.pack("<HH", 0, 0))

    def epb(ifid: int, ticks: int, data: bytes) -> bytes:
        return _block(6, struct.pack("<IIIII", ifid, ticks >> 32, ticks & 0xFFFFFFFF, len(data), len(data)) + data)

    e1 = eth(tcp4(40000, 80, b"GET / HTTP/1.1\r\n\r\n"))
    sll2 = struct.pack("!HHIHBB8s", 0x0800, 0, 3, 1, 0, 6, bytes.fromhex("026600000001") + b"\0\0")
    s1 = sll2 + bytes(udp4(5353, 53, b"dns-ish"))
    r1 = bytes(tcp6(40001, 443, b"raw-ipv6-payload"))
    e2 = eth(udp4(40002, 514, b"syslog line"))
    isb = _block(5, struct.pack("<III", 0, 0, 0) + _opt(0, b""))
    spb_data = eth(tcp4(40000, 80, b"simple-packet-block", seq=2000))
    spb = _block(3, struct.pack("<I", len(spb_data)) + spb_data)
    return b"".join([
        shb, idb0, idb1, nrb, idb2,
        epb(0, (T0 + 1) * 10**6 + 250_000, e1),
        epb(1, (T0 + 2) * 10**9 + 123_456_789, s1),
        epb(2, (T0 + 3) * 1024 + 512, r1),
        isb,
        epb(0, (T0 + 4) * 10**6, e2),
        spb,
    ])


# ------------------------------------------------------------------ frames


def tunnel_frames() -> list[bytes]:
    inner = tcp4(41000, 80, b"inner-http")
    inner_eth = Ether(src="02:77:00:00:00:01", dst="02:77:00:00:00:02") / Dot1Q(vlan=42) / inner
    outer = IP(src="192.0.2.1", dst="192.0.2.2")
    frames = [
        eth(outer / GRE(proto=0x0800) / inner),  # GRE, IPv4 inside
        eth(outer / GRE(key_present=1, seqnum_present=1, key=7, seqence_number=3, proto=0x86DD)
            / tcp6(41001, 8080, b"gre-key-seq-v6")),
        eth(outer / GRE(proto=0x6558) / inner_eth),  # transparent Ethernet bridging
        # ERSPAN type II: GRE with sequence number, 8-byte ERSPAN header (version 1, vlan 0, session 5).
        eth(outer / GRE(seqnum_present=1, seqence_number=1, proto=0x88BE)
            / Raw(struct.pack("!II", (1 << 28) | 5, 0)) / inner_eth),
        # ERSPAN type III: 12-byte header (version 2), frame type 0 (Ethernet), no optional subheader.
        eth(outer / GRE(seqnum_present=1, seqence_number=2, proto=0x22EB)
            / Raw(struct.pack("!III", (2 << 28) | 6, 123456, 0)) / inner_eth),
        eth(outer / UDP(sport=55555, dport=4789) / VXLAN(vni=4242) / inner_eth),
        # MPLS, two labels, then IPv4.
        bytes(Ether(src=MAC_C, dst=MAC_S, type=0x8847)) + struct.pack("!II", (100 << 12) | 64, (200 << 12) | 0x100 | 64)
        + bytes(udp4(41002, 53, b"mpls-udp")),
        # PPPoE session carrying IPv6.
        bytes(Ether(src=MAC_C, dst=MAC_S, type=0x8864))
        + struct.pack("!BBHHH", 0x11, 0, 0x1234, len(bytes(tcp6(41003, 25, b"pppoe-v6"))) + 2, 0x0057)
        + bytes(tcp6(41003, 25, b"pppoe-v6")),
        # QinQ: 802.1ad outer 10, 802.1Q inner 20.
        bytes(Ether(src=MAC_C, dst=MAC_S) / Dot1AD(vlan=10) / Dot1Q(vlan=20) / tcp4(41004, 21, b"USER qinq\r\n")),
        # IPv4 with options (IHL 8: record route).
        eth(IP(src=C4, dst=S4, options=[IPOption_RR(routers=["1.2.3.4", "5.6.7.8"])])
            / TCP(sport=41005, dport=80, flags="PA", seq=9) / Raw(b"ip-options")),
        # IPv6 with hop-by-hop, destination options, routing (type 0 deprecated -> use 4-byte padded), then UDP.
        eth(IPv6(src=C6, dst=S6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / IPv6ExtHdrRouting(addresses=[])
            / UDP(sport=41006, dport=514) / Raw(b"v6-ext-headers")),
        # Atomic fragment (offset 0, M=0).
        eth(IPv6(src=C6, dst=S6) / IPv6ExtHdrFragment(offset=0, m=0, id=99) / TCP(sport=41007, dport=80, flags="S")),
        # IPv6 in IPv4 (6in4) and IPv4 in IPv6.
        eth(IP(src="192.0.2.1", dst="192.0.2.2", proto=41) / tcp6(41008, 80, b"6in4")),
        eth(IPv6(src="2001:db8::1", dst="2001:db8::2", nh=4) / tcp4(41009, 80, b"4in6")),
        # TCP with urgent pointer and all flags we track.
        eth(IP(src=C4, dst=S4) / TCP(sport=41010, dport=9090, flags="PAU", seq=0xFFFFFFF0, ack=77, urgptr=1)
            / Raw(b"Xurgent")),
    ]
    return frames


def frag_evasion_frames() -> list[bytes]:
    """IPv4 UDP and IPv6 TCP datagrams split into fragments whose overlap carries different data."""
    frames: list[bytes] = []
    # IPv4: clean datagram, fragments out of order.
    clean = IP(src=C4, dst=S4, id=0x1111) / UDP(sport=42000, dport=9999) / Raw(b"A" * 64 + b"B" * 64)
    parts = fragment(clean, fragsize=48)
    frames += [eth(p) for p in reversed(parts)]
    # IPv4 overlap: first fragment 0..32 "benign", a second copy of bytes 16..32 that differs, then the tail.
    payload = bytes(UDP(sport=42001, dport=9999, len=8 + 48, chksum=0) / Raw(b"benign-benign-benign-benign-benign-benign-bb"[:48].ljust(48, b"b")))
    head = IP(src=C4, dst=S4, id=0x2222, proto=17, flags="MF", frag=0) / Raw(payload[:32])
    evil = IP(src=C4, dst=S4, id=0x2222, proto=17, flags="MF", frag=2) / Raw(b"EVIL-EVIL-EVIL-E")
    tail = IP(src=C4, dst=S4, id=0x2222, proto=17, frag=4) / Raw(payload[32:])
    frames += [eth(head), eth(evil), eth(tail)]
    # IPv6 TCP in three fragments, the middle one repeated with different bytes.
    seg = bytes(TCP(sport=42002, dport=80, flags="PA", seq=1, ack=1) / Raw(b"0123456789" * 8))  # 100 bytes
    fid = 0x3333
    def f6(off: int, m: int, data: bytes) -> bytes:
        return eth(IPv6(src=C6, dst=S6) / IPv6ExtHdrFragment(nh=6, offset=off // 8, m=m, id=fid) / Raw(data))
    frames += [f6(0, 1, seg[:40]), f6(40, 1, seg[40:80]), f6(40, 1, b"X" * 40), f6(80, 0, seg[80:])]
    return frames


def hostile_pcap() -> bytes:
    """A wrong snaplen, a zero-length record, garbage frames, and a final record cut short."""
    good = eth(tcp4(43000, 80, b"still-decoded"))
    garbage = [
        b"\xff" * 13,  # shorter than Ethernet
        bytes(Ether(src=MAC_C, dst=MAC_S, type=0x0800)) + b"\x4f" + b"\0" * 30,  # IHL 15 > captured
        eth(IP(src=C4, dst=S4, len=400) / TCP(sport=43001, dport=80)),  # total length > captured
        eth(IP(src=C4, dst=S4, proto=6) / Raw(bytes(TCP(sport=43002, dport=80, dataofs=15)))),  # data offset past end
        eth(IP(src=C4, dst=S4) / UDP(sport=43003, dport=53, len=4)),  # UDP length < 8
    ]
    records = [(T0 + 0.1, good)] + [(T0 + 0.2 + i / 10, g) for i, g in enumerate(garbage)]
    body = pcap(records, 1, snaplen=40)  # every frame is longer than this snaplen
    zero = struct.pack("<IIII", T0 + 2, 0, 0, 60)
    last = struct.pack("<IIII", T0 + 3, 0, 100, 100) + good[:30]  # cut short
    return body + zero + struct.pack("<IIII", T0 + 2, 5, len(good), len(good)) + good + last


def main(outdir: Path) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    tun = tunnel_frames()
    files = {
        "decode-two-links.pcapng": pcapng_two_links(),
        "decode-ns-bigendian.pcap": pcap([((T0 + i) * 10**9 + 123, f) for i, f in enumerate(tun[:3])], 1,
                                         endian=">", nanos=True),
        "decode-tunnels.pcap": pcap([(T0 + i / 100, f) for i, f in enumerate(tun)], 1),
        "decode-frag-evasion.pcap": pcap([(T0 + i / 100, f) for i, f in enumerate(frag_evasion_frames())], 1),
        "decode-hostile.pcap": hostile_pcap(),
        "decode-sll.pcap": pcap([(T0, struct.pack("!HHH8sH", 0, 1, 6, bytes.fromhex("026600000001") + b"\0\0", 0x8100)
                                  + struct.pack("!HH", 30, 0x0800) + bytes(udp4(44000, 53, b"sll-vlan"))),
                                 (T0 + 1, struct.pack("!HHH8sH", 4, 1, 6, bytes.fromhex("026600000002") + b"\0\0", 0x86DD)
                                  + bytes(tcp6(44001, 80, b"sll-v6")))], 113),
        "decode-null-le.pcap": pcap([(T0, struct.pack("<I", 2) + bytes(tcp4(45000, 80, b"null-le-v4"))),
                                     (T0 + 1, struct.pack("<I", 30) + bytes(tcp6(45001, 80, b"null-le-v6-macos")))], 0),
        "decode-null-be.pcap": pcap([(T0, struct.pack(">I", 24) + bytes(tcp6(45002, 80, b"null-be-v6-openbsd"))),
                                     (T0 + 1, struct.pack(">I", 2) + bytes(udp4(45003, 53, b"null-be-v4")))], 0, endian=">"),
        "decode-loop.pcap": pcap([(T0, struct.pack(">I", 28) + bytes(tcp6(45004, 80, b"loop-v6-freebsd"))),
                                  (T0 + 1, struct.pack(">I", 2) + bytes(tcp4(45005, 80, b"loop-v4")))], 108),
    }
    files["decode-gzip.pcap"] = gzip.compress(files["decode-tunnels.pcap"], mtime=0)
    for name, data in files.items():
        (outdir / name).write_bytes(data)
        print(f"{name}: {len(data)} bytes")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)
