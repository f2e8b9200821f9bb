"""Incidents: every leak alert opens or joins one (基準 12(1) 事故等の報告).

Alerts are grouped by (protected host, destination) within ``incidents.window`` of traffic time.
The state lives in SQLite (WAL) at ``incidents.db``; each alert is inserted in the same
transaction that opens or updates its incident, so after a crash (kill -9) every alert whose
commit returned is there and no incident is half-written. The EVE log remains the primary
record and is written first; an alert that reached EVE but not the database (the kill fell
between the two) is read back from the EVE file at the next start (``alerts_recovered``).

When an incident opens, the first-report draft (第一報) is rendered right after the commit (on
a background thread, from a snapshot of what the sensor knew at detection and the incident's
alerts already stored), written under ``<db dir>/reports/<incident>/``, recorded in the audit
log, stored in the database and handed to the notifier; a draft a crash cut off is rendered at
the next start. A matching file goes to the evidence store when it closes (its ``fileinfo``
event: the pipeline drops the content right after); when a flow with an incident ends (its
``flow`` event), its packets from the SYN (the flow's :class:`~alerts.evidence.FlowRecorder`)
and its EVE records follow. Once evidence is on disk, the ids and SHA-256 of every item go into
the first-report draft (while the incident is still open) and the detail report (詳細報告).

With ``--workers`` each worker process runs its own manager over the one database, and one
(host, destination) may have flows in several workers. The alert's transaction (``BEGIN
IMMEDIATE``: the workers take turns) therefore looks in the database for the incident when the
process's own cache has none, so the outcome is that of one process: one incident, one first
report, rendered by the worker that opened it (``report_claims``; a restart renders a missing
one only if that worker is gone). Report files are written under a file lock.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import functools
import hashlib
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from alerts.eve import eve_record
from alerts.evidence import EvidenceStore, FlowEvidence, FlowRecorder, KeptFile
from alerts.report import (
    HostInfo,
    Renderer,
    detail_report,
    first_report,
    local_time,
    mac_text,
    write_report_files,
)
from alerts.report import host_names as names_of
from monitor.config import Config
from monitor.events import Event
from monitor.model import TO_CLIENT, TO_SERVER, Flow
from monitor.stats import Stats

log = logging.getLogger("leakmon.incidents")

STATUSES = ("open", "acked", "closed")
# Alert kinds/categories that are findings about the sensor or policy, not a leak: no incident.
NON_INCIDENT_KINDS = frozenset({"weak_crypto", "tls_policy", "canary", "finding", "info", "selftest"})
MAX_PENDING_FLOWS = 10_000
MAX_FILES_PER_FLOW = 64
# How far back the EVE file is read at start for alerts a crash kept out of the database.
MAX_RECOVER_BYTES = 64 << 20

SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
  id TEXT PRIMARY KEY,
  num INTEGER NOT NULL UNIQUE,
  status TEXT NOT NULL,
  host TEXT NOT NULL,
  dest TEXT NOT NULL,
  sensor TEXT NOT NULL,
  opened_at REAL NOT NULL,
  first_ts REAL NOT NULL,
  last_ts REAL NOT NULL,
  alert_count INTEGER NOT NULL,
  max_severity INTEGER,
  first_report TEXT,
  updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS incidents_key ON incidents(host, dest, status);
CREATE TABLE IF NOT EXISTS alerts (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  incident_id TEXT NOT NULL REFERENCES incidents(id),
  ts REAL NOT NULL,
  sid INTEGER,
  signature TEXT,
  category TEXT,
  severity INTEGER,
  flow_id INTEGER,
  record TEXT NOT NULL,
  eve_key TEXT
);
CREATE INDEX IF NOT EXISTS alerts_incident ON alerts(incident_id);
CREATE INDEX IF NOT EXISTS alerts_sid ON alerts(sid);
CREATE TABLE IF NOT EXISTS eve_sessions (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  path TEXT NOT NULL,
  dev INTEGER NOT NULL,
  ino INTEGER NOT NULL,
  start_offset INTEGER NOT NULL,
  started REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS state_changes (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  incident_id TEXT NOT NULL REFERENCES incidents(id),
  ts REAL NOT NULL,
  old TEXT NOT NULL,
  new TEXT NOT NULL,
  by TEXT NOT NULL,
  note TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS flows (
  incident_id TEXT NOT NULL REFERENCES incidents(id),
  flow_id INTEGER NOT NULL,
  bytes_out INTEGER, bytes_in INTEGER, packets INTEGER,
  start_ts REAL, end_ts REAL, end_reason TEXT,
  PRIMARY KEY (incident_id, flow_id)
);
-- Which process renders an incident's first report: the one that opened it, or the restart
-- that took over from a dead one (``--workers``: several processes share the database).
CREATE TABLE IF NOT EXISTS report_claims (
  incident_id TEXT PRIMARY KEY,
  session TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS evidence (
  incident_id TEXT NOT NULL REFERENCES incidents(id),
  name TEXT NOT NULL,
  kind TEXT, flow_id INTEGER, size INTEGER, sha256 TEXT, cipher_sha256 TEXT, stored INTEGER, created TEXT,
  PRIMARY KEY (incident_id, name)
);
"""


def opens_incident(body: dict[str, Any]) -> bool:
    """Leak alerts open incidents; canary self-tests and crypto-policy findings do not."""
    lm = body.get("leakmon") or {}
    if lm.get("canary"):
        return False
    if str(lm.get("kind") or "").lower() in NON_INCIDENT_KINDS:
        return False
    cat = str((body.get("alert") or {}).get("category") or "").lower()
    return not ("canary" in cat or ("weak" in cat and "crypto" in cat))


# ---------------------------------------------------------------- database


class IncidentDB:
    """The SQLite store; one connection shared by the packet thread and the evidence worker."""

    def __init__(self, path: str, *, synchronous: str = "normal", readonly: bool = False) -> None:
        self.path = path
        if not readonly:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        elif not os.path.exists(path):
            raise FileNotFoundError(f"incident database {path} does not exist")
        self.conn = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
        self.conn.row_factory = sqlite3.Row
        self.lock = threading.RLock()
        with self.lock:
            self.conn.execute("PRAGMA busy_timeout=10000")
            if not readonly:
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
                self.conn.execute("PRAGMA foreign_keys=ON")
                self.conn.executescript(SCHEMA)
                self._migrate()
                os.chmod(path, 0o600)

    def _migrate(self) -> None:
        """Columns added after the first schema (a database from an earlier version keeps working)."""
        cols = {r[1] for r in self.conn.execute("PRAGMA table_info(alerts)")}
        if "eve_key" not in cols:
            self.conn.execute("ALTER TABLE alerts ADD COLUMN eve_key TEXT")
        self.conn.execute("CREATE INDEX IF NOT EXISTS alerts_eve_key ON alerts(eve_key)")
        # the newest incident of a (host, dest), looked up by every alert the cache cannot place
        self.conn.execute("CREATE INDEX IF NOT EXISTS incidents_latest ON incidents(host, dest, num)")

    def tx(self) -> _Tx:
        return _Tx(self)

    def close(self) -> None:
        with self.lock:
            try:
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
            self.conn.close()

    # ------------------------------------------------------------ writes

    def add_alert(self, *, candidate: str | None, host: str, dest: str, ts: float, now: float, sensor: str,
                  sid: int | None, signature: str, category: str, severity: int | None, flow_id: int | None,
                  record: dict[str, Any], eve_key: str | None = None, window: float | None = None,
                  session: str = "") -> tuple[str, bool, float]:
        """Join ``candidate`` (if still not closed), else the newest incident of (host, dest) if it
        is not closed and ``window`` covers ``ts``, else open one; insert the alert.

        Returns (incident, whether this call opened it, the incident's last traffic time).
        One ``BEGIN IMMEDIATE`` transaction: the alert and its incident are committed together or
        not at all, and the processes sharing the database (``--workers``) take their turns here,
        so an incident another worker opened a moment ago is found, never opened twice.
        """
        rec_json = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str)
        with self.tx() as c:
            inc = candidate if candidate is not None and _join(c, candidate, ts, severity, now) else None
            if inc is None and window is not None:
                inc = _newest_joinable(c, host, dest, ts, window)
                if inc is not None:
                    _join(c, inc, ts, severity, now)  # cannot miss: checked in this transaction
            opened = inc is None
            if inc is None:
                inc = _open_incident(c, host, dest, ts, now, sensor, severity)
                # the opener renders the first report; a restart takes over only if it died
                c.execute("INSERT OR REPLACE INTO report_claims (incident_id, session) VALUES (?,?)", (inc, session))
            c.execute("INSERT INTO alerts (incident_id, ts, sid, signature, category, severity, flow_id, record, eve_key)"
                      " VALUES (?,?,?,?,?,?,?,?,?)",
                      (inc, ts, sid, signature, category, severity, flow_id, rec_json, eve_key))
            last = float(c.execute("SELECT last_ts FROM incidents WHERE id=?", (inc,)).fetchone()[0])
        return inc, opened, last

    def claim_report(self, inc: str, session: str, alive: Callable[[str], bool]) -> bool:
        """Take over rendering ``inc``'s first report, missing because its renderer died (a crash
        cut the job off). False while the report exists or a live process is due to render it
        (another worker that opened it a moment ago), and for every caller but the first."""
        with self.tx() as c:
            row = c.execute("SELECT i.first_report IS NULL AS missing, r.session FROM incidents i"
                            " LEFT JOIN report_claims r ON r.incident_id = i.id WHERE i.id=?", (inc,)).fetchone()
            if row is None or not row["missing"]:
                return False
            if row["session"] is not None and alive(row["session"]):
                return False
            c.execute("INSERT OR REPLACE INTO report_claims (incident_id, session) VALUES (?,?)", (inc, session))
        return True

    def has_alert(self, eve_key: str) -> bool:
        with self.lock:
            return self.conn.execute("SELECT 1 FROM alerts WHERE eve_key=? LIMIT 1", (eve_key,)).fetchone() is not None

    def last_eve_session(self, path: str) -> sqlite3.Row | None:
        with self.lock:
            row: sqlite3.Row | None = self.conn.execute(
                "SELECT * FROM eve_sessions WHERE path=? ORDER BY id DESC LIMIT 1", (path,)).fetchone()
            return row

    def add_eve_session(self, path: str, dev: int, ino: int, offset: int, now: float) -> None:
        with self.tx() as c:
            c.execute("INSERT INTO eve_sessions (path, dev, ino, start_offset, started) VALUES (?,?,?,?,?)",
                      (path, dev, ino, offset, now))
            # Only the newest session of a path is ever read back.
            c.execute("DELETE FROM eve_sessions WHERE path=? AND id < (SELECT MAX(id) FROM eve_sessions WHERE path=?)",
                      (path, path))

    def without_first_report(self) -> list[str]:
        with self.lock:
            return [r[0] for r in self.conn.execute("SELECT id FROM incidents WHERE first_report IS NULL ORDER BY num")]

    def set_first_report(self, inc: str, report: dict[str, Any]) -> None:
        with self.tx() as c:
            c.execute("UPDATE incidents SET first_report=? WHERE id=?", (json.dumps(report, ensure_ascii=False), inc))

    def upsert_flow(self, inc: str, flow: Flow, outbound: int) -> None:
        inbound = TO_CLIENT if outbound == TO_SERVER else TO_SERVER
        with self.tx() as c:
            c.execute("INSERT OR REPLACE INTO flows VALUES (?,?,?,?,?,?,?,?)",
                      (inc, flow.flow_id, flow.bytes[outbound], flow.bytes[inbound], sum(flow.pkts),
                       flow.start_ts, flow.last_ts, flow.end_reason or flow.state))

    def add_evidence(self, inc: str, entries: list[dict[str, Any]]) -> None:
        with self.tx() as c:
            for e in entries:
                c.execute("INSERT OR REPLACE INTO evidence VALUES (?,?,?,?,?,?,?,?,?)",
                          (inc, e["name"], e.get("kind"), e.get("flow_id"), e.get("size"), e.get("sha256"),
                           e.get("cipher_sha256"), 1 if e.get("stored") else 0, e.get("created", "")))

    def set_status(self, inc: str, new: str, by: str, note: str = "", now: float | None = None) -> tuple[str, str]:
        """(old, new). Raises KeyError (unknown incident) or ValueError (not allowed)."""
        if new not in STATUSES:
            raise ValueError(f"unknown status {new!r}")
        now = time.time() if now is None else now
        with self.tx() as c:
            row = c.execute("SELECT status FROM incidents WHERE id=?", (inc,)).fetchone()
            if row is None:
                raise KeyError(inc)
            old = row["status"]
            if old == new:
                raise ValueError(f"{inc} is already {new}")
            if old == "closed":
                raise ValueError(f"{inc} is closed")
            c.execute("UPDATE incidents SET status=?, updated_at=? WHERE id=?", (new, now, inc))
            c.execute("INSERT INTO state_changes (incident_id, ts, old, new, by, note) VALUES (?,?,?,?,?,?)",
                      (inc, now, old, new, by, note))
        return old, new

    # ------------------------------------------------------------ reads

    def open_incidents(self) -> list[sqlite3.Row]:
        with self.lock:
            return self.conn.execute("SELECT id, host, dest, last_ts FROM incidents WHERE status != 'closed'").fetchall()

    def get(self, inc: str) -> dict[str, Any] | None:
        with self.lock:
            row = self.conn.execute("SELECT * FROM incidents WHERE id=?", (inc,)).fetchone()
            if row is None:
                return None
            d = dict(row)
            d["sids"] = [r[0] for r in self.conn.execute(
                "SELECT DISTINCT sid FROM alerts WHERE incident_id=? ORDER BY sid", (inc,))]
        d["first_report"] = json.loads(d["first_report"]) if d.get("first_report") else None
        return d

    def query(self, *, status: str | None = None, since: float | None = None, host: str | None = None,
             sid: int | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        q = "SELECT * FROM incidents WHERE 1=1"
        args: list[Any] = []
        if status:
            q += " AND status=?"
            args.append(status)
        if since is not None:
            q += " AND last_ts >= ?"
            args.append(since)
        if host:
            q += " AND host=?"
            args.append(host)
        if sid is not None:
            q += " AND id IN (SELECT incident_id FROM alerts WHERE sid=?)"
            args.append(sid)
        q += " ORDER BY num LIMIT ?"
        args.append(limit)
        with self.lock:
            rows = [dict(r) for r in self.conn.execute(q, args)]
            for r in rows:
                r["sids"] = [x[0] for x in self.conn.execute(
                    "SELECT DISTINCT sid FROM alerts WHERE incident_id=? ORDER BY sid", (r["id"],))]
                r.pop("first_report", None)
        return rows

    def alerts(self, inc: str) -> list[dict[str, Any]]:
        with self.lock:
            rows = self.conn.execute("SELECT ts, record FROM alerts WHERE incident_id=? ORDER BY ts, id", (inc,)).fetchall()
        out = []
        for r in rows:
            rec = json.loads(r["record"])
            rec["_ts"] = r["ts"]
            out.append(rec)
        return out

    def history(self, inc: str) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(r) for r in self.conn.execute(
                "SELECT ts, old, new, by, note FROM state_changes WHERE incident_id=? ORDER BY id", (inc,))]

    def evidence(self, inc: str) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(r) for r in self.conn.execute(
                "SELECT * FROM evidence WHERE incident_id=? ORDER BY flow_id, name", (inc,))]

    def flows(self, inc: str) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(r) for r in self.conn.execute(
                "SELECT * FROM flows WHERE incident_id=? ORDER BY start_ts", (inc,))]


class _Tx:
    """BEGIN IMMEDIATE .. COMMIT (ROLLBACK on error) under the connection lock."""

    def __init__(self, db: IncidentDB) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.lock.acquire()
        self.db.conn.execute("BEGIN IMMEDIATE")
        return self.db.conn

    def __exit__(self, exc_type: object, *rest: object) -> None:
        try:
            self.db.conn.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self.db.lock.release()


def _join(c: sqlite3.Connection, inc: str, ts: float, severity: int | None, now: float) -> bool:
    """Count an alert into ``inc`` unless it was closed (closed incidents are never joined again)."""
    cur = c.execute(
        "UPDATE incidents SET last_ts=MAX(last_ts, ?), first_ts=MIN(first_ts, ?), alert_count=alert_count+1,"
        " max_severity=CASE WHEN max_severity IS NULL OR (? IS NOT NULL AND ? < max_severity) THEN ?"
        " ELSE max_severity END, updated_at=? WHERE id=? AND status != 'closed'",
        (ts, ts, severity, severity, severity, now, inc))
    return cur.rowcount == 1


def _newest_joinable(c: sqlite3.Connection, host: str, dest: str, ts: float, window: float) -> str | None:
    """The incident a process's cache of (host, dest) -> newest incident would offer, read from the
    database: what another process sharing it (a ``--workers`` sibling) opened or extended."""
    row = c.execute("SELECT id, status, last_ts FROM incidents WHERE host=? AND dest=? ORDER BY num DESC LIMIT 1",
                    (host, dest)).fetchone()
    if row is None or row["status"] == "closed" or abs(ts - row["last_ts"]) > window:
        return None
    return str(row["id"])


def _open_incident(c: sqlite3.Connection, host: str, dest: str, ts: float, now: float, sensor: str,
                   severity: int | None) -> str:
    num = c.execute("SELECT COALESCE(MAX(num), 0) + 1 FROM incidents").fetchone()[0]
    day = _dt.datetime.fromtimestamp(now).strftime("%Y%m%d")
    inc = f"INC-{day}-{num:05d}"
    c.execute("INSERT INTO incidents (id, num, status, host, dest, sensor, opened_at, first_ts, last_ts,"
              " alert_count, max_severity, updated_at) VALUES (?,?,?,?,?,?,?,?,?,1,?,?)",
              (inc, num, "open", host, dest, sensor, now, ts, ts, severity, now))
    return inc


# ---------------------------------------------------------------- which process renders a first report


@functools.cache
def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def _start_time(pid: int) -> str:
    """The process's start time (clock ticks since boot), "" when it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()  # the command name may hold spaces
    except (OSError, IndexError):
        return ""
    if len(fields) < 20 or fields[0] in (b"Z", b"X"):
        return ""
    return fields[19].decode()


def process_session() -> str:
    """This process as a first-report claim names it: boot, pid and start time (a pid alone is
    reused). Computed per call: workers are forked after this module is imported."""
    pid = os.getpid()
    return f"{_boot_id()}:{pid}:{_start_time(pid)}"


def session_alive(session: str) -> bool:
    """Whether the process named by :func:`process_session` still runs."""
    try:
        boot, pid_text, start = session.split(":")
        pid = int(pid_text)
    except ValueError:
        return False
    if boot != _boot_id():
        return False  # a reboot ended it
    if start:
        return _start_time(pid) == start
    try:  # no /proc: the pid alone
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------- evidence view for reports


def evidence_view(db: IncidentDB, inc: str, store: EvidenceStore | None, lab: dict[str, Any]) -> dict[str, Any]:
    rows = db.evidence(inc)
    if rows:
        status = "stored"
    elif store is None or not store.ecfg.enabled:
        status = "off"
    elif not store.enabled:
        status = "disabled"
    else:
        status = "pending"
    items = [{"id": f"{inc}/{r['name']}", "name": r["name"], "kind": r["kind"], "flow_id": r["flow_id"],
              "size": r["size"], "sha256": r["sha256"] or "", "stored": bool(r["stored"])} for r in rows]
    return {"status": status, "text": lab["evidence"].get(status, status), "encryption": "AES-256-GCM",
            "items": items}


# ---------------------------------------------------------------- the sink


@dataclass
class _Pending:
    """A flow in one or more incidents: its packets and files go to the evidence store when it ends."""

    flow: Flow
    incidents: set[str] = field(default_factory=set)
    # file_id -> the FileObject (content still to be taken) or None (handed to the evidence store).
    files: dict[int, Any] = field(default_factory=dict)


def alert_key(rec: dict[str, Any]) -> str:
    """Identity of one alert record, the same whether built here or read back from the EVE file."""
    a = rec.get("alert") or {}
    fi = rec.get("fileinfo") or {}
    lm = rec.get("leakmon") or {}
    ident = [rec.get("timestamp"), rec.get("flow_id"), rec.get("pcap_cnt"), a.get("signature_id"), rec.get("tx_id"),
             fi.get("file_id"), lm.get("where"), lm.get("variant")]
    return hashlib.sha256(json.dumps(ident, default=str).encode()).hexdigest()


def _parse_eve_ts(text: str) -> float | None:
    try:
        return _dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
    except (TypeError, ValueError):
        return None


def _record_parties(rec: dict[str, Any]) -> tuple[HostInfo, HostInfo]:
    """(internal host, destination) from an EVE alert record alone (recovery: no Flow object)."""
    lm = rec.get("leakmon") or {}
    src = HostInfo(str(rec.get("src_ip", "")), rec.get("src_port"))
    dst = HostInfo(str(rec.get("dest_ip", "")), rec.get("dest_port"))
    ph = lm.get("protected_host")
    if ph is not None and ph == dst.ip and ph != src.ip:
        return dst, src
    if ph is None and lm.get("direction") == "inbound":
        return dst, src
    return src, dst


def _eve_alert_tail(path: str, start: int, is_known: Callable[[str], bool],
                    max_bytes: int) -> tuple[list[dict[str, Any]], bool]:
    """Incident-opening alert records at the end of an EVE file that ``is_known`` does not know.

    Read backwards from the end (a crash can only have lost the newest alerts) down to ``start``
    or the first known alert; a last line without its newline is a torn write and skipped.
    Returns (records oldest first, whether ``max_bytes`` stopped the scan).
    """
    found: list[dict[str, Any]] = []
    with open(path, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        pos = size
        carry = b""  # the start of a line whose end was in the block read before
        torn = True  # what follows the file's last newline is not a record
        while pos > start:
            if size - pos >= max_bytes:
                return found[::-1], True
            step = min(1 << 20, pos - start)
            pos -= step
            fh.seek(pos)
            lines = (fh.read(step) + carry).split(b"\n")
            carry = lines.pop(0) if pos > start else b""
            if torn:
                if not lines:
                    continue
                lines.pop()
                torn = False
            for line in reversed(lines):
                if b'"event_type":"alert"' not in line:
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(rec, dict) or rec.get("event_type") != "alert" or not opens_incident(rec):
                    continue
                if is_known(alert_key(rec)):
                    return found[::-1], False
                found.append(rec)
    return found[::-1], False


class IncidentManager:
    """EventBus sink: alerts -> incidents (+ first report, audit, notification); flow end -> evidence.

    Crash safety: the EVE writer (the primary record) runs before this sink, so a kill -9 can
    leave the newest alert lines in EVE without their database rows. At start the manager reads
    the EVE file back from where its previous session began and inserts every alert the database
    does not have (``audit`` record ``alerts_recovered``), and renders the first reports whose
    background job the crash cut off.
    """

    def __init__(self, cfg: Config, stats: Stats | None = None, evidence: EvidenceStore | None = None,
                 audit: Any = None, notifier: Any = None, names: Any = None, *,
                 clock: Callable[[], float] = time.time, eve_path: str | None = None) -> None:
        self.cfg = cfg
        self.stats = stats or Stats()
        self.evidence = evidence
        self.audit = audit
        self.notifier = notifier
        self.names = names
        self.clock = clock
        self.sensor = cfg.sensor.name
        self.window = cfg.incidents.window
        self.db_path = cfg.resolve(cfg.incidents.db)
        self.db = IncidentDB(self.db_path, synchronous=cfg.incidents.synchronous)
        self.renderer = Renderer(cfg.resolve(cfg.incidents.templates), cfg.incidents.language)
        self.renderer.validate()
        self.reports_dir = os.path.join(os.path.dirname(self.db_path), "reports")
        # (host, dest) -> (incident id, last traffic ts): which incident an alert may join.
        self._open: dict[tuple[str, str], tuple[str, float]] = {}
        for r in self.db.open_incidents():
            self._open[(r["host"], r["dest"])] = (r["id"], r["last_ts"])
        self._pending: OrderedDict[int, _Pending] = OrderedDict()
        self._closed = False
        # First-report storage and evidence refreshes never interleave: not between this
        # process's threads (the lock), nor with the other processes sharing the database
        # (``--workers``: an incident's alerts and evidence come from several), by a file lock.
        self._report_lock = threading.Lock()
        self._reports_fd = os.open(f"{self.db_path}.reports.lock", os.O_RDWR | os.O_CREAT, 0o600)
        self.session = process_session()
        # Incidents whose stored evidence changed since their reports were last written.
        self._dirty: set[str] = set()
        self._dirty_lock = threading.Lock()
        # Report rendering, report files, audit and notification of a new incident run here, so the
        # packet path pays only for the alert's commit.
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize=1000)
        self._worker: threading.Thread | None = threading.Thread(target=self._run, name="leakmon-incidents",
                                                                 daemon=True)
        self._worker.start()
        # The EVE file this sensor writes (None: the configured one; "" or "-": none here, as in
        # a worker process or on stdout), read back at start for alerts a crash kept from the db.
        if eve_path is None:
            eve_path = cfg.resolve(cfg.outputs.eve.path) if cfg.outputs.eve.path != "-" else ""
        self.eve_path = os.path.abspath(eve_path) if eve_path and eve_path != "-" else None
        self._recover()

    @contextlib.contextmanager
    def _reports_locked(self) -> Iterator[None]:
        with self._report_lock:
            fcntl.flock(self._reports_fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._reports_fd, fcntl.LOCK_UN)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is None:
                    return
                job()
            except Exception:  # noqa: BLE001 - one failed report must not stop the next
                self.stats.incr("incidents.error")
                log.exception("incident background job failed")
            finally:
                self._jobs.task_done()

    def _later(self, job: Callable[[], None]) -> None:
        if self._worker is None:
            job()
            return
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            self.stats.incr("incidents.queue_full")
            job()  # nothing is dropped: a burst of new incidents runs inline

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until first reports, notifications, evidence and report refreshes queued so far are done."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while self._jobs.unfinished_tasks and time.monotonic() < deadline:
                time.sleep(0.002)
            if self.evidence is not None:
                self.evidence.flush(max(0.0, deadline - time.monotonic()))
            # evidence written meanwhile may have queued report refreshes
            if not self._jobs.unfinished_tasks and (self.evidence is None or self.evidence.idle()):
                return

    # ------------------------------------------------------------ restart after a crash

    def _recover(self) -> None:
        for inc in self.db.without_first_report():
            # not one whose opener still runs (another worker): it renders the report itself
            if self.db.claim_report(inc, self.session, session_alive):
                self._later(functools.partial(self._first_report_from_db, inc))
        if self.eve_path is None:
            return
        try:
            st = os.stat(self.eve_path)
        except FileNotFoundError:
            st = None
        last = self.db.last_eve_session(self.eve_path)
        if st is not None and last is not None:
            same_file = (last["dev"], last["ino"]) == (st.st_dev, st.st_ino) and last["start_offset"] <= st.st_size
            start = last["start_offset"] if same_file else 0
            try:
                missing, capped = _eve_alert_tail(self.eve_path, start, self.db.has_alert, MAX_RECOVER_BYTES)
            except OSError:
                self.stats.incr("incidents.recover_error")
                log.exception("cannot read the EVE file back for recovery")
                missing, capped = [], False
            if capped:
                self.stats.incr("incidents.recover_capped")
            for rec in missing:
                self._alert_record(rec)
            if missing:
                self.stats.incr("incidents.recovered_alerts", len(missing))
                log.warning("recovered %d alert(s) from the EVE log that the incident database missed "
                            "(the previous run ended abruptly)", len(missing))
                if self.audit is not None:
                    self.audit.record("alerts_recovered", {"count": len(missing), "eve": self.eve_path,
                                                           "incident_ids": sorted({r["_incident_id"] for r in missing})})
        self.db.add_eve_session(self.eve_path, st.st_dev if st else 0, st.st_ino if st else 0,
                                st.st_size if st else 0, self.clock())

    def _alert_record(self, rec: dict[str, Any]) -> None:
        """Insert an alert known only from its EVE record (recovery)."""
        alert = rec.get("alert") or {}
        host, dest = _record_parties(rec)
        ts = _parse_eve_ts(str(rec.get("timestamp", ""))) or self.clock()
        now = self.clock()
        inc, opened = self._store(host.ip, dest.ip, ts, now, alert, rec.get("flow_id"), rec)
        rec["_incident_id"] = inc
        self.stats.incr("incidents.alerts")
        if self.audit is not None:
            data: dict[str, Any] = {k: alert[k] for k in ("signature_id", "rev", "signature", "category", "severity",
                                                          "action") if k in alert}
            data.update(event_ts=rec.get("timestamp"), flow_id=rec.get("flow_id"), pcap_cnt=rec.get("pcap_cnt"),
                        incident_id=inc, recovered_from_eve=True)
            self.audit.record("alert", data)
        if opened:
            self.stats.incr("incidents.opened")
            self._later(lambda: self._first_report(inc, rec, host, dest, {"bytes_out": 0, "bytes_in": 0, "packets": 0},
                                                   (ts, ts), now, recovered=True))

    def _first_report_from_db(self, inc: str) -> None:
        """The first report of an incident whose report job a crash cut off (from its first alert)."""
        incident = self.db.get(inc)
        if incident is None or incident["first_report"] is not None:
            return
        alerts = self.db.alerts(inc)
        rec = alerts[0] if alerts else {}
        rec.pop("_ts", None)
        host, dest = _record_parties(rec) if rec else (HostInfo(incident["host"]), HostInfo(incident["dest"]))
        self._first_report(inc, rec, host, dest, {"bytes_out": 0, "bytes_in": 0, "packets": 0},
                           (incident["first_ts"], incident["first_ts"]), incident["opened_at"], recovered=True)

    # ------------------------------------------------------------ sink entry

    def __call__(self, ev: Event) -> None:
        try:
            flow = ev.flow
            if flow is not None and isinstance(flow.recorder, FlowRecorder):
                flow.recorder.note(ev)
            if ev.event_type == "alert":
                if opens_incident(ev.body):
                    self._alert(ev)
            elif ev.event_type == "fileinfo" and flow is not None and flow.flow_id in self._pending:
                self._file_closed(self._pending[flow.flow_id], ev)
            elif ev.event_type == "flow" and flow is not None and flow.flow_id in self._pending:
                self.flow_ended(flow)
        except Exception:  # noqa: BLE001 - never break the packet path
            self.stats.incr("incidents.error")
            log.exception("incident handling failed")

    # ------------------------------------------------------------ alerts

    def _parties(self, ev: Event) -> tuple[HostInfo, HostInfo, int]:
        """(internal host, destination, outbound direction) of an alert."""
        flow = ev.flow
        lm = ev.body.get("leakmon") or {}
        if flow is None:
            src = str(lm.get("protected_host") or "")
            return HostInfo(src), HostInfo(""), TO_SERVER
        c, s = flow.addresses()
        ph = lm.get("protected_host")
        if ph == c or (ph is None and flow.protected_side == "client"):
            side = TO_SERVER
        elif ph == s or (ph is None and flow.protected_side == "server"):
            side = TO_CLIENT
        else:
            side = ev.direction if ev.direction is not None else TO_SERVER
        if side == TO_SERVER:
            host = HostInfo(c, flow.cport, mac_text(flow.client_mac), names_of(self.names, flow.client))
            dest = HostInfo(s, flow.sport, mac_text(flow.server_mac), names_of(self.names, flow.server))
        else:
            host = HostInfo(s, flow.sport, mac_text(flow.server_mac), names_of(self.names, flow.server))
            dest = HostInfo(c, flow.cport, mac_text(flow.client_mac), names_of(self.names, flow.client))
        return host, dest, side

    def _alert(self, ev: Event) -> None:
        rec = eve_record(ev, self.sensor)
        alert = ev.body.get("alert") or {}
        host, dest, outbound = self._parties(ev)
        now = self.clock()
        inc, opened = self._store(host.ip, dest.ip, ev.ts, now, alert,
                                  ev.flow.flow_id if ev.flow is not None else None, rec)
        ev.extra["incident_id"] = inc
        self.stats.incr("incidents.alerts")
        if ev.flow is not None:
            self._track(ev.flow, inc, ev)
        if opened:
            self.stats.incr("incidents.opened")
            flow = ev.flow
            volume = {"bytes_out": 0, "bytes_in": 0, "packets": 0}
            start = ev.ts
            if flow is not None:  # what is known now, at detection
                volume = {"bytes_out": flow.bytes[outbound], "bytes_in": flow.bytes[1 - outbound],
                          "packets": sum(flow.pkts)}
                start = flow.start_ts or ev.ts
            ts = ev.ts
            self._later(lambda: self._first_report(inc, rec, host, dest, volume, (start, ts), now))

    def _store(self, host: str, dest: str, ts: float, now: float, alert: dict[str, Any], flow_id: int | None,
               rec: dict[str, Any]) -> tuple[str, bool]:
        """Commit one alert into its incident: (incident id, whether this process opened it).

        The cache offers the incident this process last used for (host, dest); without one in
        the window, the database has the last word (another worker may have opened it).
        """
        key = (host, dest)
        cand = self._open.get(key)
        candidate = cand[0] if cand is not None and abs(ts - cand[1]) <= self.window else None
        sev = alert.get("severity")
        inc, opened, last = self.db.add_alert(
            candidate=candidate, host=host, dest=dest, ts=ts, now=now, sensor=self.sensor,
            sid=alert.get("signature_id"), signature=str(alert.get("signature", "")),
            category=str(alert.get("category", "")), severity=sev if isinstance(sev, int) else None,
            flow_id=flow_id, record=rec, eve_key=alert_key(rec), window=self.window, session=self.session)
        self._open[key] = (inc, last)
        return inc, opened

    def _track(self, flow: Flow, inc: str, ev: Event) -> None:
        p = self._pending.get(flow.flow_id)
        if p is None:
            if len(self._pending) >= MAX_PENDING_FLOWS:
                _, oldest = self._pending.popitem(last=False)
                self.stats.incr("incidents.pending_capped")
                self._finalise(oldest)
            p = self._pending[flow.flow_id] = _Pending(flow)
        p.incidents.add(inc)
        f = ev.extra.get("file")
        if f is None:
            return
        fid = getattr(f, "file_id", id(f))
        if fid in p.files:
            return
        if len(p.files) >= MAX_FILES_PER_FLOW:
            self.stats.incr("incidents.files_capped")
            return
        p.files[fid] = f
        if not getattr(f, "is_open", True):
            # closed before its alert (a held hit): its fileinfo event has passed, take what is left
            self._take_file(p, fid)

    def _file_closed(self, p: _Pending, ev: Event) -> None:
        """A file of a flow with an incident closed: its content still exists only now (the
        pipeline drops the buffer right after the fileinfo event), so it goes to evidence now."""
        fid = (ev.body.get("fileinfo") or {}).get("file_id")
        if fid in p.files and p.files[fid] is not None:
            self._take_file(p, fid)

    def _take_file(self, p: _Pending, fid: int) -> None:
        f = p.files[fid]
        p.files[fid] = None
        if self.evidence is None:
            return
        self.evidence.submit(FlowEvidence(
            incident_ids=sorted(p.incidents), flow_id=p.flow.flow_id, packets=[], dropped=0, dropped_bytes=0,
            records=[], files=[KeptFile.of(f)], done=self._evidence_done))

    def _first_report(self, inc: str, rec: dict[str, Any], host: HostInfo, dest: HostInfo, volume: dict[str, int],
                      traffic: tuple[float, float], now: float, recovered: bool = False) -> None:
        lab = self.renderer.labels
        with self._reports_locked():
            known = [r for r in self.db.alerts(inc) if alert_key(r) != alert_key(rec)]
            report = first_report(
                incident={"id": inc, "status": "open"}, alert=rec, host=host, dest=dest, volume=volume,
                evidence=evidence_view(self.db, inc, self.evidence, lab), reporting=self.cfg.reporting,
                sensor=self.sensor, detected_at=now, traffic_ts=traffic, language=self.renderer.language, lab=lab,
                more_alerts=known)
            # Files, then the audit record, then the database: a crash anywhere in between leaves
            # first_report NULL, and the restart renders it again (_recover), so nothing is missing.
            path = ""
            try:
                path = write_report_files(os.path.join(self.reports_dir, inc), report, self.renderer)[0]
            except OSError:
                self.stats.incr("incidents.report_write_error")
            if self.audit is not None:
                data = {"incident_id": inc, "host": host.ip, "dest": dest.ip,
                        "sid": (rec.get("alert") or {}).get("signature_id"), "flow_id": rec.get("flow_id"),
                        "first_report": os.path.basename(path)}
                if recovered:
                    data["recovered"] = True
                self.audit.record("incident_opened", data)
            self.db.set_first_report(inc, report)
        if self.notifier is not None:
            self.notifier.submit(summary(report, path, traffic[1]))

    # ------------------------------------------------------------ flow end -> evidence

    def flow_ended(self, flow: Flow) -> None:
        """A flow with an incident ended: hand its evidence to the store (also via ``flow`` events)."""
        p = self._pending.pop(flow.flow_id, None)
        if p is not None:
            self._finalise(p)

    def _finalise(self, p: _Pending) -> None:
        flow = p.flow
        outbound = flow.outbound_direction()
        for inc in p.incidents:
            self.db.upsert_flow(inc, flow, TO_SERVER if outbound is None else outbound)
        rec = flow.recorder if isinstance(flow.recorder, FlowRecorder) else None
        if rec is None:
            self.stats.incr("incidents.no_recorder")
        if self.evidence is None:
            return
        job = FlowEvidence(
            incident_ids=sorted(p.incidents), flow_id=flow.flow_id,
            packets=rec.packets() if rec else [], dropped=rec.dropped if rec else 0,
            dropped_bytes=rec.dropped_bytes if rec else 0,
            records=[eve_record(e, self.sensor) for e in rec.events] if rec else [],
            # files whose content was not taken at their close (still open, or closed before the alert)
            files=[KeptFile.of(f) for f in p.files.values() if f is not None], done=self._evidence_done)
        if rec is not None:
            rec.taken = True
        self.evidence.submit(job)

    def _evidence_done(self, inc: str, entries: list[dict[str, Any]]) -> None:
        """Evidence worker thread: record the entries; the reports are refreshed on the incident
        thread, once for however many evidence writes arrived meanwhile."""
        if self._closed:
            self.stats.incr("incidents.evidence_after_close")
            return
        self.db.add_evidence(inc, entries)
        with self._dirty_lock:
            schedule = not self._dirty
            self._dirty.add(inc)
        if schedule:
            self._later(self._refresh_dirty)

    def _refresh_dirty(self) -> None:
        with self._dirty_lock:
            incs, self._dirty = sorted(self._dirty), set()
        for inc in incs:
            try:
                self.refresh_reports(inc)
            except Exception:  # noqa: BLE001 - one report failure must not stop the others
                self.stats.incr("incidents.report_write_error")
                log.exception("report refresh failed")

    def refresh_reports(self, inc: str) -> None:
        """Put the stored evidence (ids, SHA-256) into the first-report draft and rewrite the detail report."""
        with self._reports_locked():
            incident = self.db.get(inc)
            # the draft follows the evidence until someone acknowledged it (then it was sent as it was)
            first = incident.get("first_report") if incident and incident["status"] == "open" else None
            if first is not None:
                first["evidence"] = evidence_view(self.db, inc, self.evidence, self.renderer.labels)
                self.db.set_first_report(inc, first)
                write_report_files(os.path.join(self.reports_dir, inc), first, self.renderer)
            self.write_detail(inc)

    def write_detail(self, inc: str) -> list[str]:
        rep = build_detail(self.db, inc, self.evidence, self.renderer, self.clock())
        return write_report_files(os.path.join(self.reports_dir, inc), rep, self.renderer)

    # ------------------------------------------------------------ lifecycle

    def flush(self) -> None:
        """Finish every pending flow (shutdown): evidence of what was recorded so far."""
        while self._pending:
            _, p = self._pending.popitem(last=False)
            self._finalise(p)
        self.wait_idle()

    def close(self) -> None:
        self.flush()
        if self.evidence is not None:
            self.evidence.close()  # all evidence on disk; its callbacks may queue report refreshes
        if self._worker is not None:
            self._jobs.put(None)
            self._worker.join(timeout=60)
            self._worker = None
        self._closed = True
        self.db.close()
        os.close(self._reports_fd)


def build_detail(db: IncidentDB, inc: str, store: EvidenceStore | None, renderer: Renderer,
                 now: float) -> dict[str, Any]:
    incident = db.get(inc)
    if incident is None:
        raise KeyError(inc)
    alerts = db.alerts(inc)
    lab = renderer.labels
    first = incident.get("first_report") or rebuild_first(incident, alerts[0] if alerts else {}, renderer)
    history = [{"ts": h["ts"], "old": lab["status"].get(h["old"], h["old"]), "new": lab["status"].get(h["new"], h["new"]),
                "by": h["by"], "note": h["note"]} for h in db.history(inc)]
    rep = detail_report(first=first, incident=incident, alerts=alerts, evidence=evidence_view(db, inc, store, lab),
                        history=history, generated_at=now, language=renderer.language, lab=lab)
    flows = db.flows(inc)
    if flows:
        out = sum(f["bytes_out"] or 0 for f in flows)
        inn = sum(f["bytes_in"] or 0 for f in flows)
        pk = sum(f["packets"] or 0 for f in flows)
        rep["volume"] = {"bytes_out": out, "bytes_in": inn, "packets": pk,
                         "text": lab["volume"].format(out=out, in_=inn, pkts=pk)}
    return rep


def rebuild_first(incident: dict[str, Any], alert: dict[str, Any], renderer: Renderer) -> dict[str, Any]:
    """A first report from the stored first alert (when the process died before storing it)."""
    from monitor.config import ReportingConfig

    return first_report(
        incident=incident, alert=alert, host=HostInfo(incident["host"]), dest=HostInfo(incident["dest"]),
        volume={"bytes_out": 0, "bytes_in": 0, "packets": 0},
        evidence={"status": "", "text": "", "items": [], "encryption": "AES-256-GCM"},
        reporting=ReportingConfig(), sensor=incident["sensor"], detected_at=incident["opened_at"],
        traffic_ts=(incident["first_ts"], incident["first_ts"]), language=renderer.language, lab=renderer.labels)


def summary(report: dict[str, Any], report_path: str = "", traffic_ts: float | None = None) -> dict[str, Any]:
    """What a notification carries: ids, addresses, names, signatures. No URL, subject, file name."""
    dets = report.get("detections") or []
    sev = [d["severity"] for d in dets if isinstance(d.get("severity"), int)]
    return {
        "language": report.get("language", "ja"),
        "incident_id": report["incident_id"],
        "sensor": report["detection"]["sensor"],
        "detected_at": report["detection"]["time"],
        "traffic_at": report["traffic"]["last_seen"],
        "traffic_ts": traffic_ts if traffic_ts is not None else time.time(),
        "host_ip": report["host"]["ip"],
        "host_names": report["host"]["names"],
        "dest_ip": report["destination"]["ip"],
        "dest_port": report["destination"]["port"],
        "dest_names": report["destination"]["names"],
        "app_proto": report["protocol"]["app_proto"],
        "sids": [d["sid"] for d in dets],
        "signatures": [d["signature"] for d in dets],
        "severity": min(sev) if sev else "",
        "action": report["action"]["text"],
        "evidence": report["evidence"]["text"],
        "report_path": report_path,
    }


def parse_since(text: str, now: float | None = None) -> float:
    """``24h``/``7d`` (ago) or an ISO date/time -> epoch seconds."""
    from monitor.config import parse_duration

    now = time.time() if now is None else now
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    d = _dt.datetime.fromisoformat(text)
    if d.tzinfo is None:
        d = d.astimezone()
    return d.timestamp()


__all__ = ["IncidentDB", "IncidentManager", "alert_key", "build_detail", "local_time", "opens_incident", "parse_since", "summary"]
