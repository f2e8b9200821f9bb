"""Decoder fields, malformed frames (anomaly + counter, never an exception), checksums, layer caps."""

from __future__ import annotations

import dataclasses
import struct
from typing import Any

import pytest
from scapy.layers.inet import GRE, IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from monitor.capture.pcapfile import read_capture
from monitor.config import Config, DecoderConfig
from monitor.decode import Decoder
from monitor.model import Packet, RawPacket
from monitor.stats import Stats
from tests.conftest import corpus

ETH = Ether(src="02:00:00:00:00:0a", dst="02:00:00:00:00:0b")


class Harness:
    def __init__(self, **decoder: Any) -> None:
        cfg = dataclasses.replace(Config(), decoder=dataclasses.replace(DecoderConfig(), **decoder))
        self.stats = Stats()
        self.anomalies: list[str] = []
        self.decoder = Decoder(cfg, self.stats, lambda kind, detail, raw: self.anomalies.append(kind))

    def decode(self, frame: object, linktype: int = 1) -> Packet | None:
        data = frame if isinstance(frame, bytes) else bytes(frame)  # type: ignore[call-overload]
        return self.decoder.decode(RawPacket(1.5, linktype, data, 1, "", len(data)))


def test_tcp_fields() -> None:
    h = Harness()
    pkt = h.decode(ETH / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1234, dport=80, flags="PAU", seq=4294967295,
                                                                    ack=17, urgptr=3, options=[("MSS", 1460)])
                   / Raw(b"hello"))
    assert pkt is not None
    assert (pkt.src, pkt.dst, pkt.proto, pkt.sport, pkt.dport) == (bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), 6, 1234, 80)
    assert (pkt.tcp_flags, pkt.seq, pkt.ack, pkt.urg_ptr, pkt.payload) == (0x38, 4294967295, 17, 3, b"hello")
    assert pkt.src_mac == bytes.fromhex("02000000000a") and pkt.dst_mac == bytes.fromhex("02000000000b")
    assert pkt.ts == 1.5 and pkt.raw is not None and pkt.wire_len == len(pkt.raw.data)


def test_ethernet_padding_is_not_payload() -> None:
    h = Harness()
    frame = bytes(ETH / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1, dport=2, flags="A")) + b"\0" * 6
    pkt = h.decode(frame)
    assert pkt is not None and pkt.payload == b""


def test_ipv6_extension_headers_and_vlan() -> None:
    h = Harness()
    pkt = h.decode(ETH / Dot1Q(vlan=7) / IPv6(src="fd00::1", dst="fd00::2") / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt()
                   / UDP(sport=53, dport=5353) / Raw(b"q" * 33))
    assert pkt is not None and pkt.vlan == (7,) and pkt.ip_version == 6 and pkt.payload == b"q" * 33


def test_corpus_triple_vlan_tags() -> None:
    """suricata-verify/detect-vlan-id: ICMP in tags 200, 300, 400 -- counted; the same tags around UDP decode."""
    h = Harness()
    raw = next(iter(read_capture(corpus("suricata-verify/detect-vlan-id/input.pcap"), stats=h.stats)))
    assert h.decoder.decode(raw) is None and h.stats.get("decoder.icmpv4") == 1
    tags_end = 14 + 3 * 4
    frame = raw.data[:tags_end - 2] + b"\x08\x00" + bytes(IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2))
    pkt = h.decode(frame)
    assert pkt is not None and pkt.vlan == (200, 300, 400)


@pytest.mark.parametrize("family,order", [(2, "<"), (2, ">"), (24, "<"), (28, ">"), (30, "<"), (30, ">")])
def test_bsd_null_both_byte_orders(family: int, order: str) -> None:
    h = Harness()
    ip = IP(src="10.0.0.1", dst="10.0.0.2") if family == 2 else IPv6(src="fd00::1", dst="fd00::2")
    frame = struct.pack(order + "I", family) + bytes(ip / TCP(sport=5, dport=6) / Raw(b"abc"))
    for linktype in (0, 108):
        pkt = h.decode(frame, linktype)
        assert pkt is not None and pkt.payload == b"abc" and pkt.ip_version == (4 if family == 2 else 6)


def test_icmp_counted_not_returned() -> None:
    from scapy.layers.inet import ICMP
    from scapy.layers.inet6 import ICMPv6EchoRequest

    h = Harness()
    assert h.decode(ETH / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP()) is None
    assert h.decode(ETH / IPv6(src="fd00::1", dst="fd00::2") / ICMPv6EchoRequest()) is None
    assert (h.stats.get("decoder.icmpv4"), h.stats.get("decoder.icmpv6")) == (1, 1) and h.anomalies == []


GOOD = bytes(ETH / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1, dport=2, flags="PA") / Raw(b"data"))


def _patch(frame: bytes, offset: int, value: bytes) -> bytes:
    return frame[:offset] + value + frame[offset + len(value):]


MALFORMED = [
    (GOOD[:13], "decoder.ethernet.pkt_too_small"),
    (GOOD[:30], "decoder.ipv4.pkt_too_small"),
    (_patch(GOOD, 14, b"\x44"), "decoder.ipv4.hlen_too_small"),  # IHL 4 -> 16 bytes
    (_patch(GOOD, 14, b"\x4f"), "decoder.ipv4.iplen_smaller_than_hlen"),  # IHL 60 > total length 44
    (_patch(GOOD, 16, b"\x05\xdc"), "decoder.ipv4.trunc_pkt"),  # total length 1500
    (_patch(GOOD, 14, b"\x55"), "decoder.ipv4.wrong_ip_version"),
    (_patch(GOOD, 46, b"\xf0"), "decoder.tcp.bad_offset"),  # data offset 60 > segment
    (_patch(GOOD, 46, b"\x20"), "decoder.tcp.bad_offset"),  # data offset 8 < 20
    (bytes(ETH / IP(src="10.0.0.1", dst="10.0.0.2", proto=6) / Raw(b"\0" * 10)), "decoder.tcp.pkt_too_small"),
    (bytes(ETH / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2, len=5)), "decoder.udp.bad_len"),
    (bytes(ETH / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2, len=200)), "decoder.udp.bad_len"),
    (bytes(ETH / IPv6(src="fd00::1", dst="fd00::2", nh=0, plen=4) / Raw(b"\x06\x05\0\0")), "decoder.ipv6.exthdr_trunc"),
    (bytes(ETH / IPv6(src="fd00::1", dst="fd00::2", plen=900) / UDP()), "decoder.ipv6.trunc_pkt"),
    (bytes(ETH)[:12] + b"\x81\x00" * 11, "decoder.vlan.pkt_too_small"),
]


@pytest.mark.parametrize("frame,kind", MALFORMED, ids=[f"{k}-{i}" for i, (_, k) in enumerate(MALFORMED)])
def test_malformed_frames_give_one_anomaly(frame: bytes, kind: str) -> None:
    h = Harness()
    assert h.decode(frame) is None
    assert h.anomalies == [kind] and h.stats.get(kind) == 1


def test_layer_cap_on_vlan_stacks_and_nested_tunnels() -> None:
    h = Harness(max_layers=4)
    tagged = ETH / Dot1Q(vlan=1) / Dot1Q(vlan=2) / Dot1Q(vlan=3) / Dot1Q(vlan=4) / Dot1Q(vlan=5) / IP() / UDP()
    assert h.decode(tagged) is None and h.anomalies == ["decoder.layer_limit"]
    inner: object = IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=9, dport=9)
    for _ in range(6):
        inner = IP(src="192.0.2.1", dst="192.0.2.2") / GRE() / inner  # type: ignore[operator]
    assert h.decode(ETH / inner) is None and h.anomalies[-1] == "decoder.layer_limit"
    assert h.decode(ETH / IP() / GRE() / IP() / GRE() / IP(src="1.1.1.1") / UDP(sport=7)) is not None


def test_checksum_validation_only_when_enabled() -> None:
    bad_tcp = _patch(GOOD, 14 + 20 + 16, b"\xde\xad")
    bad_ip = _patch(GOOD, 14 + 10, b"\xbe\xef")
    off = Harness()
    assert off.decode(bad_tcp) is not None and off.decode(bad_ip) is not None
    on = Harness(checksum_validation=True)
    assert on.decode(GOOD) is not None
    assert on.decode(bytes(ETH / IPv6(src="fd00::1", dst="fd00::2") / UDP(sport=1, dport=2) / Raw(b"x"))) is not None
    assert on.decode(bad_tcp) is None and on.decode(bad_ip) is None
    assert on.stats.get("decoder.checksum_invalid") == 2 and on.anomalies == []


def test_vxlan_only_on_configured_ports() -> None:
    from scapy.layers.vxlan import VXLAN

    inner = Ether() / IP(src="10.9.9.1", dst="10.9.9.2") / TCP(sport=77, dport=88) / Raw(b"in")
    outer = ETH / IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=1000, dport=8472) / VXLAN(vni=1) / inner
    pkt = Harness().decode(outer)
    assert pkt is not None and pkt.proto == 17 and pkt.dport == 8472  # not a VXLAN port by default
    pkt = Harness(vxlan_ports=[8472]).decode(outer)
    assert pkt is not None and (pkt.sport, pkt.dport, pkt.payload) == (77, 88, b"in")


def test_gre_decapsulation_can_be_turned_off() -> None:
    frame = ETH / IP(src="192.0.2.1", dst="192.0.2.2") / GRE() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP()
    assert Harness().decode(frame) is not None
    h = Harness(decapsulate_gre=False)
    assert h.decode(frame) is None and h.stats.get("decoder.other_proto") == 1


def test_unknown_linktype_and_non_ip_are_counted() -> None:
    h = Harness()
    assert h.decode(b"\0" * 40, linktype=147) is None
    assert h.decode(Ether(type=0x0806) / Raw(b"\0" * 28)) is None
    assert h.stats.get("decoder.unsupported_linktype") == 1 and h.stats.get("decoder.non_ip") == 1
