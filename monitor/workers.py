"""``--workers N``: flows sharded across processes, one EVE stream.

Replay: every worker reads the capture files itself and keeps the frames of its shard
(:func:`monitor.shard.shard_of`) -- reading is cheap next to processing, and no per-packet
IPC is needed. Live: every worker opens the interfaces in the same PACKET_FANOUT group (hash
mode, symmetric) and the kernel spreads the flows.

The parent is the single writer of the EVE stream: workers send whole serialised lines in
batches, so lines never interleave. Counters are summed into the parent's Stats, which the
final (replay) or periodic (live) ``stats`` record and the metrics exporter read.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing as mp
import os
import queue
import signal
import sys
import time
from collections import Counter
from typing import Any

from alerts.eve import EveWriter, dumps, eve_record
from monitor.config import Config
from monitor.events import Event
from monitor.stats import Stats

BATCH_LINES = 256


class _LineSink:
    """Worker-side EVE sink: serialises events and ships whole lines to the parent."""

    def __init__(self, q: Any, worker: int, sensor_name: str, types: list[str]) -> None:
        self.q = q
        self.worker = worker
        self.sensor_name = sensor_name
        self.types = set(types)
        self.lines: list[str] = []

    def __call__(self, ev: Event) -> None:
        if ev.event_type == "stats":
            return  # the parent writes merged stats
        if self.types and ev.event_type not in self.types:
            return
        self.lines.append(dumps(eve_record(ev, self.sensor_name)) + "\n")
        if len(self.lines) >= BATCH_LINES or ev.event_type == "alert":
            self.flush()

    def flush(self) -> None:
        if self.lines:
            self.q.put(("eve", "".join(self.lines)))
            self.lines = []


def _worker_sensor(cfg: Config, q: Any, index: int, replay: bool) -> Any:
    from monitor.runner import Sensor

    # One exporter for the whole sensor, in the parent, over the merged counters.
    cfg = dataclasses.replace(cfg, metrics=dataclasses.replace(cfg.metrics, addr=""))

    sensor = Sensor(cfg, eve_path="", replay=replay)
    sink = _LineSink(q, index, cfg.sensor.name, cfg.outputs.eve.types)
    sensor.pipeline.bus.subscribe("eve-worker", sink)
    sensor.line_sink = sink  # type: ignore[attr-defined]
    return sensor


def _send_stats(q: Any, index: int, stats: Stats, final: bool) -> None:
    q.put(("stats", index, dict(stats.counters), dict(stats.gauges), final))


def _replay_worker(cfg: Config, files: list[str], index: int, n: int, q: Any) -> None:
    from monitor.capture.pcapfile import read_capture
    from monitor.shard import shard_of

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sensor = _worker_sensor(cfg, q, index, replay=True)
    process = sensor.pipeline.process
    cnt = 0
    try:
        for path in files:
            for raw in read_capture(path, stats=sensor.stats if index == 0 else Stats(), bpf=cfg.capture.bpf,
                                    start_cnt=cnt):
                cnt = raw.pcap_cnt
                if shard_of(raw.data, raw.linktype, n) == index:
                    process(raw)
        sensor.finish("shutdown")
    finally:
        sensor.line_sink.flush()
        _send_stats(q, index, sensor.stats, True)
        q.put(("done", index))


def _count_alerts(exporter: Any, lines: str) -> None:
    """Feed the parent's metrics exporter the alerts of a batch of worker EVE lines."""
    import json

    for line in lines.splitlines():
        if '"event_type":"alert"' in line:
            rec = json.loads(line)
            exporter(Event("alert", time.time(), {k: rec[k] for k in ("alert", "leakmon") if k in rec}))


def _collect(q: Any, procs: list[Any], writer: EveWriter | None, merged: Stats,
             per_worker: dict[int, tuple[Counter[Any], dict[Any, float]]], stop: Any = None,
             exporter: Any = None) -> None:
    done = 0
    while done < len(procs):
        # The stop flag is checked on every turn: live workers send stats twice a second, so
        # waiting for a quiet queue would ignore SIGINT/SIGTERM.
        if stop is not None and stop():
            for p in procs:
                if p.is_alive():
                    os.kill(p.pid, signal.SIGTERM)
            stop = None
        try:
            msg = q.get(timeout=0.5)
        except queue.Empty:
            if all(p.exitcode is not None for p in procs):
                break  # every worker is gone (some may have died without saying "done")
            continue
        kind = msg[0]
        if kind == "eve" and writer is not None:
            writer.write_line(msg[1])
            writer.flush()  # a batch ends at an alert or 256 lines: alerts reach the file at once
            if exporter is not None and '"event_type":"alert"' in msg[1]:
                _count_alerts(exporter, msg[1])
        elif kind == "stats":
            _, index, counters, gauges, _final = msg
            per_worker[index] = (Counter(counters), gauges)
            _merge(merged, per_worker)
        elif kind == "audit":
            pass
        elif kind == "done":
            done += 1


def _merge(merged: Stats, per_worker: dict[int, tuple[Counter[Any], dict[Any, float]]]) -> None:
    total: Counter[Any] = Counter()
    gauges: dict[Any, float] = {}
    for counters, g in per_worker.values():
        total.update(counters)
        for k, v in g.items():
            # Gauges: sums for sizes/counts, max for timestamps.
            gauges[k] = max(gauges.get(k, v), v) if k[0].endswith("_ts") or k[0].endswith("_at") else gauges.get(k, 0) + v
    merged.counters = total
    merged.gauges = gauges


def replay_sharded(cfg: Config, args: argparse.Namespace) -> int:
    n = args.workers
    ctx = mp.get_context("fork")
    q = ctx.Queue(maxsize=4096)
    eve_path = args.eve_log or cfg.resolve(cfg.outputs.eve.path)
    writer = EveWriter(eve_path, cfg.outputs.eve.types, sensor=cfg.sensor.name) if eve_path else None
    t0 = time.perf_counter()
    procs = [ctx.Process(target=_replay_worker, args=(cfg, list(args.files), i, n, q), daemon=True) for i in range(n)]
    for p in procs:
        p.start()
    merged = Stats()
    per_worker: dict[int, tuple[Counter[Any], dict[Any, float]]] = {}
    _collect(q, procs, writer, merged, per_worker)
    for p in procs:
        p.join()
    wall = time.perf_counter() - t0
    if writer is not None:
        ev = Event("stats", time.time(), {"stats": {**merged.snapshot(), "uptime": round(wall, 3), "workers": n}})
        writer(ev)
        writer.close()
    nbytes = merged.total("capture.bytes")
    print(f"leakmon: {merged.total('capture.packets')} packets, {nbytes} bytes, {merged.total('flow.created')} flows, "
          f"{merged.total('detect.alerts')} alerts in {wall:.2f}s ({nbytes * 8 / max(wall, 1e-9) / 1e9:.2f} Gbps, "
          f"{n} workers)", file=sys.stderr)
    failed = [p.exitcode for p in procs if p.exitcode]
    return 1 if failed else 0


def _parent_exporter(cfg: Config, merged: Stats) -> Any:
    if not cfg.metrics.addr:
        return None
    from alerts.metrics import MetricsExporter

    return MetricsExporter(cfg, merged, {"mode": "live", "capture_running": True}).start()


def _live_worker(cfg: Config, ifaces: list[str], index: int, group: int, q: Any) -> None:
    from monitor.capture.afpacket import LiveCapture

    stop = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *a: stop.__setitem__("flag", True))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sensor = _worker_sensor(cfg, q, index, replay=False)
    pipeline = sensor.pipeline
    cap = LiveCapture(ifaces, cfg.capture, sensor.stats, fanout=group)
    next_tick = 0.0
    try:
        for raw in cap:
            if raw is not None:
                pipeline.process(raw)
            now = time.time()
            if now >= next_tick:
                next_tick = now + 0.5
                pipeline.tick(now)
                for iface, (pkts, drops) in cap.kernel_stats().items():
                    sensor.stats.set("capture.kernel_packets", pkts, iface=iface)
                    sensor.stats.set("capture.kernel_drops", drops, iface=iface)
                sensor.line_sink.flush()
                _send_stats(q, index, sensor.stats, False)
            if stop["flag"]:
                break
    finally:
        cap.close()
        sensor.finish("shutdown")
        sensor.line_sink.flush()
        _send_stats(q, index, sensor.stats, True)
        q.put(("done", index))


def live_sharded(cfg: Config, args: argparse.Namespace) -> int:
    n = args.workers
    ctx = mp.get_context("fork")
    q = ctx.Queue(maxsize=4096)
    eve_path = args.eve_log or cfg.resolve(cfg.outputs.eve.path)
    writer = EveWriter(eve_path, cfg.outputs.eve.types, sensor=cfg.sensor.name) if eve_path else None
    group = cfg.capture.fanout_group or (os.getpid() & 0xFFFF)
    stopping = {"flag": False}
    signal.signal(signal.SIGINT, lambda *a: stopping.__setitem__("flag", True))
    signal.signal(signal.SIGTERM, lambda *a: stopping.__setitem__("flag", True))
    if getattr(args, "pidfile", None):
        with open(args.pidfile, "w") as fh:
            fh.write(str(os.getpid()))
    procs = [ctx.Process(target=_live_worker, args=(cfg, list(args.interfaces), i, group, q), daemon=True)
             for i in range(n)]
    for p in procs:
        p.start()
    merged = Stats()
    per_worker: dict[int, tuple[Counter[Any], dict[Any, float]]] = {}
    exporter = _parent_exporter(cfg, merged)
    t0 = time.monotonic()
    try:
        _collect(q, procs, writer, merged, per_worker, stop=lambda: stopping["flag"], exporter=exporter)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
        if exporter is not None:
            exporter.close()
    if writer is not None:
        writer(Event("stats", time.time(), {"stats": {**merged.snapshot(), "uptime": round(time.monotonic() - t0, 3),
                                                      "workers": n}}))
        writer.close()
    return 1 if any(p.exitcode for p in procs) else 0
