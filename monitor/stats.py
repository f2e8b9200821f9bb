"""Named counters and gauges, one store per pipeline.

Names are ``<stage>.<thing>`` (``decoder.ipv4.truncated``, ``tcp.reassembly_gap``,
``memcap.hit``); labels are small, bounded sets (interface, cap name, sid, category) and never
carry addresses, file names or content. The Prometheus exporter and the EVE ``stats`` record
both read :meth:`Stats.snapshot`.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

LabelSet = tuple[tuple[str, str], ...]
StatKey = tuple[str, LabelSet]

# Interned keys of labelled counters, by (name, *labels.items()) as the caller passed them.
# Bounded: label values are small bounded sets, but a bug elsewhere must not grow this forever.
_KEY_CACHE_MAX = 8192


def _key(name: str, labels: dict[str, Any]) -> StatKey:
    if not labels:
        return name, ()
    return name, tuple(sorted((k, str(v)) for k, v in labels.items()))


class CounterHandle:
    """A counter with its name and labels resolved once: ``handle.incr(n)`` is one dict update.

    For call sites that count the same labelled counter for every packet or flow.
    """

    __slots__ = ("_stats", "key")

    def __init__(self, stats: Stats, key: StatKey) -> None:
        self._stats = stats
        self.key = key

    def incr(self, n: int = 1) -> None:
        self._stats.counters[self.key] += n


class Stats:
    """Counters only grow; gauges are set. Thread-safe enough for one writer + one reader."""

    def __init__(self) -> None:
        self.counters: Counter[StatKey] = Counter()
        self.gauges: dict[StatKey, float] = {}
        self._lock = threading.Lock()
        self._keys: dict[tuple[Any, ...], StatKey] = {}

    def _labelled_key(self, name: str, labels: dict[str, Any]) -> StatKey:
        """The key of a labelled counter; sorting and str() run once per distinct label set.

        Only label sets whose values are all ``str`` are cached: for those, equal cache keys
        mean equal ``str(value)`` (``1``, ``1.0`` and ``True`` are equal as keys but not as text).
        """
        lookup = (name, *labels.items())
        try:
            return self._keys[lookup]
        except KeyError:
            pass
        except TypeError:  # an unhashable label value: not cacheable
            return _key(name, labels)
        key = _key(name, labels)
        if all(type(v) is str for v in labels.values()):
            if len(self._keys) >= _KEY_CACHE_MAX:
                self._keys.clear()
            self._keys[lookup] = key
        return key

    def incr(self, name: str, n: int = 1, **labels: Any) -> None:
        if labels:
            try:  # a label set seen before: its interned key, without a call (see _labelled_key)
                key = self._keys[(name, *labels.items())]
            except (KeyError, TypeError):
                key = self._labelled_key(name, labels)
            self.counters[key] += n
        else:
            self.counters[(name, ())] += n

    def counter(self, name: str, **labels: Any) -> CounterHandle:
        """A pre-bound handle for a hot call site (same key as ``incr(name, **labels)``)."""
        return CounterHandle(self, _key(name, labels))

    def set(self, name: str, value: float, **labels: Any) -> None:
        self.gauges[self._labelled_key(name, labels) if labels else (name, ())] = value

    def get(self, name: str, **labels: Any) -> float:
        key = _key(name, labels)
        if key in self.gauges:
            return self.gauges[key]
        return self.counters.get(key, 0)

    def total(self, name: str) -> int:
        """Sum of a counter over all its label sets."""
        return sum(v for (n, _), v in list(self.counters.items()) if n == name)

    def snapshot(self) -> dict[str, Any]:
        """Nested dict for the EVE stats record: ``{"decoder": {"ipv4": {"truncated": 3}}}``.

        Labelled counters appear as ``name[label=value,...]`` leaves.
        """
        out: dict[str, Any] = {}
        with self._lock:
            items = list(self.counters.items()) + list(self.gauges.items())
        for (name, labels), value in items:
            parts = name.split(".")
            leaf = parts[-1]
            if labels:
                leaf += "[" + ",".join(f"{k}={v}" for k, v in labels) + "]"
            node = out
            for p in parts[:-1]:
                nxt = node.setdefault(p, {})
                if not isinstance(nxt, dict):
                    nxt = node[p] = {"_value": nxt}
                node = nxt
            if isinstance(node.get(leaf), dict):
                node[leaf]["_value"] = value
            else:
                node[leaf] = value
        return out
