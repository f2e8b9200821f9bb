"""NetSet: membership of packed IPv4/IPv6 addresses in a set of networks."""

from __future__ import annotations

import ipaddress

import pytest

from monitor.flow.netset import NetSet


def packed(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def test_ipv4_prefixes_of_several_lengths():
    ns = NetSet(["10.0.0.0/8", "192.168.10.0/24", "203.0.113.7", "172.16.0.0/12"])
    assert ns.contains(packed("10.255.1.2"))
    assert ns.contains(packed("192.168.10.200"))
    assert not ns.contains(packed("192.168.11.1"))
    assert ns.contains(packed("203.0.113.7"))
    assert not ns.contains(packed("203.0.113.8"))
    assert ns.contains(packed("172.31.255.255"))
    assert not ns.contains(packed("172.32.0.0"))
    assert not ns.contains(packed("11.0.0.1"))


def test_ipv6_and_ipv4_mapped():
    ns = NetSet(["2001:db8:aa::/48", "10.1.0.0/16"])
    assert ns.contains(packed("2001:db8:aa:ffff::1"))
    assert not ns.contains(packed("2001:db8:ab::1"))
    # An IPv4-mapped IPv6 address belongs to the IPv4 network.
    assert ns.contains(packed("::ffff:10.1.2.3"))
    assert not ns.contains(packed("::ffff:10.2.2.3"))
    # IPv4 text never matches an IPv6-only set and vice versa.
    assert not NetSet(["::/0"]).contains(packed("1.2.3.4"))
    assert NetSet(["0.0.0.0/0"]).contains(packed("1.2.3.4"))


def test_host_bits_are_masked_and_empty_set():
    ns = NetSet(["10.1.2.3/16"])  # non-strict: the network is 10.1.0.0/16
    assert ns.contains(packed("10.1.200.1"))
    assert ns.cidrs == ["10.1.0.0/16"]
    empty = NetSet([])
    assert not empty and len(empty) == 0
    assert not empty.contains(packed("10.1.200.1"))
    assert not ns.contains(b"\x01\x02")  # neither 4 nor 16 bytes


def test_bad_entry_raises():
    with pytest.raises(ValueError):
        NetSet(["10.0.0.0/33"])


def test_contains_text():
    ns = NetSet(["fd00::/8"])
    assert ns.contains_text("[fd12::1]")
    assert not ns.contains_text("not-an-address")
