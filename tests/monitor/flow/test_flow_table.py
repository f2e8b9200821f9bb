"""FlowTable: keys, client/server roles, states, timeouts, memcap eviction, port reuse."""

from __future__ import annotations

import dataclasses
import time
import tracemalloc

from pktfactory import A, F, P, R, S, tcp, udp

from monitor.config import FlowConfig, FlowTimeouts, default_config
from monitor.flow.community_id import community_id, flow_community_id
from monitor.flow.netset import NetSet
from monitor.flow.table import FLOW_COST, FlowIds, FlowTable, tcp_flags
from monitor.model import TO_CLIENT, TO_SERVER
from monitor.stats import Stats

C, SV = "10.0.0.5", "203.0.113.7"


def table(protected=(), **flow) -> tuple[FlowTable, Stats]:
    cfg = default_config()
    if flow:
        cfg = dataclasses.replace(cfg, flow=dataclasses.replace(FlowConfig(), **flow))
    stats = Stats()
    return FlowTable(cfg, stats, NetSet(protected)), stats


def handshake(t: FlowTable, ts: float = 0.0, cport: int = 40000):
    f, d1, created = t.lookup(tcp(C, SV, cport, 80, S, seq=100, ts=ts))
    _, d2, _ = t.lookup(tcp(SV, C, 80, cport, S | A, seq=500, ack=101, ts=ts))
    _, d3, _ = t.lookup(tcp(C, SV, cport, 80, A, seq=101, ack=501, ts=ts))
    assert created and (d1, d2, d3) == (TO_SERVER, TO_CLIENT, TO_SERVER)
    return f


def test_syn_sender_is_client_and_both_directions_share_the_flow():
    t, stats = table(protected=["10.0.0.0/8"])
    f = handshake(t)
    assert (f.cport, f.sport) == (40000, 80)
    assert f.addresses() == (C, SV)
    assert f.state == "established"
    assert f.protected_side == "client" and f.outbound_direction() == TO_SERVER
    assert f.pkts == [2, 1] and f.bytes == [108, 54]
    # The Community ID is left to the EVE writer (computed once per flow, off the packet path).
    assert f.community_id == ""
    assert flow_community_id(f) == community_id(6, f.client, f.server, 40000, 80)
    # Counters are folded into stats by expire() (the pipeline's 1 s timer) and flush().
    assert len(t) == 1 and stats.get("flow.created") == 0
    assert t.expire(1.0) == [] and stats.get("flow.created") == 1 and stats.get("flow.active") == 1
    assert tcp_flags(f) == (S | A, S | A)


def test_synack_first_makes_its_receiver_the_client():
    t, _ = table(protected=["203.0.113.0/24"])
    f, d, _ = t.lookup(tcp(SV, C, 80, 40000, S | A, seq=500, ack=101))
    assert d == TO_CLIENT and f.client == bytes([10, 0, 0, 5]) and f.sport == 80
    assert f.protected_side == "server"


def test_midstream_first_sender_is_client():
    t, _ = table()
    f, d, _ = t.lookup(tcp(SV, C, 80, 40000, A | P, seq=9, ack=5, payload=b"x"))
    assert d == TO_SERVER and f.cport == 80 and f.protected_side is None
    _, d2, _ = t.lookup(tcp(C, SV, 40000, 80, A, seq=5, ack=10))
    assert d2 == TO_CLIENT and f.state == "established"


def test_vlan_and_protocol_separate_flows():
    t, _ = table()
    a, _, _ = t.lookup(tcp(C, SV, 1, 2, S, vlan=(10,)))
    b, _, _ = t.lookup(tcp(C, SV, 1, 2, S, vlan=(20,)))
    c, _, _ = t.lookup(udp(C, SV, 1, 2))
    assert len({a.flow_id, b.flow_id, c.flow_id}) == 3 and len(t) == 3
    assert c.state == "new"


def test_ipv6_flow_and_protected_both():
    t, _ = table(protected=["2001:db8::/32"])
    f, _, _ = t.lookup(tcp("2001:db8::1", "2001:db8::2", 5000, 443, S))
    assert f.ip_version == 6 and f.protected_side == "both" and f.outbound_direction() is None


def test_fin_both_ways_or_rst_closes_half_close_does_not():
    t, _ = table()
    f = handshake(t)
    t.lookup(tcp(C, SV, 40000, 80, F | A, seq=101, ack=501))
    assert f.state == "established"  # half-closed: the server may still send
    t.lookup(tcp(SV, C, 80, 40000, A, seq=501, ack=102, payload=b"late data"))
    assert f.state == "established"
    t.lookup(tcp(SV, C, 80, 40000, F | A, seq=510, ack=102))
    assert f.state == "closed"
    g = handshake(t, cport=40001)
    t.lookup(tcp(SV, C, 80, 40001, R, seq=501))
    assert g.state == "closed"


def test_idle_timeouts_by_state():
    t, stats = table(timeouts=FlowTimeouts(new=30, established=300, closed=10, udp=60, other=30))
    est = handshake(t, ts=0.0, cport=1)
    half, _, _ = t.lookup(tcp(C, SV, 2, 80, S, seq=1, ts=0.0))
    dns, _, _ = t.lookup(udp(C, SV, 3, 53, b"q", ts=0.0))
    done = handshake(t, ts=0.0, cport=4)
    t.lookup(tcp(C, SV, 4, 80, R, seq=101, ts=5.0))
    assert done.state == "closed"
    assert t.expire(14.9) == []
    assert t.expire(15.0) == [done] and done.end_reason == "timeout"
    assert t.expire(30.0) == [half]
    assert t.expire(60.0) == [dns]
    assert t.expire(299.0) == []
    assert t.expire(300.0) == [est]
    assert len(t) == 0 and stats.get("flow.timeout") == 4 and stats.get("flow.active") == 0


def test_activity_defers_expiry_and_flush_returns_everything():
    t, _ = table()
    f = handshake(t, ts=0.0)
    t.lookup(tcp(C, SV, 40000, 80, A, seq=101, ack=501, ts=250.0))
    assert t.expire(400.0) == []
    assert t.timeout_of(f) == 300.0
    g, _, _ = t.lookup(udp(C, SV, 9, 9, ts=1.0))
    assert t.flush() == [g, f] and f.end_reason == "shutdown" and len(t) == 0


def test_expiry_is_exact_after_activity_and_state_changes():
    t, _ = table(timeouts=FlowTimeouts(new=30, established=300, closed=10, udp=60, other=30))
    busy = handshake(t, ts=0.0, cport=1)
    t.lookup(tcp(C, SV, 1, 80, A, seq=101, ack=501, ts=250.0))  # active later: due at 550, not 300
    reset = handshake(t, ts=0.0, cport=2)
    t.lookup(tcp(SV, C, 80, 2, R, seq=501, ts=100.0))  # closed at 100: due at 110, not 300
    assert t.expire(109.9) == []
    assert t.expire(110.0) == [reset]
    assert t.expire(549.9) == []
    assert t.expire(550.0) == [busy]
    assert len(t._heap) == 0  # stale items went with them


def test_expire_does_not_scan_every_flow():
    t, _ = table()
    for i in range(50_000):
        t.lookup(tcp(C, SV, 1024 + i % 60000, 80 + i // 60000, S, seq=i, ts=float(i) / 1000))
    start = time.perf_counter()
    for k in range(1000):
        assert t.expire(29.0 + k / 1_000_000) == []  # nothing due: one look per class
    assert time.perf_counter() - start < 0.05


def test_port_reuse_after_close_starts_a_new_flow():
    t, stats = table()
    f = handshake(t)
    t.lookup(tcp(C, SV, 40000, 80, R, seq=101))
    again, _, created = t.lookup(tcp(C, SV, 40000, 80, S, seq=9000, ts=1.0))
    assert created and again is not f and t.ended == [f] and f.end_reason == "forced"
    assert again.flow_id != f.flow_id and stats.get("flow.reused") == 1
    # A retransmitted SYN (same ISN) of an open flow is no reuse.
    _, _, created = t.lookup(tcp(C, SV, 40000, 80, S, seq=9000, ts=1.1))
    assert not created


def test_syn_flood_stays_under_the_memcap():
    # 200,000 spoofed SYNs against a table sized for 2,000 flows by memcap (the million-SYN
    # figure is measured by bench, see the report; the bound does not depend on the count).
    t, stats = table(memcap=2000 * FLOW_COST, max_flows=1_000_000)
    assert t.capacity == 2000
    established = handshake(t, ts=0.0)  # an established session must survive the flood
    n = 200_000
    pkt = tcp(C, SV, 1000, 80, S, seq=0, ts=1.0)
    base = 0x0A000000
    for i in range(n):
        # One packet object re-addressed: the table keeps no reference to packets.
        pkt.src = (base + i).to_bytes(4, "big")
        pkt.sport = 1000 + i % 50000
        pkt.seq = i
        pkt.ts = 1.0 + i / 1e7
        t.lookup(pkt)
        if len(t.ended) > 64:
            t.ended.clear()
    assert len(t) == 2000
    assert len(t._heap) <= 2 * 2000  # expiry items are recycled with their flows
    assert stats.get("flow.evicted", reason="memcap") == n + 1 - 2000
    t.publish_stats()
    assert stats.get("flow.created") == n + 1
    assert any(f is established for f in t.flows.values())


def test_max_flows_eviction_is_labelled_and_counted():
    t, stats = table(max_flows=3)
    flows = [t.lookup(udp(C, SV, p, 53, ts=float(p)))[0] for p in range(1, 6)]
    assert len(t) == 3 and t.ended == flows[:2]
    assert all(f.end_reason == "memcap" for f in t.ended)
    assert stats.get("flow.evicted", reason="max_flows") == 2


def test_per_flow_estimate_is_not_optimistic():
    t, _ = table()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(5000):
        t.lookup(tcp(f"10.1.{i // 250}.{i % 250}", SV, 40000, 80, S, seq=i))
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert used / 5000 < FLOW_COST


def test_flow_ids_unique_and_nonsequential():
    ids = FlowIds(salt=1)
    seen = [ids.next() for _ in range(100_000)]
    assert len(set(seen)) == len(seen)
    assert all(0 < x < 2**63 for x in seen)
    assert sum(1 for a, b in zip(seen, seen[1:], strict=False) if b == a + 1) == 0


def test_expiry_matches_an_oracle_over_random_state_changes():
    """Whatever heap items the table keeps (none is pushed when a state's timeout grows), expire()
    returns exactly the flows idle past their current state's timeout, earliest due first."""
    import random

    timeouts = FlowTimeouts(new=30, established=300, closed=10, udp=60, other=30)
    for seed in range(40):
        rng = random.Random(seed)
        t, _ = table(timeouts=timeouts)
        seqs: dict[int, int] = {}
        now = 0.0
        for _ in range(400):
            now += rng.choice((0.0, 0.5, 3.0, 9.0, 40.0))
            port = rng.randrange(1, 12)
            flags = rng.choice((S, S | A, A, A, A, F | A, R))
            seq = seqs.setdefault(port, rng.randrange(1 << 20))
            if rng.random() < 0.5:
                t.lookup(tcp(C, SV, port, 80, flags, seq=seq, ts=now))
            else:
                t.lookup(tcp(SV, C, 80, port, flags, seq=seq, ts=now))
            if flags == S and rng.random() < 0.3:
                seqs[port] = rng.randrange(1 << 20)  # port reuse now and then
            t.ended.clear()
            if rng.random() < 0.3:
                expected = sorted(
                    (f for f in t.flows.values() if f.last_ts + t.timeout_of(f) <= now),
                    key=lambda f: (f.last_ts + t.timeout_of(f), f.flow_id),
                )
                assert t.expire(now) == expected
        left = sorted(t.flows.values(), key=lambda f: (f.last_ts + t.timeout_of(f), f.flow_id))
        assert t.expire(now + 1000.0) == left and len(t) == 0 and not t._heap
