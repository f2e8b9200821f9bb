"""bench/precision.py and bench/leakcheck.py on small generated captures (issue 4's precision check).

The full run (1 GiB benign) is a benchmark, recorded in docs/benchmarks.md; here the same
script runs on a few MB: benign traffic raises nothing, every known leak flow of the leaky
capture alerts with its sid, and a capture with leaks passed off as benign makes it fail.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.leakcheck import check_recall, flow_key, summarize

ROOT = Path(__file__).resolve().parents[2]
PRECISION = ROOT / "bench" / "precision.py"

pytestmark = pytest.mark.slow


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(PRECISION), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=240)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    tmp = tmp_path_factory.mktemp("precision")
    proc = _run("--size", "4MiB", "--leaky-size", "6MiB", "--leak-every", "5", "--data", str(tmp / "data"),
                "--keep-eve", str(tmp / "eve"), "--json", str(tmp / "result.json"))
    return proc, tmp


def test_benign_raises_nothing_and_every_leak_flow_alerts(small_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, tmp = small_run
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    res = json.loads((tmp / "result.json").read_text())
    benign, leaky = res["benign"], res["leaky"]
    assert "PRECISION PASS: 0 leak alerts, 0 inbound findings" in proc.stdout
    assert benign["leak_alerts"] == 0 and benign["findings"] == 0 and benign["alerts_by_category"] == {}
    events = benign["events"]  # the traffic was decoded: flows, transactions and files were written
    assert events["flow"] > 10 and events["fileinfo"] > 10
    assert {"http", "smtp", "ftp", "tls", "dns"} <= set(events)
    leaks = json.loads((tmp / "data" / "leaky-6MiB-every5.pcap.leaks.json").read_text())["leaks"]
    assert len(leaks) == leaky["expected"] >= 3
    assert leaky["found"] == leaky["expected"] and leaky["unexpected"] == 0
    assert set(leaky["leak_kinds"]) == {"http-upload", "smtp"}
    assert f"RECALL PASS: leaks: {len(leaks)}/{len(leaks)} known leak flows alerted" in proc.stdout
    # the kept EVE file has sid 9100001 on exactly the listed flows
    s = summarize(tmp / "eve" / "leaky.eve.json")
    assert {h.flow for h in s.leak_alerts if h.sid == 9100001} == {
        flow_key(x["src_ip"], x["src_port"], x["dest_ip"], x["dest_port"]) for x in leaks}


def test_leaks_passed_off_as_benign_fail_the_check(small_run: tuple[subprocess.CompletedProcess[str], Path],
                                                   tmp_path: Path) -> None:
    _, tmp = small_run
    data = tmp_path / "data"
    data.mkdir()
    src = tmp / "data" / "leaky-6MiB-every5.pcap"
    shutil.copy(src, data / "benign-6MiB.pcap")
    shutil.copy(str(src) + ".leaks.json", data / "benign-6MiB.pcap.leaks.json")
    proc = _run("--only", "benign", "--size", "6MiB", "--data", str(data))
    assert proc.returncode == 1
    assert "PRECISION FAIL" in proc.stdout
    assert "FALSE POSITIVE: alert sid 9100001 [protected-data-leak]" in proc.stdout


def test_generator_is_reproducible(tmp_path: Path) -> None:
    digests = []
    for i in range(2):
        out = tmp_path / f"g{i}.pcap"
        subprocess.run([sys.executable, str(ROOT / "bench" / "gen.py"), "mixed", "--size", "1MiB", "--no-leaks",
                        "-o", str(out)], check=True, capture_output=True)
        digests.append(hashlib.sha256(out.read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def _alert(src: str, sport: int, dst: str, dport: int, sid: int, category: str = "protected-data-leak") -> str:
    return json.dumps({"event_type": "alert", "src_ip": src, "src_port": sport, "dest_ip": dst, "dest_port": dport,
                       "alert": {"signature_id": sid, "category": category},
                       "leakmon": {"where": "raw-stream", "variant": "utf-8"}})


def test_recall_counts_missed_and_unexpected_flows(tmp_path: Path) -> None:
    eve = tmp_path / "eve.json"
    eve.write_text("\n".join([
        _alert("10.0.0.1", 40000, "198.18.0.1", 80, 9100001),
        _alert("198.18.0.2", 25, "10.0.0.2", 40001, 9000001, "plaintext-transmission"),  # other way round
        _alert("10.0.0.3", 40002, "198.18.0.3", 443, 9000003, "weak-crypto"),  # not a leak category
        json.dumps({"event_type": "flow", "src_ip": "10.0.0.9"}),
    ]) + "\n")
    s = summarize(eve)
    assert s.leak_alert_count == 2 and s.alerts_by_category["weak-crypto"] == 1
    assert s.events == {"alert": 3, "flow": 1}
    leaks = [{"kind": "http-upload", "src_ip": "10.0.0.1", "src_port": 40000, "dest_ip": "198.18.0.1",
              "dest_port": 80, "sid": 9100001},
             {"kind": "smtp", "src_ip": "10.0.0.4", "src_port": 40004, "dest_ip": "198.18.0.4",
              "dest_port": 25, "sid": 9100001}]
    rec = check_recall(s, leaks)
    assert rec.found == 1 and rec.missed == [leaks[1]]
    assert [h.flow for h in rec.unexpected] == [flow_key("10.0.0.2", 40001, "198.18.0.2", 25)]
    assert not rec.ok
    assert rec.line() == "leaks: 1/2 known leak flows alerted, 1 leak alerts on other flows"
