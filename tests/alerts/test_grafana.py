"""Grafana dashboard and provisioning: loadable as is; every PromQL expression (dashboard and
rules) parses with promtool and names only metrics a live scrape of the exporter really shows."""

from __future__ import annotations

import dataclasses
import json
import re
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from alerts.metrics import METRICS, MetricsExporter
from monitor.config import default_config
from monitor.stats import Stats
from tests.alerts.prometheus_support import (
    DASHBOARD,
    PROVISIONING,
    RULES,
    metric_names,
    needs_promtool,
    promtool,
)
from tests.conftest import PCAPS

# Series Prometheus itself creates (not the exporter's).
PROMETHEUS_OWN = {"up", "ALERTS", "ALERTS_FOR_STATE"}
GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "6h"}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def dashboard_exprs() -> list[tuple[str, str]]:
    """(where, PromQL) for every query in the dashboard: panels, variables, annotations."""
    d = dashboard()
    out: list[tuple[str, str]] = []
    for p in d["panels"]:
        for t in p.get("targets", []):
            out.append((f"panel {p['id']} {p['title']} {t['refId']}", t["expr"]))
    for v in d["templating"]["list"]:
        m = re.fullmatch(r"label_values\((.*),\s*\w+\)", v["definition"])
        assert m, v
        out.append((f"variable {v['name']}", m.group(1)))
    for a in d["annotations"]["list"]:
        out.append((f"annotation {a['name']}", a["expr"]))
    return out


def rule_exprs() -> list[tuple[str, str]]:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [(f"rule {r['alert']}", r["expr"]) for g in doc["groups"] for r in g["rules"]]


def concrete(expr: str) -> str:
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    return expr


def selected_metrics(expr: str) -> set[str]:
    return metric_names(re.sub(r"\{[^}]*\}", "", concrete(expr)))


def test_dashboard_is_loadable_and_uses_the_provisioned_datasource():
    d = dashboard()
    ds = yaml.safe_load((PROVISIONING / "datasources" / "leakmon.yml").read_text(encoding="utf-8"))
    uid = ds["datasources"][0]["uid"]
    assert ds["apiVersion"] == 1 and ds["datasources"][0]["type"] == "prometheus"
    assert d["uid"] == "leakmon-overview" and d["schemaVersion"] >= 30
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in d["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        if p["type"] != "row":
            assert p["datasource"]["uid"] == uid, p["title"]
            assert p["targets"] and all(t["datasource"]["uid"] == uid for t in p["targets"]), p["title"]
    assert d["templating"]["list"][0]["datasource"]["uid"] == uid
    prov = yaml.safe_load((PROVISIONING / "dashboards" / "leakmon.yml").read_text(encoding="utf-8"))
    assert prov["apiVersion"] == 1 and prov["providers"][0]["type"] == "file"
    assert prov["providers"][0]["options"]["path"].startswith("/")


def test_dashboard_covers_what_security_staff_watch():
    titles = " | ".join(p["title"] for p in dashboard()["panels"])
    exprs = " ".join(e for _, e in dashboard_exprs())
    for needed in ("leakmon_packets_total", "leakmon_kernel_drops_total", "leakmon_internal_drops_total",
                   "leakmon_flows_active", "leakmon_alerts_total", "leakmon_coverage_gap_active",
                   "leakmon_coverage_gaps_total", "leakmon_memcap_hits_total", "leakmon_ready",
                   "leakmon_canary_last_success_timestamp_seconds", "leakmon_alert_latency_seconds_bucket"):
        assert needed in exprs, needed
    for words in ("Alerts by category", "Top signatures", "Coverage", "Drop ratio", "Sensor up"):
        assert words in titles, words


@needs_promtool()
def test_every_expression_parses_with_promtool(tmp_path: Path):
    exprs = dashboard_exprs() + rule_exprs()
    rules = {"groups": [{"name": "parse-check", "rules": [
        {"record": f"leakmon_parse_check_{i}", "expr": concrete(e)} for i, (_, e) in enumerate(exprs)]}]}
    path = tmp_path / "parse.yml"
    path.write_text(yaml.safe_dump(rules, allow_unicode=True), encoding="utf-8")
    r = promtool("check", "rules", str(path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in r.stdout


def test_metric_name_extraction():
    assert selected_metrics('sum by (instance, le) (rate(leakmon_alert_latency_seconds_bucket{job="x"}[$__rate_interval]))') \
        == {"leakmon_alert_latency_seconds_bucket"}
    assert selected_metrics('time() - leakmon_signature_load_timestamp_seconds > 30 * 86400') \
        == {"leakmon_signature_load_timestamp_seconds"}
    assert selected_metrics('a_total unless on (instance) b offset 5m') == {"a_total", "b"}


@pytest.fixture(scope="module")
def scraped_names() -> set[str]:
    """Sample names of a live scrape of an exporter fed by a real replay (+ every table entry)."""
    cfg = default_config()
    cfg = dataclasses.replace(
        cfg,
        signatures=[str(PCAPS.parent / "signatures" / "markers.yaml")],
        networks=dataclasses.replace(cfg.networks, protected=["10.77.0.0/24"]),
        evidence=dataclasses.replace(cfg.evidence, enabled=False),
        metrics=dataclasses.replace(cfg.metrics, addr="127.0.0.1:0"),
        canary=dataclasses.replace(cfg.canary, enabled=True),
    )
    stats = Stats()
    x = MetricsExporter(cfg, stats, {"mode": "replay", "signatures_version": "test"}).start()
    try:
        if _replay(cfg, stats, x):
            real = _names(x)
            assert {"leakmon_packets_total", "leakmon_bytes_total", "leakmon_flows_created_total",
                    "leakmon_files_total", "leakmon_signatures", "leakmon_events_total"} <= real
        # The detection issue owns which captures alert; one alert through the sink makes the family appear.
        from monitor.events import Event
        from tests.factories import tflow

        x(Event("alert", 0.0, {"alert": {"signature_id": 9100001, "category": "protected-data-leak", "severity": 1}},
                tflow(), ingress=0.0))
        # Counters a short benign replay cannot produce (drops, memcaps, reloads ...): one sample each.
        for spec in METRICS:
            labels = {stat_label: "x" for stat_label, _ in spec.labels}
            if spec.kind == "counter":
                stats.incr(spec.stat, **labels)
            else:
                stats.set(spec.stat, 1, **labels)
        names = _names(x)
    finally:
        x.close()
    assert "leakmon_alerts_total" in names
    return names


def _names(x: MetricsExporter) -> set[str]:
    with urllib.request.urlopen(f"http://{x.address}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}


def _replay(cfg, stats: Stats, exporter: MetricsExporter) -> bool:
    """Replay a committed capture through the real pipeline with the exporter subscribed."""
    try:
        from monitor.capture.pcapfile import read_capture
        from monitor.pipeline import Pipeline
    except ImportError:
        return False
    pipeline = Pipeline(cfg, stats=stats, eve_path="", replay=True)
    pipeline.bus.subscribe("metrics", exporter)
    for raw in read_capture(str(PCAPS / "http-uploads.pcap"), stats=stats):
        pipeline.process(raw)
    pipeline.finish()
    assert stats.total("capture.packets") > 100
    return True


def test_dashboard_and_rules_name_only_exported_metrics(scraped_names: set[str]):
    missing = {}
    for where, expr in dashboard_exprs() + rule_exprs():
        unknown = selected_metrics(expr) - scraped_names - PROMETHEUS_OWN
        if unknown:
            missing[where] = sorted(unknown)
    assert not missing, missing
