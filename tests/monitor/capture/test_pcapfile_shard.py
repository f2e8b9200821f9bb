"""read_capture(shard=(i, n)): the shards partition the unsharded read exactly as shard_of says.

Every frame of the unsharded read lands in exactly one shard, the one ``shard_of`` names,
with the same pcap_cnt and content; numbering over the whole file survives (``last_cnt``),
and reader counters count the whole file in every shard. Run on pcap, pcapng, gzip, BPF,
damaged and generated captures (VLAN, IPv6, non-IP, cooked and raw link types, short frames).
"""

from __future__ import annotations

import gzip
import random
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.capture.pcapfile import read_capture
from monitor.model import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_NULL, LINKTYPE_RAW
from monitor.shard import shard_at, shard_of, v4_pair_shard
from monitor.stats import Stats
from tests.conftest import PCAPS


def _key(raw) -> tuple:
    return (raw.pcap_cnt, raw.ts, raw.linktype, raw.data, raw.iface, raw.wire_len)


def _check_partition(path: Path, n: int, **kw) -> list:
    whole_stats = Stats()
    whole = list(read_capture(path, stats=whole_stats, **kw))
    union = []
    for index in range(n):
        stats = Stats()
        capture = read_capture(path, stats=stats, shard=(index, n), **kw)
        got = list(capture)
        assert all(shard_of(raw.data, raw.linktype, n) == index for raw in got)
        union.extend(got)
        # The whole file's numbering and reader counters, whatever the shard.
        assert capture.last_cnt == (whole[-1].pcap_cnt if whole else kw.get("start_cnt", 0))
        assert dict(stats.counters) == dict(whole_stats.counters)
    assert sorted(map(_key, union)) == list(map(_key, whole))
    return whole


COMMITTED = sorted(p for p in PCAPS.iterdir() if p.suffix in (".pcap", ".pcapng"))


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.name)
@pytest.mark.parametrize("n", [2, 3])
def test_committed_captures_partition(path, n):
    assert _check_partition(path, n)


def test_bpf_numbering_then_shards():
    whole = _check_partition(PCAPS / "decode-tunnels.pcap", 2, bpf="tcp", start_cnt=100)
    assert whole and whole[0].pcap_cnt == 101


def test_gzip_and_damaged(tmp_path):
    data = (PCAPS / "sample-leak-http.pcap").read_bytes()
    gz = tmp_path / "s.pcap.gz"
    gz.write_bytes(gzip.compress(data))
    _check_partition(gz, 2, start_cnt=7)
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[:-10])  # the last record is cut short: capture.pcap.truncated
    whole = _check_partition(cut, 2)
    assert whole


def test_one_shard_is_the_whole_read():
    path = PCAPS / "sample-leak-http.pcap"
    assert list(map(_key, read_capture(path, stats=Stats(), shard=(0, 1)))) == \
        list(map(_key, read_capture(path, stats=Stats())))


def test_bad_shard_rejected():
    with pytest.raises(ValueError):
        read_capture(PCAPS / "sample-leak-http.pcap", stats=Stats(), shard=(2, 2))


# ------------------------------------------------------------------ generated frames

def _ipv4(src: bytes, dst: bytes) -> bytes:
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 1, 0, 64, 6, 0, src, dst) + bytes(20)


def _ipv6(src: bytes, dst: bytes) -> bytes:
    return struct.pack("!IHBB16s16s", 0x60000000, 20, 6, 64, src, dst) + bytes(20)


frame = st.one_of(
    # Ethernet, 0-2 VLAN tags, IPv4/IPv6/other, possibly cut short.
    st.tuples(st.just(LINKTYPE_ETHERNET), st.integers(0, 2), st.sampled_from([0x0800, 0x86DD, 0x0806]),
              st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16), st.integers(0, 80)),
    st.tuples(st.sampled_from([LINKTYPE_RAW, LINKTYPE_NULL, LINKTYPE_LINUX_SLL]), st.just(0),
              st.sampled_from([0x0800, 0x86DD]), st.binary(min_size=16, max_size=16),
              st.binary(min_size=16, max_size=16), st.integers(0, 80)),
)


def _build(linktype: int, vlans: int, etype: int, a: bytes, b: bytes, cut: int) -> bytes:
    ip = _ipv4(a[:4], b[:4]) if etype == 0x0800 else _ipv6(a, b) if etype == 0x86DD else bytes(28)
    if linktype == LINKTYPE_ETHERNET:
        tags = b"".join(struct.pack("!HH", 0x8100, 5) for _ in range(vlans))
        data = bytes(12) + tags + struct.pack("!H", etype) + ip
    elif linktype == LINKTYPE_NULL:
        data = struct.pack("<I", 2 if etype == 0x0800 else 30) + ip
    elif linktype == LINKTYPE_LINUX_SLL:
        data = bytes(14) + struct.pack("!H", etype) + ip
    else:
        data = ip
    return data[:max(1, len(data) - cut)] if cut < 60 else data


def _pcap(linktype: int, frames: list[bytes]) -> bytes:
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)]
    for i, f in enumerate(frames):
        out.append(struct.pack("<IIII", 1_700_000_000 + i, i, len(f), len(f)) + f)
    return b"".join(out)


@settings(max_examples=80, deadline=None)
@given(st.lists(frame, min_size=1, max_size=30), st.integers(2, 4))
def test_generated_frames_partition(tmp_path_factory, frames, n):
    linktype = frames[0][0]
    built = [_build(linktype, *f[1:]) for f in frames]
    path = tmp_path_factory.mktemp("shard") / "gen.pcap"
    path.write_bytes(_pcap(linktype, built))
    _check_partition(path, n)


def test_shard_at_reads_in_place():
    rng = random.Random(11)
    for _ in range(300):
        data = _build(LINKTYPE_ETHERNET, rng.randrange(3), rng.choice([0x0800, 0x86DD]), rng.randbytes(16),
                      rng.randbytes(16), rng.randrange(70))
        pad = rng.randbytes(rng.randrange(8))
        buf = pad + data + rng.randbytes(rng.randrange(8))
        for n in (2, 3, 5):
            assert shard_at(buf, len(pad), len(data), LINKTYPE_ETHERNET, n) == shard_of(data, LINKTYPE_ETHERNET, n)


def _pcapng(frames: list[bytes]) -> bytes:
    """One section, one Ethernet interface, an Enhanced Packet Block per frame."""
    shb = struct.pack("<IIIHHq", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1) + struct.pack("<I", 28)
    idb = struct.pack("<IIHHII", 1, 20, LINKTYPE_ETHERNET, 0, 65535, 20)
    out = [shb, idb]
    for i, f in enumerate(frames):
        body = f + bytes(-len(f) % 4)
        blen = 32 + len(body)
        out.append(struct.pack("<IIIIIII", 6, blen, 0, 0, i, len(f), len(f)) + body + struct.pack("<I", blen))
    return b"".join(out)


def test_inline_ipv4_test_agrees_with_shard_of(tmp_path):
    """The reader's inline test for untagged Ethernet + IPv4 (the two-worker parity and the other
    counts' hash): many address pairs, every IP version nibble and IHL behind EtherType 0x0800,
    frames cut around the 34 bytes the inline test reads, in pcap and pcapng."""
    rng = random.Random(5)
    frames = []
    for _ in range(3000):
        vhl = rng.choice([0x45, 0x45, 0x46, 0x4F, 0x65, 0x35, 0x05, 0xF5])
        ip = struct.pack("!BBHHHBBH4s4s", vhl, 0, 40, 1, 0, 64, 6, 0, rng.randbytes(4), rng.randbytes(4))
        data = bytes(12) + struct.pack("!H", rng.choice([0x0800, 0x0800, 0x0800, 0x86DD, 0x0806])) + ip + bytes(20)
        frames.append(data[:rng.choice([len(data), 33, 34, 35, 30, 14])])
    for name, content in (("gen.pcap", _pcap(LINKTYPE_ETHERNET, frames)), ("gen.pcapng", _pcapng(frames))):
        path = tmp_path / name
        path.write_bytes(content)
        for n in (2, 3, 4, 5):
            whole = _check_partition(path, n)
            assert len(whole) == len(frames)


def test_v4_pair_shard_is_shard_of():
    rng = random.Random(9)
    for _ in range(5000):
        a, b = rng.randbytes(4), rng.randbytes(4)
        data = bytes(12) + b"\x08\x00" + _ipv4(a, b)
        pair = int.from_bytes(a + b, "big")
        for n in (2, 3, 4, 5, 7, 8, 16):
            assert v4_pair_shard(pair, n) == shard_of(data, LINKTYPE_ETHERNET, n)
