"""``leakmon replay --workers 2``: leaking flows of one host and destination split across the
workers still make one incident, with one first report (第一報), as ``--workers 1`` does.

Workers shard by the frame's IP address pair (:mod:`monitor.shard`), so plain flows of one
host pair always meet in one worker. A sensor fed by a local SPAN port and by an ERSPAN session
from a remote switch sees the same host pair on both, and the ERSPAN copies shard by their
outer (switch -> sensor) addresses: the capture here is the sample's uploads from 10.77.0.1 to
10.77.0.2:8080 with one leaking flow arriving over ERSPAN, which lands it in the other worker.
Both workers number their files from 1 unless told otherwise; the flows here make two files of
the incident share an id (and so an evidence name) when they do.
"""

from __future__ import annotations

import json
import sqlite3
import struct
from pathlib import Path
from typing import Any

import pytest

from monitor.model import LINKTYPE_ETHERNET
from monitor.shard import shard_of
from tests.e2e.conftest_incidents import (
    SAMPLE_PCAP,
    eve_records,
    frame_tuple,
    leakmon,
    make_config,
    read_pcap,
)

pytestmark = pytest.mark.timeout(180)

ERSPAN_CPORT = 41626  # the sample's first leaking upload (a file) comes over ERSPAN
SWITCH, SENSOR = "192.0.2.12", "192.0.2.200"  # the ERSPAN session's outer addresses


def _erspan(frame: bytes, seq: int) -> bytes:
    """``frame`` mirrored by a remote switch: ERSPAN type II in GRE, switch -> sensor."""
    from scapy.layers.inet import GRE, IP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw

    outer = (Ether(src="02:00:5e:00:00:0b", dst="02:00:5e:00:00:c8") / IP(src=SWITCH, dst=SENSOR)
             / GRE(seqnum_present=1, sequence_number=seq, proto=0x88BE)
             / Raw(struct.pack("!II", (1 << 28) | 7, 0)) / Raw(frame))  # version 1, session 7
    return bytes(outer)


def _capture(out: Path) -> dict[int, set[int]]:
    """Write the capture; return the workers (of 2) each client port's frames go to."""
    header, frames = read_pcap(SAMPLE_PCAP)
    chunks = [header]
    workers: dict[int, set[int]] = {}
    for seq, (ts, f) in enumerate(frames):
        ends = frame_tuple(f)
        assert ends is not None
        cport = ends[0][1]
        g = _erspan(f, seq) if cport == ERSPAN_CPORT else f
        workers.setdefault(cport, set()).add(shard_of(g, LINKTYPE_ETHERNET, 2))
        sec, usec = divmod(round(ts * 1e6), 1_000_000)
        chunks.append(struct.pack("<IIII", sec, usec, len(g), len(g)) + g)
    out.write_bytes(b"".join(chunks))
    return workers


def _rows(db: Path, sql: str) -> list[sqlite3.Row]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _outcome(tmp: Path, capture: Path, workers: int) -> dict[str, Any]:
    """Replay with ``workers``; the incidents as what does not depend on per-process numbering."""
    config = make_config(tmp)
    leakmon("replay", capture, "-c", config, "--no-progress", "--workers", str(workers), cwd=tmp)
    out = tmp / "out"
    alerts = [r for r in eve_records(out / "eve.json") if r["event_type"] == "alert"]
    cport = {r["flow_id"]: r["src_port"] for r in alerts}  # flow ids are keyed per worker
    db = out / "leakmon.db"
    incidents = _rows(db, "SELECT * FROM incidents ORDER BY num")
    audit = [json.loads(x) for x in (out / "audit.jsonl").read_text(encoding="utf-8").splitlines()]
    return {
        "alert_cports": sorted(r["src_port"] for r in alerts),
        "incidents": [(r["id"], r["host"], r["dest"], r["status"], r["alert_count"], r["first_ts"], r["last_ts"],
                       r["first_report"] is not None) for r in incidents],
        "alerts": sorted((r["incident_id"], r["sid"], cport[r["flow_id"]]) for r in _rows(db, "SELECT * FROM alerts")),
        "flows": sorted((r["incident_id"], cport[r["flow_id"]], r["bytes_out"], r["packets"])
                        for r in _rows(db, "SELECT * FROM flows")),
        # the packets are the same bytes; a flow's EVE records carry per-process flow and file ids
        "evidence": sorted((r["incident_id"], r["kind"], cport[r["flow_id"]], r["sha256"] if r["kind"] == "pcap" else "")
                           for r in _rows(db, "SELECT * FROM evidence") if r["kind"] in ("pcap", "eve")),
        "evidence_files": sorted((r["incident_id"], cport[r["flow_id"]], r["sha256"])
                                 for r in _rows(db, "SELECT * FROM evidence") if r["kind"] == "file"),
        "opened": sorted(r["data"]["incident_id"] for r in audit if r["type"] == "incident_opened"),
        "reports": sorted(p.name for p in (out / "reports").iterdir() if p.is_dir()),
        "first_report_flows": sorted(cport[i["flow_id"]] for i in json.loads(
            (out / "reports" / incidents[0]["id"] / "first_report.json").read_text())["evidence"]["items"]
            if i["kind"] == "pcap") if incidents else [],
    }


def test_leaking_flows_split_across_two_workers_make_one_incident_as_with_one(tmp_path: Path) -> None:
    capture = tmp_path / "span-and-erspan.pcap"
    shards = _capture(capture)
    one = _outcome(tmp_path / "w1", capture, 1)
    leaking = set(one["alert_cports"])
    assert ERSPAN_CPORT in leaking and len(leaking) >= 2
    # the precondition: each flow goes to one worker, and the leaking flows to both
    assert all(len(s) == 1 for s in shards.values())
    assert {next(iter(shards[p])) for p in leaking} == {0, 1}, shards

    two = _outcome(tmp_path / "w2", capture, 2)
    assert one["alert_cports"] == two["alert_cports"]
    [(inc, host, dest, status, count, *_rest, reported)] = one["incidents"]
    assert (host, dest, status, count, reported) == ("10.77.0.1", "10.77.0.2", "open", len(one["alert_cports"]), True)
    assert {p for _, _, p in one["alerts"]} == leaking
    assert {p for _, p, *_ in one["flows"]} == leaking
    assert {(k, p) for _, k, p, _ in one["evidence"]} == {(k, p) for k in ("pcap", "eve") for p in leaking}
    assert one["opened"] == one["reports"] == [inc]
    assert set(one["first_report_flows"]) <= leaking
    # two workers: the same incident, alerts, flows, evidence and one first report
    assert {p for _, p, _ in one["evidence_files"]} == leaking
    for key in ("incidents", "alerts", "flows", "evidence", "evidence_files", "opened", "reports"):
        assert two[key] == one[key], key
    assert sorted(two["first_report_flows"]) == sorted(one["first_report_flows"])


def test_the_evidence_manifest_of_an_incident_of_two_workers_lists_every_item(tmp_path: Path) -> None:
    capture = tmp_path / "span-and-erspan.pcap"
    _capture(capture)
    two = _outcome(tmp_path / "w2", capture, 2)
    [(inc, *_rest)] = two["incidents"]
    out = tmp_path / "w2" / "out"
    stored = {r["name"] for r in _rows(out / "leakmon.db", "SELECT name FROM evidence")}
    manifest = json.loads((out / "evidence" / inc / "manifest.json").read_text())
    assert {e["name"] for e in manifest["files"]} == stored
