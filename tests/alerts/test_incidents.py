"""Incidents: grouping, first report at open, evidence at flow end, restart, kill -9, CLI."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from alerts import cli_incidents
from alerts.audit import AuditLog, verify
from alerts.evidence import EvidenceStore, unseal
from alerts.incidents import IncidentDB, IncidentManager, opens_incident
from monitor.events import EventBus
from monitor.stats import Stats
from tests.alerts.incident_factories import (
    EV_KEY,
    MARKER,
    Names,
    alert_event,
    closed_file,
    flow_event,
    http_post_flow,
    make_config,
    record_flow,
)
from tests.conftest import ROOT

T0 = 1_700_000_000.0


def _stack(tmp_path, **cfg_kw):
    cfg = make_config(tmp_path, **cfg_kw)
    stats = Stats()
    audit = AuditLog(cfg.audit, stats, base_dir=cfg.base_dir)
    store = EvidenceStore(cfg, stats, audit)
    names = Names({"10.77.0.1": {"pc-sekkei-01.corp.example": "dhcp", "pc-sekkei-01": "smtp-helo"},
                   "203.0.113.7": {"files.example.net": "http-host", "cdn.example.net": "dns"}})
    mgr = IncidentManager(cfg, stats, store, audit, None, names, clock=lambda: T0 + 5)
    bus = EventBus(stats)
    bus.subscribe("incidents", mgr)
    bus.subscribe("audit", audit)
    return cfg, stats, audit, store, mgr, bus


def test_alerts_group_by_host_destination_and_window(tmp_path):
    cfg, stats, audit, store, mgr, bus = _stack(tmp_path)
    f1, _ = http_post_flow()
    f2, _ = http_post_flow(cport=50124)
    f3, _ = http_post_flow(server="198.51.100.9")
    bus.publish(alert_event(f1, T0))
    bus.publish(alert_event(f2, T0 + 600, sid=9100004))       # same host and destination, 10 min later
    bus.publish(alert_event(f3, T0 + 700))                    # another destination
    bus.publish(alert_event(f1, T0 + 600 + 3601))             # after the 1 h window
    rows = mgr.db.query()
    assert [(r["host"], r["dest"], r["alert_count"], r["sids"]) for r in rows] == [
        ("10.77.0.1", "203.0.113.7", 2, [9100001, 9100004]),
        ("10.77.0.1", "198.51.100.9", 1, [9100001]),
        ("10.77.0.1", "203.0.113.7", 1, [9100001]),
    ]
    assert rows[0]["id"] == "INC-20231114-00001" and rows[2]["id"] == "INC-20231114-00003"
    assert stats.get("incidents.opened") == 3 and stats.get("incidents.alerts") == 4
    # the audit sink saw the incident id the manager set on the event
    audit_alerts = [json.loads(x)["data"] for x in Path(audit.path).read_text().splitlines()
                    if '"type":"alert"' in x]
    assert [a["incident_id"] for a in audit_alerts] == [r["id"] for r in (rows[0], rows[0], rows[1], rows[2])]


def test_closed_incident_is_not_joined_and_restart_keeps_open_ones(tmp_path):
    cfg, stats, audit, store, mgr, bus = _stack(tmp_path)
    f1, _ = http_post_flow()
    bus.publish(alert_event(f1, T0))
    mgr.db.set_status("INC-20231114-00001", "closed", "tester")  # closed by the CLI in another process
    bus.publish(alert_event(f1, T0 + 10))
    assert [r["alert_count"] for r in mgr.db.query()] == [1, 1]
    mgr.close()
    mgr2 = IncidentManager(cfg, stats, store, audit, None, None, clock=lambda: T0 + 20)
    mgr2(alert_event(f1, T0 + 20))
    assert [(r["id"], r["alert_count"]) for r in mgr2.db.query()] == [
        ("INC-20231114-00001", 1), ("INC-20231114-00002", 2)]


def test_canary_and_weak_crypto_alerts_open_no_incident(tmp_path):
    cfg, stats, audit, store, mgr, bus = _stack(tmp_path)
    f1, _ = http_post_flow()
    bus.publish(alert_event(f1, T0, category="canary", sid=9999901))
    bus.publish(alert_event(f1, T0, category="weak-crypto", sid=9300001, kind="weak_crypto"))
    assert mgr.db.query() == []
    assert opens_incident({"alert": {"category": "plaintext-transmission"}, "leakmon": {"kind": "plaintext"}})
    assert opens_incident({"alert": {"category": "fingerprint-match"}})


def test_first_report_at_open_has_the_facts_and_no_protected_content(tmp_path):
    cfg, stats, audit, store, mgr, bus = _stack(tmp_path)
    flow, pkts = http_post_flow(MARKER.encode("cp932") * 3)
    record_flow(flow, pkts[:4], cfg)
    f = closed_file(flow, MARKER.encode("cp932") * 3)
    bus.publish(alert_event(flow, pkts[3].ts, file=f))
    mgr.wait_idle()
    # the file closed before its alert: its content went to evidence at once, and the draft lists it
    d = Path(mgr.reports_dir, "INC-20231114-00001")
    md = (d / "first_report.ja.md").read_text()
    for fact in ("INC-20231114-00001", "第一報", "直ちに把握し得る限りの全ての内容", "sensor-tokyo-1",
                 "10.77.0.1", "02:00:00:00:00:01", "pc-sekkei-01.corp.example (dhcp)", "203.0.113.7",
                 "files.example.net (http-host)", "POST files.example.net/upload", "9100001:1",
                 "保護すべき情報 label", "M-0001", "cp932", "見積書の■■■■■■■について", "完了（転送は最後まで行われた）",
                 "検知・記録のみ", "保存済み", f"INC-20231114-00001/file-{f.file_id}.bin",
                 hashlib.sha256(MARKER.encode("cp932") * 3).hexdigest(), "山田 太郎", "連絡担当者", "03-0000-0002", "防衛装備株式会社",
                 "契約第R6-1234号", "12(3)イ", "10(7)", "13(2)", "10(11)", "2023-11-14 22:13:25.000 +0000"):
        assert fact in md, fact
    assert MARKER not in md.replace("保護すべき情報 label", "")  # the boilerplate never spells the marking term
    rep = json.loads((d / "first_report.json").read_text())
    assert rep["host"]["mac"] == "02:00:00:00:00:01" and rep["destination"]["port"] == 80
    assert rep["volume"]["bytes_out"] == flow.bytes[0] and rep["transfer"]["completed"] is True
    assert mgr.db.get("INC-20231114-00001")["first_report"]["incident_id"] == "INC-20231114-00001"
    assert '"type":"incident_opened"' in Path(audit.path).read_text()


def test_flow_end_finalises_evidence_from_the_syn_and_refreshes_the_detail_report(tmp_path):
    cfg, stats, audit, store, mgr, bus = _stack(tmp_path)
    flow, pkts = http_post_flow(b"A" * 500)
    flow.recorder = None
    record_flow(flow, [], cfg)
    f = closed_file(flow, b"A" * 500, name="drawing.pdf")
    for p in pkts[:4]:
        flow.recorder.add(p)
    bus.publish(alert_event(flow, pkts[3].ts, file=f))
    for p in pkts[4:]:
        flow.recorder.add(p)  # the pipeline keeps recording after the alert
    bus.publish(alert_event(flow, pkts[5].ts, sid=9200001, category="fingerprint-match", kind="fingerprint",
                            marker_id="", extra_lm={"fingerprint_id": "FP-77"}))
    bus.publish(flow_event(flow))
    mgr.wait_idle()
    inc = "INC-20231114-00001"
    ev = {e["name"]: e for e in mgr.db.evidence(inc)}
    assert set(ev) == {f"flow-{flow.flow_id}.pcap", f"flow-{flow.flow_id}.eve.jsonl", f"file-{f.file_id}.bin"}
    pcap = unseal(EV_KEY, inc, f"flow-{flow.flow_id}.pcap",
                  Path(store.incident_dir(inc), f"flow-{flow.flow_id}.pcap.enc").read_bytes())
    import hashlib
    import io

    import dpkt

    assert hashlib.sha256(pcap).hexdigest() == ev[f"flow-{flow.flow_id}.pcap"]["sha256"]
    frames = [buf for _, buf in dpkt.pcap.Reader(io.BytesIO(pcap))]
    assert frames == [p.data for p in pkts]
    eve = unseal(EV_KEY, inc, f"flow-{flow.flow_id}.eve.jsonl",
                 Path(store.incident_dir(inc), f"flow-{flow.flow_id}.eve.jsonl.enc").read_bytes()).decode()
    assert [json.loads(x)["event_type"] for x in eve.splitlines()] == ["alert", "alert", "flow"]
    detail = (Path(mgr.reports_dir) / inc / "detail_report.ja.md").read_text()
    assert ev[f"flow-{flow.flow_id}.pcap"]["sha256"] in detail
    assert "FP-77" in detail and "9200001:1" in detail and "詳細報告" in detail
    djson = json.loads((Path(mgr.reports_dir) / inc / "detail_report.json").read_text())
    assert [t["sid"] for t in djson["timeline"]] == [9100001, 9200001]
    assert djson["volume"]["bytes_out"] == flow.bytes[0] and djson["evidence"]["status"] == "stored"
    assert verify(audit.path, audit.key).ok


def test_sink_contains_errors(tmp_path):
    cfg, stats, audit, store, mgr, bus = _stack(tmp_path)
    flow, _ = http_post_flow()
    ev = alert_event(flow, T0)
    ev.body["alert"] = "not a dict"
    mgr(ev)
    assert stats.get("incidents.error") == 1


CRASH_CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    from pathlib import Path
    from alerts.audit import AuditLog
    from alerts.incidents import IncidentManager
    from monitor.events import EventBus
    from monitor.stats import Stats
    from tests.alerts.incident_factories import alert_event, http_post_flow, make_config
    cfg = make_config(Path({tmp!r}))
    stats = Stats()
    audit = AuditLog(cfg.audit, stats, base_dir=cfg.base_dir)
    mgr = IncidentManager(cfg, stats, None, audit, None, None)
    bus = EventBus(stats)
    bus.subscribe("incidents", mgr)
    bus.subscribe("audit", audit)
    i = 0
    while True:
        flow, _ = http_post_flow(server="203.0.113.%d" % (1 + i % 40), cport=40000 + i % 20000)
        bus.publish(alert_event(flow, 1_700_000_000.0 + i, sid=9100000 + i))
        print(9100000 + i, flush=True)   # the alert's transaction has committed
        i += 1
""")


def test_kill_9_loses_no_committed_alert(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", CRASH_CHILD.format(root=str(ROOT), tmp=str(tmp_path))],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    committed = []
    assert child.stdout is not None
    deadline = time.monotonic() + 60
    while len(committed) < 300 and time.monotonic() < deadline:
        line = child.stdout.readline()
        if not line:
            break
        committed.append(int(line))
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert len(committed) >= 300, child.stderr.read() if child.stderr else ""
    cfg = make_config(tmp_path)
    db_path = cfg.resolve(cfg.incidents.db)
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    sids = {r[0] for r in conn.execute("SELECT sid FROM alerts")}
    assert set(committed) <= sids
    # every stored alert belongs to an incident whose count matches its alerts
    bad = conn.execute("SELECT COUNT(*) FROM incidents i WHERE alert_count != "
                       "(SELECT COUNT(*) FROM alerts a WHERE a.incident_id = i.id)").fetchone()[0]
    assert bad == 0
    conn.close()
    audit = AuditLog(cfg.audit, Stats(), base_dir=cfg.base_dir)  # restart: the chain continues
    audit.record("sensor_start", {})
    rep = verify(audit.path, audit.key)
    assert rep.ok, [str(p) for p in rep.problems]
    audit_sids = {json.loads(x)["data"].get("signature_id") for x in Path(audit.path).read_text().splitlines()}
    assert set(committed[:-1]) <= audit_sids
    mgr = IncidentManager(cfg, Stats(), None, audit, None, None)
    assert sum(r["alert_count"] for r in mgr.db.query(limit=100000)) == len(sids)


def _cli_setup(tmp_path):
    cfg, stats, audit, store, mgr, bus = _stack(tmp_path)
    (tmp_path / "leakmon.yaml").write_text(textwrap.dedent("""
        sensor: {name: sensor-tokyo-1}
        evidence: {dir: evidence, key_file: evidence.key}
        incidents: {db: db/leakmon.db}
        audit: {path: audit/audit.jsonl}
    """))
    flow, pkts = http_post_flow()
    record_flow(flow, pkts, cfg)
    bus.publish(alert_event(flow, T0))
    f2, _ = http_post_flow(server="198.51.100.9")
    bus.publish(alert_event(f2, T0 + 30, sid=9100004))
    bus.publish(flow_event(flow))
    mgr.wait_idle()
    return str(tmp_path / "leakmon.yaml"), mgr, audit, flow


def test_cli_list_show_ack_close_export(tmp_path, capsys):
    conf, mgr, audit, flow = _cli_setup(tmp_path)
    run = cli_incidents.main
    assert run(["incidents", "list", "-c", conf, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["id"], r["dest"], r["sids"]) for r in rows] == [
        ("INC-20231114-00001", "203.0.113.7", [9100001]), ("INC-20231114-00002", "198.51.100.9", [9100004])]
    assert run(["incidents", "list", "-c", conf, "--json", "--sid", "9100004"]) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == ["INC-20231114-00002"]
    assert run(["incidents", "list", "-c", conf, "--json", "--host", "10.0.0.99"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert run(["incidents", "ack", "-c", conf, "INC-20231114-00001", "--by", "yamada", "--note", "確認"]) == 0
    assert "open -> acked" in capsys.readouterr().out
    assert run(["incidents", "close", "-c", conf, "INC-20231114-00001", "--by", "yamada"]) == 0
    assert run(["incidents", "close", "-c", conf, "INC-20231114-00001"]) == 1
    capsys.readouterr()
    assert run(["incidents", "list", "-c", conf, "--json", "--status", "closed"]) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == ["INC-20231114-00001"]
    assert run(["incidents", "show", "-c", conf, "INC-20231114-00001", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [h["new"] for h in shown["history"]] == ["acked", "closed"]
    assert {e["kind"] for e in shown["evidence"]} == {"pcap", "eve"}
    assert run(["incidents", "show", "-c", conf, "INC-20231114-00001", "--report", "detail"]) == 0
    md = capsys.readouterr().out
    assert "終結" in md and "yamada" in md and "確認" in md
    out = tmp_path / "exported"
    assert run(["incidents", "export", "-c", conf, "INC-20231114-00001", "--out", str(out)]) == 0
    assert sorted(os.listdir(out)) == ["detail_report.ja.md", "detail_report.json", "first_report.ja.md",
                                       "first_report.json"]
    assert run(["incidents", "show", "-c", conf, "INC-99"]) == 1
    states = [json.loads(x)["data"] for x in Path(audit.path).read_text().splitlines() if "incident_state" in x]
    assert [(s["old"], s["new"], s["by"]["name"]) for s in states] == [("open", "acked", "yamada"),
                                                                       ("acked", "closed", "yamada")]
    assert verify(audit.path, audit.key).ok


def test_cli_evidence_export_and_verify(tmp_path, capsys):
    conf, mgr, audit, flow = _cli_setup(tmp_path)
    run = cli_incidents.main
    out = tmp_path / "bundle"
    assert run(["evidence", "export", "-c", conf, "INC-20231114-00001", "--out", str(out)]) == 0
    assert sorted(os.listdir(out)) == ["custody.jsonl", f"flow-{flow.flow_id}.eve.jsonl",
                                       f"flow-{flow.flow_id}.pcap", "manifest.json"]
    assert run(["evidence", "verify", "-c", conf, str(out)]) == 0
    assert "VERIFIED" in capsys.readouterr().out
    (tmp_path / "recipient.key").write_bytes(os.urandom(32))
    out2 = tmp_path / "bundle2"
    assert run(["evidence", "export", "-c", conf, "INC-20231114-00001", "--out", str(out2),
                "--reencrypt-key", str(tmp_path / "recipient.key")]) == 0
    assert run(["evidence", "verify", "-c", conf, str(out2), "--key", str(tmp_path / "recipient.key")]) == 0
    p = out / f"flow-{flow.flow_id}.pcap"
    data = p.read_bytes()
    p.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    capsys.readouterr()
    assert run(["evidence", "verify", "-c", conf, str(out)]) == 1
    assert f"FAIL  flow-{flow.flow_id}.pcap: SHA-256 differs from the manifest" in capsys.readouterr().out
    custody = [json.loads(x) for x in (out / "custody.jsonl").read_text().splitlines()]
    assert [c["action"] for c in custody] == ["created", "exported", "verified", "verified"]
    assert [c["detail"].get("ok") for c in custody[2:]] == [True, False]
    text = Path(audit.path).read_text()
    assert text.count('"type":"evidence_exported"') == 2 and text.count('"type":"evidence_verified"') == 3
    assert verify(audit.path, audit.key).ok


def test_evidence_db_has_no_entries_when_disabled_and_report_says_so(tmp_path, monkeypatch):
    from monitor.config import EvidenceConfig

    monkeypatch.delenv("LEAKMON_EVIDENCE_KEY", raising=False)
    cfg, stats, audit, store, mgr, bus = _stack(tmp_path, evidence=EvidenceConfig(dir="evidence", key_file=""))
    flow, pkts = http_post_flow()
    record_flow(flow, pkts, cfg)
    bus.publish(alert_event(flow, T0))
    bus.publish(flow_event(flow))
    mgr.wait_idle()
    md = (Path(mgr.reports_dir) / "INC-20231114-00001" / "first_report.ja.md").read_text()
    assert "保存されていない（証拠の暗号鍵が未設定）" in md
    assert stats.get("evidence.not_stored", reason="disabled") == 1


@pytest.mark.parametrize("lang,word", [("en", "first report"), ("ja", "第一報")])
def test_language_switch(tmp_path, lang, word):
    from monitor.config import IncidentsConfig

    cfg, stats, audit, store, mgr, bus = _stack(tmp_path, incidents=IncidentsConfig(db="db/x.db", language=lang))
    flow, _ = http_post_flow()
    bus.publish(alert_event(flow, T0))
    mgr.wait_idle()
    md = (Path(mgr.reports_dir) / "INC-20231114-00001" / f"first_report.{lang}.md").read_text()
    assert word in md


def test_db_is_wal_and_private(tmp_path):
    cfg, stats, audit, store, mgr, bus = _stack(tmp_path)
    db = IncidentDB(mgr.db_path)
    assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert os.stat(mgr.db_path).st_mode & 0o077 == 0


def test_outputs_of_an_incident_carry_no_protected_content(tmp_path, capsys):
    """Packets and the file carry the marker (CP932) and protected bytes; every output but the sealed
    evidence is scanned for them (reports, database + WAL, audit log, manifests, custody, CLI output)."""
    from tests.alerts.leakscan import assert_no_leak

    marker = "試作機XK7仕様"
    doc = ("前置き" + marker + "本文" * 200).encode("cp932")
    cfg, stats, audit, store, mgr, bus = _stack(tmp_path)
    flow, pkts = http_post_flow(doc)
    record_flow(flow, pkts, cfg)
    f = closed_file(flow, doc, name="spec.docx")
    bus.publish(alert_event(flow, pkts[3].ts, file=f, signature="document control number",
                            context="前置き■■■■■■■本文"))
    bus.publish(flow_event(flow))
    mgr.wait_idle()
    (tmp_path / "leakmon.yaml").write_text("evidence: {dir: evidence, key_file: evidence.key}\n"
                                           "incidents: {db: db/leakmon.db}\naudit: {path: audit/audit.jsonl}\n")
    conf = str(tmp_path / "leakmon.yaml")
    for argv in (["incidents", "show", "-c", conf, "INC-20231114-00001", "--json"],
                 ["incidents", "show", "-c", conf, "INC-20231114-00001", "--report", "detail"],
                 ["audit", "verify", "-c", conf]):
        assert cli_incidents.main(argv) == 0
    out = capsys.readouterr()
    cov = assert_no_leak(markers=[marker], files=[doc], trees=[tmp_path],
                         texts={"stdout": out.out, "stderr": out.err})
    assert len([s for s in cov["skipped"] if s.startswith("evidence/")]) == 3  # pcap, eve, file: sealed
    assert {"db/leakmon.db", "audit/audit.jsonl", "db/reports/INC-20231114-00001/first_report.ja.md",
            "evidence/INC-20231114-00001/manifest.json"} <= set(cov["scanned"])
    # and the sealed evidence does hold them (the scan is not vacuous)
    bundle = tmp_path / "bundle"
    store.export("INC-20231114-00001", str(bundle))
    with pytest.raises(AssertionError, match="file\\[0\\]"):
        assert_no_leak(files=[doc], trees=[bundle])


def test_eve_tail_reader_finds_the_alerts_after_the_last_known_one_across_blocks_and_a_torn_line(tmp_path):
    from alerts.incidents import _eve_alert_tail, alert_key

    def alert(i: int) -> dict:
        return {"timestamp": f"2023-11-14T22:13:{i % 60:02d}.000000+0000", "flow_id": i, "pcap_cnt": i,
                "event_type": "alert", "alert": {"signature_id": 9100001, "category": "protected-data-leak"},
                "leakmon": {"kind": "marker", "where": "http.request.body"}}

    filler = {"event_type": "flow", "pad": "x" * 5000}
    lines = []
    for i in range(600):  # ~3 MiB: the reader crosses several 1 MiB blocks
        lines.append(json.dumps(alert(i), separators=(",", ":")))
        lines.append(json.dumps(filler, separators=(",", ":")))
    path = tmp_path / "eve.json"
    torn = json.dumps(alert(600), separators=(",", ":"))[:40]
    path.write_text("\n".join(lines) + "\n" + torn)
    known = {alert_key(alert(i)) for i in range(450)}
    found, capped = _eve_alert_tail(str(path), 0, known.__contains__, 64 << 20)
    assert not capped
    assert [r["flow_id"] for r in found] == list(range(450, 600))  # oldest first; the torn line is no record
    # the scan never goes below the session's start offset, nor past its byte budget
    start = len("\n".join(lines[:1100])) + 1
    found, _ = _eve_alert_tail(str(path), start, lambda k: False, 64 << 20)
    assert [r["flow_id"] for r in found] == list(range(550, 600))
    found, capped = _eve_alert_tail(str(path), 0, lambda k: False, 1 << 20)
    assert capped and 0 < len(found) < 600
