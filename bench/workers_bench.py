#!/usr/bin/env python3
"""Where the CPU of a ``--workers N`` replay goes: the parent and each worker, against 1 worker.

    python3 bench/workers_bench.py bench/data/m200.pcap [--workers 1 2] [--repeat 3] [--eve PATH]

Runs ``leakmon replay`` (the real CLI path, each run in a fresh interpreter, as from the shell)
once per worker count and repeat, alternating the counts so that a shared machine's load hits
each alike, and prints per run:
the parent's CPU, each worker's CPU (user+sys, system part and minor page faults) and the total;
then the best total per count and the extra CPU of N workers over one. CPU seconds, not wall:
on a shared machine wall time says more about the neighbours than about leakmon.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

REPORT = "LEAKMON_WORKERS_BENCH_FD"


def _cpu(ru: resource.struct_rusage) -> float:
    return ru.ru_utime + ru.ru_stime


def _instrument_workers() -> None:
    """Each worker writes one line (its rusage at exit) to the pipe named in the environment."""
    import monitor.workers as workers

    run_worker = workers._replay_worker

    def reporting_worker(*args: object, **kwargs: object) -> None:
        try:
            run_worker(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            ru = resource.getrusage(resource.RUSAGE_SELF)
            line = f"{args[2]} {_cpu(ru):.3f} {ru.ru_stime:.3f} {ru.ru_minflt}\n"
            os.write(int(os.environ[REPORT]), line.encode())

    workers._replay_worker = reporting_worker  # type: ignore[assignment]


def measure(capture: str, config: str, n: int, eve: str) -> dict[str, object]:
    """One instrumented replay in this (fresh) process."""
    from monitor.cli import main

    _instrument_workers()
    rfd, wfd = os.pipe()
    os.environ[REPORT] = str(wfd)
    t0 = time.perf_counter()
    rc = main(["replay", capture, "-c", config, "--eve-log", eve, "--no-progress", "--metrics-addr", "",
               "--workers", str(n)])
    wall = time.perf_counter() - t0
    parent, children = _cpu(resource.getrusage(resource.RUSAGE_SELF)), _cpu(resource.getrusage(resource.RUSAGE_CHILDREN))
    os.close(wfd)
    with os.fdopen(rfd) as fh:
        per_worker = sorted(tuple(float(x) for x in line.split()) for line in fh)
    assert rc == 0, f"replay failed ({rc})"
    return {"workers": n, "wall": wall, "parent": parent, "children": children, "total": parent + children,
            "per_worker": per_worker}


def run_once(capture: str, config: str, n: int, eve: str) -> dict[str, object]:
    if eve != os.devnull and os.path.exists(eve):
        os.unlink(eve)  # the EVE writer appends
    out = subprocess.run([sys.executable, __file__, "--one", capture, "--config", config, "--workers", str(n),
                          "--eve", eve], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("capture")
    ap.add_argument("--config", default=str(ROOT / "bench" / "bench.yaml"))
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--eve", default="", help="EVE output (default: a temporary file, as bench/run)")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # one run, in a fresh process
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(args.capture, args.config, args.workers[0], args.eve)))
        return 0
    eve = args.eve or os.path.join(tempfile.mkdtemp(prefix="leakmon-wbench-"), "eve.json")
    best: dict[int, float] = {}
    for rep in range(args.repeat):
        for n in args.workers:
            r = run_once(args.capture, args.config, n, eve)
            workers_text = "  ".join(f"w{int(i)} {cpu:.2f}s (sys {sys_s:.2f}, {int(flt)} faults)"
                                     for i, cpu, sys_s, flt in r["per_worker"])  # type: ignore[attr-defined]
            print(f"run {rep + 1} workers={n}: total {r['total']:.2f}s cpu, wall {r['wall']:.2f}s, "
                  f"parent {r['parent']:.2f}s  {workers_text}", flush=True)
            best[n] = min(best.get(n, float("inf")), float(r["total"]))  # type: ignore[arg-type]
    base = best.get(1)
    for n, cpu in sorted(best.items()):
        extra = f", {cpu - base:+.2f}s over 1 worker" if base is not None and n != 1 else ""
        print(f"best of {args.repeat}: {n} worker(s) {cpu:.2f}s cpu{extra}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
