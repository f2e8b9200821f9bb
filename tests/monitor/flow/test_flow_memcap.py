"""flow.memcap charges what a flow costs: FLOW_COST at creation, APP_STATE_COST on its first payload.

Half-open flows (SYN floods) are charged the base cost only, so their eviction counts are those
of tests/monitor/flow/test_flow_table.py and tests/e2e/test_hostile.py; flows that carry
payload are charged base + app state, and the table's total never exceeds the memcap.
"""

from __future__ import annotations

import dataclasses
import struct

from pktfactory import A, S, tcp

from monitor.config import Config, FlowConfig, default_config
from monitor.flow.netset import NetSet
from monitor.flow.table import APP_STATE_COST, FLOW_COST, FlowTable
from monitor.model import LINKTYPE_ETHERNET, RawPacket
from monitor.pipeline import Pipeline
from monitor.stats import Stats

C, SV = "10.0.0.5", "203.0.113.7"
FULL = FLOW_COST + APP_STATE_COST


def _table(**flow) -> tuple[FlowTable, Stats]:
    cfg = dataclasses.replace(default_config(), flow=dataclasses.replace(FlowConfig(), **flow))
    stats = Stats()
    return FlowTable(cfg, stats, NetSet(())), stats


def test_charge_adds_to_flow_and_total_and_removal_releases_it():
    t, _ = _table()
    a, _, _ = t.lookup(tcp(C, SV, 40000, 80, S, seq=1))
    b, _, _ = t.lookup(tcp(C, SV, 40001, 80, S, seq=1))
    assert t.accounted == 2 * FLOW_COST
    t.charge_app_state(a)
    t.charge_app_state(a)  # once per flow
    assert a.cost == FULL and b.cost == FLOW_COST and t.accounted == FULL + FLOW_COST
    t.expire(1e9)  # both time out: exactly what they were charged is released
    assert len(t) == 0 and t.accounted == 0
    c, _, _ = t.lookup(tcp(C, SV, 40002, 80, S, seq=1, ts=2e9))
    t.charge(c, 100)
    assert t.accounted == FLOW_COST + 100
    t.flush()
    assert t.accounted == 0
    t.charge(c, 100)  # a flow no longer in the table is not charged
    assert t.accounted == 0 and c.cost == FLOW_COST + 100


def test_charge_over_the_memcap_evicts_others_never_the_charged_flow():
    t, stats = _table(memcap=3 * FLOW_COST)
    flows = [t.lookup(tcp(C, SV, 40000 + i, 80, S, seq=1, ts=float(i)))[0] for i in range(3)]
    assert t.accounted == 3 * FLOW_COST and not t.ended
    # The oldest flow (first due) is the one charged: the others go, oldest first.
    t.charge(flows[0], APP_STATE_COST)
    assert t.ended == flows[1:] and all(f.end_reason == "memcap" for f in t.ended)
    assert list(t.flows.values()) == [flows[0]] and t.accounted == FULL
    assert stats.get("flow.evicted", reason="memcap") == 2
    # Its expiry item survived the eviction walk: it still times out.
    assert t.expire(1e9) == [flows[0]] and t.accounted == 0


def _frame(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int,
           payload: bytes = b"") -> bytes:
    seg = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags,
                      65535, 0, 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(seg), 1, 0x4000, 64, 6, 0, src, dst) + seg
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip


REQUEST = b"GET /index.html HTTP/1.1\r\nHost: example.test\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"


def _http_flows(n: int) -> list[bytes]:
    """``n`` small HTTP sessions one after the other, none closed (all stay live, as in f20k)."""
    frames = []
    server = bytes([203, 0, 113, 7])
    for i in range(n):
        client = bytes([10, 1, i >> 8 & 0xFF, i & 0xFF])
        cport = 1024 + i
        cseq, sseq = 1000, 5000
        frames += [
            _frame(client, server, cport, 80, cseq, 0, S),
            _frame(server, client, 80, cport, sseq, cseq + 1, S | A),
            _frame(client, server, cport, 80, cseq + 1, sseq + 1, A),
            _frame(client, server, cport, 80, cseq + 1, sseq + 1, A | 0x08, REQUEST),
            _frame(server, client, 80, cport, sseq + 1, cseq + 1 + len(REQUEST), A | 0x08, RESPONSE),
            _frame(client, server, cport, 80, cseq + 1 + len(REQUEST), sseq + 1 + len(RESPONSE), A),
        ]
    return frames


def _replay(memcap: int, n: int) -> tuple[Pipeline, Stats, int]:
    cfg = dataclasses.replace(Config(), flow=dataclasses.replace(FlowConfig(), memcap=memcap))
    stats = Stats()
    pipeline = Pipeline(cfg, stats=stats, eve_path="", replay=True, evidence=False)
    table = pipeline.flows
    peak = 0
    for cnt, data in enumerate(_http_flows(n), 1):
        pipeline.process(RawPacket(cnt * 0.001, LINKTYPE_ETHERNET, data, cnt, "", len(data)))
        assert table.accounted <= memcap
        assert table.accounted == sum(f.cost for f in table.flows.values())
        peak = max(peak, table.accounted)
    return pipeline, stats, peak


def test_small_http_flows_under_a_small_memcap_evict_at_the_predicted_count():
    # The memcap holds exactly 20 flows with app state: every flow after the 20th makes room
    # for its base cost by evicting the oldest (all are established and equally idle-timed).
    pipeline, stats, peak = _replay(20 * FULL, 50)
    table = pipeline.flows
    assert len(table) == 20 and peak == 20 * FULL
    assert all(f.cost == FULL for f in table.flows.values())
    assert stats.get("flow.evicted", reason="memcap") == 50 - 20
    pipeline.finish()
    assert table.accounted == 0 and len(table) == 0


def test_f20k_like_traffic_stays_within_a_16_mib_memcap():
    # 16 MiB holds 1,820 flows with app state (16 MiB // FULL); 2,200 live HTTP flows do not fit.
    memcap = 16 * 1024 * 1024
    pipeline, stats, peak = _replay(memcap, 2200)
    fit = memcap // FULL
    assert fit == 1820 and peak <= memcap
    assert stats.get("flow.evicted", reason="memcap") == 2200 - fit
    assert len(pipeline.flows) == fit
    pipeline.finish()
    assert pipeline.flows.accounted == 0
