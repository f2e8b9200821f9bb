"""``--workers N`` replay: the sharded sensor writes what one process writes.

Replays committed captures with 1 and 2 workers and compares the EVE records (order-free),
the audit log's alert records and the final stats totals. What legitimately differs between
processes is normalised away: ``flow_id`` (keyed per process), ``file_id`` (numbered per
process), and the time and ``pcap_cnt`` of flow records closed at shutdown (each worker's clock
stops at its own last packet). Per-sensor counters (signature loads, audit and evidence
records) count once per worker and are left out of the totals.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import monitor.workers as workers
from alerts.eve import EveWriter
from monitor.events import Event
from monitor.stats import Stats
from tests.factories import sample_config

ROOT = Path(__file__).resolve().parents[2]
PCAPS = ROOT / "pcaps"
PER_SENSOR = ("signatures.", "audit.", "evidence.", "uptime", "workers")




def _cli(tmp_path: Path, captures: list[str], workers_n: int, *extra: str, eve: str = "") -> subprocess.CompletedProcess[str]:
    eve = eve or str(tmp_path / "eve.json")
    r = subprocess.run([sys.executable, "-m", "monitor", "replay", *[str(PCAPS / c) for c in captures],
                        "-c", str(sample_config(tmp_path)), "--eve-log", eve, "--workers", str(workers_n), *extra],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    return r


def _normalised(rec: dict[str, Any]) -> str:
    rec = dict(rec)
    rec.pop("flow_id", None)
    for key in ("fileinfo",):
        if key in rec:
            rec[key] = {k: v for k, v in rec[key].items() if k not in ("file_id", "parent_file_id")}
    if rec["event_type"] == "flow" and rec["flow"]["reason"] == "shutdown":
        rec.pop("pcap_cnt", None)
        rec.pop("timestamp", None)
    return json.dumps(rec, sort_keys=True, ensure_ascii=False)


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def _outcome(tmp_path: Path) -> tuple[list[str], dict[str, Any], list[str]]:
    """(normalised EVE records, final stats totals, audit alert records)."""
    records = [json.loads(line) for line in (tmp_path / "eve.json").read_text(encoding="utf-8").splitlines()]
    assert records[-1]["event_type"] == "stats"
    assert [r for r in records if r["event_type"] == "stats"] == records[-1:]
    totals = {k: v for k, v in _flat(records[-1]["stats"]).items()
              if not k.startswith(PER_SENSOR) and not k.split("[")[0].endswith(("_ts", "_at"))}
    audit = []
    for line in (tmp_path / "out" / "audit.jsonl").read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if rec["type"] == "alert":
            audit.append(json.dumps({k: v for k, v in rec["data"].items() if k not in ("flow_id", "incident_id")},
                                    sort_keys=True))
    return sorted(_normalised(r) for r in records[:-1]), totals, sorted(audit)


@pytest.mark.parametrize(("captures", "extra"), [
    (["sample-leak-http.pcap"], []),
    (["mail-smtplib.pcap"], []),
    (["ftp-ftplib.pcap"], []),
    (["decode-tunnels.pcap"], []),
    (["decode-two-links.pcapng"], []),
    (["http-uploads.pcap", "sample-leak-http.pcap"], []),  # numbering goes on across files
    (["stream-evasions.pcap"], ["--bpf", "tcp"]),  # BPF numbers the frames it passes
])
def test_two_workers_write_what_one_process_writes(tmp_path: Path, captures: list[str], extra: list[str]) -> None:
    _cli(tmp_path / "w1", captures, 1, *extra)
    _cli(tmp_path / "w2", captures, 2, *extra)
    one, two = _outcome(tmp_path / "w1"), _outcome(tmp_path / "w2")
    assert one[0] and two[0] == one[0]
    assert sum(v for k, v in one[1].items() if k.startswith("capture.packets")) > 0
    assert two[1] == one[1]
    assert two[2] == one[2]


def _replay_in_process(tmp_path: Path, captures: list[str], n: int) -> list[str]:
    from monitor.runner import replay

    args = argparse.Namespace(config=str(sample_config(tmp_path)), files=[str(PCAPS / c) for c in captures],
                              eve_log=str(tmp_path / "eve.json"), bpf=None, metrics_addr="", workers=n,
                              literal=[], sha256=[], no_progress=True)
    assert replay(args) == 0
    return _outcome(tmp_path)[0]


def test_workers_sort_frames_themselves_where_the_reader_cannot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback for a reader without ``shard=``: every frame is built and sorted by shard_of."""
    captures = ["http-uploads.pcap", "sample-leak-http.pcap"]
    sharded_reader = _replay_in_process(tmp_path / "reader", captures, 2)
    monkeypatch.setattr(workers, "_reader_shards", lambda: False)  # the forked workers inherit it
    sorted_here = _replay_in_process(tmp_path / "loop", captures, 2)
    assert sharded_reader and sorted_here == sharded_reader


def test_null_eve_device_workers_send_no_lines_and_audit_keeps_community_ids(tmp_path: Path) -> None:
    _cli(tmp_path / "null", ["sample-leak-http.pcap"], 2, eve=os.devnull)
    _cli(tmp_path / "file", ["sample-leak-http.pcap"], 1)
    audit = {}
    for name in ("null", "file"):
        lines = (tmp_path / name / "out" / "audit.jsonl").read_text(encoding="utf-8").splitlines()
        audit[name] = sorted((rec["data"]["signature_id"], rec["data"]["cport"], rec["data"]["community_id"])
                             for rec in map(json.loads, lines) if rec["type"] == "alert")
    assert len(audit["file"]) >= 3 and all(c.startswith("1:") for *_, c in audit["file"])
    assert audit["null"] == audit["file"]


class _FakeQueue:
    def __init__(self) -> None:
        self.items: list[Any] = []

    def put(self, item: Any) -> None:
        self.items.append(item)


def test_worker_eve_sink_modes(tmp_path: Path) -> None:
    from monitor.config import load_config

    cfg = load_config(sample_config(tmp_path))
    q = _FakeQueue()
    lines = workers._worker_sensor(cfg, q, replay=True, eve_mode=workers.EVE_LINES)
    assert lines.pipeline.bus._sinks[0] == ("eve-worker", lines.line_sink)  # first, as a one-process EVE writer
    discard = workers._worker_sensor(cfg, q, replay=True, eve_mode=workers.EVE_DISCARD)
    name, sink = discard.pipeline.bus._sinks[0]
    assert name == "eve" and isinstance(sink, EveWriter) and sink.discard
    assert isinstance(discard.line_sink, workers._NoLines)
    none = workers._worker_sensor(cfg, q, replay=True, eve_mode=workers.EVE_NONE)
    assert all(n not in ("eve", "eve-worker") for n, _ in none.pipeline.bus._sinks)
    for s in (lines, discard, none):
        s.finish()
    assert q.items == []  # a sensor that saw no packet sends no lines


def test_line_sink_batches_end_at_alerts_and_carry_alert_metrics() -> None:
    q = _FakeQueue()
    sink = workers._LineSink(q, "s", [], alert_metrics=True)
    sink(Event("http", 1.0, {"http": {"hostname": "a"}}))
    sink(Event("stats", 1.0, {"stats": {}}))  # the parent writes merged stats
    assert q.items == []
    sink(Event("alert", 2.0, {"alert": {"signature_id": 7}, "leakmon": {"rule": "r"}, "fileinfo": {}}, ingress=5.0))
    assert len(q.items) == 1
    kind, text, alerts = q.items[0]
    assert kind == "eve" and text.endswith("\n") and text.count("\n") == 2
    assert [json.loads(line)["event_type"] for line in text.splitlines()] == ["http", "alert"]
    assert alerts == [(2.0, 5.0, {"alert": {"signature_id": 7}, "leakmon": {"rule": "r"}})]
    for i in range(workers.BATCH_LINES):
        sink(Event("dns", 3.0, {"dns": {"id": i}}))
    assert len(q.items) == 2 and q.items[1][1].count("\n") == workers.BATCH_LINES and q.items[1][2] == []
    quiet = workers._LineSink(q, "s", ["alert"], alert_metrics=False)
    quiet(Event("http", 1.0, {}))
    quiet(Event("alert", 2.0, {"alert": {"signature_id": 8}}))
    assert q.items[2][2] == [] and q.items[2][1].count("\n") == 1


class _Done:
    exitcode = 0

    def is_alive(self) -> bool:
        return False


def test_collect_writes_batches_whole_and_counts_alerts_without_parsing(tmp_path: Path) -> None:
    q: queue.Queue[Any] = queue.Queue()
    alert_body = {"alert": {"signature_id": 9}, "leakmon": {}}
    q.put(("eve", '{"event_type":"http"}\n{"event_type":"alert"}\n', [(123.0, None, alert_body)]))
    q.put(("stats", 0, {("capture.packets", ()): 3}, {("x.last_ts", ()): 5.0}, True))
    q.put(("stats", 1, {("capture.packets", ()): 4}, {("x.last_ts", ()): 7.0}, True))
    q.put(("done", 0))
    q.put(("done", 1))
    writer = EveWriter(str(tmp_path / "eve.json"))
    seen: list[Event] = []
    merged = Stats()
    parent = Stats()
    parent.incr("audit.records", type="audit_key_generated")
    per_worker = {workers.PARENT: (parent.counters, parent.gauges)}
    workers._collect(q, [_Done(), _Done()], writer, merged, per_worker, exporter=seen.append)
    writer.close()
    assert (tmp_path / "eve.json").read_text() == '{"event_type":"http"}\n{"event_type":"alert"}\n'
    assert [(e.event_type, e.ts, e.body) for e in seen] == [("alert", 123.0, alert_body)]
    assert merged.total("capture.packets") == 7 and merged.get("x.last_ts") == 7.0
    assert merged.get("audit.records", type="audit_key_generated") == 1


def test_first_run_generates_the_audit_key_once(tmp_path: Path) -> None:
    """Workers of a first run used to race on generating the audit key (one read it empty)."""
    _cli(tmp_path, ["sample-leak-http.pcap"], 3)
    lines = [json.loads(x) for x in (tmp_path / "out" / "audit.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["type"] for r in lines].count("audit_key_generated") == 1
    assert [r["type"] for r in lines].count("sensor_start") == 3
    key = tmp_path / "out" / "audit.key"
    assert len(bytes.fromhex(key.read_text().strip())) == 32 and key.stat().st_mode & 0o777 == 0o600


def test_sensor_allocator_settings_apply() -> None:
    from monitor.runner import tune_allocator

    assert tune_allocator() is True  # glibc (Debian): both mallopt calls accepted


def test_parent_starts_no_thread_before_forking_workers() -> None:
    """Workers are forked after the parent imported their modules: a thread then would be unsafe."""
    code = ("import threading, monitor.workers as w; from monitor.config import Config, EvidenceConfig; "
            "w._preload_worker_modules(Config(evidence=EvidenceConfig(enabled=True))); "
            "import sys; print(threading.active_count(), 'monitor.pipeline' in sys.modules, "
            "'cryptography.hazmat.primitives.ciphers.aead' in sys.modules, 'prometheus_client' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    # evidence on: the cipher is taken once before the fork; metrics are the parent's alone
    assert r.stdout.split() == ["1", "True", "True", "False"]
