"""Stats: cached label keys and pre-bound handles count exactly what the plain keys count."""

from __future__ import annotations

import monitor.stats as stats_mod
from monitor.stats import Stats


def test_labelled_counters_share_one_key_whatever_the_keyword_order():
    s = Stats()
    s.incr("files", protocol="http", state="CLOSED")
    s.incr("files", state="CLOSED", protocol="http")
    s.incr("files", 3, protocol="http", state="CLOSED")
    s.incr("files", protocol="smtp", state="TRUNCATED")
    assert s.counters[("files", (("protocol", "http"), ("state", "CLOSED")))] == 5
    assert s.get("files", state="CLOSED", protocol="http") == 5
    assert s.total("files") == 6
    assert s.snapshot() == {"files[protocol=http,state=CLOSED]": 5, "files[protocol=smtp,state=TRUNCATED]": 1}


def test_snapshot_format_is_unchanged():
    s = Stats()
    s.incr("decoder.ipv4.truncated", 3)
    s.incr("stream.gap_forced", why="time")
    s.incr("stream.gap_forced", 2, why="bytes")
    s.set("capture.last_packet_ts", 1700000000.5, iface="eth0")
    s.set("flow.active", 12)
    s.incr("flow")  # a counter named like a group: kept as its "_value"
    s.incr("flow.created", 4)
    assert s.snapshot() == {
        "decoder": {"ipv4": {"truncated": 3}},
        "stream": {"gap_forced[why=time]": 1, "gap_forced[why=bytes]": 2},
        "capture": {"last_packet_ts[iface=eth0]": 1700000000.5},
        "flow": {"active": 12, "created": 4, "_value": 1},
    }


def test_non_string_label_values_keep_their_own_text():
    # 1, 1.0 and True are equal dict keys but different label text: never merged by the cache.
    s = Stats()
    s.incr("x", v=1)
    s.incr("x", v=True)
    s.incr("x", v=1.0)
    s.incr("x", v="1")
    assert s.snapshot() == {"x[v=1]": 2, "x[v=True]": 1, "x[v=1.0]": 1}


def test_unhashable_label_value_is_counted_too():
    s = Stats()
    s.incr("x", v=["a", "b"])
    s.incr("x", v=["a", "b"])
    assert s.snapshot() == {"x[v=['a', 'b']]": 2}


def test_key_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(stats_mod, "_KEY_CACHE_MAX", 16)
    s = Stats()
    for i in range(100):
        s.incr("detect.matches", variant=f"v{i % 40}")
    assert len(s._keys) <= 16
    assert s.total("detect.matches") == 100
    assert s.get("detect.matches", variant="v3") == 3  # 3, 43, 83


def test_counter_handle_counts_into_the_same_key():
    s = Stats()
    h = s.counter("detect.bytes", view="stream")
    h.incr(100)
    h.incr()
    s.incr("detect.bytes", 9, view="stream")
    assert s.get("detect.bytes", view="stream") == 110
    assert s.snapshot() == {"detect": {"bytes[view=stream]": 110}}
    plain = s.counter("flow.created")
    plain.incr(2)
    assert s.get("flow.created") == 2


def test_labelled_gauges_use_the_same_keys():
    s = Stats()
    s.set("capture.kernel_drops", 3, iface="eth0")
    s.set("capture.kernel_drops", 5, iface="eth0")
    assert s.gauges == {("capture.kernel_drops", (("iface", "eth0"),)): 5}
