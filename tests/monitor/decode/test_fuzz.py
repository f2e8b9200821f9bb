"""Hypothesis: random and mutated frames never make the decoder raise, and its caps hold."""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.capture.pcapfile import read_capture
from monitor.config import Config, DefragConfig
from monitor.decode import Decoder
from monitor.model import RawPacket
from monitor.stats import Stats
from tests.conftest import PCAPS

LINKTYPES = [0, 1, 101, 108, 113, 228, 229, 276]
SEEDS = [r.data for name in ("decode-tunnels.pcap", "decode-frag-evasion.pcap")
         for r in read_capture(PCAPS / name, stats=Stats())]
MEMCAP = 64 * 1024


def _decoder() -> tuple[Decoder, Stats, list[str]]:
    cfg = dataclasses.replace(Config(), defrag=DefragConfig(memcap=MEMCAP, timeout=30.0, max_fragments=16))
    stats = Stats()
    kinds: list[str] = []
    return Decoder(cfg, stats, lambda kind, detail, raw: kinds.append(kind)), stats, kinds


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    frame = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        pos = draw(st.integers(0, len(frame) - 1))
        frame[pos] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(frame)))
    return bytes(frame[: cut or len(frame)])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=st.lists(st.tuples(st.sampled_from(LINKTYPES), st.binary(max_size=200) | mutated()), max_size=30))
def test_decode_never_raises(frames: list[tuple[int, bytes]]) -> None:
    dec, stats, kinds = _decoder()
    for i, (linktype, data) in enumerate(frames):
        pkt = dec.decode(RawPacket(float(i), linktype, data, i + 1, "", len(data)))
        if pkt is not None:
            assert pkt.proto in (6, 17) and len(pkt.src) in (4, 16) and len(pkt.payload) <= 65535
        assert dec.defrag.used <= MEMCAP
    assert "decoder.internal_error" not in kinds


@settings(max_examples=200, deadline=None)
@given(ids=st.lists(st.integers(0, 2**16 - 1), min_size=1, max_size=300), size=st.integers(8, 1400))
def test_fragment_flood_stays_under_memcap(ids: list[int], size: int) -> None:
    from scapy.layers.inet import IP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw

    dec, stats, _ = _decoder()
    size -= size % 8
    for i, ident in enumerate(ids):
        frame = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2", id=ident, proto=17, flags="MF", frag=i % 50)
                      / Raw(b"f" * size))
        assert dec.decode(RawPacket(float(i) / 100, 1, frame, i + 1, "", len(frame))) is None
        assert dec.defrag.used <= MEMCAP
    dec.expire(10_000.0)
    assert len(dec.defrag) == 0 and dec.defrag.used == 0
