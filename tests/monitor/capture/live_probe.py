"""Run inside a network namespace by the live tests: capture with LiveCapture, print JSON.

    python3 live_probe.py IFACE [--bpf EXPR] [--seconds N] [--fanout GROUP]

Prints "ready" once the sockets are bound, then one JSON object when done: every decoded
UDP/TCP packet as [proto, sport, dport, payload_len, vlan] plus kernel_stats.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from monitor.capture.afpacket import LiveCapture  # noqa: E402
from monitor.config import CaptureConfig, Config  # noqa: E402
from monitor.decode import Decoder  # noqa: E402
from monitor.stats import Stats  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("iface", nargs="+")
    ap.add_argument("--bpf", default="")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--quiet-after", type=float, default=1.0, help="stop this long after the last packet")
    ap.add_argument("--block-size", type=int, default=1 << 20)
    ap.add_argument("--blocks", type=int, default=8)
    ap.add_argument("--summary-only", action="store_true")
    ap.add_argument("--fanout", type=int, default=None, help="join this PACKET_FANOUT group (hash mode)")
    args = ap.parse_args()
    stats = Stats()
    cfg = CaptureConfig(bpf=args.bpf, ring_block_size=args.block_size, ring_blocks=args.blocks,
                        ring_block_timeout=0.02)
    decoder = Decoder(Config(), stats, lambda *a: None)
    packets: list[list[object]] = []
    frames = ticks = tcp_bytes = 0
    ifaces: dict[str, int] = {}
    with LiveCapture(args.iface, cfg, stats, fanout=args.fanout) as cap:
        print("ready", flush=True)
        deadline = time.monotonic() + args.seconds
        last = time.monotonic()
        for raw in cap:
            now = time.monotonic()
            if raw is None:
                ticks += 1
                if now > deadline or (frames and now - last > args.quiet_after):
                    break
                continue
            frames += 1
            last = now
            ifaces[raw.iface] = ifaces.get(raw.iface, 0) + 1
            pkt = decoder.decode(raw)
            if pkt is None:
                continue
            if pkt.proto == 6:
                tcp_bytes += len(pkt.payload)
            if not args.summary_only:
                packets.append([pkt.proto, pkt.sport, pkt.dport, len(pkt.payload), list(pkt.vlan), raw.pcap_cnt])
        kstats = cap.kernel_stats()
    print(json.dumps({"packets": packets, "frames": frames, "ticks": ticks, "ifaces": ifaces,
                      "tcp_payload_bytes": tcp_bytes, "kernel_stats": kstats}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
