"""Issue 5, "how it must be shown": a real-client capture through the real CLI, end to end.

``leakmon replay pcaps/sample-leak-http.pcap`` (curl uploads from the lab client 10.77.0.1 to
10.77.0.2:8080, three of them carrying the marker of sid 9100001) with a configuration of its
own in a temporary directory, then:

incident opened (``incidents list --json``) -> first report with the host, destination,
protocol, URL, markers and evidence hashes -> ``evidence export`` decrypts to pcaps that tshark
reads, each holding its whole flow from the SYN (same frames as tshark finds for that 5-tuple
in the original capture) and files whose SHA-256 is the one EVE reported -> ``evidence verify``
OK (and FAIL after a one-byte edit) -> ``audit verify`` OK, then FAIL naming the edited line.

The replay runs as a subprocess (``python -m monitor``); the commands that read its results
call the same CLI entry point (:func:`monitor.cli.main`) in this process, which saves the
interpreter start-up per command.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from alerts.schema import validate_lines
from monitor.cli import main as leakmon_main
from tests.e2e.conftest_incidents import (
    LAB_CLIENT,
    LAB_SERVER,
    SAMPLE_PCAP,
    SHIPPED_MARKERS,
    eve_records,
    leakmon,
    make_config,
    tshark_tcp_flow,
    tshark_tcp_frames,
)

pytestmark = pytest.mark.timeout(120)


def cli(*args: str | Path) -> tuple[int, str, str]:
    """The leakmon CLI in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = leakmon_main([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()


@dataclass
class Run:
    tmp: Path
    config: Path
    eve: list[dict[str, Any]]
    stderr: str

    @property
    def out(self) -> Path:
        return self.tmp / "out"

    @property
    def alerts(self) -> list[dict[str, Any]]:
        return [r for r in self.eve if r["event_type"] == "alert"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    tmp = tmp_path_factory.mktemp("incident-e2e")
    config = make_config(tmp)
    p = leakmon("replay", SAMPLE_PCAP, "-c", config, "--no-progress", cwd=tmp)
    eve = eve_records(tmp / "out" / "eve.json")
    return Run(tmp, config, eve, p.stderr)


def _incident(run: Run) -> dict[str, Any]:
    rc, out, _ = cli("incidents", "list", "-c", run.config, "--json")
    assert rc == 0
    rows = json.loads(out)
    assert len(rows) == 1, rows
    return rows[0]


def _marker_alert(run: Run) -> dict[str, Any]:
    """The first sid 9100001 alert of the replay (the multipart upload from the lab client)."""
    return next(a for a in run.alerts if a["alert"]["signature_id"] == 9100001)


def _signature_msgs() -> dict[int, str]:
    doc = yaml.safe_load(SHIPPED_MARKERS.read_text(encoding="utf-8"))
    return {m["sid"]: m["msg"] for m in doc["markers"]}


def test_replay_writes_valid_eve_with_marker_alerts_from_the_lab_client(run: Run) -> None:
    lines = (run.out / "eve.json").read_text(encoding="utf-8").splitlines()
    assert len(validate_lines(lines)) == len(run.eve)
    marker_alerts = [a for a in run.alerts if a["alert"]["signature_id"] == 9100001]
    # three uploads of the sample carry the marker: a multipart body (and the file in it), a JSON note, a form
    assert {a["http"]["url"] for a in marker_alerts} == {"/upload", "/api/v1/notes", "/form"}
    assert {(a["src_ip"], a["dest_ip"], a["dest_port"]) for a in marker_alerts} == {(LAB_CLIENT, LAB_SERVER, 8080)}
    assert "alerts in" in run.stderr and f"{len(run.alerts)} alerts" in run.stderr


def test_replay_opens_one_incident_for_the_lab_client_and_destination(run: Run) -> None:
    inc = _incident(run)
    assert (inc["host"], inc["dest"], inc["status"], inc["sensor"]) == (LAB_CLIENT, LAB_SERVER, "open", "sample-sensor")
    # every alert of the replay is in the incident, with its signature ids
    assert inc["alert_count"] == len(run.alerts)
    assert inc["sids"] == sorted({a["alert"]["signature_id"] for a in run.alerts})
    assert 9100001 in inc["sids"]
    # the filters of the list command find it, or nothing
    for args, found in ((("--host", LAB_CLIENT, "--sid", "9100001"), True), (("--host", "10.77.0.9"), False),
                        (("--sid", "9100004"), False), (("--status", "open"), True), (("--status", "closed"), False)):
        rc, out, _ = cli("incidents", "list", "-c", run.config, "--json", *args)
        assert rc == 0 and [r["id"] for r in json.loads(out)] == ([inc["id"]] if found else []), args


def test_first_report_has_host_destination_protocol_markers_and_evidence_hashes(run: Run) -> None:
    inc = _incident(run)
    first_alert = run.alerts[0]
    marker = _marker_alert(run)
    cport = first_alert["src_port"]
    rep = json.loads((run.out / "reports" / inc["id"] / "first_report.json").read_text(encoding="utf-8"))
    # the same draft is in the database: `incidents show --report first` prints it
    rc, md, _ = cli("incidents", "show", inc["id"], "-c", run.config, "--report", "first")
    assert rc == 0
    assert md == (run.out / "reports" / inc["id"] / "first_report.ja.md").read_text(encoding="utf-8")

    # internal host and destination, with the MACs tshark sees on the flow's SYN
    syn = [(f[7], f[8]) for f in tshark_tcp_frames(SAMPLE_PCAP)
           if f[6] == "0x0002" and (f[0], f[1]) == (LAB_CLIENT, cport)]
    assert len(syn) == 1
    assert rep["host"] == {"ip": LAB_CLIENT, "port": cport, "mac": syn[0][0], "names": []}
    assert rep["destination"] == {"ip": LAB_SERVER, "port": 8080, "mac": syn[0][1], "names": []}
    # protocol and transaction: the URL of the upload, from EVE's http object
    assert rep["protocol"] == {"transport": "TCP", "app_proto": "http"}
    assert (rep["transaction"]["method"], rep["transaction"]["url"], rep["transaction"]["hostname"]) == (
        first_alert["http"]["http_method"], first_alert["http"]["url"], first_alert["http"]["hostname"])
    assert rep["transaction"]["url"] == "/upload" and rep["transaction"]["method"] == "POST"
    assert rep["flow"] == {"flow_id": first_alert["flow_id"], "community_id": first_alert["community_id"]}
    # markers: sid 9100001 with the name from the signature file, where it was found, never the content
    dets = {(d["sid"], d["where"]) for d in rep["detections"]}
    assert (9100001, marker["leakmon"]["where"]) in dets
    d9100001 = next(d for d in rep["detections"] if d["sid"] == 9100001)
    assert d9100001["signature"] == _signature_msgs()[9100001]
    assert d9100001["marker_id"] == 9100001 and d9100001["context"] == marker["leakmon"]["context"]
    # evidence: every stored item of the incident's manifest, with its SHA-256
    manifest = json.loads((run.out / "evidence" / inc["id"] / "manifest.json").read_text())
    stored = {f"{inc['id']}/{e['name']}": e["sha256"] for e in manifest["files"] if e["stored"]}
    assert rep["evidence"]["status"] == "stored" and rep["evidence"]["encryption"] == "AES-256-GCM"
    assert {e["id"]: e["sha256"] for e in rep["evidence"]["items"]} == stored
    marker_pcap = f"{inc['id']}/flow-{marker['flow_id']}.pcap"
    assert marker_pcap in stored
    # the Markdown says the same things
    for fact in (inc["id"], "第一報", LAB_CLIENT, LAB_SERVER, syn[0][0], "http（TCP）", "POST 10.77.0.2/upload",
                 "9100001:1", _signature_msgs()[9100001].replace("|", "\\|"), "sample-sensor", "山田 太郎",
                 "佐藤 花子", "03-0000-0001", "株式会社サンプル防衛", "保存済み", marker_pcap,
                 stored[marker_pcap], *stored.values()):
        assert fact in md, fact
    # the audit log recorded the opening with the report's file
    opened = [r for r in _audit_records(run) if r["type"] == "incident_opened"]
    assert [(r["data"]["incident_id"], r["data"]["host"], r["data"]["dest"], r["data"]["first_report"])
            for r in opened] == [(inc["id"], LAB_CLIENT, LAB_SERVER, "first_report.ja.md")]


def test_detail_report_has_the_timeline_of_every_alert(run: Run) -> None:
    inc = _incident(run)
    rep = json.loads((run.out / "reports" / inc["id"] / "detail_report.json").read_text(encoding="utf-8"))
    assert rep["alert_count"] == len(run.alerts)
    assert [(t["sid"], t["flow_id"]) for t in rep["timeline"]] == [
        (a["alert"]["signature_id"], a["flow_id"]) for a in run.alerts]
    flows = {a["flow_id"] for a in run.alerts}
    assert {f["flow_id"] for f in rep["flows"]} == flows
    # volume over the incident's flows, as tshark counts the frames of those flows
    frames = sum(len(tshark_tcp_flow(SAMPLE_PCAP, (LAB_CLIENT, a["src_port"]), (LAB_SERVER, 8080)))
                 for a in {a["flow_id"]: a for a in run.alerts}.values())
    assert rep["volume"]["packets"] == frames


def test_evidence_export_decrypts_whole_flows_from_the_syn_and_the_files_eve_hashed(run: Run, tmp_path: Path) -> None:
    inc = _incident(run)
    bundle = tmp_path / "bundle"
    rc, out, err = cli("evidence", "export", inc["id"], "-c", run.config, "--out", bundle)
    assert rc == 0, err
    assert "decrypted" in out
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["format"] == "leakmon-evidence-bundle/1" and manifest["incident_id"] == inc["id"]
    by_name = {e["name"]: e for e in manifest["files"]}

    alert_flows = {a["flow_id"]: a for a in run.alerts}
    for flow_id, a in alert_flows.items():
        client, server = (a["src_ip"], a["src_port"]), (a["dest_ip"], a["dest_port"])
        entry = by_name[f"flow-{flow_id}.pcap"]
        pcap = bundle / entry["file"]
        assert hashlib.sha256(pcap.read_bytes()).hexdigest() == entry["sha256"]
        got = tshark_tcp_flow(pcap, client, server)
        want = tshark_tcp_flow(SAMPLE_PCAP, client, server)
        assert got == want, f"flow {flow_id}: evidence frames differ from the capture's"
        assert want[0][2] == "0x0002", "the flow's first frame in the capture is its SYN"
        assert len(got) == entry["packets"] and entry["packets_dropped"] == 0
        # the flow's EVE records went with it, the alerts among them
        recs = validate_lines((bundle / f"flow-{flow_id}.eve.jsonl").read_text(encoding="utf-8"))
        assert {r["flow_id"] for r in recs} == {flow_id}
        assert sum(r["event_type"] == "alert" for r in recs) == sum(x["flow_id"] == flow_id for x in run.alerts)

    # the matching files: exactly the bytes whose SHA-256 EVE reported when they closed
    closed = {r["fileinfo"]["file_id"]: r["fileinfo"] for r in run.eve if r["event_type"] == "fileinfo"}
    alert_files = {a["fileinfo"]["file_id"] for a in run.alerts if "fileinfo" in a}
    assert alert_files
    for fid in alert_files:
        entry = by_name[f"file-{fid}.bin"]
        assert entry["stored"] is True
        data = (bundle / entry["file"]).read_bytes()
        assert len(data) == closed[fid]["size"]
        assert hashlib.sha256(data).hexdigest() == closed[fid]["sha256"] == entry["sha256"]

    # verify: OK, then FAIL naming the file after a one-byte edit of a pcap
    rc, out, _ = cli("evidence", "verify", bundle, "-c", run.config)
    assert rc == 0 and "VERIFIED" in out
    victim = bundle / f"flow-{_marker_alert(run)['flow_id']}.pcap"
    raw = bytearray(victim.read_bytes())
    raw[-1] ^= 0x01
    victim.write_bytes(bytes(raw))
    rc, out, _ = cli("evidence", "verify", bundle, "-c", run.config)
    assert rc == 1 and f"FAIL  {victim.name}: SHA-256 differs from the manifest" in out and "NOT VERIFIED" in out

    # the export is in the store's chain of custody and in the audit log
    custody = [json.loads(x) for x in (run.out / "evidence" / inc["id"] / "custody.jsonl").read_text().splitlines()]
    assert [c["action"] for c in custody][:1] == ["created"] and "exported" in [c["action"] for c in custody]
    exports = [r for r in _audit_records(run) if r["type"] == "evidence_exported"]
    assert exports and exports[-1]["data"]["out"] == str(bundle.resolve())


def test_evidence_store_is_encrypted_at_rest_and_verifies_with_the_key(run: Run) -> None:
    inc = _incident(run)
    d = run.out / "evidence" / inc["id"]
    for p in d.iterdir():
        head = p.read_bytes()[:6]
        if p.name in ("manifest.json", "custody.jsonl"):
            continue
        assert p.name.endswith(".enc") and head == b"LMEV1\x00", p.name
        assert not head.startswith(b"\xd4\xc3\xb2\xa1")  # no plaintext pcap on disk
    rc, out, _ = cli("evidence", "verify", d, "-c", run.config)
    assert rc == 0 and "VERIFIED" in out and "(decrypted)" in out


def _audit_records(run: Run) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (run.out / "audit.jsonl").read_text(encoding="utf-8").splitlines()]


def test_audit_log_verifies_then_fails_after_a_one_byte_edit_naming_the_line(run: Run, tmp_path: Path) -> None:
    rc, out, _ = cli("audit", "verify", "-c", run.config)
    assert rc == 0 and out.startswith("OK: "), out
    recs = _audit_records(run)
    types = [r["type"] for r in recs]
    assert types[:3] == ["sensor_start", "config_loaded", "signatures_loaded"]
    assert "sensor_stop" in types and types.count("alert") == len(run.alerts)
    assert [r["data"]["signature_id"] for r in recs if r["type"] == "alert"] == [
        a["alert"]["signature_id"] for a in run.alerts]

    # a copy of the log (the run's own stays intact for the other tests), one byte changed in
    # the middle of the first alert record: a pcap_cnt digit
    copy = tmp_path / "audit.jsonl"
    shutil.copy(run.out / "audit.jsonl", copy)
    shutil.copy(run.out / "audit.jsonl.head", tmp_path / "audit.jsonl.head")
    lines = copy.read_bytes().split(b"\n")
    n = types.index("alert")
    pos = lines[n].index(b'"pcap_cnt":') + len(b'"pcap_cnt":')
    edited = bytearray(lines[n])
    edited[pos] = ord("9") if edited[pos] != ord("9") else ord("8")
    lines[n] = bytes(edited)
    copy.write_bytes(b"\n".join(lines))
    rc, out, _ = cli("audit", "verify", "--log", copy, "--key", run.tmp / "audit.key")
    assert rc == 1
    assert f"FAIL  audit.jsonl:{n + 1}: HMAC mismatch" in out, out
    assert f"first at audit.jsonl:{n + 1}:" in out

    # a removed line is named too (the record after the gap)
    shutil.copy(run.out / "audit.jsonl", copy)
    lines = copy.read_bytes().split(b"\n")
    del lines[n]
    copy.write_bytes(b"\n".join(lines))
    rc, out, _ = cli("audit", "verify", "--log", copy, "--key", run.tmp / "audit.key")
    seq = recs[n]["seq"]
    assert rc == 1 and f"FAIL  audit.jsonl:{n + 1}: records {seq}..{seq} are missing: lines removed" in out, out


def test_ack_and_close_through_the_cli_are_recorded(run: Run) -> None:
    inc = _incident(run)["id"]
    rc, out, _ = cli("incidents", "ack", inc, "-c", run.config, "--by", "山田", "--note", "第一報を送付")
    assert rc == 0 and out.strip() == f"{inc}: open -> acked"
    rc, out, _ = cli("incidents", "show", inc, "-c", run.config, "--json")
    shown = json.loads(out)
    assert shown["status"] == "acked"
    assert [(h["old"], h["new"], h["by"], h["note"]) for h in shown["history"]] == [("open", "acked", "山田", "第一報を送付")]
    state = [r for r in _audit_records(run) if r["type"] == "incident_state"]
    assert [(r["data"]["incident_id"], r["data"]["old"], r["data"]["new"]) for r in state] == [(inc, "open", "acked")]
    rc, out, _ = cli("audit", "verify", "-c", run.config)
    assert rc == 0, out
