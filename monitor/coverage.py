"""Coverage record for 常時監視 (基準 10(11)オ): when was monitoring NOT effective, and why.

:class:`CoverageTracker` runs inside the sensor. The pipeline calls ``tick(now_wall,
capture_state)`` about every second (live) or once at the end (replay). It opens a *gap*
whenever monitoring stops being effective and closes it when it recovers:

- ``sensor_not_running``: between the last record of the previous run and this start (read
  from the durable file when the sensor starts: a crash leaves a heartbeat as last record,
  a clean stop a ``stop`` record);
- ``capture_stalled``: no packet for ``coverage.stall_after`` on an interface, or the
  capture source not running;
- ``drops_above_threshold``: kernel + internal drops above ``coverage.drop_ratio`` of the
  packets offered during a heartbeat window;
- ``signatures_not_loaded``: no active signature set.

Each gap goes to the EVE log (``event_type: coverage``, ``gap_started`` / ``gap_ended``) and
to the durable file ``coverage.path`` (JSON lines, fsync'd), which also receives a heartbeat
every ``coverage.heartbeat`` with the cumulative packets seen and dropped.

``leakmon coverage report --from DATE --to DATE`` reads that file and prints, for an
auditor, the monitored time, each gap with its cause, and packets seen vs dropped.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from monitor.config import Config, load_config
from monitor.events import Event
from monitor.stats import Stats

log = logging.getLogger("leakmon.coverage")

SENSOR_NOT_RUNNING = "sensor_not_running"
CAPTURE_STALLED = "capture_stalled"
DROPS_ABOVE_THRESHOLD = "drops_above_threshold"
SIGNATURES_NOT_LOADED = "signatures_not_loaded"
NO_RECORD = "no_record"  # report only: the period has no record at all (before deployment, sensor down now)
CAUSES = (SENSOR_NOT_RUNNING, CAPTURE_STALLED, DROPS_ABOVE_THRESHOLD, SIGNATURES_NOT_LOADED, NO_RECORD)

# How much of the file's end is read at start to find the previous run's last state.
TAIL_BYTES = 256 * 1024
# Interfaces are rediscovered from Stats at most this often (the tick itself stays O(interfaces)).
IFACE_SCAN_SECONDS = 5.0
MAX_INTERFACES = 64
# monitor.canary's injected frames count on this pseudo-interface; it is not a monitored link.
SYNTHETIC_IFACE = "canary"


@dataclass
class Gap:
    cause: str
    start: float
    end: float | None = None
    interface: str = ""
    detail: str = ""
    run: str = ""

    def key(self) -> tuple[str, str]:
        return self.cause, self.interface

    def to_record(self) -> dict[str, Any]:
        rec: dict[str, Any] = {"cause": self.cause, "start": self.start}
        if self.end is not None:
            rec["end"] = self.end
        if self.interface:
            rec["interface"] = self.interface
        if self.detail:
            rec["detail"] = self.detail
        if self.run:
            rec["run"] = self.run
        return rec


def _fmt(ts: float) -> str:
    from alerts.eve import format_ts

    return format_ts(ts)


class DurableLog:
    """Append-only JSON lines with fsync: the record must survive a crash or power loss."""

    def __init__(self, path: str) -> None:
        self.path = path
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, exist_ok=True)
        self._fh = open(path, "a", encoding="utf-8")

    def append(self, rec: dict[str, Any]) -> None:
        self._fh.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n")
        self._fh.flush()
        try:
            os.fsync(self._fh.fileno())
        except OSError:
            pass

    def close(self) -> None:
        self._fh.close()


def read_records(path: str, *, tail: int | None = None) -> Iterator[dict[str, Any]]:
    """Records of the durable file (malformed or partial lines, e.g. after a crash, skipped)."""
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return
    with fh:
        if tail is not None:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - tail))
            if size > tail:
                fh.readline()  # a partial line
        for line in fh:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and isinstance(rec.get("rec"), str):
                yield rec


@dataclass
class _Iface:
    packets: float = 0.0
    last_change: float = 0.0
    # Counter values at the start of the current heartbeat window.
    window_packets: float = 0.0
    window_kernel: float = 0.0
    window_internal: float = 0.0


@dataclass
class _CaptureView:
    running: bool
    ifaces: set[str] = field(default_factory=set)
    replay: bool = False
    signatures_loaded_at: float | None = None


class CoverageTracker:
    """Opens and closes monitoring gaps; writes them to EVE and the durable coverage file."""

    def __init__(self, cfg: Config, stats: Stats, emit: Callable[[Event], None], *, now: float | None = None) -> None:
        self.cfg = cfg.coverage
        self.sensor = cfg.sensor.name
        self.stats = stats
        self.emit = emit
        self.path = cfg.resolve(cfg.coverage.path)
        self.run = uuid.uuid4().hex[:16]
        self.started = time.time() if now is None else now
        self.open: dict[tuple[str, str], Gap] = {}
        self._ifaces: dict[str, _Iface] = {}
        self._next_scan = 0.0
        self._window_start = self.started
        self._next_heartbeat = self.started + self.cfg.heartbeat
        self._closed = False
        previous = self._previous_state()
        self._log = DurableLog(self.path)
        if previous is not None:
            self._recover(previous, self.started)
        self._log.append({"rec": "start", "ts": self.started, "run": self.run, "sensor": self.sensor,
                          "pid": os.getpid()})

    # ------------------------------------------------------------------ start

    def _previous_state(self) -> dict[str, Any] | None:
        """The previous run's last record and the gaps it left open."""
        last: dict[str, Any] | None = None
        open_gaps: dict[tuple[str, str, float], dict[str, Any]] = {}
        for rec in read_records(self.path, tail=TAIL_BYTES):
            kind = rec["rec"]
            if not isinstance(rec.get("ts", rec.get("end")), (int, float)):
                continue
            if kind == "start":
                open_gaps.clear()
            elif kind == "heartbeat":
                open_gaps = {(g["cause"], g.get("interface", ""), g["start"]): g for g in rec.get("open", [])
                             if isinstance(g, dict) and "cause" in g and "start" in g}
            elif kind == "gap_open":
                open_gaps[(rec["cause"], rec.get("interface", ""), rec["start"])] = rec
            elif kind == "gap":
                open_gaps.pop((rec["cause"], rec.get("interface", ""), rec["start"]), None)
            last = rec
        if last is None:
            return None
        return {"last": last, "open": list(open_gaps.values())}

    def _recover(self, previous: dict[str, Any], now: float) -> None:
        last = previous["last"]
        last_ts = float(last.get("ts", last.get("end", now)))
        for g in previous["open"]:
            gap = Gap(g["cause"], float(g["start"]), min(max(last_ts, float(g["start"])), now),
                      g.get("interface", ""), "closed by the sensor stopping", g.get("run", ""))
            self._write_closed(gap, now)
        if now > last_ts:
            clean = last.get("rec") == "stop"
            detail = "stopped cleanly" if clean else "unclean exit: last heartbeat"
            self._write_closed(Gap(SENSOR_NOT_RUNNING, last_ts, now, "", detail, str(last.get("run", ""))), now)

    # ------------------------------------------------------------------ tick

    def tick(self, now_wall: float, capture_state: Any = None) -> None:
        """Evaluate the sensor's state. ``capture_state``: see :func:`_capture_view`."""
        if self._closed:
            return
        try:
            self._tick(now_wall, _capture_view(capture_state))
        except Exception:  # noqa: BLE001 - the coverage record must never stop the sensor
            log.exception("coverage tick failed")
            self.stats.incr("coverage.error")

    def _tick(self, now: float, view: _CaptureView) -> None:
        self._discover(now, view)
        # Signatures.
        loaded = self._signatures_loaded(view)
        self._set(SIGNATURES_NOT_LOADED, "", not loaded, now, now, "no active signature set")
        # Capture source.
        self._set(CAPTURE_STALLED, "", not view.running, now, now, "capture not running")
        # Per interface: stalls (live only: replay timestamps are not wall time).
        for name, st in self._ifaces.items():
            pkts = self.stats.get("capture.packets", iface=name)
            if pkts > st.packets:
                st.packets = pkts
                st.last_change = now
            if not view.replay and view.running:
                stalled = now - st.last_change >= self.cfg.stall_after
                self._set(CAPTURE_STALLED, name, stalled, st.last_change if stalled else now, now,
                          f"no packet for {self.cfg.stall_after:g}s")
        if now >= self._next_heartbeat:
            self._heartbeat(now)

    def _discover(self, now: float, view: _CaptureView) -> None:
        names = set(view.ifaces)
        if now >= self._next_scan:
            self._next_scan = now + IFACE_SCAN_SECONDS
            names |= {dict(labels).get("iface", "") for (n, labels) in list(self.stats.counters) if n == "capture.packets"}
        for name in names:
            if name and name != SYNTHETIC_IFACE and name not in self._ifaces and len(self._ifaces) < MAX_INTERFACES:
                pkts = self.stats.get("capture.packets", iface=name)
                self._ifaces[name] = _Iface(pkts, now, pkts, self.stats.get("capture.kernel_drops", iface=name),
                                            self.stats.get("capture.internal_drops", iface=name))

    def _drops(self, iface: str) -> float:
        return self.stats.get("capture.kernel_drops", iface=iface) + self.stats.get("capture.internal_drops", iface=iface)

    def _signatures_loaded(self, view: _CaptureView) -> bool:
        gauges = self.stats.gauges
        if ("signatures.loaded_at", ()) in gauges:
            loaded_at = gauges[("signatures.loaded_at", ())]
        elif view.signatures_loaded_at is not None:
            loaded_at = view.signatures_loaded_at
        else:
            loaded_at = 0.0
        counts = [v for (n, _), v in list(gauges.items()) if n in ("signatures.count", "signatures.loaded")]
        return loaded_at > 0 and (not counts or sum(counts) > 0)

    def _heartbeat(self, now: float) -> None:
        # Drop ratio over the window that ends now: kernel drops never reached us, internal drops did.
        for name, st in self._ifaces.items():
            pkts = self.stats.get("capture.packets", iface=name)
            kernel = self.stats.get("capture.kernel_drops", iface=name)
            internal = self.stats.get("capture.internal_drops", iface=name)
            d_pkts = max(0.0, pkts - st.window_packets)
            d_kernel = max(0.0, kernel - st.window_kernel)
            d_drops = d_kernel + max(0.0, internal - st.window_internal)
            offered = d_pkts + d_kernel
            ratio = d_drops / offered if offered > 0 else 0.0
            bad = d_drops > 0 and ratio > self.cfg.drop_ratio
            self._set(DROPS_ABOVE_THRESHOLD, name, bad, self._window_start, now,
                      f"drop ratio {ratio:.4f} > {self.cfg.drop_ratio:g}" if bad else "")
            st.window_packets, st.window_kernel, st.window_internal = pkts, kernel, internal
        self._window_start = now
        self._next_heartbeat = now + self.cfg.heartbeat
        seen, dropped = self.totals()
        self._log.append({"rec": "heartbeat", "ts": now, "run": self.run, "packets": seen, "dropped": dropped,
                          "open": [g.to_record() for g in self.open.values()]})

    def totals(self) -> tuple[int, int]:
        """Cumulative packets seen and dropped on every interface since the sensor started."""
        seen = sum(self.stats.get("capture.packets", iface=n) for n in self._ifaces)
        dropped = sum(self._drops(n) for n in self._ifaces)
        return int(seen), int(dropped)

    # ------------------------------------------------------------------ gaps

    def _set(self, cause: str, iface: str, active: bool, start: float, now: float, detail: str) -> None:
        key = (cause, iface)
        gap = self.open.get(key)
        if active and gap is None:
            gap = self.open[key] = Gap(cause, start, None, iface, detail, self.run)
            self.stats.set("coverage.gap_active", 1, cause=cause, iface=iface)
            self._log.append({"rec": "gap_open", "ts": now, **gap.to_record()})
            self._emit("gap_started", gap, now)
        elif not active and gap is not None:
            del self.open[key]
            gap.end = max(gap.start, start if cause == DROPS_ABOVE_THRESHOLD else now)
            self.stats.set("coverage.gap_active", 0, cause=cause, iface=iface)
            self._write_closed(gap, now)

    def _write_closed(self, gap: Gap, now: float) -> None:
        self.stats.incr("coverage.gaps", cause=gap.cause)
        self._log.append({"rec": "gap", "ts": now, **gap.to_record()})
        self._emit("gap_ended", gap, now)

    def _emit(self, what: str, gap: Gap, now: float) -> None:
        body: dict[str, Any] = {"event": what, "cause": gap.cause, "start": _fmt(gap.start), "sensor_run": self.run}
        if gap.end is not None:
            body["end"] = _fmt(gap.end)
            body["duration"] = round(gap.end - gap.start, 3)
        if gap.interface:
            body["interface"] = gap.interface
        if gap.detail:
            body["detail"] = gap.detail
        try:
            self.emit(Event("coverage", now, {"coverage": body}, iface=gap.interface))
        except Exception:  # noqa: BLE001
            log.exception("coverage event sink failed")

    def close(self, now_wall: float | None = None) -> None:
        """Clean stop: close open gaps, write the final counters and a ``stop`` record."""
        if self._closed:
            return
        now = time.time() if now_wall is None else now_wall
        for key in list(self.open):
            self._set(key[0], key[1], False, now, now, "")
        seen, dropped = self.totals()
        self._log.append({"rec": "stop", "ts": now, "run": self.run, "packets": seen, "dropped": dropped})
        self._log.close()
        self._closed = True


def _capture_view(state: Any) -> _CaptureView:
    """What ``tick`` needs from the caller, accepted in three shapes.

    - ``None``: the capture source is not running;
    - a mapping ``iface -> (packets, drops)`` (``LiveCapture.kernel_stats()``): running on those;
    - a ``monitor.runner.Sensor``-like object: ``live_capture`` (live), ``pipeline.replay``,
      ``pipeline.detection.loaded_at``.
    """
    if state is None:
        return _CaptureView(False)
    if isinstance(state, Mapping):
        return _CaptureView(True, {str(k) for k in state})
    pipeline = getattr(state, "pipeline", None)
    detection = getattr(pipeline, "detection", None)
    loaded_at = getattr(detection, "loaded_at", None)
    loaded = float(loaded_at) if isinstance(loaded_at, (int, float)) else None
    replay = bool(getattr(pipeline, "replay", False))
    live = getattr(state, "live_capture", None)
    ifaces = {str(getattr(r, "iface", "")) for r in (getattr(live, "rings", None) or [])}
    ifaces |= {str(i) for i in (getattr(live, "ifaces", None) or getattr(live, "interfaces", None) or [])}
    ifaces.discard("")
    running = replay or (live is not None and not getattr(live, "closed", False))
    return _CaptureView(running, ifaces, replay, loaded)


# ====================================================================== report


@dataclass
class Report:
    sensor: str
    start: float
    end: float
    gaps: list[Gap]
    packets_seen: int
    packets_dropped: int
    runs: int

    @property
    def seconds(self) -> float:
        return max(0.0, self.end - self.start)

    @property
    def unmonitored(self) -> float:
        return _union_length([(g.start, g.end if g.end is not None else self.end) for g in self.gaps])

    @property
    def monitored(self) -> float:
        return max(0.0, self.seconds - self.unmonitored)

    @property
    def coverage_percent(self) -> float:
        return 100.0 * self.monitored / self.seconds if self.seconds else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "standard": "調達における情報セキュリティ基準 10(11)オ (常時監視)",
            "sensor": self.sensor,
            "period": {"from": _iso(self.start), "to": _iso(self.end), "seconds": round(self.seconds, 3)},
            "monitored_seconds": round(self.monitored, 3),
            "unmonitored_seconds": round(self.unmonitored, 3),
            "coverage_percent": round(self.coverage_percent, 4),
            "gaps": [{"start": _iso(g.start), "end": _iso(g.end if g.end is not None else self.end),
                      "seconds": round((g.end if g.end is not None else self.end) - g.start, 3),
                      "cause": g.cause, "interface": g.interface, "detail": g.detail,
                      "ongoing": g.end is None} for g in self.gaps],
            "packets": {"seen": self.packets_seen, "dropped": self.packets_dropped,
                        "drop_ratio": round(self.packets_dropped / (self.packets_seen + self.packets_dropped), 6)
                        if self.packets_seen + self.packets_dropped else 0.0},
            "sensor_runs": self.runs,
        }


def _union_length(spans: list[tuple[float, float]]) -> float:
    total = 0.0
    cur_s = cur_e = None
    for s, e in sorted(spans):
        if e <= s:
            continue
        if cur_e is None or s > cur_e:
            if cur_e is not None and cur_s is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None and cur_s is not None:
        total += cur_e - cur_s
    return total


def build_report(path: str, start: float, end: float, *, now: float | None = None,
                 heartbeat: float = 60.0, sensor: str = "") -> Report:
    """The coverage of [start, end) from the durable file."""
    now = time.time() if now is None else now
    end = min(end, now)
    gaps: list[Gap] = []
    opened: dict[tuple[str, str, str, float], Gap] = {}
    samples: dict[str, list[tuple[float, int, int]]] = {}
    first_ts: float | None = None
    last_ts: float | None = None
    last_rec: dict[str, Any] | None = None
    for rec in read_records(path):
        kind = rec["rec"]
        ts = rec.get("ts")
        if not isinstance(ts, (int, float)):
            continue
        run = str(rec.get("run", ""))
        sensor = sensor or str(rec.get("sensor", ""))
        if first_ts is None:
            first_ts = float(ts)
        last_ts = float(ts)
        last_rec = rec
        if kind == "start":
            samples.setdefault(run, []).append((float(ts), 0, 0))
        elif kind in ("heartbeat", "stop"):
            samples.setdefault(run, []).append((float(ts), int(rec.get("packets", 0)), int(rec.get("dropped", 0))))
        if kind == "gap_open":
            g = Gap(rec["cause"], float(rec["start"]), None, rec.get("interface", ""), rec.get("detail", ""), run)
            opened[(run, g.cause, g.interface, g.start)] = g
        elif kind == "gap":
            g = Gap(rec["cause"], float(rec["start"]), float(rec["end"]), rec.get("interface", ""),
                    rec.get("detail", ""), str(rec.get("run", run)))
            opened.pop((g.run, g.cause, g.interface, g.start), None)
            opened.pop((run, g.cause, g.interface, g.start), None)
            gaps.append(g)
    alive = last_rec is not None and last_rec["rec"] != "stop" and last_ts is not None \
        and now - last_ts <= 3 * heartbeat
    for g in opened.values():
        # Open in the running sensor: ongoing. Open in a run that ended: up to that run's last record
        # (the next start records the outage as sensor_not_running).
        if not (alive and last_rec is not None and g.run == str(last_rec.get("run", ""))):
            g.end = max(g.start, _last_ts_of(samples.get(g.run, []), g.start))
        gaps.append(g)
    last_kind = last_rec["rec"] if last_rec is not None else None
    if first_ts is None or last_ts is None:
        gaps.append(Gap(NO_RECORD, start, end, detail="no coverage record"))
    else:
        if start < first_ts:
            gaps.append(Gap(NO_RECORD, start, first_ts, detail="before the first record"))
        if last_kind == "stop":
            gaps.append(Gap(SENSOR_NOT_RUNNING, last_ts, None, detail="stopped cleanly"))
        elif not alive:
            gaps.append(Gap(SENSOR_NOT_RUNNING, last_ts, None, detail="no heartbeat since"))
    clipped: list[Gap] = []
    for g in gaps:
        s = max(g.start, start)
        e = min(g.end if g.end is not None else end, end)
        if e > s:
            clipped.append(Gap(g.cause, s, e if g.end is not None else None, g.interface, g.detail, g.run))
    clipped.sort(key=lambda g: (g.start, g.cause, g.interface))
    seen = dropped = 0
    for run_samples in samples.values():
        run_samples.sort()
        s_hi = _value_at(run_samples, end)
        s_lo = _value_at(run_samples, start)
        seen += max(0, s_hi[0] - s_lo[0])
        dropped += max(0, s_hi[1] - s_lo[1])
    return Report(sensor, start, end, clipped, seen, dropped, len(samples))


def _value_at(samples: list[tuple[float, int, int]], t: float) -> tuple[int, int]:
    val = (0, 0)
    for ts, p, d in samples:
        if ts > t:
            break
        val = (p, d)
    return val


def _last_ts_of(samples: list[tuple[float, int, int]], default: float) -> float:
    return max((s[0] for s in samples), default=default)


# ---------------------------------------------------------------------- text

_LABELS = {
    "en": {
        "title": "leakmon coverage report — continuous monitoring (基準 10(11)オ 常時監視)",
        "sensor": "Sensor", "period": "Monitoring period", "monitored": "Monitored time",
        "unmonitored": "Time not monitored", "coverage": "Coverage", "gaps": "Monitoring gaps",
        "none": "none", "start": "Start", "end": "End", "duration": "Duration", "cause": "Cause",
        "iface": "Interface", "packets": "Packets seen", "dropped": "Packets dropped",
        "runs": "Sensor runs", "ongoing": "(ongoing)",
    },
    "ja": {
        "title": "leakmon 監視記録報告書 — 常時監視（調達における情報セキュリティ基準 10(11)オ）",
        "sensor": "センサー", "period": "監視対象期間", "monitored": "監視時間",
        "unmonitored": "監視停止時間", "coverage": "監視率", "gaps": "監視停止区間",
        "none": "なし", "start": "開始", "end": "終了", "duration": "時間", "cause": "原因",
        "iface": "インタフェース", "packets": "取得パケット数", "dropped": "欠落パケット数",
        "runs": "センサー起動回数", "ongoing": "（継続中）",
    },
}
_CAUSE_TEXT = {
    "en": {SENSOR_NOT_RUNNING: "sensor not running", CAPTURE_STALLED: "capture stalled",
           DROPS_ABOVE_THRESHOLD: "drops above threshold", SIGNATURES_NOT_LOADED: "signatures not loaded",
           NO_RECORD: "no record"},
    "ja": {SENSOR_NOT_RUNNING: "センサー停止", CAPTURE_STALLED: "パケット取得停止",
           DROPS_ABOVE_THRESHOLD: "パケット欠落（閾値超過）", SIGNATURES_NOT_LOADED: "シグネチャ未読込",
           NO_RECORD: "記録なし"},
}


def _iso(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{d}d " if d else "") + f"{h:02d}:{m:02d}:{s:02d}"


def format_text(report: Report, lang: str = "ja") -> str:
    t = _LABELS[lang]
    causes = _CAUSE_TEXT[lang]
    lines = [t["title"], ""]
    lines.append(f"{t['sensor']}: {report.sensor or '-'}")
    lines.append(f"{t['period']}: {_iso(report.start)} — {_iso(report.end)} ({_duration(report.seconds)})")
    lines.append(f"{t['monitored']}: {_duration(report.monitored)}")
    lines.append(f"{t['unmonitored']}: {_duration(report.unmonitored)}")
    lines.append(f"{t['coverage']}: {report.coverage_percent:.3f} %")
    lines.append(f"{t['runs']}: {report.runs}")
    total = report.packets_seen + report.packets_dropped
    ratio = f" ({100.0 * report.packets_dropped / total:.4f} %)" if total else ""
    lines.append(f"{t['packets']}: {report.packets_seen}")
    lines.append(f"{t['dropped']}: {report.packets_dropped}{ratio}")
    lines.append("")
    lines.append(f"{t['gaps']} ({len(report.gaps)}):")
    if not report.gaps:
        lines.append(f"  {t['none']}")
    for g in report.gaps:
        end = g.end if g.end is not None else report.end
        extra = f" {t['ongoing']}" if g.end is None else ""
        where = f" {t['iface']}={g.interface}" if g.interface else ""
        detail = f" — {g.detail}" if g.detail else ""
        lines.append(f"  {_iso(g.start)} — {_iso(end)}  {_duration(end - g.start)}  "
                     f"{causes.get(g.cause, g.cause)}{where}{detail}{extra}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- CLI


def parse_when(text: str, *, end_of_day: bool = False) -> float:
    """'2024-04-01' (local midnight; with end_of_day the next midnight) or an ISO 8601 time."""
    text = text.strip()
    try:
        if len(text) == 10:
            d = _dt.date.fromisoformat(text)
            if end_of_day:
                d += _dt.timedelta(days=1)
            return _dt.datetime(d.year, d.month, d.day).astimezone().timestamp()
        when = _dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date or ISO 8601 time: {text!r}") from None
    if when.tzinfo is None:
        when = when.astimezone()
    return when.timestamp()


def _parse_end(text: str) -> float:
    return parse_when(text, end_of_day=True)


def register(subparsers: Any) -> None:
    """Add ``coverage report`` to the leakmon command line."""
    p = subparsers.add_parser("coverage", help="Coverage (常時監視) record: gaps in monitoring")
    sub = p.add_subparsers(dest="coverage_command", required=True)
    r = sub.add_parser("report", help="Monitored time, each gap with its cause, packets seen vs dropped")
    r.add_argument("-c", "--config", required=True, help="YAML configuration file (coverage.path)")
    r.add_argument("--from", dest="from_", required=True, metavar="DATE", type=parse_when,
                   help="Start: YYYY-MM-DD (local midnight) or ISO 8601 time")
    r.add_argument("--to", default=None, metavar="DATE", type=_parse_end,
                   help="End: YYYY-MM-DD (inclusive day) or ISO 8601 time (default: now)")
    r.add_argument("--json", action="store_true", help="JSON instead of text")
    r.add_argument("--lang", choices=("ja", "en"), default=None, help="Language (default: incidents.language)")
    r.add_argument("--file", default=None, help="Coverage file (default: coverage.path of the config)")
    r.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    start = float(args.from_)
    end = float(args.to) if args.to is not None else time.time()
    if end <= start:
        print("leakmon coverage report: --to must be after --from", file=sys.stderr)
        return 2
    path = args.file or cfg.resolve(cfg.coverage.path)
    report = build_report(path, start, end, heartbeat=cfg.coverage.heartbeat, sensor="")
    if args.json:
        print(json.dumps(report.to_json(), ensure_ascii=False, indent=2))
    else:
        sys.stdout.write(format_text(report, args.lang or cfg.incidents.language))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python3 -m monitor.coverage report ...`` (same as ``leakmon coverage report ...``)."""
    ap = argparse.ArgumentParser(prog="leakmon")
    register(ap.add_subparsers(dest="command", required=True))
    argv = list(sys.argv[1:] if argv is None else argv)
    args = ap.parse_args(argv if argv[:1] == ["coverage"] else ["coverage", *argv])
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
