"""Incidents with ``--workers``: several IncidentManagers (one per worker process) over one database.

Flows of one (protected host, destination) can land in different workers; the outcome must be
that of one process: one incident per (host, destination, window), every alert, flow and
evidence item in it, one first report (第一報), rendered by the manager that opened it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from alerts.audit import AuditLog, verify
from alerts.evidence import EvidenceStore
from alerts.incidents import IncidentDB, IncidentManager, process_session, session_alive
from monitor.events import EventBus
from monitor.stats import Stats
from tests.alerts.incident_factories import alert_event, flow_event, http_post_flow, make_config, record_flow
from tests.conftest import ROOT

pytestmark = pytest.mark.timeout(120)

T0 = 1_700_000_000.0
WINDOW = 3600.0  # make_config's incidents.window


class Worker:
    """What one worker process holds: its own audit log object, evidence store and manager."""

    def __init__(self, tmp: Path, clock: float = T0 + 5, store: EvidenceStore | None = None) -> None:
        self.cfg = make_config(tmp)
        self.stats = Stats()
        self.audit = AuditLog(self.cfg.audit, self.stats, base_dir=self.cfg.base_dir)
        self.store = store or EvidenceStore(self.cfg, self.stats, self.audit)
        self.mgr = IncidentManager(self.cfg, self.stats, self.store, self.audit, None, None, clock=lambda: clock)
        self.bus = EventBus(self.stats)
        self.bus.subscribe("incidents", self.mgr)
        self.bus.subscribe("audit", self.audit)

    def close(self) -> None:
        self.mgr.close()
        self.audit.close()


def _prepare(tmp: Path) -> None:
    """What the workers' parent does before forking: audit key and database created once."""
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = make_config(tmp)
    AuditLog(cfg.audit, Stats(), base_dir=cfg.base_dir).close()
    IncidentDB(cfg.resolve(cfg.incidents.db)).close()


def _audit_types(w: Worker) -> list[dict[str, Any]]:
    return [json.loads(x) for x in Path(w.audit.path).read_text(encoding="utf-8").splitlines()]


def _opened(w: Worker) -> list[str]:
    return [r["data"]["incident_id"] for r in _audit_types(w) if r["type"] == "incident_opened"]


def _incident(db: IncidentDB, inc: str) -> dict[str, Any]:
    row = db.get(inc)
    assert row is not None, inc
    return row


def _report_dirs(w: Worker) -> list[str]:
    return sorted(p.name for p in Path(w.mgr.reports_dir).iterdir() if p.is_dir())


def test_flows_of_one_host_and_destination_in_two_workers_make_one_incident(tmp_path: Path) -> None:
    _prepare(tmp_path)
    a = Worker(tmp_path)
    # One evidence store for both: two stores in one process would share their temporary file
    # names (per pid); across processes the store's own serialisation is alerts/evidence.py's.
    b = Worker(tmp_path, store=a.store)
    f1, p1 = http_post_flow(cport=50123)
    f2, p2 = http_post_flow(cport=50124)  # same host and destination, the other worker's flow
    record_flow(f1, p1, a.cfg)
    record_flow(f2, p2, b.cfg)
    a.bus.publish(alert_event(f1, T0))
    b.bus.publish(alert_event(f2, T0 + 60, sid=9100004))
    a.bus.publish(flow_event(f1))
    b.bus.publish(flow_event(f2))
    a.mgr.wait_idle()
    b.mgr.wait_idle()
    rows = a.mgr.db.query()
    assert [(r["host"], r["dest"], r["alert_count"], r["sids"]) for r in rows] == [
        ("10.77.0.1", "203.0.113.7", 2, [9100001, 9100004])]
    inc = rows[0]["id"]
    assert {r["flow_id"] for r in a.mgr.db.alerts(inc)} == {f1.flow_id, f2.flow_id}
    assert {r["flow_id"] for r in a.mgr.db.flows(inc)} == {f1.flow_id, f2.flow_id}
    names = {e["name"] for e in a.mgr.db.evidence(inc)}
    assert {f"flow-{f1.flow_id}.pcap", f"flow-{f2.flow_id}.pcap"} <= names
    # one first report, by the worker that opened the incident; it lists both flows' evidence
    assert a.stats.get("incidents.opened") == 1 and b.stats.get("incidents.opened") == 0
    assert _opened(a) == [inc] and _report_dirs(a) == [inc]
    first = _incident(a.mgr.db, inc)["first_report"]
    assert {i["name"] for i in first["evidence"]["items"]} == names
    detail = json.loads((Path(a.mgr.reports_dir) / inc / "detail_report.json").read_text())
    assert [t["sid"] for t in detail["timeline"]] == [9100001, 9100004]
    assert detail["volume"]["bytes_out"] == f1.bytes[0] + f2.bytes[0]
    a.close()
    b.close()
    assert verify(a.audit.path, a.audit.key).ok


def _sequence(send: list[Any], close_after: int, ack_after: int) -> list[tuple[Any, ...]]:
    """Feed alerts (worker, ts) in order, acking then closing the first incident on the way."""
    out = []
    for i, (w, ts) in enumerate(send):
        flow, _ = http_post_flow(cport=40000 + i)
        w.bus.publish(alert_event(flow, ts, pcap_cnt=i))
        if i == ack_after:
            w.mgr.db.set_status(w.mgr.db.query()[0]["id"], "acked", "tester")
        if i == close_after:
            w.mgr.db.set_status(w.mgr.db.query()[0]["id"], "closed", "tester")  # `incidents close`, elsewhere
    for w in {id(w): w for w, _ in send}.values():
        w.mgr.wait_idle()
    w = send[0][0]
    for r in w.mgr.db.query():
        out.append((r["id"], r["status"], r["alert_count"], r["first_ts"], r["last_ts"]))
    return out


def test_stale_caches_window_edges_acked_and_closed_incidents_as_one_process(tmp_path: Path) -> None:
    """Each worker's cache of (host, dest) -> incident goes stale when the other worker extends,
    opens or closes one; the database decides, as the one cache of a single process would."""
    times = [T0, T0 + 3000, T0 + 6000,  # 3000 joins via the window; 6000: a's cache is stale, joins
             T0 + 6100, T0 + 6200,  # after the close: b opens a new incident, a (cache: the closed one) joins it
             T0 + 6200 + WINDOW,  # exactly at the window's edge: joins
             T0 + 6200 + 2 * WINDOW + 0.001]  # just past it: a new incident
    _prepare(tmp_path / "two")
    a, b = Worker(tmp_path / "two"), Worker(tmp_path / "two")
    order = [a, b, a, b, a, b, a]
    two = _sequence(list(zip(order, times, strict=True)), close_after=2, ack_after=1)
    _prepare(tmp_path / "one")
    one_w = Worker(tmp_path / "one")
    one = _sequence([(one_w, t) for t in times], close_after=2, ack_after=1)
    assert two == one
    assert [(r[1], r[2]) for r in one] == [("closed", 3), ("open", 3), ("open", 1)]  # the acked one was joined
    assert sorted(_opened(a)) == [r[0] for r in one]  # one first report per incident, whoever opened it
    for w in (a, b, one_w):
        w.close()


def test_two_threads_racing_open_one_incident_per_destination(tmp_path: Path) -> None:
    _prepare(tmp_path)
    a, b = Worker(tmp_path), Worker(tmp_path)
    dests = [f"198.51.100.{i}" for i in range(1, 31)]
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def run(w: Worker, cport: int) -> None:
        try:
            flows = [http_post_flow(server=d, cport=cport)[0] for d in dests]
            for f in flows:
                start.wait()  # both alerts of a destination at the same moment
                w.bus.publish(alert_event(f, T0))
        except BaseException as e:  # noqa: BLE001 - reported by the test thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(w, p)) for w, p in ((a, 50001), (b, 50002))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    a.mgr.wait_idle()
    b.mgr.wait_idle()
    rows = a.mgr.db.query()
    assert sorted(r["dest"] for r in rows) == sorted(dests)
    assert all(r["alert_count"] == 2 for r in rows)
    assert a.stats.get("incidents.opened") + b.stats.get("incidents.opened") == len(dests)
    assert a.stats.get("incidents.error") == b.stats.get("incidents.error") == 0
    assert sorted(_opened(a)) == sorted(r["id"] for r in rows) == _report_dirs(a)
    assert all(_incident(a.mgr.db, r["id"])["first_report"] is not None for r in rows)
    a.close()
    b.close()


RACER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from pathlib import Path
    from alerts.audit import AuditLog
    from alerts.incidents import IncidentManager
    from monitor.stats import Stats
    from tests.alerts.incident_factories import alert_event, http_post_flow, make_config
    cfg = make_config(Path({tmp!r}))
    stats = Stats()
    audit = AuditLog(cfg.audit, stats, base_dir=cfg.base_dir)
    mgr = IncidentManager(cfg, stats, None, audit, None, None, clock=lambda: {t0!r})
    flows = []
    for i in range({n}):
        flow, _ = http_post_flow(server="198.51.100.%d" % (1 + i), cport={cport})
        flow.flow_id = ({cport} << 32) + i  # flow ids are keyed per process
        flows.append(flow)
    print("ready", flush=True)
    sys.stdin.readline()
    for i, flow in enumerate(flows):
        mgr(alert_event(flow, {t0!r} + i))
    mgr.close()
    audit.close()
    print(stats.get("incidents.opened"), stats.get("incidents.error"), flush=True)
""")


def test_two_processes_racing_open_one_incident_per_destination(tmp_path: Path) -> None:
    _prepare(tmp_path)
    n = 40
    procs = [subprocess.Popen([sys.executable, "-c", RACER.format(root=str(ROOT), tmp=str(tmp_path), t0=T0, n=n,
                                                                   cport=cport)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for cport in (50001, 50002)]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready", p.communicate()[1]
    for p in procs:  # both start together
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    results = [p.communicate(timeout=90) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in results]
    counts = [tuple(map(int, out.split())) for out, _ in results]
    assert sum(opened for opened, _ in counts) == n and all(err == 0 for _, err in counts)
    cfg = make_config(tmp_path)
    db = IncidentDB(cfg.resolve(cfg.incidents.db), readonly=True)
    rows = db.query()
    assert len(rows) == n and all(r["alert_count"] == 2 for r in rows)
    assert len({r["dest"] for r in rows}) == n
    assert all(_incident(db, r["id"])["first_report"] is not None for r in rows)
    db.close()
    audit = [json.loads(x) for x in (tmp_path / "audit" / "audit.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted(r["data"]["incident_id"] for r in audit if r["type"] == "incident_opened") == sorted(
        r["id"] for r in rows)


def test_a_starting_worker_leaves_a_running_workers_first_report_alone(tmp_path: Path) -> None:
    """A worker starting while another's first report is still being rendered must not render
    it too (a restart renders missing first reports: here the opener is alive)."""
    _prepare(tmp_path)
    a = Worker(tmp_path)
    flow, _ = http_post_flow()
    with a.mgr._report_lock:  # a's report job waits: the incident is open, its first report not stored
        a.bus.publish(alert_event(flow, T0))
        inc = a.mgr.db.query()[0]["id"]
        assert _incident(a.mgr.db, inc)["first_report"] is None
        b = Worker(tmp_path)
        assert b.mgr._jobs.unfinished_tasks == 0
    a.mgr.wait_idle()
    b.mgr.wait_idle()
    assert [r["data"].get("recovered") for r in _audit_types(a) if r["type"] == "incident_opened"] == [None]
    assert _opened(a) == [inc]
    a.close()
    b.close()


def test_a_first_report_whose_opener_died_is_rendered_once_by_the_restart(tmp_path: Path) -> None:
    _prepare(tmp_path)
    cfg = make_config(tmp_path)
    db = IncidentDB(cfg.resolve(cfg.incidents.db))
    flow, _ = http_post_flow()
    inc, opened, _last = db.add_alert(
        candidate=None, host="10.77.0.1", dest="203.0.113.7", ts=T0, now=T0, sensor="s", sid=9100001,
        signature="x", category="protected-data-leak", severity=1, flow_id=flow.flow_id,
        record=alert_event_record(flow), window=WINDOW, session=dead_session())
    db.close()
    assert opened
    a = Worker(tmp_path)  # the restart: two workers start; the first takes the report over
    with a.mgr._report_lock:
        b = Worker(tmp_path)  # ... and the second leaves it to the first, which is alive
    a.mgr.wait_idle()
    b.mgr.wait_idle()
    assert _opened(a) == [inc]
    assert [r["data"].get("recovered") for r in _audit_types(a) if r["type"] == "incident_opened"] == [True]
    assert _incident(a.mgr.db, inc)["first_report"] is not None
    a.close()
    b.close()


def alert_event_record(flow: Any) -> dict[str, Any]:
    from alerts.eve import eve_record

    return eve_record(alert_event(flow, T0), "sensor-tokyo-1")


def dead_session() -> str:
    """The session of a process that has exited."""
    out = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
                          "from alerts.incidents import process_session; print(process_session())"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out.count(":") == 2 and not session_alive(out)
    return out


def test_sessions_name_live_processes_only() -> None:
    me = process_session()
    assert session_alive(me)
    assert me.split(":")[1] == str(os.getpid())
    assert not session_alive(dead_session())
    assert not session_alive("") and not session_alive("garbage") and not session_alive("other-boot:1:1")
