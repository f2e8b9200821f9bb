"""Assembles the sinks around a pipeline: incidents, evidence, audit, notifications, metrics,
coverage, canary.

Kept apart from the pipeline so the packet path does not import what it does not use, and so
replay and live mode attach the same sinks. Order matters: the incident manager runs before
the audit sink because it tags alert events with their incident id.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("leakmon.sinks")


def attach_sinks(sensor: Any, replay: bool) -> None:
    """Subscribe every configured sink to the sensor's event bus and register their closers."""
    from alerts.audit import AuditLog
    from alerts.evidence import EvidenceStore
    from alerts.incidents import IncidentManager
    from alerts.notify import Notifier

    cfg = sensor.cfg
    stats = sensor.stats
    pipeline = sensor.pipeline
    bus = pipeline.bus

    audit = AuditLog(cfg.audit, stats, base_dir=cfg.base_dir)
    sensor.audit = audit
    audit.record("sensor_start", {"mode": "replay" if replay else "live", "sensor": cfg.sensor.name})
    audit.record("config_loaded", {"file": cfg.source, "protected": list(cfg.networks.protected)})
    det = pipeline.detection
    audit.record("signatures_loaded", {"version": getattr(det, "version", ""), "count": getattr(det, "count", 0)})

    evidence = EvidenceStore(cfg, stats, audit) if cfg.evidence.enabled else None
    if evidence is not None and not getattr(evidence, "enabled", True):
        pipeline.disable_evidence()
    notifier = Notifier(cfg.notify, stats, base_dir=cfg.base_dir)
    incidents = IncidentManager(cfg, stats, evidence, audit, notifier, pipeline.names,
                                eve_path=pipeline.eve.path if pipeline.eve is not None else "")
    sensor.incidents = incidents
    bus.subscribe("incidents", incidents)
    bus.subscribe("audit", audit)

    metrics = _metrics(sensor, replay)
    coverage = _coverage(sensor, replay)
    sensor.canary = None
    if cfg.canary.enabled and not replay:
        from monitor.canary import Canary

        # A synthetic leak injected through the same packet path proves detection end to end.
        sensor.canary = Canary(cfg.canary, pipeline.inject, stats=stats)
        bus.subscribe("canary", sensor.canary)

    def close() -> None:
        incidents.close()
        if evidence is not None:
            evidence.close()
        notifier.close()
        if coverage is not None:
            coverage.close()
        if metrics is not None:
            metrics.close()
        audit.record("sensor_stop", {"packets": pipeline.packets})
        audit.close()

    sensor.closers.append(close)


def _metrics(sensor: Any, replay: bool) -> Any:
    cfg = sensor.cfg
    if not cfg.metrics.addr:
        # Disabled: an exporter nobody can scrape has no effect, so neither it nor
        # prometheus_client (~25 ms of imports) is loaded. Workers run with the address cleared:
        # their parent serves the merged counters.
        return None
    try:
        from alerts.metrics import MetricsExporter, sensor_info
    except ImportError:  # the exporter module is optional at import time only in development trees
        return None
    exporter = MetricsExporter(cfg, sensor.stats, sensor_info(sensor))
    sensor.pipeline.bus.subscribe("metrics", exporter)
    sensor.metrics = exporter
    if cfg.metrics.addr:
        exporter.start()
    return exporter


def _coverage(sensor: Any, replay: bool) -> Any:
    if replay:
        return None  # coverage is about the live sensor's continuity; replays are investigations
    from monitor.coverage import CoverageTracker

    tracker = CoverageTracker(sensor.cfg, sensor.stats, sensor.pipeline.emit)
    sensor.coverage = tracker
    return tracker

