"""Prometheus exporter: sensor counters, alert counts, latency, health, served over HTTP.

Nothing here runs per packet. The pipeline counts into :class:`monitor.stats.Stats`; a custom
collector reads those counters at scrape time through ONE explicit table (:data:`METRICS`)
that names every exported metric, its type, help text and the only labels it may carry.
As an :class:`~monitor.events.EventBus` sink the exporter counts alerts (sid, category,
severity) and observes the packet-to-alert latency.

Privacy: a label value is never an address, a file name or content. Labels are restricted
per metric to the table's allow-list, values must look like identifiers (no spaces, at most
64 characters, not an IP address), and each label keeps at most ``metrics.label_values_cap``
distinct values; anything else becomes ``"other"`` and counts in
``leakmon_metric_label_overflow_total{metric}``.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector

from monitor.config import Config
from monitor.events import Event
from monitor.stats import Stats

log = logging.getLogger("leakmon.metrics")

OTHER = "other"
# Seconds from the packet entering the pipeline to the alert leaving detection.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
MAX_WALL_LATENCY = 300.0
_LABEL_VALUE = re.compile(r"[\w.:/@+\-]{1,64}")


@dataclass(frozen=True)
class MetricSpec:
    """How one Stats name becomes (part of) one Prometheus metric."""

    stat: str  # monitor.stats name, e.g. "capture.packets"
    metric: str  # Prometheus name, e.g. "leakmon_packets_total"
    kind: str  # "counter" | "gauge"
    help: str
    labels: tuple[tuple[str, str], ...] = ()  # (Stats label, Prometheus label) allowed through
    const: tuple[tuple[str, str], ...] = ()  # fixed labels (several Stats names share one metric)
    always: bool = False  # export 0 when the sensor never counted it (rules need the series)


_IFACE = (("iface", "interface"),)

# The one table: every Stats name the exporter knows, and nothing else is exported from Stats.
METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("capture.packets", "leakmon_packets_total", "counter", "Packets received by the sensor", _IFACE),
    MetricSpec("capture.bytes", "leakmon_bytes_total", "counter", "Bytes received by the sensor (wire length)", _IFACE),
    MetricSpec("capture.kernel_packets", "leakmon_kernel_packets_total", "counter",
               "Packets the kernel ring saw (PACKET_STATISTICS)", _IFACE),
    MetricSpec("capture.kernel_drops", "leakmon_kernel_drops_total", "counter",
               "Packets dropped by the kernel before the sensor read them", _IFACE),
    MetricSpec("capture.internal_drops", "leakmon_internal_drops_total", "counter",
               "Packets the sensor received but could not process (queues full)", _IFACE),
    MetricSpec("capture.last_packet_ts", "leakmon_last_packet_timestamp_seconds", "gauge",
               "Timestamp of the last packet seen on the interface", _IFACE),
    MetricSpec("capture.running", "leakmon_capture_running", "gauge",
               "1 while the capture source of the interface is open", _IFACE),
    MetricSpec("capture.socket_errors", "leakmon_capture_socket_errors_total", "counter",
               "Errors the capture socket reported (interface down, flapped or removed)", _IFACE),
    MetricSpec("flow.created", "leakmon_flows_created_total", "counter", "Flows created", always=True),
    MetricSpec("flow.evicted", "leakmon_flows_evicted_total", "counter",
               "Flows ended early by the flow table (memcap, max_flows)", (("reason", "reason"),)),
    MetricSpec("flow.active", "leakmon_flows_active", "gauge", "Flows currently tracked", always=True),
    MetricSpec("stream.gap", "leakmon_stream_gaps_total", "counter",
               "TCP reassembly gaps (lost segments skipped)", always=True),
    MetricSpec("stream.overlap", "leakmon_stream_overlaps_total", "counter", "Overlapping TCP segments",
               always=True),
    MetricSpec("stream.overlap_different_data", "leakmon_stream_overlaps_different_data_total", "counter",
               "Overlapping TCP segments that carried different bytes", always=True),
    MetricSpec("stream.memcap", "leakmon_memcap_hits_total", "counter",
               "Times a memory cap was hit (data was dropped or skipped)", (("cap", "cap"),),
               const=(("stage", "stream"),)),
    MetricSpec("defrag.memcap", "leakmon_memcap_hits_total", "counter",
               "Times a memory cap was hit (data was dropped or skipped)", (("cap", "cap"),),
               const=(("stage", "defrag"),)),
    MetricSpec("flow.memcap", "leakmon_memcap_hits_total", "counter",
               "Times a memory cap was hit (data was dropped or skipped)", (("cap", "cap"),),
               const=(("stage", "flow"),)),
    MetricSpec("defrag.memcap_drop", "leakmon_memcap_hits_total", "counter",
               "Times a memory cap was hit (data was dropped or skipped)", const=(("stage", "defrag"), ("cap", "drop"))),
    MetricSpec("defrag.memcap_evict", "leakmon_memcap_hits_total", "counter",
               "Times a memory cap was hit (data was dropped or skipped)", const=(("stage", "defrag"), ("cap", "evict"))),
    # Generic memcap counter: the stage is the first part of the cap name ("detect.flow_keys").
    MetricSpec("memcap.hit", "leakmon_memcap_hits_total", "counter",
               "Times a memory cap was hit (data was dropped or skipped)", (("cap", "cap"),),
               const=(("stage", "@cap"),)),
    MetricSpec("decoder.anomaly", "leakmon_anomalies_total", "counter", "Anomalies by layer and type",
               (("type", "type"),), const=(("layer", "decoder"),)),
    MetricSpec("decode.anomaly", "leakmon_anomalies_total", "counter", "Anomalies by layer and type",
               (("type", "type"),), const=(("layer", "decoder"),)),
    MetricSpec("defrag.anomaly", "leakmon_anomalies_total", "counter", "Anomalies by layer and type",
               (("type", "type"),), const=(("layer", "defrag"),)),
    MetricSpec("stream.anomaly", "leakmon_anomalies_total", "counter", "Anomalies by layer and type",
               (("type", "type"),), const=(("layer", "stream"),)),
    MetricSpec("capture.anomaly", "leakmon_anomalies_total", "counter", "Anomalies by layer and type",
               (("type", "type"),), const=(("layer", "capture"),)),
    MetricSpec("mime.anomaly", "leakmon_anomalies_total", "counter", "Anomalies by layer and type",
               (("type", "type"),), const=(("layer", "mime"),)),
    MetricSpec("applayer.anomaly", "leakmon_anomalies_total", "counter", "Anomalies by layer and type",
               (("type", "type"),), const=(("layer", "applayer"),)),
    MetricSpec("content.anomaly", "leakmon_anomalies_total", "counter", "Anomalies by layer and type",
               (("type", "type"),), const=(("layer", "content"),)),
    MetricSpec("content.cap", "leakmon_content_limit_hits_total", "counter",
               "Content decoder limits hit (size, ratio, depth, members, buffer)", (("cap", "cap"),)),
    MetricSpec("content.decompress_cap", "leakmon_content_limit_hits_total", "counter",
               "Content decoder limits hit (size, ratio, depth, members, buffer)", (("cap", "cap"),)),
    MetricSpec("smtp.cap_hit", "leakmon_parser_limit_hits_total", "counter",
               "Protocol parser limits hit (the rest of the item is not parsed)", (("cap", "cap"),),
               const=(("protocol", "smtp"),)),
    MetricSpec("ftp.cap_hit", "leakmon_parser_limit_hits_total", "counter",
               "Protocol parser limits hit (the rest of the item is not parsed)", (("cap", "cap"),),
               const=(("protocol", "ftp"),)),
    MetricSpec("mime.cap_hit", "leakmon_parser_limit_hits_total", "counter",
               "Protocol parser limits hit (the rest of the item is not parsed)", (("cap", "cap"),),
               const=(("protocol", "mime"),)),
    MetricSpec("stream.gap_bytes", "leakmon_stream_gap_bytes_total", "counter",
               "Bytes skipped by TCP reassembly gaps (never inspected)", always=True),
    MetricSpec("stream.depth_reached", "leakmon_stream_depth_reached_total", "counter",
               "Flow directions that reached stream.depth (the rest is not inspected)"),
    MetricSpec("detect.bytes", "leakmon_detect_bytes_total", "counter", "Bytes matched by detection, by view",
               (("view", "view"),)),
    MetricSpec("detect.matches", "leakmon_detect_matches_total", "counter",
               "Signature matches by encoding variant", (("variant", "variant"),)),
    MetricSpec("detect.internal_error", "leakmon_internal_errors_total", "counter",
               "Internal errors contained (the packet path went on)", const=(("stage", "detect"),)),
    MetricSpec("coverage.error", "leakmon_internal_errors_total", "counter",
               "Internal errors contained (the packet path went on)", const=(("stage", "coverage"),)),
    MetricSpec("incidents.opened", "leakmon_incidents_opened_total", "counter", "Incidents opened"),
    MetricSpec("notify.sent", "leakmon_notifications_total", "counter", "Notifications by channel and outcome",
               (("channel", "channel"),), const=(("outcome", "sent"),)),
    MetricSpec("notify.failed", "leakmon_notifications_total", "counter", "Notifications by channel and outcome",
               (("channel", "channel"),), const=(("outcome", "failed"),)),
    MetricSpec("notify.dropped", "leakmon_notifications_total", "counter", "Notifications by channel and outcome",
               (("channel", "channel"),), const=(("outcome", "dropped"),)),
    MetricSpec("evidence.write_error", "leakmon_evidence_write_errors_total", "counter",
               "Evidence files that could not be written"),
    MetricSpec("files", "leakmon_files_total", "counter", "Files seen by protocol and final state",
               (("protocol", "protocol"), ("state", "state"))),
    MetricSpec("signatures.reload_failed", "leakmon_signature_reload_failures_total", "counter",
               "Signature reloads that failed (the previous set stays active)", always=True),
    MetricSpec("signatures.loaded_at", "leakmon_signature_load_timestamp_seconds", "gauge",
               "When the active signature set was loaded (0 = none loaded)", always=True),
    MetricSpec("signatures.count", "leakmon_signatures", "gauge", "Signatures in the active set, by kind",
               const=(("kind", "all"),)),
    MetricSpec("signatures.loaded", "leakmon_signatures", "gauge", "Signatures in the active set, by kind",
               (("kind", "kind"),)),
    MetricSpec("signatures.reloaded", "leakmon_signature_reloads_total", "counter", "Successful signature reloads"),
    MetricSpec("signatures.patterns", "leakmon_signature_patterns", "gauge",
               "Patterns compiled into the matcher (all encodings and variants)"),
    MetricSpec("signatures.db_cache", "leakmon_signature_db_cache_total", "counter",
               "Compiled matcher databases taken from the on-disk cache or compiled, by result",
               (("result", "outcome"),)),
    MetricSpec("coverage.gaps", "leakmon_coverage_gaps_total", "counter",
               "Monitoring gaps closed, by cause (常時監視 record)", (("cause", "cause"),)),
    MetricSpec("coverage.gap_active", "leakmon_coverage_gap_active", "gauge",
               "1 while a monitoring gap of this cause is open", (("cause", "cause"), ("iface", "interface"))),
    MetricSpec("canary.runs", "leakmon_canary_runs_total", "counter", "Canary flows injected"),
    MetricSpec("canary.successes", "leakmon_canary_successes_total", "counter",
               "Canary flows that raised the canary alert"),
    MetricSpec("canary.failures", "leakmon_canary_failures_total", "counter",
               "Canary flows that raised no alert in time"),
    MetricSpec("canary.last_success", "leakmon_canary_last_success_timestamp_seconds", "gauge",
               "When the canary last proved detection end to end"),
    MetricSpec("output.sink_error", "leakmon_sink_errors_total", "counter", "Event sinks that raised",
               (("sink", "sink"),)),
    MetricSpec("output.anomaly_suppressed", "leakmon_anomaly_events_suppressed_total", "counter",
               "Anomaly events not written (rate limit); the counters still count them"),
)

# Metrics the exporter itself produces (not from Stats); listed so docs and tests see every name.
OWN_METRICS: dict[str, str] = {
    "leakmon_alerts_total": "counter",
    "leakmon_events_total": "counter",
    "leakmon_alert_latency_seconds": "histogram",
    "leakmon_metric_label_overflow_total": "counter",
    "leakmon_clock_seconds": "gauge",
    "leakmon_start_time_seconds": "gauge",
    "leakmon_ready": "gauge",
    "leakmon_build_info": "info",
    "leakmon_signatures_version_info": "info",
    "leakmon_canary_interval_seconds": "gauge",
    "leakmon_canary_last_success_timestamp_seconds": "gauge",
}


def exported_metric_names() -> set[str]:
    """Every family name the exporter may expose (Prometheus sample names derive from these)."""
    return {s.metric for s in METRICS} | set(OWN_METRICS)


class LabelGuard:
    """Bounded, content-free label values: per (metric, label) at most ``cap`` distinct values."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._seen: dict[tuple[str, str], set[str]] = {}
        self.overflow: dict[str, int] = {}
        self._lock = threading.Lock()

    def value(self, metric: str, label: str, raw: Any) -> str:
        v = str(raw)
        if not _LABEL_VALUE.fullmatch(v) or _looks_like_address(v):
            self._count(metric)
            return OTHER
        with self._lock:
            seen = self._seen.setdefault((metric, label), set())
            if v in seen:
                return v
            if len(seen) >= self.cap:
                self._count_locked(metric)
                return OTHER
            seen.add(v)
            return v

    def _count(self, metric: str) -> None:
        with self._lock:
            self._count_locked(metric)

    def _count_locked(self, metric: str) -> None:
        self.overflow[metric] = self.overflow.get(metric, 0) + 1


def _looks_like_address(v: str) -> bool:
    if not any(c.isdigit() for c in v) or not (v.count(".") == 3 or ":" in v):
        return False
    try:
        ipaddress.ip_address(v.split("/")[0])
    except ValueError:
        return False
    return True


InfoSource = Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None


def sensor_info(sensor: Any) -> Callable[[], dict[str, Any]]:
    """Info for the exporter, read at scrape time from a ``monitor.runner.Sensor``-like object."""

    def read() -> dict[str, Any]:
        pipeline = getattr(sensor, "pipeline", None)
        detection = getattr(pipeline, "detection", None)
        live = getattr(sensor, "live_capture", None)
        replay = bool(getattr(pipeline, "replay", False))
        closed = bool(getattr(pipeline, "_closed", False))
        info: dict[str, Any] = {"mode": "replay" if replay else "live"}
        if detection is not None:
            info["signatures_version"] = str(getattr(detection, "version", "") or "")
            info["signatures_loaded_at"] = float(getattr(detection, "loaded_at", 0) or 0)
        info["capture_running"] = (not closed) and (replay or live is not None)
        return info

    return read


class _Collector:
    """Reads Stats and the exporter's own counters at scrape time."""

    def __init__(self, exporter: MetricsExporter) -> None:
        self.x = exporter
        self._by_stat = {s.stat: s for s in METRICS}

    def describe(self) -> list[Metric]:
        return []  # unchecked collector: families vary with what the sensor counted

    def collect(self) -> Iterator[Metric]:
        x = self.x
        counters, gauges = _read_stats(x.stats)
        samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        specs: dict[str, MetricSpec] = {}
        ifaces: set[str] = set()
        for (name, labels), value in list(counters.items()) + list(gauges.items()):
            spec = self._by_stat.get(name)
            if spec is None:
                continue
            lab = dict(spec.const)
            given = dict(labels)
            if lab.get("stage") == "@cap":
                lab["stage"] = x.guard.value(spec.metric, "stage", str(given.get("cap", "other")).split(".")[0])
            for stat_label, prom_label in spec.labels:
                if stat_label in given:
                    lab[prom_label] = x.guard.value(spec.metric, prom_label, given[stat_label])
                elif prom_label not in lab:
                    lab[prom_label] = spec.stat.split(".")[0] if prom_label == "cap" else ""
            if lab.get("interface"):
                ifaces.add(lab["interface"])
            key = tuple(sorted(lab.items()))
            fam = samples.setdefault(spec.metric, {})
            fam[key] = fam.get(key, 0.0) + float(value)
            specs.setdefault(spec.metric, spec)
        for spec in METRICS:
            if spec.labels == _IFACE and spec.kind == "counter":
                fam = samples.setdefault(spec.metric, {})
                specs.setdefault(spec.metric, spec)
                for iface in ifaces:
                    fam.setdefault((("interface", iface),), 0.0)
            elif spec.always and not spec.labels:
                samples.setdefault(spec.metric, {}).setdefault((), 0.0)
                specs.setdefault(spec.metric, spec)
        info = x.info()
        loaded_at = float(info.get("signatures_loaded_at") or 0)
        if loaded_at and not samples.get("leakmon_signature_load_timestamp_seconds", {}).get(()):
            samples.setdefault("leakmon_signature_load_timestamp_seconds", {})[()] = loaded_at
        if x.canary_enabled:
            samples.setdefault("leakmon_canary_last_success_timestamp_seconds", {}).setdefault((), 0.0)
            specs.setdefault("leakmon_canary_last_success_timestamp_seconds",
                             self._by_stat["canary.last_success"])
        for metric, fam in sorted(samples.items()):
            spec = specs[metric]
            if not fam:
                continue
            names = sorted({k for key in fam for k, _ in key})
            mf: Metric
            if spec.kind == "counter":
                mf = CounterMetricFamily(metric, spec.help, labels=names)
            else:
                mf = GaugeMetricFamily(metric, spec.help, labels=names)
            for key, value in sorted(fam.items()):
                d = dict(key)
                mf.add_metric([d.get(n, "") for n in names], value)
            yield mf
        yield from self._own(info)

    def _own(self, info: Mapping[str, Any]) -> Iterable[Metric]:
        x = self.x
        alerts = CounterMetricFamily("leakmon_alerts_total", "Alerts raised, by signature, category and severity",
                                     labels=["sid", "category", "severity"])
        with x.lock:
            alert_counts = sorted(x.alert_counts.items())
            event_counts = sorted(x.event_counts.items())
        for (sid, category, severity), n in alert_counts:
            alerts.add_metric([sid, category, severity], n)
        yield alerts
        events = CounterMetricFamily("leakmon_events_total", "Events published, by EVE event type",
                                     labels=["event_type"])
        for et, n in event_counts:
            events.add_metric([et], n)
        yield events
        over = CounterMetricFamily("leakmon_metric_label_overflow_total",
                                   "Label values replaced by 'other' (cardinality cap or not an identifier)",
                                   labels=["metric"])
        for metric, n in sorted(dict(x.guard.overflow).items()):
            over.add_metric([metric], n)
        yield over
        yield GaugeMetricFamily("leakmon_clock_seconds", "The sensor's wall clock (compare with Prometheus time())",
                                value=time.time())
        yield GaugeMetricFamily("leakmon_start_time_seconds", "When the sensor process started", value=x.started)
        health = x.health()
        yield GaugeMetricFamily("leakmon_ready", "1 when signatures are loaded and capture is running",
                                value=1.0 if health["ready"] else 0.0)
        build = {"version": x.guard.value("leakmon_build_info", "version", x.version),
                 "python": f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}",
                 "mode": x.guard.value("leakmon_build_info", "mode", info.get("mode") or "live")}
        yield InfoMetricFamily("leakmon_build", "leakmon build and run mode", value=build)
        sig_version = str(info.get("signatures_version") or "") or _latest_label(x.stats, "signatures.version_info",
                                                                               "version")
        if sig_version:
            yield InfoMetricFamily("leakmon_signatures_version", "Version of the active signature set",
                                   value={"version": x.guard.value("leakmon_signatures_version_info", "version",
                                                                   sig_version)})
        if x.canary_enabled:
            yield GaugeMetricFamily("leakmon_canary_interval_seconds", "Configured canary period",
                                    value=x.cfg.canary.interval)


def _latest_label(stats: Stats, name: str, label: str) -> str:
    """The label value of the most recently created gauge ``name`` (the active signature version)."""
    found = ""
    for (n, labels), value in list(stats.gauges.items()):
        if n == name and value:
            found = dict(labels).get(label, found)
    return found


def _read_stats(stats: Stats) -> tuple[dict[Any, float], dict[Any, float]]:
    """A consistent-enough copy of the counters while the pipeline thread keeps counting."""
    for _ in range(5):
        try:
            return dict(stats.counters), dict(stats.gauges)
        except RuntimeError:  # dict changed size during copy; try again
            continue
    return {}, {}


class MetricsExporter:
    """Prometheus exporter and EventBus sink. ``start()`` serves /metrics and /healthz."""

    def __init__(self, cfg: Config, stats: Stats, info: InfoSource = None) -> None:
        self.cfg = cfg
        self.stats = stats
        self._info = info
        self.started = time.time()
        self.version = _package_version()
        self.canary_enabled = bool(cfg.canary.enabled)
        self.guard = LabelGuard(cfg.metrics.label_values_cap)
        # Present from the start (0) so dashboards and rules see the series before any overflow.
        self.guard.overflow["leakmon_alerts_total"] = 0
        self.lock = threading.Lock()
        self.alert_counts: dict[tuple[str, str, str], int] = {}
        self.event_counts: dict[str, int] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))  # type: ignore[arg-type]
        ProcessCollector(namespace="", registry=self.registry)
        self.latency = Histogram("leakmon_alert_latency_seconds",
                                 "Seconds from the packet entering the pipeline to its alert",
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self._live = str(self.info().get("mode", "live")) == "live"
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ sink

    def __call__(self, event: Event) -> None:
        et = event.event_type
        with self.lock:
            self.event_counts[et] = self.event_counts.get(et, 0) + 1
        if et != "alert":
            return
        alert = event.body.get("alert") or {}
        key = (self.guard.value("leakmon_alerts_total", "sid", alert.get("signature_id", "0")),
               self.guard.value("leakmon_alerts_total", "category", alert.get("category") or "none"),
               self.guard.value("leakmon_alerts_total", "severity", alert.get("severity", "0")))
        with self.lock:
            self.alert_counts[key] = self.alert_counts.get(key, 0) + 1
        if event.ingress is not None:
            self.latency.observe(max(0.0, time.monotonic() - event.ingress))
        elif self._live:
            # Live capture stamps packets with the wall clock: alert time minus packet time is the
            # latency too (kernel queueing included). Replays carry old timestamps: not observed.
            delay = time.time() - event.ts
            if 0.0 <= delay < MAX_WALL_LATENCY:
                self.latency.observe(delay)

    # ------------------------------------------------------------------ health

    def info(self) -> Mapping[str, Any]:
        src = self._info
        try:
            got = src() if callable(src) else src
        except Exception:  # noqa: BLE001 - a broken info source must not break scrapes
            log.exception("metrics info source failed")
            got = None
        return got or {}

    def health(self) -> dict[str, Any]:
        """live: the process answers; ready: signatures loaded and capture running."""
        info = self.info()
        loaded_at = float(self.stats.get("signatures.loaded_at") or info.get("signatures_loaded_at") or 0)
        # A set that reports zero signatures is not a loaded set.
        counts = [v for (n, _), v in list(self.stats.gauges.items()) if n in ("signatures.count", "signatures.loaded")]
        sigs_loaded = loaded_at > 0 and (not counts or sum(counts) > 0)
        if "capture_running" in info:
            capturing = bool(info["capture_running"])
        else:
            running = [v for (n, _), v in list(self.stats.gauges.items()) if n == "capture.running"]
            capturing = any(v > 0 for v in running)
        return {
            "live": True,
            "ready": sigs_loaded and capturing,
            "checks": {"signatures_loaded": sigs_loaded, "capture_running": capturing},
            "sensor": self.cfg.sensor.name,
            "version": self.version,
            "uptime_seconds": round(time.time() - self.started, 3),
        }

    # ------------------------------------------------------------------ HTTP

    def start(self) -> MetricsExporter:
        """Serve on cfg.metrics.addr in a daemon thread (no-op when the address is empty)."""
        addr = self.cfg.metrics.addr
        if not addr or self._server is not None:
            return self
        host, port = split_addr(addr)
        exporter = self

        class Handler(_Handler):
            pass

        Handler.exporter = exporter
        server_cls = _server_class(host)
        self._server = server_cls((host, port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="leakmon-metrics", daemon=True)
        self._thread.start()
        log.info("metrics on http://%s/metrics", self.address)
        return self

    @property
    def address(self) -> str:
        """HOST:PORT actually bound (the port is chosen by the kernel for ':0')."""
        if self._server is None:
            return ""
        host = str(self._server.server_address[0])
        port = int(self._server.server_address[1])
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def port(self) -> int:
        return int(self._server.server_address[1]) if self._server is not None else 0

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


def split_addr(addr: str) -> tuple[str, int]:
    """'127.0.0.1:9917' / '[::1]:9917' / ':9917' -> (host, port)."""
    host, _, port = addr.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


class _NoLookupServer(ThreadingHTTPServer):
    """HTTPServer.server_bind resolves the bound address to a name (getfqdn): a DNS query at
    start-up that can stall the sensor when DNS is slow and sends traffic nobody asked for.
    Bind plainly and use the numeric address as the server name."""

    def server_bind(self) -> None:
        import socketserver

        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)


def _server_class(host: str) -> type[ThreadingHTTPServer]:
    import socket

    if ":" not in host:
        return _NoLookupServer

    class V6(_NoLookupServer):
        address_family = socket.AF_INET6

    return V6


class _Handler(BaseHTTPRequestHandler):
    exporter: MetricsExporter
    server_version = "leakmon-metrics"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            body, ctype = self.exporter.exposition(self.headers.get("Accept", ""))
            self._send(200, body, ctype)
        elif path in ("/healthz", "/healthz/ready", "/healthz/live"):
            h = self.exporter.health()
            ok = h["live"] if path == "/healthz/live" else h["ready"]
            self._send(200 if ok else 503, json.dumps(h).encode(), "application/json")
        elif path == "/":
            self._send(200, b"leakmon exporter: /metrics /healthz /healthz/live /healthz/ready\n", "text/plain")
        else:
            self._send(404, b"not found\n", "text/plain")

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - scrapes are not news
        return


def _package_version() -> str:
    try:
        from monitor import __version__

        return str(__version__)
    except ImportError:
        return "unknown"
