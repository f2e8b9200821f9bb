"""IPv4/IPv6 defragmentation: reassembly, first-wins overlaps, caps, timeouts, corpus cases."""

from __future__ import annotations

import dataclasses
from typing import Any

from scapy.layers.inet import IP, TCP, UDP, fragment
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from monitor.capture.pcapfile import read_capture
from monitor.config import Config, DefragConfig
from monitor.decode import Decoder
from monitor.model import Packet, RawPacket
from monitor.stats import Stats
from tests.conftest import PCAPS, corpus


class Harness:
    def __init__(self, **defrag: Any) -> None:
        cfg = dataclasses.replace(Config(), defrag=dataclasses.replace(DefragConfig(), **defrag))
        self.stats = Stats()
        self.anomalies: list[tuple[str, int]] = []
        self.decoder = Decoder(cfg, self.stats, lambda kind, detail, raw: self.anomalies.append((kind, raw.pcap_cnt)))
        self.n = 0

    def feed(self, frame: object, ts: float = 1.0) -> Packet | None:
        self.n += 1
        data = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / frame)  # type: ignore[operator]
        return self.decoder.decode(RawPacket(ts, 1, data, self.n, "", len(data)))


def udp_datagram(ident: int, data: bytes) -> IP:
    return IP(src="10.1.0.1", dst="10.1.0.2", id=ident) / UDP(sport=1111, dport=2222) / Raw(data)


def test_out_of_order_ipv4_fragments_reassemble_into_one_packet() -> None:
    h = Harness()
    payload = bytes(range(256)) * 3
    frags = fragment(udp_datagram(0x77, payload), fragsize=200)
    assert len(frags) == 4
    results = [h.feed(f) for f in (frags[2], frags[0], frags[3], frags[1])]
    assert results[:3] == [None, None, None]
    pkt = results[3]
    assert pkt is not None and pkt.payload == payload and (pkt.sport, pkt.dport) == (1111, 2222)
    assert pkt.pcap_cnt == 4 and pkt.raw is not None and pkt.raw.pcap_cnt == 4
    assert pkt.wire_len == sum(len(bytes(Ether() / f)) for f in frags)
    assert h.anomalies == [] and h.stats.get("defrag.reassembled") == 1 and len(h.decoder.defrag) == 0


def test_overlap_with_different_data_first_wins_and_one_anomaly() -> None:
    h = Harness()
    body = b"benign!!" * 6  # 48 bytes of UDP payload; UDP header makes the datagram 56 bytes
    udp = bytes(UDP(sport=1111, dport=2222, len=56, chksum=0)) + body
    base: dict[str, Any] = {"src": "10.1.0.1", "dst": "10.1.0.2", "id": 9, "proto": 17}
    assert h.feed(IP(**base, flags="MF", frag=0) / Raw(udp[:32])) is None
    assert h.feed(IP(**base, flags="MF", frag=1) / Raw(b"EVIL" * 4)) is None  # bytes 8..24 again, different
    assert h.feed(IP(**base, flags="MF", frag=2) / Raw(b"EVIL" * 4)) is None  # and once more: still one anomaly
    pkt = h.feed(IP(**base, frag=4) / Raw(udp[32:]))
    assert pkt is not None and pkt.payload == body  # the bytes that arrived first
    assert h.anomalies == [("defrag.overlap_different_data", 2)]
    assert h.stats.get("defrag.overlap_different_data") == 2


def test_overlap_with_same_data_is_no_anomaly() -> None:
    h = Harness()
    frags = fragment(udp_datagram(5, b"x" * 100), fragsize=40)
    h.feed(frags[0])
    h.feed(frags[0])  # exact duplicate
    for f in frags[1:]:
        pkt = h.feed(f)
    assert pkt is not None and pkt.payload == b"x" * 100
    assert h.anomalies == [] and h.stats.get("defrag.overlap_same_data") == 1


def test_ipv6_overlap_different_data() -> None:
    h = Harness()
    seg = bytes(TCP(sport=3333, dport=80, flags="PA", seq=7) / Raw(b"0123456789" * 8))

    def f6(off: int, m: int, data: bytes) -> IPv6:
        return IPv6(src="fd00::1", dst="fd00::2") / IPv6ExtHdrFragment(nh=6, offset=off // 8, m=m, id=42) / Raw(data)

    assert h.feed(f6(0, 1, seg[:48])) is None
    assert h.feed(f6(40, 1, b"Z" * 40)) is None
    pkt = h.feed(f6(80, 0, seg[80:]))
    assert pkt is not None and pkt.proto == 6 and pkt.seq == 7
    assert pkt.payload == (seg[:48] + b"Z" * 32 + seg[80:])[20:]  # bytes 40..48 kept from the first fragment
    assert h.anomalies == [("defrag.overlap_different_data", 2)]


def test_timeout_drops_incomplete_datagrams() -> None:
    h = Harness(timeout=10.0)
    frags = fragment(udp_datagram(6, b"y" * 100), fragsize=40)
    h.feed(frags[0], ts=100.0)
    h.decoder.expire(105.0)
    assert len(h.decoder.defrag) == 1
    h.decoder.expire(111.0)
    assert len(h.decoder.defrag) == 0 and h.stats.get("defrag.timeout") == 1
    # The rest arrives too late: no packet comes out of it.
    assert [h.feed(f, ts=112.0) for f in frags[1:]] == [None] * (len(frags) - 1)
    # Those late fragments started a new datagram at t=112; met again after the timeout it is
    # restarted, not completed with its stale bytes.
    assert h.feed(frags[0], ts=200.0) is None
    assert h.stats.get("defrag.timeout") == 2 and len(h.decoder.defrag) == 1


def test_memcap_evicts_oldest_and_counts() -> None:
    h = Harness(memcap=4096)
    for ident in range(20):
        h.feed(fragment(udp_datagram(100 + ident, b"m" * 400), fragsize=200)[0])
    assert h.decoder.defrag.used <= 4096
    assert h.stats.get("defrag.memcap_evict") >= 12
    assert len(h.decoder.defrag) < 20
    # The newest datagram is still there and completes.
    last = fragment(udp_datagram(119, b"m" * 400), fragsize=200)
    pkt = None
    for f in last[1:]:
        pkt = h.feed(f)
    assert pkt is not None and pkt.payload == b"m" * 400


def test_max_fragments_and_too_large() -> None:
    h = Harness(max_fragments=4)
    frags = fragment(udp_datagram(7, b"z" * 400), fragsize=48)
    for f in frags[:5]:
        assert h.feed(f) is None
    assert ("defrag.max_fragments", 5) in h.anomalies and len(h.decoder.defrag) == 0
    big = IP(src="10.1.0.1", dst="10.1.0.2", id=8, proto=17, flags="MF", frag=8190) / Raw(b"q" * 64)
    assert h.feed(big) is None
    assert h.anomalies[-1] == ("defrag.too_large", 6)


def test_corpus_ipv4_syn_in_fragments() -> None:
    for rel, vlan in (("suricata-verify/defrag/bug-6887-defrag-ipv4-tcp-syn/frag-ip-tcp-syn.pcap", ()),
                      ("suricata-verify/defrag/bug-6887-defrag-eth-vlan-ipv4-tcp-syn/frag-eth-vlan-ip-tcp-syn.pcap",
                       None)):
        stats = Stats()
        dec = Decoder(Config(), stats, lambda *a: None)
        pkts = [p for p in (dec.decode(r) for r in read_capture(corpus(rel), stats=stats)) if p]
        assert len(pkts) == 1 and pkts[0].tcp_flags == 0x02 and pkts[0].proto == 6
        if vlan is not None:
            assert pkts[0].vlan == vlan
        else:
            assert len(pkts[0].vlan) == 1


def test_corpus_ipv6_tcp_1000_bytes() -> None:
    stats = Stats()
    dec = Decoder(Config(), stats, lambda *a: None)
    path = corpus("suricata-verify/defrag/bug-6887-defrag-ipv6-tcp/frag-ip-tcp.pcap")
    pkts = [p for p in (dec.decode(r) for r in read_capture(path, stats=stats)) if p]
    assert len(pkts) == 1 and pkts[0].payload == b"A" * 1000 and pkts[0].ip_version == 6


def _anomalies(rel: str) -> tuple[list[str], Stats]:
    stats = Stats()
    kinds: list[str] = []
    dec = Decoder(Config(), stats, lambda kind, detail, raw: kinds.append(kind))
    for r in read_capture(corpus(rel), stats=stats):
        dec.decode(r)
    return kinds, stats


def test_corpus_ipv6_overlap_evasion_raises_the_anomaly() -> None:
    kinds, _ = _anomalies("suricata-verify/ipv6-evasion/ipv6-malformed-fragments-1/frag-1.pcap")
    assert kinds.count("defrag.overlap_different_data") == 1


def test_corpus_ipv4_duplicate_fragment_is_counted_not_reported() -> None:
    """zeek/ipv4/fragmented-2.pcap repeats its first fragment byte for byte (tshark: no conflict)."""
    kinds, stats = _anomalies("zeek/ipv4/fragmented-2.pcap")
    assert kinds == [] and stats.get("defrag.overlap_same_data") == 1 and stats.get("defrag.fragments") == 3


def test_sample_frag_evasion_capture() -> None:
    """pcaps/decode-frag-evasion.pcap: one clean datagram, one IPv4 and one IPv6 overlap evasion."""
    stats = Stats()
    kinds: list[tuple[str, int]] = []
    dec = Decoder(Config(), stats, lambda kind, detail, raw: kinds.append((kind, raw.pcap_cnt)))
    pkts = [p for p in (dec.decode(r) for r in read_capture(PCAPS / "decode-frag-evasion.pcap", stats=stats)) if p]
    assert [(p.pcap_cnt, p.dport, len(p.payload)) for p in pkts] == [(3, 9999, 128), (6, 9999, 48), (10, 80, 80)]
    assert pkts[1].payload.startswith(b"benign-benign-benign-benign-benign-")  # first wins over EVIL
    assert pkts[2].payload == b"0123456789" * 8  # the repeated middle fragment lost
    assert kinds == [("defrag.overlap_different_data", 5), ("defrag.overlap_different_data", 9)]
