"""Tamper-evident audit log (基準 10(11)ア–ウ): hash-chained, HMAC-keyed JSON lines.

Every record is one line ``{"seq", "ts", "type", "data", "prev", "hmac"}``. ``hmac`` is
HMAC-SHA256(key, prev || "\\n" || canonical JSON of the other fields), and ``prev`` is the
``hmac`` of the record before it, so editing, removing or reordering a line breaks the chain at
that line. Two things the chain alone cannot show are covered too:

* truncation of the newest lines: a small keyed ``<log>.head`` file names the last record written;
* removal of whole old files: rotation continues the chain across files (the first record of a
  new file is ``audit_rotated`` and carries the previous file's last hash), and pruning after the
  retention period (>= 3 months, 10(11)イ) is itself recorded (``audit_pruned``).

The key comes from ``audit.key_file`` or ``audit.key_env``; when neither is set a 32-byte key is
generated beside the log (mode 0600) on first start, and that fact is the first record. Record
data never carries protected content (only ids, addresses, counts).
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import getpass
import glob
import hashlib
import hmac
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from monitor.config import AuditConfig
from monitor.events import Event
from monitor.stats import Stats

GENESIS = "0" * 64
HEAD_SUFFIX = ".head"
HEAD_SIZE = 256
KEY_NAME = "audit.key"

# Fields of an alert event that go into the audit record: ids and addresses, never content.
_ALERT_FIELDS = ("signature_id", "rev", "signature", "category", "severity", "action")
_LEAKMON_FIELDS = ("marker_id", "fingerprint_id", "encoding", "variant", "protected_host", "kind")


class AuditKeyError(Exception):
    """The configured HMAC key cannot be read or is too short."""


def actor() -> dict[str, Any]:
    """Who is acting: OS user, host and process id (chain of custody, state changes)."""
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        user = str(os.getuid())
    return {"user": user, "host": socket.gethostname(), "pid": os.getpid()}


def iso_ts(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f%z")


def canonical(obj: Any) -> bytes:
    """The byte form the HMAC is computed over: sorted keys, no spaces, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def record_mac(key: bytes, rec: dict[str, Any]) -> str:
    body = {k: rec[k] for k in ("seq", "ts", "type", "data", "prev") if k in rec}
    return hmac.new(key, rec.get("prev", "").encode() + b"\n" + canonical(body), hashlib.sha256).hexdigest()


def read_key_file(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            raw = fh.read(4096)
    except OSError as exc:
        raise AuditKeyError(f"cannot read audit key file {path}: {exc.strerror}") from None
    text = raw.strip()
    try:
        if len(text) >= 64 and all(c in b"0123456789abcdefABCDEF" for c in text):
            raw = bytes.fromhex(text.decode())
    except ValueError:
        pass
    if len(raw) < 32:
        raise AuditKeyError(f"audit key file {path} holds {len(raw)} bytes; at least 32 are needed")
    return raw


def resolve_key(cfg: AuditConfig, log_path: str, *, create: bool) -> tuple[bytes, str]:
    """(key, where) from key_file, then key_env, then the generated key beside the log.

    ``where`` is ``file:<path>``, ``env:<NAME>`` or ``generated:<path>`` (never the key itself).
    """
    base = os.path.dirname(os.path.abspath(log_path))
    if cfg.key_file:
        path = cfg.key_file if os.path.isabs(cfg.key_file) else os.path.join(base, cfg.key_file)
        return read_key_file(path), f"file:{path}"
    if cfg.key_env and os.environ.get(cfg.key_env):
        value = os.environ[cfg.key_env].strip()
        try:
            key = bytes.fromhex(value)
        except ValueError:
            key = value.encode()
        if len(key) < 32:
            raise AuditKeyError(f"environment variable {cfg.key_env} holds a key shorter than 32 bytes")
        return key, f"env:{cfg.key_env}"
    path = os.path.join(base, KEY_NAME)
    if os.path.exists(path):
        return read_key_file(path), f"file:{path}"
    if not create:
        raise AuditKeyError(f"no audit key: set audit.key_file or {cfg.key_env}, or keep {path}")
    os.makedirs(base, exist_ok=True)
    key = os.urandom(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, key.hex().encode() + b"\n")
    finally:
        os.close(fd)
    return key, f"generated:{path}"


def rotated_files(path: str) -> list[str]:
    """Rotated siblings ``<path>.<first_seq>-<last_seq>``, oldest first."""
    out = []
    for p in glob.glob(glob.escape(path) + ".*-*"):
        suffix = p[len(path) + 1:]
        first, _, last = suffix.partition("-")
        if first.isdigit() and last.isdigit():
            out.append((int(first), p))
    return [p for _, p in sorted(out)]


def _last_line(path: str) -> bytes:
    """The last complete line of a file (b'' when empty)."""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        pos = size
        chunk = b""
        while pos > 0:
            step = min(8192, pos)
            pos -= step
            fh.seek(pos)
            chunk = fh.read(step) + chunk
            body = chunk.rstrip(b"\n")
            if b"\n" in body:
                return body.rsplit(b"\n", 1)[1]
        return chunk.rstrip(b"\n")


class _FileLock:
    """An exclusive flock on a side file (it survives the log's rotation renames); the file stays open."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    def __enter__(self) -> _FileLock:
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self.fd)


class AuditLog:
    """The audit log writer; also an EventBus sink recording every alert.

    Thread- and process-safe: records go through a lock and an flock on ``<log>.lock``, and the
    chain always continues from the last line on disk, so CLI commands (ack, close, export) and
    the running sensor append to one chain.
    Every record is one ``os.write`` of a whole line on an O_APPEND descriptor, so a crash
    (kill -9) leaves whole lines only.
    """

    def __init__(self, cfg: AuditConfig, stats: Stats | None = None, *, base_dir: str = ".",
                 clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.stats = stats or Stats()
        self.clock = clock
        self.path = cfg.path if os.path.isabs(cfg.path) else os.path.normpath(os.path.join(base_dir, cfg.path))
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        self._lock = threading.Lock()
        self.key, key_where = resolve_key(cfg, self.path, create=True)
        self.seq = 0
        self.last_mac = GENESIS
        self.file_first_seq = 1
        self._fd = -1
        self._expected_size = -1
        self._head_fd = -1
        self._flock = _FileLock(self.path + ".lock")
        with self._flock:
            recovered = self._recover()
            self._open()
        if key_where.startswith("generated:"):
            self.record("audit_key_generated", {"path": key_where.split(":", 1)[1], "mode": "0600"})
        if recovered:
            self.record("audit_recovered", recovered)

    # ------------------------------------------------------------ startup

    def _recover(self) -> dict[str, Any] | None:
        """Continue the chain from the last record on disk (current file, else newest rotated)."""
        candidates = ([self.path] if os.path.exists(self.path) and os.path.getsize(self.path) else [])
        candidates += list(reversed(rotated_files(self.path)))
        recovered = None
        if candidates and candidates[0] == self.path:
            recovered = self._drop_torn_tail(self.path)
        for p in candidates:
            line = _last_line(p)
            if not line:
                continue
            rec = json.loads(line)
            self.seq = int(rec["seq"])
            self.last_mac = str(rec["hmac"])
            break
        if os.path.exists(self.path) and os.path.getsize(self.path):
            with open(self.path, "rb") as fh:
                first = fh.readline()
            try:
                self.file_first_seq = int(json.loads(first)["seq"])
            except (ValueError, KeyError):
                self.file_first_seq = self.seq + 1
        else:
            self.file_first_seq = self.seq + 1
        return recovered

    def _drop_torn_tail(self, path: str) -> dict[str, Any] | None:
        """A line without its newline can only come from a write cut short (power loss).

        It is moved aside (not silently deleted) and the chain continues from the last whole
        line; the ``audit_recovered`` record names the bytes dropped and their hash.
        """
        with open(path, "rb+") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 65536))
            tail = fh.read()
            if tail.endswith(b"\n"):
                return None
            cut = tail.rfind(b"\n")
            keep = size - len(tail) + cut + 1 if cut >= 0 else 0
            fh.seek(keep)
            torn = fh.read()
            with open(path + ".torn", "ab") as aside:
                aside.write(torn + b"\n")
            fh.truncate(keep)
        self.stats.incr("audit.torn_tail")
        return {"torn_bytes": len(torn), "sha256": hashlib.sha256(torn).hexdigest(), "moved_to": path + ".torn"}

    def _open(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._expected_size = os.fstat(self._fd).st_size

    # ------------------------------------------------------------ writing

    def record(self, rtype: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
        """Append one record; returns it. Never raises on I/O errors (counted instead)."""
        with self._lock:
            try:
                with self._flock:
                    self._sync_with_disk()
                    if os.fstat(self._fd).st_size >= self.cfg.rotate_size:
                        self._rotate()
                    return self._append_locked(rtype, data or {})
            except OSError:
                self.stats.incr("audit.write_error")
                return {}

    def _sync_with_disk(self) -> None:
        """Another process (a CLI command) may have appended or rotated since our last write:
        continue the chain from what is on disk, never from memory."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        if st is None or st.st_ino != os.fstat(self._fd).st_ino:
            os.close(self._fd)
            self._open()
            st = os.fstat(self._fd)
            self._expected_size = -1
        if st.st_size != self._expected_size:
            line = _last_line(self.path) if st.st_size else b""
            if not line:
                for p in reversed(rotated_files(self.path)):
                    line = _last_line(p)
                    if line:
                        break
            if line:
                rec = json.loads(line)
                self.seq, self.last_mac = int(rec["seq"]), str(rec["hmac"])
            if not st.st_size:
                self.file_first_seq = self.seq + 1

    def _append_locked(self, rtype: str, data: dict[str, Any]) -> dict[str, Any]:
        rec: dict[str, Any] = {"seq": self.seq + 1, "ts": iso_ts(self.clock()), "type": rtype, "data": data,
                               "prev": self.last_mac}
        rec["hmac"] = record_mac(self.key, rec)
        os.write(self._fd, canonical(rec) + b"\n")
        self._expected_size = os.fstat(self._fd).st_size
        self.seq = rec["seq"]
        self.last_mac = rec["hmac"]
        self._write_head()
        self.stats.incr("audit.records", type=rtype if rtype in _COUNTED_TYPES else "other")
        return rec

    def _write_head(self) -> None:
        """Overwrite the fixed-size head record in place (one pwrite; no rename: a rename over an
        existing file makes ext4 flush data, milliseconds per record)."""
        head = {"seq": self.seq, "hmac": self.last_mac}
        head["head_mac"] = hmac.new(self.key, b"head\n" + canonical(head), hashlib.sha256).hexdigest()
        data = canonical(head).ljust(HEAD_SIZE - 1) + b"\n"
        if self._head_fd < 0:
            self._head_fd = os.open(self.path + HEAD_SUFFIX, os.O_RDWR | os.O_CREAT, 0o600)
        os.pwrite(self._head_fd, data, 0)

    def _rotate(self) -> None:
        prev_seq, prev_mac = self.seq, self.last_mac
        os.close(self._fd)
        with open(self.path, "rb") as fh:
            try:
                self.file_first_seq = int(json.loads(fh.readline())["seq"])
            except (ValueError, KeyError):
                pass
        rotated = f"{self.path}.{self.file_first_seq:012d}-{prev_seq:012d}"
        os.replace(self.path, rotated)
        self._open()
        self.file_first_seq = self.seq + 1
        self._append_locked("audit_rotated", {"previous_file": os.path.basename(rotated), "previous_last_seq": prev_seq,
                                       "previous_last_hash": prev_mac})
        self.stats.incr("audit.rotations")
        self._prune()

    def _prune(self) -> None:
        """Delete rotated files whose newest record is older than the retention period."""
        now = self.clock()
        for p in rotated_files(self.path):
            try:
                last = json.loads(_last_line(p))
                newest = _dt.datetime.strptime(last["ts"], "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
            except (OSError, ValueError, KeyError):
                continue
            if now - newest < self.cfg.retention:
                break  # files are in order: every later one is newer
            first_seq = int(os.path.basename(p).rsplit(".", 1)[1].split("-")[0])
            os.remove(p)
            self._append_locked("audit_pruned", {"file": os.path.basename(p), "first_seq": first_seq,
                                          "last_seq": int(last["seq"]), "last_hash": last["hmac"],
                                          "retention_days": round(self.cfg.retention / 86400, 1)})

    # ------------------------------------------------------------ sink

    def __call__(self, ev: Event) -> None:
        """EventBus sink: every alert becomes an ``alert`` record (ids and addresses only)."""
        if ev.event_type != "alert":
            return
        alert = ev.body.get("alert") or {}
        lm = ev.body.get("leakmon") or {}
        data: dict[str, Any] = {k: alert[k] for k in _ALERT_FIELDS if k in alert}
        data.update({k: lm[k] for k in _LEAKMON_FIELDS if k in lm and isinstance(lm[k], (str, int, float))})
        data["event_ts"] = iso_ts(ev.ts)
        if ev.flow is not None:
            f = ev.flow
            c, s = f.addresses()
            data.update({"flow_id": f.flow_id, "community_id": f.community_id, "client": c, "cport": f.cport,
                         "server": s, "sport": f.sport, "app_proto": f.app_proto or ""})
        if ev.pcap_cnt is not None:
            data["pcap_cnt"] = ev.pcap_cnt
        inc = ev.extra.get("incident_id")
        if inc:
            data["incident_id"] = inc
        self.record("alert", data)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            if self._head_fd >= 0:
                os.close(self._head_fd)
                self._head_fd = -1
            self._flock.close()


_COUNTED_TYPES = frozenset({
    "alert", "incident_opened", "incident_state", "evidence_stored", "evidence_exported", "evidence_verified",
    "config_loaded", "signatures_loaded", "sensor_start", "sensor_stop", "coverage_gap", "audit_rotated",
    "audit_pruned", "audit_key_generated", "audit_recovered", "evidence_disabled",
})


# ---------------------------------------------------------------- verification


@dataclass
class Problem:
    """One defect that audit verification found, with where it is."""

    file: str
    line: int
    seq: int | None
    message: str

    def __str__(self) -> str:
        where = f"{os.path.basename(self.file)}:{self.line}" if self.line else os.path.basename(self.file)
        return f"{where}: {self.message}"


@dataclass
class VerifyReport:
    """What ``verify`` read and the problems it found."""

    records: int = 0
    files: list[str] = field(default_factory=list)
    first_seq: int = 0
    last_seq: int = 0
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(path: str, key: bytes) -> VerifyReport:
    """Check every file of the log (rotated ones first) and the head; report where it breaks."""
    rep = VerifyReport()
    files = rotated_files(path) + ([path] if os.path.exists(path) else [])
    rep.files = files
    if not files:
        rep.problems.append(Problem(path, 0, None, "audit log not found"))
        return rep
    prev_mac: str | None = None
    prev_seq: int | None = None
    pruned: list[tuple[int, int, str]] = []
    anchor: dict[str, Any] | None = None
    last_mac: str | None = None
    for fi, p in enumerate(files):
        with open(p, "rb") as fh:
            data = fh.read()
        if data and not data.endswith(b"\n"):
            n = data.count(b"\n") + 1
            rep.problems.append(Problem(p, n, None, "last line is cut short (truncated write or edit)"))
        for ln, raw in enumerate(data.split(b"\n"), 1):
            if not raw:
                continue
            try:
                rec = json.loads(raw)
                seq = int(rec["seq"])
                mac = str(rec["hmac"])
                prev = str(rec["prev"])
            except (ValueError, KeyError, TypeError):
                rep.problems.append(Problem(p, ln, None, "not a valid audit record (edited or truncated line)"))
                prev_mac, prev_seq = None, None
                continue
            rep.records += 1
            if not hmac.compare_digest(record_mac(key, rec), mac):
                rep.problems.append(Problem(p, ln, seq, "HMAC mismatch: the line was edited (or a wrong key)"))
            if prev_seq is None and prev_mac is None and rep.records == 1:
                # Start of the oldest file kept: genesis, or continuing a pruned/rotated file.
                rep.first_seq = seq
                if not (seq == 1 and prev == GENESIS):
                    anchor = {"file": p, "line": ln, "seq": seq, "prev": prev, "type": rec.get("type")}
            elif prev_seq is not None:
                if seq != prev_seq + 1:
                    if seq <= prev_seq:
                        msg = f"sequence goes back from {prev_seq} to {seq}: lines reordered or duplicated"
                    else:
                        msg = f"records {prev_seq + 1}..{seq - 1} are missing: lines removed"
                    rep.problems.append(Problem(p, ln, seq, msg))
                elif prev != prev_mac:
                    rep.problems.append(Problem(p, ln, seq, "chain broken: prev does not match the record before"))
            if ln == 1 and fi > 0 and rec.get("type") != "audit_rotated":
                rep.problems.append(Problem(p, ln, seq, "file does not start with an audit_rotated record"))
            if rec.get("type") == "audit_pruned":
                d = rec.get("data") or {}
                pruned.append((int(d.get("first_seq", 0)), int(d.get("last_seq", 0)), str(d.get("last_hash", ""))))
            prev_mac, prev_seq = mac, seq
            rep.last_seq, last_mac = seq, mac
    if anchor is not None:
        covered = any(last == anchor["seq"] - 1 and h == anchor["prev"] for _, last, h in pruned)
        if covered:
            rep.notes.append(f"chain starts at seq {anchor['seq']}: older files were pruned after the retention period")
        else:
            rep.problems.append(Problem(anchor["file"], anchor["line"], anchor["seq"],
                                        f"chain starts at seq {anchor['seq']} without a record of pruning: "
                                        "earlier lines or files were removed"))
    _check_head(path, key, rep, rep.last_seq if rep.records else None, last_mac)
    return rep


def _check_head(path: str, key: bytes, rep: VerifyReport, last_seq: int | None, last_mac: str | None) -> None:
    head_path = path + HEAD_SUFFIX
    try:
        with open(head_path, "rb") as fh:
            head = json.loads(fh.read().strip())
    except FileNotFoundError:
        rep.notes.append("no head file: removal of the newest lines cannot be detected")
        return
    except (OSError, ValueError):
        rep.problems.append(Problem(head_path, 0, None, "head file unreadable"))
        return
    body = {"seq": head.get("seq"), "hmac": head.get("hmac")}
    want = hmac.new(key, b"head\n" + canonical(body), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want, str(head.get("head_mac", ""))):
        rep.problems.append(Problem(head_path, 0, None, "head file HMAC mismatch (edited)"))
        return
    hseq = int(head["seq"])
    if last_seq is None or hseq > last_seq:
        rep.problems.append(Problem(path, 0, last_seq,
                                    f"log ends at seq {last_seq} but seq {hseq} was written: "
                                    "the newest lines were removed (truncated)"))
    elif hseq == last_seq and head.get("hmac") != last_mac:
        rep.problems.append(Problem(path, 0, last_seq, "last record differs from the one written (replaced)"))
