"""Evidence that stands up (基準 12(3)イ 証拠の収集, 13(2) 記録の保護, 10(7) 電子政府推奨暗号).

* :class:`FlowRecorder` sits on every flow and keeps its packets **from the start** (a bounded
  head: the SYN and everything before the detection), then a rolling tail window; what falls in
  between is counted, not kept. ``add`` is O(1): one tuple append.
* :class:`EvidenceStore` writes, per incident, the flow pcaps, the related EVE records and the
  extracted matching files, each encrypted at rest with AES-256-GCM (CRYPTREC-listed), plus a
  SHA-256 manifest (of plaintext and ciphertext) and a chain-of-custody record. Disk work runs
  on a background thread so the packet path never waits for encryption or fsync.

Sealed file format: ``LMEV1\\0`` + 12-byte random nonce + ciphertext||tag; the associated data is
``<incident id>/<file name>``, so a file cannot be swapped between names or incidents unnoticed.
A missing key does not stop the sensor (常時監視 10(11)オ comes first): evidence is disabled with a
loud warning, a gauge, a counter per incident not stored and an audit record. A malformed key
(wrong length, not hex) is a configuration error at startup.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import queue
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from alerts.audit import actor, canonical, iso_ts
from alerts.eve import eve_record
from monitor.config import Config, EvidenceConfig
from monitor.errors import ConfigError
from monitor.events import Event
from monitor.model import Flow, RawPacket
from monitor.stats import Stats

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger("leakmon.evidence")

MAGIC = b"LMEV1\x00"
NONCE_LEN = 12
SEALED_SUFFIX = ".enc"
MANIFEST = "manifest.json"
CUSTODY = "custody.jsonl"
STORE_FORMAT = "leakmon-evidence/1"
BUNDLE_FORMAT = "leakmon-evidence-bundle/1"
MAX_EVENTS_PER_FLOW = 256
MAX_FILES_PER_INCIDENT = 256
# Evidence waiting for the writer thread; beyond this the packet thread writes it itself.
MAX_QUEUED_BYTES = 256 << 20
MAX_BATCH_JOBS = 256
PCAP_SNAPLEN = 262144


class EvidenceKeyError(ConfigError):
    pass


# ---------------------------------------------------------------- keys and sealing


def parse_key(raw: bytes, where: str) -> bytes:
    """32 raw bytes, or 64 hex characters (whitespace around is ignored)."""
    text = raw.strip()
    if len(text) == 64:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass
    if len(raw) == 32:
        return raw
    raise EvidenceKeyError(where, "", "AES-256 key must be 32 raw bytes or 64 hex characters")


def read_key_file(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return parse_key(fh.read(1024), path)
    except OSError as exc:
        raise EvidenceKeyError(path, "", f"cannot read key file: {exc.strerror}") from None


def load_key(cfg: EvidenceConfig, base_dir: str = ".") -> bytes | None:
    """The evidence key from key_file, else the environment; None when neither is set."""
    if cfg.key_file:
        path = cfg.key_file if os.path.isabs(cfg.key_file) else os.path.join(base_dir, cfg.key_file)
        return read_key_file(path)
    value = os.environ.get(cfg.key_env or "", "")
    if value:
        return parse_key(value.encode(), f"${cfg.key_env}")
    return None


def key_id(key: bytes) -> str:
    """A public fingerprint that names a key without revealing it."""
    return hashlib.sha256(b"leakmon-evidence-key-id\n" + key).hexdigest()[:16]


def _aad(incident_id: str, name: str) -> bytes:
    return f"{incident_id}/{name}".encode()


def _cipher_class() -> type[AESGCM]:
    """cryptography (~50 ms of imports) is loaded on first use: by an EvidenceStore that keeps
    evidence, and by the export and verify tools; never by a sensor without evidence."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM


def _aesgcm(key: bytes) -> AESGCM:
    return _cipher_class()(key)


def seal(key: bytes, incident_id: str, name: str, plaintext: bytes) -> bytes:
    nonce = os.urandom(NONCE_LEN)
    return MAGIC + nonce + _aesgcm(key).encrypt(nonce, plaintext, _aad(incident_id, name))


def unseal(key: bytes, incident_id: str, name: str, blob: bytes) -> bytes:
    """Decrypt and authenticate; raises ValueError on a wrong key, name, incident or any edit."""
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + NONCE_LEN + 16:
        raise ValueError("not a sealed evidence file")
    nonce = blob[len(MAGIC):len(MAGIC) + NONCE_LEN]
    try:
        return _aesgcm(key).decrypt(nonce, blob[len(MAGIC) + NONCE_LEN:], _aad(incident_id, name))
    except Exception:  # noqa: BLE001 - cryptography raises InvalidTag
        raise ValueError("authentication failed (wrong key, renamed or modified file)") from None


def is_sealed(head: bytes) -> bool:
    return head.startswith(MAGIC)


# ---------------------------------------------------------------- pcap


def pcap_bytes(packets: Iterable[tuple[float, int, bytes]], linktype: int) -> bytes:
    """A classic pcap (microsecond timestamps, little-endian) of the given packets."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, PCAP_SNAPLEN, linktype)]
    for ts, _lt, data in packets:
        sec = int(ts)
        usec = int(round((ts - sec) * 1_000_000))
        if usec >= 1_000_000:
            sec, usec = sec + 1, usec - 1_000_000
        data = data[:PCAP_SNAPLEN]
        out.append(struct.pack("<IIII", sec, usec, len(data), len(data)))
        out.append(bytes(data))
    return b"".join(out)


# ---------------------------------------------------------------- per-flow recorder


class FlowRecorder:
    """Packets of one flow from its first packet: a bounded head, then a rolling tail.

    The head keeps the first ``ring_packets`` packets / ``ring_bytes`` bytes (SYN, handshake and
    the data before any detection). After that a tail window keeps the newest packets (the end
    of the transfer, FIN/RST) within a quarter of those budgets: two half-windows that swap when
    the current one fills, so ``add`` never shifts a queue. Packets that fall out are counted in
    ``dropped``. Memory per flow is bounded by about 1.25 x ``ring_bytes``.
    """

    __slots__ = ("max_bytes", "head", "head_bytes", "head_room", "half_pkts", "half_bytes",
                 "cur", "cur_bytes", "prev", "prev_bytes", "dropped", "dropped_bytes", "events",
                 "events_dropped", "taken")

    def __init__(self, cfg: EvidenceConfig) -> None:
        self.max_bytes = cfg.ring_bytes
        # The RawPacket objects themselves are kept (no per-packet tuple): ts, linktype, data.
        self.head: list[RawPacket] = []
        self.head_bytes = 0
        self.head_room = cfg.ring_packets  # packets the head may still take; 0 once full
        self.half_pkts = max(1, cfg.ring_packets // 8)
        self.half_bytes = max(1, cfg.ring_bytes // 8)
        self.cur: list[RawPacket] = []
        self.cur_bytes = 0
        self.prev: list[RawPacket] = []
        self.prev_bytes = 0
        self.dropped = 0
        self.dropped_bytes = 0
        self.events: list[Event] = []
        self.events_dropped = 0
        self.taken = False

    def add(self, raw: RawPacket) -> None:
        n = len(raw.data)
        if self.head_room:
            hb = self.head_bytes + n
            if hb <= self.max_bytes:
                self.head.append(raw)
                self.head_bytes = hb
                self.head_room -= 1
                return
            self.head_room = 0
        cur = self.cur
        cur.append(raw)
        cb = self.cur_bytes + n
        if len(cur) >= self.half_pkts or cb >= self.half_bytes:
            self.dropped += len(self.prev)
            self.dropped_bytes += self.prev_bytes
            self.prev, self.prev_bytes = cur, cb
            self.cur = []
            cb = 0
        self.cur_bytes = cb

    @property
    def tail(self) -> list[RawPacket]:
        return self.prev + self.cur

    @property
    def tail_bytes(self) -> int:
        return self.prev_bytes + self.cur_bytes

    def note(self, ev: Event) -> None:
        """Keep a flow's EVE event (without in-process references) for the evidence bundle."""
        if len(self.events) >= MAX_EVENTS_PER_FLOW:
            self.events_dropped += 1
            return
        self.events.append(Event(ev.event_type, ev.ts, ev.body, ev.flow, ev.direction, ev.pcap_cnt, ev.tx_id,
                                 ev.iface))

    @property
    def bytes_held(self) -> int:
        """Memory estimate for the flow table's memcap."""
        return self.head_bytes + self.tail_bytes + 8 * (len(self.head) + len(self.prev) + len(self.cur))

    def packets(self) -> list[tuple[float, int, bytes]]:
        """(ts, linktype, data) of every packet kept, in capture order."""
        return [(p.ts, p.linktype, p.data) for p in self.head + self.prev + self.cur]


# ---------------------------------------------------------------- store


@dataclasses.dataclass(frozen=True)
class KeptFile:
    """A matching file's content taken when it closed (the pipeline frees the buffer right after)."""

    file_id: int
    state: str
    size: int
    sha256: str | None
    data: bytes | None

    @classmethod
    def of(cls, f: Any) -> KeptFile:
        if isinstance(f, KeptFile):
            return f
        return cls(file_id=f.file_id, state=f.state, size=f.size, sha256=f.sha256, data=f.content())

    def content(self) -> bytes | None:
        return self.data


@dataclasses.dataclass
class FlowEvidence:
    """What the incident manager hands over when a flow with an incident ends."""

    incident_ids: list[str]
    flow_id: int
    packets: list[tuple[float, int, bytes]]
    dropped: int
    dropped_bytes: int
    records: list[dict[str, Any]]
    files: list[Any]  # KeptFile (or anything with file_id, state, size, sha256, content())
    done: Callable[[str, list[dict[str, Any]]], None] | None = None

    @property
    def nbytes(self) -> int:
        return sum(len(p[2]) for p in self.packets) + sum(len(f.content() or b"") for f in self.files)


def _atomic_write(path: str, data: bytes, *, fsync: bool = True) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def append_custody(directory: str, action: str, detail: dict[str, Any], by: dict[str, Any] | None = None) -> None:
    """One chain-of-custody line; each carries the SHA-256 of the line before (tamper-evident)."""
    path = os.path.join(directory, CUSTODY)
    prev = "0" * 64
    try:
        with open(path, "rb") as fh:
            lines = fh.read().splitlines()
        if lines:
            prev = hashlib.sha256(lines[-1]).hexdigest()
    except FileNotFoundError:
        pass
    rec = {"ts": iso_ts(time.time()), "action": action, "by": by or actor(), "detail": detail, "prev": prev}
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, canonical(rec) + b"\n")
    finally:
        os.close(fd)


def check_custody(directory: str) -> list[str]:
    """Problems in a custody file's hash chain (empty when intact)."""
    path = os.path.join(directory, CUSTODY)
    try:
        with open(path, "rb") as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        return [f"{CUSTODY} missing"]
    problems = []
    prev = "0" * 64
    for i, line in enumerate(lines, 1):
        try:
            rec = json.loads(line)
        except ValueError:
            problems.append(f"{CUSTODY}:{i}: not JSON")
            prev = hashlib.sha256(line).hexdigest()
            continue
        if rec.get("prev") != prev:
            problems.append(f"{CUSTODY}:{i}: chain broken (a line before it was edited or removed)")
        prev = hashlib.sha256(line).hexdigest()
    return problems


class EvidenceStore:
    """Per-incident encrypted evidence directories under ``evidence.dir``."""

    def __init__(self, cfg: Config, stats: Stats | None = None, audit: Any = None, *,
                 key: bytes | None = None, background: bool = True,
                 queue_bytes: int = MAX_QUEUED_BYTES) -> None:
        self.cfg = cfg
        self.ecfg = cfg.evidence
        self.stats = stats or Stats()
        self.audit = audit
        self.dir = cfg.resolve(self.ecfg.dir)
        self.key = key if key is not None else (load_key(self.ecfg, cfg.base_dir) if self.ecfg.enabled else None)
        self.disabled_reason = ""
        if not self.ecfg.enabled:
            self.disabled_reason = "disabled in the configuration (evidence.enabled: false)"
        elif self.key is None:
            self.disabled_reason = (f"no evidence key: set evidence.key_file or ${self.ecfg.key_env}; "
                                    "packets and files of incidents are NOT being kept")
            log.warning("EVIDENCE DISABLED: %s", self.disabled_reason)
            self.stats.incr("evidence.disabled", reason="no_key")
            if audit is not None:
                audit.record("evidence_disabled", {"reason": "no_key", "key_env": self.ecfg.key_env})
        self.stats.set("evidence.enabled", 1 if self.enabled else 0)
        # Bounded by the bytes waiting, not the number of jobs: a burst of small flows at shutdown
        # must not push the writing onto the packet thread.
        self._q: queue.Queue[tuple[FlowEvidence, int] | None] = queue.Queue()
        self.queue_bytes = queue_bytes
        self._queued_bytes = 0
        self._qlock = threading.Lock()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        if self.enabled:
            _cipher_class()  # loaded now (a broken install fails at start-up), not on the writer thread
        if background and self.enabled:
            self._thread = threading.Thread(target=self._run, name="leakmon-evidence", daemon=True)
            self._thread.start()

    @property
    def enabled(self) -> bool:
        return self.key is not None and self.ecfg.enabled

    def incident_dir(self, incident_id: str) -> str:
        if not incident_id or "/" in incident_id or incident_id.startswith("."):
            raise ValueError(f"bad incident id {incident_id!r}")
        return os.path.join(self.dir, incident_id)

    # ------------------------------------------------------------ submission (packet path)

    def submit(self, job: FlowEvidence) -> bool:
        """Queue a flow's evidence; when the queue is full, write it here (nothing is lost)."""
        if not self.enabled:
            self.stats.incr("evidence.not_stored", reason="disabled")
            return False
        if self._thread is None:
            self._write_job(job)
            return True
        n = job.nbytes
        with self._qlock:
            room = self._queued_bytes + n <= self.queue_bytes or self._queued_bytes == 0
            if room:
                self._queued_bytes += n
        if room:
            self._q.put_nowait((job, n))
        else:
            # The worker is this far behind: back-pressure rather than unbounded memory (counted).
            self.stats.incr("evidence.queue_full")
            self._write_job(job)
        return True

    def _run(self) -> None:
        while True:
            batch = [self._q.get()]
            # Whatever queued up meanwhile is written together: one manifest write per incident.
            while batch[-1] is not None and len(batch) < MAX_BATCH_JOBS:
                try:
                    batch.append(self._q.get_nowait())
                except queue.Empty:
                    break
            items = [b for b in batch if b is not None]
            try:
                self._write_jobs([job for job, _ in items])
            except Exception:  # noqa: BLE001 - the worker must survive any one bad batch
                self.stats.incr("evidence.write_error")
                log.exception("evidence write failed")
            finally:
                with self._qlock:
                    self._queued_bytes -= sum(n for _, n in items)
                for _ in batch:
                    self._q.task_done()
            if batch[-1] is None:
                return

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until queued evidence is on disk."""
        if self._thread is None:
            return
        deadline = time.monotonic() + timeout
        while self._q.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)

    def idle(self) -> bool:
        return self._thread is None or not self._q.unfinished_tasks

    def close(self, timeout: float = 600.0) -> None:
        """Write everything queued (a slow disk delays shutdown rather than losing evidence)."""
        if self._thread is not None:
            if self._q.unfinished_tasks:
                log.info("writing %d queued evidence job(s) before stopping", self._q.unfinished_tasks)
            self.flush(timeout)
            self._q.put(None)
            self._thread.join(timeout=10)
            self._thread = None

    # ------------------------------------------------------------ writing (worker thread)

    def _write_job(self, job: FlowEvidence) -> None:
        self._write_jobs([job])

    def _write_jobs(self, jobs: list[FlowEvidence]) -> None:
        """Write a batch of jobs: per incident, every file of the batch, then its manifest once."""
        by_inc: dict[str, list[FlowEvidence]] = {}
        for job in jobs:
            for inc in job.incident_ids:
                by_inc.setdefault(inc, []).append(job)
        for inc, inc_jobs in by_inc.items():
            try:
                results = self._write_incident(inc, inc_jobs)
            except OSError:
                self.stats.incr("evidence.write_error")
                log.exception("evidence write failed for an incident")
                continue
            for job, entries in results:
                if job.done is None:
                    continue
                try:
                    job.done(inc, entries)
                except Exception:  # noqa: BLE001 - the files are on disk; a failed callback is reported
                    self.stats.incr("evidence.callback_error")
                    log.exception("evidence callback failed")

    @contextlib.contextmanager
    def _across_processes(self) -> Iterator[None]:
        """Held while an incident's directory is written: the workers of one sensor (``--workers``)
        store evidence of the same incident, and its manifest and custody file are read-modify-write."""
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(self.dir, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _write_incident(self, incident_id: str,
                        jobs: list[FlowEvidence]) -> list[tuple[FlowEvidence, list[dict[str, Any]]]]:
        assert self.key is not None
        d = self.incident_dir(incident_id)
        results: list[tuple[FlowEvidence, list[dict[str, Any]]]] = []
        with self._lock, self._across_processes():
            created = not os.path.isdir(d)
            os.makedirs(d, mode=0o700, exist_ok=True)
            if created:
                append_custody(d, "created", {"incident_id": incident_id, "sensor": self.cfg.sensor.name,
                                              "encryption": "AES-256-GCM", "key_id": key_id(self.key)})
            manifest = self._load_manifest(incident_id)
            have = {e["name"] for e in manifest["files"] if e.get("stored")}
            written: list[dict[str, Any]] = []
            for job in jobs:
                entries = self._job_entries(d, incident_id, job, have)
                results.append((job, entries))
                written += entries
            names = {e["name"] for e in written}
            manifest["files"] = [e for e in manifest["files"] if e["name"] not in names] + written
            manifest["updated"] = iso_ts(time.time())
            raw = json.dumps(manifest, ensure_ascii=False, indent=1, sort_keys=True).encode()
            _atomic_write(os.path.join(d, MANIFEST), raw)
        msha = hashlib.sha256(raw).hexdigest()
        for job, entries in results:
            if job.packets:
                self.stats.incr("evidence.flows_stored")
            if self.audit is not None:
                self.audit.record("evidence_stored", {"incident_id": incident_id, "flow_id": job.flow_id,
                                                      "files": [e["name"] for e in entries],
                                                      "manifest_sha256": msha})
        return results

    def _job_entries(self, d: str, incident_id: str, job: FlowEvidence, have: set[str]) -> list[dict[str, Any]]:
        """Seal and write one job's pcap(s), EVE records and files; their manifest entries."""
        entries: list[dict[str, Any]] = []
        by_lt: dict[int, list[tuple[float, int, bytes]]] = {}
        for p in job.packets:
            by_lt.setdefault(p[1], []).append(p)
        for lt, pkts in by_lt.items():
            name = f"flow-{job.flow_id}.pcap" if len(by_lt) == 1 else f"flow-{job.flow_id}-lt{lt}.pcap"
            entries.append(self._put(d, incident_id, name, pcap_bytes(pkts, lt), kind="pcap",
                                     flow_id=job.flow_id, linktype=lt, packets=len(pkts),
                                     packets_dropped=job.dropped, bytes_dropped=job.dropped_bytes))
        if job.records:
            body = b"".join(canonical(r) + b"\n" for r in job.records)
            entries.append(self._put(d, incident_id, f"flow-{job.flow_id}.eve.jsonl", body, kind="eve",
                                     flow_id=job.flow_id, records=len(job.records)))
        for f in job.files:
            name = f"file-{f.file_id}.bin"
            if name in have:
                continue
            if len(have) >= MAX_FILES_PER_INCIDENT:
                self.stats.incr("evidence.files_capped")
                break
            content = f.content()
            if content is None:
                self.stats.incr("evidence.file_not_kept")
                entries.append({"name": name, "kind": "file", "flow_id": job.flow_id, "stored": False,
                                "reason": f"content not kept (state {f.state}, size {f.size})",
                                "sha256": f.sha256})
                continue
            entries.append(self._put(d, incident_id, name, content, kind="file", flow_id=job.flow_id,
                                     file_id=f.file_id))
            have.add(name)
        return entries

    def _put(self, d: str, incident_id: str, name: str, plaintext: bytes, **meta: Any) -> dict[str, Any]:
        assert self.key is not None
        blob = seal(self.key, incident_id, name, plaintext)
        _atomic_write(os.path.join(d, name + SEALED_SUFFIX), blob)
        self.stats.incr("evidence.files_written", kind=meta.get("kind", "other"))
        self.stats.incr("evidence.bytes_written", len(blob))
        return {"name": name, "stored": True, "size": len(plaintext), "sha256": hashlib.sha256(plaintext).hexdigest(),
                "cipher_file": name + SEALED_SUFFIX, "cipher_size": len(blob),
                "cipher_sha256": hashlib.sha256(blob).hexdigest(), "created": iso_ts(time.time()), **meta}

    def _load_manifest(self, incident_id: str) -> dict[str, Any]:
        p = os.path.join(self.incident_dir(incident_id), MANIFEST)
        try:
            with open(p, "rb") as fh:
                m: dict[str, Any] = json.loads(fh.read())
                return m
        except FileNotFoundError:
            assert self.key is not None
            return {"format": STORE_FORMAT, "incident_id": incident_id, "encryption": "AES-256-GCM",
                    "key_id": key_id(self.key), "sensor": self.cfg.sensor.name, "files": []}

    def manifest(self, incident_id: str) -> dict[str, Any] | None:
        p = os.path.join(self.incident_dir(incident_id), MANIFEST)
        try:
            with open(p, "rb") as fh:
                m: dict[str, Any] = json.loads(fh.read())
                return m
        except (FileNotFoundError, ValueError):
            return None

    # ------------------------------------------------------------ export / verify

    def export(self, incident_id: str, out: str, *, reencrypt_key: bytes | None = None,
               by: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write a decrypted (or re-encrypted) bundle with its manifest and custody record."""
        if self.key is None:
            raise EvidenceKeyError(self.cfg.source or "config", "evidence", "no evidence key to decrypt with")
        src = self.incident_dir(incident_id)
        manifest = self.manifest(incident_id)
        if manifest is None:
            raise FileNotFoundError(f"no evidence for incident {incident_id}")
        os.makedirs(out, mode=0o700, exist_ok=True)
        if os.listdir(out):
            raise FileExistsError(f"{out} is not empty")
        with open(os.path.join(src, MANIFEST), "rb") as fh:
            source_sha = hashlib.sha256(fh.read()).hexdigest()
        files = []
        for e in manifest["files"]:
            if not e.get("stored"):
                files.append(e)
                continue
            with open(os.path.join(src, e["cipher_file"]), "rb") as fh:
                blob = fh.read()
            if hashlib.sha256(blob).hexdigest() != e["cipher_sha256"]:
                raise ValueError(f"{e['cipher_file']}: ciphertext hash differs from the manifest")
            plain = unseal(self.key, incident_id, e["name"], blob)
            if hashlib.sha256(plain).hexdigest() != e["sha256"]:
                raise ValueError(f"{e['name']}: plaintext hash differs from the manifest")
            entry = {k: v for k, v in e.items() if k not in ("cipher_file", "cipher_size", "cipher_sha256")}
            if reencrypt_key is None:
                _atomic_write(os.path.join(out, e["name"]), plain)
                entry["file"] = e["name"]
            else:
                nb = seal(reencrypt_key, incident_id, e["name"], plain)
                _atomic_write(os.path.join(out, e["name"] + SEALED_SUFFIX), nb)
                entry.update(file=e["name"] + SEALED_SUFFIX, cipher_size=len(nb),
                             cipher_sha256=hashlib.sha256(nb).hexdigest())
            files.append(entry)
        who = by or actor()
        bundle = {"format": BUNDLE_FORMAT, "incident_id": incident_id, "sensor": manifest.get("sensor", ""),
                  "encryption": "AES-256-GCM" if reencrypt_key is not None else "none",
                  "exported_at": iso_ts(time.time()), "exported_by": who, "source_manifest_sha256": source_sha,
                  "files": files}
        if reencrypt_key is not None:
            bundle["key_id"] = key_id(reencrypt_key)
        braw = json.dumps(bundle, ensure_ascii=False, indent=1, sort_keys=True).encode()
        _atomic_write(os.path.join(out, MANIFEST), braw)
        detail = {"incident_id": incident_id, "out": os.path.abspath(out), "files": len(files),
                  "encryption": bundle["encryption"], "bundle_manifest_sha256": hashlib.sha256(braw).hexdigest()}
        with self._lock:
            append_custody(src, "exported", detail, who)
        try:
            with open(os.path.join(src, CUSTODY), "rb") as fh:
                custody = fh.read()
            _atomic_write(os.path.join(out, CUSTODY), custody)
        except OSError:
            pass
        if self.audit is not None:
            self.audit.record("evidence_exported", {**detail, "by": who})
        self.stats.incr("evidence.exports")
        return bundle


def verify_dir(directory: str, key: bytes | None = None) -> tuple[list[str], list[str]]:
    """Check a store incident directory or an exported bundle: (problems, checked lines).

    Hashes of every listed file are checked against the manifest; sealed files are authenticated
    and their plaintext hashed when a key is given; pcaps must start with a pcap magic.
    """
    problems: list[str] = []
    checked: list[str] = []
    try:
        with open(os.path.join(directory, MANIFEST), "rb") as fh:
            manifest = json.loads(fh.read())
    except (OSError, ValueError) as exc:
        return [f"{MANIFEST}: cannot read ({exc})"], checked
    fmt = manifest.get("format")
    inc = str(manifest.get("incident_id", ""))
    listed = {MANIFEST, CUSTODY}
    for e in manifest.get("files", []):
        if not e.get("stored"):
            checked.append(f"{e['name']}: not stored ({e.get('reason', '')})")
            continue
        fname = e.get("cipher_file") if fmt == STORE_FORMAT else e.get("file")
        if not fname or "/" in fname:
            problems.append(f"{e.get('name')}: bad file name in manifest")
            continue
        listed.add(fname)
        try:
            with open(os.path.join(directory, fname), "rb") as fh:
                data = fh.read()
        except OSError:
            problems.append(f"{fname}: missing")
            continue
        sealed = is_sealed(data)
        if sealed:
            if e.get("cipher_sha256") and hashlib.sha256(data).hexdigest() != e["cipher_sha256"]:
                problems.append(f"{fname}: ciphertext SHA-256 differs from the manifest")
                continue
            if key is None:
                checked.append(f"{fname}: ciphertext SHA-256 ok (no key: plaintext not checked)")
                continue
            try:
                data = unseal(key, inc, e["name"], data)
            except ValueError as exc:
                problems.append(f"{fname}: {exc}")
                continue
        if hashlib.sha256(data).hexdigest() != e.get("sha256"):
            problems.append(f"{fname}: SHA-256 differs from the manifest")
            continue
        if e.get("kind") == "pcap" and data[:4] not in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4"):
            problems.append(f"{fname}: not a pcap")
            continue
        checked.append(f"{fname}: SHA-256 ok{' (decrypted)' if sealed else ''}")
    for name in sorted(os.listdir(directory)):
        if name not in listed and not name.startswith(MANIFEST + ".tmp"):
            problems.append(f"{name}: not listed in the manifest")
    problems.extend(check_custody(directory))
    return problems, checked


def flow_records(flow: Flow, events: list[Event], sensor: str) -> list[dict[str, Any]]:
    """EVE records of the events kept for a flow (header built by the one header builder)."""
    return [eve_record(ev, sensor) for ev in events]
