"""Micro-benchmarks of the per-packet path (not collected by pytest):

    python3 tests/monitor/decode/microbench.py

Prints best-of-7 µs per record for read_capture (pcap, 254-byte frames) and Decoder.decode
(Ethernet/IPv4/TCP fast path, VLAN-tagged path, IPv6/UDP), next to the bare cost of building
one RawPacket and one Packet on this machine, so figures from different machines compare.
"""

from __future__ import annotations

import sys
import tempfile
import time
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from scapy.layers.inet import IP, TCP, UDP  # noqa: E402
from scapy.layers.inet6 import IPv6  # noqa: E402
from scapy.layers.l2 import Dot1Q, Ether  # noqa: E402
from scapy.packet import Raw  # noqa: E402
from scapy.utils import wrpcap  # noqa: E402

from monitor.capture.pcapfile import read_capture  # noqa: E402
from monitor.config import Config  # noqa: E402
from monitor.decode import Decoder  # noqa: E402
from monitor.model import RawPacket  # noqa: E402
from monitor.stats import Stats  # noqa: E402

N = 200_000


def best(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(7):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times) / n * 1e6


def main() -> None:
    tcp = Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1234, dport=80) / Raw(b"x" * 200)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "b.pcap"
        wrpcap(str(path), [tcp] * N)
        print(f"read_capture pcap        {best(lambda: sum(1 for _ in read_capture(path, stats=Stats())), N):.3f} µs/record")
    cases = {
        "eth/ipv4/tcp (fast path)": tcp,
        "eth/vlan/ipv4/tcp": Ether() / Dot1Q(vlan=5) / IP(src="10.0.0.1", dst="10.0.0.2") / TCP() / Raw(b"x" * 200),
        "eth/ipv6/udp": Ether() / IPv6(src="fd00::1", dst="fd00::2") / UDP() / Raw(b"x" * 200),
    }
    dec = Decoder(Config(), Stats(), lambda *a: None)
    for name, frame in cases.items():
        data = bytes(frame)
        raws = [RawPacket(1.0, 1, data, i, "", len(data)) for i in range(N // 2)]
        def run(raws: list[RawPacket] = raws, decode=dec.decode) -> None:  # type: ignore[no-untyped-def]
            for r in raws:
                decode(r)

        print(f"decode {name:26s} {best(run, len(raws)):.3f} µs/packet")
    for what, stmt in (("RawPacket()", "RawPacket(1.0, 1, b, 1, '', 5)"),
                       ("Packet()", "Packet(1.0, 1, 4, b, b, 6, 1, 2, b, 0, 0, 0, 0, (), b, b, 0, None)")):
        t = min(timeit.repeat(stmt, "from monitor.model import RawPacket, Packet; b = b''", number=N, repeat=7))
        print(f"baseline {what:24s} {t / N * 1e6:.3f} µs")


if __name__ == "__main__":
    main()
