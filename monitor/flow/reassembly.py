"""TCP stream reassembly, one byte stream per direction, handed on as it becomes contiguous.

Contract (docs/architecture.md): ``TcpReassembler(cfg, stats, sink)`` with ``packet(flow,
direction, pkt)``, ``check_timeouts(flow, now)`` and ``close(flow, ts)``; per-flow state lives
in ``flow.streams``; the sink receives ``on_data``, ``on_gap``, ``on_overlap``, ``on_anomaly``
and ``on_depth``.

How it works
- Offsets: sequence numbers become 64-bit offsets from the direction's initial sequence
  number (the SYN's, or the first segment's on a mid-stream pickup). Each segment is
  unwrapped to the value nearest the highest offset seen, so 32-bit wraparound and
  multi-gigabyte transfers need no special casing.
- In order (the common case): bytes at the delivery point go straight to ``sink.on_data``.
  Nothing is buffered to look at a whole flow. Under the default ``first`` policy without a
  depth limit, ``packet`` recognises such a segment by comparing its sequence number with the
  stream's expected one (``Stream.nseq``) and hands the payload on without unwrapping, copying
  or queueing it; a pure ACK costs two attribute stores. Everything else takes the general path.
- Out of order: segments beyond a hole wait in a sorted, non-overlapping list, bounded per
  direction (``stream.per_flow_memcap``) and globally (``stream.memcap``).
- Holes: a hole is skipped (``sink.on_gap``, counted) when the receiver acknowledges bytes
  beyond it (acknowledgements are noted raw and unwrapped only when segments wait) (they were lost by the capture, not the network), when it has waited
  ``stream.gap_wait`` or ``stream.gap_wait_bytes`` have queued behind it, when a memcap is
  hit, or when the flow ends.
- Retransmissions: a recent window of delivered bytes is kept (references to the delivered
  payloads, contiguous up to the delivery point, so no offsets are stored); a retransmission
  carrying the same bytes is dropped and counted; different bytes are an overlap with
  different data.
- Overlaps: decided per overlapped segment by ``stream.overlap_policy`` (target-based
  reassembly after Novak & Sturges): ``first`` old bytes win; ``last`` new bytes win; ``bsd``
  and ``windows`` new bytes win only when the new segment starts before the old one;
  ``linux`` as bsd, and also when both start together and the new one is longer. When the
  two versions differ, ``sink.on_overlap(kept, other)`` and an anomaly
  ``stream.overlap_different_data`` let detection see both versions.
  Under ``first`` delivery is immediate, since a later segment can never win. Under the other
  policies in-order bytes are released once the receiver acknowledges them (or on the gap
  timers/caps/close): until the receiver has accepted bytes, a later segment may still
  replace them, exactly as the policy's target would; after that it cannot.
- Urgent data: with ``stream.urgent_policy: oob`` the byte before the urgent pointer is taken
  out of the stream (as BSD/Linux sockets do without SO_OOBINLINE); ``inline`` keeps it.
- Depth: ``stream.depth`` bytes per direction (0 = unlimited); reaching it calls
  ``sink.on_depth`` once and counts ``stream.depth_reached``; later bytes are dropped.
"""

from __future__ import annotations

import bisect
from typing import Any, Protocol

from monitor.config import Config
from monitor.model import TH_ACK, TH_FIN, TH_RST, TH_SYN, TH_URG, Flow, Packet
from monitor.stats import Stats

_M32 = 0xFFFFFFFF
_HALF = 1 << 31
# Flags that send a segment down the general path (they move the base, end or urgent bytes).
_SLOW_FLAGS = TH_SYN | TH_FIN | TH_RST | TH_URG
# ``Stream.nseq`` when the fast path must not be taken (no base yet, closed, or not allowed).
_NO_SEQ = -1
# Shared empty stand-in for a stream's waiting-segment and urgent lists until it needs one.
_NONE: Any = ()
# Delivered bytes kept per direction to tell a true retransmission from different data (at
# least this much once delivered, at most twice: the window is trimmed in batches).
RECENT_WINDOW = 16 * 1024
# Urgent-byte positions remembered per direction (more: counted, kept inline).
MAX_OOB = 64

OVERLAP_DIFFERENT = "stream.overlap_different_data"


class StreamSink(Protocol):
    """What the reassembler hands its results to (the pipeline)."""

    def on_data(self, flow: Flow, direction: int, data: bytes, ts: float) -> None: ...

    def on_gap(self, flow: Flow, direction: int, length: int, ts: float) -> None: ...

    def on_overlap(self, flow: Flow, direction: int, offset: int, kept: bytes, other: bytes,
                   ts: float) -> None: ...

    def on_anomaly(self, flow: Flow, direction: int, kind: str, detail: str) -> None: ...

    def on_depth(self, flow: Flow, direction: int) -> None: ...


class Stream:
    """One direction of a TCP connection."""

    __slots__ = ("base", "next", "nseq", "high", "pend", "pend_bytes", "recent", "recent_bytes", "acked", "ack_seq", "stall_since", "fin", "delivered", "depth_hit", "gaps", "gap_bytes", "oob",
                 "closed", "chunk")

    def __init__(self) -> None:
        self.base: int | None = None  # sequence number of offset 0
        self.next = 0  # next offset to deliver; everything below was delivered or skipped
        # The 32-bit sequence number of ``next`` while the fast path may deliver, else _NO_SEQ.
        self.nseq = _NO_SEQ
        self.high = 0  # highest segment end seen (the unwrap reference)
        # Waiting segments, sorted, non-overlapping (the shared empty _NONE until the first one).
        self.pend: list[tuple[int, bytes]] = _NONE
        self.pend_bytes = 0
        # Payloads delivered last, oldest first, ending at ``next`` without holes (a skipped gap
        # empties it): their offsets follow from ``next`` and the lengths.
        # (A list, not a deque: an empty deque alone costs ~600 bytes per direction; the window
        # is trimmed in batches with one slice deletion.)
        self.recent: list[bytes] | None = None
        self.recent_bytes = 0
        self.acked = 0  # highest offset the receiver acknowledged (as far as it mattered)
        self.ack_seq: int | None = None  # the receiver's latest acknowledgement number, raw
        self.stall_since: float | None = None  # since when waiting segments made no progress
        self.fin: int | None = None  # offset of the FIN
        self.delivered = 0  # bytes handed to the sink (kept for the depth limit only)
        self.depth_hit = False
        self.gaps = 0
        self.gap_bytes = 0
        self.oob: list[int] = _NONE  # offsets of urgent bytes to take out of the stream
        self.closed = False
        # In-order bytes delivered but not yet handed on (the pipeline's stream chunk, or None).
        self.chunk: Any = None

    def unwrap(self, seq: int) -> int:
        """The offset of 32-bit ``seq`` nearest the highest offset seen."""
        d = ((seq - self.base) - self.high) & _M32  # type: ignore[operator]
        if d >= _HALF:
            d -= 1 << 32
        return self.high + d


def streams_of(flow: Flow) -> tuple[Stream, Stream] | None:
    """The flow's two streams (to_server, to_client), or None before any TCP packet."""
    return flow.streams


def gap_bytes(flow: Flow) -> int:
    """Bytes skipped in both directions (the flow record's ``gap_bytes``)."""
    s = flow.streams
    return s[0].gap_bytes + s[1].gap_bytes if s else 0


class TcpReassembler:
    """Reassembles each TCP direction and streams the bytes to ``sink``."""

    def __init__(self, cfg: Config, stats: Stats, sink: StreamSink) -> None:
        sc = cfg.stream
        self.stats = stats
        self.sink = sink
        self.policy = sc.overlap_policy
        self.immediate = sc.overlap_policy == "first"
        # In-order segments may skip the general path (no depth to count, nothing to wait for).
        self.fast = self.immediate and not sc.depth
        self.memcap = sc.memcap
        self.flow_memcap = sc.per_flow_memcap
        self.depth = sc.depth
        self.gap_wait = sc.gap_wait
        self.gap_wait_bytes = max(1, sc.gap_wait_bytes)
        self.oob = sc.urgent_policy == "oob"
        self.recent_window = min(RECENT_WINDOW, sc.per_flow_memcap)
        # The window is trimmed back to ``recent_window`` once it exceeds this (not per segment).
        self.recent_trim = 2 * self.recent_window
        self.held = 0  # bytes held by all streams (waiting + recent), against ``memcap``
        # Flows with segments waiting behind a hole, so timers visit only those.
        self.waiting: dict[int, Flow] = {}

    # ------------------------------------------------------------------ packet path

    def packet(self, flow: Flow, direction: int, pkt: Packet) -> None:
        streams = flow.streams
        if streams is None:
            streams = flow.streams = (Stream(), Stream())
        s = streams[direction]
        flags = pkt.tcp_flags
        payload = pkt.payload
        if not payload:
            if flags & TH_ACK:
                # The acknowledgement is noted raw, looked at only when bytes wait on the other side.
                streams[direction ^ 1].ack_seq = pkt.ack
            if flags & (TH_SYN | TH_FIN | TH_RST):
                self._general(flow, direction, s, pkt, flags)
            elif not (s.pend or streams[direction ^ 1].pend):
                return  # a pure ACK with nothing waiting: done
            self._after(flow, direction, streams, s, pkt)
            return
        seq = pkt.seq
        if seq != s.nseq or flags & _SLOW_FLAGS:
            self._general(flow, direction, s, pkt, flags)
            if flags & TH_ACK:
                streams[direction ^ 1].ack_seq = pkt.ack
            self._after(flow, direction, streams, s, pkt)
            return
        self.take(s, seq, payload)  # in_order, one call less
        self.sink.on_data(flow, direction, payload, pkt.ts)
        if flags & TH_ACK:
            peer = streams[direction ^ 1]
            peer.ack_seq = pkt.ack
            if peer.pend:
                self._after(flow, direction, streams, s, pkt)

    def in_order(self, flow: Flow, direction: int, s: Stream, seq: int, payload: bytes, ts: float) -> None:
        """The fast path: deliver ``payload``, whose ``seq`` is ``s.nseq`` (the caller checked).

        ``nseq`` equals a real sequence number only when nothing waits, no urgent byte is
        pending and the policy delivers at once (see the module notes), so these bytes are
        exactly the next expected ones. ``high`` catches up with ``next`` when the general path
        next needs it. Acknowledgements are the caller's (``packet``, or the pipeline's fused
        path, which first checked that nothing waits on either side).
        """
        self.take(s, seq, payload)
        self.sink.on_data(flow, direction, payload, ts)

    def take(self, s: Stream, seq: int, payload: bytes) -> None:
        """:meth:`in_order` up to the hand-off: ``payload`` (at ``seq == s.nseq``) is delivered.

        The pipeline's fused path calls this and hands the bytes on itself (straight into the
        direction's stream chunk where one is being collected).
        """
        n = len(payload)
        s.next += n
        s.nseq = (seq + n) & _M32
        # _remember, inlined: the payload joins the recent window.
        recent = s.recent
        held = self.held + n
        if recent is not None and held <= self.memcap:
            recent.append(payload)
            self.held = held
            kept = s.recent_bytes + n
            s.recent_bytes = kept
            if kept > self.recent_trim:
                self._trim(s)
        else:
            self._remember(s, payload)

    def _after(self, flow: Flow, direction: int, streams: tuple[Stream, Stream], s: Stream, pkt: Packet) -> None:
        """After a packet: its acknowledgement may release or skip bytes waiting on the other
        side, and this side's waiting bytes may have waited long enough."""
        if pkt.tcp_flags & TH_ACK:
            peer = streams[direction ^ 1]
            if peer.pend:
                self._acked(flow, direction ^ 1, peer, pkt.ts)
        if s.pend:
            self._check_stall(flow, direction, s, pkt.ts)

    def _general(self, flow: Flow, direction: int, s: Stream, pkt: Packet, flags: int) -> None:
        """Everything but an in-order segment: SYN, FIN, RST, urgent data, holes, overlaps."""
        if s.closed:
            return
        if s.next > s.high:
            s.high = s.next  # the fast path leaves ``high`` behind
        seq = pkt.seq
        if flags & TH_SYN:
            if s.base is None or (s.next == 0 and s.high == 0 and not s.pend):
                s.base = (seq + 1) & _M32
                self._sync(s)
            elif (seq + 1) & _M32 != s.base:
                self.stats.incr("stream.syn_seq_mismatch")
            seq = (seq + 1) & _M32  # data on a SYN starts after it
        payload = pkt.payload
        if s.base is None:
            if not payload and not flags & TH_FIN:
                # A bare RST tells us nothing about where this direction's data starts.
                return
            s.base = seq
            self._sync(s)
            self.stats.incr("stream.midstream_pickup")
        off = s.unwrap(seq)
        if payload:
            if flags & TH_URG and self.oob and 0 < pkt.urg_ptr <= len(payload):
                self._mark_urgent(s, off + pkt.urg_ptr - 1)
            self._segment(flow, direction, s, off, payload, pkt.ts)
        if flags & TH_FIN and s.fin is None:
            s.fin = off + len(payload)
        if flags & TH_RST:
            self.stats.incr("stream.rst")

    def _sync(self, s: Stream) -> None:
        """Recompute ``s.nseq``: call after ``base``, ``next``, ``pend``, ``oob`` or ``closed`` changed.

        The fast path may deliver only when the policy allows it, the stream has a base and is
        open, and no segment or urgent byte waits.
        """
        if self.fast and s.base is not None and not s.closed and not s.pend and not s.oob:
            s.nseq = (s.base + s.next) & _M32
        else:
            s.nseq = _NO_SEQ

    def _acked(self, flow: Flow, direction: int, s: Stream, ts: float) -> None:
        """Bytes wait in ``s``: its receiver's acknowledgement may release or skip them."""
        if self._take_ack(s):
            self._advance(flow, direction, s, ts, force=False)

    @staticmethod
    def _take_ack(s: Stream) -> bool:
        """Fold the raw acknowledgement into ``s.acked``; True if it moved forward."""
        raw = s.ack_seq
        if raw is None or s.base is None or s.closed:
            return False
        if s.next > s.high:
            s.high = s.next  # the fast path leaves ``high`` behind
        a = s.unwrap(raw)
        if a > s.acked and a <= s.high + 1:
            s.acked = a
            return True
        return False

    def _mark_urgent(self, s: Stream, offset: int) -> None:
        if offset in s.oob or offset < s.next:
            return
        if len(s.oob) >= MAX_OOB:
            self.stats.incr("stream.urgent_overflow")
            return
        if s.oob is _NONE:
            s.oob = []
        bisect.insort(s.oob, offset)
        self._sync(s)
        self.stats.incr("stream.urgent_removed")

    def _segment(self, flow: Flow, direction: int, s: Stream, off: int, data: bytes, ts: float) -> None:
        end = off + len(data)
        if end > s.high:
            s.high = end
        if s.depth_hit:
            return
        nxt = s.next
        if off < nxt:
            # Bytes at or behind the delivery point: a retransmission, unless they differ.
            if end <= nxt:
                self._behind(flow, direction, s, off, data, ts)
                return
            self._behind(flow, direction, s, off, data[:nxt - off], ts)
            data = data[nxt - off:]
            off = nxt
        if off == nxt and self.immediate and not s.pend:
            self._deliver(flow, direction, s, off, data, ts)
            return
        self._hold(flow, direction, s, off, data, ts)
        self._advance(flow, direction, s, ts, force=False)

    # ------------------------------------------------------------------ behind the delivery point

    def _behind(self, flow: Flow, direction: int, s: Stream, off: int, data: bytes, ts: float) -> None:
        """Compare bytes already delivered (or skipped) with a new copy of them."""
        end = off + len(data)
        covered = 0
        differs = False
        r_end = s.next - s.recent_bytes
        for r_data in s.recent or ():
            r_off = r_end
            r_end = r_off + len(r_data)
            if r_end <= off or r_off >= end:
                continue
            lo = max(off, r_off)
            hi = min(end, r_end)
            covered += hi - lo
            old = r_data[lo - r_off:hi - r_off]
            new = data[lo - off:hi - off]
            if old != new:
                differs = True
                self._report_overlap(flow, direction, lo, old, new, ts)
        if not differs:
            self.stats.incr("stream.retransmission")
            if covered < len(data):
                # Too old to compare (or inside a skipped gap): dropped unverified.
                self.stats.incr("stream.retransmission_unverified")

    def _report_overlap(self, flow: Flow, direction: int, offset: int, kept: bytes, other: bytes,
                        ts: float) -> None:
        self.stats.incr("stream.overlap_different_data")
        self.sink.on_anomaly(flow, direction, OVERLAP_DIFFERENT,
                             f"{len(kept)} bytes at stream offset {offset} differ between segments")
        self.sink.on_overlap(flow, direction, offset, kept, other, ts)

    # ------------------------------------------------------------------ waiting segments

    def _new_wins(self, n_off: int, n_end: int, o_off: int, o_end: int) -> bool:
        policy = self.policy
        if policy == "first":
            return False
        if policy == "last":
            return True
        if n_off < o_off:
            return True
        return policy == "linux" and n_off == o_off and n_end > o_end

    def _hold(self, flow: Flow, direction: int, s: Stream, off: int, data: bytes, ts: float) -> None:
        end = off + len(data)
        pend = s.pend
        if not pend or off >= pend[-1][0] + len(pend[-1][1]):
            self._store(flow, direction, s, len(pend), len(pend), [(off, data)], ts)
            return
        # Segments that may overlap [off, end): from the last one starting before ``off``.
        i = bisect.bisect_right(pend, off, key=lambda seg: seg[0]) - 1
        if i < 0 or pend[i][0] + len(pend[i][1]) <= off:
            i += 1
        j = i
        cuts: list[tuple[int, int]] = []  # parts of the new segment that lose
        remains: list[tuple[int, bytes]] = []  # what is left of the old segments
        while j < len(pend) and pend[j][0] < end:
            o_off, o_data = pend[j]
            o_end = o_off + len(o_data)
            lo = max(off, o_off)
            hi = min(end, o_end)
            old = o_data[lo - o_off:hi - o_off]
            new = data[lo - off:hi - off]
            if old == new:
                self.stats.incr("stream.retransmission")
                cuts.append((lo, hi))
                remains.append((o_off, o_data))
            elif self._new_wins(off, end, o_off, o_end):
                self._report_overlap(flow, direction, lo, new, old, ts)
                if o_off < lo:
                    remains.append((o_off, o_data[:lo - o_off]))
                if o_end > hi:
                    remains.append((hi, o_data[hi - o_off:]))
            else:
                self._report_overlap(flow, direction, lo, old, new, ts)
                cuts.append((lo, hi))
                remains.append((o_off, o_data))
            j += 1
        pieces: list[tuple[int, bytes]] = []
        at = off
        for lo, hi in cuts:
            if lo > at:
                pieces.append((at, data[at - off:lo - off]))
            at = max(at, hi)
        if at < end:
            pieces.append((at, data[at - off:]))
        if not pieces and len(remains) == j - i:
            return  # nothing new
        merged = sorted(remains + pieces, key=lambda seg: seg[0])
        self._store(flow, direction, s, i, j, merged, ts)

    def _store(self, flow: Flow, direction: int, s: Stream, i: int, j: int,
               segs: list[tuple[int, bytes]], ts: float) -> None:
        """Replace ``s.pend[i:j]`` by ``segs``, within the per-direction and global caps."""
        before = sum(len(d) for _, d in s.pend[i:j])
        after = sum(len(d) for _, d in segs)
        grow = after - before
        if grow > 0 and s.pend_bytes + grow > self.flow_memcap:
            self.stats.incr("stream.memcap", cap="flow")
            return self._overflow(flow, direction, s, segs, i, j, ts)
        if grow > 0 and self.held + grow > self.memcap:
            self.stats.incr("stream.memcap", cap="global")
            self._drop_recent(s)
            if self.held + grow > self.memcap:
                return self._overflow(flow, direction, s, segs, i, j, ts)
        if s.pend is _NONE:
            s.pend = []
        s.pend[i:j] = segs
        self._sync(s)
        s.pend_bytes += grow
        self.held += grow
        if s.stall_since is None:
            s.stall_since = ts
        self.waiting[flow.flow_id] = flow

    def _overflow(self, flow: Flow, direction: int, s: Stream, segs: list[tuple[int, bytes]],
                  i: int, j: int, ts: float) -> None:
        """A cap is hit: deliver what waits (skipping holes), then the new bytes.

        New bytes that still do not fit are delivered right away after a reported gap rather
        than dropped: a leak monitor must not lose bytes it has seen.
        """
        old = s.pend[i:j]
        new = [seg for seg in segs if seg not in old]
        self._advance(flow, direction, s, ts, force=True)
        for off, data in new:
            if off + len(data) <= s.next:
                continue
            if off < s.next:
                data = data[s.next - off:]
                off = s.next
            if not s.pend and off == s.next and self.immediate:
                self._deliver(flow, direction, s, off, data, ts)
            elif s.pend_bytes + len(data) <= self.flow_memcap and self.held + len(data) <= self.memcap:
                if s.pend is _NONE:
                    s.pend = []
                s.pend.append((off, data))
                self._sync(s)
                s.pend_bytes += len(data)
                self.held += len(data)
            else:
                self._advance(flow, direction, s, ts, force=True)
                if off > s.next:
                    self._gap(flow, direction, s, off - s.next, ts)
                self._deliver(flow, direction, s, off, data, ts)
            if s.depth_hit:
                return
        if s.pend:
            s.stall_since = ts
            self.waiting[flow.flow_id] = flow
            self._advance(flow, direction, s, ts, force=False)

    def _check_stall(self, flow: Flow, direction: int, s: Stream, now: float) -> None:
        if s.pend_bytes >= self.gap_wait_bytes:
            self.stats.incr("stream.gap_forced", why="bytes")
            self._advance(flow, direction, s, now, force=True)
        elif s.stall_since is not None and now - s.stall_since >= self.gap_wait:
            self.stats.incr("stream.gap_forced", why="time")
            self._advance(flow, direction, s, now, force=True)

    def _advance(self, flow: Flow, direction: int, s: Stream, ts: float, *, force: bool) -> None:
        """Deliver waiting segments from the delivery point on.

        A hole is skipped when ``force`` or when the receiver acknowledged past it; under
        non-first policies unacknowledged bytes wait unless ``force``.
        """
        if not force:
            self._take_ack(s)
        pend = s.pend
        progressed = False
        k = 0
        while k < len(pend):
            off, data = pend[k]
            if off > s.next:
                if not force and s.acked < off:
                    break
                self._gap(flow, direction, s, off - s.next, ts)
                s.next = off
                self._sync(s)
            end = off + len(data)
            if not force and not self.immediate and end > s.acked:
                break
            k += 1
            self._deliver(flow, direction, s, off, data, ts)
            progressed = True
            if s.depth_hit:
                k = len(pend)
                break
        if k:
            released = sum(len(d) for _, d in pend[:k])
            del pend[:k]
            s.pend_bytes -= released
            self.held -= released
            self._sync(s)
        if not pend:
            s.stall_since = None
        elif progressed:
            s.stall_since = ts

    def _gap(self, flow: Flow, direction: int, s: Stream, length: int, ts: float) -> None:
        self._drop_recent(s)  # the recent window must end at the delivery point, without holes
        s.gaps += 1
        s.gap_bytes += length
        flow.gaps += 1
        self.stats.incr("stream.gap")
        self.stats.incr("stream.gap_bytes", length)
        self.sink.on_gap(flow, direction, length, ts)

    # ------------------------------------------------------------------ delivery

    def _deliver(self, flow: Flow, direction: int, s: Stream, off: int, data: bytes, ts: float) -> None:
        end = off + len(data)
        s.next = end
        self._remember(s, data)
        if s.oob and s.oob[0] < end:
            data = self._strip_urgent(s, off, data)
        self._sync(s)
        if self.depth:
            room = self.depth - s.delivered
            if len(data) >= room:
                data = data[:room]
                s.depth_hit = True
        if data:
            s.delivered += len(data)
            self.sink.on_data(flow, direction, data, ts)
        if s.depth_hit:
            self.stats.incr("stream.depth_reached")
            self.sink.on_depth(flow, direction)
            self._release(s)

    def _strip_urgent(self, s: Stream, off: int, data: bytes) -> bytes:
        end = off + len(data)
        out = []
        at = off
        keep = []
        for u in s.oob:
            if u < off:
                continue
            if u >= end:
                keep.append(u)
                continue
            out.append(data[at - off:u - off])
            at = u + 1
        out.append(data[at - off:])
        s.oob = keep
        return b"".join(out)

    def _remember(self, s: Stream, data: bytes) -> None:
        """Keep ``data``, just delivered up to ``s.next``, in the recent window (see the fast path)."""
        if not self.recent_window:
            return
        n = len(data)
        if self.held + n > self.memcap:
            self._drop_recent(s)  # over the global cap: keep nothing rather than a window with holes
            return
        recent = s.recent
        if recent is None:
            recent = s.recent = []
        recent.append(data)
        s.recent_bytes += n
        self.held += n
        if s.recent_bytes > self.recent_trim:
            self._trim(s)

    def _trim(self, s: Stream) -> None:
        """Drop the oldest payloads until the window is back to ``recent_window`` (the newest stays)."""
        recent = s.recent
        assert recent is not None
        window = self.recent_window
        have = s.recent_bytes
        k = 0
        last = len(recent) - 1
        while have > window and k < last:
            have -= len(recent[k])
            k += 1
        del recent[:k]
        self.held -= s.recent_bytes - have
        s.recent_bytes = have

    def _drop_recent(self, s: Stream) -> None:
        if s.recent:
            self.held -= s.recent_bytes
            s.recent.clear()
        s.recent_bytes = 0

    def _release(self, s: Stream) -> None:
        self._drop_recent(s)
        self.held -= s.pend_bytes
        if s.pend:
            s.pend.clear()
        s.pend_bytes = 0
        self._sync(s)
        s.stall_since = None

    # ------------------------------------------------------------------ timers and end

    def check_timeouts(self, flow: Flow, now: float) -> None:
        """Skip holes that waited longer than ``stream.gap_wait`` (idle flows, live capture)."""
        streams = flow.streams
        if not streams:
            return
        for direction, s in enumerate(streams):
            if s.pend and s.stall_since is not None and now - s.stall_since >= self.gap_wait:
                self.stats.incr("stream.gap_forced", why="time")
                self._advance(flow, direction, s, now, force=True)

    def check_all_timeouts(self, now: float) -> None:
        """``check_timeouts`` for every flow with waiting segments (and only those)."""
        for flow in list(self.waiting.values()):
            self.check_timeouts(flow, now)
            streams = flow.streams
            if not streams or not (streams[0].pend or streams[1].pend):
                self.waiting.pop(flow.flow_id, None)

    def close(self, flow: Flow, ts: float) -> None:
        """Flow end: deliver everything still waiting (holes reported) and free the state."""
        streams = flow.streams
        if not streams:
            return
        for direction, s in enumerate(streams):
            if s.closed:
                continue
            if s.pend and not s.depth_hit:
                self._advance(flow, direction, s, ts, force=True)
            # Bytes before the FIN that the capture missed.
            if s.fin is not None and not s.depth_hit and s.fin > s.next:
                self._gap(flow, direction, s, s.fin - s.next, ts)
                s.next = s.fin
            self._release(s)
            s.closed = True
            s.nseq = _NO_SEQ
        self.waiting.pop(flow.flow_id, None)
