"""The Prometheus exporter: naming, scrape-time collection, alert sink, label guard, /healthz."""

from __future__ import annotations

import dataclasses
import json
import re
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from alerts.metrics import METRICS, OTHER, LabelGuard, MetricsExporter, sensor_info, split_addr
from monitor.config import default_config
from monitor.events import Event
from monitor.stats import Stats
from tests.factories import tflow

ALLOWED_LABELS = {"interface", "reason", "cap", "stage", "type", "layer", "protocol", "state", "cause", "sink",
                  "kind", "variant", "view", "channel", "outcome"}


def make_cfg(addr: str = "127.0.0.1:0", cap: int = 200, canary: bool = False):
    cfg = default_config()
    return dataclasses.replace(
        cfg,
        metrics=dataclasses.replace(cfg.metrics, addr=addr, label_values_cap=cap),
        canary=dataclasses.replace(cfg.canary, enabled=canary, interval=120.0),
    )


def scrape(x: MetricsExporter) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """{sample name: {sorted labels: value}} from a real HTTP scrape."""
    with urllib.request.urlopen(f"http://{x.address}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def alert_event(sid: int, category: str, severity: int, ingress: float | None = None, flow=None) -> Event:
    body = {"alert": {"action": "allowed", "gid": 1, "signature_id": sid, "rev": 1, "signature": "保護すべき情報 label",
                      "category": category, "severity": severity},
            "fileinfo": {"filename": "見積書-機密.docx"},
            "leakmon": {"context": "…[保護すべき情報]…"}}
    return Event("alert", time.time(), body, flow or tflow(client="10.1.2.3", server="203.0.113.9"), ingress=ingress)


@pytest.fixture
def exporter():
    stats = Stats()
    x = MetricsExporter(make_cfg(), stats, {"signatures_version": "2024.04.1", "mode": "replay"}).start()
    yield x
    x.close()


def test_table_follows_prometheus_naming():
    by_metric: dict[str, set[str]] = {}
    for spec in METRICS:
        assert spec.metric.startswith("leakmon_"), spec
        assert re.fullmatch(r"[a-z_]+", spec.metric), spec
        if spec.kind == "counter":
            assert spec.metric.endswith("_total"), spec
        else:
            assert not spec.metric.endswith("_total"), spec
        if "timestamp" in spec.metric or spec.stat.endswith("_ts"):
            assert spec.metric.endswith("_seconds"), spec
        if "bytes" in spec.stat:
            assert "_bytes" in spec.metric, spec
        for prom in [p for _, p in spec.labels] + [name for name, _ in spec.const]:
            assert prom in ALLOWED_LABELS, (spec, prom)
        by_metric.setdefault(spec.metric, set()).add(spec.kind)
    assert len({s.stat for s in METRICS}) == len(METRICS), "one Stats name maps to one metric"
    assert all(len(kinds) == 1 for kinds in by_metric.values()), by_metric


def test_scrape_maps_stats_counters_with_labels(exporter):
    st = exporter.stats
    st.incr("capture.packets", 1200, iface="eth1")
    st.incr("capture.bytes", 900_000, iface="eth1")
    st.set("capture.kernel_drops", 7, iface="eth1")  # the live runner sets the kernel's cumulative count
    st.incr("capture.packets", 5, iface="eth2")
    st.set("capture.last_packet_ts", 1_700_000_000.5, iface="eth1")
    st.incr("flow.created", 40)
    st.set("flow.active", 12)
    st.incr("flow.evicted", 3, reason="memcap")
    st.incr("stream.memcap", 2, cap="global")
    st.incr("defrag.memcap_drop")
    st.incr("memcap.hit", cap="detect.flow_keys")
    st.incr("decode.anomaly", 4, type="decoder.ipv4.trunc_pkt")
    st.incr("applayer.anomaly", type="http.header_cap")
    st.incr("files", 2, protocol="http", state="CLOSED")
    st.incr("signatures.reload_failed")
    st.set("signatures.loaded_at", 1_700_000_100.0)
    st.set("signatures.loaded", 120, kind="markers")
    st.incr("unrelated.internal_counter", 99)  # not in the table: not exported
    m = scrape(exporter)
    assert m["leakmon_packets_total"] == {(("interface", "eth1"),): 1200.0, (("interface", "eth2"),): 5.0}
    assert m["leakmon_bytes_total"][(("interface", "eth1"),)] == 900_000.0
    assert m["leakmon_kernel_drops_total"] == {(("interface", "eth1"),): 7.0, (("interface", "eth2"),): 0.0}
    assert m["leakmon_internal_drops_total"] == {(("interface", "eth1"),): 0.0, (("interface", "eth2"),): 0.0}
    assert m["leakmon_last_packet_timestamp_seconds"] == {(("interface", "eth1"),): 1_700_000_000.5}
    assert m["leakmon_flows_created_total"] == {(): 40.0}
    assert m["leakmon_flows_active"] == {(): 12.0}
    assert m["leakmon_flows_evicted_total"] == {(("reason", "memcap"),): 3.0}
    assert m["leakmon_memcap_hits_total"] == {
        (("cap", "global"), ("stage", "stream")): 2.0,
        (("cap", "drop"), ("stage", "defrag")): 1.0,
        (("cap", "detect.flow_keys"), ("stage", "detect")): 1.0,
    }
    assert m["leakmon_anomalies_total"] == {
        (("layer", "decoder"), ("type", "decoder.ipv4.trunc_pkt")): 4.0,
        (("layer", "applayer"), ("type", "http.header_cap")): 1.0,
    }
    assert m["leakmon_files_total"] == {(("protocol", "http"), ("state", "CLOSED")): 2.0}
    assert m["leakmon_signature_reload_failures_total"] == {(): 1.0}
    assert m["leakmon_signature_load_timestamp_seconds"] == {(): 1_700_000_100.0}
    assert m["leakmon_signatures"] == {(("kind", "markers"),): 120.0}
    assert m["leakmon_signatures_version_info"] == {(("version", "2024.04.1"),): 1.0}
    assert m["leakmon_build_info"][(("mode", "replay"), ("python", m_python(m)), ("version", "0.1.0"))] == 1.0
    assert not any("unrelated" in name for name in m)
    assert m["process_resident_memory_bytes"][()] > 1_000_000
    assert abs(m["leakmon_clock_seconds"][()] - time.time()) < 5
    # Counters move between scrapes without any per-packet Prometheus call.
    st.incr("capture.packets", 300, iface="eth1")
    assert scrape(exporter)["leakmon_packets_total"][(("interface", "eth1"),)] == 1500.0


def m_python(m) -> str:
    return dict(next(iter(m["leakmon_build_info"])))["python"]


def test_alert_sink_counts_by_sid_category_severity_and_observes_latency(exporter):
    now = time.monotonic()
    exporter(alert_event(9100001, "protected-data-leak", 1, ingress=now - 0.004))
    exporter(alert_event(9100001, "protected-data-leak", 1, ingress=now - 0.2))
    exporter(alert_event(9000003, "weak-crypto", 2))
    exporter(Event("flow", time.time(), {"flow": {}}, tflow()))
    m = scrape(exporter)
    assert m["leakmon_alerts_total"] == {
        (("category", "protected-data-leak"), ("severity", "1"), ("sid", "9100001")): 2.0,
        (("category", "weak-crypto"), ("severity", "2"), ("sid", "9000003")): 1.0,
    }
    assert m["leakmon_events_total"] == {(("event_type", "alert"),): 3.0, (("event_type", "flow"),): 1.0}
    assert m["leakmon_alert_latency_seconds_count"][()] == 2.0
    buckets = {dict(k)["le"]: v for k, v in m["leakmon_alert_latency_seconds_bucket"].items()}
    assert buckets["0.0025"] == 0.0 and buckets["0.005"] == 1.0 and buckets["0.1"] == 1.0 and buckets["0.25"] == 2.0
    assert 0.2 < m["leakmon_alert_latency_seconds_sum"][()] < 0.3


def test_no_address_file_name_or_content_reaches_a_label(exporter):
    exporter.stats.incr("capture.packets", iface="10.1.2.3")  # a buggy caller passing an address
    exporter.stats.incr("files", protocol="http", state="見積書 機密.docx")
    exporter(alert_event(9100001, "2001:db8::1", 1))
    with urllib.request.urlopen(f"http://{exporter.address}/metrics", timeout=5) as r:
        text = r.read().decode()
    for forbidden in ("10.1.2.3", "203.0.113.9", "見積書", "docx", "保護すべき情報", "2001:db8::1"):
        assert forbidden not in text
    m = scrape(exporter)
    assert m["leakmon_packets_total"] == {(("interface", OTHER),): 1.0}
    assert m["leakmon_files_total"] == {(("protocol", "http"), ("state", OTHER)): 1.0}
    assert (("category", OTHER), ("severity", "1"), ("sid", "9100001")) in m["leakmon_alerts_total"]
    overflow = {dict(k)["metric"]: v for k, v in m["leakmon_metric_label_overflow_total"].items()}
    assert overflow["leakmon_alerts_total"] >= 1 and overflow["leakmon_files_total"] >= 1


def test_cardinality_guard_caps_distinct_values_per_label():
    stats = Stats()
    x = MetricsExporter(make_cfg(cap=5), stats).start()
    try:
        for i in range(12):
            stats.incr("decode.anomaly", type=f"decoder.kind{i}")
        for sid in range(9100001, 9100009):
            x(alert_event(sid, "protected-data-leak", 1))
        m = scrape(x)
        types = sorted(dict(k)["type"] for k in m["leakmon_anomalies_total"])
        assert types == [f"decoder.kind{i}" for i in range(5)] + [OTHER]
        assert m["leakmon_anomalies_total"][(("layer", "decoder"), ("type", OTHER))] == 7.0
        sids = {dict(k)["sid"]: v for k, v in m["leakmon_alerts_total"].items()}
        assert sids == {**{str(s): 1.0 for s in range(9100001, 9100006)}, OTHER: 3.0}
        overflow = {dict(k)["metric"]: v for k, v in m["leakmon_metric_label_overflow_total"].items()}
        assert overflow["leakmon_alerts_total"] == 3.0
        # The first values keep their series on later scrapes (stable, no flapping into "other").
        assert "decoder.kind0" in {dict(k)["type"] for k in scrape(x)["leakmon_anomalies_total"]}
    finally:
        x.close()


def test_label_guard_rejects_addresses_and_non_identifiers():
    g = LabelGuard(10)
    assert g.value("m", "interface", "eth0.100") == "eth0.100"
    assert g.value("m", "interface", "10.0.0.1") == OTHER
    assert g.value("m", "interface", "fe80::1") == OTHER
    assert g.value("m", "cap", "a b") == OTHER
    assert g.value("m", "cap", "x" * 65) == OTHER
    assert g.value("m", "category", "protected-data-leak") == "protected-data-leak"
    assert g.overflow == {"m": 4}


def test_healthz_live_and_ready_json(exporter):
    def get(path: str) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(f"http://{exporter.address}{path}", timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    code, body = get("/healthz")
    assert code == 503 and body["live"] is True and body["ready"] is False
    assert body["checks"] == {"signatures_loaded": False, "capture_running": False}
    assert get("/healthz/live")[0] == 200
    exporter.stats.set("signatures.loaded_at", time.time())
    exporter.stats.set("capture.running", 1, iface="eth1")
    code, body = get("/healthz/ready")
    assert code == 200 and body["ready"] is True
    assert body["checks"] == {"signatures_loaded": True, "capture_running": True}
    assert scrape(exporter)["leakmon_ready"][()] == 1.0
    exporter.stats.set("signatures.loaded", 0, kind="markers")  # a set with no signature is not loaded
    assert get("/healthz")[0] == 503


def test_sensor_info_reads_a_sensor_at_scrape_time():
    class Detection:
        version = "sig-7"
        loaded_at = 1_700_000_000.0

    class Pipeline:
        replay = True
        _closed = False
        detection = Detection()

    class Sensor:
        pipeline = Pipeline()
        live_capture = None

    sensor = Sensor()
    stats = Stats()
    x = MetricsExporter(make_cfg(), stats, sensor_info(sensor)).start()
    try:
        m = scrape(x)
        assert m["leakmon_signatures_version_info"] == {(("version", "sig-7"),): 1.0}
        assert m["leakmon_signature_load_timestamp_seconds"] == {(): 1_700_000_000.0}
        assert x.health()["ready"] is True
        Detection.version = "sig-8"
        Pipeline._closed = True
        assert scrape(x)["leakmon_signatures_version_info"] == {(("version", "sig-8"),): 1.0}
        assert x.health()["checks"]["capture_running"] is False
    finally:
        x.close()


def test_canary_metrics_only_when_enabled():
    stats = Stats()
    x = MetricsExporter(make_cfg(canary=True), stats).start()
    try:
        m = scrape(x)
        assert m["leakmon_canary_last_success_timestamp_seconds"] == {(): 0.0}
        assert m["leakmon_canary_interval_seconds"] == {(): 120.0}
        stats.set("canary.last_success", 1_700_000_123.0)
        assert scrape(x)["leakmon_canary_last_success_timestamp_seconds"] == {(): 1_700_000_123.0}
    finally:
        x.close()
    y = MetricsExporter(make_cfg(), Stats()).start()
    try:
        assert "leakmon_canary_interval_seconds" not in scrape(y)
    finally:
        y.close()


def test_ipv6_loopback_and_address_parsing():
    assert split_addr("127.0.0.1:9917") == ("127.0.0.1", 9917)
    assert split_addr("[::1]:9917") == ("::1", 9917)
    assert split_addr(":9917") == ("127.0.0.1", 9917)
    x = MetricsExporter(make_cfg(addr="[::1]:0"), Stats()).start()
    try:
        assert x.address.startswith("[::1]:")
        assert "leakmon_build_info" in scrape(x)
    finally:
        x.close()


def test_empty_address_disables_the_server():
    x = MetricsExporter(make_cfg(addr=""), Stats()).start()
    assert x.address == "" and x.port == 0
    body, ctype = x.exposition()
    assert b"leakmon_clock_seconds" in body and ctype.startswith("text/plain")


def test_live_latency_falls_back_to_packet_wall_time_when_ingress_is_unknown():
    x = MetricsExporter(make_cfg(addr=""), Stats(), {"mode": "live"})
    ev = alert_event(9100001, "protected-data-leak", 1)
    ev.ts = time.time() - 0.03  # the packet was captured 30 ms ago
    x(ev)
    old = alert_event(9100001, "protected-data-leak", 1)
    old.ts = 1_600_000_000.0  # a timestamp from another era (clock jump): not a latency
    x(old)
    samples = {s.name: s.value for s in x.latency.collect()[0].samples if not s.labels.get("le")}
    assert samples["leakmon_alert_latency_seconds_count"] == 1.0
    assert 0.03 <= samples["leakmon_alert_latency_seconds_sum"] < 1.0
