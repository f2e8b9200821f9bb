#!/usr/bin/env python3
"""Precision and recall of leak detection on generated mixed traffic (issue 4).

    python3 bench/precision.py                        # 1 GiB benign + 256 MiB leaky, shipped signatures
    python3 bench/precision.py --size 64MiB --leaky-size 32MiB   # quick look
    python3 bench/precision.py --only leaky --leak-every 20

Precision: ``bench/gen.py mixed --no-leaks`` (Japanese and English text in UTF-8, CP932,
EUC-JP, ISO-2022-JP, UTF-16, JSON and HTML escapes; Office files, archives, binaries; HTTP,
SMTP, FTP, TLS, DNS) replayed with bench/bench.yaml (shipped signatures, evidence off) must
raise no alert in a leak category. The replay also turns on ``policy.inbound_events``, so a
marker match on the half of the traffic that flows *into* the protected side (downloads,
FTP RETR), which policy would never alert, still shows up as a ``finding`` and counts as a
matcher false positive.

Recall: the same generator without ``--no-leaks`` (leaks at known flows, listed in
``<capture>.leaks.json``) must alert every listed flow with its sid and no other flow.

Exit status 0 only when both hold. Captures are generated into --data when missing (same
seed, same bytes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.leakcheck import (  # noqa: E402 - needs the repo root on sys.path
    EveSummary,
    Recall,
    check_recall,
    load_leaks,
    summarize,
)
from monitor.config import parse_size  # noqa: E402

SHOW = 20  # individual false positives / misses printed


def ensure_capture(path: Path, size: str, leaks: bool, leak_every: int, regen: bool) -> Path:
    if regen or not path.exists() or not Path(str(path) + ".leaks.json").exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, str(ROOT / "bench" / "gen.py"), "mixed", "--size", size, "-o", str(path)]
        argv += ["--leak-every", str(leak_every)] if leaks else ["--no-leaks"]
        print("generating:", " ".join(argv[1:]), flush=True)
        subprocess.run(argv, check=True)
    return path


def derived_config(config: Path, tmp: Path) -> Path:
    """bench.yaml with inbound findings on, signature paths absolute and scratch files in tmp."""
    data: dict[str, Any] = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    base = config.resolve().parent
    data["signatures"] = [p if os.path.isabs(p) else str((base / p).resolve()) for p in data.get("signatures", [])]
    data.setdefault("policy", {})["inbound_events"] = True
    for section, key, name in (("incidents", "db", "incidents.db"), ("audit", "path", "audit.jsonl"),
                               ("coverage", "path", "coverage.jsonl")):
        if section in data:
            data[section][key] = str(tmp / name)
    out = tmp / "precision.yaml"
    out.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return out


def replay(capture: Path, config: Path, eve: Path, workers: int) -> dict[str, Any]:
    """Run `leakmon replay`; wall and CPU time of the whole process tree, its summary line."""
    argv = [sys.executable, "-m", "monitor", "replay", str(capture), "-c", str(config), "--eve-log", str(eve),
            "--no-progress", "--metrics-addr", "", "--workers", str(workers)]
    eve.unlink(missing_ok=True)  # the EVE writer appends: a kept file from an earlier run would count twice
    print("replaying:", " ".join(["leakmon", *argv[3:]]), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    tail = err.decode(errors="replace").strip().splitlines()
    if proc.returncode != 0:
        raise RuntimeError(f"leakmon replay failed ({proc.returncode}): {' | '.join(tail[-5:])}")
    size = capture.stat().st_size
    return {"capture": str(capture), "bytes": size, "wall_s": round(wall, 2),
            "cpu_s": round(ru.ru_utime + ru.ru_stime, 2), "gbps": round(size * 8 / wall / 1e9, 3),
            "summary": tail[-1] if tail else ""}


def report_summary(s: EveSummary) -> None:
    print(f"  events: {dict(s.events)}")
    print(f"  alerts by category: {dict(s.alerts_by_category) or '{}'}")
    print(f"  alerts by sid: {dict(s.alerts_by_sid) or '{}'}")
    print(f"  findings (inbound matches) by category: {dict(s.findings_by_category) or '{}'}")


def run_benign(args: argparse.Namespace, config: Path, tmp: Path) -> tuple[bool, dict[str, Any]]:
    cap = ensure_capture(Path(args.data) / f"benign-{args.size}.pcap", args.size, False, 0, args.regen)
    eve = Path(args.keep_eve or tmp) / "benign.eve.json"
    r = replay(cap, config, eve, args.workers)
    s = summarize(eve)
    print(f"benign {cap.name}: {r['bytes'] / 1e6:.0f} MB in {r['wall_s']} s ({r['gbps']} Gbps, cpu {r['cpu_s']} s)")
    print(f"  {r['summary']}")
    report_summary(s)
    for h in (s.leak_alerts + s.findings)[:SHOW]:
        print("  FALSE POSITIVE:", h.describe())
    ok = s.leak_alert_count == 0 and not s.findings
    print(f"PRECISION {'PASS' if ok else 'FAIL'}: {s.leak_alert_count} leak alerts, {len(s.findings)} inbound findings "
          f"on {r['bytes'] / 1e9:.2f} GB of benign traffic", flush=True)
    r.update(leak_alerts=s.leak_alert_count, findings=len(s.findings), alerts_by_category=dict(s.alerts_by_category),
             events=dict(s.events), ok=ok)
    return ok, r


def run_leaky(args: argparse.Namespace, config: Path, tmp: Path) -> tuple[bool, dict[str, Any]]:
    cap = ensure_capture(Path(args.data) / f"leaky-{args.leaky_size}-every{args.leak_every}.pcap",
                         args.leaky_size, True, args.leak_every, args.regen)
    leaks = load_leaks(cap) or []
    eve = Path(args.keep_eve or tmp) / "leaky.eve.json"
    r = replay(cap, config, eve, args.workers)
    s = summarize(eve)
    rec: Recall = check_recall(s, leaks)
    print(f"leaky {cap.name}: {r['bytes'] / 1e6:.0f} MB in {r['wall_s']} s ({r['gbps']} Gbps, cpu {r['cpu_s']} s)")
    print(f"  {r['summary']}")
    report_summary(s)
    for leak in rec.missed[:SHOW]:
        print(f"  MISSED: {leak['kind']} {leak['src_ip']}:{leak['src_port']} -> "
              f"{leak['dest_ip']}:{leak['dest_port']} sid {leak['sid']}")
    for h in rec.unexpected[:SHOW]:
        print("  UNEXPECTED:", h.describe())
    ok = rec.ok and bool(leaks) and not s.findings
    print(f"RECALL {'PASS' if ok else 'FAIL'}: {rec.line()}, {len(s.findings)} inbound findings", flush=True)
    kinds: dict[str, int] = {}
    for leak in leaks:
        kinds[leak["kind"]] = kinds.get(leak["kind"], 0) + 1
    r.update(expected=len(leaks), found=rec.found, unexpected=len(rec.unexpected), leak_kinds=kinds,
             alerts_by_category=dict(s.alerts_by_category), ok=ok)
    return ok, r


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1GiB", help="Benign capture size (at least 1 GiB for the issue's claim)")
    ap.add_argument("--leaky-size", default="256MiB", help="Leaky capture size")
    ap.add_argument("--leak-every", type=int, default=20, help="About one upload/mail flow in N leaks (leaky capture)")
    ap.add_argument("--config", default=str(ROOT / "bench" / "bench.yaml"))
    ap.add_argument("--data", default=str(ROOT / "bench" / "data"), help="Where captures are kept")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--only", choices=["benign", "leaky", "both"], default="both")
    ap.add_argument("--regen", action="store_true", help="Regenerate captures even when present")
    ap.add_argument("--keep-eve", default="", help="Keep the EVE files in this folder")
    ap.add_argument("--json", default="", help="Write the results here")
    args = ap.parse_args(argv)
    parse_size(args.size), parse_size(args.leaky_size)  # fail early on a bad size
    if args.keep_eve:
        Path(args.keep_eve).mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    ok = True
    with tempfile.TemporaryDirectory(prefix="leakmon-precision-") as t:
        tmp = Path(t)
        config = derived_config(Path(args.config), tmp)
        if args.only in ("leaky", "both"):
            good, results["leaky"] = run_leaky(args, config, tmp)
            ok &= good
        if args.only in ("benign", "both"):
            good, results["benign"] = run_benign(args, config, tmp)
            ok &= good
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1), encoding="utf-8")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
