"""LiveCapture.walk (frames offered in the ring to Pipeline.process_frame) must be invisible.

Crafted TPACKET_V3 blocks in an anonymous mmap (laid out as the kernel lays them out: block
descriptor, tpacket3_hdr chain, sockaddr_ll, frame at tp_mac) go through two identical
pipelines: once as iteration hands them over (a RawPacket per frame into Pipeline.process),
once through walk's block walk. Both must hand the same bytes to the parsers in the same order
and produce the same events and counters, with the same pcap_cnt numbering, on the committed
captures' Ethernet frames, with tags stripped into the descriptor, snaplen truncation, zero
timestamps and loopback's outgoing copies mixed in. Every block must go back to the kernel.
"""

from __future__ import annotations

import mmap
import random
import struct
from pathlib import Path
from typing import Any

import pytest

from monitor.capture.afpacket import (
    _BLOCK_STATUS,
    _SLL_PKTTYPE,
    PACKET_OUTGOING,
    TP_STATUS_USER,
    TP_STATUS_VLAN_TPID_VALID,
    TP_STATUS_VLAN_VALID,
    LiveCapture,
)
from monitor.capture.pcapfile import read_capture
from monitor.config import Config
from monitor.events import Event
from monitor.flow.table import FlowIds
from monitor.model import LINKTYPE_ETHERNET, RawPacket
from monitor.pipeline import Pipeline
from monitor.stats import Stats
from tests.monitor.test_pipeline_fastpath import observed

ROOT = Path(__file__).resolve().parents[3]
BLOCK_SIZE = 1 << 17
_MAC_OFF = 82  # where the kernel puts an Ethernet frame after a V3 header (net offset aligned)


class _FakeRing:
    """What LiveCapture reads of a _Ring, over an anonymous mmap instead of a socket's ring."""

    def __init__(self, blocks: int, loopback: bool) -> None:
        self.iface = "lm-test0"
        self.block_size = BLOCK_SIZE
        self.blocks = blocks
        self.next_block = 0
        self.is_loopback = loopback
        self.ring = mmap.mmap(-1, BLOCK_SIZE * blocks)


# One frame as the kernel describes it: (frame bytes in the ring, wire len, sec, nsec, status,
# vlan tci, vlan tpid, outgoing).
Desc = tuple[bytes, int, int, int, int, int, int, bool]


def _fill(ring: _FakeRing, blocks: list[list[Desc]]) -> None:
    mm = ring.ring
    for b, frames in enumerate(blocks):
        base = b * BLOCK_SIZE
        off = base + 48  # the first packet after the block descriptor
        for i, (data, wire, sec, nsec, status, tci, tpid, outgoing) in enumerate(frames):
            size = (_MAC_OFF + len(data) + 15) & ~15
            nxt = 0 if i == len(frames) - 1 else size
            mm[off:off + 38] = struct.pack("=IIIIIIHHIIH", nxt, sec, nsec, len(data), wire, status,
                                           _MAC_OFF, _MAC_OFF + 14, 0, tci, tpid)
            mm[off + _SLL_PKTTYPE] = PACKET_OUTGOING if outgoing else 0
            mm[off + _MAC_OFF:off + _MAC_OFF + len(data)] = data
            off += size
            assert off < base + BLOCK_SIZE
        mm[base:base + 20] = struct.pack("=IIIII", 3, 0, TP_STATUS_USER, len(frames), 48)


def _capture(ring: _FakeRing, snaplen: int) -> LiveCapture:
    cap = LiveCapture.__new__(LiveCapture)
    cap.stats = Stats()
    cap.snaplen = snaplen
    cap.rings = [ring]  # type: ignore[list-item]
    cap._stopping = False
    cap._cnt = 0
    return cap


class RecordingPipeline(Pipeline):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.handed: list[tuple[int, int, int, bytes, float]] = []
        self.decoded_cnts: list[int] = []

    def _hand_on(self, flow: Any, direction: int, data: bytes, ts: float) -> None:
        # Where in-order bytes reach the parser and the stream scan, however they got there
        # (straight from on_data, or collected into a stream chunk, which the fast path may
        # extend without calling on_data).
        assert type(data) is bytes  # nothing may keep a view of the ring
        self.handed.append((flow.flow_id, direction, self.pcap_cnt, data, ts))
        super()._hand_on(flow, direction, data, ts)


def _pipeline() -> tuple[RecordingPipeline, Stats, list[Event]]:
    stats = Stats()
    pipeline = RecordingPipeline(Config(), stats=stats, eve_path="", replay=True, evidence=False)
    pipeline.flows._ids = FlowIds(salt=12345)  # the same flow ids in both runs
    events: list[Event] = []
    pipeline.bus.subscribe("recorder", events.append)
    return pipeline, stats, events


def _outcome(pipeline: RecordingPipeline, stats: Stats, events: list[Event]) -> tuple:
    pipeline.finish()
    seen, counters = observed(events, stats)
    return pipeline.handed, seen, counters, pipeline.pcap_cnt


def _via_iteration(blocks: list[list[Desc]], snaplen: int, loopback: bool) -> tuple:
    ring = _FakeRing(len(blocks), loopback)
    _fill(ring, blocks)
    pipeline, stats, events = _pipeline()
    cap = _capture(ring, snaplen)
    raws: list[RawPacket] = list(cap._drain(ring))  # type: ignore[arg-type]
    for raw in raws:
        pipeline.process(raw)
    return _outcome(pipeline, stats, events), [r.pcap_cnt for r in raws]


def _via_walk(blocks: list[list[Desc]], snaplen: int, loopback: bool) -> tuple:
    ring = _FakeRing(len(blocks), loopback)
    _fill(ring, blocks)
    pipeline, stats, events = _pipeline()
    cap = _capture(ring, snaplen)
    whole: list[int] = []

    def process(raw: RawPacket) -> None:
        whole.append(raw.pcap_cnt)
        pipeline.process(raw)

    decoded: list[int] = []

    def process_decoded(raw: RawPacket) -> None:
        decoded.append(raw.pcap_cnt)
        pipeline.process_decoded(raw)

    walked = [cap._walk_block(ring, pipeline.process_frame, process_decoded, process)  # type: ignore[arg-type]
              for _ in blocks]
    assert walked == [len(b) for b in blocks]
    assert cap._walk_block(ring, pipeline.process_frame, process_decoded, process) == -1  # type: ignore[arg-type]
    pipeline.fast_taken = pipeline.pcap_cnt - len(decoded) - len(whole)  # type: ignore[attr-defined]
    for b in range(len(blocks)):  # every block handed back to the kernel
        assert struct.unpack_from("=I", ring.ring, b * BLOCK_SIZE + _BLOCK_STATUS)[0] == 0
    return _outcome(pipeline, stats, events) + (pipeline.fast_taken,), whole  # type: ignore[attr-defined]


def _descs(frames: list[RawPacket], rng: random.Random, loopback: bool) -> list[Desc]:
    out: list[Desc] = []
    for raw in frames:
        data, wire = raw.data, raw.wire_len or len(raw.data)
        sec, nsec = int(raw.ts), int(round((raw.ts % 1) * 1e9)) % 1_000_000_000
        status, tci, tpid = TP_STATUS_USER, 0, 0
        roll = rng.random()
        if roll < 0.08 and len(data) >= 18 and data[12:14] == b"\x81\x00":
            # The NIC stripped a real tag: walk must rebuild it on the full path.
            status |= TP_STATUS_VLAN_VALID
            tci = struct.unpack("!H", data[14:16])[0]
            data, wire = data[:12] + data[16:], wire - 4
        elif roll < 0.12:
            status |= TP_STATUS_VLAN_VALID | (TP_STATUS_VLAN_TPID_VALID if rng.random() < 0.5 else 0)
            tci, tpid = rng.randrange(1 << 12), rng.choice([0, 0x88A8])
        elif roll < 0.14:
            sec = nsec = 0  # no timestamp
        elif roll < 0.18:
            wire += rng.randrange(1, 3000)  # a capture cut short by the sender's snaplen
        elif roll < 0.20:
            wire = rng.randrange(0, len(data) + 1)  # a descriptor claiming less than it holds
        if loopback and rng.random() < 0.5:
            out.append((data, wire, sec, nsec, status, tci, tpid, True))  # lo's outgoing copy
        out.append((data, wire, sec, nsec, status, tci, tpid, False))
    return out


def _ethernet_frames(path: Path) -> list[RawPacket]:
    return [r for r in read_capture(path, stats=Stats()) if r.linktype == LINKTYPE_ETHERNET]


COMMITTED = sorted(p for p in (ROOT / "pcaps").iterdir() if p.suffix in (".pcap", ".pcapng"))


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.name)
@pytest.mark.parametrize(("seed", "snaplen", "loopback"), [(1, 262144, False), (2, 262144, True), (3, 120, False)])
def test_walk_same_as_iteration(path: Path, seed: int, snaplen: int, loopback: bool) -> None:
    frames = _ethernet_frames(path)
    if not frames:
        pytest.skip("no Ethernet frames")
    rng = random.Random(seed)
    descs = _descs(frames, rng, loopback)
    blocks: list[list[Desc]] = []
    block: list[Desc] = []
    used = 48
    for d in descs:
        size = (_MAC_OFF + len(d[0]) + 15) & ~15
        if block and (used + size >= BLOCK_SIZE or rng.random() < 0.02):
            blocks.append(block)
            block, used = [], 48
        block.append(d)
        used += size
    blocks.append(block)
    (ref, ref_cnts), (got, whole_cnts) = _via_iteration(blocks, snaplen, loopback), _via_walk(blocks, snaplen, loopback)
    assert got[0] == ref[0]  # bytes handed to the parsers
    assert got[1] == ref[1]  # events
    assert got[2] == ref[2]  # counters (iface packets and bytes included)
    assert got[3] == ref[3] == len(ref_cnts)  # pcap_cnt numbering
    assert ref_cnts == list(range(1, len(ref_cnts) + 1))
    stripped = sum(1 for d in descs if d[4] & TP_STATUS_VLAN_VALID and not (loopback and d[7]))
    zero_ts = sum(1 for d in descs if not d[2] and not d[3] and not d[4] & TP_STATUS_VLAN_VALID
                  and not (loopback and d[7]))
    assert len(whole_cnts) == stripped + zero_ts  # exactly those took the RawPacket-first path
    if path.name == "sample-leak-http.pcap" and snaplen > 1500:
        assert sum(len(h[3]) for h in ref[0]) > 2000  # the check saw real streams
        assert got[4] > 0  # and frames that stayed in the ring (no RawPacket)
