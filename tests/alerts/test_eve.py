"""EVE serialisation shortcuts give exactly the text of the plain calls; /dev/null skips the work."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import random

import pytest

import alerts.eve as eve
from alerts.eve import EveWriter, dumps, eve_record, format_ts
from alerts.schema import validate_lines
from monitor.events import Event
from monitor.flow.community_id import flow_community_id
from monitor.model import TO_CLIENT
from tests.factories import tflow


def reference_ts(ts: float) -> str:
    """format_ts as it was before any caching: strftime of every call."""
    sec = int(ts // 1)
    usec = int(round((ts - sec) * 1_000_000))
    if usec >= 1_000_000:
        sec += 1
        usec -= 1_000_000
    return dt.datetime.fromtimestamp(sec, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{usec:06d}+0000"


def test_format_ts_matches_strftime_over_interleaved_seconds_and_rounding():
    rnd = random.Random(7)
    stamps = [0.0, 1_700_000_000.0, 1_700_000_000.9999996, 1_700_000_000.0000004, 1_700_000_000.5, -1.5,
              4_102_444_800.123456]
    # A flow record's start, end and event time: three seconds in turn, each repeated.
    for i in range(2000):
        base = 1_700_000_000 + (i % 3) * 37
        stamps += [base + rnd.random(), base + rnd.random()]
        stamps.append(stamps[-1])
    stamps += [rnd.uniform(0, 4e9) for _ in range(eve._TS_PREFIX_MAX + 500)]  # more seconds than the cache holds
    for ts in stamps:
        assert format_ts(ts) == reference_ts(ts), ts
    assert len(eve._ts_prefix) <= eve._TS_PREFIX_MAX
    assert format_ts(1_700_000_000.123456) == "2023-11-14T22:13:20.123456+0000"


def test_format_ts_of_nan_still_raises():
    with pytest.raises(ValueError):
        format_ts(math.nan)


class Opaque:
    def __str__(self) -> str:
        return "opaque-object"


@pytest.mark.parametrize("rec", [
    {"a": 1, "b": "保護すべき情報", "c": [1, 2.5, None, True, False], "d": {"e": {"f": "x\ny\"z\\"}}},
    {"big": 6923235618097829138, "neg": -1, "float": 0.1, "exp": 1e300, "tiny": 5e-324},
    {"nan": math.nan, "inf": math.inf, "-inf": -math.inf},
    {"tuple": (1, "two"), "bytes": b"\x00\xff", "obj": Opaque(), "set_like": frozenset()},
    {"ctrl": "\x00\x1f\u2028\ud800", "emoji": "🙂", "empty": {}, "list": []},
    {1: "int key", 2.5: "float key", False: "bool key", None: "none key"},
])
def test_dumps_is_json_dumps_with_the_eve_options(rec):
    assert dumps(rec) == json.dumps(rec, ensure_ascii=False, separators=(",", ":"), default=str)


def _flow_event(event_type: str = "flow"):
    flow = tflow("10.0.0.5", "203.0.113.7", 50000, 80)
    flow.app_proto = "http"
    flow.start_ts = flow.last_ts = 1_700_000_000.25
    record = {"pkts_toserver": 1, "pkts_toclient": 0, "bytes_toserver": 60, "bytes_toclient": 0,
              "start": format_ts(flow.start_ts), "end": format_ts(flow.last_ts), "age": 0, "state": "new",
              "reason": "timeout", "alerted": False, "gaps": 0, "protected_side": "client",
              "tcp_flags_ts": "02", "tcp_flags_tc": "00"}
    body = {"flow": record} if event_type == "flow" else \
        {"alert": {"signature_id": 9100001, "signature": "test", "category": "protected-data-leak", "severity": 1,
                   "action": "allowed", "rev": 1, "gid": 1}}
    return flow, Event(event_type, 1_700_000_001.5, body, flow, direction=TO_CLIENT if event_type == "alert" else None,
                       pcap_cnt=7)


def test_file_writer_writes_the_record_of_eve_record(tmp_path):
    path = tmp_path / "eve.json"
    w = EveWriter(str(path), sensor="s1")
    assert w.discard is False
    flow, ev = _flow_event("flow")
    expected = dumps(eve_record(ev, "s1"))
    w(ev)
    w.close()
    text = path.read_text(encoding="utf-8")
    assert text == expected + "\n"
    (rec,) = validate_lines(text)
    assert rec["event_type"] == "flow" and rec["community_id"] == flow_community_id(flow)
    assert rec["timestamp"] == "2023-11-14T22:13:21.500000+0000"


def test_null_device_writer_skips_records_but_sets_community_id_for_alerts(monkeypatch):
    w = EveWriter(os.devnull, sensor="s1")
    assert w.discard is True

    def no_record(*args, **kwargs):
        raise AssertionError("a discarding writer must not build records")

    monkeypatch.setattr(eve, "eve_record", no_record)
    monkeypatch.setattr(eve, "dumps", no_record)
    flow, ev = _flow_event("flow")
    w(ev)
    assert flow.community_id == ""  # nothing reads it from a flow event
    flow, ev = _flow_event("alert")
    w(ev)
    # The audit sink, subscribed after the writer, copies it into its alert record.
    assert flow.community_id == flow_community_id(flow)
    w.write_line('{"event_type":"flow"}\n')
    w.flush()
    w.close()


def test_null_device_through_a_symlink_is_discarding(tmp_path):
    link = tmp_path / "eve-null.json"
    link.symlink_to(os.devnull)
    w = EveWriter(str(link))
    assert w.discard is True
    w.close()


def test_type_filter_still_applies_before_discarding():
    w = EveWriter(os.devnull, types=["flow"])
    flow, ev = _flow_event("alert")
    w(ev)
    assert flow.community_id == ""  # filtered out, as before: no record, no community_id
    # Alerts filtered out: a written type sets it, as building its record did.
    flow, ev = _flow_event("flow")
    w(ev)
    assert flow.community_id == flow_community_id(flow)
    w.close()
    w = EveWriter(os.devnull, types=["flow", "alert"])
    flow, ev = _flow_event("flow")
    w(ev)
    assert flow.community_id == ""  # alerts are written: set on the alert itself
    w.close()
