"""Web form bodies: multipart/form-data (streaming), x-www-form-urlencoded, JSON strings.

- :class:`MultipartParser` splits a ``multipart/form-data`` body into parts as it arrives;
  each part's headers are parsed (``Content-Disposition`` ``name``/``filename``, including
  RFC 2231/5987 ``filename*=UTF-8''%E8%A6%8B...`` and ``filename*0*`` continuations) and its
  bytes are streamed to a sink the caller provides (a child file). Part headers are capped
  and the number of parts is capped; hitting a cap is a problem (anomaly) and a counter.
  Inside a part, a segment without a delimiter is written on as it is (two ``bytes.find``
  passes decide; see ``MultipartParser._body_segment``).
- :func:`urldecode` percent-decodes a form (``+`` is a space).
- :func:`json_strings` returns every string value of a JSON document with its escapes
  (``\\uXXXX`` incl. surrogate pairs) decoded, falling back to a tolerant scanner for broken
  or truncated JSON.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote_to_bytes

from monitor.stats import Stats

MAX_PART_HEADER = 16 << 10
MAX_PARTS = 1000
# JSON documents larger than this are scanned with the tolerant scanner only (no json.loads).
JSON_PARSE_MAX = 8 << 20


# ---------------------------------------------------------------- header parameters


def decode_header_text(raw: bytes) -> str:
    """Header bytes to text: UTF-8 (what browsers send), then CP932 (Japanese Windows), then Latin-1."""
    for enc in ("utf-8", "cp932"):
        try:
            return raw.decode(enc)
        except UnicodeDecodeError:
            continue
    return raw.decode("latin-1")


_TOKEN_RE = re.compile(r'\s*([^=;\s]+)\s*(?:=\s*("(?:[^"\\]|\\.)*"?|[^;]*))?\s*;?')


_QUOTED_PAIR = re.compile(r'\\(["\\])')
_CONTINUATION = re.compile(r"(.+)\*(\d+)(\*?)")


def _unquote(value: str) -> str:
    if len(value) >= 1 and value[0] == '"':
        inner = value[1:-1] if len(value) >= 2 and value.endswith('"') else value[1:]
        # Backslash escapes only before '"' or '\\': IE sends Windows paths unescaped.
        return _QUOTED_PAIR.sub(r"\1", inner) if "\\" in inner else inner
    return value.strip()


def _ext_value(value: str) -> str:
    """RFC 2231/5987 ``charset'lang'%XX...`` to text (lenient about charset and errors)."""
    parts = value.split("'", 2)
    if len(parts) != 3:
        return decode_header_text(unquote_to_bytes(value))
    charset, _lang, enc = parts
    raw = unquote_to_bytes(enc)
    try:
        return raw.decode(charset or "utf-8")
    except (LookupError, UnicodeDecodeError):
        return decode_header_text(raw)


def parse_params(value: str) -> tuple[str, dict[str, str]]:
    """``form-data; name="a"; filename*=UTF-8''x`` -> ("form-data", {"name": "a", "filename": "x"}).

    Extended (``*``) parameters win over plain ones; ``name*0*``/``name*1`` continuations
    are joined in order.
    """
    head, _, rest = value.partition(";")
    if not rest:
        return head.strip().lower(), {}  # no parameters (most Content-Type values)
    if len(value) <= _PARAMS_CACHED_LEN:
        # The same short values recur on every transaction ("text/html; charset=utf-8",
        # 'form-data; name="file"'): parsed once; each caller gets its own dict.
        media, params = _parse_params_cached(value)
        return media, dict(params)
    return _parse_params(head, rest)


_PARAMS_CACHED_LEN = 200  # longer values (rare; hostile ones) are parsed every time, never kept


@functools.lru_cache(maxsize=1024)
def _parse_params_cached(value: str) -> tuple[str, dict[str, str]]:
    head, _, rest = value.partition(";")
    return _parse_params(head, rest)


def _parse_params(head: str, rest: str) -> tuple[str, dict[str, str]]:
    plain: dict[str, str] = {}
    ext: dict[str, str] = {}
    pieces: dict[str, dict[int, tuple[bool, str]]] = {}
    for m in _TOKEN_RE.finditer(rest):
        key = m.group(1).lower()
        raw = m.group(2) or ""
        if not key:
            continue
        cm = _CONTINUATION.fullmatch(key) if "*" in key else None
        if cm:
            idx = int(cm.group(2))
            if idx < 1000:
                pieces.setdefault(cm.group(1), {})[idx] = (bool(cm.group(3)), _unquote(raw))
            continue
        if key.endswith("*"):
            ext[key[:-1]] = _ext_value(_unquote(raw))
        else:
            plain.setdefault(key, _unquote(raw))
    for name, segs in pieces.items():
        first_ext = segs.get(0, (False, ""))[0]
        joined = "".join(v for _, v in (segs[i] for i in sorted(segs)))
        if first_ext or any(e for e, _ in segs.values()):
            ext[name] = _ext_value(joined) if first_ext else decode_header_text(unquote_to_bytes(joined))
        else:
            plain.setdefault(name, joined)
    plain.update(ext)
    return head.strip().lower(), plain


def boundary_of(content_type: str) -> bytes | None:
    """The multipart boundary of a Content-Type value, or None."""
    kind, params = parse_params(content_type)
    b = params.get("boundary", "")
    if not kind.startswith("multipart/") or not b or len(b) > 200:
        return None
    return b.encode("latin-1", "replace")


# ---------------------------------------------------------------- multipart


class PartSink(Protocol):
    def write(self, data: bytes) -> None: ...
    def end(self, complete: bool) -> None: ...


@dataclass
class PartInfo:
    index: int
    headers: list[tuple[str, str]]
    name: str = ""
    filename: str | None = None
    content_type: str | None = None
    transfer_encoding: str | None = None


def _parse_part_headers(block: bytes) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    for line in block.replace(b"\r\n", b"\n").split(b"\n"):
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and headers:
            k, v = headers[-1]
            headers[-1] = (k, v + " " + decode_header_text(line.strip()))
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        headers.append((name.strip().decode("latin-1").lower(), decode_header_text(value.strip())))
    return headers


_DELIM_TAIL = re.compile(rb"[ \t]*\r?\n")
_PREAMBLE, _AFTER_DELIM, _HEADERS, _BODY, _DONE = range(5)


@dataclass
class MultipartParser:
    """Streaming multipart parser; ``on_part(info) -> PartSink`` opens each part's sink."""

    boundary: bytes
    on_part: Callable[[PartInfo], PartSink]
    stats: Stats | None = None
    max_header: int = MAX_PART_HEADER
    max_parts: int = MAX_PARTS
    problems: list[str] = field(default_factory=list)
    parts: int = 0

    def __post_init__(self) -> None:
        self._dash = b"--" + self.boundary
        self._delim = b"\n" + self._dash
        # A boundary without CR/LF: the delimiter's only LF is its first byte (_body_segment).
        self._plain_boundary = b"\n" not in self.boundary and b"\r" not in self.boundary
        self._buf = bytearray()
        self._state = _PREAMBLE
        self._sink: PartSink | None = None
        self._skip_part = False

    def _problem(self, kind: str) -> None:
        if kind not in self.problems:
            self.problems.append(kind)
        if self.stats is not None:
            self.stats.incr("content.multipart_problem", kind=kind)

    def feed(self, data: bytes) -> None:
        if self._state == _DONE or not data:
            return
        if self._state == _BODY and self._body_segment(data):
            return
        self._buf += data
        while self._step():
            pass

    def _body_segment(self, data: bytes) -> bool:
        """Inside a part, a segment with no delimiter in it: written on straight from the segment.

        A delimiter can only start in the carried tail (at most ``len(delimiter) + 1`` bytes) or
        lie wholly in the segment, so two C searches decide; when either finds one (the end of
        the part, or "--boundary-more" inside the content) the general step loop takes over. Of
        the segment only what may still begin a delimiter is carried: a final CR, or a final
        "\\n--bou" prefix (usually nothing, so the segment itself is written, uncopied).
        Returns False when it did not consume ``data``.
        """
        buf = self._buf
        delim = self._delim
        keep = len(delim) + 1
        n = len(data)
        if n <= keep or len(buf) > keep or not self._plain_boundary or data.find(delim) >= 0:
            return False
        if buf and (bytes(buf) + data[:keep]).find(delim) >= 0:
            return False
        hold = 0
        j = data.rfind(b"\n", n - keep)
        if j >= 0 and delim.startswith(data[j:]):
            hold = n - j + (data[j - 1] == 0x0D)
        elif data[-1] == 0x0D:
            hold = 1
        if self._sink is not None and not self._skip_part:
            out = data[: n - hold] if hold else data
            self._sink.write(bytes(buf) + out if buf else out)
        buf.clear()
        if hold:
            buf += data[n - hold:]
        return True

    def _step(self) -> bool:
        buf = self._buf
        if self._state == _PREAMBLE:
            if buf.startswith(self._dash):
                del buf[: len(self._dash)]
                self._state = _AFTER_DELIM
                return True
            i = buf.find(self._delim)
            if i < 0:
                # Keep only what could still start a delimiter.
                keep = len(self._delim)
                if len(buf) > keep:
                    del buf[: len(buf) - keep]
                return False
            del buf[: i + len(self._delim)]
            self._state = _AFTER_DELIM
            return True
        if self._state == _AFTER_DELIM:
            if len(buf) < 2:
                return False
            if buf[:2] == b"--":
                self._state = _DONE
                buf.clear()
                return False
            nl = buf.find(b"\n")
            if nl < 0:
                if len(buf) > self.max_header:
                    self._problem("delimiter_line_too_long")
                    buf.clear()
                return False
            if buf[:nl].strip(b" \t\r"):
                self._problem("delimiter_junk")
            del buf[: nl + 1]
            self._state = _HEADERS
            return True
        if self._state == _HEADERS:
            if buf[:1] == b"\n" or buf[:2] == b"\r\n":
                end, skip = 0, (1 if buf[:1] == b"\n" else 2)
            else:
                a = buf.find(b"\r\n\r\n")
                b = buf.find(b"\n\n")
                best: tuple[int, int] | None = (a, 4) if a >= 0 else None
                if b >= 0 and (best is None or b < best[0]):
                    best = (b, 2)
                if best is None:
                    if len(buf) > self.max_header:
                        self._problem("part_header_too_long")
                        if self.stats is not None:
                            self.stats.incr("content.cap", cap="multipart_header")
                        self._open(b"")
                        self._skip_part = True
                        self._state = _BODY
                        return True
                    return False
                end, skip = best
            block = bytes(buf[:end])
            del buf[: end + skip]
            self._open(block)
            self._state = _BODY
            return True
        if self._state == _BODY:
            i = buf.find(self._delim)
            while i >= 0:
                # A delimiter is "--boundary" then "--" or optional blanks and a line end;
                # "--boundary-more" inside the content is data (RFC 2046 5.1.1).
                after = bytes(buf[i + len(self._delim): i + len(self._delim) + 80])
                if after[:2] == b"--" or _DELIM_TAIL.match(after):
                    break
                if after == b"-" or (len(after) < 80 and not after.strip(b" \t\r")):
                    return False  # cannot tell yet: wait for more bytes
                i = buf.find(self._delim, i + 1)
            if i < 0:
                keep = len(self._delim) + 1
                if len(buf) > keep:
                    self._emit(bytes(buf[: len(buf) - keep]))
                    del buf[: len(buf) - keep]
                return False
            end = i - 1 if i > 0 and buf[i - 1] == 0x0D else i
            self._emit(bytes(buf[:end]))
            del buf[: i + len(self._delim)]
            self._finish(True)
            self._state = _AFTER_DELIM
            return True
        return False

    def _open(self, block: bytes) -> None:
        self.parts += 1
        self._skip_part = False
        if self.parts > self.max_parts:
            self._problem("too_many_parts")
            if self.stats is not None:
                self.stats.incr("content.cap", cap="multipart_parts")
            self._sink = None
            self._skip_part = True
            return
        headers = _parse_part_headers(block)
        info = PartInfo(index=self.parts - 1, headers=headers)
        for k, v in headers:
            if k == "content-disposition":
                _, params = parse_params(v)
                info.name = params.get("name", "")
                if "filename" in params:
                    info.filename = params["filename"]
            elif k == "content-type":
                info.content_type = v
            elif k == "content-transfer-encoding":
                info.transfer_encoding = v.lower()
        self._sink = self.on_part(info)

    def _emit(self, data: bytes) -> None:
        if data and self._sink is not None and not self._skip_part:
            self._sink.write(data)

    def _finish(self, complete: bool) -> None:
        if self._sink is not None:
            self._sink.end(complete)
        self._sink = None

    def close(self) -> None:
        """End of body. A part still open is incomplete (truncated)."""
        if self._state == _BODY:
            self._emit(bytes(self._buf))
            self._finish(False)
            self._problem("truncated")
        elif self._state == _PREAMBLE and self.parts == 0:
            self._problem("no_boundary")
        self._buf.clear()
        self._state = _DONE

    def gap(self, length: int) -> None:
        """Bytes lost inside the body: the current part is truncated; look for the next delimiter."""
        if self._state == _BODY and self._sink is not None:
            gap = getattr(self._sink, "gap", None)
            if callable(gap):
                self._emit(bytes(self._buf))
                self._buf.clear()
                gap(length)
                return
        self._finish(False)
        self._buf.clear()
        self._state = _PREAMBLE


# ---------------------------------------------------------------- urlencoded


def urldecode(data: bytes) -> bytes:
    """``a=%E8%A6%8B+x`` -> ``a=見 x`` (bytes). Invalid escapes stay as they are."""
    return unquote_to_bytes(data.replace(b"+", b" "))


def urlencoded_pairs(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Decoded (name, value) pairs of a form body or query string."""
    for piece in data.split(b"&"):
        if not piece:
            continue
        k, _, v = piece.partition(b"=")
        yield urldecode(k), urldecode(v)


# ---------------------------------------------------------------- JSON

_JSON_STRING_RE = re.compile(rb'"((?:[^"\\]|\\.)*)"?', re.S)
_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", '"': '"', "/": "/", "\\": "\\"}
_ESC_RE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.S)


def _unescape_json(s: str) -> str:
    def rep(m: re.Match[str]) -> str:
        e = m.group(1)
        if e[0] == "u" and len(e) == 5:
            return chr(int(e[1:], 16))
        return _ESCAPES.get(e, e)

    out = _ESC_RE.sub(rep, s)
    # Join surrogate pairs produced by \uD83D\uDE00.
    return out.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _walk(obj: Any, out: list[str], budget: list[int]) -> None:
    stack = [obj]
    while stack and budget[0] > 0:
        o = stack.pop()
        if isinstance(o, str):
            out.append(o)
            budget[0] -= len(o)
        elif isinstance(o, dict):
            for k, v in reversed(list(o.items())):
                stack.append(v)
                stack.append(k)
        elif isinstance(o, list):
            stack.extend(reversed(o))


def json_strings(data: bytes, limit: int = 32 << 20) -> tuple[str, bool]:
    """All strings (keys and values) of a JSON body, escapes decoded, joined by newlines.

    Returns (text, well_formed). Broken or oversized JSON is scanned tolerantly.
    """
    if len(data) <= JSON_PARSE_MAX:
        try:
            doc = json.loads(data.decode("utf-8", "surrogatepass"))
        except (ValueError, RecursionError):
            pass
        else:
            out: list[str] = []
            _walk(doc, out, [limit])
            text = "\n".join(out)[:limit]
            return text.encode("utf-8", "replace").decode("utf-8"), True
    found: list[str] = []
    total = 0
    for m in _JSON_STRING_RE.finditer(data):
        s = _unescape_json(m.group(1).decode("utf-8", "replace"))
        found.append(s)
        total += len(s) + 1
        if total >= limit:
            break
    return "\n".join(found)[:limit], False
