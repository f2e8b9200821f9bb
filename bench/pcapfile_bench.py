#!/usr/bin/env python3
"""The capture reader's own cost (pcap and pcapng), without the pipeline: CPU seconds.

For each capture, best of ``--repeat`` (``time.process_time``, so other load disturbs less):

* ``iterate``: ``for raw in read_capture(path)`` (a RawPacket per frame);
* ``walk``: ``Capture.replay`` with a frame handler that takes every frame in place (the
  replay driver's record walk with a free pipeline: what the reader itself costs per frame);
* ``walk-decline``: the same with a handler that declines every frame (a RawPacket each,
  handed to the fallback: the walk's worst case).

A capture for which ``read_capture`` has no walk (BPF, progress, a non-Ethernet classic pcap)
reports ``walk`` as the iteration handing RawPackets to ``process``.

    editcap -F pcapng bench/data/m200.pcap /tmp/m200.pcapng
    python3 bench/pcapfile_bench.py bench/data/m200.pcap /tmp/m200.pcapng [--repeat 5] [--shard 0/2]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monitor.capture.pcapfile import read_capture  # noqa: E402
from monitor.runner import tune_allocator  # noqa: E402
from monitor.stats import Stats  # noqa: E402


def _accept(buf: Any, start: int, n: int, wire: int, ts: float, cnt: int, iface: str = "",
            linktype: int = 1) -> bool:
    return True


def _decline(buf: Any, start: int, n: int, wire: int, ts: float, cnt: int, iface: str = "",
             linktype: int = 1) -> bool:
    return False


def _ignore(raw: Any) -> None:
    return None


def run(path: str, how: str, shard: tuple[int, int] | None) -> tuple[float, int]:
    """CPU seconds of one pass and the frames it delivered (to the handler or the loop)."""
    seen = [0]

    def count(raw: Any) -> None:
        seen[0] += 1

    capture = read_capture(path, stats=Stats(), shard=shard)
    c0 = time.process_time()
    if how == "iterate":
        for _raw in capture:
            seen[0] += 1
    else:
        frame: Callable[..., bool] = _accept if how == "walk" else _decline
        capture.replay(frame, _ignore, count)
    return time.process_time() - c0, seen[0] or capture.last_cnt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("captures", nargs="+")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--shard", default="", help="i/n: read one --workers shard")
    ap.add_argument("--stages", default="iterate,walk,walk-decline")
    args = ap.parse_args()
    tune_allocator()
    shard = tuple(int(x) for x in args.shard.split("/")) if args.shard else None
    for path in args.captures:
        size = Path(path).stat().st_size
        for how in args.stages.split(","):
            best, frames = min(run(path, how, shard) for _ in range(args.repeat))  # type: ignore[arg-type]
            print(f"{Path(path).name:24} {how:13} {best:7.3f} CPU s  {best / max(frames, 1) * 1e6:6.3f} µs/frame  "
                  f"{size * 8 / best / 1e9:6.2f} Gbps  ({frames} frames)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
