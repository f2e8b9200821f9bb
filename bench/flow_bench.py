#!/usr/bin/env python3
"""Micro-benchmark of the flow stages: read_capture -> Decoder -> FlowTable.lookup -> TcpReassembler.packet.

The sink does nothing, so the figure is the cost of capture reading, decoding, flow demux and
reassembly alone (the part of the hot path before app-layer parsing and detection). Each run
also times the reader alone and reader + decoder, so the flow stages' own share is the
difference. Every stage runs under the sensor's collector settings (``runner.sensor_gc``).

    python3 bench/flow_bench.py bench/data/m200.pcap [--repeat 3] [--profile out.prof]
    python3 bench/flow_bench.py bench/data/f20k.pcap --memory   # bytes per live flow (tracemalloc)
    python3 bench/flow_bench.py --instructions      # needs valgrind: noise-free per-packet costs

The ``pipeline`` stage is the sensor's own per-packet path (read_capture -> Pipeline.replay_capture,
including its fused fast path, timers and flow start/end) up to the on_data hand-off, with
parsers and detection left out; ``flows`` is the unfused decode -> lookup -> reassembly chain.

Prints, per stage prefix: CPU seconds of this process (best of --repeat; CPU rather than wall
time so that other load on the machine disturbs the figure less), µs/packet and Gbps of pcap
bytes per core. The sensor's allocator settings (``runner.tune_allocator``) apply, as in a replay.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from monitor.capture.pcapfile import read_capture  # noqa: E402
from monitor.config import Config  # noqa: E402
from monitor.decode import Decoder  # noqa: E402
from monitor.flow.reassembly import TcpReassembler  # noqa: E402
from monitor.flow.table import FlowTable  # noqa: E402
from monitor.model import PROTO_TCP, Flow, Packet, RawPacket  # noqa: E402
from monitor.runner import sensor_gc, tune_allocator  # noqa: E402
from monitor.stats import Stats  # noqa: E402


class NullSink:
    """A StreamSink that drops everything (counts delivered bytes, to check the run)."""

    def __init__(self) -> None:
        self.delivered = 0

    def on_data(self, flow: Flow, direction: int, data: bytes, ts: float) -> None:
        self.delivered += len(data)

    def on_gap(self, flow: Flow, direction: int, length: int, ts: float) -> None:
        pass

    def on_overlap(self, flow: Flow, direction: int, offset: int, kept: bytes, other: bytes, ts: float) -> None:
        pass

    def on_anomaly(self, flow: Flow, direction: int, kind: str, detail: str = "") -> None:
        pass

    def on_depth(self, flow: Flow, direction: int) -> None:
        pass


def _no_anomaly(kind: str, detail: str, raw: RawPacket) -> None:
    pass


def run_read(path: str) -> tuple[int, int, dict[str, int]]:
    n = nbytes = 0
    for raw in read_capture(path, stats=Stats()):
        n += 1
        nbytes += len(raw.data) + 16
    return n, nbytes, {}


def run_decode(path: str) -> tuple[int, int, dict[str, int]]:
    stats = Stats()
    decode = Decoder(Config(), stats, _no_anomaly).decode
    n = nbytes = 0
    for raw in read_capture(path, stats=stats):
        n += 1
        nbytes += len(raw.data) + 16
        decode(raw)
    return n, nbytes, {}


def run_flows(path: str) -> tuple[int, int, dict[str, int]]:
    """The same loop as Pipeline.process minus app-layer/detection, with expiry on a 1 s timer."""
    cfg = Config()
    stats = Stats()
    sink = NullSink()
    decode = Decoder(cfg, stats, _no_anomaly).decode
    table = FlowTable(cfg, stats)
    lookup = table.lookup
    reasm = TcpReassembler(cfg, stats, sink)
    packet = reasm.packet
    ended = table.ended
    n = nbytes = 0
    next_timer = 0.0
    for raw in read_capture(path, stats=stats):
        n += 1
        nbytes += len(raw.data) + 16
        ts = raw.ts
        if ts >= next_timer:
            next_timer = ts + 1.0
            for flow in table.expire(ts):
                reasm.close(flow, ts)
            reasm.check_all_timeouts(ts)
        pkt = decode(raw)
        if pkt is None:
            continue
        flow, direction, _created = lookup(pkt)
        if pkt.proto == PROTO_TCP:
            packet(flow, direction, pkt)
        if ended:
            for flow in ended:
                reasm.close(flow, ts)
            ended.clear()
    peak = len(table)
    for flow in table.flush():
        reasm.close(flow, flow.last_ts)
    return n, nbytes, {"delivered": sink.delivered, "flows_created": int(stats.get("flow.created")),
                       "flows_at_end": peak, "gaps": stats.total("stream.gap"),
                       "retransmissions": int(stats.get("stream.retransmission"))}


class _NoDetection:
    """Detection stand-in for the ``pipeline`` stage: every call does nothing."""

    def __getattr__(self, name: str) -> Any:
        return _nothing


def _nothing(*args: Any, **kwargs: Any) -> None:
    return None


def run_pipeline(path: str) -> tuple[int, int, dict[str, int]]:
    """read_capture -> Pipeline.replay_capture up to the on_data hand-off (parsers and detection out).

    As the sensor's replay: the record walk offers each frame to Pipeline.process_frame in its
    read buffer and builds a RawPacket only for the frames that take the full path.

    The real per-packet glue (fused fast path, decoder, flow table, reassembly, timers, flow
    end) with ``on_data`` replaced by a byte count: the figure the issue's 1.2 µs/packet
    "parse + flow demux + in-order check" compares with.
    """
    from monitor.pipeline import Pipeline

    class CountingPipeline(Pipeline):
        delivered = 0

        def on_data(self, flow: Flow, direction: int, data: bytes, ts: float) -> None:
            self.delivered += len(data)

    stats = Stats()
    pipeline = CountingPipeline(Config(), stats=stats, eve_path="", detection=_NoDetection(), replay=True,
                                evidence=False)
    pipeline.replay_capture(read_capture(path, stats=stats))
    pipeline.finish()
    n = pipeline.packets
    nbytes = pipeline.bytes + 16 * n  # wire bytes: equal to the captured ones on the benchmark captures
    return n, nbytes, {"delivered": pipeline.delivered, "flows_created": int(stats.get("flow.created"))}


def decoded(path: str) -> list[Packet]:
    """Every decodable packet of the capture, decoded up front (for the isolated flow stages)."""
    cfg = Config()
    stats = Stats()
    decode = Decoder(cfg, stats, _no_anomaly).decode
    return [p for p in map(decode, read_capture(path, stats=stats)) if p is not None]


def time_isolated(packets: list[Packet]) -> float:
    """CPU seconds of FlowTable.lookup + TcpReassembler.packet alone, over decoded packets."""
    cfg = Config()
    stats = Stats()
    table = FlowTable(cfg, stats)
    lookup = table.lookup
    reasm = TcpReassembler(cfg, stats, NullSink())
    packet = reasm.packet
    ended = table.ended
    t0 = time.process_time()
    for pkt in packets:
        flow, direction, _created = lookup(pkt)
        if pkt.proto == PROTO_TCP:
            packet(flow, direction, pkt)
        if ended:
            for flow in ended:
                reasm.close(flow, pkt.ts)
            ended.clear()
    return time.process_time() - t0


def flow_memory(path: str) -> None:
    """Bytes per live flow held by the flow stages (tracemalloc), by the file that allocated them.

    Replays the capture through FlowTable.lookup + TcpReassembler.packet (as the ``flows``
    stage) and, with every flow of the capture still live (none has ended yet on f20k.pcap),
    counts what is traced beyond the start. Payload bytes kept in the reassembly's recent
    window are allocated by the decoder's payload slice; they show up under its file.
    """
    import tracemalloc

    cfg = Config()
    stats = Stats()
    decode = Decoder(cfg, stats, _no_anomaly).decode
    table = FlowTable(cfg, stats)
    reasm = TcpReassembler(cfg, stats, NullSink())
    gc.collect()
    tracemalloc.start(1)
    base = tracemalloc.take_snapshot()
    for raw in read_capture(path, stats=stats):
        pkt = decode(raw)
        if pkt is None:
            continue
        flow, direction, _created = table.lookup(pkt)
        if pkt.proto == PROTO_TCP:
            reasm.packet(flow, direction, pkt)
        for flow in table.ended:
            reasm.close(flow, pkt.ts)
        table.ended.clear()
    del raw, pkt, flow
    gc.collect()
    snap = tracemalloc.take_snapshot()
    tracemalloc.stop()
    flows = len(table)
    diff = snap.compare_to(base, "filename")
    total = sum(d.size_diff for d in diff)
    streams = sum(1 for f in table.flows.values() if f.streams is not None)
    print(f"  {flows} live flows ({streams} with TCP streams): {total / flows:.0f} bytes/flow traced")
    for d in diff[:6]:
        if d.size_diff > 0:
            print(f"    {d.size_diff / flows:7.0f} B/flow  {d.traceback[0].filename}")


STAGES = {"read": run_read, "decode": run_decode, "flows": run_flows, "pipeline": run_pipeline}

# ------------------------------------------------------------------ instruction counts
#
# CPU time on a shared machine swings 2-3x; the number of machine instructions a case costs
# does not. ``--micro CASE N`` runs N packets of one synthetic case (meant to run under
# valgrind's callgrind); ``--instructions`` runs every case at two sizes under callgrind and
# prints the difference per packet, minus the same loop calling an empty function.

MICRO_CASES = ("empty", "data", "ack", "lookup", "create")


def micro(case: str, n: int) -> None:
    """N packets of one case through FlowTable/TcpReassembler (packets are built beforehand)."""
    from monitor.model import TH_ACK, TH_PSH, TH_SYN

    cfg = Config()
    table = FlowTable(cfg, Stats())
    reasm = TcpReassembler(cfg, Stats(), NullSink())
    client, server = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
    seq = 1000
    first = Packet(0.0, 1, 4, client, server, PROTO_TCP, 40000, 80, b"", TH_SYN, seq - 1, 0)
    flow, _, _ = table.lookup(first)
    reasm.packet(flow, 0, first)
    synack = Packet(0.0, 2, 4, server, client, PROTO_TCP, 80, 40000, b"", TH_SYN | TH_ACK, 5000, seq)
    table.lookup(synack)
    reasm.packet(flow, 1, synack)
    payload = b"x" * 1400
    packets = []
    for i in range(n):
        if case == "ack":  # pure ACKs of the server, acknowledging the client's bytes
            packets.append(Packet(i / 1e5, i + 3, 4, server, client, PROTO_TCP, 80, 40000, b"", TH_ACK, 5001,
                                  seq, 0, (), b"", b"", 54))
        elif case == "create":  # SYNs of new connections from distinct clients
            packets.append(Packet(i / 1e5, i + 3, 4, (0x0A010000 + i).to_bytes(4, "big"), server, PROTO_TCP,
                                  40000, 80, b"", TH_SYN, i, 0, 0, (), b"", b"", 54))
        else:  # in-order MSS segments of the client
            packets.append(Packet(i / 1e5, i + 3, 4, client, server, PROTO_TCP, 40000, 80, payload,
                                  TH_ACK | TH_PSH, seq, 5001, 0, (), b"", b"", 1454))
        seq = (seq + len(payload)) & 0xFFFFFFFF
    lookup = table.lookup
    packet = reasm.packet
    if case == "data":
        for p in packets:
            packet(flow, 0, p)
    elif case == "ack":
        for p in packets:
            packet(flow, 1, p)
    elif case == "lookup":
        for p in packets:
            lookup(p)
    elif case == "create":
        for p in packets:
            f, d, _ = lookup(p)
            packet(f, d, p)
    else:
        def nothing(flow: Flow, direction: int, pkt: Packet) -> None:
            pass

        for p in packets:
            nothing(flow, 0, p)


def instructions(small: int = 2000, large: int = 12000) -> None:
    import re
    import shutil
    import subprocess

    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind (apt-get install valgrind)")

    def count(case: str, n: int) -> int:
        # The interpreter itself, not a wrapper script (pyenv shims are shell scripts).
        argv = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", os.path.realpath(sys.executable),
                __file__, "--micro", case, str(n)]
        err = subprocess.run(argv, capture_output=True, text=True, check=True).stderr
        m = re.search(r"Collected : (\d+)", err)
        if m is None:
            raise SystemExit(f"callgrind printed no total: {err[-500:]}")
        return int(m.group(1))

    per = {case: (count(case, large) - count(case, small)) / (large - small) for case in MICRO_CASES}
    base = per["empty"]
    what = {"data": "in-order 1400-byte segment, TcpReassembler.packet (NullSink)",
            "ack": "pure ACK, TcpReassembler.packet",
            "lookup": "FlowTable.lookup of an established flow",
            "create": "new flow: FlowTable.lookup (miss) + TcpReassembler.packet of its SYN, GC included"}
    for case in MICRO_CASES[1:]:
        print(f"  {case:7s} {per[case] - base:8.0f} instructions/packet  {what[case]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("captures", nargs="*")
    ap.add_argument("--micro", nargs=2, metavar=("CASE", "N"), help=f"run one synthetic case: {MICRO_CASES}")
    ap.add_argument("--instructions", action="store_true", help="per-packet instruction counts (valgrind)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per stage; the best is reported")
    ap.add_argument("--stages", default="read,decode,flows,isolated,pipeline",
                    help="read, decode, flows (read+decode+flow stages), isolated (flow stages alone, "
                         "on packets decoded beforehand), pipeline (read + Pipeline.process up to the "
                         "on_data hand-off: the fused fast path)")
    ap.add_argument("--profile", metavar="PATH", help="cProfile the 'flows' stage once into PATH")
    ap.add_argument("--memory", action="store_true", help="bytes per live flow of the flow stages (tracemalloc)")
    args = ap.parse_args(argv)
    tune_allocator()  # the sensor's allocator settings (runner.replay applies them too)
    if args.micro:
        micro(args.micro[0], int(args.micro[1]))
        return 0
    if args.instructions:
        instructions()
        return 0
    for path in args.captures:
        size = os.path.getsize(path)
        print(f"{path}: {size / 1e6:.1f} MB")
        if args.memory:
            flow_memory(path)
            continue
        if args.profile:
            prof = cProfile.Profile()
            prof.runcall(run_flows, path)
            prof.dump_stats(args.profile)
            print(f"  profile written to {args.profile}")
            continue
        base = None
        for stage in args.stages.split(","):
            if stage == "isolated":
                packets = decoded(path)
                gc.collect()
                with sensor_gc():
                    best = min(time_isolated(packets) for _ in range(args.repeat))
                us = best / len(packets) * 1e6
                print(f"  {stage:8s} {best:7.2f} cpu-s  {us:6.2f} µs/pkt  {size * 8 / best / 1e9:6.2f} Gbps  "
                      f"{len(packets)} pkts (FlowTable.lookup + TcpReassembler.packet only)")
                del packets
                continue
            best = float("inf")
            info: dict[str, int] = {}
            n = 0
            for _ in range(args.repeat):
                gc.collect()
                with sensor_gc():
                    t0 = time.process_time()
                    n, _nbytes, info = STAGES[stage](path)
                    best = min(best, time.process_time() - t0)
            us = best / n * 1e6
            extra = ""
            if base is not None:
                extra = f"  (+{us - base:.2f} µs over previous stage)"
            base = us
            print(f"  {stage:8s} {best:7.2f} cpu-s  {us:6.2f} µs/pkt  {size * 8 / best / 1e9:6.2f} Gbps  "
                  f"{n} pkts{extra}")
            if info:
                print("          " + ", ".join(f"{k}={v}" for k, v in info.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
