"""The flow table: bidirectional flows keyed by protocol, VLAN tags and the two endpoints.

Design notes
- Key: ``(proto, vlan, lower (addr, port), higher (addr, port))`` so both directions find the
  same entry with one tuple build and one dict lookup.
- Client: the sender of a SYN without ACK; a SYN/ACK seen first makes its receiver the
  client; otherwise (mid-stream pickup, UDP) the sender of the first packet.
- Byte counts are frame bytes as captured on the wire (``wire_len``, falling back to the
  captured frame length), the figure ``tshark -q -z conv,tcp`` reports and Suricata's
  ``bytes_toserver``/``bytes_toclient`` carry.
- Expiry: each idle-timeout class (new, established, closed, udp, other) has its own
  least-recently-seen ordered dict, so ``expire(now)`` only looks at flows that are due plus
  one per class, never at every flow.
- Memory: ``flow.memcap`` divided by a per-flow estimate (the flow object, its key and table
  slots, a small reassembly state) gives a flow budget; with ``flow.max_flows`` it bounds the
  table. When full, the least recently seen flow is evicted - half-open and closed flows
  first, so a SYN flood recycles its own entries instead of evicting established sessions.
  Evicted flows go to ``table.ended`` for the pipeline to finish (stream flush, flow event).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any

from monitor.config import Config
from monitor.flow.community_id import community_id
from monitor.flow.netset import NetSet
from monitor.model import (
    PROTO_TCP,
    PROTO_UDP,
    TH_ACK,
    TH_FIN,
    TH_RST,
    TH_SYN,
    TO_CLIENT,
    TO_SERVER,
    Flow,
    Packet,
)
from monitor.stats import Stats

# Estimated bytes per flow: Flow object with its lists and dict, key tuple, table and LRU slots
# and bookkeeping (~1.2 KB traced by tracemalloc, see tests/monitor/flow/test_flow_table.py),
# plus allocator overhead and fragmentation under churn: a million-SYN flood against a 64 MiB
# cap grew the process RSS by ~1.7 KB per live flow, hence a rounded-up 2 KiB.
FLOW_COST = 2048

# Timeout classes.
_NEW, _ESTABLISHED, _CLOSED, _UDP, _OTHER = range(5)
# Eviction order when the table is full: cheapest flows to lose first.
_EVICT_ORDER = (_NEW, _CLOSED, _UDP, _OTHER, _ESTABLISHED)

_MASK63 = (1 << 63) - 1

FlowKey = tuple[Any, ...]

# Key under which the table keeps its own per-flow bookkeeping in ``flow.metadata``.
TRACK = "_flowtable"


class _Track:
    """The table's per-flow bookkeeping (kept out of the Flow model)."""

    __slots__ = ("tclass", "flags", "syn_seq", "fin")

    def __init__(self, tclass: int, syn_seq: int | None) -> None:
        self.tclass = tclass
        self.flags = [0, 0]  # TCP flags seen per direction
        self.syn_seq = syn_seq  # ISN of the client's SYN, to recognise port reuse
        self.fin = [False, False]


def tcp_flags(flow: Flow) -> tuple[int, int]:
    """TCP flags seen (to_server, to_client), for the flow record's tcp_flags_ts/tc."""
    track = flow.metadata.get(TRACK)
    return (track.flags[0], track.flags[1]) if track is not None else (0, 0)


class FlowIds:
    """Unique, non-sequential 63-bit flow ids: a bijective mix of a counter and a random salt.

    63 bits (not 64) so the id fits a signed 64-bit integer (SQLite, Java, Go consumers).
    """

    __slots__ = ("_n", "_salt")

    def __init__(self, salt: int | None = None) -> None:
        self._n = 0
        self._salt = int.from_bytes(os.urandom(8), "big") & _MASK63 if salt is None else salt & _MASK63

    def next(self) -> int:
        while True:
            self._n += 1
            x = (self._n ^ self._salt) & _MASK63
            x = (x * 0x3C79AC492BA7B653) & _MASK63
            x ^= x >> 31
            x = (x * 0x1C69B3F74AC4AE35) & _MASK63
            x ^= x >> 29
            if x:
                return x


class FlowTable:
    """Bidirectional flows. ``lookup(pkt) -> (flow, direction, created)``."""

    def __init__(self, cfg: Config, stats: Stats, protected: NetSet | None = None,
                 ids: FlowIds | None = None) -> None:
        fc = cfg.flow
        t = fc.timeouts
        self.stats = stats
        self.protected = protected if protected is not None else NetSet(cfg.networks.protected)
        self._timeouts = (t.new, t.established, t.closed, t.udp, t.other)
        self.capacity = max(1, min(fc.max_flows, fc.memcap // FLOW_COST))
        # Which limit binds, for the eviction counter's label.
        self._evict_reason = "max_flows" if fc.max_flows <= fc.memcap // FLOW_COST else "memcap"
        self.flows: dict[FlowKey, Flow] = {}
        self._lru: tuple[OrderedDict[FlowKey, Flow], ...] = tuple(OrderedDict() for _ in range(5))
        self._ids = ids or FlowIds()
        # Flows the table ended on its own (memcap/max_flows eviction, port reuse); the
        # pipeline drains this list after every lookup.
        self.ended: list[Flow] = []

    def __len__(self) -> int:
        return len(self.flows)

    # ------------------------------------------------------------------ packet path

    def lookup(self, pkt: Packet) -> tuple[Flow, int, bool]:
        """The flow of ``pkt`` (created if new), the packet's direction, and whether created."""
        src, dst, sport, dport = pkt.src, pkt.dst, pkt.sport, pkt.dport
        if src < dst or (src == dst and sport <= dport):
            key: FlowKey = (pkt.proto, pkt.vlan, src, sport, dst, dport)
        else:
            key = (pkt.proto, pkt.vlan, dst, dport, src, sport)
        flow = self.flows.get(key)
        created = False
        if flow is not None and pkt.proto == PROTO_TCP and self._is_reuse(flow, pkt):
            self._remove(key, flow)
            flow.end_reason = "forced"
            self.stats.incr("flow.reused")
            self.ended.append(flow)
            flow = None
        if flow is None:
            flow = self._create(key, pkt)
            created = True
        direction = TO_SERVER if sport == flow.cport and src == flow.client else TO_CLIENT
        flow.pkts[direction] += 1
        flow.bytes[direction] += pkt.wire_len or (len(pkt.raw.data) if pkt.raw is not None else 0)
        flow.last_ts = pkt.ts
        if pkt.proto == PROTO_TCP:
            self._tcp_state(key, flow, direction, pkt)
        else:
            self._lru[flow.metadata[TRACK].tclass].move_to_end(key)
        return flow, direction, created

    def _create(self, key: FlowKey, pkt: Packet) -> Flow:
        if len(self.flows) >= self.capacity:
            self._evict_one()
        src, dst, sport, dport = pkt.src, pkt.dst, pkt.sport, pkt.dport
        flags = pkt.tcp_flags
        if pkt.proto == PROTO_TCP and flags & (TH_SYN | TH_ACK) == TH_SYN | TH_ACK:
            # SYN/ACK first: its receiver opened the connection.
            src, dst, sport, dport = dst, src, dport, sport
        flow = Flow(
            flow_id=self._ids.next(), proto=pkt.proto, client=src, server=dst, cport=sport, sport=dport,
            vlan=pkt.vlan, ip_version=pkt.ip_version, start_ts=pkt.ts, last_ts=pkt.ts,
            community_id=community_id(pkt.proto, src, dst, sport, dport),
        )
        if src == pkt.src:
            flow.client_mac, flow.server_mac = pkt.src_mac, pkt.dst_mac
        else:
            flow.client_mac, flow.server_mac = pkt.dst_mac, pkt.src_mac
        if pkt.raw is not None:
            flow.iface = pkt.raw.iface
        flow.protected_side = self._protected_side(src, dst)
        syn_seq = None
        if pkt.proto == PROTO_TCP:
            tclass = _NEW
            if flags & (TH_SYN | TH_ACK) == TH_SYN:
                syn_seq = pkt.seq
        elif pkt.proto == PROTO_UDP:
            tclass = _UDP
        else:
            tclass = _OTHER
        flow.metadata[TRACK] = _Track(tclass, syn_seq)
        self.flows[key] = flow
        self._lru[tclass][key] = flow
        self.stats.incr("flow.created")
        self.stats.set("flow.active", len(self.flows))
        return flow

    def _protected_side(self, client: bytes, server: bytes) -> str | None:
        if not self.protected:
            return None
        c = self.protected.contains(client)
        s = self.protected.contains(server)
        if c and s:
            return "both"
        if c:
            return "client"
        if s:
            return "server"
        return None

    def _is_reuse(self, flow: Flow, pkt: Packet) -> bool:
        """A fresh SYN on a finished connection (new ISN) starts a new flow (port reuse)."""
        if pkt.tcp_flags & (TH_SYN | TH_ACK | TH_RST) != TH_SYN or flow.state != "closed":
            return False
        return flow.metadata[TRACK].syn_seq != pkt.seq

    def _tcp_state(self, key: FlowKey, flow: Flow, direction: int, pkt: Packet) -> None:
        flags = pkt.tcp_flags
        track: _Track = flow.metadata[TRACK]
        if track.syn_seq is None and flags & (TH_SYN | TH_ACK) == TH_SYN | TH_ACK and direction == TO_CLIENT:
            # Picked up at the SYN/ACK: it tells the client's ISN (a late SYN copy is no reuse).
            track.syn_seq = (pkt.ack - 1) & 0xFFFFFFFF
        seen = track.flags
        seen[direction] |= flags
        if flags & TH_FIN:
            track.fin[direction] = True
        state = flow.state
        if flags & TH_RST or (track.fin[0] and track.fin[1]):
            # RST, or FIN seen both ways: the connection is over (half-close keeps it open).
            state = "closed"
        elif state == "new" and flags & TH_ACK and not flags & TH_SYN:
            # The handshake's final ACK, or two-sided traffic on a mid-stream pickup.
            if (seen[TO_SERVER] & TH_SYN and seen[TO_CLIENT] & TH_SYN) or (
                    flow.pkts[TO_SERVER] and flow.pkts[TO_CLIENT]):
                state = "established"
        if state != flow.state:
            new = _ESTABLISHED if state == "established" else _CLOSED
            del self._lru[track.tclass][key]
            self._lru[new][key] = flow
            track.tclass = new
            flow.state = state
        else:
            self._lru[track.tclass].move_to_end(key)

    # ------------------------------------------------------------------ housekeeping

    def _remove(self, key: FlowKey, flow: Flow) -> None:
        del self.flows[key]
        del self._lru[flow.metadata[TRACK].tclass][key]
        self.stats.set("flow.active", len(self.flows))

    def _evict_one(self) -> None:
        # The least recently seen flow of the cheapest non-empty class.
        for tclass in _EVICT_ORDER:
            lru = self._lru[tclass]
            if lru:
                key, flow = next(iter(lru.items()))
                self._remove(key, flow)
                flow.end_reason = "memcap"
                self.stats.incr("flow.evicted", reason=self._evict_reason)
                self.ended.append(flow)
                return

    def expire(self, now: float) -> list[Flow]:
        """Flows idle past their state's timeout, removed from the table (reason ``timeout``)."""
        out: list[Flow] = []
        for tclass, lru in enumerate(self._lru):
            deadline = now - self._timeouts[tclass]
            while lru:
                key, flow = next(iter(lru.items()))
                if flow.last_ts > deadline:
                    break
                self._remove(key, flow)
                flow.end_reason = "timeout"
                out.append(flow)
        if out:
            self.stats.incr("flow.timeout", len(out))
        return out

    def flush(self) -> list[Flow]:
        """Every flow, removed from the table (reason ``shutdown``), oldest first."""
        out = sorted(self.flows.values(), key=lambda f: f.last_ts)
        for flow in out:
            flow.end_reason = "shutdown"
        self.flows.clear()
        for lru in self._lru:
            lru.clear()
        self.stats.set("flow.active", 0)
        return out

    def timeout_of(self, flow: Flow) -> float:
        """The idle timeout that currently applies to ``flow``."""
        track = flow.metadata.get(TRACK)
        return self._timeouts[track.tclass if track is not None else _OTHER]
