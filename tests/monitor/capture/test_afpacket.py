"""Live AF_PACKET capture between two network namespaces (pcaps/lab.py), checked packet by packet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.capture.afpacket import LiveCapture, LiveCaptureError
from monitor.config import CaptureConfig
from monitor.stats import Stats
from pcaps.lab import Lab
from tests.conftest import needs_root_netns

pytestmark = [needs_root_netns(), pytest.mark.netns]

PROBE = Path(__file__).with_name("live_probe.py")
ROOT = Path(__file__).resolve().parents[3]

UDP_SENDER = """
import socket, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(count):
    s.sendto(bytes([65 + i % 26]) * (i + 1), (sys.argv[3], port))
"""

TCP_SERVER = """
import socket
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 8088)); srv.listen(4)
while True:
    c, _ = srv.accept()
    n = 0
    while True:
        b = c.recv(65536)
        if not b:
            break
        n += len(b)
    c.sendall(str(n).encode()); c.close()
"""

TCP_CLIENT = """
import socket, sys
s = socket.create_connection((sys.argv[1], 8088))
s.sendall(b"leakmon-live-" * 20000)
s.shutdown(socket.SHUT_WR)
print(s.recv(100).decode())
"""

# One UDP "flow" per source port: 3 datagrams from each of ports 21000..21000+n-1.
UDP_FLOWS = """
import socket, sys
dst, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 21000 + i))
    for k in range(3):
        s.sendto(b"f" * (k + 1), (dst, port))
    s.close()
"""

# Sends crafted Ethernet frames (hex on argv) out of an interface through a packet socket.
FRAME_SENDER = """
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
for h in sys.argv[2:]:
    s.send(bytes.fromhex(h))
"""


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab("capaf") as lab:
        yield lab


def _probe(lab: Lab, *args: str) -> subprocess.Popen[str]:
    p = subprocess.Popen(["ip", "netns", "exec", lab.sns, sys.executable, str(PROBE), lab.sif, *args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    assert p.stdout is not None
    line = p.stdout.readline()
    assert line.strip() == "ready", p.stderr.read() if p.stderr else ""
    return p


def _result(p: subprocess.Popen[str]) -> dict:
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def _send_udp(lab: Lab, port: int, count: int, dst: str = "10.77.0.2") -> None:
    lab.client([sys.executable, "-c", UDP_SENDER, str(port), str(count), dst])


def test_counts_every_udp_datagram_exactly(lab: Lab) -> None:
    p = _probe(lab, "--seconds", "15")
    _send_udp(lab, 9999, 60)
    res = _result(p)
    udp = [pk for pk in res["packets"] if pk[0] == 17 and pk[2] == 9999]
    assert [pk[3] for pk in udp] == list(range(1, 61))  # every datagram, in order, right payload size
    numbers = [pk[5] for pk in res["packets"]]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    packets, drops = res["kernel_stats"][lab.sif]
    assert drops == 0
    assert packets == res["frames"]  # everything the kernel queued reached us
    assert res["ifaces"] == {lab.sif: res["frames"]}


def test_kernel_bpf_filter_excludes_other_traffic(lab: Lab) -> None:
    p = _probe(lab, "--bpf", "udp dst port 9999", "--seconds", "15")
    _send_udp(lab, 7777, 30)
    _send_udp(lab, 9999, 25)
    _send_udp(lab, 7777, 30)
    res = _result(p)
    assert res["frames"] == 25  # no ARP, no ICMP unreachable, nothing to port 7777
    assert [(pk[0], pk[2], pk[3]) for pk in res["packets"]] == [(17, 9999, i) for i in range(1, 26)]
    assert res["kernel_stats"][lab.sif] == [25, 0]


def test_fanout_group_splits_flows_between_two_sockets(lab: Lab) -> None:
    """Two captures in one PACKET_FANOUT hash group: every datagram reaches exactly one of them, every
    flow stays whole on one side, and both get a share (48 flows)."""
    group = 0x4C00 | (os.getpid() & 0xFF)
    probes = [_probe(lab, "--bpf", "udp dst port 9998", "--seconds", "15", "--fanout", str(group)) for _ in range(2)]
    lab.client([sys.executable, "-c", UDP_FLOWS, "10.77.0.2", "9998", "48"])
    results = [_result(p) for p in probes]
    sides = [{pk[1] for pk in r["packets"]} for r in results]
    assert sides[0] and sides[1] and not sides[0] & sides[1]
    assert sides[0] | sides[1] == set(range(21000, 21048))
    for r in results:
        per_port: dict[int, list[int]] = {}
        for pk in r["packets"]:
            per_port.setdefault(pk[1], []).append(pk[3])
        assert all(sizes == [1, 2, 3] for sizes in per_port.values())
        assert r["kernel_stats"][lab.sif][1] == 0


def test_stripped_vlan_tag_is_put_back(lab: Lab) -> None:
    """The receive path moves the outer tag into the descriptor; the frame we yield has it again."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Dot1AD, Dot1Q, Ether

    eth = Ether(src="02:00:00:00:00:01", dst="ff:ff:ff:ff:ff:ff")
    udp = IP(src="10.78.0.1", dst="10.78.0.2") / UDP(sport=4000, dport=5555)
    frames = [eth / Dot1Q(vlan=100) / udp / (b"q" * i) for i in range(1, 6)]
    frames += [eth / Dot1AD(vlan=200) / Dot1Q(vlan=300) / udp / (b"d" * i) for i in range(1, 4)]
    p = _probe(lab, "--bpf", "vlan", "--seconds", "15")
    lab.client([sys.executable, "-c", FRAME_SENDER, lab.cif, *(bytes(f).hex() for f in frames)])
    res = _result(p)
    got = [(pk[2], pk[3], pk[4]) for pk in res["packets"]]
    assert got == [(5555, i, [100]) for i in range(1, 6)] + [(5555, i, [200, 300]) for i in range(1, 4)]


def test_tcp_upload_payload_bytes(lab: Lab) -> None:
    lab.server([sys.executable, "-c", TCP_SERVER])
    lab.wait_port(8088)
    p = _probe(lab, "--bpf", "tcp port 8088", "--seconds", "20", "--summary-only")
    out = lab.client([sys.executable, "-c", TCP_CLIENT, lab.server_ip])
    sent = len(b"leakmon-live-") * 20000
    res = _result(p)
    reply = out.stdout.decode().strip()
    # Client->server payload plus the server's decimal reply; with GRO frames can reach 64 KiB.
    assert res["tcp_payload_bytes"] == sent + len(reply)
    assert res["kernel_stats"][lab.sif][1] == 0


def test_missing_interface_and_bad_filter_are_clean_errors() -> None:
    with pytest.raises(LiveCaptureError, match="does not exist"):
        LiveCapture(["lm-no-such0"], CaptureConfig(ring_block_size=1 << 20, ring_blocks=2), Stats())
    from monitor.capture.bpf import BpfError

    with pytest.raises(BpfError, match="bad BPF filter"):
        LiveCapture(["lo"], CaptureConfig(bpf="tcp port nope", ring_block_size=1 << 20, ring_blocks=2), Stats())


def test_idle_capture_ticks() -> None:
    """An idle interface yields None at least every 0.2 s so the pipeline's timers run."""
    import time

    cfg = CaptureConfig(bpf="udp port 1 and host 192.0.2.77", ring_block_size=1 << 20, ring_blocks=2)
    with LiveCapture(["lo"], cfg, Stats()) as cap:
        t0 = time.monotonic()
        got = []
        for item in cap:
            got.append(item)
            if len(got) == 3:
                break
        elapsed = time.monotonic() - t0
    assert got == [None, None, None]
    assert elapsed < 0.9
