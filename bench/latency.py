#!/usr/bin/env python3
"""Packet-to-alert latency of the live sensor, p50/p99, measured two ways.

Lab: two network namespaces joined by a veth (pcaps/lab.py). ``pcaps/upload_server.py`` and
``leakmon run -i <server veth>`` run in the server namespace; a small client in the client
namespace (the protected side) makes N HTTP uploads, each on its own TCP connection with the
marker 「保護すべき情報」 in the body, and records the wall-clock time just before the
``sendall`` of each request and the connection's source port.

1. **EVE**: a tail thread here reads the EVE file as it grows (polling every 1 ms) and notes the
   time each sid 9100001 alert line becomes readable. Latency = line readable - request sent,
   matched by source port. This includes the kernel ring (block retire timeout), the pipeline
   and the EVE flush; both clocks are this host's ``time.time()``.
2. **Exporter**: the ``leakmon_alert_latency_seconds`` histogram scraped from ``--metrics-addr``
   just before the sensor stops (quantiles interpolated within buckets, as Prometheus'
   ``histogram_quantile`` does). It measures alert emission minus the kernel's packet timestamp.

    python3 bench/latency.py                           # 1 worker, shipped ring settings, 3 repeats
    python3 bench/latency.py --workers 2 --block-timeout 10ms --uploads 300
    python3 bench/latency.py --background-mbps 30      # with bench/data/m50.pcap replayed alongside

Target (issue 6): p99 <= 100 ms. Needs root, iproute2 and tcpreplay (only for --background-mbps).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from live_rate import LiveSensor, write_config  # noqa: E402

from pcaps.lab import Lab, available  # noqa: E402

SID = 9100001
PORT = 8094
METRICS = "127.0.0.1:19917"  # inside the server namespace: nothing else listens there
HISTOGRAM = "leakmon_alert_latency_seconds"

# Runs in the client namespace: N uploads, one connection each; prints [[src_port, t_send], ...].
CLIENT = r"""
import json, socket, sys, time
server, port, n, gap = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
body = ("この文書は保護すべき情報を含みます。" + "x" * 200).encode()
out = []
for i in range(n):
    s = socket.create_connection((server, port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    req = (f"POST /upload/{i} HTTP/1.1\r\nHost: {server}\r\nContent-Type: text/plain; charset=utf-8\r\n"
           f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
    t = time.time()
    s.sendall(req)
    out.append([s.getsockname()[1], t])
    while s.recv(4096):
        pass
    s.close()
    time.sleep(gap)
print(json.dumps(out))
"""


class EveTail(threading.Thread):
    """Follows an EVE file; remembers when each alert line for SID became readable, by source port."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.seen: dict[int, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.path.exists() and not self.stop.is_set():
            time.sleep(0.001)
        buf = b""
        with open(self.path, "rb") as fh:
            while not self.stop.is_set():
                chunk = fh.read()
                if not chunk:
                    time.sleep(0.001)
                    continue
                now = time.time()
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    if b'"alert"' not in line:
                        continue
                    rec = json.loads(line)
                    if rec.get("event_type") == "alert" and rec["alert"].get("signature_id") == SID:
                        self.seen.setdefault(int(rec["src_port"]), now)


@dataclass
class Run:
    workers: int
    block_timeout: str
    background_mbps: float
    uploads: int
    eve_ms: list[float] = field(default_factory=list)
    missing: int = 0  # alerts not readable within the wait
    exporter: dict[str, float] = field(default_factory=dict)
    exporter_count: int = 0
    exporter_error: str = ""


def quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile."""
    s = sorted(values)
    return s[max(0, math.ceil(q * len(s)) - 1)]


def histogram_quantiles(text: str, name: str, qs: tuple[float, ...]) -> tuple[dict[str, float], int]:
    """Quantiles (ms) from a Prometheus text exposition's cumulative buckets, linear within a bucket."""
    buckets: list[tuple[float, float]] = []
    for line in text.splitlines():
        if line.startswith(name + "_bucket{"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((math.inf if bound == "+Inf" else float(bound), float(line.rsplit(" ", 1)[1])))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0
    out: dict[str, float] = {}
    for q in qs:
        if not total:
            break
        rank = q * total
        prev_le, prev_c = 0.0, 0.0
        for le, c in buckets:
            if c >= rank:
                if math.isinf(le):
                    value = prev_le
                else:
                    value = prev_le + (le - prev_le) * ((rank - prev_c) / max(c - prev_c, 1e-12))
                out[f"p{int(q * 100)}"] = round(value * 1000, 2)
                break
            prev_le, prev_c = le, c
    return out, int(total)


def scrape(ns: str) -> str:
    out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c",
                          f"import urllib.request;print(urllib.request.urlopen('http://{METRICS}/metrics',"
                          f"timeout=5).read().decode())"], capture_output=True, text=True, timeout=30)
    if out.returncode:
        raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "scrape failed")
    return out.stdout


def one_run(lab: Lab, args: argparse.Namespace) -> Run:
    res = Run(args.workers, f"{args.block_timeout or 'default'}/{args.block_size or 'default'}x{args.blocks or 'default'}",
              args.background_mbps, args.uploads)
    extra: dict[str, object] = {"networks": {"protected": [f"{lab.client_ip}/32"]}}  # the server is outside
    ring: dict[str, object] = {}
    if args.block_timeout:
        ring["ring_block_timeout"] = args.block_timeout
    if args.block_size:
        ring["ring_block_size"] = args.block_size
    if args.blocks:
        ring["ring_blocks"] = args.blocks
    if ring:
        extra["capture"] = ring
    with tempfile.TemporaryDirectory(prefix="lm-lat-") as td:
        tmp = Path(td)
        cfg = write_config(tmp, extra=extra)
        eve = tmp / "eve.json"
        sensor = LiveSensor(lab.sns, lab.sif, cfg, eve, args.workers, metrics_addr=METRICS if args.metrics else "",
                            log=tmp / "leakmon.log")
        sensor.start()
        tail = EveTail(eve)
        tail.start()
        background = None
        try:
            if args.background_mbps:
                background = lab.background("client", [
                    "tcpreplay", "-i", lab.cif, "-K", "--no-flow-stats", "--loop", "0", "--unique-ip",
                    "--timer=nano", "--mbps", str(args.background_mbps), str(args.background_capture)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(2.0)
            out = lab.client([sys.executable, "-c", CLIENT, lab.server_ip, str(PORT), str(args.uploads),
                              str(args.gap)], timeout=600)
            sent = {int(p): t for p, t in json.loads(out.stdout)}
            deadline = time.time() + args.wait
            while time.time() < deadline and not sent.keys() <= tail.seen.keys():
                time.sleep(0.01)
            if args.metrics:
                try:
                    res.exporter, res.exporter_count = histogram_quantiles(scrape(lab.sns), HISTOGRAM, (0.5, 0.99))
                except (RuntimeError, subprocess.TimeoutExpired, IndexError) as exc:
                    res.exporter_error = str(exc)[:200]
        finally:
            if background is not None:
                background.terminate()
                background.wait()
            sensor.stop()
            tail.stop.set()
            tail.join()
        res.eve_ms = [round((tail.seen[p] - t) * 1000, 3) for p, t in sent.items() if p in tail.seen]
        res.missing = len(sent) - len(res.eve_ms)
    return res


def show(r: Run) -> None:
    if r.eve_ms:
        eve = f"EVE p50 {quantile(r.eve_ms, 0.5):.1f} ms p99 {quantile(r.eve_ms, 0.99):.1f} ms max {max(r.eve_ms):.1f} ms"
    else:
        eve = "EVE: no alert line readable"
    exp = (f"exporter p50 {r.exporter.get('p50')} ms p99 {r.exporter.get('p99')} ms (n={r.exporter_count})"
           if r.exporter else f"exporter: {r.exporter_error or 'not scraped'}")
    print(f"  workers={r.workers} block_timeout={r.block_timeout} bg={r.background_mbps} Mbps: {len(r.eve_ms)}/"
          f"{r.uploads} alerts seen ({r.missing} missing); {eve}; {exp}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--uploads", type=int, default=200)
    ap.add_argument("--gap", type=float, default=0.02, help="Seconds between uploads")
    ap.add_argument("--block-timeout", default="", help="capture.ring_block_timeout (default: the shipped one)")
    ap.add_argument("--block-size", default="", help="capture.ring_block_size (default: the shipped one)")
    ap.add_argument("--blocks", type=int, default=0, help="capture.ring_blocks (default: the shipped one)")
    ap.add_argument("--background-mbps", type=float, default=0.0)
    ap.add_argument("--background-capture", default=str(ROOT / "bench" / "data" / "m50.pcap"))
    ap.add_argument("--no-metrics", dest="metrics", action="store_false", help="Do not start/scrape the exporter")
    ap.add_argument("--wait", type=float, default=5.0, help="Seconds to wait for the last alerts")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    if not available():
        print("latency: needs root, iproute2 and tcpdump (network namespaces)", file=sys.stderr)
        return 2
    runs: list[Run] = []
    with Lab("lmlat") as lab:
        lab.server([sys.executable, str(ROOT / "pcaps" / "upload_server.py"), "0.0.0.0", str(PORT)])
        lab.wait_port(PORT)
        for _ in range(args.repeat):
            r = one_run(lab, args)
            runs.append(r)
            show(r)
    summary: dict[str, object] = {}
    p50s = [quantile(r.eve_ms, 0.5) for r in runs if r.eve_ms]
    p99s = [quantile(r.eve_ms, 0.99) for r in runs if r.eve_ms]
    if p50s:
        summary["eve_p50_ms"] = {"min": min(p50s), "median": statistics.median(p50s)}
        summary["eve_p99_ms"] = {"min": min(p99s), "median": statistics.median(p99s)}
    e50 = [r.exporter["p50"] for r in runs if "p50" in r.exporter]
    e99 = [r.exporter["p99"] for r in runs if "p99" in r.exporter]
    if e50:
        summary["exporter_p50_ms"] = {"min": min(e50), "median": statistics.median(e50)}
        summary["exporter_p99_ms"] = {"min": min(e99), "median": statistics.median(e99)}
    summary["missing_alerts"] = [r.missing for r in runs]
    print(json.dumps(summary))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                               "summary": summary, "runs": [r.__dict__ for r in runs]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
