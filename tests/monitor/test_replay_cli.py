"""`leakmon replay` end to end on the sample capture (real curl uploads), 1 and 2 workers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from alerts.schema import validate_lines
from tests.factories import sample_config

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "pcaps" / "sample-leak-http.pcap"
LEAK_PORTS = {41626, 41632, 41634}  # multipart Shift_JIS file, JSON \\u escapes, urlencoded form
BENIGN_PORT = 41612  # GET /index.html




def replay(tmp_path: Path, *extra: str) -> tuple[list[dict], str]:
    eve = tmp_path / "eve.json"
    r = subprocess.run([sys.executable, "-m", "monitor", "replay", str(SAMPLE), "-c", str(sample_config(tmp_path)),
                        "--eve-log", str(eve), *extra], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    return validate_lines(eve.read_text(encoding="utf-8")), r.stderr


def leak_alerts(records: list[dict]) -> set[tuple[int, int]]:
    return {(r["src_port"], r["alert"]["signature_id"]) for r in records
            if r["event_type"] == "alert" and r["alert"]["category"] == "protected-data-leak"}


def test_replay_sample_alerts_exactly_the_leaking_flows(tmp_path):
    records, stderr = replay(tmp_path)
    assert leak_alerts(records) == {(p, 9100001) for p in LEAK_PORTS}
    flows = [r for r in records if r["event_type"] == "flow"]
    assert len(flows) == 4
    by_port = {r["src_port"]: r for r in flows}
    assert by_port[BENIGN_PORT]["flow"]["alerted"] is False
    assert all(by_port[p]["flow"]["alerted"] for p in LEAK_PORTS)
    # Every event of a flow carries the same flow_id and community_id.
    for r in records:
        if "flow_id" in r:
            assert r["community_id"] == next(f["community_id"] for f in flows if f["flow_id"] == r["flow_id"])
    files = {r["fileinfo"]["filename"]: r["fileinfo"] for r in records if r["event_type"] == "fileinfo"}
    assert files["図面一覧.txt"]["sha256"] == "c00318df3fe7249de0d3798a60e273baac7d821315849ea14bc4066804e844de"
    stats = [r for r in records if r["event_type"] == "stats"]
    assert len(stats) == 1 and stats[0]["stats"]["flow"]["created"] == 4
    assert "50 packets" in stderr


def test_two_workers_give_the_same_results(tmp_path):
    one, _ = replay(tmp_path / "w1")
    two, _ = replay(tmp_path / "w2", "--workers", "2")
    key = lambda rs: sorted((r["event_type"], r.get("src_port"), r.get("alert", {}).get("signature_id"))  # noqa: E731
                            for r in rs if r["event_type"] != "stats")
    assert key(one) == key(two)
    stats = [r for r in two if r["event_type"] == "stats"]
    assert len(stats) == 1 and stats[0]["stats"]["workers"] == 2


def test_adhoc_literal_hunt(tmp_path):
    records, _ = replay(tmp_path, "--literal", "社外への持ち出し")
    hunted = {(r["src_port"], r["alert"]["signature_id"]) for r in records if r["event_type"] == "alert"
              and r["alert"]["signature_id"] == 9900001}
    assert hunted == {(41626, 9900001)}


def test_missing_capture_is_a_clean_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "monitor", "replay", str(tmp_path / "nope.pcap"), "-c",
                        str(sample_config(tmp_path))], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert "nope.pcap" in r.stderr


@pytest.mark.parametrize("workers", ["1"])
def test_eve_to_stdout_is_json_lines(tmp_path, workers):
    r = subprocess.run([sys.executable, "-m", "monitor", "replay", str(SAMPLE), "-c", str(sample_config(tmp_path)),
                        "--eve-log", "-", "--workers", workers], capture_output=True, text=True, cwd=ROOT,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    recs = validate_lines(r.stdout)
    assert {json.dumps(x["event_type"]) for x in recs} >= {'"alert"', '"flow"', '"http"', '"fileinfo"', '"stats"'}
