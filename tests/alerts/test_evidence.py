"""Evidence: per-flow recorder bounds, AES-256-GCM sealing, manifest, export, verify, custody."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import dpkt
import pytest

from alerts.audit import AuditLog
from alerts.eve import eve_record
from alerts.evidence import (
    EvidenceKeyError,
    EvidenceStore,
    FlowEvidence,
    FlowRecorder,
    key_id,
    load_key,
    seal,
    unseal,
    verify_dir,
)
from alerts.schema import validate_lines
from monitor.config import EvidenceConfig
from monitor.model import LINKTYPE_ETHERNET, LINKTYPE_RAW, RawPacket
from monitor.stats import Stats
from tests.alerts.incident_factories import (
    EV_KEY,
    closed_file,
    flow_event,
    http_post_flow,
    make_config,
    record_flow,
)

SECRET = "保護すべき情報 の本文".encode("cp932") * 20


def _pcap_packets(data: bytes) -> list[tuple[float, bytes]]:
    import io

    return [(ts, buf) for ts, buf in dpkt.pcap.Reader(io.BytesIO(data))]


def test_recorder_keeps_the_head_then_a_rolling_tail_and_counts_the_rest():
    rec = FlowRecorder(EvidenceConfig(ring_packets=16, ring_bytes=100_000))
    for i in range(30):
        rec.add(RawPacket(ts=float(i), linktype=1, data=bytes([i]) * 100, pcap_cnt=i + 1))
    # head: packets 0..15; tail: the newest (two half-windows of ring_packets // 8); the rest dropped.
    assert [int(t) for t, _, _ in rec.packets()] == list(range(16)) + [28, 29]
    assert (rec.dropped, rec.dropped_bytes) == (12, 1200)
    rec.add(RawPacket(ts=30.0, linktype=1, data=b"e" * 100, pcap_cnt=31))
    assert [int(t) for t, _, _ in rec.packets()][16:] == [28, 29, 30]
    assert rec.head_bytes == 1600 and rec.tail_bytes == 300


def test_recorder_byte_budget_bounds_memory():
    rec = FlowRecorder(EvidenceConfig(ring_packets=1000, ring_bytes=8000))
    for i in range(100):
        rec.add(RawPacket(ts=float(i), linktype=1, data=b"z" * 1000, pcap_cnt=i + 1))
    assert len(rec.head) == 8 and rec.head_bytes == 8000
    assert [p.pcap_cnt for p in rec.tail] == [100] and rec.tail_bytes == 1000
    assert rec.dropped == 91
    assert rec.head_bytes + rec.tail_bytes <= 1.25 * 8000


def test_seal_binds_key_incident_and_name():
    blob = seal(EV_KEY, "INC-1", "flow-1.pcap", b"payload")
    assert b"payload" not in blob
    assert unseal(EV_KEY, "INC-1", "flow-1.pcap", blob) == b"payload"
    for key, inc, name in ((b"\x01" * 32, "INC-1", "flow-1.pcap"), (EV_KEY, "INC-2", "flow-1.pcap"),
                           (EV_KEY, "INC-1", "flow-2.pcap")):
        with pytest.raises(ValueError, match="authentication failed"):
            unseal(key, inc, name, blob)
    flipped = bytearray(blob)
    flipped[-20] ^= 1
    with pytest.raises(ValueError):
        unseal(EV_KEY, "INC-1", "flow-1.pcap", bytes(flipped))
    # A fresh nonce per file: the same plaintext never gives the same ciphertext.
    assert seal(EV_KEY, "INC-1", "a", b"x") != seal(EV_KEY, "INC-1", "a", b"x")


def test_key_sources_and_errors(tmp_path, monkeypatch):
    (tmp_path / "raw.key").write_bytes(EV_KEY)
    (tmp_path / "hex.key").write_text(EV_KEY.hex() + "\n")
    (tmp_path / "bad.key").write_text("too short")
    assert load_key(EvidenceConfig(key_file="raw.key"), str(tmp_path)) == EV_KEY
    assert load_key(EvidenceConfig(key_file="hex.key"), str(tmp_path)) == EV_KEY
    with pytest.raises(EvidenceKeyError, match="32 raw bytes or 64 hex"):
        load_key(EvidenceConfig(key_file="bad.key"), str(tmp_path))
    monkeypatch.setenv("LM_TEST_EVKEY", EV_KEY.hex())
    assert load_key(EvidenceConfig(key_env="LM_TEST_EVKEY"), str(tmp_path)) == EV_KEY
    monkeypatch.delenv("LM_TEST_EVKEY")
    assert load_key(EvidenceConfig(key_env="LM_TEST_EVKEY"), str(tmp_path)) is None


def test_missing_key_disables_evidence_loudly(tmp_path, caplog):
    cfg = make_config(tmp_path, evidence=EvidenceConfig(dir="evidence", key_file="", key_env="LM_TEST_NOKEY"))
    stats = Stats()
    audit = AuditLog(cfg.audit, stats, base_dir=cfg.base_dir)
    store = EvidenceStore(cfg, stats, audit)
    assert not store.enabled
    assert "EVIDENCE DISABLED" in caplog.text and "LM_TEST_NOKEY" in caplog.text
    assert stats.get("evidence.enabled") == 0 and stats.get("evidence.disabled", reason="no_key") == 1
    assert "evidence_disabled" in Path(audit.path).read_text()
    flow, pkts = http_post_flow()
    assert store.submit(FlowEvidence(["INC-1"], flow.flow_id, [], 0, 0, [], [])) is False
    assert stats.get("evidence.not_stored", reason="disabled") == 1
    assert not os.path.exists(store.dir)


def _stored(tmp_path, *, files=(), linktypes=None):
    cfg = make_config(tmp_path)
    stats = Stats()
    audit = AuditLog(cfg.audit, stats, base_dir=cfg.base_dir)
    store = EvidenceStore(cfg, stats, audit)
    flow, pkts = http_post_flow(SECRET)
    if linktypes:
        pkts = [dataclasses.replace(p, linktype=lt) if lt == LINKTYPE_ETHERNET else
                dataclasses.replace(p, linktype=lt, data=p.data[14:]) for p, lt in zip(pkts, linktypes, strict=True)]
    rec = record_flow(flow, pkts, cfg)
    rec.note(flow_event(flow))
    records = [eve_record(e, cfg.sensor.name) for e in rec.events]
    done = []
    store.submit(FlowEvidence(["INC-20231114-00001"], flow.flow_id, rec.packets(), rec.dropped, rec.dropped_bytes,
                              records, list(files), done=lambda inc, entries: done.append((inc, entries))))
    store.flush()
    return cfg, store, audit, flow, pkts, done


def test_store_writes_encrypted_pcap_eve_and_file_with_manifest(tmp_path):
    flow0, _ = http_post_flow()
    f = closed_file(flow0, SECRET)
    cfg, store, audit, flow, pkts, done = _stored(tmp_path, files=[f])
    d = Path(store.incident_dir("INC-20231114-00001"))
    names = sorted(os.listdir(d))
    assert names == ["custody.jsonl", f"file-{f.file_id}.bin.enc", f"flow-{flow.flow_id}.eve.jsonl.enc",
                     f"flow-{flow.flow_id}.pcap.enc", "manifest.json"]
    for n in names:
        assert SECRET[:40] not in (d / n).read_bytes()
        assert os.stat(d / n).st_mode & 0o077 == 0
    m = json.loads((d / "manifest.json").read_text())
    assert m["encryption"] == "AES-256-GCM" and m["key_id"] == key_id(EV_KEY)
    by = {e["name"]: e for e in m["files"]}
    pcap = unseal(EV_KEY, "INC-20231114-00001", f"flow-{flow.flow_id}.pcap",
                  (d / f"flow-{flow.flow_id}.pcap.enc").read_bytes())
    assert hashlib.sha256(pcap).hexdigest() == by[f"flow-{flow.flow_id}.pcap"]["sha256"]
    got = _pcap_packets(pcap)
    assert [buf for _, buf in got] == [p.data for p in pkts]
    assert [round(ts, 6) for ts, _ in got] == [round(p.ts, 6) for p in pkts]
    first = dpkt.ethernet.Ethernet(got[0][1])
    assert first.data.data.flags == dpkt.tcp.TH_SYN  # the whole flow, from its SYN
    content = unseal(EV_KEY, "INC-20231114-00001", f"file-{f.file_id}.bin",
                     (d / f"file-{f.file_id}.bin.enc").read_bytes())
    assert content == SECRET and by[f"file-{f.file_id}.bin"]["sha256"] == f.sha256
    eve = unseal(EV_KEY, "INC-20231114-00001", f"flow-{flow.flow_id}.eve.jsonl",
                 (d / f"flow-{flow.flow_id}.eve.jsonl.enc").read_bytes()).decode()
    recs = validate_lines(eve)
    assert [r["event_type"] for r in recs] == ["flow"] and recs[0]["flow_id"] == flow.flow_id
    custody = [json.loads(x) for x in (d / "custody.jsonl").read_text().splitlines()]
    assert custody[0]["action"] == "created" and custody[0]["by"]["user"] and custody[0]["by"]["host"]
    assert done and done[0][0] == "INC-20231114-00001" and len(done[0][1]) == 3
    msha = hashlib.sha256((d / "manifest.json").read_bytes()).hexdigest()
    assert f'"manifest_sha256":"{msha}"' in Path(audit.path).read_text()
    assert verify_dir(str(d), EV_KEY)[0] == []


def test_mixed_linktypes_give_one_pcap_each(tmp_path):
    lts = [LINKTYPE_ETHERNET] * 4 + [LINKTYPE_RAW] * 5
    cfg, store, audit, flow, pkts, _ = _stored(tmp_path, linktypes=lts)
    m = store.manifest("INC-20231114-00001")
    pcaps = {e["name"]: e for e in m["files"] if e["kind"] == "pcap"}
    assert set(pcaps) == {f"flow-{flow.flow_id}-lt1.pcap", f"flow-{flow.flow_id}-lt101.pcap"}
    assert pcaps[f"flow-{flow.flow_id}-lt1.pcap"]["packets"] == 4
    raw = unseal(EV_KEY, "INC-20231114-00001", f"flow-{flow.flow_id}-lt101.pcap",
                 Path(store.incident_dir("INC-20231114-00001"), f"flow-{flow.flow_id}-lt101.pcap.enc").read_bytes())
    assert raw[20:24] == (101).to_bytes(4, "little") and len(_pcap_packets(raw)) == 5


@pytest.mark.tshark
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_exported_pcap_reads_in_tshark_from_the_syn(tmp_path):
    cfg, store, audit, flow, pkts, _ = _stored(tmp_path)
    out = tmp_path / "bundle"
    store.export("INC-20231114-00001", str(out))
    r = subprocess.run(["tshark", "-r", str(out / f"flow-{flow.flow_id}.pcap"), "-T", "fields", "-e", "tcp.flags.str",
                        "-e", "http.request.method"], capture_output=True, text=True, check=True)
    rows = [line.split("\t") for line in r.stdout.splitlines()]
    assert len(rows) == len(pkts) == 9
    assert "S" in rows[0][0] and "A" not in rows[0][0].replace("·", "")  # SYN only
    assert any(row[1] == "POST" for row in rows)


def test_export_decrypted_and_reencrypted_bundles_verify(tmp_path):
    cfg, store, audit, flow, pkts, _ = _stored(tmp_path)
    plain = tmp_path / "plain"
    b = store.export("INC-20231114-00001", str(plain))
    assert b["encryption"] == "none"
    problems, checked = verify_dir(str(plain))
    assert problems == [] and len(checked) == 2
    assert (plain / f"flow-{flow.flow_id}.pcap").read_bytes()[:4] == b"\xd4\xc3\xb2\xa1"
    rk = os.urandom(32)
    enc = tmp_path / "enc"
    b2 = store.export("INC-20231114-00001", str(enc), reencrypt_key=rk)
    assert b2["key_id"] == key_id(rk)
    assert verify_dir(str(enc), rk)[0] == []
    assert all("no key" in c for c in verify_dir(str(enc))[1])
    assert verify_dir(str(enc), EV_KEY)[0]  # the store key does not open the recipient's bundle
    custody = [json.loads(x)["action"] for x in (enc / "custody.jsonl").read_text().splitlines()]
    assert custody == ["created", "exported", "exported"]
    assert Path(audit.path).read_text().count('"type":"evidence_exported"') == 2


def test_verify_names_the_tampered_file_and_custody_edits(tmp_path):
    cfg, store, audit, flow, pkts, _ = _stored(tmp_path)
    plain = tmp_path / "plain"
    store.export("INC-20231114-00001", str(plain))
    p = plain / f"flow-{flow.flow_id}.pcap"
    data = bytearray(p.read_bytes())
    data[100] ^= 0xFF
    p.write_bytes(bytes(data))
    (plain / "extra.txt").write_text("x")
    problems, _ = verify_dir(str(plain))
    assert f"flow-{flow.flow_id}.pcap: SHA-256 differs from the manifest" in problems
    assert "extra.txt: not listed in the manifest" in problems
    d = Path(store.incident_dir("INC-20231114-00001"))
    lines = (d / "custody.jsonl").read_text().splitlines()
    lines[0] = lines[0].replace('"created"', '"createD"')
    (d / "custody.jsonl").write_text("\n".join(lines) + "\n")
    assert "custody.jsonl:2: chain broken (a line before it was edited or removed)" in verify_dir(str(d), EV_KEY)[0]


def test_export_refuses_a_tampered_store(tmp_path):
    cfg, store, audit, flow, pkts, _ = _stored(tmp_path)
    d = Path(store.incident_dir("INC-20231114-00001"))
    enc = d / f"flow-{flow.flow_id}.pcap.enc"
    data = bytearray(enc.read_bytes())
    data[-1] ^= 1
    enc.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="ciphertext hash differs"):
        store.export("INC-20231114-00001", str(tmp_path / "out"))
    assert f"flow-{flow.flow_id}.pcap.enc: ciphertext SHA-256 differs from the manifest" in verify_dir(str(d), EV_KEY)[0]
