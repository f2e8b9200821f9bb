"""Alerting rules: promtool check + unit tests, and a real Prometheus evaluating them against the exporter."""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from pathlib import Path

import yaml

from alerts.metrics import MetricsExporter
from monitor.config import default_config
from monitor.events import Event
from monitor.stats import Stats
from tests.alerts.prometheus_support import (
    ROOT,
    RULE_TESTS,
    RULES,
    needs_prometheus,
    needs_promtool,
    promtool,
    rules_with,
    running_prometheus,
)
from tests.factories import tflow

EXPECTED_ALERTS = {
    "LeakmonLeakDetected", "LeakmonSensorDown", "LeakmonSensorAbsent", "LeakmonNotReady", "LeakmonCaptureStalled",
    "LeakmonCaptureInterfaceError", "LeakmonPacketDrops", "LeakmonMemcapHit", "LeakmonFlowsEvicted", "LeakmonSignatureReloadFailed",
    "LeakmonSignaturesNotLoaded", "LeakmonSignaturesStale", "LeakmonClockSkew", "LeakmonCanaryStale",
}


def all_rules() -> list[dict]:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [r for g in doc["groups"] for r in g["rules"]]


@needs_promtool()
def test_promtool_check_rules():
    r = promtool("check", "rules", str(RULES))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(EXPECTED_ALERTS)} rules found" in r.stdout


@needs_promtool()
def test_promtool_unit_tests_pass():
    assert len(RULE_TESTS) == 2
    r = promtool("test", "rules", *map(str, RULE_TESTS))
    assert r.returncode == 0, r.stdout + r.stderr
    assert (r.stdout + r.stderr).count("SUCCESS") == len(RULE_TESTS)


def test_every_rule_has_severity_and_bilingual_annotations():
    rules = all_rules()
    assert {r["alert"] for r in rules} == EXPECTED_ALERTS
    for r in rules:
        assert r["labels"]["severity"] in ("critical", "warning", "info"), r["alert"]
        ann = r["annotations"]
        assert set(ann) == {"summary", "description", "summary_ja", "description_ja"}, r["alert"]
        assert re.search(r"[\u3040-\u30ff\u4e00-\u9fff]", ann["summary_ja"] + ann["description_ja"]), r["alert"]
        assert not re.search(r"[\u3040-\u30ff]", ann["summary"]), r["alert"]  # English stays English


def test_every_rule_is_exercised_by_the_unit_tests():
    tests = [t for f in RULE_TESTS for t in yaml.safe_load(f.read_text(encoding="utf-8"))["tests"]]
    fired = {c["alertname"] for t in tests for c in t.get("alert_rule_test", []) if c.get("exp_alerts")}
    silent = {c["alertname"] for t in tests for c in t.get("alert_rule_test", []) if not c.get("exp_alerts")}
    assert fired == EXPECTED_ALERTS
    # Negative cases exist for the rules where a false alarm would cost the most.
    assert {"LeakmonLeakDetected", "LeakmonCaptureStalled", "LeakmonPacketDrops", "LeakmonCanaryStale",
            "LeakmonClockSkew", "LeakmonSensorDown"} <= silent


def test_canary_alerts_never_count_as_leaks():
    leak = next(r for r in all_rules() if r["alert"] == "LeakmonLeakDetected")
    assert leak["expr"].count('category!="canary"') == 2


@needs_promtool()
def test_example_prometheus_config_is_valid(tmp_path: Path):
    cfg = yaml.safe_load((ROOT / "alerts/prometheus/prometheus.yml").read_text(encoding="utf-8"))
    assert cfg["scrape_configs"][0]["job_name"] == "leakmon"  # the rules match on it
    cfg["rule_files"] = [str(RULES)]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    r = promtool("check", "config", str(path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout and f"{len(EXPECTED_ALERTS)} rules found" in r.stdout


def test_alertmanager_example_routes_to_defined_receivers():
    am = yaml.safe_load((ROOT / "alerts/prometheus/alertmanager.yml").read_text(encoding="utf-8"))
    receivers = {r["name"] for r in am["receivers"]}
    routes = [am["route"], *am["route"]["routes"]]
    assert all(r["receiver"] in receivers for r in routes)
    leak_route = am["route"]["routes"][0]
    assert leak_route["matchers"] == ['alertname="LeakmonLeakDetected"'] and leak_route["group_wait"] == "0s"
    names = {r["alert"] for r in all_rules()}
    for route in routes:
        for m in route.get("matchers", []):
            key, _, value = m.partition("=")
            if key == "alertname":
                assert value.strip('"') in names


def _exporter(stats: Stats) -> MetricsExporter:
    cfg = default_config()
    cfg = dataclasses.replace(cfg, metrics=dataclasses.replace(cfg.metrics, addr="127.0.0.1:0"))
    return MetricsExporter(cfg, stats, {"signatures_version": "test", "capture_running": True}).start()


@needs_prometheus()
def test_real_prometheus_fires_leak_alert_from_exporter(tmp_path: Path):
    """Prometheus scrapes the exporter every second and evaluates the shipped leak rule."""
    stats = Stats()
    stats.set("signatures.loaded_at", time.time())
    x = _exporter(stats)
    try:
        with running_prometheus(tmp_path, [x.address], rules_with({})) as prom:
            # A few scrapes without alerts first: the leak series must appear as a new series.
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                up = prom.api('/api/v1/query?query=up{job="leakmon"}')["data"]["result"]
                if up and up[0]["value"][1] == "1":
                    break
                time.sleep(0.3)
            else:
                raise AssertionError("exporter never scraped")
            assert prom.firing("LeakmonLeakDetected") == []
            flow = tflow(client="10.77.0.1", server="10.77.0.2")
            x(Event("alert", time.time(), {"alert": {"signature_id": 9100001, "category": "protected-data-leak",
                                                     "severity": 1}}, flow, ingress=time.monotonic() - 0.01))
            x(Event("alert", time.time(), {"alert": {"signature_id": 9999901, "category": "canary",
                                                     "severity": 4}}, flow))
            alert = prom.wait_firing("LeakmonLeakDetected", timeout=30, sid="9100001")
            assert alert["labels"]["category"] == "protected-data-leak"
            assert alert["labels"]["severity"] == "critical" and alert["labels"]["signature_severity"] == "1"
            assert alert["annotations"]["summary"].startswith("Protected data leaving the protected network (sid 9100001)")
            assert "保護対象データの外部送信を検知" in alert["annotations"]["summary_ja"]
            assert all(a["labels"]["sid"] != "9999901" for a in prom.firing("LeakmonLeakDetected"))
    finally:
        x.close()


@needs_prometheus()
def test_real_prometheus_fires_stall_alert_when_packets_stop(tmp_path: Path):
    """Packets flow, then stop: the capture-stalled rule (window shortened to 5 s) fires for that interface."""
    stats = Stats()
    stats.set("signatures.loaded_at", time.time())
    stats.incr("capture.packets", 0, iface="veth-mon")
    x = _exporter(stats)
    stop = threading.Event()

    def traffic() -> None:
        while not stop.wait(0.2):
            stats.incr("capture.packets", 10, iface="veth-mon")

    t = threading.Thread(target=traffic, daemon=True)
    rules = rules_with({"LeakmonCaptureStalled": {"[5m]": "[5s]", "for": "0s"}})
    try:
        with running_prometheus(tmp_path, [x.address], rules) as prom:
            t.start()
            time.sleep(8)  # traffic seen by several scrapes: no stall while packets move
            assert prom.firing("LeakmonCaptureStalled") == []
            stop.set()
            stopped = time.monotonic()
            alert = prom.wait_firing("LeakmonCaptureStalled", timeout=40, interface="veth-mon")
            assert time.monotonic() - stopped >= 4  # not before the window has passed
            assert alert["labels"]["severity"] == "critical"
            assert "veth-mon" in alert["annotations"]["summary_ja"]
    finally:
        stop.set()
        x.close()
