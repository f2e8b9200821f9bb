"""Every byte form a Unicode marker can take on the wire, so it is found even where no decoder applies.

``literal_variants(text, nocase)`` returns ``[Variant(name, data, lead, trail), ...]``,
deduplicated (identical bytes keep the first name, in the order below), each at least
:data:`MIN_PATTERN_BYTES` long; ``lead``/``trail`` are set only for base64 (see below). Variant names are ``family[/detail...]`` and form a small
bounded set (they are used as metric labels).

Text forms (each encoded in the raw encodings): the text as written; ``nfkc/`` (NFKC of the
text, when different); ``fullwidth/`` (ASCII -> U+FF01..FF5E, half-width katakana ->
full-width); ``halfwidth/`` (katakana -> half-width katakana with separate (han)dakuten,
full-width ASCII -> ASCII). For ``nocase`` markers the full-width form is generated for the
upper- and lower-case text too (ASCII case-insensitivity cannot reach U+FF21..).

Raw encodings: ``utf-8``, ``cp932``, ``shift_jis`` (where it differs from CP932, e.g. 〜),
``euc-jp``, ``iso-2022-jp`` (the JIS X 0208 run without its surrounding ESC $ B / ESC ( B, so
it is found wherever the escape sits; when that run is shorter than 6 bytes it keeps its
leading ESC $ B, because 4 printable bytes alone would match noise), ``utf-16le``,
``utf-16be``.

Escaped forms of the text as written: ``percent/<utf-8|cp932|euc-jp>/<upper|lower>`` (unreserved
ASCII kept, everything else %XX), ``json-u/<upper|lower>`` (non-ASCII as \\uXXXX, surrogate
pairs beyond the BMP), ``html-dec`` and ``html-hex/<upper|lower>`` (non-ASCII as &#N; / &#xH;),
``qp/<utf-8|cp932|iso-2022-jp>`` (quoted-printable). QP encoders cut lines at 76 characters
with soft line breaks (``=`` CRLF), which splits most Japanese markers (9 QP characters per
kanji); QP patterns therefore run, like base64, on a view of the bytes with soft breaks and
line breaks removed (detectors/markers.py), and the QP-decoded buffer from the MIME decoder is
matched too.

Base64 (``base64/<encoding>/<k>`` and ``base64url/...``): for each alignment k = 0, 1, 2 of the
marker bytes within the 3-byte groups, the inner run of base64 characters that depends only on
the marker bytes (``data``). That inner run leaves the top bits of the first byte and the low bits
of the last byte unchecked (they share a character with unknown neighbours), so ``lead`` and
``trail`` hold exactly the characters allowed just before and just after the run (those whose
known bits agree); detectors/markers.py checks them on each hit. ト and ド differ only in the
low bits of their last UTF-8 byte and would otherwise be confused. (Checking the edges after the
literal hit instead of compiling them into a regex keeps every base64 pattern a literal: 9,000
class-edged regexes took Hyperscan 9.5 s to compile, the literals 0.1 s.)
These patterns run on a CR/LF-stripped view of each buffer, so MIME line breaks inside the run
do not hide it (see detectors/markers.py).
"""

from __future__ import annotations

import base64
import unicodedata
from typing import NamedTuple

MIN_PATTERN_BYTES = 4
MIN_BASE64_CHARS = 8
_MIN_JIS_RUN = 6

RAW_ENCODINGS = (
    ("utf-8", "utf-8"),
    ("cp932", "cp932"),
    ("shift_jis", "shift_jis"),
    ("euc-jp", "euc_jp"),
    ("iso-2022-jp", "iso2022_jp"),
    ("utf-16le", "utf-16-le"),
    ("utf-16be", "utf-16-be"),
)
# Raw encodings also used for the width/NFKC forms (no ISO-2022-JP: no half-width kana there).
_FORM_ENCODINGS = ("utf-8", "cp932", "euc-jp", "utf-16le", "utf-16be")
_BASE64_SOURCES = ("utf-8", "cp932", "euc-jp", "iso-2022-jp", "utf-16le")
_PERCENT_SOURCES = ("utf-8", "cp932", "euc-jp")
_QP_SOURCES = ("utf-8", "cp932", "iso-2022-jp")

_B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64URL = _B64[:62] + b"-_"


class Variant(NamedTuple):
    name: str
    data: bytes  # the literal bytes (for base64: the inner run)
    lead: frozenset[int] | None = None  # base64: bytes allowed just before the run
    trail: frozenset[int] | None = None  # base64: bytes allowed just after the run


_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def codec_of(variant: str) -> str:
    """The Python codec that decodes the bytes around a match of ``variant`` (for context)."""
    parts = variant.split("/")
    if parts[0] in ("nfkc", "fullwidth", "halfwidth") and len(parts) > 1:
        parts = parts[1:]
    codec = dict(RAW_ENCODINGS).get(parts[0])
    if codec is None or parts[0] == "iso-2022-jp":
        return "utf-8"  # escaped forms: ASCII, often inside UTF-8 text (undecodable bytes drop out)
    return codec


def encode_raw(text: str, name: str) -> bytes | None:
    """``text`` in raw encoding ``name`` (ISO-2022-JP: see module doc), or None if unencodable."""
    codec = dict(RAW_ENCODINGS)[name]
    try:
        data = text.encode(codec)
    except UnicodeEncodeError:
        return None
    if name == "iso-2022-jp":
        return _jis_run(text, data)
    return data


def _jis_run(text: str, data: bytes) -> bytes | None:
    if data == text.encode("ascii", "ignore") and text.isascii():
        return data  # pure ASCII: identical to the ASCII encodings
    if data.endswith(b"\x1b(B"):
        data = data[:-3]
    if data.startswith(b"\x1b$B"):
        inner = data[3:]
        if len(inner) >= _MIN_JIS_RUN:
            data = inner
    return data


def fullwidth(text: str) -> str:
    out = []
    for ch in text:
        o = ord(ch)
        if 0x21 <= o <= 0x7E:
            out.append(chr(o + 0xFEE0))
        elif ch == " ":
            out.append("\u3000")
        elif 0xFF61 <= o <= 0xFF9F:
            out.append(unicodedata.normalize("NFKC", ch))
        else:
            out.append(ch)
    return unicodedata.normalize("NFC", "".join(out))


def _halfwidth_table() -> dict[str, str]:
    table: dict[str, str] = {}
    for o in range(0xFF61, 0xFFA0):
        full = unicodedata.normalize("NFKC", chr(o))
        if len(full) == 1:
            table.setdefault(full, chr(o))
    table["\u3099"] = "\uff9e"  # combining dakuten -> half-width dakuten
    table["\u309a"] = "\uff9f"
    return table


_HALF = _halfwidth_table()


def halfwidth(text: str) -> str:
    out = []
    for ch in text:
        o = ord(ch)
        if 0xFF01 <= o <= 0xFF5E:
            out.append(chr(o - 0xFEE0))
            continue
        if ch == "\u3000":
            out.append(" ")
            continue
        decomposed = unicodedata.normalize("NFD", ch)
        if decomposed[0] in _HALF and all(c in _HALF for c in decomposed):
            out.append("".join(_HALF[c] for c in decomposed))
        else:
            out.append(ch)
    return "".join(out)


def percent(data: bytes, upper: bool) -> bytes:
    fmt = "%{:02X}" if upper else "%{:02x}"
    return "".join(chr(b) if b in _UNRESERVED else fmt.format(b) for b in data).encode("ascii")


def json_escape(text: str, upper: bool) -> bytes:
    fmt = "\\u{:04X}" if upper else "\\u{:04x}"
    out = []
    for ch in text:
        o = ord(ch)
        if o < 0x80:
            out.append(ch)
        elif o > 0xFFFF:
            o -= 0x10000
            out.append(fmt.format(0xD800 + (o >> 10)) + fmt.format(0xDC00 + (o & 0x3FF)))
        else:
            out.append(fmt.format(o))
    return "".join(out).encode("ascii")


def html_entities(text: str, style: str) -> bytes:
    out = []
    for ch in text:
        o = ord(ch)
        if o < 0x80:
            out.append(ch)
        elif style == "dec":
            out.append(f"&#{o};")
        elif style == "upper":
            out.append(f"&#x{o:X};")
        else:
            out.append(f"&#x{o:x};")
    return "".join(out).encode("ascii")


def quoted_printable(data: bytes) -> bytes:
    return "".join(
        chr(b) if (33 <= b <= 126 and b != 61) or b == 32 else f"={b:02X}" for b in data
    ).encode("ascii")


def base64_inner(data: bytes, k: int) -> bytes:
    """The base64 characters that depend only on ``data`` when it starts at offset k mod 3."""
    enc = base64.b64encode(b"\0" * k + data).rstrip(b"=")
    n = k + len(data)
    start = -(-8 * k // 6)  # ceil: first character without bits of the preceding bytes
    end = (8 * n) // 6  # floor: last character without bits of the following bytes
    return enc[start:end]


def literal_variants(text: str, nocase: bool = False) -> list[Variant]:
    """All forms of ``text``; see the module docstring."""
    seen: set[object] = set()
    out: list[Variant] = []

    def add(name: str, data: bytes | None, minimum: int = MIN_PATTERN_BYTES, exact: bool = False,
            lead: frozenset[int] | None = None, trail: frozenset[int] | None = None) -> None:
        if data is None or len(data) < minimum:
            return
        key: object = data.lower() if nocase and not exact else data
        if exact:
            key = (data, lead, trail)
        if key in seen:
            return
        seen.add(key)
        out.append(Variant(name, data, lead, trail))

    raw: dict[str, bytes | None] = {}
    for name, _codec in RAW_ENCODINGS:
        raw[name] = encode_raw(text, name)
        add(name, raw[name])

    forms: list[tuple[str, str]] = []
    nfkc = unicodedata.normalize("NFKC", text)
    if nfkc != text:
        forms.append(("nfkc", nfkc))
    forms.append(("fullwidth", fullwidth(text)))
    if nocase:
        forms.append(("fullwidth", fullwidth(text.upper())))
        forms.append(("fullwidth", fullwidth(text.lower())))
    forms.append(("halfwidth", halfwidth(text)))
    for form, t in forms:
        if t == text:
            continue
        for enc in _FORM_ENCODINGS:
            add(f"{form}/{enc}", encode_raw(t, enc))

    for src in _PERCENT_SOURCES:
        b = raw.get(src)
        if b is not None:
            add(f"percent/{src}/upper", percent(b, True))
            add(f"percent/{src}/lower", percent(b, False))
    add("json-u/lower", json_escape(text, False))
    add("json-u/upper", json_escape(text, True))
    add("html-dec", html_entities(text, "dec"))
    add("html-hex/lower", html_entities(text, "lower"))
    add("html-hex/upper", html_entities(text, "upper"))
    for src in _QP_SOURCES:
        b = raw.get(src)
        if b is not None:
            add(f"qp/{src}", quoted_printable(b))

    for v in base64_variants(text, nocase):
        add(v.name, v.data, MIN_BASE64_CHARS, exact=True, lead=v.lead, trail=v.trail)
    return out


def base64_edges(data: bytes, k: int, url: bool = False) -> tuple[bytes, frozenset[int] | None,
                                                                    frozenset[int] | None]:
    """(inner run, allowed bytes before it, allowed bytes after it) at alignment ``k``."""
    alphabet = _B64URL if url else _B64
    inner = base64_inner(data, k)
    if url:
        inner = inner.translate(bytes.maketrans(b"+/", b"-_"))
    lead = trail = None
    lead_known = (6 - (8 * k) % 6) % 6  # marker bits in the character before the run
    if lead_known:
        top = data[0] >> (8 - lead_known)
        lead = frozenset(alphabet[(u << lead_known) | top] for u in range(1 << (6 - lead_known)))
    trail_known = (8 * (k + len(data))) % 6  # marker bits in the character after the run
    if trail_known:
        low = data[-1] & ((1 << trail_known) - 1)
        trail = frozenset(alphabet[(low << (6 - trail_known)) | u] for u in range(1 << (6 - trail_known)))
    return inner, lead, trail


def base64_variants(text: str, nocase: bool = False) -> list[Variant]:
    """``base64/<enc>/<k>`` and ``base64url/<enc>/<k>`` (case-sensitive always)."""
    texts = [text]
    if nocase:  # base64 is case-sensitive: cover the text as written, upper and lower
        texts += [t for t in (text.upper(), text.lower()) if t != text]
    out: list[Variant] = []
    for t in texts:
        for src in _BASE64_SOURCES:
            codec = dict(RAW_ENCODINGS)[src]
            try:
                b = t.encode(codec)
            except UnicodeEncodeError:
                continue
            if src == "iso-2022-jp":
                b = _jis_run(t, b) or b
            for k in range(3):
                std = base64_edges(b, k)
                out.append(Variant(f"base64/{src}/{k}", *std))
                url = base64_edges(b, k, url=True)
                if url != std:
                    out.append(Variant(f"base64url/{src}/{k}", *url))
    return out


def is_base64_variant(name: str) -> bool:
    return name.startswith(("base64/", "base64url/"))


def is_qp_variant(name: str) -> bool:
    return name.startswith("qp/")
