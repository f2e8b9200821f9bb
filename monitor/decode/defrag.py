"""IPv4 and IPv6 fragment reassembly with a timeout, a memcap and a per-datagram fragment cap.

Datagrams are keyed by (version, src, dst, id, proto, vlan) for IPv4 and (version, src, dst,
id, vlan) for IPv6 (RFC 791 / RFC 8200). Overlapping fragments keep the bytes that arrived
first; when an overlap carries different bytes, ``defrag.overlap_different_data`` is reported
once per datagram (an evasion attempt: the receiver may see the other version).

Caps and what happens when they are hit (each counted under ``defrag.*``):

* ``memcap`` -- bytes held for incomplete datagrams (fragment data plus bookkeeping): the
  oldest datagrams are dropped to make room (``defrag.memcap_evict``); a fragment that cannot
  fit even then is dropped (``defrag.memcap_drop``);
* ``max_fragments`` -- fragments per datagram: the datagram is dropped (``defrag.max_fragments``
  anomaly);
* ``timeout`` -- an incomplete datagram older than this is dropped (``defrag.timeout``);
* a datagram longer than 65535 bytes is dropped (``defrag.too_large`` anomaly).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from monitor.config import DefragConfig
from monitor.model import RawPacket
from monitor.stats import Stats

FRAGMENT_OVERHEAD = 64  # bookkeeping bytes charged per fragment
DATAGRAM_OVERHEAD = 256  # and per datagram
MAX_DATAGRAM = 65535

Anomaly = Callable[[str, str, RawPacket], None]


class _Datagram:
    __slots__ = ("frags", "first_ts", "total", "received", "held", "proto", "wire", "overlap_reported")

    def __init__(self, ts: float) -> None:
        self.frags: list[tuple[int, int, bytes]] = []  # (start, stop, data) in arrival order
        self.first_ts = ts
        self.total = -1  # payload length, known once the last fragment (MF=0) arrived
        self.received = 0
        self.held = DATAGRAM_OVERHEAD
        self.proto = -1  # next protocol, from the fragment at offset 0
        self.wire = 0
        self.overlap_reported = False


class Defragmenter:
    def __init__(self, cfg: DefragConfig, stats: Stats, anomaly: Anomaly) -> None:
        self.timeout = cfg.timeout
        self.memcap = cfg.memcap
        self.max_fragments = cfg.max_fragments
        self.stats = stats
        self.anomaly = anomaly
        self.used = 0
        # Insertion order is creation order, so the oldest datagram is always first.
        self.datagrams: dict[tuple[Any, ...], _Datagram] = {}

    def __len__(self) -> int:
        return len(self.datagrams)

    def add(self, key: tuple[Any, ...], offset: int, more: bool, proto: int, data: bytes,
            raw: RawPacket) -> tuple[bytes, int, int] | None:
        """Add one fragment; return (payload, proto of the first fragment, summed frame lengths) when complete.

        ``proto`` is the protocol this fragment announces (IPv4 header protocol, or the IPv6
        fragment header's next header); the first fragment's value is the one that counts.
        """
        stats = self.stats
        stats.incr("defrag.fragments")
        size = len(data)
        stop = offset + size
        if stop > MAX_DATAGRAM:
            self._drop(key)
            return self._bad("defrag.too_large", f"fragment ends at {stop}", raw)
        if size == 0 and more:
            stats.incr("defrag.empty_fragment")
            return None
        cost = size + FRAGMENT_OVERHEAD
        dg = self.datagrams.get(key)
        if dg is not None and raw.ts - dg.first_ts > self.timeout:
            stats.incr("defrag.timeout")
            self._drop(key)
            dg = None
        need = cost + (DATAGRAM_OVERHEAD if dg is None else 0)
        if self.used + need > self.memcap:
            self._make_room(need)
            dg = self.datagrams.get(key)
            need = cost + (DATAGRAM_OVERHEAD if dg is None else 0)
            if self.used + need > self.memcap:
                stats.incr("defrag.memcap_drop")
                return None
        if dg is None:
            dg = self.datagrams[key] = _Datagram(raw.ts)
            self.used += DATAGRAM_OVERHEAD
        if len(dg.frags) >= self.max_fragments:
            self._drop(key)
            return self._bad("defrag.max_fragments", f"more than {self.max_fragments} fragments", raw)
        if not more:
            if dg.total >= 0 and dg.total != stop:
                self.anomaly("defrag.inconsistent_end", f"last fragment ends at {stop}, earlier at {dg.total}", raw)
                stats.incr("defrag.inconsistent_end")
            else:
                dg.total = stop
        if dg.total >= 0 and stop > dg.total:
            self.anomaly("defrag.beyond_end", f"fragment ends at {stop} after the datagram end {dg.total}", raw)
            stats.incr("defrag.beyond_end")
            stop = dg.total
            data = data[: max(stop - offset, 0)]
            if stop <= offset:
                return None
        if offset == 0:
            dg.proto = proto
        for s, e, d in dg.frags:
            if s < stop and offset < e:
                lo = s if s > offset else offset
                hi = e if e < stop else stop
                if d[lo - s:hi - s] != data[lo - offset:hi - offset]:
                    stats.incr("defrag.overlap_different_data")
                    if not dg.overlap_reported:
                        dg.overlap_reported = True
                        self.anomaly("defrag.overlap_different_data", f"bytes {lo}-{hi} differ", raw)
                else:
                    stats.incr("defrag.overlap_same_data")
        dg.frags.append((offset, stop, data))
        dg.received += stop - offset
        dg.held += cost
        dg.wire += raw.wire_len or len(raw.data)
        self.used += cost
        if dg.total < 0 or dg.received < dg.total or dg.proto < 0 or not self._covered(dg):
            return None
        del self.datagrams[key]
        self.used -= dg.held
        buf = bytearray(dg.total)
        for s, e, d in reversed(dg.frags):  # earliest arrival written last: first wins
            buf[s:e] = d
        stats.incr("defrag.reassembled")
        return bytes(buf), dg.proto, dg.wire

    @staticmethod
    def _covered(dg: _Datagram) -> bool:
        cursor = 0
        for s, e, _ in sorted(dg.frags):
            if s > cursor:
                return False
            if e > cursor:
                cursor = e
        return cursor >= dg.total

    def expire(self, now: float) -> int:
        """Drop datagrams older than the timeout; returns how many."""
        dropped = 0
        limit = now - self.timeout
        datagrams = self.datagrams
        while datagrams:
            key, dg = next(iter(datagrams.items()))
            if dg.first_ts >= limit:
                break
            self._drop(key)
            dropped += 1
        if dropped:
            self.stats.incr("defrag.timeout", dropped)
        return dropped

    def _make_room(self, need: int) -> None:
        """Drop the oldest datagrams (possibly the one this fragment belongs to) until ``need`` fits."""
        datagrams = self.datagrams
        evicted = 0
        while datagrams and self.used + need > self.memcap:
            self._drop(next(iter(datagrams)))
            evicted += 1
        if evicted:
            self.stats.incr("defrag.memcap_evict", evicted)

    def _drop(self, key: tuple[Any, ...]) -> None:
        dg = self.datagrams.pop(key, None)
        if dg is not None:
            self.used -= dg.held

    def _bad(self, kind: str, detail: str, raw: RawPacket) -> tuple[bytes, int, int] | None:
        self.stats.incr(kind)
        self.anomaly(kind, detail, raw)
        return None
