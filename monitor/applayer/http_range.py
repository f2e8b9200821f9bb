"""HTTP range reassembly: one file assembled from many ``206 Partial Content`` bodies.

Download managers, media players and update agents fetch one object as many ranges, often
over several transactions (``Range: bytes=0-9999``, then ``10000-19999`` ...) or as one
``multipart/byteranges`` response. Each 206 body is still its own transaction file (what
went over the wire in that exchange), and in addition the pieces are written at their
``Content-Range`` offsets into one *range file* per object, so detection sees the whole
object (a marker split across two ranges, the fingerprint of the complete file). This is
also what Suricata logs: the per-transaction files plus one fileinfo for the assembled file.

Decisions:

- Identity: a range file is keyed per flow by (host, URL, instance length, validator), the
  validator being the ETag, else Last-Modified. Ranges of another object, or of a changed
  object, never mix. Ranges of one object fetched over several connections are assembled
  per connection (parsers are per flow; flows may be on different workers).
- Streaming: bytes at the write cursor go straight into the file; ranges ahead of it are
  held (``app_layer.http.range_buffer`` bytes and ``MAX_HELD_PIECES`` pieces per flow,
  counter ``http.range_cap`` when hit: the held ranges are then written with holes before
  them). Bytes before the cursor
  (overlapping or repeated ranges, ranges that arrive after a cap wrote a hole over them) are
  dropped: the first copy wins (``http.range_overlap``).
- Reporting: the file is closed as soon as ``[0, instance length)`` is covered, else at
  flow end with the holes as gaps (``TRUNCATED``, no hash). A single response that carries
  the whole object starts no range file (that transaction's file already is the object).
- ``Content-Encoding`` on a 206 applies to the whole representation: the range bytes are
  the coded bytes and the assembled file is decoded as it is written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from monitor.applayer.base import AppContext
from monitor.content.codings import CodingChain, limits_from_config
from monitor.files import FileObject
from monitor.model import TO_CLIENT

# Offsets above this are not believed (a hostile Content-Range must not drive sizes).
MAX_OFFSET = 1 << 62
# Range files tracked at once per flow (beyond: counter http.range_files_cap, not assembled).
MAX_RANGE_FILES = 16
# Pieces held ahead of the cursor per flow (tiny hostile ranges must not cost a dict entry each).
MAX_HELD_PIECES = 4096

_CONTENT_RANGE = re.compile(r"\s*bytes[ =]\s*(\d{1,19})\s*-\s*(\d{1,19})\s*/\s*(\d{1,19}|\*)\s*$", re.I)


@dataclass(frozen=True)
class ContentRange:
    """``Content-Range: bytes start-end/size`` (end inclusive; size None when ``*``)."""

    start: int
    end: int
    size: int | None
    raw: str

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def as_eve(self) -> dict[str, Any]:
        out: dict[str, Any] = {"raw": self.raw, "start": self.start, "end": self.end}
        if self.size is not None:
            out["size"] = self.size
        return out


def parse_content_range(value: str) -> ContentRange | None:
    """The byte range of a 206 body, or None (unsatisfied ``*/size``, junk, end < start,
    end beyond the size, absurd offsets)."""
    m = _CONTENT_RANGE.match(value)
    if m is None:
        return None
    start, end = int(m.group(1)), int(m.group(2))
    size = None if m.group(3) == "*" else int(m.group(3))
    if end < start or end >= MAX_OFFSET or (size is not None and (end >= size or size > MAX_OFFSET)):
        return None
    return ContentRange(start, end, size, value.strip()[:100])


class RangeFile:
    """One object being assembled from ranges; writes in offset order into a FileObject."""

    def __init__(self, store: RangeStore, key: tuple[str, ...], *, name: str, size: int | None,
                 codings: list[str], declared_type: str | None) -> None:
        self.store = store
        self.key = key
        self.name = name
        self.size = size
        self.codings = codings
        self.declared_type = declared_type
        self.cursor = 0  # next offset to write
        self.held: dict[int, bytes] = {}  # offset -> bytes ahead of the cursor
        self.held_bytes = 0
        self.file: FileObject | None = None
        self.chain: CodingChain | None = None
        self.holes = False  # a hole was written (cap): stays open until flow end, one file per object
        self.tx_id: int | None = None
        self.app: dict[str, Any] = {}
        self.done = False

    # -- writing

    def write(self, offset: int, data: bytes) -> None:
        if self.done or not data:
            return
        if offset < self.cursor:
            cut = self.cursor - offset
            self.store.stats_incr("http.range_overlap")
            if cut >= len(data):
                return
            data, offset = data[cut:], self.cursor
        if offset == self.cursor:
            self._emit(data)
            self._drain()
        else:
            self._hold(offset, data)
        if self.size is not None and self.cursor >= self.size and not self.held and not self.holes:
            self.finish()

    def _hold(self, offset: int, data: bytes) -> None:
        store = self.store
        if store.held_bytes + len(data) > store.limit or store.held_pieces >= MAX_HELD_PIECES:
            # Out of room: write what is held (holes before it) and continue from there.
            store.stats_incr("http.range_cap")
            self._flush_held()
            if offset >= self.cursor:
                self._gap(offset - self.cursor)
                self._emit(data)
            return
        old = self.held.get(offset)
        if old is not None and len(old) >= len(data):
            return
        if old is not None:
            self._unhold(offset)
        self.held[offset] = data
        self.held_bytes += len(data)
        store.held_bytes += len(data)
        store.held_pieces += 1

    def _unhold(self, offset: int) -> bytes:
        data = self.held.pop(offset)
        self.held_bytes -= len(data)
        self.store.held_bytes -= len(data)
        self.store.held_pieces -= 1
        return data

    def _drain(self) -> None:
        """Write held ranges that now start at or before the cursor."""
        while self.held:
            first = min(self.held)
            if first > self.cursor:
                return
            data = self._unhold(first)
            if first + len(data) > self.cursor:
                self._emit(data[self.cursor - first:])
            else:
                self.store.stats_incr("http.range_overlap")

    def _flush_held(self) -> None:
        for offset in sorted(self.held):
            data = self._unhold(offset)
            if offset + len(data) <= self.cursor:
                continue
            if offset > self.cursor:
                self._gap(offset - self.cursor)
            else:
                data = data[self.cursor - offset:]
            self._emit(data)

    def _ensure_file(self) -> FileObject:
        if self.file is None:
            ctx = self.store.ctx
            self.file = ctx.open_file(
                TO_CLIENT, name=self.name, source="http.response.body > range", protocol="http",
                tx_id=self.tx_id, declared_type=self.declared_type, app=self.app)
            if self.codings:
                self.chain = CodingChain(self.codings, limits_from_config(ctx.config), ctx.stats)
        return self.file

    def _emit(self, data: bytes) -> None:
        f = self._ensure_file()
        self.cursor += len(data)
        f.write(self.chain.decode(data) if self.chain is not None else data)

    def _gap(self, length: int) -> None:
        if length <= 0:
            return
        f = self._ensure_file()
        self.cursor += length
        self.holes = True
        if self.chain is not None:
            self.chain.gap()
        f.gap(length)

    # -- end

    def finish(self) -> None:
        """Write what is held (holes between), mark the missing tail, close the file."""
        if self.done:
            return
        self.done = True
        self.store.forget(self)
        self._flush_held()
        if self.size is not None and self.cursor < self.size:
            self._gap(self.size - self.cursor)
        f = self._ensure_file()
        # Reported with the transaction that completed it (or contributed last).
        f.tx_id = self.tx_id
        f.app = self.app
        if self.chain is not None:
            out = self.chain.flush()
            if out:
                f.write(out)
        self.store.stats_incr("http.range_files")
        f.close()


class RangeStore:
    """The range files of one HTTP connection."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.limit = ctx.config.app_layer.http.range_buffer
        self.files: dict[tuple[str, ...], RangeFile] = {}
        self.held_bytes = 0
        self.held_pieces = 0

    def stats_incr(self, name: str) -> None:
        self.ctx.stats.incr(name)

    def forget(self, rf: RangeFile) -> None:
        if self.files.get(rf.key) is rf:
            del self.files[rf.key]

    def part(self, cr: ContentRange, *, host: str, url: str, validator: str, name: str,
             codings: list[str], declared_type: str | None, tx_id: int,
             app: dict[str, Any]) -> RangePart | None:
        """A writer for one 206 body (or one multipart/byteranges part) at ``cr``."""
        key = (host, url, str(cr.size), validator)
        rf = self.files.get(key)
        if rf is None and cr.start == 0 and cr.size is not None and cr.end + 1 == cr.size:
            # The whole object in one response: that transaction's file already is it.
            self.stats_incr("http.range_whole")
            return None
        if rf is None:
            if len(self.files) >= MAX_RANGE_FILES:
                self.stats_incr("http.range_files_cap")
                return None
            rf = RangeFile(self, key, name=name, size=cr.size, codings=codings, declared_type=declared_type)
            self.files[key] = rf
        rf.tx_id = tx_id
        rf.app = app
        return RangePart(rf, cr)

    def close(self) -> None:
        """Flow end: report every range file still open (with its holes)."""
        for rf in list(self.files.values()):
            rf.finish()


class RangePart:
    """Bytes of one range: written at ``start + position``; never beyond the range's end."""

    def __init__(self, rf: RangeFile, cr: ContentRange) -> None:
        self.rf = rf
        self.cr = cr
        self.pos = 0

    def write(self, data: bytes) -> None:
        room = self.cr.length - self.pos
        if room <= 0 or not data:
            return
        if len(data) > room:
            data = data[:room]
        self.rf.write(self.cr.start + self.pos, data)
        self.pos += len(data)

    def gap(self, length: int) -> None:
        # A hole stays a hole in the range file (another range may still fill it).
        self.pos += max(0, length)

    def end(self, complete: bool) -> None:
        """Nothing to do: a range that ended short leaves a hole another range may fill."""
