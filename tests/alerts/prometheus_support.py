"""Helpers for tests that use the real Prometheus tools (promtool, prometheus) on loopback."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "alerts" / "prometheus" / "leakmon.rules.yml"
RULE_TESTS = sorted((ROOT / "alerts" / "prometheus" / "tests").glob("*.test.yml"))
DASHBOARD = ROOT / "alerts" / "grafana" / "leakmon-dashboard.json"
PROVISIONING = ROOT / "alerts" / "grafana" / "provisioning"

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def needs_promtool() -> pytest.MarkDecorator:
    return pytest.mark.skipif(not os.access(PROMTOOL, os.X_OK), reason="promtool not installed (apt install prometheus)")


def needs_prometheus() -> pytest.MarkDecorator:
    return pytest.mark.skipif(not os.access(PROMETHEUS, os.X_OK), reason="prometheus not installed (apt install prometheus)")


def promtool(*args: str, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rules_with(changes: dict[str, dict[str, str]]) -> dict[str, Any]:
    """The shipped rules with per-alert text substitutions in `expr` (and a new `for`).

    ``{"LeakmonCaptureStalled": {"[5m]": "[6s]", "for": "0s"}}`` shortens one rule for a
    test that cannot wait five minutes; the rest of the rule is the shipped one.
    """
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    for group in doc["groups"]:
        for rule in group["rules"]:
            subs = changes.get(rule.get("alert", ""))
            if not subs:
                continue
            for old, new in subs.items():
                if old == "for":
                    rule["for"] = new
                else:
                    assert old in rule["expr"], f"{old!r} not in {rule['alert']}"
                    rule["expr"] = rule["expr"].replace(old, new)
    return doc


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (identifiers not followed by '(' and not keywords)."""
    no_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    no_ranges = re.sub(r"\[[^\]]*\]", "", no_strings)
    no_groupings = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", no_ranges)
    names = set()
    for m in re.finditer(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", no_groupings):
        word = m.group(1)
        if word in _KEYWORDS or re.fullmatch(r"\d.*", word):
            continue
        names.add(word)
    return names


_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset",
             "bool", "inf", "nan", "Inf", "NaN", "le"}


class Prometheus:
    """A real Prometheus server on loopback with its own TSDB in a temporary folder."""

    def __init__(self, workdir: Path, targets: list[str], rules: dict[str, Any], interval: str = "1s",
                 fetch: Any = None) -> None:
        self.dir = workdir
        # How to GET a URL of this server (a namespace's loopback needs `ip netns exec`).
        self.fetch = fetch or _urlopen
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        rules_path = workdir / "rules.yml"
        rules_path.write_text(yaml.safe_dump(rules, allow_unicode=True), encoding="utf-8")
        cfg = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
            "rule_files": [str(rules_path)],
            "scrape_configs": [{"job_name": "leakmon", "static_configs": [{"targets": targets}]}],
        }
        self.config = workdir / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(cfg), encoding="utf-8")
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        return [PROMETHEUS, f"--config.file={self.config}", f"--storage.tsdb.path={self.dir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"]

    def start(self, prefix: list[str] | None = None) -> Prometheus:
        self.log = open(self.dir / "prometheus.log", "wb")
        self.proc = subprocess.Popen([*(prefix or []), *self.argv()], stdout=self.log, stderr=subprocess.STDOUT)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def api(self, path: str) -> Any:
        return json.loads(self.fetch(self.url + path))

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError("prometheus exited: " + (self.dir / "prometheus.log").read_text(errors="replace"))
            try:
                self.fetch(self.url + "/-/ready")
                return
            except (OSError, subprocess.SubprocessError):
                pass
            time.sleep(0.2)
        raise TimeoutError("prometheus not ready")

    def firing(self, alertname: str) -> list[dict[str, Any]]:
        alerts = self.api("/api/v1/alerts")["data"]["alerts"]
        return [a for a in alerts if a["labels"].get("alertname") == alertname and a["state"] == "firing"]

    def wait_firing(self, alertname: str, timeout: float = 60, **labels: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for a in self.firing(alertname):
                if all(a["labels"].get(k) == v for k, v in labels.items()):
                    return a
            time.sleep(0.5)
        raise TimeoutError(f"{alertname} {labels} not firing; alerts: {self.api('/api/v1/alerts')['data']}")


def _urlopen(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as r:
        return bytes(r.read())


def netns_fetch(ns: str) -> Any:
    """A fetch function that GETs from inside network namespace ``ns``."""

    def fetch(url: str) -> bytes:
        code = ("import sys,urllib.request;"
                "sys.stdout.buffer.write(urllib.request.urlopen(sys.argv[1],timeout=5).read())")
        r = subprocess.run(["ip", "netns", "exec", ns, "python3", "-c", code, url], capture_output=True, timeout=20)
        if r.returncode != 0:
            raise OSError(r.stderr.decode(errors="replace")[-300:])
        return r.stdout

    return fetch


@contextlib.contextmanager
def running_prometheus(workdir: Path, targets: list[str], rules: dict[str, Any]) -> Iterator[Prometheus]:
    prom = Prometheus(workdir, targets, rules).start()
    try:
        prom.wait_ready()
        yield prom
    finally:
        prom.stop()
