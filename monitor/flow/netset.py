"""A set of IPv4/IPv6 networks with a fast membership test on packed addresses.

Used per flow (protected side) and by policy (approved destinations), so ``contains`` must
be cheap: one ``int.from_bytes`` plus one masked set lookup per distinct prefix length in
the set (a handful in practice), never a walk over every network.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable


class _Family:
    """Networks of one address family, grouped by prefix length."""

    __slots__ = ("bits", "by_len")

    def __init__(self, bits: int) -> None:
        self.bits = bits
        # (mask, set of network ints) per prefix length, longest prefix first.
        self.by_len: list[tuple[int, set[int]]] = []

    def add(self, network: int, prefixlen: int) -> None:
        all_ones = (1 << self.bits) - 1
        mask = all_ones ^ ((1 << (self.bits - prefixlen)) - 1)
        for m, nets in self.by_len:
            if m == mask:
                nets.add(network & mask)
                return
        self.by_len.append((mask, {network & mask}))
        self.by_len.sort(key=lambda item: -item[0])

    def contains(self, value: int) -> bool:
        for mask, nets in self.by_len:
            if value & mask in nets:
                return True
        return False


class NetSet:
    """``NetSet(["10.0.0.0/8", "2001:db8::/32"]).contains(packed_address)``.

    Accepts CIDRs and bare addresses (host routes). Raises ``ValueError`` on a bad entry
    (config validation has already rejected those for ``networks.protected``).
    """

    __slots__ = ("_v4", "_v6", "cidrs")

    def __init__(self, cidrs: Iterable[str] = ()) -> None:
        self._v4 = _Family(32)
        self._v6 = _Family(128)
        self.cidrs: list[str] = []
        for text in cidrs:
            net = ipaddress.ip_network(str(text).strip(), strict=False)
            family = self._v4 if net.version == 4 else self._v6
            family.add(int(net.network_address), net.prefixlen)
            self.cidrs.append(str(net))

    def __bool__(self) -> bool:
        return bool(self.cidrs)

    def __len__(self) -> int:
        return len(self.cidrs)

    def __repr__(self) -> str:
        return f"NetSet({self.cidrs!r})"

    def contains(self, packed: bytes) -> bool:
        """True if the packed 4- or 16-byte address lies in one of the networks."""
        n = len(packed)
        if n == 4:
            return self._v4.contains(int.from_bytes(packed, "big"))
        if n == 16:
            value = int.from_bytes(packed, "big")
            if self._v6.contains(value):
                return True
            # An IPv4-mapped address (::ffff:a.b.c.d) belongs to the IPv4 network it maps.
            if value >> 32 == 0xFFFF:
                return self._v4.contains(value & 0xFFFFFFFF)
            return False
        return False

    def contains_text(self, address: str) -> bool:
        """Convenience for configuration checks and tests; not for the packet path."""
        try:
            return self.contains(ipaddress.ip_address(address.strip("[]")).packed)
        except ValueError:
            return False
