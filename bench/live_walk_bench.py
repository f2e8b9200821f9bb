#!/usr/bin/env python3
"""Live capture's per-frame cost without a network: crafted TPACKET_V3 blocks, CPU seconds.

The first ``--frames`` Ethernet frames of a capture are laid out in an anonymous mmap as the
kernel lays out a V3 ring, then pushed through a fresh pipeline three ways (best of
``--repeat`` each, ``time.process_time``):

* ``iterate``: LiveCapture's iteration, a RawPacket per frame into Pipeline.process (HEAD's loop);
* ``walk``: LiveCapture.walk's block walk, frames offered in the ring to Pipeline.process_frame;
* ``walk-copy``: the same, after copying each block once into bytes (the alternative to handing
  the mmap itself to process_frame).

    python3 bench/live_walk_bench.py --capture bench/data/m200.pcap --frames 60000
"""

from __future__ import annotations

import argparse
import mmap
import struct
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monitor.capture.afpacket import TP_STATUS_USER, LiveCapture  # noqa: E402
from monitor.capture.pcapfile import read_capture  # noqa: E402
from monitor.config import Config, load_config  # noqa: E402
from monitor.model import LINKTYPE_ETHERNET  # noqa: E402
from monitor.pipeline import Pipeline  # noqa: E402
from monitor.stats import Stats  # noqa: E402

BLOCK = 1 << 22
MAC = 82


class Ring:
    def __init__(self, mm: mmap.mmap, blocks: int) -> None:
        self.ring, self.blocks, self.block_size = mm, blocks, BLOCK
        self.next_block, self.iface, self.is_loopback = 0, "bench0", False


def layout(frames: list[Any]) -> tuple[bytes, int]:
    """The ring's bytes (all blocks handed to user space) and the block count."""
    blocks: list[list[Any]] = [[]]
    used = 48
    for raw in frames:
        size = (MAC + len(raw.data) + 15) & ~15
        if used + size >= BLOCK:
            blocks.append([])
            used = 48
        blocks[-1].append(raw)
        used += size
    buf = bytearray(BLOCK * len(blocks))
    for b, blk in enumerate(blocks):
        off = b * BLOCK + 48
        for i, raw in enumerate(blk):
            size = (MAC + len(raw.data) + 15) & ~15
            sec = int(raw.ts)
            struct.pack_into("=IIIIIIHHIIH", buf, off, 0 if i == len(blk) - 1 else size, sec,
                             int((raw.ts - sec) * 1e9), len(raw.data), raw.wire_len or len(raw.data), TP_STATUS_USER,
                             MAC, MAC + 14, 0, 0, 0)
            buf[off + MAC:off + MAC + len(raw.data)] = raw.data
            off += size
        struct.pack_into("=IIIII", buf, b * BLOCK, 3, 0, TP_STATUS_USER, len(blk), 48)
    return bytes(buf), len(blocks)


def run(how: str, image: bytes, nblocks: int, cfg: Config) -> float:
    mm = mmap.mmap(-1, len(image))
    mm[:] = image
    ring = Ring(mm, nblocks)
    cap = LiveCapture.__new__(LiveCapture)
    cap.snaplen, cap._cnt, cap._stopping, cap.rings = 262144, 0, False, [ring]  # type: ignore[list-item]
    pipeline = Pipeline(cfg, stats=Stats(), eve_path="", replay=True, evidence=False)
    c0 = time.process_time()
    if how == "iterate":
        process = pipeline.process
        for raw in cap._drain(ring):  # type: ignore[arg-type]
            process(raw)
    elif how == "walk":
        for _ in range(nblocks):
            cap._walk_block(ring, pipeline.process_frame, pipeline.process_decoded,  # type: ignore[arg-type]
                            pipeline.process)
    else:
        frame = pipeline.process_frame
        for b in range(nblocks):  # the same walk over a bytes copy of each block
            copy = mm[b * BLOCK:(b + 1) * BLOCK]

            def in_copy(buf: Any, start: int, *rest: Any, _b: int = b, _copy: bytes = copy) -> bool:
                return frame(_copy, start - _b * BLOCK, *rest)

            cap._walk_block(ring, in_copy, pipeline.process_decoded, pipeline.process)  # type: ignore[arg-type]
    pipeline.finish()
    return time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--capture", default="bench/data/m200.pcap")
    ap.add_argument("--config", default="bench/bench.yaml")
    ap.add_argument("--frames", type=int, default=60000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    frames = []
    for raw in read_capture(args.capture, stats=Stats()):
        if raw.linktype == LINKTYPE_ETHERNET:
            frames.append(raw)
            if len(frames) >= args.frames:
                break
    image, nblocks = layout(frames)
    cfg = load_config(args.config)
    for how in ("iterate", "walk", "walk-copy"):
        best = min(run(how, image, nblocks, cfg) for _ in range(args.repeat))
        print(f"{how:10s} {best:.3f} s CPU for {len(frames)} frames ({best / len(frames) * 1e6:.2f} us/frame)")


if __name__ == "__main__":
    main()
