"""CI's benchmark smoke: `bench/run --smoke --workers 1 2` end to end (issue 6).

One run (module fixture, about a minute on a loaded 2-core machine) generates the two smoke
captures into a temporary folder, replays them with 1 and 2 workers, measures the installed
peers and the bare matcher, and keeps leakmon's EVE output. The tests check what it printed
(a Gbps figure for leakmon, a ratio for every peer that is installed, "missing" for the
others) and, independently of bench/run's own check, that each known leak flow of the smoke
capture (bench/gen.py's <capture>.leaks.json) raised its alert in the EVE output, and no
other flow raised a leak alert.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from alerts.schema import validate_lines

ROOT = Path(__file__).resolve().parents[2]
PEERS = ("tcpdump", "ngrep", "tshark")
LEAK_CATEGORIES = {"protected-data-leak", "fingerprint-match", "partial-document-match", "plaintext-transmission"}
NUMBER = r"[0-9]+(?:\.[0-9]+)?(?:e[-+][0-9]+)?"

pytestmark = pytest.mark.slow


class SmokeRun:
    def __init__(self, stdout: str, results: list[dict], data: Path, eve: Path) -> None:
        self.stdout = stdout
        self.results = {r["capture"]: r for r in results}
        self.data = data
        self.eve = eve

    def table(self, capture: str) -> dict[str, list[str]]:
        """tool -> its row's columns (wall, cpu, Gbps, pkts/s, RSS, ratio), for one capture's table."""
        section = self.stdout.split(f"== {capture}:", 1)[1].split("\n== ", 1)[0]
        rows = {}
        for line in section.splitlines()[2:]:
            cols = line.split()
            if len(cols) == 7 and all(re.fullmatch(NUMBER, c) for c in cols[1:]):
                rows[cols[0]] = cols[1:]
        return rows


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> SmokeRun:
    tmp = tmp_path_factory.mktemp("bench-smoke")
    data, eve, out = tmp / "data", tmp / "eve", tmp / "results.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "run"), "--smoke", "--workers", "1", "2",
                           "--data", str(data), "--keep-eve", str(eve), "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return SmokeRun(proc.stdout, json.loads(out.read_text()), data, eve)


@pytest.mark.parametrize("capture", ["smoke-mixed", "smoke-small"])
def test_prints_leakmon_gbps_for_each_worker_count(smoke: SmokeRun, capture: str) -> None:
    rows = smoke.table(capture)
    for w in (1, 2):
        wall, cpu, gbps, pps, _rss, _ratio = (float(c) for c in rows[f"leakmon-w{w}"])
        assert wall > 0 and cpu > 0 and pps > 0
        assert gbps > 0
        assert gbps == pytest.approx(smoke.results[capture]["runs"][f"leakmon-w{w}"]["gbps"], rel=0.01)
    assert smoke.results[capture]["packets"] > 1000


@pytest.mark.parametrize("capture", ["smoke-mixed", "smoke-small"])
def test_prints_a_ratio_for_each_available_peer(smoke: SmokeRun, capture: str) -> None:
    rows = smoke.table(capture)
    w1_wall = float(rows["leakmon-w1"][0])
    for peer in (*PEERS, "matcher"):
        if peer != "matcher" and shutil.which(peer) is None:
            assert f"missing peer: {peer}" in smoke.stdout
            assert peer not in rows
            continue
        wall, ratio = float(rows[peer][0]), float(rows[peer][5])
        assert ratio > 0
        # the ratio is leakmon's speed over the peer's: peer wall time / leakmon wall time
        assert ratio == pytest.approx(wall / w1_wall, rel=0.01)
    tshark = smoke.results[capture]["runs"].get("tshark")
    if tshark is not None:  # exact peak RSS via GNU time, not the bench process's own size
        assert tshark["peak_rss_mib"] != smoke.results[capture]["runs"]["tcpdump"]["peak_rss_mib"]


def _flow(ev_or_leak: dict) -> frozenset[tuple[str, int]]:
    d = ev_or_leak
    return frozenset({(d["src_ip"], int(d["src_port"])), (d["dest_ip"], int(d["dest_port"]))})


@pytest.mark.parametrize("workers", [1, 2])
def test_known_leak_flows_raise_their_alerts(smoke: SmokeRun, workers: int) -> None:
    leaks = json.loads((smoke.data / "smoke-mixed.pcap.leaks.json").read_text())["leaks"]
    assert len(leaks) >= 1  # --leak-every 10 in the smoke profile
    events = validate_lines((smoke.eve / f"smoke-mixed-w{workers}.eve.json").read_text(encoding="utf-8"))
    alerts = [e for e in events if e["event_type"] == "alert"]
    by_flow: dict[frozenset[tuple[str, int]], set[int]] = {}
    for a in alerts:
        assert a["alert"]["category"] in LEAK_CATEGORIES
        by_flow.setdefault(_flow(a), set()).add(a["alert"]["signature_id"])
    for leak in leaks:
        assert leak["sid"] in by_flow.get(_flow(leak), set()), f"no alert for {leak}"
    assert set(by_flow) == {_flow(x) for x in leaks}  # and no other flow alerted
    # a leak alert names the protected client and says the data went out
    for a in alerts:
        assert a["leakmon"]["direction"] == "outbound"
        assert a["src_ip"].startswith("10.") or a["dest_ip"].startswith("10.")
    assert smoke.results["smoke-mixed"]["leaks"][f"leakmon-w{workers}"] == {
        "expected": len(leaks), "found": len(leaks), "unexpected": 0, "ok": True,
        "line": f"leaks: {len(leaks)}/{len(leaks)} known leak flows alerted, 0 leak alerts on other flows"}


def test_small_capture_raises_no_alert(smoke: SmokeRun) -> None:
    for w in (1, 2):
        events = validate_lines((smoke.eve / f"smoke-small-w{w}.eve.json").read_text(encoding="utf-8"))
        assert not [e for e in events if e["event_type"] == "alert"]
        assert any(e["event_type"] == "flow" for e in events)
