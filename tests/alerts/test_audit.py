"""Audit log: chain, HMAC, head, rotation across files, retention, tamper detection with line numbers."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from alerts import cli_incidents
from alerts.audit import AuditLog, rotated_files, verify
from monitor.config import AuditConfig
from monitor.stats import Stats
from tests.alerts.incident_factories import alert_event, http_post_flow


def _log(tmp: Path, **kw) -> AuditLog:
    return AuditLog(AuditConfig(path=str(tmp / "audit.jsonl"), **kw), Stats())


def _lines(p: str) -> list[bytes]:
    return Path(p).read_bytes().splitlines(keepends=True)


def test_generated_key_and_chain_across_two_writers(tmp_path):
    a = _log(tmp_path)
    key_file = tmp_path / "audit.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    first = json.loads(_lines(a.path)[0])
    assert first["type"] == "audit_key_generated" and first["seq"] == 1 and first["prev"] == "0" * 64
    a.record("sensor_start", {"version": "0.1.0"})
    b = _log(tmp_path)  # a CLI command in another process appends to the same chain
    b.record("incident_state", {"incident_id": "INC-1", "old": "open", "new": "acked"})
    a.record("sensor_stop", {})
    recs = [json.loads(x) for x in _lines(a.path)]
    assert [r["seq"] for r in recs] == [1, 2, 3, 4]
    assert [r["type"] for r in recs] == ["audit_key_generated", "sensor_start", "incident_state", "sensor_stop"]
    assert all(recs[i]["prev"] == recs[i - 1]["hmac"] for i in range(1, 4))
    rep = verify(a.path, a.key)
    assert rep.ok, rep.problems
    assert (rep.records, rep.first_seq, rep.last_seq) == (4, 1, 4)


def _five(tmp_path) -> AuditLog:
    a = _log(tmp_path)
    for i in range(5):
        a.record("alert", {"sid": 9100000 + i})
    return a  # 6 lines: key record + 5 alerts


def test_one_byte_edit_is_found_at_its_line(tmp_path):
    a = _five(tmp_path)
    lines = _lines(a.path)
    lines[3] = lines[3].replace(b"9100002", b"9100009")
    Path(a.path).write_bytes(b"".join(lines))
    rep = verify(a.path, a.key)
    assert not rep.ok
    assert [(p.line, p.seq) for p in rep.problems] == [(4, 4)]
    assert "HMAC mismatch" in rep.problems[0].message


def test_removed_line_is_found(tmp_path):
    a = _five(tmp_path)
    lines = _lines(a.path)
    del lines[2]
    Path(a.path).write_bytes(b"".join(lines))
    rep = verify(a.path, a.key)
    assert [(p.line, p.seq) for p in rep.problems] == [(3, 4)]
    assert "records 3..3 are missing" in rep.problems[0].message


def test_reordered_lines_are_found(tmp_path):
    a = _five(tmp_path)
    lines = _lines(a.path)
    lines[2], lines[3] = lines[3], lines[2]
    Path(a.path).write_bytes(b"".join(lines))
    rep = verify(a.path, a.key)
    msgs = [(p.line, p.message) for p in rep.problems]
    assert msgs[0][0] == 3 and "missing" in msgs[0][1]
    assert msgs[1][0] == 4 and "goes back from 4 to 3" in msgs[1][1]


def test_truncation_of_the_newest_lines_and_a_cut_line(tmp_path):
    a = _five(tmp_path)
    lines = _lines(a.path)
    Path(a.path).write_bytes(b"".join(lines[:4]))
    rep = verify(a.path, a.key)
    assert len(rep.problems) == 1
    assert "ends at seq 4 but seq 6 was written" in rep.problems[0].message
    Path(a.path).write_bytes(b"".join(lines[:5]) + lines[5][:40])
    rep = verify(a.path, a.key)
    msgs = {(p.line, p.message.split(":")[0]) for p in rep.problems}
    assert (6, "last line is cut short (truncated write or edit)") in msgs
    assert (6, "not a valid audit record (edited or truncated line)") in msgs
    assert any("ends at seq 5 but seq 6 was written" in p.message for p in rep.problems)


def test_removed_first_lines_are_found(tmp_path):
    a = _five(tmp_path)
    lines = _lines(a.path)
    Path(a.path).write_bytes(b"".join(lines[2:]))
    rep = verify(a.path, a.key)
    assert [(p.line, p.seq) for p in rep.problems] == [(1, 3)]
    assert "without a record of pruning" in rep.problems[0].message


def test_wrong_key_fails_on_every_line(tmp_path):
    a = _five(tmp_path)
    rep = verify(a.path, b"\x01" * 32)
    assert [p.line for p in rep.problems if "HMAC mismatch: the line" in p.message] == [1, 2, 3, 4, 5, 6]
    assert any("head file HMAC mismatch" in p.message for p in rep.problems)


def test_rotation_chains_across_files_and_retention_prunes(tmp_path):
    now = [1_700_000_000.0]
    cfg = AuditConfig(path=str(tmp_path / "audit.jsonl"), rotate_size=600, retention=92 * 86400)
    a = AuditLog(cfg, Stats(), clock=lambda: now[0])
    for i in range(12):
        a.record("alert", {"sid": i, "pad": "x" * 100})
    files = rotated_files(a.path)
    assert len(files) >= 3
    first_of_new = json.loads(_lines(files[1])[0])
    last_of_old = json.loads(_lines(files[0])[-1])
    assert first_of_new["type"] == "audit_rotated"
    assert first_of_new["data"]["previous_last_hash"] == last_of_old["hmac"] == first_of_new["prev"]
    assert verify(a.path, a.key).ok
    # 100 days later the old files are past the 92-day retention: the next rotation prunes them.
    now[0] += 100 * 86400
    for i in range(8):
        a.record("alert", {"sid": 100 + i, "pad": "y" * 100})
    recs = [json.loads(x) for p in rotated_files(a.path) + [a.path] for x in _lines(p)]
    pruned = [r for r in recs if r["type"] == "audit_pruned"]
    assert {r["data"]["file"] for r in pruned} >= {os.path.basename(f) for f in files}
    kept = rotated_files(a.path)
    assert kept and all(json.loads(_lines(f)[-1])["ts"].startswith("2024-02") for f in kept)
    rep = verify(a.path, a.key)
    assert rep.ok, [str(p) for p in rep.problems]
    assert any("pruned after the retention period" in n for n in rep.notes)


def test_deleting_a_rotated_file_is_found(tmp_path):
    cfg = AuditConfig(path=str(tmp_path / "audit.jsonl"), rotate_size=600)
    a = AuditLog(cfg, Stats())
    for i in range(12):
        a.record("alert", {"sid": i, "pad": "x" * 100})
    files = rotated_files(a.path)
    os.remove(files[0])
    rep = verify(a.path, a.key)
    assert not rep.ok
    assert os.path.basename(rep.problems[0].file) == os.path.basename(files[1])
    assert "without a record of pruning" in rep.problems[0].message


def test_torn_tail_is_moved_aside_and_the_chain_continues(tmp_path):
    a = _five(tmp_path)
    a.close()
    with open(a.path, "ab") as fh:
        fh.write(b'{"data":{"sid":')
    b = _log(tmp_path)
    recs = [json.loads(x) for x in _lines(b.path)]
    assert recs[-1]["type"] == "audit_recovered" and recs[-1]["data"]["torn_bytes"] == 15
    assert recs[-1]["seq"] == 7
    assert Path(b.path + ".torn").read_bytes() == b'{"data":{"sid":\n'
    assert verify(b.path, b.key).ok


def test_alert_sink_records_ids_not_content(tmp_path):
    a = _log(tmp_path)
    flow, _ = http_post_flow()
    ev = alert_event(flow, 1_700_000_000.5, context="秘密の■■■■", app={"http": {"url": "/x?q=SECRET-TEXT"}})
    ev.extra["incident_id"] = "INC-20231114-00001"
    a(ev)
    rec = json.loads(_lines(a.path)[-1])
    assert rec["type"] == "alert"
    d = rec["data"]
    assert (d["signature_id"], d["flow_id"], d["incident_id"], d["client"], d["server"]) == (
        9100001, flow.flow_id, "INC-20231114-00001", "10.77.0.1", "203.0.113.7")
    line = _lines(a.path)[-1].decode()
    assert "SECRET-TEXT" not in line and "秘密" not in line


def test_cli_audit_verify_exit_codes(tmp_path, capsys):
    cfgfile = tmp_path / "leakmon.yaml"
    cfgfile.write_text("audit:\n  path: audit.jsonl\n")
    a = AuditLog(AuditConfig(path="audit.jsonl"), Stats(), base_dir=str(tmp_path))
    a.record("sensor_start", {})
    a.record("sensor_stop", {})
    assert cli_incidents.main(["audit", "verify", "-c", str(cfgfile)]) == 0
    assert "OK: 3 records" in capsys.readouterr().out
    data = Path(a.path).read_bytes()
    i = data.index(b"sensor_stop")
    Path(a.path).write_bytes(data[:i] + b"sensor_stoq" + data[i + 11:])
    assert cli_incidents.main(["audit", "verify", "-c", str(cfgfile)]) == 1
    out = capsys.readouterr().out
    assert "audit.jsonl:3: HMAC mismatch" in out
