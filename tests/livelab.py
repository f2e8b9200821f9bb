"""A live sensor in the namespace lab (pcaps/lab.py): its configuration, its start and its stop.

Shared by the live end-to-end tests and by the live benchmarks (bench/live_rate.py, and through
it bench/latency.py); bench/ already imports test helpers from ``tests`` (tests/factories.py).
pcaps/lab.py makes and deletes the namespaces and the veth pair; this module adds what every
live run does on top of it:

    with Lab("live") as lab:
        serve_uploads(lab, 8094)                              # pcaps/upload_server.py, listening
        sensor = LiveSensor(lab.sns, lab.sif, write_config(tmp), tmp / "eve.json",
                            log=tmp / "leakmon.log").start()  # returns once it captures
        try:
            lab.client(curl_upload(lab, body, 8094, 40411))
        finally:
            rc = sensor.stop()                                # SIGINT; a hung sensor is killed

Nothing here imports pytest: a sensor that dies or hangs raises (``SensorError``,
``TimeoutError``, ``SensorHung``) and the caller decides what that means.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from alerts.schema import validate_lines
from pcaps.lab import CLIENT_IP, Lab

ROOT = Path(__file__).resolve().parents[1]
UPLOAD_SERVER = ROOT / "pcaps" / "upload_server.py"

# What a lab sensor watches for: the lab client is the protected side, the server is outside.
# No evidence store and no exporter unless a test asks for them.
LAB_CONFIG: dict[str, Any] = {
    "sensor": {"name": "lab"},
    "networks": {"protected": [f"{CLIENT_IP}/32"]},
    "signatures": [str(ROOT / "signatures")],
    "evidence": {"enabled": False},
    "metrics": {"addr": ""},
}


def write_config(tmp: Path, *overrides: Mapping[str, Any] | None, base: Mapping[str, Any] | None = None) -> Path:
    """Write ``tmp/leakmon.yaml`` and return its path.

    ``base`` (default ``LAB_CONFIG``) with every file the sensor writes pointed into ``tmp``
    (``eve.json``, ``incidents.db``, ``audit.jsonl``, ``coverage.jsonl``); then each override in
    turn: a dict value updates its section, any other value replaces it.
    """
    doc = copy.deepcopy(dict(LAB_CONFIG if base is None else base))
    doc.setdefault("outputs", {}).setdefault("eve", {})["path"] = str(tmp / "eve.json")
    doc.setdefault("incidents", {})["db"] = str(tmp / "incidents.db")
    doc.setdefault("audit", {})["path"] = str(tmp / "audit.jsonl")
    doc.setdefault("coverage", {})["path"] = str(tmp / "coverage.jsonl")
    for sections in overrides:
        for section, values in (sections or {}).items():
            if isinstance(values, dict):
                doc.setdefault(section, {}).update(values)
            else:
                doc[section] = values
    path = tmp / "leakmon.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


def serve_uploads(lab: Lab, port: int) -> None:
    """pcaps/upload_server.py in the server namespace (answers 201), listening once this returns."""
    lab.server([sys.executable, str(UPLOAD_SERVER), "0.0.0.0", str(port)])
    lab.wait_port(port)


def curl_upload(lab: Lab, body: Path, port: int, local_port: int, *extra: str) -> list[str]:
    """curl's argv (for ``lab.client`` or ``lab.background``): POST ``body`` as UTF-8 text to the lab
    server, from ``local_port`` (the connection is known by its source port); prints the status."""
    return ["curl", "-s", "--http1.1", "--local-port", str(local_port), "-o", "/dev/null", "-w", "%{http_code}",
            "-H", "Content-Type: text/plain; charset=utf-8", "--data-binary", f"@{body}", *extra,
            f"http://{lab.server_ip}:{port}/upload"]


def eve_records(eve: Path) -> list[dict[str, Any]]:
    """The EVE file's records, each line whole and valid against the schema."""
    text = eve.read_text(encoding="utf-8")
    assert text.endswith("\n")
    return validate_lines(text.splitlines())


def link(ns: str, iface: str, stats: bool = False) -> dict[str, Any]:
    """``ip -j link show`` of one interface in a namespace (with ``-s``: its counters in stats64)."""
    argv = ["ip", "-n", ns, *(["-s"] if stats else []), "-j", "link", "show", iface]
    out = subprocess.run(argv, capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout)[0])


def ifindex(ns: str, iface: str) -> int:
    return int(link(ns, iface)["ifindex"])


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (the sensor and its workers), parent first."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                todo.extend(int(c) for c in Path(f"/proc/{p}/task/{task}/children").read_text().split())
    return out


def _socket_inodes(pids: Sequence[int]) -> set[int]:
    inodes = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        inodes.add(int(target[8:-1]))
    return inodes


def capture_sockets(pid: int, index: int) -> int:
    """Packet sockets bound to interface ``index`` that ``pid`` or one of its descendants holds.

    /proc/<pid>/net/packet lists every packet socket of the namespace (tcpdump's too), so the
    sensor's are recognised by their inode among its processes' descriptors.
    """
    try:
        rows = [r.split() for r in Path(f"/proc/{pid}/net/packet").read_text().splitlines()[1:]]
    except OSError:
        return 0
    mine = _socket_inodes(process_tree(pid))
    # sk RefCnt Type Proto Iface R Rmem User Inode
    return sum(1 for r in rows if len(r) > 8 and int(r[4]) == index and int(r[8]) in mine)


class SensorError(RuntimeError):
    """The sensor exited while it was expected to run."""


class SensorHung(AssertionError):
    """The sensor did not exit after its stop signal; it and its workers were killed."""


@dataclass
class LiveSensor:
    """``leakmon run -i <iface>`` in a lab namespace, started and stopped like an operator would."""

    ns: str
    iface: str
    config: Path
    eve: Path | None = None  # --eve-log (None: the configured path)
    workers: int = 1
    metrics_addr: str = ""  # --metrics-addr ("": the configured address)
    log: Path | None = None  # the sensor's stdout and stderr
    args: Sequence[str] = ()  # more `leakmon run` options (--pidfile, --bpf ...)
    env: Mapping[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = None
    startup_s: float = 0.0

    def argv(self) -> list[str]:
        argv = ["ip", "netns", "exec", self.ns, sys.executable, "-m", "monitor", "run", "-i", self.iface,
                "-c", str(self.config), "--workers", str(self.workers)]
        if self.eve is not None:
            argv += ["--eve-log", str(self.eve)]
        if self.metrics_addr:
            argv += ["--metrics-addr", self.metrics_addr]
        return [*argv, *self.args]

    def start(self, timeout: float = 60.0) -> LiveSensor:
        """Start it and return once every worker has its capture socket bound to the interface
        (so fanout covers all flows); a sensor that fails to start is killed, then raises."""
        t0 = time.monotonic()
        with open(self.log, "wb") if self.log else contextlib.nullcontext() as out:
            self.proc = subprocess.Popen(self.argv(), stdout=out or subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                         cwd=ROOT, env=None if self.env is None else dict(self.env))
        try:
            index = ifindex(self.ns, self.iface)
            self.wait_for(lambda: capture_sockets(self.pid, index) >= self.workers,
                          "its capture sockets", timeout)
            time.sleep(0.3)  # the ring is mapped and the fanout group joined right after bind()
        except BaseException:
            self.kill()  # a half-started sensor (one worker dead) must not outlive the caller
            raise
        self.startup_s = time.monotonic() - t0
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log else ""

    def wait_for(self, cond: Callable[[], object], what: str, timeout: float = 30.0) -> None:
        """Poll ``cond`` until it is true; SensorError when the sensor exits first, TimeoutError after ``timeout``."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SensorError(f"leakmon exited early ({self.proc.returncode}): {self.tail()}")
            if cond():
                return
            time.sleep(0.1)
        raise TimeoutError(f"leakmon: no {what} within {timeout} s: {self.tail()}")

    def kill(self) -> None:
        """SIGKILL to the sensor and all its processes."""
        assert self.proc is not None
        for pid in process_tree(self.proc.pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0, term_workers: bool = False) -> int:
        """Send ``sig`` (SIGINT: an operator's Ctrl-C) and return the exit code.

        ``term_workers`` also sends SIGTERM to each worker, as the parent is meant to do. A sensor
        that has not exited after ``timeout`` seconds is killed with all its processes (no
        orphaned workers) and SensorHung is raised.
        """
        assert self.proc is not None
        tree = process_tree(self.proc.pid)
        self.proc.send_signal(sig)
        if term_workers:
            time.sleep(0.3)
            for pid in tree[1:]:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise SensorHung(f"leakmon did not exit within {timeout} s of {signal.Signals(sig).name}") from None

