"""Live capture end to end: ``leakmon run -i <veth>`` inside a network namespace while a real
upload crosses the veth pair (issue 2, "How it must be shown").

The client namespace runs the sensor on its own veth end and tcpdump on the same interface;
curl POSTs a document carrying the marker 「保護すべき情報」 to ``pcaps/upload_server.py`` in the
server namespace. After a signal the sensor must exit 0, and its EVE log must hold, valid
against the schema: the upload's flow with the packet and byte counts that tcpdump's capture of
that interface shows (counted here with dpkt, and with tshark when installed), the marker
alert (sid 9100001) on that flow, and a final ``stats`` record.

SIGINT stops the sensor after the upload finished; SIGTERM stops it while a connection is still
open, which must be flushed (reason ``shutdown``) before the final stats record.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import dpkt
import pytest

from pcaps.lab import Lab
from tests.conftest import needs_root_netns
from tests.livelab import LiveSensor, curl_upload, eve_records, serve_uploads, write_config

pytestmark = [needs_root_netns(), pytest.mark.netns]

PORT = 8094
UPLOAD_PORT = 40411  # curl --local-port: the upload's connection is known by its source port
HELD_PORT = 40412  # the connection left open across SIGTERM
SID_MARKER = 9100001
DOCUMENT = ("件名: 試験計画書（改訂版）\n本資料は保護すべき情報を含むため、取り扱いに注意すること。\n"
            + "試験項目と日程の詳細は別紙のとおり。\n" * 200)


def _config(tmp: Path) -> Path:
    return write_config(tmp, {
        "sensor": {"name": "e2e-live-run"},
        # Small blocks retired after 20 ms: packets reach the sensor promptly on a busy CI host.
        "capture": {"ring_block_size": "256 KiB", "ring_blocks": 32, "ring_block_timeout": "20ms"},
        "outputs": {"eve": {"path": str(tmp / "eve-from-config.json")}},  # --eve-log overrides it
    })


@contextlib.contextmanager
def _live(tmp: Path) -> Iterator[tuple[Lab, LiveSensor, Path]]:
    """The lab with the upload server, tcpdump on the client veth and the sensor capturing there.

    Yields the lab, the running sensor (the test stops it) and the file with the upload's body.
    """
    body = tmp / "plan.txt"
    body.write_text(DOCUMENT, encoding="utf-8")
    with Lab("live") as lab:
        serve_uploads(lab, PORT)
        with lab.capture(str(tmp / "veth.pcap"), side="client"):
            sensor = LiveSensor(lab.cns, lab.cif, _config(tmp), tmp / "eve.json", log=tmp / "leakmon.log")
            yield lab, sensor.start(), body


def _counts_dpkt(pcap: Path, client_port: int, before: float = float("inf")) -> dict[str, int]:
    """Packets and frame bytes per direction of the TCP connection from ``client_port``."""
    c: Counter[str] = Counter()
    with open(pcap, "rb") as fh:
        for ts, buf in dpkt.pcap.Reader(fh):
            if ts >= before:
                continue
            eth = dpkt.ethernet.Ethernet(buf)
            ip = eth.data
            if not isinstance(ip, dpkt.ip.IP) or not isinstance(ip.data, dpkt.tcp.TCP):
                continue
            tcp = ip.data
            if tcp.sport == client_port and tcp.dport == PORT:
                c["pkts_toserver"] += 1
                c["bytes_toserver"] += len(buf)
            elif tcp.sport == PORT and tcp.dport == client_port:
                c["pkts_toclient"] += 1
                c["bytes_toclient"] += len(buf)
    return dict(c)


def _counts_tshark(pcap: Path, client_port: int, before: float = float("inf")) -> dict[str, int]:
    out = subprocess.run(["tshark", "-n", "-r", str(pcap), "-T", "fields", "-E", "separator=,",
                          "-e", "frame.time_epoch", "-e", "tcp.srcport", "-e", "tcp.dstport", "-e", "frame.len",
                          f"tcp.port == {client_port}"], capture_output=True, text=True, check=True).stdout
    c: Counter[str] = Counter()
    for line in out.splitlines():
        ts, sport, dport, length = line.split(",")
        if float(ts) >= before:
            continue
        side = "toserver" if int(sport) == client_port and int(dport) == PORT else "toclient"
        c[f"pkts_{side}"] += 1
        c[f"bytes_{side}"] += int(length)
    return dict(c)


def _oracle(pcap: Path, client_port: int, before: float = float("inf")) -> dict[str, int]:
    counts = _counts_dpkt(pcap, client_port, before)
    if shutil.which("tshark"):
        assert _counts_tshark(pcap, client_port, before) == counts  # two readers, one answer
    assert counts["pkts_toserver"] >= 3 and counts["pkts_toclient"] >= 2  # a whole conversation
    return counts


def _flow_of(records: list[dict], client_port: int) -> dict:
    flows = [r for r in records if r["event_type"] == "flow" and r["proto"] == "TCP" and r["src_port"] == client_port]
    assert len(flows) == 1, flows
    return flows[0]


def _assert_leak_alert(records: list[dict], flow: dict, lab: Lab) -> None:
    alerts = [r for r in records if r["event_type"] == "alert" and r["alert"]["signature_id"] == SID_MARKER]
    assert [a["flow_id"] for a in alerts] == [flow["flow_id"]]
    alert = alerts[0]
    assert (alert["src_ip"], alert["dest_ip"], alert["dest_port"]) == (lab.client_ip, lab.server_ip, PORT)
    assert alert["community_id"] == flow["community_id"]
    assert flow["flow"]["alerted"] is True


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_live_run_reports_the_upload_with_tcpdump_byte_counts_and_exits_0_on_sigint(tmp_path: Path) -> None:
    with _live(tmp_path) as (lab, sensor, body):
        try:
            out = lab.client(curl_upload(lab, body, PORT, UPLOAD_PORT))
            assert out.stdout == b"201"
            time.sleep(1.0)  # the closing FIN/ACKs reach the ring and its blocks retire
        finally:
            rc = sensor.stop(signal.SIGINT)

    assert rc == 0, sensor.tail()
    assert not (tmp_path / "eve-from-config.json").exists()  # --eve-log took over the configured path
    records = eve_records(tmp_path / "eve.json")
    flow = _flow_of(records, UPLOAD_PORT)
    assert (flow["src_ip"], flow["dest_ip"], flow["dest_port"]) == (lab.client_ip, lab.server_ip, PORT)
    assert flow["app_proto"] == "http"
    expected = _oracle(tmp_path / "veth.pcap", UPLOAD_PORT)
    assert {k: flow["flow"][k] for k in expected} == expected
    assert flow["flow"]["bytes_toserver"] > len(DOCUMENT.encode("utf-8"))  # the whole upload was seen
    assert flow["flow"]["state"] == "closed" and flow["flow"]["gaps"] == 0
    _assert_leak_alert(records, flow, lab)
    final = records[-1]
    assert final["event_type"] == "stats"
    assert final["stats"]["capture"][f"kernel_drops[iface={lab.cif}]"] == 0


HOLD_CLIENT = r"""
import socket, sys, time
body = open(sys.argv[3], "rb").read()
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), source_address=("", int(sys.argv[4])))
s.sendall(b"POST /upload HTTP/1.1\r\nHost: lab\r\nContent-Type: text/plain; charset=utf-8\r\n"
          b"Content-Length: %d\r\n\r\n" % len(body) + body)
reply = b""
while b"\r\n\r\n" not in reply:
    reply += s.recv(4096)
print(reply.split(b" ")[1].decode(), flush=True)
time.sleep(120)  # keep the connection open: the sensor must flush it on SIGTERM
"""


def test_live_run_sigterm_flushes_open_flows_then_writes_final_stats(tmp_path: Path) -> None:
    with _live(tmp_path) as (lab, sensor, body):
        try:
            holder = lab.background("client", [sys.executable, "-c", HOLD_CLIENT, lab.server_ip, str(PORT),
                                               str(body), str(HELD_PORT)], stdout=subprocess.PIPE)
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == b"201"  # answered; the connection stays open
            time.sleep(1.0)  # the last ACK reaches the ring and its block retires
            stopped_at = time.time()
        finally:
            rc = sensor.stop(signal.SIGTERM)

    assert rc == 0, sensor.tail()
    records = eve_records(tmp_path / "eve.json")
    flow = _flow_of(records, HELD_PORT)
    assert flow["flow"]["reason"] == "shutdown" and flow["flow"]["state"] == "established"
    expected = _oracle(tmp_path / "veth.pcap", HELD_PORT, before=stopped_at)  # the connection's FINs came later
    assert {k: flow["flow"][k] for k in expected} == expected
    _assert_leak_alert(records, flow, lab)
    # The final stats record comes last, after every flow record.
    final = records[-1]
    assert final["event_type"] == "stats"
    assert [r["event_type"] for r in records].count("stats") >= 1
    assert all(records.index(r) < len(records) - 1 for r in records if r["event_type"] == "flow")
    assert final["stats"]["flow"]["created"] >= 1 and final["stats"]["flow"]["active"] == 0
