#!/usr/bin/env python3
"""Live capture rate: the highest replay rate a live sensor takes without losing a packet.

A veth pair joins two network namespaces (pcaps/lab.py). ``tcpreplay`` pushes a benchmark
capture from one namespace; ``leakmon run -i <peer veth> --workers N`` listens in the other.
Each probe sends for a few seconds at a fixed rate (``--loop 0 --unique-ip`` so that looping
makes new flows, not retransmissions), waits until the sensor has drained its ring, stops it
with SIGINT and reads the final EVE ``stats`` record. A binary search over the rate finds the
highest rate with no loss anywhere:

* ``capture.kernel_drops`` -- frames the kernel could not put into the TPACKET_V3 ring;
* veth/backlog drops -- frames lost before they reach the packet socket (``ip -s link``);
* delivery -- ``capture.kernel_packets`` must be at least what tcpreplay sent;
* internal loss -- the sensor's own signs of missing bytes (``stream.gap``) and full queues.

    python3 bench/live_rate.py                                   # m200 capture, 1 and 2 workers, 3 repeats
    python3 bench/live_rate.py --capture bench/data/m50.pcap --workers 2 --repeat 1 --seconds 4
    python3 bench/live_rate.py --rates 100 300 600               # fixed probes, no search

The ring is shrunk to ``--ring-mib`` (8 MiB in 256 KiB blocks by default; the shipped default is
64 x 4 MiB) so that a probe of a few seconds measures the sustained rate, not the ring's burst
absorption: a probe is only clean when the sensor keeps up for its whole length minus at most
one ring of backlog. Small blocks matter as much as the total: TPACKET_V3 retires a block after
``ring_block_timeout`` (100 ms) even when it is nearly empty, so at tens of Mbps a 4 MiB block
holds only ~100 ms of traffic and a ring of 2 such blocks overflows on any 200 ms pause.

Offloads: tcpreplay injects the capture's own frames (<= 1514 bytes) through a packet socket,
so TSO/GSO never apply, and veth runs GRO only with NAPI (XDP or ``ethtool -K gro on``), which
is left off: the sensor sees exactly the frames of the capture. Needs root, iproute2, tcpreplay.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pcaps.lab import Lab, available  # noqa: E402
from tests import livelab  # noqa: E402

BENCH_CONFIG = ROOT / "bench" / "bench.yaml"
DEFAULT_CAPTURE = ROOT / "bench" / "data" / "m200.pcap"
# Counters whose growth means the sensor itself lost or skipped data.
INTERNAL_LOSS = ("stream.gap", "stream.gap_forced", "stream.memcap", "memcap.hit",
                 "incidents.queue_full", "evidence.queue_full", "notify.dropped")


# ----------------------------------------------------------------------------- shared helpers
# (bench/latency.py and bench/memory.py use these too; the lab sensor itself is tests/livelab.py)

def write_config(tmp: Path, *, ring_mib: int | None = None, block_kib: int = 256,
                 extra: dict[str, Any] | None = None) -> Path:
    """bench/bench.yaml with every path made absolute and pointed into ``tmp``."""
    doc = yaml.safe_load(BENCH_CONFIG.read_text())
    doc["signatures"] = [str((BENCH_CONFIG.parent / p).resolve()) for p in doc.get("signatures", [])]
    ring = {"capture": {"ring_block_size": f"{block_kib} KiB",
                        "ring_blocks": max(2, ring_mib * 1024 // block_kib)}} if ring_mib else None
    return livelab.write_config(tmp, ring, extra, base=doc)


def stat_total(snapshot: dict[str, Any], dotted: str) -> float:
    """Sum of a counter/gauge in a stats snapshot over its label sets (``name[iface=x]`` leaves)."""
    *parents, leaf = dotted.split(".")
    node: Any = snapshot
    for p in parents:
        node = node.get(p) if isinstance(node, dict) else None
        if node is None:
            return 0
    if not isinstance(node, dict):
        return 0
    total = 0.0
    for key, value in node.items():
        if key == leaf or key.startswith(leaf + "["):
            if isinstance(value, dict):
                value = value.get("_value", 0)
            total += float(value)
    return total


def final_stats(eve: Path) -> dict[str, Any]:
    """The last ``stats`` record of an EVE file."""
    last: dict[str, Any] = {}
    with open(eve, encoding="utf-8") as fh:
        for line in fh:
            if '"event_type":"stats"' in line.replace(" ", ""):
                last = json.loads(line)["stats"]
    return last


def link_drops(ns: str, iface: str) -> int:
    """rx+tx dropped of one veth end (veth counts frames its peer's backlog refused)."""
    s = livelab.link(ns, iface, stats=True)["stats64"]
    return int(s["rx"]["dropped"]) + int(s["tx"]["dropped"])


def carrier_changes(ns: str, iface: str) -> int:
    """How often the interface's carrier went down or up (an admin down/up counts too); -1 if it is gone.

    A capture socket whose interface went down keeps a pending ENETDOWN error: a sensor that
    does not take it spins on poll (see monitor/capture/afpacket.py), so every probe records this.
    """
    out = subprocess.run(["ip", "netns", "exec", ns, "cat", f"/sys/class/net/{iface}/carrier_changes"],
                         capture_output=True, text=True)
    return int(out.stdout) if out.returncode == 0 and out.stdout.strip().isdigit() else -1


def backlog_drops() -> int:
    """Host-wide per-CPU backlog drops (/proc/net/softnet_stat, 2nd column); other traffic counts too."""
    total = 0
    with open("/proc/net/softnet_stat") as fh:
        for line in fh:
            total += int(line.split()[1], 16)
    return total


class LiveSensor(livelab.LiveSensor):
    """The lab sensor with what a benchmark measures: CPU time, run-queue wait, time to drain."""

    def start(self, timeout: float = 120.0) -> LiveSensor:
        super().start(timeout)
        return self

    def cpu_seconds(self) -> float:
        return sum(_cpu_of(pid) for pid in livelab.process_tree(self.pid))

    def runqueue_wait(self) -> float:
        """Seconds the sensor's threads were runnable but waiting for a CPU (scheduler contention)."""
        total = 0
        for pid in livelab.process_tree(self.pid):
            with contextlib.suppress(OSError):
                for task in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{task}/schedstat") as fh:
                        total += int(fh.read().split()[1])
        return total / 1e9

    def wait_idle(self, quiet: float = 0.6, timeout: float = 300.0,
                  on_busy: Callable[[float], None] | None = None, busy_after: float = 25.0) -> float:
        """Until the sensor's CPU time stops growing (its ring is drained); returns seconds waited.

        "Growing" means more than 0.02 CPU-s (all processes) within ``quiet`` seconds, so a
        sensor whose idle timers cost over ~3 % of a core never counts as drained. ``on_busy``
        is called once (with the seconds waited) when the sensor is still busy ``busy_after``
        seconds after this started: a snapshot of what it is doing (see ``snapshot_busy``).
        """
        t0 = time.monotonic()
        last = self.cpu_seconds()
        still = time.monotonic()
        while time.monotonic() - t0 < timeout:
            time.sleep(0.2)
            now = self.cpu_seconds()
            if now - last > 0.02:
                last, still = now, time.monotonic()
            elif time.monotonic() - still >= quiet:
                break
            if on_busy is not None and time.monotonic() - t0 >= busy_after:
                on_busy(time.monotonic() - t0)
                on_busy = None
        return time.monotonic() - t0

    def stop(self, sig: int = signal.SIGINT, timeout: float = 120.0, term_workers: bool = True) -> int:
        """SIGINT; with workers also SIGTERM to each worker, as the parent is meant to do.

        monitor/workers.py:_collect only looks at its stop flag when the queue stays empty for
        0.5 s, which never happens while two live workers send stats every 0.5 s: without the
        direct SIGTERM the sensor does not stop. A hung sensor is killed with all its processes
        and reported as -9.
        """
        try:
            return super().stop(sig, timeout, term_workers=term_workers and self.workers > 1)
        except livelab.SensorHung:
            return -9


def snapshot_busy(sensor: LiveSensor, out: Path, eve: Path | None = None) -> None:
    """What a sensor that does not go idle is doing: for each of its processes a py-spy dump
    (with locals), its user/system CPU over one second, voluntary/involuntary context switches
    and kernel wait channel; the namespace's packet sockets; the EVE file's last stats record.
    """
    out.mkdir(parents=True, exist_ok=True)
    pids = livelab.process_tree(sensor.pid)
    before = {pid: _cpu_split(pid) for pid in pids}
    time.sleep(1.0)
    lines = []
    for pid in pids:
        u0, s0 = before[pid]
        u1, s1 = _cpu_split(pid)
        status = _read(f"/proc/{pid}/status")
        switches = [ln for ln in status.splitlines() if "ctxt_switches" in ln]
        lines.append(f"pid {pid}: user {u1 - u0:.2f}s sys {s1 - s0:.2f}s in 1 s; wchan {_read(f'/proc/{pid}/wchan')!r}; "
                     f"{' '.join(' '.join(x.split()) for x in switches)}")
        for flags, name in (([], "dump"), (["--locals"], "locals")):
            r = subprocess.run(["py-spy", "dump", "--pid", str(pid), *flags], capture_output=True, text=True,
                               timeout=60)
            (out / f"{name}-{pid}.txt").write_text(r.stdout + r.stderr)
    lines.append(_read(f"/proc/{sensor.pid}/net/packet"))
    (out / "procs.txt").write_text("\n".join(lines) + "\n")
    if eve is not None and eve.exists():
        (out / "last-stats.json").write_text(json.dumps(final_stats(eve), indent=1, sort_keys=True))
    print(f"  sensor still busy: snapshot in {out}", flush=True)


def _read(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return ""


def _cpu_split(pid: int) -> tuple[float, float]:
    fields = _read(f"/proc/{pid}/stat").rsplit(")", 1)[-1].split()
    if len(fields) < 13:
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def _cpu_of(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------------------- the probe

@dataclass
class Probe:
    workers: int
    requested_mbps: float  # 0 = topspeed
    sent_packets: int = 0
    sent_bytes: int = 0
    send_seconds: float = 0.0
    achieved_mbps: float = 0.0
    kernel_packets: int = 0
    kernel_drops: int = 0
    veth_drops: int = 0
    backlog_drops: int = 0
    internal_loss: dict[str, float] = field(default_factory=dict)
    sensor_packets: int = 0
    drain_s: float = 0.0
    sensor_cpu_s: float = 0.0  # sensor CPU seconds (all processes) from the first frame sent to drained
    sender_cpu_s: float = 0.0  # tcpreplay's CPU seconds (pacing included)
    sensor_runq_wait_s: float = 0.0  # sensor runnable but not running (the machine is shared)
    exit_code: int = 0
    busy_snapshot: str = ""  # where snapshot_busy() wrote, if the sensor stayed busy
    link_changes: int = 0  # carrier changes of the veth pair during the probe (should stay 0)

    @property
    def clean(self) -> bool:
        return (self.exit_code == 0 and self.kernel_drops == 0 and self.veth_drops == 0
                and self.kernel_packets >= self.sent_packets and not any(self.internal_loss.values()))


_ACTUAL = re.compile(r"Actual: (\d+) packets \((\d+) bytes\) sent in ([\d.]+) seconds")


def probe(lab: Lab, capture: Path, workers: int, mbps: float, seconds: float, ring_mib: int,
          block_kib: int = 256, drain_cap: float = 300.0, spy_dir: Path | None = None,
          spy_after: float = 25.0) -> Probe:
    """One probe; with ``spy_dir``, a sensor still busy ``spy_after`` seconds after sending
    stopped is snapshot (``snapshot_busy``) into a new folder under it."""
    res = Probe(workers, mbps)
    with tempfile.TemporaryDirectory(prefix="lm-lrate-") as td:
        tmp = Path(td)
        cfg = write_config(tmp, ring_mib=ring_mib, block_kib=block_kib)
        sensor = LiveSensor(lab.sns, lab.sif, cfg, tmp / "eve.json", workers, log=tmp / "leakmon.log")
        try:
            sensor.start()
        except RuntimeError as exc:  # seen once with 2 workers; say why, then try once more
            print(f"  sensor failed to start, retrying: {exc}", flush=True)
            sensor.start()
        veth0 = link_drops(lab.cns, lab.cif) + link_drops(lab.sns, lab.sif)
        carrier0 = (carrier_changes(lab.cns, lab.cif), carrier_changes(lab.sns, lab.sif))
        backlog0 = backlog_drops()
        # nanosleep pacing: the default timer spins and takes a whole core from the sensor.
        rate = ["--topspeed"] if mbps <= 0 else ["--mbps", f"{mbps:.1f}", "--timer=nano"]
        argv = ["ip", "netns", "exec", lab.cns, "tcpreplay", "-i", lab.cif, "-K", "--no-flow-stats",
                "--loop", "0", "--unique-ip", "--duration", str(int(seconds)), *rate, str(capture)]
        try:
            cpu0, wait0 = sensor.cpu_seconds(), sensor.runqueue_wait()
            ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120)
            ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            res.sender_cpu_s = ru1.ru_utime - ru0.ru_utime + ru1.ru_stime - ru0.ru_stime
            m = _ACTUAL.search(out.stdout)
            if m is None:
                raise RuntimeError(f"tcpreplay: {out.stdout[-400:]} {out.stderr[-400:]}")
            res.sent_packets, res.sent_bytes, res.send_seconds = int(m[1]), int(m[2]), float(m[3])
            res.achieved_mbps = res.sent_bytes * 8 / max(res.send_seconds, 1e-9) / 1e6
            where = spy_dir / f"{time.strftime('%H%M%S')}-w{workers}-{'top' if mbps <= 0 else int(mbps)}" \
                if spy_dir is not None else None

            def snapshot(waited: float) -> None:
                assert where is not None
                snapshot_busy(sensor, where, tmp / "eve.json")
                res.busy_snapshot = str(where)
            res.drain_s = sensor.wait_idle(timeout=drain_cap, on_busy=snapshot if where else None,
                                           busy_after=spy_after)
            res.sensor_cpu_s = sensor.cpu_seconds() - cpu0
            res.sensor_runq_wait_s = sensor.runqueue_wait() - wait0
        finally:
            res.exit_code = sensor.stop()
            if spy_dir is not None and (res.exit_code or res.busy_snapshot):
                keep = spy_dir / f"{time.strftime('%H%M%S')}-w{workers}-rc{res.exit_code}"
                keep.mkdir(parents=True, exist_ok=True)
                (keep / "leakmon.log").write_text(sensor.tail(200_000))
        res.veth_drops = link_drops(lab.cns, lab.cif) + link_drops(lab.sns, lab.sif) - veth0
        res.backlog_drops = backlog_drops() - backlog0
        carrier1 = (carrier_changes(lab.cns, lab.cif), carrier_changes(lab.sns, lab.sif))
        res.link_changes = -1 if -1 in carrier0 + carrier1 else sum(carrier1) - sum(carrier0)
        st = final_stats(tmp / "eve.json")
        res.kernel_packets = int(stat_total(st, "capture.kernel_packets"))
        res.kernel_drops = int(stat_total(st, "capture.kernel_drops"))
        res.sensor_packets = int(stat_total(st, "capture.packets"))
        res.internal_loss = {k: stat_total(st, k) for k in INTERNAL_LOSS if stat_total(st, k)}
    return res


def show(p: Probe) -> None:
    req = "topspeed" if p.requested_mbps <= 0 else f"{p.requested_mbps:7.1f} Mbps"
    print(f"  workers={p.workers} {req:>12}: sent {p.sent_packets} pkts at {p.achieved_mbps:7.1f} Mbps; "
          f"socket saw {p.kernel_packets}, kernel drops {p.kernel_drops}, veth drops {p.veth_drops}, "
          f"internal {p.internal_loss or 0}, drain {p.drain_s:.1f}s; cpu sensor {p.sensor_cpu_s:.1f}s "
          f"(runqueue wait {p.sensor_runq_wait_s:.1f}s) "
          f"sender {p.sender_cpu_s:.1f}s over {p.send_seconds:.1f}s -> {'CLEAN' if p.clean else 'LOSS'}"
          + (f"; LINK CHANGED ({p.link_changes})" if p.link_changes else ""), flush=True)


def search(lab: Lab, capture: Path, workers: int, seconds: float, ring_mib: int, tolerance: float,
           log: list[Probe], **opts: Any) -> float:
    """Highest achieved rate (Mbps) of a clean probe; bounded above by the sender's top speed.
    ``opts`` go to every ``probe`` (drain_cap, spy_dir, spy_after)."""
    top = probe(lab, capture, workers, 0, seconds, ring_mib, **opts)
    log.append(top)
    show(top)
    if top.clean:
        return top.achieved_mbps  # sender-bound: the sensor kept up with everything tcpreplay could send
    lo, hi = 0.0, top.achieved_mbps
    while hi - lo > max(tolerance * hi, 20.0):
        mid = (lo + hi) / 2
        p = probe(lab, capture, workers, mid, seconds, ring_mib, **opts)
        log.append(p)
        show(p)
        if p.clean:
            lo = max(lo, min(mid, p.achieved_mbps))
        else:
            hi = mid
    return lo


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--capture", default=str(DEFAULT_CAPTURE))
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--seconds", type=float, default=10.0, help="Length of one probe")
    ap.add_argument("--ring-mib", type=int, default=8, help="Ring per capture socket (0: the shipped default)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tolerance", type=float, default=0.08, help="Stop the search at this relative width")
    ap.add_argument("--rates", type=float, nargs="*", default=[], help="Probe these Mbps instead of searching")
    ap.add_argument("--json", default="", help="Write every probe and result here")
    ap.add_argument("--drain-cap", type=float, default=300.0,
                    help="Seconds to wait for the sensor to go idle after sending stopped")
    ap.add_argument("--spy-dir", default="", help="Snapshot (py-spy dumps, CPU split) a sensor still busy "
                                                  "--spy-after seconds after sending stopped, into a folder here")
    ap.add_argument("--spy-after", type=float, default=25.0)
    args = ap.parse_args()
    opts: dict[str, Any] = {"drain_cap": args.drain_cap, "spy_after": args.spy_after,
                            "spy_dir": Path(args.spy_dir) if args.spy_dir else None}
    if not available():
        print("live_rate: needs root, iproute2 and tcpdump (network namespaces)", file=sys.stderr)
        return 2
    capture = Path(args.capture)
    if not capture.exists():
        print(f"live_rate: {capture} missing: python3 bench/gen.py mixed --size 200MiB -o {capture}", file=sys.stderr)
        return 2
    probes: list[Probe] = []
    results: dict[int, list[float]] = {w: [] for w in args.workers}
    with Lab("lrate") as lab:
        for rep in range(args.repeat):
            for w in args.workers:
                print(f"repeat {rep + 1}/{args.repeat}, {w} worker(s):", flush=True)
                if args.rates:
                    for r in args.rates:
                        p = probe(lab, capture, w, r, args.seconds, args.ring_mib, **opts)
                        probes.append(p)
                        show(p)
                    continue
                best = search(lab, capture, w, args.seconds, args.ring_mib, args.tolerance, probes, **opts)
                results[w].append(best)
                print(f"  -> highest loss-free rate: {best:.0f} Mbps", flush=True)
    summary = {w: {"runs_mbps": [round(x, 1) for x in v], "min_mbps": round(min(v), 1),
                   "median_mbps": round(statistics.median(v), 1)} for w, v in results.items() if v}
    for w, s in summary.items():
        print(f"{w} worker(s): loss-free up to min {s['min_mbps']} / median {s['median_mbps']} Mbps "
              f"(runs {s['runs_mbps']})")
    if args.json:
        Path(args.json).write_text(json.dumps({"capture": str(capture), "seconds": args.seconds,
                                               "ring_mib": args.ring_mib, "summary": summary,
                                               "probes": [asdict(p) | {"clean": p.clean} for p in probes]},
                                              indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
