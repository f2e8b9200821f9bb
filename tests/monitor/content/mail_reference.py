"""The mail path's pieces as they were before their fast paths (HEAD d422eef), kept as the oracle
for tests/monitor/content/test_mime_fastpath.py and tests/monitor/applayer/test_smtp_fastpath.py.
Do not optimise this file.

:func:`reference_mail_path` swaps them into the live classes and modules, so the same parser
runs once as it is and once as it was, on the same input."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from monitor.applayer import smtp
from monitor.content import mime, mimecodec, mimeheaders

# ------------------------------------------------------------------ mimecodec.Base64Decoder.feed

_LINE_SPACE = b"\r\n \t"


def base64_feed(self: mimecodec.Base64Decoder, data: bytes) -> bytes:
    stripped = data.translate(None, _LINE_SPACE)
    buf = self._carry + stripped if self._carry else stripped
    whole = len(buf) & ~3
    rest = buf[whole:]
    if rest.translate(None, mimecodec._ALPHABET):
        return self._feed_tolerant(data)
    try:
        out = mimecodec.strict_b64decode(buf[:whole] if rest else buf)
    except ValueError:
        return self._feed_tolerant(data)
    self._carry = rest
    return out


# ------------------------------------------------------------------ mime.MimeParser


def has_long_line(data: bytes, start: int, end: int, limit: int) -> bool:
    """What ``_track_lines`` computed: the longest line of ``data[start:end]``, split into objects."""
    return max(map(len, data[start:end].split(b"\n"))) > limit


def next_delimiter_line(self: mime.MimeParser, buf: bytes | bytearray, pos: int, n: int) -> int:
    best = -1
    for needle in self._needles:
        i = buf.find(needle, pos)
        if i != -1 and (best == -1 or i < best):
            best = i
    if best == -1:
        best = buf.find(b"\n--", max(pos, n - self._max_delim - 1))
    return best


# ------------------------------------------------------------------ mimeheaders


def split_params(value: str) -> list[str]:
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


def unquote(v: str) -> str:
    v = v.strip()
    if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
        return re.sub(r"\\(.)", r"\1", v[1:-1])
    if v.startswith('"'):
        return v[1:]
    return v


def parse_params(value: str, max_params: int = 64) -> tuple[str, dict[str, str]]:
    parts = split_params(mimeheaders.unfold(value)[: mimeheaders.MAX_VALUE * 4])
    main = parts[0].strip().lower()
    plain: dict[str, str] = {}
    extended: dict[str, list[tuple[int, bool, str]]] = {}
    for part in parts[1 : max_params + 1]:
        if "=" not in part:
            continue
        name_part, _, raw = part.partition("=")
        m = mimeheaders._PARAM_NAME.match(name_part)
        if not m:
            continue
        name = m.group(1).lower()
        if m.group(2) is None and m.group(3) is None:
            plain.setdefault(name, unquote(raw))
            continue
        index = int(m.group(2)) if m.group(2) is not None else 0
        extended.setdefault(name, []).append((index, m.group(3) is not None, unquote(raw)))
    params = {k: mimeheaders.decode_words(v)[: mimeheaders.MAX_VALUE] for k, v in plain.items()}
    for name, sections in extended.items():
        params[name] = mimeheaders._join_rfc2231(sections)[: mimeheaders.MAX_VALUE]
    return main, params


def split_addresses(value: str, max_items: int = 100) -> list[str]:
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


# ------------------------------------------------------------------ smtp.SmtpParser._data

_END_MARKER = re.compile(rb"\n\.\r?\n")
_LINE_DOT = re.compile(rb"\n\.")


def smtp_data(self: smtp.SmtpParser, data: bytes) -> int:
    buf = self._mbuf
    old = len(buf)
    buf += data
    start = max(0, old - 3)
    dot = _LINE_DOT.search(buf, start)
    m = None
    if dot is not None:
        self._mdots = True
        m = _END_MARKER.search(buf, dot.start())
    if m is None:
        if len(buf) >= smtp.MESSAGE_BATCH:
            self._flush_message(hold=True)
        return len(data)
    end = m.start()
    used = m.end() - old
    del buf[end - 1 if end > 0 and buf[end - 1] == 13 else end :]
    self._mode = smtp._CMD
    self._end_message()
    return used


# ------------------------------------------------------------------ switch


@contextmanager
def reference_mail_path() -> Iterator[None]:
    """Within the block the mail path runs as it did before the fast paths."""
    with pytest.MonkeyPatch.context() as mp:
        patches: list[tuple[Any, str, Any]] = [
            (mimecodec.Base64Decoder, "feed", base64_feed),
            (mime, "_has_long_line", has_long_line),
            (mime.MimeParser, "_next_delimiter_line", next_delimiter_line),
            (mimeheaders, "_split_params", split_params),
            (mimeheaders, "_unquote", unquote),
            (mimeheaders, "parse_params", parse_params),
            (mime, "parse_params", parse_params),
            (mimeheaders, "split_addresses", split_addresses),
            (smtp, "split_addresses", split_addresses),
            (smtp.SmtpParser, "_data", smtp_data),
        ]
        for owner, name, value in patches:
            assert hasattr(owner, name), name  # a renamed function would make the switch a no-op
            mp.setattr(owner, name, value)
        yield


def b64_reference_decode(chunks: list[bytes]) -> tuple[bytes, int, int]:
    """(bytes, invalid, dangling) of the old decoder over ``chunks``."""
    d = mimecodec.Base64Decoder()
    out = b"".join(base64_feed(d, c) for c in chunks) + d.flush()
    return out, d.invalid, d.dangling

