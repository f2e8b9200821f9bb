"""Host names learned from traffic (DNS answers, TLS SNI, HTTP Host, SMTP HELO).

Bounded LRU: policy (approved destinations by name) and reports (who was the destination)
ask ``lookup(addr)``; names are kept per packed address with the source that taught them.
"""

from __future__ import annotations

from collections import OrderedDict


class HostNames:
    def __init__(self, capacity: int = 65536, per_addr: int = 8) -> None:
        self.capacity = capacity
        self.per_addr = per_addr
        self._names: OrderedDict[bytes, dict[str, str]] = OrderedDict()
        self.evicted = 0

    def learn(self, addr: bytes, name: str, source: str) -> None:
        name = name.strip().rstrip(".").lower()
        if not name or len(name) > 253:
            return
        entry = self._names.get(addr)
        if entry is None:
            entry = self._names[addr] = {}
            if len(self._names) > self.capacity:
                self._names.popitem(last=False)
                self.evicted += 1
        else:
            self._names.move_to_end(addr)
        if name not in entry and len(entry) >= self.per_addr:
            entry.pop(next(iter(entry)))
        entry[name] = source

    def lookup(self, addr: bytes) -> list[str]:
        entry = self._names.get(addr)
        return list(entry) if entry else []

    def sources(self, addr: bytes) -> dict[str, str]:
        return dict(self._names.get(addr) or {})
