"""``Detection``: the only object the pipeline calls (docs/architecture.md, "detection").

It runs the marker matchers over raw reassembled streams (stream mode, per flow direction),
over the other version of overlapping segments, over every decoded buffer and over every file
object's bytes (stream mode, per file); checks complete files against the SHA-256 set; matches
decoded text against partial-document indexes; hands TLS handshake facts to the weak-crypto
policy. Detectors produce neutral findings; :mod:`detectors.policy` decides; each decision
becomes one EVE event through ``emit``.

Alert de-duplication (per flow): one alert per (flow, sid, file-or-None); later occurrences
only increment counters, kept in ``flow.detect`` and returned (and stored in
``flow.metadata["detect"]``) by :meth:`Detection.flow_end`.

Raw hits are held back. A raw-stream hit (and a hit in a multipart or message container body,
whose parts are files of their own) is reported only if no decoded view of the flow reports
that sid first: the decoded view names the file and the transaction. The pipeline feeds the
app-layer parser before the raw scan, but a parser may hold bytes back (SMTP gathers message
bytes into 64 KiB batches before MIME decoding), so the hold depends on the flow:

* a flow whose app-layer parser produces decoded views (``flow.app_proto`` in
  :data:`DECODING_PROTOCOLS`) holds the hit until the first of: :data:`RAW_HOLD_BYTES` more
  stream bytes in the hit's direction, :data:`RAW_HOLD_SECONDS` of packet time (checked on
  every stream chunk of any flow, so live alert latency stays bounded while traffic flows), a
  gap, or the flow's end (the parser is closed, and has flushed, before detection hears of it);
* any other flow (no parser, detection failed, TLS) holds it until its next chunk, gap or end.

Held hits wait for at most :data:`MAX_HELD_FLOWS` flows at a time; beyond that a flow's hits
fall back to the one-chunk hold (``memcap.hit{cap="detect.held_flows"}``).

Hot reload: :meth:`reload` builds the complete new rule set (matchers compiled, hash sets and
indexes loaded) before swapping one reference; flows and files keep the streams of the set
they started with until they end (or a gap restarts their stream), so no match is lost at
the swap.
"""

from __future__ import annotations

import codecs
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from detectors import partial
from detectors.alert import build_event, redacted_context
from detectors.dbcache import DatabaseCache
from detectors.markers import Hit, MarkerSet, MarkerStreams
from detectors.policy import Finding, Policy
from detectors.signatures import (
    CATEGORY_CANARY,
    Rule,
    SignatureError,
    SignatureSet,
    TlsPolicy,
    load_signatures,
)
from monitor.config import Config
from monitor.events import Event
from monitor.files import FileObject
from monitor.model import Flow
from monitor.stats import Stats

log = logging.getLogger(__name__)

SHIPPED_TLS_POLICY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                  "signatures", "cryptrec_tls.yaml")
MAX_KEYS_PER_FLOW = 4096  # distinct (sid, file) counters kept per flow
RAW_WHERE = "raw-stream"
ALT_WHERE = "raw-stream (overlap alternative)"
# App-layer protocols whose parsers report decoded views of the stream (bodies, mail parts,
# transferred files): a raw hit on such a flow waits for them (see the module docstring).
DECODING_PROTOCOLS = frozenset({"http", "smtp", "ftp", "ftp-data"})
RAW_HOLD_BYTES = 128 * 1024  # > the SMTP message batch (64 KiB) plus a MIME part's line slack
RAW_HOLD_SECONDS = 1.0  # packet time; bounds the extra alert latency on live traffic
MAX_HELD_FLOWS = 65536
_NEVER = float("inf")


@dataclass
class RuleSet:
    """Everything one signature version needs at run time; never mutated after build."""

    sigs: SignatureSet
    markers: MarkerSet
    indexes: list[tuple[Rule, partial.PartialIndex]]
    tls: TlsPolicy | None
    version: str
    loaded_at: float


@dataclass(slots=True)
class Held:
    """A raw hit waiting for a decoded view of the same bytes."""

    finding: Finding
    until_bytes: int  # released once the hit's direction has seen this many stream bytes
    until_ts: float  # ... or once packet time reaches this


@dataclass(slots=True)
class Tally:
    """What a flow matched and decided: created at its first match (most flows never match)."""

    counts: dict[tuple[int, int | None], int] = field(default_factory=dict)
    decided: set[tuple[int, int | None]] = field(default_factory=set)
    decided_sids: set[int] = field(default_factory=set)
    alerted: dict[tuple[int, int | None], int] = field(default_factory=dict)


@dataclass(slots=True)
class FlowDetect:
    """Per-flow detection state (``flow.detect``). Kept small -- it lives as long as the flow,
    and a sensor holds 100,000 flows: everything beyond the streams and byte counts is created
    only when the flow first matches (``tally``) or holds a hit (``pending``)."""

    rules: RuleSet
    streams: list[MarkerStreams | None] = field(default_factory=lambda: [None, None])  # opened at first payload
    seen: list[int] = field(default_factory=lambda: [0, 0])  # stream bytes per direction
    pending: dict[int, Held] | None = None  # held raw hits by sid
    tally: Tally | None = None
    alerts: int = 0

    def tallied(self) -> Tally:
        t = self.tally
        if t is None:
            t = self.tally = Tally()
        return t


@dataclass(slots=True)
class FileDetect:
    """Per-file stream state (``file.extra["detect"]``)."""

    rules: RuleSet
    streams: MarkerStreams | None = None


class Detection:
    """Markers, fingerprints, partial documents and TLS policy for one pipeline."""

    def __init__(self, cfg: Config, stats: Stats, emit: Callable[[Event], None], names: Any = None,
                 *, extra_rules: list[Rule] | None = None, signature_paths: list[str] | None = None) -> None:
        self.cfg = cfg
        self.stats = stats
        self.emit = emit
        self.names = names
        self.policy = Policy(cfg, stats, names)
        self.strict = os.environ.get("LEAKMON_DETECT_STRICT") == "1"  # tests: let bugs raise
        self._extra = list(extra_rules or [])
        self._paths = signature_paths
        # Bytes scanned per view, counted here and folded into stats at flow end (a labelled
        # Stats.incr costs about 1.5 us, as much as scanning a whole segment).
        self._bytes_stream = self._bytes_overlap = self._bytes_buffer = self._bytes_file = 0
        # ... through counters bound once (same keys as stats.incr("detect.bytes", view=...)):
        # every flow end folds them, and a labelled incr resolves its key each time.
        self._bytes_counter = {view: stats.counter("detect.bytes", view=view)
                               for view in ("stream", "file", "buffer", "overlap")}
        # Flows with held raw hits (id(flow) -> flow) and the earliest packet time one is due.
        self._held: dict[int, Flow] = {}
        self._next_due = _NEVER
        self._db_cache = DatabaseCache.from_environment()
        self._rules = self._build()  # a bad set at start-up raises SignatureError (a ConfigError)
        self._publish_version(None)

    # ------------------------------------------------------------------ rule sets

    @property
    def rules(self) -> RuleSet:
        return self._rules

    @property
    def version(self) -> str:
        return self._rules.version

    @property
    def loaded_at(self) -> float:
        return self._rules.loaded_at

    def signature_paths(self) -> list[str]:
        if self._paths is not None:
            return list(self._paths)
        return [self.cfg.resolve(p) for p in self.cfg.signatures]

    def _canary_rule(self) -> Rule:
        c = self.cfg.canary
        return Rule(sid=getattr(c, "sid", 9999901), msg="LEAKMON canary self-test marker", kind="marker",
                    priority=4, category=CATEGORY_CANARY, rev=1, metadata={"informational": ["true"]},
                    file="<config canary>", line=0, informational=True, literal=c.marker)

    def _build(self) -> RuleSet:
        t0 = time.monotonic()
        sigs = load_signatures(self.signature_paths(), extra_rules=[*self._extra, self._canary_rule()])
        tls = sigs.tls
        if tls is None and os.path.exists(SHIPPED_TLS_POLICY):
            try:
                tls = load_signatures([SHIPPED_TLS_POLICY]).tls
            except SignatureError as exc:  # the shipped file is tested; keep going without it
                log.warning("shipped TLS policy unusable: %s", exc)
        markers = MarkerSet(sigs.markers, self.cfg.detection.engine, self._db_cache)
        rs = RuleSet(sigs, markers, list(sigs.documents), tls, sigs.version, time.time())
        self.stats.set("signatures.load_seconds", round(time.monotonic() - t0, 3))
        self._count_db_cache()
        return rs

    def _count_db_cache(self) -> None:
        """Compiled-database cache outcomes (hit, miss, invalid, unusable) since the last build."""
        outcomes = self._db_cache.outcomes
        for result, n in outcomes.items():
            self.stats.incr("signatures.db_cache", n, result=result)
        outcomes.clear()

    def _publish_version(self, old: RuleSet | None) -> None:
        rs = self._rules
        if old is not None:
            self.stats.gauges.pop(("signatures.version_info", (("version", old.version),)), None)
        self.stats.set("signatures.version_info", 1, version=rs.version)
        self.stats.set("signatures.loaded_at", rs.loaded_at)
        for kind, n in rs.sigs.describe().items():
            self.stats.set("signatures.loaded", n, kind=kind)
        self.stats.set("signatures.patterns", rs.markers.pattern_count)

    def reload(self) -> tuple[bool, str]:
        """Re-read the signature files; on any error keep the running set and say why."""
        try:
            new = self._build()
        except SignatureError as exc:
            self.stats.incr("signatures.reload_failed")
            return False, f"signatures not reloaded, still running {self.version}: {exc}"
        except Exception as exc:  # noqa: BLE001 - e.g. a matcher compile failure
            self.stats.incr("signatures.reload_failed")
            return False, f"signatures not reloaded, still running {self.version}: {type(exc).__name__}: {exc}"
        old, self._rules = self._rules, new  # the one reference swap
        self._publish_version(old)
        self.stats.incr("signatures.reloaded")
        d = new.sigs.describe()
        return True, (f"signatures {new.version} loaded: {d['markers']} markers "
                      f"({new.markers.pattern_count} patterns), {d['hashes']} file hashes, "
                      f"{d['documents']} document indexes")

    # ------------------------------------------------------------------ per-flow state

    def _state(self, flow: Flow) -> FlowDetect:
        st = flow.detect
        if st is None:
            st = flow.detect = FlowDetect(self._rules)
        return st

    # ------------------------------------------------------------------ pipeline API

    # Containment: a bug in detection must not stop the sensor. Every entry point catches,
    # counts (detect.internal_error) and goes on; the try blocks are inline because in 3.11 a
    # try costs nothing when nothing raises, while a wrapper function costs a call per segment.

    def _failed(self, call: str, exc: Exception) -> None:
        self.stats.incr("detect.internal_error", call=call)
        log.debug("detection %s failed: %r", call, exc, exc_info=True)
        if self.strict:
            raise exc

    def stream_data(self, flow: Flow, dir: int, data: bytes, ts: float, pcap_cnt: int | None = None) -> None:  # noqa: A002
        """Reassembled in-order bytes of one direction (raw-stream scan, stream mode). Hot path."""
        try:
            if ts >= self._next_due:
                self._release_due(ts)
            st = flow.detect
            if st is None:
                st = flow.detect = FlowDetect(self._rules)
            n = len(data)
            st.seen[dir] += n
            if st.pending:
                self._release_pending(flow, st, ts)
            if not n:
                return
            self._bytes_stream += n
            streams = st.streams[dir]
            if streams is None:
                streams = st.streams[dir] = MarkerStreams(st.rules.markers)
            hits = streams.feed(data)
            if hits:
                self._on_hits(flow, st, dir, hits, where=RAW_WHERE, ts=ts, pcap_cnt=pcap_cnt, raw=True)
        except Exception as exc:  # noqa: BLE001 - containment is the point
            self._failed("stream_data", exc)

    def stream_gap(self, flow: Flow, dir: int, length: int) -> None:  # noqa: A002
        """Bytes were lost: no match may span the hole, so the stream restarts (with the current set)."""
        try:
            st = self._state(flow)
            if st.pending:
                self._flush_pending(flow, st)  # the parser has flushed what it held (it hears first)
            old = st.streams[dir]
            if old is not None:
                old.close()
                st.streams[dir] = None
            st.rules = self._rules
        except Exception as exc:  # noqa: BLE001
            self._failed("stream_gap", exc)

    def stream_alt(self, flow: Flow, dir: int, data: bytes, ts: float) -> None:  # noqa: A002
        """The other version of overlapping segments (an evasion must not blind the sensor)."""
        if not data:
            return
        try:
            st = self._state(flow)
            self._bytes_overlap += len(data)
            hits = st.rules.markers.scan(data)
            if hits:
                self._on_hits(flow, st, dir, hits, where=ALT_WHERE, ts=ts, pcap_cnt=None, raw=True)
        except Exception as exc:  # noqa: BLE001
            self._failed("stream_alt", exc)

    def buffer(self, flow: Flow, dir: int, data: bytes, *, where: str, ts: float,  # noqa: A002
               tx_id: int | None = None, file: FileObject | None = None, charset: str | None = None) -> None:
        """A decoded buffer (form field, JSON strings, mail text, document text, a datagram)."""
        if not data:
            return
        try:
            st = self._state(flow)
            rs = self._rules
            self._bytes_buffer += len(data)
            hits = rs.markers.scan(data)
            if hits:
                self._on_hits(flow, st, dir, hits, where=where, ts=ts, pcap_cnt=None, raw=False, file=file,
                              tx_id=tx_id)
            if rs.indexes and len(data) >= self.cfg.detection.partial_min_chars:
                self._partial(flow, st, dir, data, charset, rs, where=where, ts=ts, file=file, tx_id=tx_id)
        except Exception as exc:  # noqa: BLE001
            self._failed("buffer", exc)

    def file_data(self, f: FileObject, data: bytes, ts: float) -> None:
        """Bytes of a file object as they arrive (stream mode per file). Hot path."""
        if not data:
            return
        try:
            fd: FileDetect | None = f.extra.get("detect")
            if fd is None:
                fd = f.extra["detect"] = FileDetect(self._rules)
            self._bytes_file += len(data)
            streams = fd.streams
            if streams is None:
                streams = fd.streams = MarkerStreams(fd.rules.markers)
            hits = streams.feed(data)
            if hits:
                if f.flow is None:
                    self.stats.incr("detect.file_without_flow")
                    return
                # A multipart/message body is a container: its parts are files of their own,
                # which name the part; its own hits are held back like raw-stream hits and
                # reported only if no part (or other decoded view) reports the sid.
                self._on_hits(f.flow, self._state(f.flow), f.direction, hits, where=_file_where(f), ts=ts,
                              pcap_cnt=None, raw=_is_container(f), file=f, tx_id=f.tx_id)
        except Exception as exc:  # noqa: BLE001
            self._failed("file_data", exc)

    def file_gap(self, f: FileObject, length: int) -> None:
        try:
            fd: FileDetect | None = f.extra.get("detect")
            if fd is not None and fd.streams is not None:
                fd.streams.close()
                fd.streams = None
                fd.rules = self._rules
        except Exception as exc:  # noqa: BLE001
            self._failed("file_gap", exc)

    def file_closed(self, f: FileObject, ts: float) -> None:
        """A file ended: release its streams; a complete file's SHA-256 meets the registered set."""
        try:
            self._file_closed(f, ts)
        except Exception as exc:  # noqa: BLE001
            self._failed("file_closed", exc)

    def _file_closed(self, f: FileObject, ts: float) -> None:
        fd: FileDetect | None = f.extra.pop("detect", None)
        if fd is not None and fd.streams is not None:
            fd.streams.close()
        rs = self._rules
        if not f.sha256 or not len(rs.sigs.hashes):
            return
        entry = rs.sigs.hashes.lookup(f.sha256)
        if entry is None:
            return
        rule = rs.sigs.rules.get(entry.sid)
        if rule is None or f.flow is None:
            self.stats.incr("detect.file_without_flow")
            return
        st = self._state(f.flow)
        key = (rule.sid, f.file_id)
        tally = st.tallied()
        tally.counts[key] = tally.counts.get(key, 0) + 1
        if key in tally.decided:
            return
        self._mark_decided(st, key)
        details: dict[str, Any] = {"sha256": f.sha256}
        if entry.name:
            details["fingerprint_name"] = entry.name
        finding = Finding("fingerprint", f.flow, f.direction, ts, _file_where(f), rule=rule, file=f,
                          tx_id=f.tx_id, details=details)
        self._decide(finding, st)

    def tls(self, flow: Flow, info: dict[str, Any], ts: float) -> None:
        """TLS handshake facts ({version, cipher_suite, cipher_name, sni}) for the weak-crypto policy."""
        try:
            st = self._state(flow)
            verdicts = self.policy.decide_tls(flow, info, st.rules.tls or self._rules.tls, ts)
            if not verdicts:
                return
            outbound = flow.outbound_direction()
            details: dict[str, Any] = {"tls": _tls_facts(info)}
            f = Finding("tls", flow, outbound if outbound is not None else 0, ts, "tls.handshake",
                        details=details)
            for v in verdicts:
                self._emit(v, f, st)
        except Exception as exc:  # noqa: BLE001
            self._failed("tls", exc)

    def flow_end(self, flow: Flow) -> dict[str, Any] | None:
        """Release the flow's state; returns (and stores in flow.metadata["detect"]) its summary."""
        try:
            self.flush_stats()
            return self._flow_end(flow)
        except Exception as exc:  # noqa: BLE001
            self._failed("flow_end", exc)
            return None

    def _flow_end(self, flow: Flow) -> dict[str, Any] | None:
        st: FlowDetect | None = flow.detect
        if st is None:
            return None
        if st.pending:
            self._flush_pending(flow, st)
        for s in st.streams:
            if s is not None:
                s.close()
        matches: dict[str, int] = {}
        if st.tally is not None:
            for (sid, _fid), n in st.tally.counts.items():
                matches[str(sid)] = matches.get(str(sid), 0) + n
        summary = {"alerts": st.alerts, "matches": matches, "signatures_version": st.rules.version}
        if matches or st.alerts:
            flow.metadata["detect"] = summary
        flow.detect = None
        return summary

    def flush_stats(self) -> None:
        """Fold the bytes-scanned counts into stats (each flow end does; so may a timer)."""
        counter = self._bytes_counter
        if self._bytes_stream:
            counter["stream"].incr(self._bytes_stream)
            self._bytes_stream = 0
        if self._bytes_file:
            counter["file"].incr(self._bytes_file)
            self._bytes_file = 0
        if self._bytes_buffer:
            counter["buffer"].incr(self._bytes_buffer)
            self._bytes_buffer = 0
        if self._bytes_overlap:
            counter["overlap"].incr(self._bytes_overlap)
            self._bytes_overlap = 0

    # ------------------------------------------------------------------ findings -> decisions

    def _on_hits(self, flow: Flow, st: FlowDetect, direction: int, hits: list[Hit], *, where: str, ts: float,
                 pcap_cnt: int | None, raw: bool, file: FileObject | None = None,
                 tx_id: int | None = None) -> None:
        by_sid: dict[int, list[Hit]] = {}
        for h in hits:
            by_sid.setdefault(h.rule.sid, []).append(h)
        fid = file.file_id if file is not None else None
        tally = st.tallied()
        for sid, group in by_sid.items():
            spans = {(h.start, h.end) for h in group}
            first = min(group, key=lambda h: (h.start, h.end))
            n = len(spans)
            self.stats.incr("detect.matches", n, variant=first.variant.split("/")[0])
            key = (sid, fid)
            if key not in tally.counts and len(tally.counts) >= MAX_KEYS_PER_FLOW:
                self.stats.incr("memcap.hit", cap="detect.flow_keys")
            else:
                tally.counts[key] = tally.counts.get(key, 0) + n
            if raw:
                held = st.pending.get(sid) if st.pending else None
                if held is not None:
                    held.finding.count += n
                    continue
                if sid in tally.decided_sids:
                    self.stats.incr("detect.raw_covered")
                    continue
            elif key in tally.decided:
                continue
            finding = self._finding(flow, direction, first, n, where=where, ts=ts, pcap_cnt=pcap_cnt, raw=raw,
                                    file=file, tx_id=tx_id)
            if raw:
                self._hold(flow, st, sid, finding, direction, ts)
                continue
            if st.pending:
                st.pending.pop(sid, None)  # a decoded view of the same data supersedes the raw one
            self._mark_decided(st, key)
            self._decide(finding, st)

    def _finding(self, flow: Flow, direction: int, h: Hit, n: int, *, where: str, ts: float,
                 pcap_cnt: int | None, raw: bool, file: FileObject | None, tx_id: int | None) -> Finding:
        ctx = redacted_context(h.buf, h.start - h.buf_base, h.end - h.buf_base, h.variant, h.length_chars,
                               self.cfg.detection.context_chars)
        return Finding("marker", flow, direction, ts, where, rule=h.rule, variant=h.variant, file=file,
                       tx_id=tx_id, pcap_cnt=pcap_cnt, count=n, context=ctx, raw=raw)

    def _mark_decided(self, st: FlowDetect, key: tuple[int, int | None]) -> None:
        tally = st.tallied()
        tally.decided.add(key)
        tally.decided_sids.add(key[0])

    def _hold(self, flow: Flow, st: FlowDetect, sid: int, finding: Finding, direction: int, ts: float) -> None:
        until_ts = ts + RAW_HOLD_SECONDS
        if not st.pending and id(flow) not in self._held:
            if len(self._held) >= MAX_HELD_FLOWS:
                self.stats.incr("memcap.hit", cap="detect.held_flows")
                until_ts = ts  # due at once: released on the flow's next chunk (the one-chunk hold)
            else:
                self._held[id(flow)] = flow
        if st.pending is None:
            st.pending = {}
        st.pending[sid] = Held(finding, st.seen[direction] + RAW_HOLD_BYTES, until_ts)
        if until_ts < self._next_due:
            self._next_due = until_ts

    def _release_pending(self, flow: Flow, st: FlowDetect, ts: float) -> None:
        """Report the held hits that are due (see the module docstring); keep the others."""
        if flow.app_proto not in DECODING_PROTOCOLS or not st.pending:
            self._flush_pending(flow, st)
            return
        seen = st.seen
        due = [sid for sid, h in st.pending.items()
               if ts >= h.until_ts or seen[h.finding.direction] >= h.until_bytes]
        if not due:
            return
        if len(due) == len(st.pending):
            self._flush_pending(flow, st)
            return
        for sid in due:
            self._report_held(st, sid, st.pending.pop(sid))

    def _release_due(self, ts: float) -> None:
        """Packet time passed a held hit's deadline: release due hits on every held flow."""
        next_due = _NEVER
        for key, flow in list(self._held.items()):
            st: FlowDetect | None = flow.detect
            if st is None or not st.pending:
                del self._held[key]
                continue
            if any(ts >= h.until_ts for h in st.pending.values()):
                self._release_pending(flow, st, ts)
            for h in (st.pending or {}).values():
                if h.until_ts < next_due:
                    next_due = h.until_ts
            if not st.pending:
                self._held.pop(key, None)
        self._next_due = next_due

    def _flush_pending(self, flow: Flow, st: FlowDetect) -> None:
        pending, st.pending = st.pending, None
        self._held.pop(id(flow), None)
        for sid, held in (pending or {}).items():
            self._report_held(st, sid, held)

    def _report_held(self, st: FlowDetect, sid: int, held: Held) -> None:
        if sid in st.tallied().decided_sids:
            self.stats.incr("detect.raw_covered")
            return
        finding = held.finding
        self._mark_decided(st, (sid, finding.file.file_id if finding.file is not None else None))
        self._decide(finding, st)

    def _decide(self, finding: Finding, st: FlowDetect) -> None:
        for v in self.policy.decide(finding):
            self._emit(v, finding, st)

    def _emit(self, v: Any, finding: Finding, st: FlowDetect) -> None:
        fid = finding.file.file_id if finding.file is not None else None
        akey = (v.sid, fid) if v.event_type == "alert" else (-v.sid, fid)
        alerted = st.tallied().alerted
        if akey in alerted:
            alerted[akey] += 1
            return
        alerted[akey] = 1
        ev = build_event(v, finding, st.rules.version)
        if v.event_type == "alert":
            st.alerts += 1
            finding.flow.alerted = True
            self.stats.incr("detect.alerts", category=v.category)
        else:
            self.stats.incr("detect.findings", category=v.category)
        self.emit(ev)

    # ------------------------------------------------------------------ partial documents

    def _partial(self, flow: Flow, st: FlowDetect, direction: int, data: bytes, charset: str | None,
                 rs: RuleSet, *, where: str, ts: float, file: FileObject | None, tx_id: int | None) -> None:
        text = _decode_text(data, charset)
        if text is None:
            self.stats.incr("detect.partial_undecodable")
            return
        if len(text) > partial.MAX_TEXT_CHARS:
            self.stats.incr("detect.partial_truncated")
        default_min = self.cfg.detection.partial_min_chars
        norm = partial.normalize(text[:partial.MAX_TEXT_CHARS])
        fid = file.file_id if file is not None else None
        for rule, index in rs.indexes:
            min_chars = rule.min_chars or default_min
            found = index.match_normalized(norm, min_chars)
            if not found:
                continue
            best = found[0]
            key = (rule.sid, fid)
            tally = st.tallied()
            tally.counts[key] = tally.counts.get(key, 0) + len(found)
            if key in tally.decided:
                continue
            self._mark_decided(st, key)
            details = {"document": best.doc.name, "shared_chars": best.shared_chars,
                       "share": round(best.fraction, 4), "documents_matched": len(found)}
            finding = Finding("partial", flow, direction, ts, where, rule=rule, file=file, tx_id=tx_id,
                              count=len(found), details=details)
            self._decide(finding, st)


def _is_container(f: FileObject) -> bool:
    t = (f.declared_type or "").lower()
    return t.startswith(("multipart/", "message/"))


def _file_where(f: FileObject) -> str:
    return f.source or f.name or "file"


def _decode_text(data: bytes, charset: str | None) -> str | None:
    if charset:
        try:
            codecs.lookup(charset)
            return data.decode(charset, errors="replace")
        except LookupError:
            pass
    for codec in ("utf-8", "cp932", "euc_jp"):
        try:
            return data.decode(codec)
        except UnicodeDecodeError:
            continue
    return None


def _tls_facts(info: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if info.get("version"):
        out["version"] = str(info["version"])
    suite = info.get("cipher_suite")
    if isinstance(suite, int) and not isinstance(suite, bool):
        out["cipher_suite"] = f"0x{suite:04X}"
    if info.get("cipher_name"):
        out["cipher_name"] = str(info["cipher_name"])
    if info.get("sni"):
        out["sni"] = str(info["sni"])
    return out

