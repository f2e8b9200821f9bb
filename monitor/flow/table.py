"""The flow table: bidirectional flows keyed by the two endpoints, protocol and VLAN tags.

Design notes
- Key: ``(low addr, high addr, low port, high port, proto, vlan)``, the lower endpoint first,
  so both directions find the same flow with one tuple build and one dict lookup. Flows are
  :class:`TableFlow` objects, a Flow subclass whose extra slots carry the table's bookkeeping
  (key, timeout class, TCP flags seen, client ISN), so a flow costs no further object; the
  packet's direction falls out of the same comparison that ordered the key.
- Fast index: untagged TCP flows are also found by ``fast_tcp``, the packed endpoints as they
  lie in the frame (``src + dst + sport + dport``, 12 bytes for IPv4, 36 for IPv6) -> (flow,
  direction), so the pipeline's fused fast path needs one slice and one dict lookup per
  packet. Both directions are entered when a flow is created and removed with it.
- Client: the sender of a SYN without ACK; a SYN/ACK seen first makes its receiver the
  client; otherwise (mid-stream pickup, UDP) the sender of the first packet.
- Byte counts are frame bytes as captured on the wire (``wire_len``, falling back to the
  captured frame length), the figure ``tshark -q -z conv,tcp`` reports and Suricata's
  ``bytes_toserver``/``bytes_toclient`` carry.
- The Community ID is not computed here: it is a SHA-1 per flow that only matters when an
  event is written, so the EVE writer asks :func:`monitor.flow.community_id.flow_community_id`.
- Expiry without per-packet work: a packet only sets ``flow.last_ts``. A heap holds one
  ``(due, flow_id, key)`` item per flow, where ``due`` is a lower bound of the flow's expiry
  time (``last_ts + timeout`` of its state when the item was pushed). ``expire(now)`` pops the
  items that are due; a flow that was active since is pushed back with its real due time (once
  per timeout period at most), one whose state changed got a fresh item then. So expiry is
  exact, and ``expire`` looks only at items that are due plus the heap's top.
- Memory: every flow is charged bytes against ``flow.memcap``: ``FLOW_COST`` when it is
  created, and ``APP_STATE_COST`` more when its first stream payload arrives (the pipeline
  calls :meth:`FlowTable.charge_app_state`: parser, detection streams and reassembly buffers
  exist from then on). ``accounted`` is the sum of what the table's flows were charged, and
  removal releases exactly what a flow was charged. With ``flow.max_flows`` this bounds the
  table. When a creation or a charge would go past a limit, the flow closest to its idle
  timeout is evicted: half-open and closed flows have short timeouts, so a SYN flood (never
  charged for app state) recycles its own entries instead of evicting established sessions.
  Evicted flows go to ``table.ended`` for the pipeline to finish (stream flush, flow event).
"""

from __future__ import annotations

import dataclasses
import heapq
import os
from typing import Any

from monitor.config import Config
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

# Estimated bytes per flow: Flow object with its lists and dict, key tuple, heap item, table
# slot and bookkeeping (~1.1 KB traced by tracemalloc, see
# tests/monitor/flow/test_flow_table.py), plus allocator overhead and fragmentation under churn:
# a million-SYN flood against a 64 MiB cap grew the process RSS by ~1.7 KB per live flow, hence
# a rounded-up 2 KiB.
FLOW_COST = 2048
# Extra bytes per flow once it carries payload (app-layer parser state, detection streams,
# reassembly buffers): bench/data/f20k.pcap (20,000 HTTP flows, all live at once) peaks at
# ~9.1 KiB of RSS per flow ((peak RSS - 46 MB) / 20,000), of which FLOW_COST is the base;
# the rest, rounded, is charged on the first payload.
APP_STATE_COST = 7 * 1024

# Timeout classes.
_NEW, _ESTABLISHED, _CLOSED, _UDP, _OTHER = range(5)

_MASK63 = (1 << 63) - 1
# Flags that may change a TCP flow's state (or start a new flow on a reused port).
_STATE_FLAGS = TH_SYN | TH_FIN | TH_RST

FlowKey = tuple[Any, ...]

# FlowTable builds Flow objects with positional arguments: fail at import, not with swapped
# fields, if the model's field order ever changes.
_FLOW_ARGS = ("flow_id", "proto", "client", "server", "cport", "sport", "vlan", "ip_version", "start_ts", "last_ts")
if tuple(f.name for f in dataclasses.fields(Flow))[:len(_FLOW_ARGS)] != _FLOW_ARGS:  # pragma: no cover
    raise ImportError("monitor.model.Flow field order changed; update FlowTable._create")


class TableFlow(Flow):
    """A Flow with the table's own bookkeeping in extra slots (no separate per-flow object).

    Everything else sees a plain :class:`~monitor.model.Flow`.
    """

    __slots__ = ("key", "tclass", "due", "client_low", "tflags", "syn_seq", "cost")

    key: FlowKey
    tclass: int  # timeout class
    due: float  # the due time of the flow's current heap item (older items are stale)
    client_low: bool  # the client is the key's lower endpoint
    tflags: int  # TCP flags seen: to the server in bits 0-7, to the client in bits 8-15
    syn_seq: int | None  # ISN of the client's SYN, to recognise port reuse
    cost: int  # bytes charged against flow.memcap (released when the flow leaves the table)


def tcp_flags(flow: Flow) -> tuple[int, int]:
    """TCP flags seen (to_server, to_client), for the flow record's tcp_flags_ts/tc."""
    if isinstance(flow, TableFlow):
        return flow.tflags & 0xFF, flow.tflags >> 8
    return 0, 0


class FlowIds:
    """Unique, non-sequential 63-bit flow ids: a bijective mix of a counter and a random salt.

    ``n * odd + salt`` modulo 2**63 is a bijection of the counter, and so is the xor-shift
    after it; one multiplication keeps this cheap (it runs once per flow). 63 bits (not 64) so
    the id fits a signed 64-bit integer (SQLite, Java, Go consumers).
    """

    __slots__ = ("_n", "_salt")

    def __init__(self, salt: int | None = None) -> None:
        self._n = 0
        self._salt = int.from_bytes(os.urandom(8), "big") & _MASK63 if salt is None else salt & _MASK63

    def next(self) -> int:
        self._n = n = self._n + 1
        x = (n * 0x3C79AC492BA7B653 + self._salt) & _MASK63
        x ^= x >> 29
        return x or self.next()  # 0 means "no flow" to consumers: skip it


class FlowTable:
    """Bidirectional flows. ``lookup(pkt) -> (flow, direction, created)``."""

    def __init__(self, cfg: Config, stats: Stats, protected: NetSet | None = None,
                 ids: FlowIds | None = None) -> None:
        fc = cfg.flow
        t = fc.timeouts
        self.stats = stats
        self.protected = protected if protected is not None else NetSet(cfg.networks.protected)
        self._timeouts = (t.new, t.established, t.closed, t.udp, t.other)
        self.memcap = fc.memcap
        self.max_flows = fc.max_flows
        # Flows of base cost only (no app state) that fit: the table's size under a SYN flood.
        self.capacity = max(1, min(fc.max_flows, fc.memcap // FLOW_COST))
        self.accounted = 0  # bytes charged by the flows in the table (FLOW_COST + app state)
        self.flows: dict[FlowKey, TableFlow] = {}
        # (due, flow_id, key): atomic items only, so the garbage collector soon stops tracking them.
        self._heap: list[tuple[float, int, FlowKey]] = []
        self._created = 0  # flows created since the counter was last folded into stats
        self._ids = ids or FlowIds()
        # Flows the table ended on its own (memcap/max_flows eviction, port reuse); the
        # pipeline drains this list after every lookup.
        self.ended: list[Flow] = []
        # The pipeline's fast path finds established TCP flows straight from the frame's bytes:
        # the packed ``src + dst + sport + dport`` as they lie in an IPv4/IPv6 header followed
        # by TCP (12 or 36 bytes) -> (flow, direction). One entry per direction of every
        # untagged TCP flow, kept in step with ``flows``. None disables the fast path (checksum
        # validation needs the full decoder for every frame).
        self.fast_tcp: dict[bytes, tuple[TableFlow, int]] | None = \
            None if cfg.decoder.checksum_validation else {}

    def __len__(self) -> int:
        return len(self.flows)

    # ------------------------------------------------------------------ packet path

    def lookup(self, pkt: Packet) -> tuple[Flow, int, bool]:
        """The flow of ``pkt`` (created if new), the packet's direction, and whether created."""
        src = pkt.src
        dst = pkt.dst
        sport = pkt.sport
        dport = pkt.dport
        if src < dst or (src == dst and sport <= dport):
            low = True
            key: FlowKey = (src, dst, sport, dport, pkt.proto, pkt.vlan)
        else:
            low = False
            key = (dst, src, dport, sport, pkt.proto, pkt.vlan)
        try:
            flow = self.flows[key]
        except KeyError:
            return self._create(key, pkt, low)
        flags = pkt.tcp_flags
        if flags & TH_SYN and flow.state == "closed" and pkt.proto == PROTO_TCP and self._is_reuse(flow, pkt):
            return self._create(key, pkt, low)
        direction = TO_SERVER if low is flow.client_low else TO_CLIENT
        flow.pkts[direction] += 1
        flow.bytes[direction] += pkt.wire_len or self._frame_len(pkt)
        flow.last_ts = pkt.ts
        if flags:  # TCP (other protocols have no flags)
            flow.tflags |= flags << (direction << 3)
            if flags & _STATE_FLAGS or flow.state == "new":
                self.tcp_state(flow, direction, flags, pkt.ack)
        return flow, direction, False

    @staticmethod
    def _frame_len(pkt: Packet) -> int:
        return len(pkt.raw.data) if pkt.raw is not None else 0

    def _create(self, key: FlowKey, pkt: Packet, low: bool) -> tuple[Flow, int, bool]:
        old = self.flows.get(key)
        if old is not None:
            # A fresh SYN on a finished connection (port reuse): end the old flow.
            self._remove(old)
            old.end_reason = "forced"
            self.stats.incr("flow.reused")
            self.ended.append(old)
        elif len(self.flows) >= self.max_flows:
            self._evict_one("max_flows")
        elif self.accounted + FLOW_COST > self.memcap:
            # Any flow was charged at least FLOW_COST: one eviction makes room.
            self._evict_one("memcap")
        src, dst, sport, dport = pkt.src, pkt.dst, pkt.sport, pkt.dport
        proto = pkt.proto
        flags = pkt.tcp_flags
        client_low = low
        direction = TO_SERVER
        if proto == PROTO_TCP and flags & (TH_SYN | TH_ACK) == TH_SYN | TH_ACK:
            # SYN/ACK first: its receiver opened the connection.
            src, dst, sport, dport = dst, src, dport, sport
            client_low = not low
            direction = TO_CLIENT
        # Positional: keyword matching costs more than the rest of the call (order checked below).
        flow = TableFlow(self._ids.next(), proto, src, dst, sport, dport, pkt.vlan, pkt.ip_version, pkt.ts, pkt.ts)
        if direction == TO_SERVER:
            flow.client_mac, flow.server_mac = pkt.src_mac, pkt.dst_mac
        else:
            flow.client_mac, flow.server_mac = pkt.dst_mac, pkt.src_mac
        raw = pkt.raw
        if raw is not None:
            flow.iface = raw.iface
        if self.protected:
            flow.protected_side = self._protected_side(src, dst)
        flow.pkts[direction] = 1
        flow.bytes[direction] = pkt.wire_len or self._frame_len(pkt)
        syn_seq = None
        if proto == PROTO_TCP:
            tclass = _NEW
            if flags & (TH_SYN | TH_ACK) == TH_SYN:
                syn_seq = pkt.seq
        elif proto == PROTO_UDP:
            tclass = _UDP
        else:
            tclass = _OTHER
        flow.key = key
        flow.tclass = tclass
        flow.due = due = pkt.ts + self._timeouts[tclass]
        flow.client_low = client_low
        flow.syn_seq = syn_seq
        flow.cost = FLOW_COST
        self.accounted += FLOW_COST
        self.flows[key] = flow
        if proto == PROTO_TCP and self.fast_tcp is not None and not flow.vlan:
            self._add_fast(flow)
        heapq.heappush(self._heap, (due, flow.flow_id, key))
        self._created += 1
        if proto == PROTO_TCP:
            flow.tflags = flags << (direction << 3)
            if flags & _STATE_FLAGS:
                self.tcp_state(flow, direction, flags, pkt.ack)
        else:
            flow.tflags = 0
        return flow, direction, True

    def _protected_side(self, client: bytes, server: bytes) -> str | None:
        c = self.protected.contains(client)
        s = self.protected.contains(server)
        if c and s:
            return "both"
        if c:
            return "client"
        if s:
            return "server"
        return None

    @staticmethod
    def _is_reuse(flow: TableFlow, pkt: Packet) -> bool:
        """A fresh SYN on a finished connection (new ISN) starts a new flow (port reuse)."""
        if pkt.tcp_flags & (TH_SYN | TH_ACK | TH_RST) != TH_SYN:
            return False
        return flow.syn_seq != pkt.seq

    def tcp_state(self, flow: TableFlow, direction: int, flags: int, ack: int) -> None:
        """State changes: handshake, FIN both ways, RST, for a packet of ``flags`` and ``ack``
        already counted. Also the pipeline's fused path, for a flow still ``new`` (the
        handshake's last ACK)."""
        if flow.syn_seq is None and flags & (TH_SYN | TH_ACK) == TH_SYN | TH_ACK and direction == TO_CLIENT:
            # Picked up at the SYN/ACK: it tells the client's ISN (a late SYN copy is no reuse).
            flow.syn_seq = (ack - 1) & 0xFFFFFFFF
        state = flow.state
        seen_ts = flow.tflags & 0xFF
        seen_tc = flow.tflags >> 8
        if flags & TH_RST or (seen_ts & seen_tc & TH_FIN):
            # RST, or FIN seen both ways: the connection is over (half-close keeps it open).
            state = "closed"
        elif state == "new" and flags & TH_ACK and not flags & TH_SYN:
            # The handshake's final ACK, or two-sided traffic on a mid-stream pickup.
            if (seen_ts & seen_tc & TH_SYN) or (flow.pkts[TO_SERVER] and flow.pkts[TO_CLIENT]):
                state = "established"
        if state != flow.state:
            flow.state = state
            flow.tclass = _ESTABLISHED if state == "established" else _CLOSED
            due = flow.last_ts + self._timeouts[flow.tclass]
            if due < flow.due:
                # The new state's timeout is shorter: a fresh heap item (the old one goes stale).
                flow.due = due
                heapq.heappush(self._heap, (due, flow.flow_id, flow.key))
            # Otherwise (new -> established: a longer timeout) the flow's item stays: it comes up
            # earlier than the flow's real due time, and _due_top moves it back then, as it does
            # for any flow active since its item was pushed (no extra heap item per flow).

    # ------------------------------------------------------------------ housekeeping

    def _add_fast(self, flow: TableFlow) -> None:
        """Index an untagged TCP flow by its two directional endpoint byte strings."""
        fast = self.fast_tcp
        assert fast is not None
        cport = flow.cport.to_bytes(2, "big")
        sport = flow.sport.to_bytes(2, "big")
        to_server = flow.client + flow.server + cport + sport
        to_client = flow.server + flow.client + sport + cport
        if to_server != to_client:  # a host talking to itself on one port: the slow path decides
            fast[to_server] = (flow, TO_SERVER)
            fast[to_client] = (flow, TO_CLIENT)

    def _drop_fast(self, flow: TableFlow) -> None:
        fast = self.fast_tcp
        if fast is None or flow.proto != PROTO_TCP or flow.vlan:
            return
        cport = flow.cport.to_bytes(2, "big")
        sport = flow.sport.to_bytes(2, "big")
        to_server = flow.client + flow.server + cport + sport
        hit = fast.get(to_server)
        if hit is not None and hit[0] is flow:
            del fast[to_server]
            del fast[flow.server + flow.client + sport + cport]

    def _remove(self, flow: TableFlow) -> None:
        del self.flows[flow.key]  # its heap items are stale from now on
        self.accounted -= flow.cost
        self._drop_fast(flow)

    def charge_app_state(self, flow: Flow) -> None:
        """Charge ``flow`` APP_STATE_COST once: the pipeline calls this on every stream payload."""
        if isinstance(flow, TableFlow) and flow.cost == FLOW_COST:
            self.charge(flow, APP_STATE_COST)

    def charge(self, flow: TableFlow, nbytes: int) -> None:
        """Add ``nbytes`` to what ``flow`` costs, evicting other flows while over the memcap.

        Flows no longer in the table (ended, being flushed) are not charged. ``flow`` itself is
        never evicted here (its data is being delivered): its heap item is held aside while
        the others are looked at. A memcap below one charged flow leaves just that flow.
        """
        if self.flows.get(flow.key) is not flow:
            return
        flow.cost += nbytes
        self.accounted += nbytes
        held: list[tuple[float, int, FlowKey]] = []
        heap = self._heap
        while self.accounted > self.memcap:
            top = self._due_top()
            if top is None:
                break
            if top is flow:
                held.append(heapq.heappop(heap))
                continue
            self._evict_one("memcap")
        for item in held:
            heapq.heappush(heap, item)

    def _due_top(self) -> TableFlow | None:
        """The flow with the earliest real due time (stale heap items dropped, moved ones pushed back)."""
        heap = self._heap
        flows = self.flows
        timeouts = self._timeouts
        while heap:
            due, flow_id, key = heap[0]
            flow = flows.get(key)
            if flow is None or flow.flow_id != flow_id or due != flow.due:
                heapq.heappop(heap)  # the flow is gone, or a newer item stands for it
                continue
            real = flow.last_ts + timeouts[flow.tclass]
            if real != due:
                # Active since the item was pushed: it moves back to its real place.
                flow.due = real
                heapq.heapreplace(heap, (real, flow_id, key))
                continue
            return flow
        return None

    def _evict_one(self, reason: str) -> None:
        # The flow closest to its idle timeout (half-open and closed flows have short ones).
        flow = self._due_top()
        if flow is None:
            return
        heapq.heappop(self._heap)
        self._remove(flow)
        flow.end_reason = "memcap"
        self.stats.incr("flow.evicted", reason=reason)
        self.ended.append(flow)

    def expire(self, now: float) -> list[Flow]:
        """Flows idle past their state's timeout, removed from the table (reason ``timeout``)."""
        out: list[Flow] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            flow = self._due_top()
            if flow is None or flow.due > now:
                break
            heapq.heappop(heap)
            self._remove(flow)
            flow.end_reason = "timeout"
            out.append(flow)
        if out:
            self.stats.incr("flow.timeout", len(out))
        self.publish_stats()
        return out

    def publish_stats(self) -> None:
        """Fold the table's own counters into stats (``expire`` and ``flush`` do it too)."""
        if self._created:
            self.stats.incr("flow.created", self._created)
            self._created = 0
        self.stats.set("flow.active", len(self.flows))

    def flush(self) -> list[Flow]:
        """Every flow, removed from the table (reason ``shutdown``), oldest first."""
        out: list[Flow] = sorted(self.flows.values(), key=lambda f: f.last_ts)
        for flow in out:
            flow.end_reason = "shutdown"
        self.flows.clear()
        self.accounted = 0
        if self.fast_tcp is not None:
            self.fast_tcp.clear()
        self._heap.clear()
        self.publish_stats()
        return out

    def timeout_of(self, flow: Flow) -> float:
        """The idle timeout that currently applies to ``flow``."""
        return self._timeouts[flow.tclass if isinstance(flow, TableFlow) else _OTHER]
