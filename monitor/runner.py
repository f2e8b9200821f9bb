"""Drives a pipeline from a capture source: pcap replay and live AF_PACKET capture.

Also assembles the sensor's sinks around the pipeline (metrics, coverage, incidents,
evidence, audit, notifications) so that replay and live mode behave the same.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

from monitor.config import Config, load_config
from monitor.pipeline import Pipeline

log = logging.getLogger("leakmon")

# Collector thresholds while a sensor runs. A sensor allocates a few objects per packet and
# keeps tens of thousands of flows (each a few container objects) alive: with CPython's
# defaults (700, 10, 10) the collector keeps walking the surviving flows, and a full collection
# runs every ~70,000 net allocations; measured (gc callbacks, CPU time) 1.1 s of a 100,000-SYN
# flood and 2.0 s of a 20,000-flow HTTP replay, against 0.17 s and 0.39 s with these. Reference
# counting frees almost all of the sensor's garbage; the collector is only there for cycles.
GC_THRESHOLDS = (50_000, 50, 100)


# glibc allocator settings for a sensor process (mallopt parameters). The capture reader and the
# reassembly allocate blocks of about 1 MiB again and again; glibc serves a block that large
# with a fresh mmap unless its (dynamic) threshold lies above the block's size, and a block of
# the threshold's own size still gets one: every block's pages fault in anew and go back to the
# kernel when freed. Measured on a 214 MB capture: ~48,000 page faults and ~0.2 s of system time
# per pass over the file (each --workers process makes a pass), ~1,000 with these. Blocks above
# 4 MiB are still mapped on their own; at most 32 MiB of free heap is kept for reuse.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 4 << 20
TRIM_THRESHOLD = 32 << 20


def tune_allocator() -> bool:
    """Apply the sensor's allocator settings; False where the C library is not glibc."""
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False  # musl and others: no mallopt; their own defaults apply
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


@contextlib.contextmanager
def sensor_gc() -> Iterator[None]:
    """Collector settings for the packet loop; restored on exit (replay may run in-process).

    The objects that exist when the loop starts (signature databases, compiled rules, config)
    live as long as the sensor: ``gc.freeze`` takes them out of every later collection.
    """
    old = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*old)
        gc.unfreeze()


def apply_overrides(cfg: Config, args: argparse.Namespace) -> Config:
    """Command-line options that override the file."""
    if getattr(args, "bpf", None) is not None:
        cfg = dataclasses.replace(cfg, capture=dataclasses.replace(cfg.capture, bpf=args.bpf))
    if getattr(args, "metrics_addr", None) is not None:
        cfg = dataclasses.replace(cfg, metrics=dataclasses.replace(cfg.metrics, addr=args.metrics_addr))
    literals = getattr(args, "literal", None) or []
    hashes = getattr(args, "sha256", None) or []
    if literals or hashes:
        cfg = dataclasses.replace(cfg, signatures=[*cfg.signatures, adhoc_signature_file(literals, hashes)])
    return cfg


def adhoc_signature_file(literals: list[str], hashes: list[str]) -> str:
    """A temporary signature file for `replay --literal/--sha256` hunts (sids 9900001..)."""
    import yaml

    doc: dict[str, Any] = {"markers": [], "fingerprints": []}
    for i, text in enumerate(literals):
        doc["markers"].append({"sid": 9900001 + i, "msg": f"ad-hoc literal #{i + 1}", "priority": 1,
                               "literal": text, "category": "protected-data-leak"})
    for i, h in enumerate(hashes):
        doc["fingerprints"].append({"sid": 9910001 + i, "msg": f"ad-hoc sha256 #{i + 1}", "sha256": h.lower()})
    fd, path = tempfile.mkstemp(prefix="leakmon-hunt-", suffix=".yaml")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        yaml.safe_dump(doc, fh, allow_unicode=True)
    return path


class Sensor:
    """A pipeline plus the sinks and services around it."""

    def __init__(self, cfg: Config, *, eve_path: str | None, replay: bool, stats: Any = None) -> None:
        self.cfg = cfg
        self.pipeline = Pipeline(cfg, eve_path=eve_path, replay=replay, stats=stats)
        self.stats = self.pipeline.stats
        self.closers: list[Any] = []
        self.audit: Any = None
        self.metrics: Any = None
        self.coverage: Any = None
        self.canary: Any = None
        self.incidents: Any = None
        self._attach_sinks(replay)

    def _attach_sinks(self, replay: bool) -> None:
        from monitor.sinks import attach_sinks

        attach_sinks(self, replay)

    def finish(self, reason: str = "shutdown") -> None:
        self.pipeline.finish(reason)
        for close in reversed(self.closers):
            try:
                close()
            except Exception:  # noqa: BLE001
                log.exception("error while closing a sink")


def _eve_path(cfg: Config, args: argparse.Namespace) -> str:
    if args.eve_log:
        return str(args.eve_log)
    return cfg.resolve(cfg.outputs.eve.path)


def replay(args: argparse.Namespace) -> int:
    from monitor.capture.pcapfile import read_capture

    cfg = apply_overrides(load_config(args.config), args)
    tune_allocator()  # before the workers fork: they inherit it
    if args.workers and args.workers > 1:
        from monitor.workers import replay_sharded

        return replay_sharded(cfg, args)
    sensor = Sensor(cfg, eve_path=_eve_path(cfg, args), replay=True)
    pipeline = sensor.pipeline
    progress = not args.no_progress and sys.stderr.isatty()
    t0 = time.perf_counter()
    c0 = time.process_time()
    cnt = 0
    interrupted = False
    with sensor_gc():
        try:
            for path in args.files:
                capture = read_capture(path, stats=sensor.stats, bpf=cfg.capture.bpf, progress=progress,
                                       start_cnt=cnt)
                pipeline.replay_capture(capture)
                cnt = pipeline.pcap_cnt
        except KeyboardInterrupt:
            interrupted = True
        sensor.finish("shutdown")
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    nbytes = pipeline.bytes
    alerts = sensor.stats.total("detect.alerts")
    print(f"leakmon: {pipeline.packets} packets, {nbytes} bytes, {sensor.stats.total('flow.created')} flows, "
          f"{alerts} alerts in {wall:.2f}s ({nbytes * 8 / max(wall, 1e-9) / 1e9:.2f} Gbps, cpu {cpu:.2f}s)",
          file=sys.stderr)
    return 130 if interrupted else 0


def live(args: argparse.Namespace) -> int:
    from monitor.capture.afpacket import LiveCapture

    cfg = apply_overrides(load_config(args.config), args)
    tune_allocator()  # before the workers fork: they inherit it
    if args.workers and args.workers > 1:
        from monitor.workers import live_sharded

        return live_sharded(cfg, args)
    sensor = Sensor(cfg, eve_path=_eve_path(cfg, args), replay=False)
    pipeline = sensor.pipeline
    stop = threading.Event()
    reload_requested = threading.Event()

    def _stop(signum: int, frame: Any) -> None:
        stop.set()

    def _hup(signum: int, frame: Any) -> None:
        reload_requested.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGHUP, _hup)
    if args.pidfile:
        with open(args.pidfile, "w") as fh:
            fh.write(str(os.getpid()))
    cap = LiveCapture(args.interfaces, cfg.capture, sensor.stats)
    sensor.live_capture = cap  # type: ignore[attr-defined]
    next_stats = time.time() + cfg.outputs.stats_interval
    next_tick = 0.0
    with sensor_gc():
        try:
            # The ring's frames go to process_frame in place; RawPackets only where it declines,
            # and for the frames walk() keeps off the fast path (a zero timestamp: ours instead).
            for _ in cap.walk(pipeline.process_frame, pipeline.process_decoded, partial(_process_stamped, pipeline)):
                pipeline.flush_chunks()  # a block is done: nothing waits for the next one (latency)
                now = time.time()
                if now >= next_tick:
                    next_tick = now + 0.5
                    pipeline.tick(now)
                    _kernel_stats(sensor, cap)
                    if sensor.coverage is not None:
                        sensor.coverage.tick(now, sensor)
                    if sensor.canary is not None:
                        sensor.canary.tick(now)
                    if reload_requested.is_set():
                        reload_requested.clear()
                        sensor_reload(sensor)
                    if now >= next_stats:
                        next_stats = now + cfg.outputs.stats_interval
                        pipeline.emit(pipeline.stats_event())
                        if pipeline.eve is not None:
                            pipeline.eve.flush()
                if stop.is_set():
                    break
        finally:
            _kernel_stats(sensor, cap)
            cap.close()
            sensor.finish("shutdown")
            if args.pidfile:
                try:
                    os.unlink(args.pidfile)
                except OSError:
                    pass
    return 0


def _process_stamped(pipeline: Pipeline, raw: Any) -> None:
    """A live frame without a kernel timestamp gets the wall clock, then the full path."""
    raw.ts = raw.ts or time.time()
    pipeline.process(raw)


def _kernel_stats(sensor: Sensor, cap: Any) -> None:
    for iface, (pkts, drops) in cap.kernel_stats().items():
        sensor.stats.set("capture.kernel_packets", pkts, iface=iface)
        sensor.stats.set("capture.kernel_drops", drops, iface=iface)


def sensor_reload(sensor: Sensor) -> None:
    ok, message = sensor.pipeline.detection.reload()
    if gc.get_freeze_count():
        # The replaced signature set was frozen with the rest of the start-up objects: let a
        # full collection see it, then freeze the new set in its place.
        gc.unfreeze()
        gc.collect()
        gc.freeze()
    if sensor.audit is not None:
        sensor.audit.record("signatures_reloaded" if ok else "signatures_reload_failed",
                            {"version": sensor.pipeline.detection.version, "message": message})
    (log.info if ok else log.error)("signature reload: %s", message)
