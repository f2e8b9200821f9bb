"""PDF text: a small, bounded reader of objects, fonts and content streams.

Written here rather than driving pdfminer so that every step has a cap: pdfminer inflates streams
without a size limit and cannot be interrupted. What is covered:

* objects found by scanning the file (so broken or missing xref tables do not matter; the last
  definition of an object wins, as with incremental updates) and objects inside object streams;
* filters FlateDecode, ASCIIHexDecode, ASCII85Decode (others: the stream is skipped);
* the page tree in order, inherited resources, Form XObjects (nested, cycle-safe);
* text operators Tj, TJ, ', " with line breaks from text positioning (Td, TD, Tm, T*);
* fonts: ToUnicode CMaps (bfchar/bfrange, any code length from the codespace), Type0 fonts with
  Identity-H and no ToUnicode through the Adobe-Japan1/GB1/CNS1/Korea1 CID tables that ship with
  pdfminer.six (data only), predefined Japanese CMaps (RKSJ -> CP932, EUC -> EUC-JP, UCS2/UTF16),
  simple fonts with Standard/WinAnsi/MacRoman encodings and /Differences glyph names.

Encrypted documents (``/Encrypt`` in a trailer) yield ``Notice("encrypted")`` and no text.
Caps: objects (:data:`MAX_OBJECTS`), pages (:data:`MAX_PAGES`), XObject nesting, the budget's
decompressed size/ratio, text and time.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from monitor.content.budget import Budget, CapHit, Malformed, inflate
from monitor.content.items import Item, Notice, Text

MAX_OBJECTS = 200_000
MAX_PAGES = 10_000
MAX_XOBJECT_DEPTH = 8
MAX_OPERANDS = 10_000
MAX_RANGE_ENTRIES = 1 << 16  # codes per bfrange with an explicit array
MAX_CACHED_CODES = 1 << 18  # range lookups remembered per ToUnicode map


class Name(str):
    """A PDF name (``/Font``), kept apart from strings (bytes)."""


class Keyword(str):
    """A bare keyword (``obj``, ``R``, an operator)."""


@dataclass(frozen=True)
class Ref:
    num: int
    gen: int


@dataclass
class Stream:
    attrs: dict[str, Any]
    raw: bytes


_WS = b"\x00\t\n\x0c\r "
_DELIM = rb"()<>\[\]{}/%"
_TOKEN = re.compile(
    rb"(?P<ws>[\x00\t\n\x0c\r ]+|%[^\r\n]*)"
    rb"|(?P<num>[+-]?(?:\d+\.?\d*|\.\d+))(?![^\x00\t\n\x0c\r ()<>\[\]{}/%])"
    rb"|(?P<name>/[^\x00\t\n\x0c\r ()<>\[\]{}/%]*)"
    rb"|(?P<lit>\()"
    rb"|(?P<dopen><<)|(?P<dclose>>>)"
    rb"|(?P<hex><[0-9A-Fa-f\x00\t\n\x0c\r ]*>?)"
    rb"|(?P<aopen>\[)|(?P<aclose>\])"
    rb"|(?P<kw>[^\x00\t\n\x0c\r ()<>\[\]{}/%]+)"
    rb"|(?P<other>[\s\S])"
)
_PAREN = re.compile(rb"[()\\]")
_ESCAPE = re.compile(rb"\\([0-7]{1,3}|\r\n|[\s\S])")
_NAME_HEX = re.compile(rb"#([0-9A-Fa-f]{2})")
_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"f": b"\f",
            b"\r\n": b"", b"\n": b"", b"\r": b""}


def _unescape(m: re.Match[bytes]) -> bytes:
    s = m.group(1)
    if s[:1].isdigit() and s[:1] < b"8":
        return bytes([int(s, 8) & 0xFF])
    return _ESCAPES.get(s, s)


def _literal(data: bytes, pos: int) -> tuple[bytes, int]:
    """A literal string starting after its ``(``; returns (value, position after ``)``)."""
    depth = 1
    start = pos
    while True:
        m = _PAREN.search(data, pos)
        if m is None:
            raw = data[start:]
            pos = len(data)
            break
        c = m.group()
        if c == b"\\":
            pos = m.end() + 1
            continue
        depth += 1 if c == b"(" else -1
        pos = m.end()
        if depth == 0:
            raw = data[start : pos - 1]
            break
    return _ESCAPE.sub(_unescape, raw), pos


def tokens(data: bytes, pos: int = 0) -> Iterator[tuple[Any, int]]:
    """PDF tokens as Python values, each with the position after it."""
    n = len(data)
    while pos < n:
        m = _TOKEN.match(data, pos)
        if m is None:  # pragma: no cover - the pattern matches any byte
            return
        kind = m.lastgroup
        pos = m.end()
        if kind == "ws":
            continue
        text = m.group()
        if kind == "num":
            yield (float(text) if b"." in text else int(text)), pos
        elif kind == "name":
            raw = _NAME_HEX.sub(lambda h: bytes([int(h.group(1), 16)]), text[1:])
            yield Name(raw.decode("latin-1")), pos
        elif kind == "lit":
            value, pos = _literal(data, pos)
            yield value, pos
        elif kind == "hex":
            digits = re.sub(rb"[^0-9A-Fa-f]", b"", text)
            if len(digits) % 2:
                digits += b"0"
            yield binascii.unhexlify(digits), pos
        elif kind == "kw":
            yield Keyword(text.decode("latin-1")), pos
        else:
            yield Keyword(text.decode("latin-1")), pos


_OPEN = {"<<": dict, "[": list}


def parse_value(data: bytes, pos: int, max_items: int = 1 << 20) -> tuple[Any, int]:
    """One object (with nested arrays/dicts, ``n g R`` references) starting at ``pos``.

    Iterative, so hostile nesting cannot exhaust the Python stack.
    """
    stack: list[list[Any]] = []
    items = 0
    for tok, end in tokens(data, pos):
        items += 1
        if items > max_items:
            raise Malformed("object too large")
        value: Any
        if isinstance(tok, Keyword):
            if tok in _OPEN:
                stack.append([tok])
                continue
            if tok in (">>", "]"):
                if not stack:
                    raise Malformed("unbalanced close")
                frame = stack.pop()
                body = frame[1:]
                if frame[0] == "<<":
                    value = {}
                    for i in range(0, len(body) - 1, 2):
                        if isinstance(body[i], Name):
                            value[str(body[i])] = body[i + 1]
                else:
                    value = body
            elif tok == "R" and stack and len(stack[-1]) >= 3 and isinstance(stack[-1][-1], int) \
                    and isinstance(stack[-1][-2], int) and not isinstance(stack[-1][-2], bool):
                gen = stack[-1].pop()
                num = stack[-1].pop()
                value = Ref(num, gen)
            elif tok == "true":
                value = True
            elif tok == "false":
                value = False
            elif tok == "null":
                value = None
            elif not stack:
                return tok, end
            else:
                continue  # stray keyword inside a container: ignore
        else:
            value = tok
        if not stack:
            if isinstance(value, int) and not isinstance(value, bool):
                # could be "n g R": peek ahead
                more = _peek_ref(data, end, value)
                if more is not None:
                    return more
            return value, end
        stack[-1].append(value)
    raise Malformed("object runs past the end of the data")


def _peek_ref(data: bytes, pos: int, num: int) -> tuple[Ref, int] | None:
    m = re.compile(rb"[\x00\t\n\x0c\r ]+(\d+)[\x00\t\n\x0c\r ]+R(?![^\x00\t\n\x0c\r ()<>\[\]{}/%])").match(data, pos)
    if m is None:
        return None
    return Ref(num, int(m.group(1))), m.end()


_OBJ_HEADER = re.compile(rb"(?<![0-9])(\d{1,10})[\x00\t\n\x0c\r ]+(\d{1,5})[\x00\t\n\x0c\r ]+obj(?![^\x00\t\n\x0c\r ()<>\[\]{}/%])")
_STREAM_KW = re.compile(rb"[\x00\t\n\x0c\r ]*stream(\r\n|\n|\r)?")
_ENDSTREAM = re.compile(rb"(\r\n|\n|\r)?endstream")
_TRAILER = re.compile(rb"trailer[\x00\t\n\x0c\r ]*<<")
_INLINE_END = re.compile(rb"[\x00\t\n\x0c\r ]EI(?![^\x00\t\n\x0c\r ()<>\[\]{}/%])")


@dataclass
class Document:
    data: bytes
    budget: Budget
    objects: dict[int, Any] = field(default_factory=dict)
    trailers: list[dict[str, Any]] = field(default_factory=list)
    decoded: dict[int, bytes] = field(default_factory=dict)
    notices: list[Notice] = field(default_factory=list)

    def resolve(self, v: Any, hops: int = 0) -> Any:
        while isinstance(v, Ref) and hops < 32:
            v = self.objects.get(v.num)
            hops += 1
        return None if isinstance(v, Ref) else v

    def get(self, d: Any, key: str, default: Any = None) -> Any:
        if isinstance(d, Stream):
            d = d.attrs
        if not isinstance(d, dict):
            return default
        v = self.resolve(d.get(key))
        return default if v is None else v

    def stream_data(self, s: Stream) -> bytes:
        """The decoded bytes of a stream ('' when a filter is unsupported or the data corrupt)."""
        key = id(s)
        if key in self.decoded:
            return self.decoded[key]
        data = s.raw
        filters = self.get(s, "Filter", [])
        if not isinstance(filters, list):
            filters = [filters]
        for f in filters:
            f = self.resolve(f)
            if f in ("FlateDecode", "Fl"):
                data = self._inflate(data)
            elif f in ("ASCIIHexDecode", "AHx"):
                digits = re.sub(rb"[^0-9A-Fa-f]", b"", data.split(b">", 1)[0])
                data = binascii.unhexlify(digits + b"0" * (len(digits) % 2))
            elif f in ("ASCII85Decode", "A85"):
                body = re.sub(rb"[\x00\t\n\x0c\r ]", b"", data.split(b"~>", 1)[0]).removeprefix(b"<~")
                try:
                    data = base64.a85decode(body)
                except ValueError:
                    data = b""
            else:
                data = b""
                break
        self.decoded[key] = data
        return data

    def _inflate(self, data: bytes) -> bytes:
        out = bytearray()
        try:
            for chunk in inflate(data, "zlib", self.budget):
                out += chunk
        except CapHit as e:
            if e.fatal:
                raise
            self.notices.append(Notice("bomb", e.detail))
        except Malformed:
            self.budget.stats.incr("content.malformed", format="pdf_stream")
        return bytes(out)


def load(data: bytes, budget: Budget) -> Document:
    """Every object of the file by scanning for ``n g obj``; object streams expanded after."""
    doc = Document(data, budget)
    pos = 0
    object_streams: list[Stream] = []
    while True:
        m = _OBJ_HEADER.search(data, pos)
        if m is None:
            break
        if len(doc.objects) >= MAX_OBJECTS:
            budget.count_cap("objects")
            doc.notices.append(Notice("truncated", f"more than {MAX_OBJECTS} PDF objects"))
            break
        num = int(m.group(1))
        pos = m.end()
        try:
            value, end = parse_value(data, pos)
        except Malformed:
            continue
        sm = _STREAM_KW.match(data, end)
        if isinstance(value, dict) and sm is not None:
            start = sm.end()
            length = doc.resolve(value.get("Length"))
            stop = -1
            if isinstance(length, int) and 0 <= length <= len(data) - start:
                if _ENDSTREAM.match(data, start + length) or data[start + length : start + length + 20].strip(
                        _WS).startswith(b"endstream"):
                    stop = start + length
            if stop < 0:
                em = _ENDSTREAM.search(data, start)
                stop = em.start() if em else len(data)
            value = Stream(value, data[start:stop])
            pos = stop
            if value.attrs.get("Type") == "ObjStm":
                object_streams.append(value)
            if value.attrs.get("Type") == "XRef":
                doc.trailers.append(value.attrs)
        else:
            pos = end
        doc.objects[num] = value
        if len(doc.objects) % 1024 == 0:
            budget.check_time()
    for tm in _TRAILER.finditer(data):
        try:
            value, _ = parse_value(data, tm.end() - 2)
        except Malformed:
            continue
        if isinstance(value, dict):
            doc.trailers.append(value)
    for s in object_streams:
        _expand_object_stream(doc, s)
    return doc


def _expand_object_stream(doc: Document, s: Stream) -> None:
    body = doc.stream_data(s)
    n = doc.get(s, "N", 0)
    first = doc.get(s, "First", 0)
    if not isinstance(n, int) or not isinstance(first, int) or n <= 0:
        return
    header = []
    for tok, _ in tokens(body[:first]):
        if not isinstance(tok, int):
            break
        header.append(tok)
        if len(header) >= 2 * n:
            break
    for i in range(0, len(header) - 1, 2):
        num, off = header[i], header[i + 1]
        if num in doc.objects or len(doc.objects) >= MAX_OBJECTS:
            continue
        try:
            doc.objects[num], _ = parse_value(body, first + off)
        except Malformed:
            continue


# --- fonts ------------------------------------------------------------------------------------


@dataclass
class CMap:
    """A ToUnicode map: single codes plus ranges, and the code lengths from the codespace."""

    chars: dict[bytes, str] = field(default_factory=dict)
    range_lo: list[int] = field(default_factory=list)
    ranges: list[tuple[int, int, int, Any]] = field(default_factory=list)  # (lo, hi, nbytes, dst)
    lengths: dict[int, int] = field(default_factory=dict)  # first byte -> code length

    def lookup(self, code: bytes) -> str | None:
        hit = self.chars.get(code)
        if hit is not None:
            return hit
        hit = self._in_ranges(code)
        if hit is not None and len(self.chars) < MAX_CACHED_CODES:
            self.chars[code] = hit  # ranges are resolved once per code
        return hit

    def _in_ranges(self, code: bytes) -> str | None:
        v = int.from_bytes(code, "big")
        i = bisect.bisect_right(self.range_lo, v) - 1
        # Ranges do not nest in practice; look back a few in case they overlap.
        for j in range(i, max(i - 8, -1), -1):
            lo, hi, nbytes, dst = self.ranges[j]
            if lo <= v <= hi and nbytes == len(code):
                if isinstance(dst, list):
                    off = v - lo
                    return dst[off] if off < len(dst) else None
                if len(dst) < 2:
                    return None
                last = (int.from_bytes(dst[-2:], "big") + v - lo) & 0xFFFF
                return _utf16(dst[:-2] + last.to_bytes(2, "big"))
        return None

    def uniform_length(self) -> int | None:
        """The code length when every codespace range has the same one."""
        lengths = set(self.lengths.values())
        return lengths.pop() if len(lengths) == 1 else None


def _utf16(b: bytes) -> str:
    return b.decode("utf-16-be", "replace") if len(b) % 2 == 0 else b.decode("latin-1")


def parse_cmap(data: bytes) -> CMap:
    cm = CMap()
    operands: list[Any] = []
    mode = ""
    entries = 0
    for tok, _ in tokens(data):
        if isinstance(tok, Keyword):
            if tok in ("begincodespacerange", "beginbfchar", "beginbfrange"):
                mode = tok
            elif tok.startswith("end"):
                if mode == "begincodespacerange":
                    for i in range(0, len(operands) - 1, 2):
                        lo, hi = operands[i], operands[i + 1]
                        if isinstance(lo, bytes) and isinstance(hi, bytes) and lo and hi:
                            for b in range(lo[0], hi[0] + 1):
                                cm.lengths[b] = len(lo)
                elif mode == "beginbfchar":
                    for i in range(0, len(operands) - 1, 2):
                        src, dst = operands[i], operands[i + 1]
                        if isinstance(src, bytes) and isinstance(dst, bytes):
                            cm.chars[src] = _utf16(dst)
                elif mode == "beginbfrange":
                    _ranges(cm, operands)
                mode = ""
                operands = []
            elif tok in ("[", "]"):
                operands.append(tok)
            continue
        if mode:
            entries += 1
            if entries > 1 << 20:
                break
            operands.append(tok)
    pairs = sorted(cm.ranges, key=lambda r: r[0])
    cm.ranges = pairs
    cm.range_lo = [r[0] for r in pairs]
    return cm


def _ranges(cm: CMap, ops: list[Any]) -> None:
    i = 0
    while i + 2 < len(ops):
        lo, hi = ops[i], ops[i + 1]
        if not (isinstance(lo, bytes) and isinstance(hi, bytes)):
            i += 1
            continue
        if ops[i + 2] == "[":
            j = i + 3
            dst: list[str] = []
            while j < len(ops) and ops[j] != "]":
                if isinstance(ops[j], bytes) and len(dst) < MAX_RANGE_ENTRIES:
                    dst.append(_utf16(ops[j]))
                j += 1
            cm.ranges.append((int.from_bytes(lo, "big"), int.from_bytes(hi, "big"), len(lo), dst))
            i = j + 1
        else:
            if isinstance(ops[i + 2], bytes):
                cm.ranges.append((int.from_bytes(lo, "big"), int.from_bytes(hi, "big"), len(lo), ops[i + 2]))
            i += 3


_PREDEFINED = [
    (re.compile(r"RKSJ"), "cp932"),
    (re.compile(r"EUC"), "euc-jp"),
    (re.compile(r"UCS2|UTF16"), "utf-16-be"),
    (re.compile(r"GBK|GB-EUC"), "gbk"),
    (re.compile(r"B5"), "big5"),
    (re.compile(r"KSC"), "euc-kr"),
]


class Font:
    """Turns the bytes of a text-showing operator into Unicode."""

    def __init__(self, doc: Document, font: Any) -> None:
        self.tounicode: CMap | None = None
        self.codec: str | None = None
        self.cid_map: dict[int, str] | None = None
        self.two_byte = False
        self.simple: dict[int, str] = {}
        subtype = doc.get(font, "Subtype")
        tu = doc.get(font, "ToUnicode")
        if isinstance(tu, Stream):
            self.tounicode = parse_cmap(doc.stream_data(tu))
        encoding = doc.get(font, "Encoding")
        if subtype == "Type0":
            self.two_byte = True
            enc_name = encoding if isinstance(encoding, str) else ""
            if enc_name and not enc_name.startswith("Identity"):
                self.codec = next((c for p, c in _PREDEFINED if p.search(enc_name)), None)
            if self.tounicode is None and self.codec is None:
                desc = doc.get(font, "DescendantFonts", [])
                desc = doc.resolve(desc[0]) if isinstance(desc, list) and desc else None
                info = doc.get(desc, "CIDSystemInfo", {})
                ordering = doc.get(info, "Ordering", "")
                self.cid_map = _cid_unicode(ordering if isinstance(ordering, bytes | str) else "")
        else:
            self.simple = _simple_encoding(doc, encoding)

    def decode(self, s: bytes) -> str:
        if self.codec:
            return s.decode(self.codec, "replace")
        if self.tounicode is not None:
            return self._by_cmap(s, self.tounicode)
        if self.two_byte:
            out = []
            for i in range(0, len(s) - 1, 2):
                cid = s[i] << 8 | s[i + 1]
                out.append(self.cid_map.get(cid, "") if self.cid_map else "")
            return "".join(out)
        return "".join(self.simple.get(b, "") or chr(b) for b in s)

    def _by_cmap(self, s: bytes, cm: CMap) -> str:
        n = cm.uniform_length() or (2 if self.two_byte and not cm.lengths else None)
        if n is not None:
            lookup, get = cm.lookup, cm.chars.get
            if self.two_byte or n > 1:
                return "".join([get(c) or lookup(c) or "" for c in [s[i : i + n] for i in range(0, len(s) - n + 1, n)]])
            simple = self.simple
            return "".join([get(c) or lookup(c) or simple.get(c[0], "") for c in [s[i : i + 1] for i in range(len(s))]])
        out = []
        i = 0
        default = 2 if self.two_byte else 1
        while i < len(s):
            n = cm.lengths.get(s[i], default)
            code = s[i : i + n]
            i += n
            hit = cm.lookup(code)
            if hit is None and not self.two_byte:
                hit = self.simple.get(code[0]) if len(code) == 1 else None
            out.append(hit or "")
        return "".join(out)


_CID_TABLES: dict[str, dict[int, str]] = {}


def _cid_unicode(ordering: bytes | str) -> dict[int, str] | None:
    """CID -> Unicode for Adobe character collections, from pdfminer.six's bundled tables."""
    name = ordering.decode("latin-1") if isinstance(ordering, bytes) else ordering
    if name not in ("Japan1", "GB1", "CNS1", "Korea1"):
        return None
    if name not in _CID_TABLES:
        try:
            from pdfminer.cmapdb import CMapDB

            table = CMapDB.get_unicode_map(f"Adobe-{name}")
            _CID_TABLES[name] = dict(table.cid2unichr)
        except Exception:  # noqa: BLE001 - data package missing or unreadable
            _CID_TABLES[name] = {}
    return _CID_TABLES[name]


def _simple_encoding(doc: Document, encoding: Any) -> dict[int, str]:
    from pdfminer.glyphlist import glyphname2unicode
    from pdfminer.latin_enc import ENCODING

    column = {"StandardEncoding": 1, "MacRomanEncoding": 2, "WinAnsiEncoding": 3, "PDFDocEncoding": 4}
    base = encoding if isinstance(encoding, str) else doc.get(encoding, "BaseEncoding", "StandardEncoding")
    col = column.get(str(base), 3)
    table: dict[int, str] = {}
    for row in ENCODING:
        value = row[col]
        if isinstance(value, int):
            table[value] = glyphname2unicode.get(str(row[0]), "")
    diffs = doc.get(encoding, "Differences", []) if isinstance(encoding, dict) else []
    code = 0
    for d in diffs if isinstance(diffs, list) else []:
        if isinstance(d, int):
            code = d
        elif isinstance(d, Name):
            table[code & 0xFF] = _glyph(d, glyphname2unicode)
            code += 1
    return table


def _glyph(name: str, glyphs: dict[str, str]) -> str:
    if name in glyphs:
        return glyphs[name]
    m = re.fullmatch(r"uni([0-9A-Fa-f]{4,6})|u([0-9A-Fa-f]{4,6})", name)
    if m:
        try:
            return chr(int(m.group(1) or m.group(2), 16))
        except (ValueError, OverflowError):
            return ""
    return ""


# --- pages and content streams ----------------------------------------------------------------


def _pages(doc: Document) -> list[tuple[Any, dict[str, Any]]]:
    """(page, inherited resources) in page-tree order; all /Type /Page objects when there is no tree."""
    root = None
    for t in reversed(doc.trailers):
        root = doc.get(t, "Root")
        if isinstance(root, dict):
            break
    pages: list[tuple[Any, dict[str, Any]]] = []
    top = doc.get(root, "Pages") if isinstance(root, dict) else None
    if isinstance(top, dict):
        seen: set[int] = set()
        stack: list[tuple[Any, Any]] = [(top, doc.get(top, "Resources"))]
        while stack and len(pages) < MAX_PAGES + 1:
            node, res = stack.pop()
            if id(node) in seen or not isinstance(node, dict):
                continue
            seen.add(id(node))
            res = doc.get(node, "Resources", res)
            kids = doc.get(node, "Kids")
            if isinstance(kids, list) and node.get("Type") != "Page":
                stack.extend((doc.resolve(k), res) for k in reversed(kids))
            else:
                pages.append((node, res if isinstance(res, dict) else {}))
    if not pages:
        for num in sorted(doc.objects):
            obj = doc.objects[num]
            if isinstance(obj, dict) and obj.get("Type") == "Page":
                pages.append((obj, doc.get(obj, "Resources", {})))
    return pages


@dataclass
class _TextState:
    font: Font | None = None
    size: float = 0.0
    tm: tuple[float, ...] = (1, 0, 0, 1, 0, 0)
    tlm: tuple[float, ...] = (1, 0, 0, 1, 0, 0)
    leading: float = 0.0


class _Page:
    def __init__(self, doc: Document, budget: Budget, fonts: dict[int, Font]) -> None:
        self.doc = doc
        self.budget = budget
        self.out: list[str] = []
        self.size = 0
        self.last_y: float | None = None
        self.fonts = fonts  # shared by the pages of one document
        self.ops = 0

    def emit(self, s: str, ts: _TextState) -> None:
        if not s:
            return
        y = ts.tm[5]
        if self.last_y is not None and abs(y - self.last_y) > max(abs(ts.size * ts.tm[3]) * 0.3, 0.5):
            self.out.append("\n")
        self.last_y = y
        self.out.append(s)
        self.size += len(s)

    def font(self, resources: dict[str, Any], name: Any) -> Font | None:
        fonts = self.doc.get(resources, "Font", {})
        obj = self.doc.get(fonts, str(name))
        if not isinstance(obj, dict):
            return None
        key = id(obj)
        if key not in self.fonts:
            self.fonts[key] = Font(self.doc, obj)
        return self.fonts[key]

    def run(self, content: bytes, resources: dict[str, Any], depth: int, active: set[int]) -> None:
        ts = _TextState()
        saved: list[tuple[Font | None, float]] = []
        pos: int | None = 0
        while pos is not None:
            pos = self._run_from(content, pos, ts, saved, resources, depth, active)

    def _run_from(self, content: bytes, pos: int, ts: _TextState, saved: list[tuple[Font | None, float]],
                  resources: dict[str, Any], depth: int, active: set[int]) -> int | None:
        """Interpret from ``pos``; returns where to resume after an inline image, None at the end."""
        ops: list[Any] = []
        stack: list[list[Any]] = []
        for tok, end in tokens(content, pos):
            self.ops += 1
            if self.ops & 0xFFF == 0:
                self.budget.check_time()
            if self.size > self.budget.limits.max_text:
                return None
            if not isinstance(tok, Keyword) or tok in ("true", "false", "null"):
                (stack[-1] if stack else ops).append(tok)
                if len(ops) > MAX_OPERANDS:
                    ops.clear()
                continue
            if tok == "[":
                stack.append([])
                if len(stack) > 64:
                    stack.clear()
                continue
            if tok == "]":
                if stack:
                    arr = stack.pop()
                    (stack[-1] if stack else ops).append(arr)
                continue
            if tok in ("<<", ">>") or stack:
                continue
            if tok == "ID":
                # Inline image data is binary: resume after the "EI" that ends it.
                m = _INLINE_END.search(content, end)
                return m.end() if m else None
            self._op(tok, ops, ts, saved, resources, depth, active)
            ops = []
        return None

    def _op(self, op: str, ops: list[Any], ts: _TextState, saved: list[tuple[Font | None, float]],
            resources: dict[str, Any], depth: int, active: set[int]) -> None:
        if op == "Tf" and len(ops) >= 2:
            ts.font = self.font(resources, ops[-2])
            ts.size = float(ops[-1]) if isinstance(ops[-1], int | float) else ts.size
        elif op == "Tj" and ops:
            self.show(ops[-1], ts)
        elif op in ("'", '"') and ops:
            self.newline(ts)
            self.show(ops[-1], ts)
        elif op == "TJ" and ops and isinstance(ops[-1], list):
            for part in ops[-1]:
                if isinstance(part, bytes):
                    self.show(part, ts)
                elif isinstance(part, int | float) and part < -250 and self.out and self.out[-1][-1:].isascii() \
                        and self.out[-1][-1:].isalnum():
                    self.out.append(" ")
        elif op in ("Td", "TD") and len(ops) >= 2 and all(isinstance(x, int | float) for x in ops[-2:]):
            tx, ty = float(ops[-2]), float(ops[-1])
            a, b, c, d, e, f = ts.tlm
            ts.tlm = ts.tm = (a, b, c, d, tx * a + ty * c + e, tx * b + ty * d + f)
            if op == "TD":
                ts.leading = -ty
        elif op == "Tm" and len(ops) >= 6 and all(isinstance(x, int | float) for x in ops[-6:]):
            ts.tlm = ts.tm = tuple(float(x) for x in ops[-6:])
        elif op == "T*":
            self.newline(ts)
        elif op == "TL" and ops and isinstance(ops[-1], int | float):
            ts.leading = float(ops[-1])
        elif op == "BT":
            ts.tm = ts.tlm = (1, 0, 0, 1, 0, 0)
        elif op == "q" and len(saved) < 256:
            saved.append((ts.font, ts.size))
        elif op == "Q" and saved:
            ts.font, ts.size = saved.pop()
        elif op == "Do" and ops:
            self.xobject(resources, ops[-1], depth, active)

    def newline(self, ts: _TextState) -> None:
        a, b, c, d, e, f = ts.tlm
        ts.tlm = ts.tm = (a, b, c, d, -ts.leading * c + e, -ts.leading * d + f)

    def show(self, s: Any, ts: _TextState) -> None:
        if isinstance(s, bytes) and ts.font is not None:
            self.emit(ts.font.decode(s), ts)
        elif isinstance(s, bytes):
            self.emit(s.decode("latin-1"), ts)

    def xobject(self, resources: dict[str, Any], name: Any, depth: int, active: set[int]) -> None:
        xobjs = self.doc.get(resources, "XObject", {})
        obj = self.doc.get(xobjs, str(name))
        if not isinstance(obj, Stream) or obj.attrs.get("Subtype") != "Form" or id(obj) in active:
            return
        if depth >= MAX_XOBJECT_DEPTH:
            return
        res = self.doc.get(obj, "Resources", resources)
        self.run(self.doc.stream_data(obj), res if isinstance(res, dict) else resources, depth + 1,
                 active | {id(obj)})


def _contents(doc: Document, page: Any) -> bytes:
    c = doc.get(page, "Contents")
    parts = c if isinstance(c, list) else [c]
    out = []
    for p in parts:
        s = doc.resolve(p)
        if isinstance(s, Stream):
            out.append(doc.stream_data(s))
    return b"\n".join(out)


def pdf_items(data: bytes, budget: Budget) -> Iterator[Item]:
    doc = load(data, budget)
    if any("Encrypt" in t for t in doc.trailers):
        budget.stats.incr("content.encrypted", format="pdf")
        yield Notice("encrypted", "PDF with an /Encrypt dictionary")
        return
    pages = _pages(doc)
    if len(pages) > MAX_PAGES:
        budget.count_cap("pages")
        doc.notices.append(Notice("truncated", f"more than {MAX_PAGES} pages"))
        pages = pages[:MAX_PAGES]
    fonts: dict[int, Font] = {}
    for number, (page, resources) in enumerate(pages, 1):
        budget.check_time()
        p = _Page(doc, budget, fonts)
        p.run(_contents(doc, page), resources, 0, set())
        text, clipped = budget.clip_text("".join(p.out))
        if text.strip():
            yield Text(text, f"pdf:page{number}")
        if clipped:
            raise CapHit("text", "text cap reached")
        yield from doc.notices
        doc.notices.clear()
    yield from doc.notices
