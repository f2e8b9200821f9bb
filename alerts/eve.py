"""EVE-style JSON lines: the single header builder and the file writer.

Header fields follow Suricata's EVE: ``timestamp`` (ISO 8601, microseconds, UTC offset),
``flow_id``, ``community_id``, ``pcap_cnt`` (replay), ``event_type``, ``src_ip``,
``src_port``, ``dest_ip``, ``dest_port``, ``proto``, ``app_proto``.
"""

from __future__ import annotations

import datetime as _dt
import json
import json.encoder as _json_encoder
import os
import stat
import sys
import threading
from collections.abc import Callable
from typing import IO, Any

from monitor.events import Event
from monitor.flow.community_id import flow_community_id
from monitor.model import PROTO_NAMES, TO_CLIENT

_UTC = _dt.UTC


# Seconds -> "YYYY-MM-DDTHH:MM:SS". A dict, not a one-entry cache: a flow record formats its
# start, its end and the event time, three different seconds in turn, which a one-entry cache
# would miss every time. Cleared when full (bounded; a refill costs one strftime per second).
_ts_prefix: dict[int, str] = {}
_TS_PREFIX_MAX = 4096
_ts_last: tuple[float, str] = (float("nan"), "")  # NaN: equal to nothing


def format_ts(ts: float) -> str:
    """1700000000.123456 -> '2023-11-14T22:13:20.123456+0000' (Suricata's form).

    The date-time part is formatted once per second (strftime is the costly part and events
    of one second share it); the microseconds are appended.
    """
    global _ts_last
    last_ts, text = _ts_last
    if ts == last_ts:  # a flow's start and end, the events of one packet: often the same time
        return text
    sec = int(ts // 1)
    usec = round((ts - sec) * 1_000_000)  # round() of a float is an int
    if usec >= 1_000_000:
        sec += 1
        usec -= 1_000_000
    prefix = _ts_prefix.get(sec)
    if prefix is None:
        prefix = _dt.datetime.fromtimestamp(sec, _UTC).strftime("%Y-%m-%dT%H:%M:%S")
        if len(_ts_prefix) >= _TS_PREFIX_MAX:
            _ts_prefix.clear()
        _ts_prefix[sec] = prefix
    text = f"{prefix}.{usec:06d}+0000"
    _ts_last = (ts, text)
    return text


def eve_record(ev: Event, sensor: str | None = None) -> dict[str, Any]:
    """Header + body for one event. The only place a header is built."""
    rec: dict[str, Any] = {"timestamp": format_ts(ev.ts)}
    flow = ev.flow
    if flow is not None:
        rec["flow_id"] = flow.flow_id
        if not flow.community_id:
            # Computed once per flow, when its first event is written (not on the packet path).
            flow.community_id = flow_community_id(flow)
        rec["community_id"] = flow.community_id
    if ev.iface:
        rec["in_iface"] = ev.iface
    elif flow is not None and flow.iface:
        rec["in_iface"] = flow.iface
    if ev.pcap_cnt is not None:
        rec["pcap_cnt"] = ev.pcap_cnt
    rec["event_type"] = ev.event_type
    if flow is not None:
        d = ev.direction if ev.direction is not None else 0
        src, sport, dst, dport = flow.endpoints(d)
        rec["src_ip"] = src
        rec["src_port"] = sport
        rec["dest_ip"] = dst
        rec["dest_port"] = dport
        rec["proto"] = PROTO_NAMES.get(flow.proto, str(flow.proto))
        if flow.vlan:
            rec["vlan"] = list(flow.vlan)
        if flow.app_proto:
            rec["app_proto"] = flow.app_proto
        if ev.direction is not None:
            rec["direction"] = "to_client" if ev.direction == TO_CLIENT else "to_server"
    if ev.tx_id is not None:
        rec["tx_id"] = ev.tx_id
    if sensor:
        rec["host"] = sensor
    rec.update(ev.body)
    return rec


def _make_dumps() -> Callable[[dict[str, Any]], str]:
    """``json.dumps(rec, ensure_ascii=False, separators=(",", ":"), default=str)``, made once.

    ``json.dumps`` with ``default`` builds a new encoder per call, and each encoder builds a new
    C encoder: ~3 µs of a ~9 µs flow record. The C encoder is built here once instead, without
    the circular-reference check (event bodies are trees built by this program; a cycle would
    raise RecursionError instead of ValueError, and the event bus contains either).
    """
    c_encoder = getattr(_json_encoder, "c_make_encoder", None)
    if c_encoder is None:  # pure-Python json (no _json extension): the plain call
        return lambda rec: json.dumps(rec, ensure_ascii=False, separators=(",", ":"), default=str)
    encode = c_encoder(None, str, _json_encoder.encode_basestring, None, ":", ",", False, False, True)
    join = "".join
    return lambda rec: join(encode(rec, 0))


_dumps = _make_dumps()


def dumps(rec: dict[str, Any]) -> str:
    """One EVE record as compact JSON text (non-ASCII kept as is, unknown types through str)."""
    return _dumps(rec)


def _ends_torn(path: str) -> bool:
    """True when an existing, non-empty file does not end with a newline."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() == 0:
                return False
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) != b"\n"
    except OSError:
        return False


def _is_null_device(fh: IO[str]) -> bool:
    """True when ``fh`` is open on the null device (everything written is discarded)."""
    try:
        st = os.fstat(fh.fileno())
        null = os.stat(os.devnull)
    except (OSError, ValueError, AttributeError):
        return False
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == null.st_rdev


class EveWriter:
    """One writer for the EVE sink: whole lines, flushed per event (tail -f and crash safety).

    Writing to the null device (``eve.path: /dev/null``, benchmarks and sensors that only keep
    incidents and metrics) skips building and serialising records: ``discard`` is True and an
    event costs a type check. The events still reach every other sink on the bus.
    """

    def __init__(self, path: str, types: list[str] | None = None, sensor: str | None = None) -> None:
        self.path = path
        self.types = set(types or [])
        self.sensor = sensor
        self._lock = threading.Lock()
        self._fh: IO[str]
        if path == "-":
            self._fh = sys.stdout
            self._own = False
        else:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            torn = _ends_torn(path)
            self._fh = open(path, "a", encoding="utf-8", buffering=1 << 16)
            self._own = True
            if torn:
                # A crash cut the last line short: end it, so the next record starts on its own line.
                self._fh.write("\n")
        self.discard = _is_null_device(self._fh)
        self._alerts_filtered = bool(self.types) and "alert" not in self.types

    def __call__(self, ev: Event) -> None:
        if self.types and ev.event_type not in self.types:
            return
        if self.discard:
            # Writing the record is the one side effect skipped. Building it also sets the flow's
            # community_id, which the audit sink (after this one) copies into alert records: set
            # on alerts, or on every written type when alerts themselves are filtered out.
            flow = ev.flow
            if flow is not None and not flow.community_id and (ev.event_type == "alert" or self._alerts_filtered):
                flow.community_id = flow_community_id(flow)
            return
        line = dumps(eve_record(ev, self.sensor)) + "\n"
        with self._lock:
            self._fh.write(line)
            if ev.event_type in ("alert", "stats", "anomaly"):
                self._fh.flush()

    def write_line(self, line: str) -> None:
        """A pre-serialised EVE line (from a worker process); must end with a newline."""
        if self.discard:
            return
        with self._lock:
            self._fh.write(line)

    def flush(self) -> None:
        with self._lock:
            self._fh.flush()

    def close(self) -> None:
        with self._lock:
            self._fh.flush()
            if self._own:
                self._fh.close()
