"""Start-up cost of ``leakmon replay``: CPU seconds of each stage before the first packet.

Each run is a fresh interpreter (imports are only paid once per process); the figure of a stage
is the best of ``--runs`` runs (process_time). The capture is the tiny committed sample, so the
packet loop is a few ms and the total is almost all start-up::

    python3 bench/startup_bench.py                 # the sample config (evidence on, metrics off)
    python3 bench/startup_bench.py --bench-config  # bench/bench.yaml (evidence off, metrics off)

``--modules`` also prints which optional subsystems the replay imported.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAPTURE = os.path.join(ROOT, "pcaps", "sample-leak-http.pcap")
OPTIONAL = ("prometheus_client", "alerts.metrics", "smtplib", "ssl", "urllib.request", "cryptography",
            "alerts.cli_incidents", "monitor.coverage", "uuid")

# Runs in the child: the stages of monitor.cli.main -> runner.replay, timed one by one.
_CHILD = r"""
import json, sys, time
t = [time.process_time()]
import monitor.cli as cli
t.append(time.process_time())
ap = cli.build_parser(cli._builtin_command(sys.argv[1:]))
args = ap.parse_args(sys.argv[1:])
t.append(time.process_time())
from monitor import runner
t.append(time.process_time())
cfg = runner.apply_overrides(runner.load_config(args.config), args)
t.append(time.process_time())
sensor = runner.Sensor(cfg, eve_path=args.eve_log, replay=True)
t.append(time.process_time())
from monitor.capture.pcapfile import read_capture
with runner.sensor_gc():
    for path in args.files:
        sensor.pipeline.replay_capture(read_capture(path, stats=sensor.stats, bpf=cfg.capture.bpf))
    sensor.finish("shutdown")
t.append(time.process_time())
mods = sorted(m for m in sys.modules if m.split(".")[0] in (%r))
print(json.dumps({"t": t, "mods": mods, "alerts": sensor.stats.total("detect.alerts")}))
"""

STAGES = ("import monitor.cli", "build_parser + parse", "import runner/pipeline", "load_config",
          "Sensor (pipeline + sinks)", "replay + finish")


def _config(out: str, bench: bool) -> str:
    """A copy of the config whose outputs go to a scratch folder (the incident DB starts empty)."""
    src = os.path.join(ROOT, "bench", "bench.yaml") if bench else os.path.join(ROOT, "pcaps", "sample.yaml")
    with open(src, encoding="utf-8") as fh:
        text = fh.read()
    text = text.replace("../signatures", os.path.join(ROOT, "signatures"))
    text = text.replace("sample-evidence.key", os.path.join(ROOT, "pcaps", "sample-evidence.key"))
    text = text.replace("out/", out + "/").replace("/tmp/leakmon-bench", out + "/bench")
    path = os.path.join(out, "config.yaml")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    return path


def run_once(bench: bool) -> dict:
    tops = tuple(sorted({m.split(".")[0] for m in OPTIONAL}))
    with tempfile.TemporaryDirectory(prefix="leakmon-startup-") as out:
        cfg = _config(out, bench)
        cmd = [sys.executable, "-c", _CHILD % (tops,), "replay", CAPTURE, "-c", cfg, "--eve-log", os.devnull,
               "--no-progress", "--metrics-addr", ""]
        got = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)
    rec: dict = json.loads(got.stdout.strip().splitlines()[-1])
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--bench-config", action="store_true", help="bench/bench.yaml instead of pcaps/sample.yaml")
    ap.add_argument("--modules", action="store_true", help="print the optional modules the replay imported")
    a = ap.parse_args()
    best = [float("inf")] * len(STAGES)
    best_total = float("inf")
    rec: dict = {}
    for _ in range(a.runs):
        rec = run_once(a.bench_config)
        t = rec["t"]
        for i in range(len(STAGES)):
            best[i] = min(best[i], t[i + 1] - t[i])
        best_total = min(best_total, t[-1] - t[0])
    for name, v in zip(STAGES, best, strict=True):
        print(f"{name:28} {v * 1000:7.1f} ms")
    print(f"{'total (best run)':28} {best_total * 1000:7.1f} ms   alerts={rec['alerts']}")
    if a.modules:
        print("optional modules imported:", " ".join(m for m in rec["mods"] if m in OPTIONAL) or "none")


if __name__ == "__main__":
    main()
