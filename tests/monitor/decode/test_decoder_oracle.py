"""Per-packet 5-tuple and payload length against tshark, for every link type and tunnel we decode."""

from __future__ import annotations

import pytest

from tests.conftest import PCAPS, corpus
from tests.monitor.decode.oracle import have_tshark, leakmon_rows, tshark_rows

pytestmark = [pytest.mark.tshark, pytest.mark.skipif(not have_tshark(), reason="tshark not installed")]

CORPUS_CASES = {
    # BSD NULL/loopback
    "suricata-verify/http-post-file/input.pcap": 0,
    "suricata-verify/http-ipv6/input.pcap": 0,
    "zeek/zip/nested.pcap": 0,
    # raw IPv4 (228) and raw IPv6 (229), both fragmented
    "zeek/http/261/variant-04-te_cl_desync.pcap": 228,
    "suricata-verify/defrag/bug-6887-defrag-ipv4-tcp-syn/frag-ip-tcp-syn.pcap": 228,
    "suricata-verify/defrag/bug-6887-defrag-ipv6-tcp/frag-ip-tcp.pcap": 229,
    # Ethernet: VLAN 0, QinQ, VLAN + fragments, IPv6 fragments, IPv4 fragments, atomic fragments
    "zeek/http-vlan-0.pcap": 1,
    "zeek/http-qinq-0.pcap": 1,
    "arkime/twovlan.pcap": 1,
    "suricata-verify/defrag/bug-6887-defrag-eth-vlan-ipv4-tcp-syn/frag-eth-vlan-ip-tcp-syn.pcap": 1,
    "suricata-verify/ipv6-evasion/ipv6-malformed-fragments-1/frag-1.pcap": 1,
    "zeek/ipv4/fragmented-1.pcap": 1,
    "zeek/ipv4/fragmented-2.pcap": 1,
    "zeek/ipv4/fragmented-3.pcap": 1,
    "zeek/ipv4/fragmented-4.pcap": 1,
    "zeek/ipv6-http-atomic-frag.pcap": 1,
    "zeek/ftp/ipv6.pcap": 1,
    "arkime/v6-http.pcap": 1,
    "suricata-verify/bug-3616-smtp/input.pcap": 1,
}

SAMPLES = ["decode-two-links.pcapng", "decode-ns-bigendian.pcap", "decode-tunnels.pcap", "decode-gzip.pcap",
           "decode-frag-evasion.pcap", "decode-sll.pcap", "decode-null-le.pcap", "decode-null-be.pcap",
           "decode-loop.pcap"]


@pytest.mark.parametrize("rel", sorted(CORPUS_CASES))
def test_corpus_matches_tshark(rel: str) -> None:
    path = corpus(rel)
    expected = tshark_rows(path)
    got, stats, anomalies = leakmon_rows(path)
    assert got == expected
    assert "decoder.internal_error" not in anomalies


@pytest.mark.parametrize("name", SAMPLES)
def test_samples_match_tshark(name: str) -> None:
    path = PCAPS / name
    expected = tshark_rows(path)
    got, _stats, anomalies = leakmon_rows(path)
    assert got == expected
    assert not [a for a in anomalies if a.startswith("decoder.")]


def test_tunnel_sample_reaches_every_inner_packet() -> None:
    got, stats, _ = leakmon_rows(PCAPS / "decode-tunnels.pcap")
    assert len(got) == 15  # every frame: GRE x2, TEB, ERSPAN II/III, VXLAN, MPLS, PPPoE, QinQ, options, ext hdrs ...
    assert stats.get("decoder.gre") == 5 and stats.get("decoder.vxlan") == 1 and stats.get("decoder.ipip") == 2


def test_truncated_ip_lengths_are_the_only_difference() -> None:
    """zeek/tcp/reassembly.pcap has datagrams whose IP length exceeds the frame: tshark decodes them
    anyway, we report decoder.ipv4.trunc_pkt and drop them; every other frame agrees."""
    path = corpus("zeek/tcp/reassembly.pcap")
    expected = tshark_rows(path)
    got, stats, anomalies = leakmon_rows(path)
    differing = {k for k in set(expected) | set(got) if expected.get(k) != got.get(k)}
    assert differing == {7, 26, 35, 39, 85}
    assert all(k not in got for k in differing)
    assert anomalies == ["decoder.ipv4.trunc_pkt"] * 5 and stats.get("decoder.ipv4.trunc_pkt") == 5
