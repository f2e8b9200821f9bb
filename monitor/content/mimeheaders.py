"""MIME header values: RFC 2047 encoded words, RFC 2045/2231 parameters, address lists.

Everything here works on small, already-capped strings and never raises. Raw header bytes are
turned into text by :func:`header_text` (UTF-8, raw ISO-2022-JP, EUC-JP or Shift_JIS sniffed),
then encoded words are decoded by :func:`decode_words`:

* ``=?charset?B?...?=`` and ``=?charset?Q?...?=`` (either case; ``charset*lang`` accepted);
* whitespace between adjacent encoded words is dropped, and the bytes of adjacent words in the
  same charset are joined before decoding (a multi-byte character or an ISO-2022-JP escape
  sequence may be split across words);
* an unknown or wrong charset falls back to sniffing (``charsets.decode``);
* B text is decoded with the tolerant base64 policy of :mod:`monitor.content.mimecodec`.
"""

from __future__ import annotations

import binascii
import functools
import re
from urllib.parse import unquote_to_bytes

from monitor.content import charsets
from monitor.content.mimecodec import b64decode_tolerant

# Longest value kept for a parameter or a decoded header (file names, subjects).
MAX_VALUE = 8192

_ENCODED_WORD = re.compile(r"=\?([^?\s]{1,64})\?([BbQq])\?([^?]*)\?=")


def header_text(raw: bytes) -> str:
    """Raw header bytes (8-bit allowed) as text; encoded words are left as they are."""
    if raw.isascii() and b"\x1b" not in raw:
        return raw.decode("ascii")
    return charsets.decode(raw)


def unfold(value: str) -> str:
    """Remove folding line breaks (RFC 5322 2.2.3), keeping the whitespace that follows them."""
    if "\n" not in value:
        return value
    return re.sub(r"\r?\n(?=[ \t])", "", value).replace("\r", "").replace("\n", "")


def _word_bytes(enc: str, text: str) -> bytes:
    if enc in "Bb":
        return b64decode_tolerant(text.encode("ascii", "ignore"))
    return binascii.a2b_qp(text.encode("latin-1", "replace"), header=True)


def decode_words(value: str) -> str:
    """Decode RFC 2047 encoded words in ``value`` (see the module docstring)."""
    if "=?" not in value:
        return value
    out: list[str] = []
    pending: bytearray = bytearray()
    pending_charset: str | None = None
    pos = 0

    def flush() -> None:
        nonlocal pending_charset
        if pending_charset is not None:
            out.append(charsets.decode(bytes(pending), pending_charset))
            pending.clear()
            pending_charset = None

    for m in _ENCODED_WORD.finditer(value):
        between = value[pos : m.start()]
        if between and (pending_charset is None or between.strip(" \t\r\n")):
            flush()
            out.append(between)
        charset = m.group(1).split("*", 1)[0]
        if pending_charset is not None and charset.lower() != pending_charset.lower():
            flush()
        if pending_charset is None:
            pending_charset = charset
        pending.extend(_word_bytes(m.group(2), m.group(3)))
        pos = m.end()
    flush()
    out.append(value[pos:])
    return "".join(out)


def decode_header(raw: bytes) -> str:
    """Raw header value bytes -> unfolded, decoded text (capped at MAX_VALUE characters)."""
    return decode_words(unfold(header_text(raw[: MAX_VALUE * 4])))[:MAX_VALUE]


# ------------------------------------------------------------------ parameters


def _split_params(value: str) -> list[str]:
    """Split at ';' outside quoted strings."""
    if '"' not in value:
        return value.split(";")  # no quoted string: every ';' separates (the loop agrees)
    parts: list[str] = []
    cur: list[str] = []
    quoted = False
    escaped = False
    for ch in value:
        if escaped:
            cur.append(ch)
            escaped = False
        elif ch == "\\" and quoted:
            cur.append(ch)
            escaped = True
        elif ch == '"':
            quoted = not quoted
            cur.append(ch)
        elif ch == ";" and not quoted:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


_QUOTED_PAIR = re.compile(r"\\(.)")


def _unquote(v: str) -> str:
    v = v.strip()
    if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
        inner = v[1:-1]
        return _QUOTED_PAIR.sub(r"\1", inner) if "\\" in inner else inner
    if v.startswith('"'):  # unterminated quote: take what is there
        return v[1:]
    return v


_PARAM_NAME = re.compile(r"^\s*([A-Za-z0-9!#$%&'+.^_`{|}~-]+?)(?:\*(\d{1,3}))?(\*)?\s*$")


def parse_params(value: str, max_params: int = 64) -> tuple[str, dict[str, str]]:
    """``"text/plain; charset=ISO-2022-JP"`` -> ("text/plain", {"charset": "ISO-2022-JP"}).

    RFC 2231: ``name*=charset'lang'%XX``, continuations ``name*0``, ``name*1*`` ... are joined
    in index order; a plain ``name`` is used only when no ``name*`` form is present. Values are
    RFC 2047-decoded too (mailers put encoded words in ``filename="=?UTF-8?B?...?="``).
    """
    if len(value) <= _PARAMS_CACHED_LEN:
        # The same short values recur part after part ('text/plain; charset="utf-8"',
        # 'attachment; filename="data.zip"'): parsed once; each caller gets its own dict.
        main, params = _parse_params_cached(value, max_params)
        return main, dict(params)
    return _parse_params(value, max_params)


_PARAMS_CACHED_LEN = 200  # longer values (rare; hostile ones) are parsed every time, never kept


@functools.lru_cache(maxsize=1024)
def _parse_params_cached(value: str, max_params: int) -> tuple[str, dict[str, str]]:
    return _parse_params(value, max_params)


def _parse_params(value: str, max_params: int) -> tuple[str, dict[str, str]]:
    parts = _split_params(unfold(value)[: MAX_VALUE * 4])
    main = parts[0].strip().lower()
    plain: dict[str, str] = {}
    extended: dict[str, list[tuple[int, bool, str]]] = {}
    for part in parts[1 : max_params + 1]:
        if "=" not in part:
            continue
        name_part, _, raw = part.partition("=")
        m = _PARAM_NAME.match(name_part)
        if not m:
            continue
        name = m.group(1).lower()
        if m.group(2) is None and m.group(3) is None:
            plain.setdefault(name, _unquote(raw))
            continue
        index = int(m.group(2)) if m.group(2) is not None else 0
        extended.setdefault(name, []).append((index, m.group(3) is not None, _unquote(raw)))
    params = {k: decode_words(v)[:MAX_VALUE] for k, v in plain.items()}
    for name, sections in extended.items():
        params[name] = _join_rfc2231(sections)[:MAX_VALUE]
    return main, params


def _join_rfc2231(sections: list[tuple[int, bool, str]]) -> str:
    sections.sort(key=lambda s: s[0])
    charset: str | None = None
    out: list[str] = []
    encoded = bytearray()
    for i, (_index, is_encoded, raw) in enumerate(sections):
        if not is_encoded:
            if encoded:
                out.append(charsets.decode(bytes(encoded), charset))
                encoded.clear()
            out.append(raw)
            continue
        if i == 0 and raw.count("'") >= 2:
            charset, _lang, raw = raw.split("'", 2)
        encoded.extend(unquote_to_bytes(raw))
    if encoded:
        out.append(charsets.decode(bytes(encoded), charset))
    return decode_words("".join(out))


# ------------------------------------------------------------------ addresses


def split_addresses(value: str, max_items: int = 100) -> list[str]:
    """Split an address list at commas outside quotes, angle brackets and comments."""
    if "," not in value:  # one address (the usual To:): nothing to split, the loop agrees
        item = value.strip()
        return [item] if item and max_items > 0 else []
    items: list[str] = []
    cur: list[str] = []
    quoted = False
    angle = 0
    comment = 0
    for ch in value:
        if ch == '"' and not comment:
            quoted = not quoted
        elif not quoted:
            if ch == "<":
                angle += 1
            elif ch == ">" and angle:
                angle -= 1
            elif ch == "(":
                comment += 1
            elif ch == ")" and comment:
                comment -= 1
            elif ch == "," and not angle and not comment:
                item = "".join(cur).strip()
                if item:
                    items.append(item)
                cur = []
                if len(items) >= max_items:
                    return items
                continue
        cur.append(ch)
    item = "".join(cur).strip()
    if item:
        items.append(item)
    return items[:max_items]
