"""Live sensor with two workers: ``leakmon run --workers 2`` on a veth while real curl uploads run.

The kernel spreads flows over the two workers (PACKET_FANOUT, hash mode); the parent writes the
one EVE stream. After SIGINT the sensor must exit 0 having written whole, valid JSON lines, one
flow record per TCP connection, one alert for the one leaking upload, and a final stats record
that says two workers ran.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from pcaps.lab import Lab
from tests.conftest import needs_root_netns
from tests.livelab import LiveSensor, curl_upload, eve_records, serve_uploads, write_config

pytestmark = [needs_root_netns(), pytest.mark.netns]

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
    return write_config(tmp, {
        "sensor": {"name": "e2e-live-workers"},
        # Many small blocks: a non-empty block is handed over after 20 ms however little it holds,
        # so the ring rides out a worker pause of blocks x 20 ms (1.3 s here) on a busy CI host.
        "capture": {"ring_block_size": "256 KiB", "ring_blocks": 64, "ring_block_timeout": "20ms"},
    })


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_two_live_workers_write_one_clean_eve_stream(tmp_path: Path) -> None:
    eve = tmp_path / "eve.json"
    for i, body in enumerate(BODIES):
        (tmp_path / f"body{i}.txt").write_text(body, encoding="utf-8")
    with Lab("lvwork") as lab:
        serve_uploads(lab, PORT)  # its probe connection ends before the sensor starts
        sensor = LiveSensor(lab.sns, lab.sif, _config(tmp_path), eve, workers=2, log=tmp_path / "leakmon.log").start()
        try:
            for i in range(len(BODIES)):
                out = lab.client(curl_upload(lab, tmp_path / f"body{i}.txt", PORT, FIRST_CLIENT_PORT + i))
                assert out.stdout == b"201"
            time.sleep(1.0)  # the last FIN/ACKs reach the ring and its blocks retire (20 ms)
        finally:
            rc = sensor.stop()  # SIGINT like an operator's Ctrl-C; a hung sensor is killed with its workers

    assert rc == 0, sensor.tail(2000)
    assert sorted(p.name for p in tmp_path.glob("*.json")) == ["eve.json"]  # one stream, no per-worker files
    records = eve_records(eve)  # each line is one whole, schema-valid JSON record

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
