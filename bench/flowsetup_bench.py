#!/usr/bin/env python3
"""Micro-benchmark of the fixed per-flow costs: creating a flow, detecting its protocol, ending it.

    python3 bench/flowsetup_bench.py [--capture bench/data/f20k.pcap] [--repeat 5] [--stage table ...]

Stages (CPU seconds of this process, best of --repeat, reported per flow of the capture):

* ``table``: every decoded packet of the capture through ``FlowTable.lookup`` (flow creation,
  state changes, fast index, heap), then ``flush()``; the packets are decoded before timing.
* ``detect``: per flow, a fresh context and ``registry.new_tcp_parser`` fed the flow's first
  client and server payloads, then closed, against the same work on ``HttpParser`` directly
  (``http-direct``): the difference is what protocol detection adds to a flow.
* ``community_id``: ``flow_community_id`` of every flow.
* ``pipeline``: the whole sensor path (``Pipeline.process`` of every packet, then ``finish()``:
  parsers, detection, the ``flow`` events, EVE to /dev/null) with ``bench/bench.yaml``.

Deterministic: the input is the committed-by-generator capture (``bench/gen.py flows``); nothing
random is drawn here.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from appbench import BenchContext, best  # noqa: E402

from monitor.applayer import registry  # noqa: E402
from monitor.applayer.http1 import HttpParser  # noqa: E402
from monitor.capture.pcapfile import read_capture  # noqa: E402
from monitor.config import Config, load_config  # noqa: E402
from monitor.decode import Decoder  # noqa: E402
from monitor.flow.community_id import flow_community_id  # noqa: E402
from monitor.flow.table import FlowTable  # noqa: E402
from monitor.model import TO_CLIENT, TO_SERVER, Flow, Packet, RawPacket  # noqa: E402
from monitor.runner import sensor_gc  # noqa: E402
from monitor.stats import Stats  # noqa: E402


def decode_all(raws: list[RawPacket], cfg: Config) -> list[Packet]:
    decoder = Decoder(cfg, Stats(), lambda kind, detail, raw: None)
    return [p for p in map(decoder.decode, raws) if p is not None]


def first_payloads(packets: list[Packet], cfg: Config) -> list[tuple[Flow, bytes, bytes]]:
    """(flow, first client payload, first server payload) of every flow with both."""
    table = FlowTable(cfg, Stats())
    seen: dict[int, list[Any]] = {}
    for pkt in packets:
        flow, direction, _ = table.lookup(pkt)
        entry = seen.setdefault(flow.flow_id, [flow, b"", b""])
        if pkt.payload and not entry[1 + direction]:
            entry[1 + direction] = pkt.payload
    return [(f, c, s) for f, c, s in seen.values() if c and s]


def bench_table(packets: list[Packet], cfg: Config, repeat: int) -> float:
    def run() -> None:
        table = FlowTable(cfg, Stats())
        lookup = table.lookup
        for pkt in packets:
            lookup(pkt)
        table.flush()

    return best(run, repeat, sensor_gc)


class FlowBenchContext(BenchContext):
    """BenchContext (no detection, counting files) on a given flow, without building a Config each time."""

    def __init__(self, flow: Flow, config: Config, stats: Stats) -> None:
        self.real_files = False
        self.flow = flow
        self.config = config
        self.stats = stats
        self.files = []
        self.inspected = 0
        self.events = 0


def bench_detect(flows: list[tuple[Flow, bytes, bytes]], cfg: Config, repeat: int, direct: bool) -> float:
    stats = Stats()

    def run() -> None:
        for flow, cli, srv in flows:
            ctx = FlowBenchContext(flow, cfg, stats)
            parser = HttpParser(ctx) if direct else registry.new_tcp_parser(ctx)
            flow.parser = parser
            parser.feed(TO_SERVER, cli, 1.0)
            parser = flow.parser or parser  # detection may have put the protocol parser there
            parser.feed(TO_CLIENT, srv, 1.0)
            parser.close(2.0)
            flow.parser = None

    return best(run, repeat, sensor_gc)


def bench_community_id(flows: list[tuple[Flow, bytes, bytes]], repeat: int) -> float:
    only = [f for f, _, _ in flows]

    def run() -> None:
        for flow in only:
            flow_community_id(flow)

    return best(run, repeat, sensor_gc)


def bench_pipeline(raws: list[RawPacket], cfg: Config, repeat: int) -> float:
    from monitor.pipeline import Pipeline

    best = float("inf")
    for _ in range(repeat):
        pipe = Pipeline(cfg, eve_path=os.devnull, replay=True)
        gc.collect()
        with sensor_gc():
            t = time.process_time()
            process = pipe.process
            for raw in raws:
                process(raw)
            pipe.finish()
            best = min(best, time.process_time() - t)
    return best


STAGES = ("table", "detect", "community_id", "pipeline")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--capture", default=str(ROOT / "bench" / "data" / "f20k.pcap"))
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--stage", action="append", choices=STAGES, help="run only these stages (repeatable)")
    args = ap.parse_args(argv)
    stages = args.stage or list(STAGES)
    cfg = load_config(ROOT / "bench" / "bench.yaml")
    raws = list(read_capture(args.capture, stats=Stats()))
    packets = decode_all(raws, cfg)
    flows = first_payloads(packets, cfg)
    nflows = len({(p.proto, *sorted(((p.src, p.sport), (p.dst, p.dport)))) for p in packets})
    print(f"{args.capture}: {len(raws)} packets, {nflows} flows ({len(flows)} with payload both ways); "
          f"CPU best of {args.repeat}")
    if "table" in stages:
        s = bench_table(packets, cfg, args.repeat)
        print(f"  table          {s:7.3f} s  {s / nflows * 1e6:7.2f} µs/flow  ({s / len(packets) * 1e6:.2f} µs/packet)")
    if "detect" in stages and flows:
        s = bench_detect(flows, cfg, args.repeat, direct=False)
        d = bench_detect(flows, cfg, args.repeat, direct=True)
        n = len(flows)
        print(f"  detect         {s:7.3f} s  {s / n * 1e6:7.2f} µs/flow")
        print(f"  http-direct    {d:7.3f} s  {d / n * 1e6:7.2f} µs/flow  (detection adds {(s - d) / n * 1e6:.2f} µs/flow)")
    if "community_id" in stages and flows:
        s = bench_community_id(flows, args.repeat)
        print(f"  community_id   {s:7.3f} s  {s / len(flows) * 1e6:7.2f} µs/flow")
    if "pipeline" in stages:
        s = bench_pipeline(raws, cfg, max(1, min(args.repeat, 3)))
        print(f"  pipeline       {s:7.3f} s  {s / nflows * 1e6:7.2f} µs/flow  ({s / len(raws) * 1e6:.2f} µs/packet)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
