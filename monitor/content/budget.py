"""Caps shared by every content decoder working on one document.

One :class:`Budget` covers one ``extract()`` call. Decoders draw decompressed bytes and text
characters from it; when a cap is hit the budget counts ``content.cap{cap=...}`` once per cap and
raises :class:`CapHit`, which ``extract()`` turns into a :class:`Notice`. The exceptions never
leave ``monitor.content``.

Ratio policy: a decompression is a bomb when its output exceeds ``max_ratio`` times its input
*and* :data:`RATIO_FLOOR` bytes. The floor keeps small, highly repetitive but legitimate
documents (an empty spreadsheet compresses 300:1) from being called bombs; the cost of a bomb is
bounded by ``max(RATIO_FLOOR, max_ratio * input)`` per stream and by ``max_decompressed`` overall.
"""

from __future__ import annotations

import bz2
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from monitor.config import ContentConfig
from monitor.stats import Stats

RATIO_FLOOR = 1 << 20
CHUNK = 64 << 10

# cap name -> Notice kind
NOTICE_OF_CAP = {
    "ratio": "bomb",
    "size": "truncated",
    "text": "truncated",
    "members": "members",
    "depth": "depth",
    "time": "truncated",
    "pages": "truncated",
}


class CapHit(Exception):
    """A cap was reached; ``cap`` is the counter label, ``fatal`` stops the whole document."""

    def __init__(self, cap: str, detail: str, fatal: bool = True) -> None:
        super().__init__(detail)
        self.cap = cap
        self.detail = detail
        self.fatal = fatal


class Malformed(Exception):
    """The input does not follow its format; what was decoded before stays valid."""


@dataclass
class Budget:
    limits: ContentConfig
    stats: Stats
    input_size: int
    deadline: float = 0.0
    out: int = 0
    text: int = 0
    members: int = 0
    hit: set[str] = field(default_factory=set)

    def count_cap(self, cap: str) -> None:
        if cap not in self.hit:
            self.hit.add(cap)
            self.stats.incr("content.cap", cap=cap)

    def fail(self, cap: str, detail: str, fatal: bool = True) -> CapHit:
        self.count_cap(cap)
        return CapHit(cap, detail, fatal)

    def clip_output(self, chunk: bytes) -> bytes:
        """``chunk`` trimmed to the room left under ``max_decompressed`` (and accounted); the
        caller yields it and then raises the size cap through :meth:`take_output`."""
        room = self.limits.max_decompressed - self.out
        if len(chunk) <= room:
            return chunk
        return chunk[: max(room, 0)]

    def take_output(self, n: int) -> None:
        """Account ``n`` decompressed bytes against the document-wide size and ratio caps."""
        self.out += n
        if self.out > self.limits.max_decompressed:
            raise self.fail("size", f"decompressed output over {self.limits.max_decompressed} bytes")
        if self.out > RATIO_FLOOR and self.out > self.limits.max_ratio * max(self.input_size, 1):
            raise self.fail("ratio", f"document decompression ratio over {self.limits.max_ratio}")

    def take_member(self) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise self.fail("members", f"more than {self.limits.max_members} members")

    def clip_text(self, text: str) -> tuple[str, bool]:
        """The part of ``text`` that still fits the text cap, and whether it was clipped."""
        room = self.limits.max_text - self.text
        if len(text) <= room:
            self.text += len(text)
            return text, False
        self.text = self.limits.max_text
        self.count_cap("text")
        return text[: max(room, 0)], True

    def check_time(self) -> None:
        if self.deadline and time.thread_time() > self.deadline:
            raise self.fail("time", "decoder time budget spent")


def account(budget: Budget, chunk: bytes) -> Iterator[bytes]:
    """Yield ``chunk`` within the size cap (trimmed when it crosses it), then enforce the caps."""
    part = budget.clip_output(chunk)
    if len(part) < len(chunk):
        if part:
            budget.out += len(part)
            yield part
        raise budget.fail("size", f"decompressed output over {budget.limits.max_decompressed} bytes")
    budget.take_output(len(chunk))
    yield chunk


def _decompressor(method: str) -> zlib._Decompress | bz2.BZ2Decompressor:
    if method == "deflate":
        return zlib.decompressobj(-15)
    if method == "zlib":
        return zlib.decompressobj(15)
    if method == "gzip":
        return zlib.decompressobj(31)
    if method == "bzip2":
        return bz2.BZ2Decompressor()
    raise Malformed(f"unsupported compression {method}")


def inflate(data: memoryview | bytes, method: str, budget: Budget) -> Iterator[bytes]:
    """Decompress ``data`` in chunks of at most :data:`CHUNK` bytes, enforcing the caps as it goes.

    Stops at the end of the compressed stream (trailing bytes are ignored). A ratio breach of
    this one stream raises a non-fatal :class:`CapHit` (other members may still be read); the
    document-wide caps raise a fatal one. Corrupt data raises :class:`Malformed` after yielding
    what decoded cleanly.
    """
    d = _decompressor(method)
    src = memoryview(data)
    produced = 0
    limit = max(RATIO_FLOOR, budget.limits.max_ratio * max(len(src), 1))
    pos = 0
    while True:
        try:
            if isinstance(d, bz2.BZ2Decompressor):
                if d.eof:
                    return
                feed = src[pos : pos + CHUNK] if d.needs_input else b""
                pos += len(feed)
                out = d.decompress(feed, CHUNK)
                if not out and d.needs_input and pos >= len(src):
                    raise Malformed("truncated bzip2 stream")
            else:
                if d.eof:
                    return
                feed = d.unconsumed_tail or src[pos : pos + CHUNK]
                if not d.unconsumed_tail:
                    pos += len(feed)
                if not feed:
                    out = d.flush()
                    if out:
                        produced += len(out)
                        yield from account(budget, out)
                    raise Malformed("truncated compressed stream")
                out = d.decompress(feed, CHUNK)
        except (zlib.error, OSError, EOFError, ValueError) as e:
            raise Malformed(f"corrupt {method} data") from e
        if out:
            produced += len(out)
            if produced > limit:
                budget.count_cap("ratio")
                raise CapHit("ratio", f"stream decompression ratio over {budget.limits.max_ratio}", fatal=False)
            yield from account(budget, out)
