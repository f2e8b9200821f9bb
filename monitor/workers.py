"""``--workers N``: flows sharded across processes, one EVE stream.

Replay: every worker reads the capture files itself and keeps the frames of its shard
(:func:`monitor.shard.shard_of`; the reader skips the others' frames before building them) --
reading is cheap next to processing, and no per-packet IPC is needed. Live: every worker opens
the interfaces in the same PACKET_FANOUT group (hash mode, symmetric) and the kernel spreads
the flows.

Workers are forked from a parent that has already imported their code (and frozen its objects
out of the collector's reach), and run with the one-process sensor's collector settings.

The parent is the single writer of the EVE stream: workers send whole serialised lines in
batches, so lines never interleave (nothing at all when EVE goes to the null device). Counters
are summed into the parent's Stats, which the final (replay) or periodic (live) ``stats`` record
and the metrics exporter read.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import importlib
import inspect
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

# What every worker imports to build and run its sensor (the parsers are imported on first use
# by the protocol registry). Imported once in the parent, before the fork, instead of once per
# worker: about 0.25 s of CPU each. A module missing here only costs that worker the import.
_WORKER_MODULES = (
    "monitor.runner", "monitor.sinks", "monitor.pipeline", "monitor.capture.pcapfile", "monitor.shard",
    "detectors.engine", "alerts.audit", "alerts.evidence", "alerts.incidents", "alerts.notify",
    "monitor.applayer.http1", "monitor.applayer.tls", "monitor.applayer.dns", "monitor.applayer.smtp",
    "monitor.applayer.ftp",
)


class _LineSink:
    """Worker-side EVE sink: serialises events and ships whole lines to the parent.

    A batch is one string (the parent writes it with one call and parses nothing) plus, when
    the parent runs a metrics exporter, the alerts of the batch as (ts, ingress, body) so the
    exporter counts them without re-reading JSON.
    """

    def __init__(self, q: Any, sensor_name: str, types: list[str], alert_metrics: bool) -> None:
        self.q = q
        self.sensor_name = sensor_name
        self.types = set(types)
        self.alert_metrics = alert_metrics
        self.lines: list[str] = []
        self.alerts: list[tuple[float, float | None, dict[str, Any]]] = []

    def __call__(self, ev: Event) -> None:
        et = ev.event_type
        if et == "stats":
            return  # the parent writes merged stats
        if self.types and et not in self.types:
            return
        self.lines.append(dumps(eve_record(ev, self.sensor_name)) + "\n")
        if et == "alert":
            if self.alert_metrics:
                self.alerts.append((ev.ts, ev.ingress, {k: ev.body[k] for k in ("alert", "leakmon") if k in ev.body}))
            self.flush()
        elif len(self.lines) >= BATCH_LINES:
            self.flush()

    def flush(self) -> None:
        if self.lines:
            self.q.put(("eve", "".join(self.lines), self.alerts))
            self.lines = []
            self.alerts = []


class _NoLines:
    """Stands in for the line sink where the parent writes no lines (no EVE output, or the null
    device): the worker serialises nothing and ships nothing."""

    def flush(self) -> None:
        pass


# What the parent's EVE output needs from the workers.
EVE_LINES = "lines"  # a file or stdout: whole serialised lines
EVE_DISCARD = "discard"  # the null device: no lines; workers run the same discarding sink as one process
EVE_NONE = "none"  # no EVE output at all


def _eve_mode(writer: EveWriter | None) -> str:
    if writer is None:
        return EVE_NONE
    return EVE_DISCARD if writer.discard else EVE_LINES


def _worker_sensor(cfg: Config, q: Any, replay: bool, eve_mode: str = EVE_LINES, alert_metrics: bool = False) -> Any:
    """The worker's sensor, with its EVE sink first on the bus, where a one-process sensor has its
    EVE writer: writing a flow's first record sets its community_id, which later sinks (audit)
    copy."""
    from monitor.runner import Sensor

    # One exporter for the whole sensor, in the parent, over the merged counters.
    cfg = dataclasses.replace(cfg, metrics=dataclasses.replace(cfg.metrics, addr=""))

    sensor = Sensor(cfg, eve_path="", replay=replay)
    types = cfg.outputs.eve.types
    bus = sensor.pipeline.bus
    line_sink: Any = _NoLines()
    if eve_mode == EVE_LINES:
        line_sink = _LineSink(q, cfg.sensor.name, types, alert_metrics)
        bus.subscribe("eve-worker", line_sink, first=True)
    elif eve_mode == EVE_DISCARD:
        bus.subscribe("eve", EveWriter(os.devnull, types, sensor=cfg.sensor.name), first=True)
        if alert_metrics:  # the parent's exporter still counts alerts
            line_sink = _LineSink(q, cfg.sensor.name, ["alert"], True)
            bus.subscribe("eve-worker", line_sink)
    sensor.line_sink = line_sink  # type: ignore[attr-defined]
    return sensor


def _own_file_ids(index: int, n: int) -> None:
    """File ids unique across the workers (worker i: i+1, i+1+n, ...), not restarted by every fork:
    one incident may hold files of flows in several workers, and its evidence names them by id."""
    import itertools

    from monitor import files

    files._file_ids = itertools.count(index + 1, n)


def _preload_worker_modules(cfg: Config) -> None:
    for name in _WORKER_MODULES:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    if cfg.evidence.enabled:
        # The cipher is imported on first use (a one-process replay with evidence off never
        # pays for it); workers that keep evidence all need it, so the parent takes it once.
        from alerts.evidence import _cipher_class

        with contextlib.suppress(ImportError):
            _cipher_class()


def _start_workers(procs: list[Any], cfg: Config) -> None:
    """Fork the workers from a parent that has imported what they need.

    Fork safety: the parent has started no thread yet (the queue's feeder thread starts on its
    first put, which only workers do; the live metrics exporter starts after this).
    ``gc.freeze`` before the fork keeps the children's collections off the parent's objects, so
    they are neither walked again nor copied (a collection writes to every object it visits).
    """
    _preload_worker_modules(cfg)
    gc.freeze()
    try:
        for p in procs:
            p.start()
    finally:
        gc.unfreeze()


def _open_audit_log(cfg: Config) -> Stats:
    """Open and close the audit log and the incident database once in the parent, before the workers start.

    Every worker appends to the same log (records are flock-serialised and the chain continues
    from disk), but a first run also generates the log's key: workers doing that at the same
    moment race (one creates the key file, another reads it still empty and fails). The parent
    generates it (and records that) once, as a one-process sensor does; the counters it takes
    join the merged totals.
    """
    from alerts.audit import AuditLog
    from alerts.incidents import IncidentDB

    stats = Stats()
    AuditLog(cfg.audit, stats, base_dir=cfg.base_dir).close()
    # Likewise the incident database: creating it switches it to WAL and writes the schema, which
    # needs an exclusive lock that SQLite does not wait for ("database is locked" in a worker
    # that races another one). WAL mode persists in the file, so workers open a ready database.
    IncidentDB(cfg.resolve(cfg.incidents.db), synchronous=cfg.incidents.synchronous).close()
    return stats


PARENT = -1  # the parent's own counters among the per-worker ones


def _send_stats(q: Any, index: int, stats: Stats, final: bool) -> None:
    q.put(("stats", index, dict(stats.counters), dict(stats.gauges), final))


def _replay_worker(cfg: Config, files: list[str], index: int, n: int, q: Any, eve_mode: str = EVE_LINES) -> None:
    from monitor.runner import sensor_gc

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _own_file_ids(index, n)
    sensor = _worker_sensor(cfg, q, replay=True, eve_mode=eve_mode)
    try:
        # The collector settings of the one-process replay: with CPython's defaults the
        # collector keeps walking the worker's live flows (measured: 1-1.8 s of the two
        # workers' ~10 s of CPU on the 214 MB benchmark capture).
        with sensor_gc():
            _replay_shard(sensor, cfg, files, index, n)
            sensor.finish("shutdown")
    finally:
        sensor.line_sink.flush()
        _send_stats(q, index, sensor.stats, True)
        q.put(("done", index))


def _reader_shards() -> bool:
    """True when ``read_capture`` can skip other workers' frames itself (``shard=(index, n)``)."""
    from monitor.capture.pcapfile import read_capture

    return "shard" in inspect.signature(read_capture).parameters


def _replay_shard(sensor: Any, cfg: Config, files: list[str], index: int, n: int) -> None:
    """Feed this worker's frames of every file to its pipeline.

    ``pcap_cnt`` numbers every frame of the capture, as in a one-process replay; worker 0
    counts the capture-level counters, the others count into a throwaway. Where the reader
    shards, it skips the other workers' frames before building them and reports the last
    frame's number (``last_cnt``), where the next file's numbering goes on.
    """
    from monitor.capture.pcapfile import read_capture
    from monitor.shard import shard_of

    process = sensor.pipeline.process
    capture_stats = sensor.stats if index == 0 else Stats()
    bpf = cfg.capture.bpf
    cnt = 0
    if _reader_shards():
        for path in files:
            capture: Any = read_capture(path, stats=capture_stats, bpf=bpf, start_cnt=cnt,
                                        shard=(index, n))  # type: ignore[call-arg]
            sensor.pipeline.replay_capture(capture)
            cnt = capture.last_cnt
        return
    for path in files:  # a reader without sharding: every frame is built here and sorted out
        for raw in read_capture(path, stats=capture_stats, bpf=bpf, start_cnt=cnt):
            cnt = raw.pcap_cnt
            if shard_of(raw.data, raw.linktype, n) == index:
                process(raw)


def _collect(q: Any, procs: list[Any], writer: EveWriter | None, merged: Stats,
             per_worker: dict[int, tuple[Counter[Any], dict[Any, float]]], stop: Any = None,
             exporter: Any = None) -> None:
    _merge(merged, per_worker)
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
        if kind == "eve":
            _, text, alerts = msg
            if writer is not None:
                writer.write_line(text)
                writer.flush()  # a batch ends at an alert or 256 lines: alerts reach the file at once
            if exporter is not None:
                # ``ingress`` is the worker's time.monotonic(): CLOCK_MONOTONIC is one clock for
                # every process on the machine, so the exporter's latency stays packet-to-alert.
                for ts, ingress, body in alerts:
                    exporter(Event("alert", ts, body, ingress=ingress))
        elif kind == "stats":
            _, index, counters, gauges, _final = msg
            per_worker[index] = (Counter(counters), gauges)
            _merge(merged, per_worker)
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


def _open_eve(cfg: Config, args: argparse.Namespace) -> EveWriter | None:
    eve_path = args.eve_log or cfg.resolve(cfg.outputs.eve.path)
    return EveWriter(eve_path, cfg.outputs.eve.types, sensor=cfg.sensor.name) if eve_path else None


def replay_sharded(cfg: Config, args: argparse.Namespace) -> int:
    n = args.workers
    ctx = mp.get_context("fork")
    q = ctx.Queue(maxsize=4096)
    writer = _open_eve(cfg, args)
    eve_mode = _eve_mode(writer)
    t0 = time.perf_counter()
    parent_stats = _open_audit_log(cfg)
    procs = [ctx.Process(target=_replay_worker, args=(cfg, list(args.files), i, n, q, eve_mode), daemon=True)
             for i in range(n)]
    _start_workers(procs, cfg)
    merged = Stats()
    per_worker = {PARENT: (parent_stats.counters, parent_stats.gauges)}
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


def _live_worker(cfg: Config, ifaces: list[str], index: int, group: int, q: Any, eve_mode: str = EVE_LINES,
                 alert_metrics: bool = False, n: int = 1) -> None:
    from monitor.capture.afpacket import LiveCapture
    from monitor.runner import sensor_gc

    stop = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *a: stop.__setitem__("flag", True))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _own_file_ids(index, n)
    sensor = _worker_sensor(cfg, q, replay=False, eve_mode=eve_mode, alert_metrics=alert_metrics)
    pipeline = sensor.pipeline
    cap = LiveCapture(ifaces, cfg.capture, sensor.stats, fanout=group)
    next_tick = 0.0
    with sensor_gc():  # the one-process live sensor's collector settings
        try:
            # The ring's frames go to process_frame in place; RawPackets only where it declines
            # (or for the frames walk() keeps off the fast path: stripped VLAN tag, no timestamp).
            for _ in cap.walk(pipeline.process_frame, pipeline.process_decoded, pipeline.process):
                pipeline.flush_chunks()  # a block is done: nothing waits for the next one (latency)
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
    writer = _open_eve(cfg, args)
    eve_mode = _eve_mode(writer)
    alert_metrics = bool(cfg.metrics.addr)  # the parent's exporter counts the workers' alerts
    group = cfg.capture.fanout_group or (os.getpid() & 0xFFFF)
    stopping = {"flag": False}
    signal.signal(signal.SIGINT, lambda *a: stopping.__setitem__("flag", True))
    signal.signal(signal.SIGTERM, lambda *a: stopping.__setitem__("flag", True))
    if getattr(args, "pidfile", None):
        with open(args.pidfile, "w") as fh:
            fh.write(str(os.getpid()))
    parent_stats = _open_audit_log(cfg)
    procs = [ctx.Process(target=_live_worker, args=(cfg, list(args.interfaces), i, group, q, eve_mode, alert_metrics,
                                                    n), daemon=True)
             for i in range(n)]
    _start_workers(procs, cfg)
    merged = Stats()
    per_worker = {PARENT: (parent_stats.counters, parent_stats.gauges)}
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
