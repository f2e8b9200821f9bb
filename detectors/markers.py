"""Marker rules compiled once into two multi-pattern matchers ("views").

* ``main``: every variant of every literal marker except base64 and quoted-printable, plus
  the regex markers; it scans the bytes as they are.
* ``flat``: the base64 and quoted-printable variants. It scans the same bytes, but once a
  buffer (or, in stream mode, a stream) shows MIME-style line structure -- a QP soft line
  break (``=`` LF) or a line break followed by 40 base64 characters -- it scans them with QP
  soft line breaks and then every CR and LF removed, so a base64 or QP run broken by line
  breaks is still one run. The check costs a ``memchr``-speed search; the copy (about
  250-400 MB/s) is paid only where such lines exist. Keeping these variants in their own view
  means an unbroken run is counted once, not twice.

Identical byte patterns from different variants or rules share one matcher pattern; each
pattern id maps to its owners. Base64 owners carry the bytes allowed just before and after
their run (see detectors/variants.py) and a hit counts only when its neighbours fit; in stream
mode a hit at the very end of a chunk waits for the next chunk's first byte.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from detectors import matcher as m
from detectors.signatures import Rule, regex_bytes
from detectors.variants import is_base64_variant, is_qp_variant, literal_variants

_LINE_BREAKS = b"\r\n"
# A line break followed by a run of base64 characters: MIME (or PEM, or wrapped JSON) base64.
_BASE64_LINE = re.compile(rb"\n[A-Za-z0-9+/]{40}")
# A QP soft line break after an =XX escape on the same line (a bare "=\n" occurs in binary data).
_QP_SOFT_BREAK = re.compile(rb"=[0-9A-Fa-f]{2}[\x20-\x7e]{0,74}=\r?\n")
CONTEXT_HISTORY = 512


@dataclass(frozen=True)
class Owner:
    rule: Rule
    variant: str
    length_chars: int  # characters of the marker (for redacted context); 0 for regexes
    lead: frozenset[int] | None = None
    trail: frozenset[int] | None = None


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


_Table = dict[tuple[bytes, bool, bool], tuple[int, list[Owner]]]


class MarkerSet:
    """All marker rules, compiled. Immutable after construction (hot reload builds a new one)."""

    def __init__(self, rules: list[Rule], engine: str = "auto") -> None:
        self.engine = m.resolve_engine(engine)
        main: _Table = {}
        flat: _Table = {}
        self.pattern_count = 0

        def add(table: _Table, data: bytes, nocase: bool, regex: bool, owner: Owner) -> None:
            key = (data.lower() if nocase else data, nocase, regex)
            if key in table:
                table[key][1].append(owner)
            else:
                table[key] = (len(table), [owner])

        for rule in rules:
            if rule.literal is not None:
                chars = len(rule.literal)
                for v in literal_variants(rule.literal, rule.nocase):
                    if is_base64_variant(v.name):
                        add(flat, v.data, False, False, Owner(rule, v.name, chars, v.lead, v.trail))
                    elif is_qp_variant(v.name):
                        add(flat, v.data, rule.nocase, False, Owner(rule, v.name, chars))
                    else:
                        add(main, v.data, rule.nocase, False, Owner(rule, v.name, chars))
            elif rule.regex is not None:
                add(main, regex_bytes(rule.regex), rule.nocase, True, Owner(rule, "regex", 0))
        self.main = self._view("main", main)
        self.flat = self._view("flat", flat)

    def _view(self, name: str, table: _Table) -> View:
        patterns = []
        owners: dict[int, list[Owner]] = {}
        for (data, nocase, regex), (pid, own) in table.items():
            patterns.append(m.Pattern(pid, data, nocase, regex))
            owners[pid] = own
        self.pattern_count += len(patterns)
        return View(name, m.compile(patterns, self.engine), owners)

    def scan(self, data: bytes) -> list[Hit]:
        """Block scan of one buffer in both views."""
        out: list[Hit] = []
        matches = self.main.matcher.scan(data)
        if matches:
            out.extend(self.hits(self.main, matches, data, 0))
        if self.flat.owners:
            view = flatten(data) if has_line_structure(data) else data
            matches = self.flat.matcher.scan(view)
            if matches:
                out.extend(self.hits(self.flat, matches, view, 0))
        return out

    def hits(self, view: View, matches: list[m.Match], buf: bytes, base: int,
             deferred: list[tuple[Owner, int, int]] | None = None) -> list[Hit]:
        """Matches -> hits; base64 neighbours are checked (a missing next byte defers when asked)."""
        out = []
        n = len(buf)
        for pid, start, end in matches:
            for o in view.owners.get(pid, ()):
                if o.lead is not None:
                    i = start - base - 1
                    if i < 0 or buf[i] not in o.lead:
                        continue
                if o.trail is not None:
                    j = end - base
                    if j >= n:
                        if deferred is not None:
                            deferred.append((o, start, end))
                        continue
                    if buf[j] not in o.trail:
                        continue
                out.append(Hit(o.rule, o.variant, start, end, o.length_chars, buf, base))
        return out


def has_line_structure(data: bytes) -> bool:
    """QP soft line breaks or base64 lines: worth scanning the flattened view."""
    if b"\n" not in data:
        return False
    if (b"=\n" in data or b"=\r\n" in data) and _QP_SOFT_BREAK.search(data) is not None:
        return True
    return _BASE64_LINE.search(data) is not None


def flatten(data: bytes) -> bytes:
    """``data`` without QP soft line breaks and CR/LF (no copy when there are none)."""
    if b"\n" not in data and b"\r" not in data:
        return data
    if b"=\n" in data or b"=\r\n" in data:
        data = data.replace(b"=\r\n", b"").replace(b"=\n", b"")
    return data.translate(None, _LINE_BREAKS)


def _keep_tail(prev: bytes, data: bytes) -> bytes:
    if len(data) >= CONTEXT_HISTORY:
        return data[-CONTEXT_HISTORY:]
    return (prev + data)[-CONTEXT_HISTORY:]


class MarkerStreams:
    """Stream state of one byte stream (a flow direction or a file) in both views."""

    __slots__ = ("markers", "main", "flat", "_carry", "_prev_main", "_prev_flat", "_flatten", "_deferred")

    def __init__(self, markers: MarkerSet) -> None:
        self.markers = markers
        self.main = markers.main.matcher.stream()
        self.flat = markers.flat.matcher.stream() if markers.flat.owners else None
        self._carry = b""  # "=" or "=\r" at a chunk end: maybe the start of a soft line break
        # The last bytes of each view, so context and base64 lead checks can reach back a chunk.
        self._prev_main = b""
        self._prev_flat = b""
        self._flatten = False  # sticky: once a stream shows MIME-style lines, keep flattening
        self._deferred: list[tuple[Owner, int, int]] = []  # base64 hits awaiting their next byte

    def feed(self, data: bytes) -> list[Hit]:
        ms = self.markers
        out: list[Hit] = []
        matches = self.main.feed(data)
        if matches:
            buf = self._prev_main + data
            out.extend(ms.hits(ms.main, matches, buf, self.main.offset - len(buf)))
        self._prev_main = _keep_tail(self._prev_main, data)
        if self.flat is not None:
            out.extend(self._feed_flat(data))
        return out

    def _feed_flat(self, data: bytes) -> list[Hit]:
        assert self.flat is not None
        ms = self.markers
        if not self._flatten and has_line_structure(data):
            self._flatten = True
        raw = self._carry + data if self._carry else data
        self._carry = b""
        if self._flatten:
            keep = 2 if raw.endswith(b"=\r") else 1 if raw.endswith(b"=") else 0
            if keep:
                self._carry = raw[-keep:]
                raw = raw[:-keep]
            view = flatten(raw)
        else:
            view = raw
        if not view:
            return []
        out: list[Hit] = []
        buf = self._prev_flat + view
        base = self.flat.offset - len(self._prev_flat)
        if self._deferred:
            waiting, self._deferred = self._deferred, []
            for o, start, end in waiting:
                if o.trail is not None and view[0] in o.trail:
                    out.append(Hit(o.rule, o.variant, start, end, o.length_chars, buf, base))
        matches = self.flat.feed(view)
        if matches:
            out.extend(ms.hits(ms.flat, matches, buf, base, self._deferred))
        self._prev_flat = _keep_tail(self._prev_flat, view)
        return out

    def close(self) -> None:
        self.main.close()
        if self.flat is not None:
            self.flat.close()
        self._deferred = []
