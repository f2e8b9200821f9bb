"""Sharding for --workers is symmetric: both directions of a flow land on the same worker."""

from __future__ import annotations

import random
import struct

from monitor.model import LINKTYPE_ETHERNET, LINKTYPE_IPV6, LINKTYPE_NULL
from monitor.shard import shard_of


def eth_ipv4(src: bytes, dst: bytes, vlans: int = 0) -> bytes:
    tags = b"".join(struct.pack("!HH", 0x8100, 100 + i) for i in range(vlans))
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 1, 0, 64, 6, 0, src, dst) + b"\0" * 20
    return b"\x02" * 6 + b"\x04" * 6 + tags + b"\x08\x00" + ip


def test_ipv4_symmetric_and_spread():
    rng = random.Random(7)
    seen = set()
    for _ in range(2000):
        a, b = rng.randbytes(4), rng.randbytes(4)
        for vl in (0, 2):
            s1 = shard_of(eth_ipv4(a, b, vl), LINKTYPE_ETHERNET, 4)
            assert s1 == shard_of(eth_ipv4(b, a, vl), LINKTYPE_ETHERNET, 4)
            seen.add(s1)
    assert seen == {0, 1, 2, 3}


def test_ipv6_raw_and_null_symmetric():
    rng = random.Random(3)
    for _ in range(500):
        a, b = rng.randbytes(16), rng.randbytes(16)
        pkt = lambda s, d: struct.pack("!IHBB", 0x60000000, 20, 6, 64) + s + d + b"\0" * 20  # noqa: E731
        assert shard_of(pkt(a, b), LINKTYPE_IPV6, 2) == shard_of(pkt(b, a), LINKTYPE_IPV6, 2)
        null = struct.pack("<I", 30)
        assert shard_of(null + pkt(a, b), LINKTYPE_NULL, 2) == shard_of(null + pkt(b, a), LINKTYPE_NULL, 2)


def test_garbage_goes_to_worker_zero():
    assert shard_of(b"", LINKTYPE_ETHERNET, 2) == 0
    assert shard_of(b"\x00" * 13, LINKTYPE_ETHERNET, 2) == 0
    assert shard_of(b"\x00" * 60, 9999, 2) == 0
