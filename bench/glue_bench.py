#!/usr/bin/env python3
"""Micro-benchmark of the pipeline glue: stats counters, EVE records, the event bus and its sinks,
and the per-flow cost of ending a flow.

    python3 bench/glue_bench.py [--flows 50000] [--capture bench/data/f20k.pcap] [--repeat 3]
    python3 bench/glue_bench.py --flows 100000 --write-synflood bench/data/syn100k.pcap

Sections (CPU time of this process, best of --repeat, so that other load disturbs less):

* ``micro``: ``Stats.incr`` plain / labelled / pre-bound handle, ``format_ts`` over timestamps
  spread over many seconds (flow start/end/event times), ``dumps`` of a flow record.
* ``synflood``: ``--flows`` SYN-only flows (the SYN-flood shape: one packet, one flow) through a
  full sensor (``bench/bench.yaml``: incidents, audit and metrics sinks attached): µs per packet
  in ``Pipeline.process`` and µs per flow in ``finish()`` (``_end_flow`` + ``flow`` event), with
  the EVE log on /dev/null and on a file.
* ``sinks``: the events of the first packets of ``--capture`` (a many-flows HTTP capture),
  re-published to each sink on its own: µs per event by sink and event type.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from itertools import islice
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from appbench import best  # noqa: E402

from alerts.eve import dumps, format_ts  # noqa: E402
from monitor.capture.pcapfile import read_capture  # noqa: E402
from monitor.config import Config, load_config  # noqa: E402
from monitor.events import Event  # noqa: E402
from monitor.model import RawPacket  # noqa: E402
from monitor.runner import Sensor  # noqa: E402
from monitor.stats import Stats  # noqa: E402


def bench_config(tmp: Path) -> Config:
    """bench/bench.yaml with its incident db, audit log and coverage file in ``tmp``."""
    cfg = load_config(ROOT / "bench" / "bench.yaml")
    return dataclasses.replace(
        cfg,
        incidents=dataclasses.replace(cfg.incidents, db=str(tmp / "incidents.db")),
        audit=dataclasses.replace(cfg.audit, path=str(tmp / "audit.jsonl")),
        coverage=dataclasses.replace(cfg.coverage, path=str(tmp / "coverage.jsonl")),
    )


# ------------------------------------------------------------------ micro


def bench_micro(repeat: int) -> list[tuple[str, float]]:
    n = 200_000
    out: list[tuple[str, float]] = []
    stats = Stats()

    def plain() -> None:
        incr = stats.incr
        for _ in range(n):
            incr("flow.created")

    def labelled() -> None:
        incr = stats.incr
        for _ in range(n):
            incr("files", protocol="http", state="CLOSED")

    out.append(("Stats.incr(name)", best(plain, repeat) / n * 1e6))
    out.append(("Stats.incr(name, 2 labels)", best(labelled, repeat) / n * 1e6))
    if hasattr(stats, "counter"):
        handle = stats.counter("files", protocol="http", state="CLOSED")

        def bound() -> None:
            incr = handle.incr
            for _ in range(n):
                incr()

        out.append(("CounterHandle.incr()", best(bound, repeat) / n * 1e6))
    # Flow start, flow end and event time: three different seconds in turn.
    stamps = [1_700_000_000 + (i % 3) * 37 + (i // 3) * 0.001 for i in range(n)]

    def ts() -> None:
        for t in stamps:
            format_ts(t)

    out.append(("format_ts (3 seconds interleaved)", best(ts, repeat) / n * 1e6))
    rec = {"timestamp": "2023-11-14T22:13:22.002716+0000", "flow_id": 6923235618097829138,
           "community_id": "1:8LSoQKUBLyEQR5orRTkx7c9ZU4U=", "pcap_cnt": 200000, "event_type": "flow",
           "src_ip": "10.0.0.1", "src_port": 6305, "dest_ip": "198.19.78.48", "dest_port": 80, "proto": "TCP",
           "app_proto": "http", "host": "bench",
           "flow": {"pkts_toserver": 6, "pkts_toclient": 4, "bytes_toserver": 365, "bytes_toclient": 259,
                    "start": "2023-11-14T22:13:20.000010+0000", "end": "2023-11-14T22:13:21.001408+0000",
                    "age": 1, "state": "closed", "reason": "shutdown", "alerted": False, "gaps": 0,
                    "protected_side": "client", "tcp_flags_ts": "1b", "tcp_flags_tc": "1b"}}
    m = n // 4

    def dump() -> None:
        for _ in range(m):
            dumps(rec)

    out.append(("dumps(flow record)", best(dump, repeat) / m * 1e6))
    return out


# ------------------------------------------------------------------ SYN flood


def syn_packets(flows: int, tmp: Path) -> list[RawPacket]:
    from memory import write_synflood

    path = tmp / "syn.pcap"
    write_synflood(path, flows)
    return list(read_capture(path, stats=Stats()))


def bench_synflood(packets: list[RawPacket], repeat: int, tmp: Path) -> list[tuple[str, float, float]]:
    out = []
    for label, eve in (("EVE /dev/null", os.devnull), ("EVE file", str(tmp / "eve.json"))):
        best_p = best_f = float("inf")
        for _ in range(repeat):
            cfg = bench_config(tmp)
            sensor = Sensor(cfg, eve_path=eve, replay=True)
            process = sensor.pipeline.process
            gc.collect()
            t0 = time.process_time()
            for raw in packets:
                process(raw)
            t1 = time.process_time()
            sensor.finish()
            t2 = time.process_time()
            best_p = min(best_p, t1 - t0)
            best_f = min(best_f, t2 - t1)
            if eve != os.devnull:
                os.unlink(eve)
        out.append((label, best_p / len(packets) * 1e6, best_f / len(packets) * 1e6))
    return out


# ------------------------------------------------------------------ sinks


def bench_sinks(capture: Path, packets: int, repeat: int, tmp: Path) -> list[tuple[str, str, int, float]]:
    cfg = bench_config(tmp)
    sensor = Sensor(cfg, eve_path=str(tmp / "sinks-eve.json"), replay=True)
    events: list[Event] = []
    sensor.pipeline.bus.subscribe("recorder", events.append)
    for raw in islice(read_capture(capture, stats=sensor.stats), packets):
        sensor.pipeline.process(raw)
    sensor.finish()
    by_type: dict[str, list[Event]] = defaultdict(list)
    for ev in events:
        if ev.event_type != "alert":  # alerts open incidents: not re-published
            by_type[ev.event_type].append(ev)
    out = []
    # A fresh sensor's sinks (its own files), fed the recorded events one sink at a time.
    fresh = Sensor(cfg, eve_path=str(tmp / "sinks-eve2.json"), replay=True)
    null = Sensor(cfg, eve_path=os.devnull, replay=True)
    sinks = [(name, sink) for name, sink in fresh.pipeline.bus._sinks]
    sinks += [("eve (/dev/null)", sink) for name, sink in null.pipeline.bus._sinks if name == "eve"]
    for name, sink in sinks:
        for et, evs in sorted(by_type.items()):

            def run(sink: Callable[[Event], None] = sink, evs: list[Event] = evs) -> None:
                for ev in evs:
                    sink(ev)

            out.append((name, et, len(evs), best(run, repeat) / len(evs) * 1e6))
    for s in (fresh, null):
        s.finish()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flows", type=int, default=50_000, help="SYN-only flows (default 50000)")
    ap.add_argument("--capture", type=Path, default=ROOT / "bench" / "data" / "f20k.pcap",
                    help="capture whose events feed the per-sink figures (default bench/data/f20k.pcap)")
    ap.add_argument("--capture-packets", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", choices=("micro", "synflood", "sinks"), action="append")
    ap.add_argument("--write-synflood", type=Path, metavar="PCAP",
                    help="only write a --flows SYN-flood capture (for `leakmon replay`) and exit")
    args = ap.parse_args()
    if args.write_synflood:
        from memory import write_synflood

        write_synflood(args.write_synflood, args.flows)
        return 0
    only = set(args.only or ("micro", "synflood", "sinks"))
    with tempfile.TemporaryDirectory(prefix="leakmon-glue-") as d:
        tmp = Path(d)
        if "micro" in only:
            print("== micro (µs per call)")
            for name, us in bench_micro(args.repeat):
                print(f"{name:40s} {us:8.3f}")
        if "synflood" in only:
            packets = syn_packets(args.flows, tmp)
            print(f"== synflood: {len(packets)} SYN-only flows (µs per packet/flow)")
            print(f"{'':20s} {'process':>10s} {'finish':>10s}")
            for label, p, f in bench_synflood(packets, args.repeat, tmp):
                print(f"{label:20s} {p:10.2f} {f:10.2f}")
        if "sinks" in only:
            if not args.capture.exists():
                print(f"== sinks: {args.capture} missing (python3 bench/gen.py flows --flows 20000 -o {args.capture})")
            else:
                print(f"== sinks: events of the first {args.capture_packets} packets of {args.capture} (µs per event)")
                for name, et, n, us in bench_sinks(args.capture, args.capture_packets, args.repeat, tmp):
                    print(f"{name:16s} {et:10s} {n:7d} {us:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
