"""A small pcapng writer for tests: any byte order, sections, interfaces with options, every
packet block kind, other blocks, and hooks to damage a block (its length, caplen, interface)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) & 3)


def option(endian: str, code: int, value: bytes) -> bytes:
    return struct.pack(endian + "HH", code, len(value)) + _pad(value)


def options(endian: str, opts: list[tuple[int, bytes]]) -> bytes:
    if not opts:
        return b""
    return b"".join(option(endian, c, v) for c, v in opts) + option(endian, 0, b"")


def block(endian: str, btype: int, body: bytes, *, blen: int | None = None) -> bytes:
    """One block: ``blen`` (when given) is written in both length fields instead of the true one."""
    body = _pad(body)
    length = 12 + len(body) if blen is None else blen
    return struct.pack(endian + "II", btype, length) + body + struct.pack(endian + "I", length & 0xFFFFFFFF)


def shb(endian: str, *, bom: int = 0x1A2B3C4D, opts: list[tuple[int, bytes]] | None = None) -> bytes:
    body = struct.pack(endian + "IHHq", bom, 1, 0, -1) + options(endian, opts or [])
    return block(endian, 0x0A0D0D0A, body)


def idb(endian: str, linktype: int, *, snaplen: int = 0, name: str = "", tsresol: int | None = None,
        tsoffset: int | None = None) -> bytes:
    opts: list[tuple[int, bytes]] = []
    if name:
        opts.append((2, name.encode()))
    if tsresol is not None:
        opts.append((9, bytes([tsresol])))
    if tsoffset is not None:
        opts.append((14, struct.pack(endian + "q", tsoffset)))
    return block(endian, 1, struct.pack(endian + "HHI", linktype, 0, snaplen) + options(endian, opts))


def epb(endian: str, ifid: int, ticks: int, data: bytes, *, wire: int | None = None, caplen: int | None = None,
        blen: int | None = None, comment: bytes = b"") -> bytes:
    head = struct.pack(endian + "IIIII", ifid, ticks >> 32, ticks & 0xFFFFFFFF,
                       len(data) if caplen is None else caplen, len(data) if wire is None else wire)
    return block(endian, 6, head + _pad(data) + options(endian, [(1, comment)] if comment else []), blen=blen)


def spb(endian: str, data: bytes, *, wire: int | None = None, blen: int | None = None) -> bytes:
    return block(endian, 3, struct.pack(endian + "I", len(data) if wire is None else wire) + data, blen=blen)


def opb(endian: str, ifid: int, ticks: int, data: bytes, *, wire: int | None = None,
        blen: int | None = None) -> bytes:
    head = struct.pack(endian + "HHIIII", ifid, 0, ticks >> 32, ticks & 0xFFFFFFFF, len(data),
                       len(data) if wire is None else wire)
    return block(endian, 2, head + data, blen=blen)


def other(endian: str, btype: int, body: bytes) -> bytes:
    """Name resolution (4), interface statistics (5), secrets (10), custom (0xBAD) ...: no packets."""
    return block(endian, btype, body)


@dataclass
class Section:
    endian: str
    blocks: list[bytes] = field(default_factory=list)

    def bytes(self) -> bytes:
        return shb(self.endian) + b"".join(self.blocks)
