#!/usr/bin/env python3
"""Micro-benchmark of the per-packet core behind the capture reader: ``Pipeline.process_frame``
(numbering, timers, interface counts, fused fast path), ``TcpReassembler.in_order``, the stream
chunks (``on_data`` -> ``_collect`` -> ``_flush_chunk`` -> ``_hand_on``), the full path for
SYN/FIN/new flows and ``_end_flow``, with the parsers and detection replaced by stand-ins that
do nothing (every TCP flow is declared ``http`` at once, so its bytes are collected in chunks).

    python3 bench/packetcore_bench.py bench/data/m50.pcap [--repeat 5]
    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        "$(python3 -c 'import os,sys; print(os.path.realpath(sys.executable))')" \\
        bench/packetcore_bench.py bench/data/m50.pcap --once       # instruction count of one run

Prints the CPU seconds of one replay (best of --repeat, under the sensor's collector settings),
µs per packet, and a digest of what went on (packets, bytes handed on, chunks, flows, flow
events) that must not change when the core is optimised.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from monitor.capture.pcapfile import read_capture  # noqa: E402
from monitor.config import Config  # noqa: E402
from monitor.model import PROTO_TCP, Flow  # noqa: E402
from monitor.pipeline import Pipeline  # noqa: E402
from monitor.runner import sensor_gc  # noqa: E402
from monitor.stats import Stats  # noqa: E402


class _NoDetection:
    """Detection stand-in: every call does nothing."""

    def __getattr__(self, name: str) -> Any:
        return _nothing


def _nothing(*args: Any, **kwargs: Any) -> None:
    return None


class _CountingParser:
    """Parser stand-in: counts what it is fed (one call per handed-on chunk)."""

    name = "http"

    def __init__(self, tally: list[int]) -> None:
        self.tally = tally

    def feed(self, direction: int, data: bytes, ts: float) -> None:
        tally = self.tally
        tally[0] += 1
        tally[1] += len(data)

    def gap(self, direction: int, length: int, ts: float) -> None:
        pass

    def close(self, ts: float) -> None:
        pass


class _CorePipeline(Pipeline):
    """The real pipeline; every TCP flow's parser is a counting stand-in that declares ``http``."""

    tally: list[int]

    def _flow_started(self, flow: Flow, raw: Any) -> None:
        flow.iface = raw.iface
        if flow.proto == PROTO_TCP:
            flow.app_proto = "http"
            flow.parser = _CountingParser(self.tally)


def run(path: str) -> dict[str, int]:
    stats = Stats()
    flows: list[int] = [0]

    def count_flow_event(event: Any) -> None:
        if event.event_type == "flow":
            flows[0] += 1

    pipeline = _CorePipeline(Config(), stats=stats, eve_path="", detection=_NoDetection(), replay=True,
                             evidence=False)
    pipeline.tally = [0, 0]
    pipeline.bus.subscribe("count", count_flow_event)
    pipeline.replay_capture(read_capture(path, stats=stats))
    pipeline.finish()
    return {"packets": pipeline.packets, "bytes": pipeline.bytes, "parser_calls": pipeline.tally[0],
            "handed_on": pipeline.tally[1], "flows_created": int(stats.get("flow.created")),
            "flow_events": flows[0]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("capture", nargs="?", default=str(ROOT / "bench" / "data" / "m50.pcap"))
    ap.add_argument("--repeat", type=int, default=5, help="runs; the best CPU time is reported")
    ap.add_argument("--once", action="store_true", help="one run, digest only (for callgrind)")
    args = ap.parse_args(argv)
    if args.once:
        with sensor_gc():
            print(run(args.capture))
        return 0
    best = float("inf")
    digest: dict[str, int] = {}
    for _ in range(args.repeat):
        with sensor_gc():
            t0 = time.process_time()
            digest = run(args.capture)
            best = min(best, time.process_time() - t0)
    print(digest)
    print(f"packet core: {best:.3f} CPU s best of {args.repeat}, "
          f"{1e6 * best / max(1, digest['packets']):.2f} µs/packet")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
