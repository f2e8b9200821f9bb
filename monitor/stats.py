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


def _key(name: str, labels: dict[str, Any]) -> tuple[str, LabelSet]:
    if not labels:
        return name, ()
    return name, tuple(sorted((k, str(v)) for k, v in labels.items()))


class Stats:
    """Counters only grow; gauges are set. Thread-safe enough for one writer + one reader."""

    def __init__(self) -> None:
        self.counters: Counter[tuple[str, LabelSet]] = Counter()
        self.gauges: dict[tuple[str, LabelSet], float] = {}
        self._lock = threading.Lock()

    def incr(self, name: str, n: int = 1, **labels: Any) -> None:
        self.counters[_key(name, labels)] += n

    def set(self, name: str, value: float, **labels: Any) -> None:
        self.gauges[_key(name, labels)] = value

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
