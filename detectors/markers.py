"""Marker rules compiled once into one multi-pattern matcher, read through two "views".

* ``raw``: every variant of every marker -- literals in every encoding and escape, regexes,
  and the base64 and quoted-printable variants -- plus the matcher's *line probe*
  (detectors/matcher.py). It scans the bytes as they are: one Hyperscan scan per segment.
* ``flat``: the same matcher, reporting only the base64 and quoted-printable variants. A MIME encoder cuts base64 and QP
  into lines (QP with ``=`` CRLF soft line breaks, which split most Japanese markers), so
  where a buffer or segment holds such lines it is scanned again with soft line breaks and
  then every CR and LF removed, so a run broken by line breaks is still one run. The copy
  and the second scan are paid only for those buffers and segments.

When to flatten. Block mode (decoded buffers): when the raw scan's line probe says the buffer
has MIME-style lines. Stream mode: a *flat run* opens at the segment where the probe says
such lines start (with Hyperscan: the first base64 line of a block, the first soft-broken QP
line after a hard break -- one callback per MIME body, not one per line) and the line the
previous segment ended in joins it; it stays open while each segment still shows lines
(:func:`lines_continue`, which inside base64 returns at the first line break) and closes at
the first segment of at least :data:`FLAT_COVER_MIN` bytes without any (a short segment inside
a MIME body need not hold a whole line). The flat stream restarts with each run, so no match
is made of bytes that are not adjacent. Segments without line structure, the common case,
cost one Hyperscan scan and nothing else.

Counting each occurrence once: where the flat view covers bytes (a whole block buffer, or the
segments of a flat run), hits of base64/QP patterns in the raw view that lie inside the
covered bytes are dropped -- an unbroken run is found by both views, and the flat one has it.
A run that starts before the covered bytes is still the raw view's.

Identical byte patterns from different variants or rules share one matcher pattern; each
pattern id maps to its owners. Base64 owners carry the bytes allowed just before and after
their run (see detectors/variants.py) and a hit counts only when its neighbours fit; in stream
mode a hit at the very end of a segment waits for the next segment's first byte.

History for the redacted context and for the base64 lead check: a stream keeps references to
its last segments (no copy for segments of at least :data:`CONTEXT_HISTORY` bytes; a segment
over :data:`MAX_HISTORY_REF` bytes leaves only its last :data:`CONTEXT_HISTORY` bytes; smaller
ones are joined until that much is kept), and joins them with the segment only when it has a
hit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from detectors import matcher as m
from detectors.dbcache import DatabaseCache
from detectors.matcher import LINE_PROBE, has_line_structure
from detectors.signatures import Rule, regex_bytes
from detectors.variants import is_base64_variant, is_qp_variant, literal_variants

__all__ = ["CONTEXT_HISTORY", "Hit", "MarkerSet", "MarkerStreams", "Owner", "flatten", "has_line_structure"]

CONTEXT_HISTORY = 512
_BASE64_LINE = re.compile(rb"\n[A-Za-z0-9+/]{40}")
MAX_HISTORY_REF = 8192
FLAT_COVER_MIN = 160  # a MIME base64/QP segment this long always holds a complete line
_NO_HITS: list[Hit] = []  # returned (never mutated) when a segment has no hit


@dataclass(frozen=True)
class Owner:
    rule: Rule
    variant: str
    length_chars: int  # characters of the marker (for redacted context); 0 for regexes
    lead: frozenset[int] | None = None
    trail: frozenset[int] | None = None
    flat: bool = False  # a base64/QP variant (also scanned in the flat view)


@dataclass
class View:
    name: str
    matcher: m.Matcher
    owners: dict[int, list[Owner]] = field(default_factory=dict)


@dataclass
class Hit:
    """One occurrence of one rule's marker in a view."""

    rule: Rule
    variant: str
    start: int
    end: int
    length_chars: int
    buf: bytes  # the bytes scanned (for redacted context) ...
    buf_base: int  # ... and the offset of buf[0] in the match's coordinates


# A base64 hit at the end of the data, waiting for the next byte: (owner, start, end, buf, base).
_Deferred = tuple[Owner, int, int, bytes, int]
_Table = dict[tuple[bytes, bool, bool], tuple[int, list[Owner]]]


class MarkerSet:
    """All marker rules, compiled. Immutable after construction (hot reload builds a new one)."""

    def __init__(self, rules: list[Rule], engine: str = "auto", cache: DatabaseCache | None = None) -> None:
        self.engine = m.resolve_engine(engine)
        table: _Table = {}

        def add(data: bytes, nocase: bool, regex: bool, owner: Owner) -> None:
            key = (data.lower() if nocase else data, nocase, regex)
            if key in table:
                table[key][1].append(owner)
            else:
                table[key] = (len(table), [owner])

        has_flat = False
        for rule in rules:
            if rule.literal is not None:
                chars = len(rule.literal)
                for v in literal_variants(rule.literal, rule.nocase):
                    if is_base64_variant(v.name):
                        add(v.data, False, False, Owner(rule, v.name, chars, v.lead, v.trail, flat=True))
                        has_flat = True
                    elif is_qp_variant(v.name):
                        add(v.data, rule.nocase, False, Owner(rule, v.name, chars, flat=True))
                        has_flat = True
                    else:
                        add(v.data, rule.nocase, False, Owner(rule, v.name, chars))
            elif rule.regex is not None:
                add(regex_bytes(rule.regex), rule.nocase, True, Owner(rule, "regex", 0))
        patterns = []
        owners: dict[int, list[Owner]] = {}
        for (data, nocase, regex), (pid, own) in table.items():
            patterns.append(m.Pattern(pid, data, nocase, regex))
            owners[pid] = own
        matcher = m.compile(patterns, self.engine, line_probe=has_flat, cache=cache)
        self.raw = View("raw", matcher, owners)
        # The flat view runs the same matcher (one compile, one database) and keeps only the
        # base64/QP owners' hits: flattening cannot make a text marker appear that the raw view
        # would not report, and one database instead of two halves the compile time and memory.
        self.flat = View("flat", matcher, {pid: [o for o in own if o.flat] for pid, own in owners.items()
                                           if any(o.flat for o in own)}) if has_flat else None
        self.pattern_count = len(patterns)

    def scan(self, data: bytes) -> list[Hit]:
        """Block scan of one buffer (the flat view too when the buffer has MIME-style lines)."""
        matches = self.raw.matcher.scan(data)
        if not matches:
            return _NO_HITS
        if matches[0][0] != LINE_PROBE:
            return self.hits(self.raw, matches, data, 0)
        out = self.hits(self.raw, matches[1:], data, 0, cover=(0, len(data)))
        if self.flat is not None:
            view = flatten(data)
            flat = self.flat.matcher.scan(view)
            if flat:
                out.extend(self.hits(self.flat, flat, view, 0))
        return out

    def hits(self, view: View, matches: list[m.Match], buf: bytes, base: int,
             deferred: list[_Deferred] | None = None, cover: tuple[int, int] | None = None) -> list[Hit]:
        """Matches -> hits; base64 neighbours are checked (a missing next byte defers when asked).

        ``cover``: the offsets the flat view scans; base64/QP hits of the raw view inside it are
        the flat view's to report.
        """
        out = []
        n = len(buf)
        owners = view.owners
        for pid, start, end in matches:
            for o in owners.get(pid, ()):
                if o.flat and cover is not None and cover[0] <= start and end <= cover[1]:
                    continue
                if o.lead is not None:
                    i = start - base - 1
                    if i < 0 or buf[i] not in o.lead:
                        continue
                if o.trail is not None:
                    j = end - base
                    if j >= n:
                        if deferred is not None:
                            deferred.append((o, start, end, buf, base))
                        continue
                    if buf[j] not in o.trail:
                        continue
                out.append(Hit(o.rule, o.variant, start, end, o.length_chars, buf, base))
        return out


def flatten(data: bytes) -> bytes:
    """``data`` without QP soft line breaks and CR/LF (no copy when there are none).

    Only one-byte searches on the common path: CPython finds and deletes a single byte at
    memchr speed, while a two-byte needle (``b"\\r\\n"``) or ``translate`` walks the
    buffer byte by byte (about 5 us for a 1,448-byte segment here)."""
    if b"\n" not in data and b"\r" not in data:
        return data
    # "=\r\n" first: MIME bodies are CRLF on the wire, so a QP body answers at its first soft
    # break instead of after a whole-buffer search for "=\n" (the two tests commute).
    if b"=" in data and (b"=\r\n" in data or b"=\n" in data):
        data = data.replace(b"=\r\n", b"").replace(b"=\n", b"")
    return data.replace(b"\r", b"").replace(b"\n", b"")


def lines_continue(data: bytes) -> bool:
    """While a flat run is open: does this segment still look like MIME lines (base64 lines or
    any soft line break)? Loose on purpose -- a QP paragraph whose segment has no =XX escape
    must not end the run -- and cheap: inside base64 the first line break answers it."""
    if b"\n" not in data:
        return False
    if _BASE64_LINE.search(data) is not None:
        return True
    return b"=" in data and (b"=\n" in data or b"=\r\n" in data)


def _resolve_deferred(waiting: list[_Deferred], next_byte: int) -> list[Hit]:
    out = []
    for o, start, end, buf, base in waiting:
        if o.trail is not None and next_byte in o.trail:
            out.append(Hit(o.rule, o.variant, start, end, o.length_chars, buf, base))
    return out


class MarkerStreams:
    """Stream state of one byte stream (a flow direction or a file).

    :meth:`feed` is the per-segment hot path: one raw-view stream scan and two reference
    assignments when nothing matched and no flat run is open.

    One lives per flow direction for the flow's lifetime, so it holds nothing it does not need
    yet: the flat view's stream exists only during a flat run, the deferred-hit lists only
    while a hit waits for its next byte (None otherwise).
    """

    __slots__ = ("markers", "raw", "flat", "_h0", "_h1", "_busy", "_deferred", "_flat_on", "_cover_from",
                 "_cover_to", "_carry", "_fhist", "_fdeferred", "_fskip")

    def __init__(self, markers: MarkerSet) -> None:
        self.markers = markers
        self.raw = markers.raw.matcher.stream()
        self.flat: m.Stream | None = None  # opened by _start_flat
        # The raw view's last segments, by reference (history for context and lead checks).
        self._h0 = b""
        self._h1 = b""
        self._busy = False  # a flat run is open or a hit waits for the next byte: take the slow path
        self._deferred: list[_Deferred] | None = None  # raw-view base64 hits awaiting their next byte
        self._flat_on = False
        self._cover_from = 0  # raw offsets covered by the current/last flat run
        self._cover_to = 0
        self._carry = b""  # "=" or "=\r" at a segment end: maybe the start of a soft line break
        self._fhist = b""  # the flat view's last bytes (context and lead checks)
        self._fdeferred: list[_Deferred] | None = None
        self._fskip = 0  # flat-view bytes before this offset came from the previous segment

    def feed(self, data: bytes) -> list[Hit]:
        matches = self.raw.feed(data)
        if matches or self._busy:
            return self._feed_slow(data, matches)
        if len(data) >= CONTEXT_HISTORY:
            self._h0 = b""
            self._h1 = data if len(data) <= MAX_HISTORY_REF else data[-CONTEXT_HISTORY:]
        else:
            self._remember_small(data)
        return _NO_HITS

    def _remember(self, data: bytes) -> None:
        if len(data) >= CONTEXT_HISTORY:
            self._h0 = b""
            self._h1 = data if len(data) <= MAX_HISTORY_REF else data[-CONTEXT_HISTORY:]
        else:
            self._remember_small(data)

    def _remember_small(self, data: bytes) -> None:
        """Small segments are joined (a short copy) until CONTEXT_HISTORY bytes are kept."""
        h1 = self._h1
        if len(h1) < CONTEXT_HISTORY:
            self._h1 = h1 + data
        else:
            self._h0 = h1
            self._h1 = data

    def _feed_slow(self, data: bytes, matches: list[m.Match]) -> list[Hit]:
        ms = self.markers
        out: list[Hit] = []
        chunk_end = self.raw.offset
        chunk_start = chunk_end - len(data)
        if self._deferred is not None and data:
            waiting, self._deferred = self._deferred, None
            out.extend(_resolve_deferred(waiting, data[0]))
        probe = bool(matches) and matches[0][0] == LINE_PROBE
        if probe:
            matches = matches[1:]
        if self._flat_on:
            if not probe and len(data) >= FLAT_COVER_MIN and not lines_continue(data):
                out.extend(self._end_flat(data))
        elif probe:
            self._start_flat(chunk_start)
        if self._flat_on:
            self._cover_to = chunk_end
            out.extend(self._feed_flat(data))
        if matches:
            hist = self._h0 + self._h1
            buf = hist + data if hist else data
            deferred: list[_Deferred] = []
            out.extend(ms.hits(ms.raw, matches, buf, chunk_start - len(hist), deferred,
                               (self._cover_from, self._cover_to)))
            if deferred:
                self._deferred = (self._deferred or []) + deferred
        self._remember(data)
        self._busy = self._flat_on or self._deferred is not None
        return out

    def _start_flat(self, chunk_start: int) -> None:
        """A flat run starts with this segment. The line the previous segment ended in (its
        first line may start there) joins the flat view; hits wholly inside it were the raw
        view's to report (in an earlier segment), hits that reach into this segment are the
        flat view's."""
        self._flat_on = True
        if self.flat is None and self.markers.flat is not None:
            self.flat = self.markers.flat.matcher.stream()
        hist = self._h0 + self._h1
        pre = hist[max(hist.rfind(b"\n") + 1, len(hist) - 100):]  # a MIME line is at most 78 bytes
        self._cover_from = chunk_start - len(pre)  # raw hits ending from here on are the flat view's
        self._carry = pre
        self._fskip = len(flatten(pre))

    def _end_flat(self, data: bytes) -> list[Hit]:
        """The flat run ends before ``data``: its stream restarts at the next segment with lines."""
        out: list[Hit] = []
        if self._fdeferred is not None:
            waiting, self._fdeferred = self._fdeferred, None
            view = flatten(self._carry + data)
            if view:
                out = _resolve_deferred(waiting, view[0])
        self._flat_on = False
        self._carry = b""
        self._fhist = b""
        if self.flat is not None:  # the next run starts a new stream (offset 0, as a reset would)
            self.flat.close()
            self.flat = None
        return out

    def _feed_flat(self, data: bytes) -> list[Hit]:
        flat = self.flat
        if flat is None:
            return _NO_HITS
        raw = self._carry + data if self._carry else data
        self._carry = b""
        keep = 2 if raw.endswith(b"=\r") else 1 if raw.endswith(b"=") else 0
        if keep:
            self._carry = raw[-keep:]
            raw = raw[:-keep]
        view = flatten(raw)
        if not view:
            return _NO_HITS
        out: list[Hit] = []
        if self._fdeferred is not None:
            waiting, self._fdeferred = self._fdeferred, None
            out.extend(_resolve_deferred(waiting, view[0]))
        matches = flat.feed(view)
        hist = self._fhist
        if matches:
            skip = self._fskip
            if skip:
                matches = [mt for mt in matches if mt[2] > skip]
            buf = hist + view
            ms = self.markers
            assert ms.flat is not None
            deferred: list[_Deferred] = []
            out.extend(ms.hits(ms.flat, matches, buf, flat.offset - len(buf), deferred))
            if deferred:
                self._fdeferred = (self._fdeferred or []) + deferred
        self._fhist = view[-CONTEXT_HISTORY:] if len(view) >= CONTEXT_HISTORY else (hist + view)[-CONTEXT_HISTORY:]
        return out

    def close(self) -> None:
        self.raw.close()
        if self.flat is not None:
            self.flat.close()
            self.flat = None
        self._deferred = None
        self._fdeferred = None
        self._busy = False
