"""Live sensor with two workers: ``leakmon run --workers 2`` on a veth while real curl uploads run.

The kernel spreads flows over the two workers (PACKET_FANOUT, hash mode); the parent writes the
one EVE stream. After SIGINT the sensor must exit 0 having written whole, valid JSON lines, one
flow record per TCP connection, one alert for the one leaking upload, and a final stats record
that says two workers ran.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from alerts.schema import validate_lines
from pcaps.lab import Lab
from tests.conftest import needs_root_netns

pytestmark = [needs_root_netns(), pytest.mark.netns]

ROOT = Path(__file__).resolve().parents[2]
PORT = 8093
FIRST_CLIENT_PORT = 40310  # curl --local-port: each connection is known by its source port
SID_MARKER = 9100001
BODIES = [
    "Please find attached the minutes of yesterday's meeting.\n" * 40,
    "来週の打ち合わせは午後二時からに変更となりました。\n" * 40,
    "この文書は保護すべき情報を含みます。取り扱いに注意してください。\n" * 3,  # the leak
    "The shipment left the warehouse this morning.\n" * 200,
]
LEAK_INDEX = 2


def _config(tmp: Path) -> Path:
    doc = {
        "sensor": {"name": "e2e-live-workers"},
        "networks": {"protected": ["10.77.0.1/32"]},  # the lab client; the server is outside
        "signatures": [str(ROOT / "signatures")],
        # Many small blocks: a non-empty block is handed over after 20 ms however little it holds,
        # so the ring rides out a worker pause of blocks x 20 ms (1.3 s here) on a busy CI host.
        "capture": {"ring_block_size": "256 KiB", "ring_blocks": 64, "ring_block_timeout": "20ms"},
        "outputs": {"eve": {"path": str(tmp / "eve.json")}},
        "evidence": {"enabled": False},
        "metrics": {"addr": ""},
        "incidents": {"db": str(tmp / "incidents.db")},
        "audit": {"path": str(tmp / "audit.jsonl")},
        "coverage": {"path": str(tmp / "coverage.jsonl")},
    }
    path = tmp / "leakmon.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


def _ifindex(ns: str, iface: str) -> int:
    out = subprocess.run(["ip", "-n", ns, "-j", "link", "show", iface], capture_output=True, text=True, check=True)
    return int(json.loads(out.stdout)[0]["ifindex"])


def _bound_packet_sockets(pid: int, ifindex: int) -> int:
    """Packet sockets bound to the interface in pid's namespace (/proc/<pid>/net/packet: 5th column)."""
    try:
        rows = Path(f"/proc/{pid}/net/packet").read_text().splitlines()[1:]
    except OSError:
        return 0
    return sum(1 for r in rows if len(r.split()) > 4 and int(r.split()[4]) == ifindex)


def _process_tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                todo.extend(int(c) for c in Path(f"/proc/{p}/task/{task}/children").read_text().split())
    return out


def _wait_ready(proc: subprocess.Popen[bytes], ns: str, iface: str, workers: int, log: Path) -> None:
    index = _ifindex(ns, iface)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"leakmon exited early ({proc.returncode}): {log.read_text()[-2000:]}"
        if _bound_packet_sockets(proc.pid, index) >= workers:
            time.sleep(0.3)  # PACKET_FANOUT is joined right after bind()
            return
        time.sleep(0.1)
    raise AssertionError("leakmon workers did not open their capture sockets within 60 s")


def _stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
    """SIGINT like an operator's Ctrl-C; on a hang, kill the whole tree (no orphaned workers) and fail."""
    tree = _process_tree(proc.pid)
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        for pid in tree:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"leakmon --workers 2 did not exit within {timeout} s of SIGINT")


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_two_live_workers_write_one_clean_eve_stream(tmp_path: Path) -> None:
    config = _config(tmp_path)
    eve = tmp_path / "eve.json"
    log = tmp_path / "leakmon.log"
    for i, body in enumerate(BODIES):
        (tmp_path / f"body{i}.txt").write_text(body, encoding="utf-8")
    with Lab("lvwork") as lab, open(log, "wb") as log_fh:
        lab.server([sys.executable, str(ROOT / "pcaps" / "upload_server.py"), "0.0.0.0", str(PORT)])
        lab.wait_port(PORT)  # its probe connection ends before the sensor starts
        proc = subprocess.Popen(["ip", "netns", "exec", lab.sns, sys.executable, "-m", "monitor", "run",
                                 "-i", lab.sif, "-c", str(config), "--workers", "2", "--eve-log", str(eve)],
                                cwd=ROOT, stdout=log_fh, stderr=subprocess.STDOUT)
        try:
            _wait_ready(proc, lab.sns, lab.sif, 2, log)
            for i in range(len(BODIES)):
                out = lab.client(["curl", "-s", "--http1.1", "--local-port", str(FIRST_CLIENT_PORT + i),
                                  "-o", "/dev/null", "-w", "%{http_code}",
                                  "-H", "Content-Type: text/plain; charset=utf-8",
                                  "--data-binary", f"@{tmp_path / f'body{i}.txt'}",
                                  f"http://{lab.server_ip}:{PORT}/upload"])
                assert out.stdout == b"201"
            time.sleep(1.0)  # the last FIN/ACKs reach the ring and its blocks retire (20 ms)
        finally:
            rc = _stop(proc)

    assert rc == 0, log.read_text()[-2000:]
    assert sorted(p.name for p in tmp_path.glob("*.json")) == ["eve.json"]  # one stream, no per-worker files
    text = eve.read_text(encoding="utf-8")
    assert text.endswith("\n")
    records = validate_lines(text.splitlines())  # each line is one whole, schema-valid JSON record

    client_ports = list(range(FIRST_CLIENT_PORT, FIRST_CLIENT_PORT + len(BODIES)))
    flows = [r for r in records if r["event_type"] == "flow" and r["proto"] == "TCP"]
    assert sorted(f["src_port"] for f in flows) == client_ports  # one record per connection, none twice
    assert all(f["dest_port"] == PORT and f["src_ip"] == lab.client_ip for f in flows)
    assert len({f["flow_id"] for f in flows}) == len(BODIES)

    leaks = [r for r in records if r["event_type"] == "alert" and r["alert"]["signature_id"] == SID_MARKER]
    assert len(leaks) == 1, [(a["src_port"], a["alert"]) for a in leaks]
    leak_flow = next(f for f in flows if f["src_port"] == FIRST_CLIENT_PORT + LEAK_INDEX)
    assert leaks[0]["flow_id"] == leak_flow["flow_id"]
    assert leak_flow["flow"]["alerted"] is True
    assert not any(f["flow"]["alerted"] for f in flows if f is not leak_flow)

    final = records[-1]
    assert final["event_type"] == "stats"
    assert final["stats"]["workers"] == 2
    kernel = final["stats"]["capture"]
    assert kernel[f"kernel_drops[iface={lab.sif}]"] == 0
    assert kernel[f"kernel_packets[iface={lab.sif}]"] >= sum(f["flow"]["pkts_toserver"] + f["flow"]["pkts_toclient"]
                                                            for f in flows)
