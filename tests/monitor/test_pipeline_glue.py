"""Pipeline glue: an EVE log on /dev/null changes nothing for the other sinks; collector settings."""

from __future__ import annotations

import gc
import json
import os
import re
from pathlib import Path

import pytest

from alerts.eve import dumps
from alerts.schema import validate_lines
from monitor.capture.pcapfile import read_capture
from monitor.config import load_config
from monitor.events import Event
from monitor.runner import GC_THRESHOLDS, Sensor, sensor_gc
from tests.factories import sample_config

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "pcaps" / "sample-leak-http.pcap"  # 4 curl flows, 3 leaking uploads (sid 9100001)
LEAK_PORTS = {41626, 41632, 41634}
_FILE_ID = re.compile(r'("(?:parent_)?file_id":)(\d+)')




def _replay(tmp_path: Path, eve_path: str) -> tuple[list[Event], list[dict], Sensor]:
    sensor = Sensor(load_config(sample_config(tmp_path)), eve_path=eve_path, replay=True)
    seen: list[Event] = []
    sensor.pipeline.bus.subscribe("recorder", seen.append)  # after eve, incidents, audit, metrics
    for raw in read_capture(SAMPLE, stats=sensor.stats):
        sensor.pipeline.process(raw)
    sensor.finish()
    audit = [json.loads(line) for line in (tmp_path / "out" / "audit.jsonl").read_text(encoding="utf-8").splitlines()]
    return seen, audit, sensor


def _comparable(events: list[Event]) -> list[tuple]:
    """What a sink sees, with file ids (a per-process counter) renumbered per run."""
    file_ids: dict[str, str] = {}

    def file_id(m: re.Match[str]) -> str:
        return m.group(1) + file_ids.setdefault(m.group(2), str(len(file_ids)))

    out = []
    for ev in events:
        body = dict(ev.body)
        if ev.event_type == "stats":
            # Audit and evidence counters depend on background jobs and on-disk state (the audit key
            # exists on the second run): compare the packet path's counters.
            body = {"stats": {k: body["stats"].get(k) for k in ("flow", "detect", "files", "applayer", "capture")}}
        flow = ev.flow
        text = _FILE_ID.sub(file_id, dumps(body))
        # community_id: what the audit sink reads from the flow of an alert (other events: unread).
        ends = None if flow is None else (flow.cport, flow.sport, flow.community_id if ev.event_type == "alert" else "")
        out.append((ev.event_type, ev.ts, ev.direction, ev.pcap_cnt, ev.tx_id, ends, text))
    return out


def _audit_alerts(audit: list[dict]) -> list[tuple]:
    return sorted((r["data"]["cport"], r["data"]["signature_id"], r["data"]["community_id"])
                  for r in audit if r.get("type") == "alert")


def test_eve_on_dev_null_gives_other_sinks_the_same_events(tmp_path):
    eve_file = tmp_path / "file" / "eve.json"
    with_file, audit_file, _ = _replay(tmp_path / "file", str(eve_file))
    with_null, audit_null, sensor = _replay(tmp_path / "null", os.devnull)
    assert sensor.pipeline.eve is not None and sensor.pipeline.eve.discard
    assert _comparable(with_null) == _comparable(with_file)
    # Alert audit records carry the flow's community_id in both runs (set by the EVE sink).
    alerts_null, alerts_file = _audit_alerts(audit_null), _audit_alerts(audit_file)
    assert alerts_null == alerts_file
    assert {(port, sid) for port, sid, _ in alerts_null} >= {(p, 9100001) for p in LEAK_PORTS}
    assert all(cid.startswith("1:") for _, _, cid in alerts_null)
    # The file run's EVE log is complete and valid.
    records = validate_lines(eve_file.read_text(encoding="utf-8"))
    assert [r["event_type"] for r in records] == [e.event_type for e in with_file]
    assert {r["src_port"] for r in records if r["event_type"] == "alert"
            and r["alert"]["signature_id"] == 9100001} == LEAK_PORTS


def test_sensor_gc_sets_and_restores_collector_settings():
    before = gc.get_threshold()
    with sensor_gc():
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0  # start-up objects out of later collections
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
    with pytest.raises(KeyboardInterrupt), sensor_gc():
        raise KeyboardInterrupt
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
