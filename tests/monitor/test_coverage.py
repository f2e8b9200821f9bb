"""Coverage record (常時監視): gaps opened and closed on real conditions, written to EVE and the
durable file, recovered across restarts, and reported for an auditor."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

from alerts.eve import dumps, eve_record
from alerts.schema import validate_lines
from monitor.config import default_config
from monitor.coverage import (
    CAPTURE_STALLED,
    DROPS_ABOVE_THRESHOLD,
    NO_RECORD,
    SENSOR_NOT_RUNNING,
    SIGNATURES_NOT_LOADED,
    CoverageTracker,
    build_report,
    format_text,
    read_records,
)
from monitor.events import Event
from monitor.stats import Stats
from tests.conftest import ROOT

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def make_cfg(tmp_path: Path, **coverage):
    cfg = default_config()
    cov = dataclasses.replace(cfg.coverage, path=str(tmp_path / "coverage.jsonl"),
                              stall_after=10.0, heartbeat=30.0, drop_ratio=0.01, **coverage)
    return dataclasses.replace(cfg, coverage=cov, base_dir=str(tmp_path))


class Sensor:
    """What the tracker sees of a running sensor: Stats, EVE events, a capture state."""

    def __init__(self, tmp_path: Path, now: float, loaded: bool = True, **coverage) -> None:
        self.cfg = make_cfg(tmp_path, **coverage)
        self.stats = Stats()
        if loaded:
            self.stats.set("signatures.loaded_at", now - 1)
            self.stats.set("signatures.loaded", 7, kind="markers")
        self.events: list[Event] = []
        self.tracker = CoverageTracker(self.cfg, self.stats, self.events.append, now=now)

    def packets(self, iface: str, n: int, kernel_drops: int = 0) -> None:
        self.stats.incr("capture.packets", n, iface=iface)
        if kernel_drops:
            self.stats.set("capture.kernel_drops",
                           self.stats.get("capture.kernel_drops", iface=iface) + kernel_drops, iface=iface)

    def tick(self, now: float, ifaces=("eth1",)) -> None:
        self.tracker.tick(now, {i: (0, 0) for i in ifaces})

    def coverage_events(self) -> list[dict]:
        recs = validate_lines([dumps(eve_record(e, "s1")) for e in self.events])
        return [r["coverage"] | {"in_iface": r.get("in_iface", "")} for r in recs]


def records(tmp_path: Path) -> list[dict]:
    return list(read_records(str(tmp_path / "coverage.jsonl")))


def test_capture_stall_opens_and_closes_a_gap(tmp_path: Path):
    s = Sensor(tmp_path, T0)
    s.packets("eth1", 100)
    s.tick(T0)
    s.packets("eth1", 50)
    s.tick(T0 + 5)
    for t in (6, 9, 14):
        s.tick(T0 + t)
    assert s.events == []  # 9 s without packets: under stall_after
    s.tick(T0 + 15)  # 10 s since the last packet was seen
    assert s.stats.get("coverage.gap_active", cause=CAPTURE_STALLED, iface="eth1") == 1
    s.tick(T0 + 20)
    s.packets("eth1", 1)
    s.tick(T0 + 27)
    ev = s.coverage_events()
    assert [(e["event"], e["cause"], e["interface"]) for e in ev] == [
        ("gap_started", CAPTURE_STALLED, "eth1"), ("gap_ended", CAPTURE_STALLED, "eth1")]
    assert ev[1]["duration"] == 22.0  # from the last packet (T0+5) to traffic seen again (T0+27)
    assert ev[0]["in_iface"] == "eth1" and ev[1]["start"].startswith("2023-11-14T22:13:25.000000")
    gaps = [r for r in records(tmp_path) if r["rec"] == "gap"]
    assert gaps == [{"rec": "gap", "ts": T0 + 27, "cause": CAPTURE_STALLED, "start": T0 + 5, "end": T0 + 27,
                     "interface": "eth1", "detail": "no packet for 10s", "run": s.tracker.run}]
    assert s.stats.get("coverage.gaps", cause=CAPTURE_STALLED) == 1
    assert s.stats.get("coverage.gap_active", cause=CAPTURE_STALLED, iface="eth1") == 0


def test_drops_above_ratio_over_a_heartbeat_window(tmp_path: Path):
    s = Sensor(tmp_path, T0)
    s.tick(T0)
    for t in range(1, 31):  # 1000 packets received, 50 dropped by the kernel: 4.8 % of 1050
        s.packets("eth1", 1000 // 30 + (1 if t <= 1000 % 30 else 0), kernel_drops=(5 if t % 3 == 0 else 0))
        s.tick(T0 + t)
    hb = [r for r in records(tmp_path) if r["rec"] == "heartbeat"]
    assert hb[-1]["packets"] == 1000 and hb[-1]["dropped"] == 50
    assert hb[-1]["open"] == [{"cause": DROPS_ABOVE_THRESHOLD, "start": T0, "interface": "eth1",
                               "detail": "drop ratio 0.0476 > 0.01", "run": s.tracker.run}]
    for t in range(31, 61):  # next window: 3000 packets, 2 drops (0.07 %) is below the threshold
        s.packets("eth1", 100, kernel_drops=(1 if t in (40, 50) else 0))
        s.tick(T0 + t)
    ev = s.coverage_events()
    assert [(e["event"], e["cause"]) for e in ev] == [("gap_started", DROPS_ABOVE_THRESHOLD),
                                                      ("gap_ended", DROPS_ABOVE_THRESHOLD)]
    assert ev[1]["duration"] == 30.0  # exactly the bad window


def test_signatures_not_loaded_and_capture_not_running(tmp_path: Path):
    s = Sensor(tmp_path, T0, loaded=False)
    s.tick(T0 + 1)
    s.stats.set("signatures.loaded_at", T0 + 4)
    s.stats.set("signatures.loaded", 3, kind="markers")
    s.tick(T0 + 4)
    s.tracker.tick(T0 + 6, None)  # the capture source closed
    s.tracker.tick(T0 + 9, {"eth1": (0, 0)})
    ev = s.coverage_events()
    assert [(e["event"], e["cause"], e.get("duration")) for e in ev] == [
        ("gap_started", SIGNATURES_NOT_LOADED, None), ("gap_ended", SIGNATURES_NOT_LOADED, 3.0),
        ("gap_started", CAPTURE_STALLED, None), ("gap_ended", CAPTURE_STALLED, 3.0)]
    assert ev[2]["detail"] == "capture not running"


def test_replay_never_reports_wall_clock_stalls(tmp_path: Path):
    class Pipeline:
        replay = True

    class ReplaySensor:
        pipeline = Pipeline()
        live_capture = None

    s = Sensor(tmp_path, T0)
    s.packets("pcap", 116)
    s.tracker.tick(T0, ReplaySensor())
    s.tracker.tick(T0 + 3600, ReplaySensor())
    assert s.events == []
    s.tracker.close(T0 + 3600)
    assert records(tmp_path)[-1] == {"rec": "stop", "ts": T0 + 3600, "run": s.tracker.run, "packets": 116,
                                     "dropped": 0}


def test_restart_after_crash_records_sensor_not_running(tmp_path: Path):
    a = Sensor(tmp_path, T0)
    a.packets("eth1", 10)
    a.tick(T0)
    a.tick(T0 + 30)  # stalled since T0 (gap opened), then a heartbeat
    a.tick(T0 + 45)
    a.tick(T0 + 59)
    a.tracker._log.close()  # the process dies: no stop record
    assert [r["rec"] for r in records(tmp_path)] == ["start", "gap_open", "heartbeat"]
    b = Sensor(tmp_path, T0 + 200)
    ev = b.coverage_events()
    assert [(e["event"], e["cause"], e["duration"]) for e in ev] == [
        ("gap_ended", CAPTURE_STALLED, 30.0),  # closed at the last durable record of the dead run
        ("gap_ended", SENSOR_NOT_RUNNING, 170.0)]  # from that record to this start
    assert ev[1]["detail"] == "unclean exit: last heartbeat"
    assert b.stats.get("coverage.gaps", cause=SENSOR_NOT_RUNNING) == 1


def test_restart_after_clean_stop(tmp_path: Path):
    a = Sensor(tmp_path, T0)
    a.tick(T0)
    a.tracker.close(T0 + 100)
    b = Sensor(tmp_path, T0 + 400)
    ev = b.coverage_events()
    assert [(e["cause"], e["duration"], e["detail"]) for e in ev] == [(SENSOR_NOT_RUNNING, 300.0, "stopped cleanly")]
    assert [r["rec"] for r in records(tmp_path)] == ["start", "stop", "gap", "start"]


def _history(tmp_path: Path) -> None:
    """A day in the sensor's life: stall, drops, crash, restart, clean stop."""
    a = Sensor(tmp_path, T0)
    a.tick(T0)
    for t in range(1, 61):
        a.packets("eth1", 100)
        a.tick(T0 + t)  # 6000 packets; heartbeats at +30, +60
    for t in range(61, 100):
        a.tick(T0 + t)  # stall from T0+60 (opened at +70)
    a.packets("eth1", 1000, kernel_drops=100)
    a.tick(T0 + 100)  # stall closed at +100; the window +90..+120 has 100 of 1120 dropped (8.9 %)
    a.packets("eth1", 10)
    a.tick(T0 + 110)
    a.packets("eth1", 10)
    a.tick(T0 + 120)  # heartbeat: 7020 seen, 100 dropped
    a.tick(T0 + 125)
    a.tracker._log.close()  # crash at ~T0+125; last record: heartbeat at +120
    b = Sensor(tmp_path, T0 + 300)  # restart: not running T0+120 .. T0+300
    b.tick(T0 + 300)
    for t in range(301, 331):
        b.packets("eth1", 10)
        b.tick(T0 + t)
    b.tracker.close(T0 + 330)


def test_report_for_an_auditor(tmp_path: Path):
    _history(tmp_path)
    rep = build_report(str(tmp_path / "coverage.jsonl"), T0 - 100, T0 + 400, now=T0 + 10_000, heartbeat=30)
    got = [(g.cause, g.start - T0, g.end - T0 if g.end is not None else None, g.interface) for g in rep.gaps]
    assert got == [
        (NO_RECORD, -100, 0, ""),
        (CAPTURE_STALLED, 60, 100, "eth1"),
        (DROPS_ABOVE_THRESHOLD, 90, 120, "eth1"),
        (SENSOR_NOT_RUNNING, 120, 300, ""),
        (SENSOR_NOT_RUNNING, 330, None, ""),  # stopped cleanly at +330 and not running since
    ]
    # Unmonitored: 100 + [60,120] (60) + [120,300] (180) + [330,400] (70) = 410 of 500 s.
    assert rep.seconds == 500 and rep.unmonitored == 410 and rep.monitored == 90
    assert rep.coverage_percent == pytest.approx(18.0)
    assert (rep.packets_seen, rep.packets_dropped) == (7020 + 300, 100)
    assert rep.runs == 2
    j = rep.to_json()
    assert j["coverage_percent"] == 18.0 and j["packets"] == {"seen": 7320, "dropped": 100,
                                                              "drop_ratio": round(100 / 7420, 6)}
    assert j["gaps"][-1]["ongoing"] is True and "10(11)オ" in j["standard"]
    ja = format_text(rep, "ja")
    for heading in ("監視対象期間", "監視時間", "監視停止区間 (5)", "監視率: 18.000 %", "取得パケット数: 7320",
                    "欠落パケット数: 100", "パケット取得停止 インタフェース=eth1", "センサー停止", "基準 10(11)オ"):
        assert heading in ja, heading
    en = format_text(rep, "en")
    assert "Coverage: 18.000 %" in en and "capture stalled Interface=eth1" in en and "Monitoring gaps (5)" in en


def test_report_window_inside_the_history_clips_gaps(tmp_path: Path):
    _history(tmp_path)
    rep = build_report(str(tmp_path / "coverage.jsonl"), T0 + 80, T0 + 200, now=T0 + 10_000, heartbeat=30)
    got = [(g.cause, g.start - T0, g.end - T0) for g in rep.gaps if g.end is not None]
    assert got == [(CAPTURE_STALLED, 80, 100), (DROPS_ABOVE_THRESHOLD, 90, 120), (SENSOR_NOT_RUNNING, 120, 200)]
    assert rep.monitored == 0 and rep.coverage_percent == 0
    # Packets counted between the last heartbeat before +80 (+60: 6000) and before +200 (+120: 7000).
    assert (rep.packets_seen, rep.packets_dropped) == (1020, 100)


def test_report_of_a_running_sensor_shows_open_gap_as_ongoing(tmp_path: Path):
    s = Sensor(tmp_path, T0)
    s.tick(T0)
    s.tick(T0 + 30)  # heartbeat; eth1 has no packets at all
    s.tick(T0 + 40)
    rep = build_report(str(tmp_path / "coverage.jsonl"), T0, T0 + 50, now=T0 + 50, heartbeat=30)
    assert [(g.cause, g.start - T0, g.end) for g in rep.gaps] == [(CAPTURE_STALLED, 0, None)]
    assert rep.unmonitored == 50


def test_cli_report_json_and_japanese_text(tmp_path: Path):
    _history(tmp_path)
    cfg = tmp_path / "leakmon.yaml"
    cfg.write_text("coverage:\n  path: coverage.jsonl\n  heartbeat: 30s\nincidents:\n  language: ja\n", encoding="utf-8")

    def iso(t: float) -> str:
        return dt.datetime.fromtimestamp(t, dt.UTC).isoformat()

    base = [sys.executable, "-m", "monitor.coverage", "report", "-c", str(cfg), "--from", iso(T0 - 100), "--to", iso(T0 + 400)]
    out = subprocess.run([*base, "--json"], capture_output=True, text=True, cwd=ROOT, timeout=60, check=True)
    j = json.loads(out.stdout)
    assert j["coverage_percent"] == 18.0 and j["packets"]["seen"] == 7320 and len(j["gaps"]) == 5
    assert [g["cause"] for g in j["gaps"]] == [NO_RECORD, CAPTURE_STALLED, DROPS_ABOVE_THRESHOLD,
                                               SENSOR_NOT_RUNNING, SENSOR_NOT_RUNNING]
    assert dt.datetime.fromisoformat(j["gaps"][1]["start"]).timestamp() == T0 + 60
    text = subprocess.run(base, capture_output=True, text=True, cwd=ROOT, timeout=60, check=True).stdout
    assert "監視対象期間" in text and "監視停止区間 (5)" in text and "監視率: 18.000 %" in text
    text_en = subprocess.run([*base, "--lang", "en"], capture_output=True, text=True, cwd=ROOT, timeout=60,
                             check=True).stdout
    assert "Monitoring period" in text_en and "Coverage: 18.000 %" in text_en
    bad = subprocess.run([*base[:-4], "--from", "2024-13-01"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert bad.returncode == 2 and "not a date" in bad.stderr


def test_leakmon_cli_has_the_coverage_command():
    cli = pytest.importorskip("monitor.cli")
    ap = cli.build_parser()
    args = ap.parse_args(["coverage", "report", "-c", "x.yaml", "--from", "2024-04-01", "--to", "2024-04-30", "--json"])
    assert args.func.__name__ == "cmd_report" and args.json and args.to - args.from_ == 30 * 86400


def test_date_only_bounds_are_whole_local_days():
    from monitor.coverage import parse_when

    start = parse_when("2024-04-01")
    end = parse_when("2024-04-30", end_of_day=True)
    assert end - start == 30 * 86400
    assert parse_when("2024-04-01T09:00:00+09:00") == dt.datetime(2024, 4, 1, 0, 0, tzinfo=dt.UTC).timestamp()


def test_corrupt_tail_of_the_file_is_tolerated(tmp_path: Path):
    a = Sensor(tmp_path, T0)
    a.tick(T0)
    a.tick(T0 + 30)
    a.tracker._log.close()
    with open(tmp_path / "coverage.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"rec":"heartbeat","ts":17000')  # power lost mid-write
    b = Sensor(tmp_path, T0 + 90)
    # eth1 never carried a packet: stalled from the start until the last good record (+30).
    assert [(e["cause"], e["duration"]) for e in b.coverage_events()] == [(CAPTURE_STALLED, 30.0),
                                                                          (SENSOR_NOT_RUNNING, 60.0)]
