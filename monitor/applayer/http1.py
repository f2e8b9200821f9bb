"""HTTP/1.0 and 1.1, both directions, sans-IO.

Each direction is a small state machine (start line -> headers -> body -> next message)
over reassembled bytes. Requests and responses are matched in order (pipelining,
keep-alive); 1xx responses are interim. Bodies are de-chunked, content-decoded
(:mod:`monitor.content.codings`) and written into one :class:`~monitor.files.FileObject`
per message body; request forms (multipart, urlencoded, JSON) are decoded with
:mod:`monitor.content.forms`. ``206 Partial Content`` bodies (and ``multipart/byteranges``
parts) are also written at their ``Content-Range`` offsets into one range file per object
(:mod:`monitor.applayer.http_range`).

Hostile framing never desynchronises silently: conflicting or malformed
``Content-Length``/``Transfer-Encoding``, 2^64 chunk sizes, obs-folded headers and the like
become ``http.*`` anomalies and a documented decision:

- ``Transfer-Encoding`` naming ``chunked`` (any position, any case, after unfolding) wins over
  ``Content-Length``; if the first chunk-size line is not a chunk size the body is read as
  identity instead (by ``Content-Length``, else until close).
- A ``Transfer-Encoding`` that does not name chunked, on a body that starts like a chunk, is
  read as chunked (browsers and servers disagree; inspecting the de-chunked form is safer).
- Several different ``Content-Length`` values: the largest is used (inspect more, not less).
- An invalid, negative or overflowing ``Content-Length``: a response is read until close; a
  request is taken as bodiless.
- A chunk size that does not parse or overflows (> 2^62): the rest of the body is read until
  close as identity.
- A response start line that is not ``HTTP/``: an HTTP/0.9-style body until close.

A gap inside a body becomes ``file.gap(n)`` (file TRUNCATED, no hash); a gap inside framing
abandons the message and the direction resynchronises on the next start line.

Cost (``bench/http_bench.py``, ``docs/benchmarks.md`` "HTTP path"): body bytes never pass through
the direction's buffer -- a segment inside a Content-Length body is handed to the body as it is,
and chunk sizes written the usual way (hex digits, CRLF) are parsed where they lie in the segment,
the chunk data of one segment going on as one piece; only a short undecided tail (a size line
cut by the segment end) is carried, and a segment inside an identity body is written to its file
without a call in between. A clean message head at the start of a segment between messages (known
method or final status, single spaces, plain ``Name: value`` CRLF lines, within the header cap) is
parsed in one match straight from the segment (``_clean_heads``), the body behind it taken as
above; any other head goes through the buffer and the state machine. There, a header block is
parsed once it is complete, in one pass when every line is a plain ``Name: value`` CRLF line,
otherwise line by line with every
anomaly above (the same headers either way; a block cut by a gap or the close is read line by
line as far as it goes). A segment inside a chunk's data goes to the body in one call, as one
inside a Content-Length body does.

Memory (issue 6: 100,000 idle connections): the per-flow objects have ``__slots__``, the queue of
requests awaiting a response is a plain list (a deque's first block alone is ~600 bytes), and the
range store is made for the first 206 only (``bench/http_bench.py --memory``).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_to_bytes

from monitor.applayer.base import AppContext, AppParser
from monitor.applayer.http_range import RangePart, RangeStore, parse_content_range
from monitor.content.codings import CodingChain, limits_from_config, parse_content_encoding
from monitor.content.forms import (
    MultipartParser,
    PartInfo,
    boundary_of,
    decode_header_text,
    json_strings,
    parse_params,
    urldecode,
)
from monitor.files import STATE_TRUNCATED, FileObject
from monitor.model import TO_CLIENT, TO_SERVER

METHODS = frozenset({
    "GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE",
    "PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "SEARCH", "REPORT",
    "MKACTIVITY", "CHECKOUT", "MERGE", "SUBSCRIBE", "UNSUBSCRIBE", "NOTIFY", "M-SEARCH", "PURGE",
})
_METHOD_RE = re.compile(rb"[A-Za-z][A-Za-z0-9_-]{1,19}$")
_HEX = b"0123456789abcdefABCDEF"
_MAX_CL = 1 << 62
_JUNK_PREFIX = b" \t\x00\x0b\x0c"
_LOOSE_NAME = re.compile(rb"[^a-z0-9-]")
_STATUS_AFTER_JUNK = re.compile(rb"[\r\n][ \t\x00\x0b\x0c\r\n]*(HTTP/\d)", re.I)
_HEADER_START = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+[ \t]*:")
_TOKEN_JUNK = re.compile(r"[^a-z0-9_-]")
_STATUS_LINE = re.compile(rb"(HTTP/[^\s]*)[\s\x00]*([0-9]+)?(?:[\s\x00]+(.*))?", re.I | re.S)
_TE_SPLIT = re.compile(r"[,;]")
_LOOKS_CHUNKED = re.compile(rb"[ \t\r\n]*[0-9a-fA-F]{1,16}[ \t]*(;[^\n]*)?\r?\n")
_RESYNC_RESPONSE = re.compile(rb"(?:^|\n)(HTTP/1\.[019])", re.I)
_RESYNC_REQUEST = re.compile(rb"(?:^|\n)([A-Z][A-Z-]{2,15} [^\s]+ HTTP/)")
# Headers that go into the EVE http object: (field, request header), and the names looked up.
_REQ_FIELDS = (("http_user_agent", "user-agent"), ("http_refer", "referer"),
               ("request_content_type", "content-type"))
_REQ_WANTED = frozenset({"host", "user-agent", "referer", "content-type"})
_RESP_WANTED = frozenset({"content-type", "location", "content-range"})


def _has(headers: list[tuple[str, str]], name: str) -> bool:
    return any(k == name for k, _ in headers)


def _has_upgrade(buf: bytearray) -> bool:
    """A 101 is a real protocol switch only with an Upgrade header (looked up in its block)."""
    end = buf.find(b"\r\n\r\n")
    block = bytes(buf[: end if end >= 0 else 4096]).lower()
    return b"\nupgrade:" in b"\n" + block


def _status_prefix(head: bytes) -> bool:
    """Could ``head`` (no newline yet) still become a status line?"""
    h = head.lstrip(_JUNK_PREFIX + b"\r")[:5].upper()
    return b"HTTP/".startswith(h) or h.startswith(b"HTTP/")


# What the start of a chunk-size line may look like before its newline arrives.
_CHUNK_PREFIX = re.compile(rb"[ \t\r\x0b\x0c]*(?:[0-9a-fA-F]+[ \t\r]*(?:;.*)?)?$", re.S)
_MAX_LINE_SKIP = 64 << 10  # blank/junk lines tolerated between messages before resyncing
# Request bodies kept for form/JSON decoding (beyond: decoded with what was kept).
FORM_LIMIT_DEFAULT = 8 << 20
_CONNECT_HOLD = 64 << 10  # client bytes held while a CONNECT waits for its answer

# Direction states.
S_LINE, S_HEADERS, S_SKIP_HEADERS, S_BODY_LEN, S_CHUNK_SIZE, S_CHUNK_DATA, S_CHUNK_END, \
    S_TRAILERS, S_BODY_CLOSE, S_TUNNEL, S_HOLD, S_RESYNC, S_DEAD, S_SNIFF = range(14)
_SNIFF_BYTES = 64
# Body states whose bytes are consumed straight from the segment (HttpParser._body_bytes).
_BODY_STATES = frozenset({S_BODY_LEN, S_CHUNK_DATA, S_BODY_CLOSE, S_CHUNK_SIZE, S_CHUNK_END})
# An undecided chunk-framing tail this short is joined to the next segment (one small copy)
# rather than the segment being appended to the buffer.
_TAIL_MAX = 64
# A chunk-size line as (nearly) every server writes it; anything else takes the general path.
_CHUNK_LINE = re.compile(rb"([0-9a-fA-F]{1,15})\r\n")
# The blank line that ends a header block, and a block every line of which is a plain
# "Name: value" CRLF line (parsed in one pass; anything else is parsed line by line).
_HEADER_BLOCK_END = re.compile(rb"\n\r?\n")
_CLEAN_HEADER_BLOCK = re.compile(rb"(?:[A-Za-z0-9-]+:[^\r\n]*\r\n)+")
_LOOSE = "~"  # key prefix of headers whose name was only recognisable after removing junk
# A whole message head as (nearly) every client and server writes it, at the start of a segment:
# an HTTP/1.0 or 1.1 start line of single-space-separated printable ASCII, plain "Name: value"
# CRLF header lines (as _CLEAN_HEADER_BLOCK) and the blank CRLF line. Such a head is parsed in one
# match straight from the segment (HttpParser._clean_heads); anything else -- an unknown method,
# a 1xx status, a URI or reason with other bytes, bare CR/LF line ends, obs-fold, a head cut by the
# segment end, one longer than the header cap -- takes the general state machine, which gives the
# same fields for the heads matched here (tests/monitor/applayer/test_http_head_fastpath.py).
_CLEAN_REQUEST_HEAD = re.compile(
    rb"([A-Z][A-Z-]{2,10}) ([!-~]+) (HTTP/1\.[01])\r\n((?:[A-Za-z0-9-]+:[^\r\n]*\r\n)*)\r\n")
_CLEAN_RESPONSE_HEAD = re.compile(
    rb"(HTTP/1\.[01]) ([2-9][0-9][0-9])(?: ([!-~][ -~]*)?)?\r\n((?:[A-Za-z0-9-]+:[^\r\n]*\r\n)*)\r\n")
# A side's header list between messages (issue 6: no empty list kept per idle side): every start
# line gives the side a fresh list before a header can be appended (_request_line,
# _response_line), so nothing ever appends to this one; a header-less HTTP/0.9 request hands it
# on as its (empty) request headers.
_NO_HEADERS: Any = ()
_LOOSE_TE = _LOOSE + "transfer-encoding"
_LOOSE_CL = _LOOSE + "content-length"
_LOOSE_CE = _LOOSE + "content-encoding"


def _latin(b: bytes) -> str:
    return b.decode("latin-1")


def _text(s: str) -> str:
    """A header value kept as latin-1 (byte-preserving) to display text (UTF-8 when valid)."""
    if s.isascii():
        return s
    return decode_header_text(s.encode("latin-1"))


@dataclass(slots=True)  # one per request: no per-instance dict
class Transaction:
    tx_id: int
    method: str = ""
    uri: str = ""
    protocol: str = ""
    req_headers: list[tuple[str, str]] = field(default_factory=list)
    status: int | None = None
    status_text: str = ""
    resp_protocol: str = ""
    resp_headers: list[tuple[str, str]] = field(default_factory=list)
    request_length: int = 0
    response_length: int = 0
    request_done: bool = False
    response_done: bool = False
    has_request: bool = False
    logged: bool = False
    ts: float = 0.0
    # The request's part of the EVE http object, computed once per request header block.
    req_view: tuple[dict[str, Any], dict[str, Any]] | None = None
    req_view_of: list[tuple[str, str]] | None = None
    # The same for the response's fields: (status it was made for, fields), of resp_view_of.
    resp_view: tuple[int | None, dict[str, Any]] | None = None
    resp_view_of: list[tuple[str, str]] | None = None

    def header(self, name: str, response: bool = False) -> str | None:
        for k, v in (self.resp_headers if response else self.req_headers):
            if k == name:
                return v
        return None


def split_host(host: str) -> tuple[str, int | None]:
    """``example.com:8080`` -> (example.com, 8080); ``[::1]:8000`` -> ([::1], 8000)."""
    host = host.strip()
    if host.startswith("["):
        end = host.find("]")
        if end > 0:
            rest = host[end + 1:]
            port = int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() and len(rest) < 8 else None
            return host[: end + 1], port
        return host, None
    name, sep, digits = host.rpartition(":")
    if sep and digits.isdigit() and len(digits) < 6 and ":" not in name:
        return name, int(digits)
    return host, None


def _is_ip_literal(name: str) -> bool:
    if not name[-1:].isdigit() and not name.endswith("]") and ":" not in name:
        return False  # a host name (an address ends in a digit, "]" or has colons): no exception
    try:
        ipaddress.ip_address(name.strip("[]"))
        return True
    except ValueError:
        return False


class _Body:
    """One message body: de-chunked bytes -> content decoding -> file + form decoders."""

    __slots__ = ("p", "tx", "direction", "name", "file", "raw_len", "decoded_len", "limited", "chain",
                 "content_type", "media", "charset", "form_kind", "form_buf", "form_cap", "multipart",
                 "codings", "range_part", "source", "plain")

    def __init__(self, parser: HttpParser, tx: Transaction, direction: int,
                 headers: list[tuple[str, str]], name: str) -> None:
        self.p = parser
        self.tx = tx
        self.direction = direction
        self.name = name
        self.file: FileObject | None = None
        self.raw_len = 0
        self.decoded_len = 0
        self.limited = False
        ctx = parser.ctx
        # One pass over the headers: the codings (exact name, else the loose form) and the type.
        ce: list[str] = []
        loose_ce: list[str] = []
        ctype: str | None = None
        for k, v in headers:
            if k == "content-encoding":
                ce.append(v)
            elif k == "content-type":
                if ctype is None:
                    ctype = v
            elif k == _LOOSE_CE:
                loose_ce.append(v)
        if not ce and loose_ce:
            ce = loose_ce
            parser.anomaly("http.content_encoding_obfuscated", direction, tx.tx_id)
        codings = parse_content_encoding(ce) if ce else []
        if ce and not codings and any(_TOKEN_JUNK.sub("", v.lower()) != "identity" for v in ce):
            codings = ["?"]  # a coding header with an unreadable value: let the body decide
        self.chain = CodingChain(codings, limits_from_config(ctx.config), ctx.stats) if codings else None
        self.content_type = _text(ctype) if ctype else None
        media, params = parse_params(self.content_type or "")
        self.media = media
        self.charset = params.get("charset")
        self.form_kind: str | None = None
        self.form_buf = bytearray()
        self.form_cap = False
        self.multipart: MultipartParser | None = None
        self.codings = codings
        self.range_part: RangePart | None = None
        request = direction == TO_SERVER
        if request and media == "multipart/form-data":
            boundary = boundary_of(self.content_type or "")
            if boundary:
                self.multipart = MultipartParser(boundary, self._open_part, stats=ctx.stats)
            else:
                parser.anomaly("http.multipart_no_boundary", direction, tx.tx_id)
        elif not request and tx.status == 206:
            self._open_range(headers, media)
        elif request and media == "application/x-www-form-urlencoded":
            self.form_kind = "form"
        elif media == "application/json" or media.endswith("+json"):
            self.form_kind = "json"
        self.source = "http.request.body" if request else "http.response.body"
        # Nothing but the file sees the bytes (no coding, range, multipart or form decoder).
        self.plain = (self.chain is None and self.range_part is None and self.multipart is None
                      and self.form_kind is None)

    # -- 206 ranges (monitor/applayer/http_range.py)

    def _open_range(self, headers: list[tuple[str, str]], media: str) -> None:
        if media == "multipart/byteranges":
            boundary = boundary_of(self.content_type or "")
            if boundary:
                self.multipart = MultipartParser(boundary, self._open_range_part, stats=self.p.ctx.stats)
            else:
                self.p.anomaly("http.multipart_no_boundary", self.direction, self.tx.tx_id)
            return
        value = next((v for k, v in headers if k == "content-range"), None)
        if value is None:
            return
        self.range_part = self._range_writer(value, self.codings, self.media or None)

    def _range_writer(self, value: str, codings: list[str], declared_type: str | None) -> RangePart | None:
        cr = parse_content_range(_text(value))
        if cr is None:
            self.p.anomaly("http.content_range_invalid", self.direction, self.tx.tx_id)
            return None
        tx = self.tx
        validator = tx.header("etag", True) or tx.header("last-modified", True) or ""
        return self.p.ranges.part(
            cr, host=(tx.header("host") or "").lower(), url=tx.uri, validator=validator, name=self.name,
            codings=codings, declared_type=declared_type, tx_id=tx.tx_id,
            app={"http": self.p.http_object(tx)})

    def _open_range_part(self, info: PartInfo) -> _RangeSink:
        value = next((v for k, v in info.headers if k == "content-range"), None)
        media, _ = parse_params(info.content_type or "")
        writer = self._range_writer(value, [], media or None) if value is not None else None
        return _RangeSink(writer)

    # -- file

    def _ensure_file(self) -> FileObject:
        if self.file is None:
            app = {"http": self.p.http_object(self.tx)}
            self.file = self.p.ctx.open_file(
                self.direction, name=self.name, source=self.source, protocol="http",
                tx_id=self.tx.tx_id, declared_type=self.media or None, charset=self.charset, app=app)
        return self.file

    def data(self, raw: bytes) -> None:
        n = len(raw)
        if not n:
            return
        self.raw_len += n
        f = self.file
        if f is not None and self.plain and self.decoded_len + n <= self.p.body_limit:
            # Identity body into its open file (the common case): one call, no copy.
            self.decoded_len += n
            f.write(raw)
            return
        if self.range_part is not None:
            self.range_part.write(raw)
        out = self.chain.decode(raw) if self.chain is not None else raw
        self._decoded(out)

    def _decoded(self, out: bytes) -> None:
        if not out or self.limited:
            return
        limit = self.p.body_limit
        if self.decoded_len + len(out) > limit:
            out = out[: max(0, limit - self.decoded_len)]
            self.limited = True
            self.p.ctx.stats.incr("http.body_limit")
            self.p.anomaly("http.body_limit", self.direction, self.tx.tx_id)
        if not out:
            return
        f = self.file if self.file is not None else self._ensure_file()
        self.decoded_len += len(out)
        f.write(out)
        if self.multipart is not None:
            self.multipart.feed(out)
        elif self.form_kind is not None and not self.form_cap:
            room = self.p.form_limit - len(self.form_buf)
            if len(out) > room:
                self.form_cap = True
                self.p.ctx.stats.incr("http.form_limit")
                out = out[:room]
            self.form_buf += out

    def gap(self, length: int) -> None:
        self.raw_len += length
        if self.range_part is not None:
            self.range_part.gap(length)
        if self.chain is not None:
            self.chain.gap()
        f = self._ensure_file()
        f.gap(length)
        if self.multipart is not None:
            self.multipart.gap(length)
        self.form_cap = True  # a form with a hole is not decoded further

    def end(self, complete: bool) -> None:
        if self.chain is not None:
            self._decoded(self.chain.flush())
            for problem in self.chain.problems:
                self.p.anomaly(f"http.content_encoding.{problem}", self.direction, self.tx.tx_id)
        if self.multipart is not None:
            self.multipart.close()
            for problem in self.multipart.problems:
                self.p.anomaly(f"http.multipart.{problem}", self.direction, self.tx.tx_id)
        if self.form_buf:
            self._inspect_form()
        if self.file is not None:
            truncated = not complete or self.limited or (self.chain is not None and self.chain.capped)
            self.file.close(STATE_TRUNCATED if truncated else None)

    def _inspect_form(self) -> None:
        ctx = self.p.ctx
        data = bytes(self.form_buf)
        self.form_buf = bytearray()
        if self.form_kind == "form":
            ctx.inspect(urldecode(data), where=f"{self.source} > form", direction=self.direction,
                        tx_id=self.tx.tx_id, file=self.file, charset=self.charset)
        elif self.form_kind == "json":
            text, ok = json_strings(data, ctx.config.content.max_text)
            if not ok:
                self.p.anomaly("http.json_malformed", self.direction, self.tx.tx_id)
            if text:
                ctx.inspect(text.encode("utf-8", "replace"), where=f"{self.source} > json",
                            direction=self.direction, tx_id=self.tx.tx_id, file=self.file, charset="utf-8")

    # -- multipart parts

    def _open_part(self, info: PartInfo) -> _Part:
        parent = self._ensure_file()
        label = f"name={info.name}"
        if info.filename is not None:
            label += f",file={info.filename}"
        media, params = parse_params(info.content_type or "")
        f = self.p.ctx.open_file(
            self.direction, name=info.filename or "", protocol="http", tx_id=self.tx.tx_id,
            source=f"{self.source} > multipart[{label}]", declared_type=media or None,
            charset=params.get("charset"), app={"http": self.p.http_object(self.tx)}, parent=parent)
        return _Part(f)


class _RangeSink:
    """A multipart/byteranges part: its bytes go to the range file only (the response body
    file already holds them once)."""

    def __init__(self, writer: RangePart | None) -> None:
        self.writer = writer

    def write(self, data: bytes) -> None:
        if self.writer is not None:
            self.writer.write(data)

    def gap(self, length: int) -> None:
        if self.writer is not None:
            self.writer.gap(length)

    def end(self, complete: bool) -> None:
        if self.writer is not None:
            self.writer.end(complete)


class _Part:
    def __init__(self, f: FileObject) -> None:
        self.f = f
        self.write = f.write  # part bytes go straight to the file (no call in between)

    def gap(self, length: int) -> None:
        self.f.gap(length)

    def end(self, complete: bool) -> None:
        self.f.close(None if complete else STATE_TRUNCATED)


class _Direction:
    """Parsing state of one direction."""

    __slots__ = (
        "direction", "buf", "state", "tx", "headers", "header_bytes", "remaining", "body", "chunks",
        "chunked_fallback_len", "chunk_hint", "nocolon", "line_by_line", "block_scanned",
        "sniff_mode", "junk", "status", "pending", "pending_extra", "pending_lazy",
    )

    def __init__(self, direction: int) -> None:
        self.direction = direction
        self.buf = bytearray()
        self.state = S_LINE
        self.tx: Transaction | None = None
        self.headers: list[tuple[str, str]] = _NO_HEADERS
        self.header_bytes = 0
        self.remaining = 0
        self.body: _Body | None = None
        self.chunks = 0
        self.chunked_fallback_len: int | None = None
        self.chunk_hint = False  # "chunk" appeared somewhere in the header block
        self.nocolon = False  # the last header line had no colon
        self.line_by_line = False  # this header block is parsed line by line (not plain, or final)
        self.block_scanned = 0  # bytes of the buffer searched for the block's end so far
        self.sniff_mode: tuple[str, int] = ("close", -1)
        self.junk = 0
        self.status = 0
        # A complete response body kept open for stray bytes that follow it (see _start_line).
        self.pending: _Body | None = None
        self.pending_extra = 0
        # A bodiless response (1xx, 204, 304, HEAD) whose stray bytes would become its body.
        self.pending_lazy: tuple[Transaction, list[tuple[str, str]]] | None = None


class HttpParser:
    """HTTP/1.x parser for one TCP connection."""

    name = "http"
    # Per-flow state is kept small (issue 6: 100,000 idle flows): no per-instance dict, no deque
    # (its first block alone is ~600 bytes), the range store made on the first 206.
    __slots__ = ("ctx", "max_header", "body_limit", "form_limit", "sides", "awaiting", "_awaiting_head",
                 "open_txs", "next_tx", "tunnel", "ts", "_ranges")

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        cfg = ctx.config.app_layer.http
        self.max_header = cfg.max_header_size
        self.body_limit = cfg.body_limit
        self.form_limit = min(FORM_LIMIT_DEFAULT, ctx.config.content.max_text)
        self.sides = (_Direction(TO_SERVER), _Direction(TO_CLIENT))
        # Requests whose response has not started: awaiting[_awaiting_head:] (see _pop_awaiting).
        self.awaiting: list[Transaction] = []
        self._awaiting_head = 0
        self.open_txs: list[Transaction] = []
        self.next_tx = 0
        self.tunnel: AppParser | None = None
        self.ts = 0.0
        self._ranges: RangeStore | None = None

    @property
    def ranges(self) -> RangeStore:
        """The connection's range files (made on first use: most connections have no 206)."""
        if self._ranges is None:
            self._ranges = RangeStore(self.ctx)
        return self._ranges

    def _pop_awaiting(self) -> Transaction:
        """The oldest awaiting request, taken off in O(1): the list is compacted when it empties
        or its consumed head grows (a deque costs ~600 bytes per idle connection)."""
        aw = self.awaiting
        tx = aw[self._awaiting_head]
        self._awaiting_head += 1
        if self._awaiting_head == len(aw):
            aw.clear()
            self._awaiting_head = 0
        elif self._awaiting_head >= 64 and self._awaiting_head * 2 >= len(aw):
            del aw[: self._awaiting_head]
            self._awaiting_head = 0
        return tx

    # ---------------------------------------------------------------- AppParser

    def feed(self, direction: int, data: bytes, ts: float) -> None:
        self.ts = ts
        side = self.sides[direction]
        body = side.body
        pos = 0  # data before pos is consumed by the fast paths below
        if body is not None and side.state in _BODY_STATES and data:
            # Fast path: body bytes (and plain chunk framing) are taken from the segment itself,
            # without passing through the buffer; only what is left goes the general way.
            st = side.state
            n = len(data)
            if (st == S_BODY_LEN or st == S_CHUNK_DATA) and side.remaining > n and not side.buf:
                # The bulk of a Content-Length body or of a chunk: the segment as it is, one
                # call (the chunk's end, and what follows it, is further on).
                side.remaining -= n
                f = body.file
                if f is not None and body.plain and body.decoded_len + n <= self.body_limit:
                    # _Body.data's identity branch, inlined (one call less per segment).
                    body.raw_len += n
                    body.decoded_len += n
                    f.write(data)
                else:
                    body.data(data)
                return
            buf = side.buf
            if buf:
                if len(buf) > _TAIL_MAX:
                    buf += data
                    self._run(side)
                    return
                data = bytes(buf) + data
                buf.clear()
            pos = self._body_bytes(side, data, 0)
            if pos == len(data):
                return
        if side.state == S_LINE and not side.buf and data:
            # Fast path: clean heads (and the bodies behind them) straight from the segment.
            pos = self._clean_heads(side, data, pos)
            if pos == len(data):
                return
        if pos:
            data = data[pos:]  # what the general path takes over
        if side.state == S_DEAD or not data:
            return
        if side.state == S_TUNNEL:
            self._tunnel_feed(direction, data, ts)
            return
        side.buf += data
        if side.state == S_HOLD:
            if len(side.buf) > _CONNECT_HOLD:
                # No answer to CONNECT yet and the client keeps talking: parse it as HTTP.
                side.state = S_LINE
                self.anomaly("http.connect_unanswered", direction, None)
            else:
                return
        self._run(side)

    def _clean_heads(self, side: _Direction, data: bytes, pos: int) -> int:
        """Clean message heads in ``data`` from ``pos`` on (see ``_CLEAN_REQUEST_HEAD``), each
        parsed in one match, and the body bytes behind each taken as :meth:`feed` takes them.
        Called with an empty buffer between messages. Returns where the general path takes
        over: at the first head that is not clean (or not whole), or after a head whose
        framing the body fast path does not take (sniffing, a tunnel); ``len(data)`` when
        nothing is left. Positions, not slices: the rest of a 64 KiB stream chunk is not
        copied once per message."""
        request = side.direction == TO_SERVER
        if request and (side.pending is not None or side.pending_lazy is not None):
            return pos  # (only a response side keeps a body open; never the case here)
        pattern = _CLEAN_REQUEST_HEAD if request else _CLEAN_RESPONSE_HEAD
        size = len(data)
        while True:
            m = pattern.match(data, pos)
            end = m.end() if m is not None else 0
            # The general path's cap: start line + header block, CRLF of the start line excluded.
            if m is None or end - pos - 2 > self.max_header:
                return pos
            if request:
                method = m.group(1).decode("ascii")
                if method not in METHODS:
                    return pos  # (anomaly and junk handling: the general path)
                self._clean_request(side, method, m.group(2), m.group(3))
            else:
                if side.pending is not None or side.pending_lazy is not None:
                    # The status line ends the previous response (as _stray_response_bytes).
                    self._finish_pending(side)
                self._clean_response(side, m.group(1), int(m.group(2)), m.group(3))
            self._clean_header_block(side, m.group(4), end - pos)
            pos = end
            if pos == size:
                return pos
            st = side.state
            if st == S_LINE:
                continue
            if st == S_HOLD:
                # CONNECT: the client's bytes wait in the buffer for the answer (unchecked
                # against _CONNECT_HOLD until the next segment, as the general path).
                side.buf += memoryview(data)[pos:]
                return size
            if side.body is None or st not in _BODY_STATES:
                return pos
            pos = self._body_bytes(side, data, pos)
            if pos == size or side.state != S_LINE or side.buf:
                return pos

    def _clean_request(self, side: _Direction, method: str, uri: bytes, protocol: bytes) -> None:
        """:meth:`_request_line` for a clean request line (known method, three parts)."""
        self._finish_pending(self.sides[TO_CLIENT])
        tx = self._new_tx()
        tx.has_request = True
        tx.method = method
        tx.uri = uri.decode("ascii")
        tx.protocol = protocol.decode("ascii")
        side.tx = tx
        self.awaiting.append(tx)
        side.junk = 0

    def _clean_response(self, side: _Direction, protocol: bytes, code: int, reason: bytes | None) -> None:
        """:meth:`_response_line` for a clean status line (a final status, 200-999)."""
        tx = self._response_tx()
        side.tx = tx
        side.status = code
        tx.status = code
        tx.resp_protocol = protocol.decode("ascii")
        tx.status_text = reason.decode("ascii") if reason else ""

    def _clean_header_block(self, side: _Direction, block: bytes, head_len: int) -> None:
        """:meth:`_header_block` for the header lines of a clean head (``block``: every line
        with its CRLF, the blank line excluded), then the message is framed."""
        side.header_bytes = head_len - 2
        side.line_by_line = False
        side.block_scanned = 0
        side.nocolon = False
        headers: list[tuple[str, str]] = []
        if block:
            text = block[:-2].decode("latin-1")
            if "chunk" in text.lower():
                side.chunk_hint = True
            for line in text.split("\r\n"):
                name, _, value = line.partition(":")
                headers.append((name.lower(), value.strip(" \t")))
        side.headers = headers
        self._headers_done(side)

    def _body_bytes(self, side: _Direction, data: bytes, pos: int) -> int:
        """Consume body bytes (and plain chunk framing) straight from ``data`` at ``pos``: whole
        slices, no copies through the buffer. Returns where the general state machine takes
        over -- the next message, or framing the chunk loop does not decide."""
        body = side.body
        assert body is not None
        st = side.state
        size = len(data)
        if st == S_BODY_LEN:
            n = side.remaining
            if n > size - pos:
                body.data(data[pos:] if pos else data)
                side.remaining = n - (size - pos)
                return size
            body.data(data if pos == 0 and n == size else data[pos:pos + n])
            side.remaining = 0
            self._end_message(side, complete=True)
            return pos + n
        if st == S_BODY_CLOSE:
            body.data(data[pos:] if pos else data)
            return size
        return self._chunked_bytes(side, body, data, pos)

    def _chunked_bytes(self, side: _Direction, body: _Body, data: bytes, pos: int) -> int:
        """Chunk sizes as servers write them (hex digits, CRLF) and chunk data, within one
        segment from ``pos``; the data of all chunks in the segment is handed on as one piece.
        Anything else (the last chunk and trailers, extensions, odd line ends) is left to the
        general path (the position it starts at is returned)."""
        pieces: list[bytes] = []
        end = len(data)
        while pos < end:
            st = side.state
            if st == S_CHUNK_DATA:
                n = side.remaining
                if n >= end - pos:
                    pieces.append(data[pos:] if pos else data)
                    side.remaining = n - (end - pos)
                    pos = end
                    if side.remaining == 0:
                        side.state = S_CHUNK_END
                    break
                pieces.append(data[pos:pos + n])
                pos += n
                side.remaining = 0
                side.state = S_CHUNK_END
            elif st == S_CHUNK_END:
                if data[pos:pos + 2] != b"\r\n":
                    break
                pos += 2
                side.state = S_CHUNK_SIZE
            elif st == S_CHUNK_SIZE:
                m = _CHUNK_LINE.match(data, pos)
                if m is None:
                    break
                size = int(m.group(1), 16)
                if size == 0:
                    break  # the last chunk and trailers: the general path
                pos = m.end()
                side.chunks += 1
                side.remaining = size
                side.state = S_CHUNK_DATA
            else:
                break
        if pieces:
            body.data(pieces[0] if len(pieces) == 1 else b"".join(pieces))
        return pos

    def gap(self, direction: int, length: int, ts: float) -> None:
        self.ts = ts
        side = self.sides[direction]
        if length <= 0 or side.state == S_DEAD:
            return
        if side.state == S_TUNNEL:
            if self.tunnel is not None:
                self.tunnel.gap(direction, length, ts)
            return
        # Bytes already buffered come before the hole (a header block is read as far as it goes).
        side.line_by_line = True
        self._run(side)
        self._finish_pending(side)
        st = side.state
        if st in (S_BODY_LEN, S_CHUNK_DATA) and not side.buf and side.body is not None:
            take = min(length, side.remaining)
            side.body.gap(take)
            side.remaining -= take
            length -= take
            if side.remaining == 0:
                if st == S_BODY_LEN:
                    self._end_message(side, complete=True)
                else:
                    side.state = S_CHUNK_END
            if length == 0:
                return
            if st == S_CHUNK_DATA or side.state != S_LINE:
                self._abandon(side, "http.gap_in_framing")
                return
        elif st == S_BODY_CLOSE and side.body is not None:
            side.body.data(bytes(side.buf))
            side.buf.clear()
            side.body.gap(length)
            return
        if st == S_LINE and not side.buf and side.tx is None:
            # A hole between messages: the next message start is unknown.
            side.state = S_RESYNC
            return
        if st not in (S_LINE,) or side.buf:
            self._abandon(side, "http.gap_in_framing")

    def close(self, ts: float) -> None:
        self.ts = ts
        for side in self.sides:
            if side.state == S_TUNNEL or side.state == S_DEAD:
                continue
            side.line_by_line = True  # a header block cut by the close is read as far as it goes
            self._run(side)
            if side.state == S_SNIFF:
                self._sniff(side, final=True)
                self._run(side)
            if side.state == S_CHUNK_SIZE and side.chunks == 0 and side.buf and side.body is not None:
                self._chunk_invalid(side, "http.invalid_chunk_size")
                self._run(side)
            if side.state == S_BODY_CLOSE and side.body is not None:
                side.body.data(bytes(side.buf))
                side.buf.clear()
                self._end_message(side, complete=True)
            elif side.state in (S_BODY_LEN, S_CHUNK_SIZE, S_CHUNK_DATA, S_CHUNK_END, S_TRAILERS):
                if side.state == S_TRAILERS:
                    self._end_message(side, complete=True)  # last chunk seen, trailers cut
                else:
                    self.anomaly("http.body_truncated", side.direction, side.tx.tx_id if side.tx else None)
                    self._end_message(side, complete=False)
            elif side.state in (S_HEADERS, S_SKIP_HEADERS) and side.tx is not None:
                # The header block never ended: what is left after the last full line is
                # taken as the body (the peer saw it; so must detection).
                self.anomaly("http.headers_truncated", side.direction, side.tx.tx_id)
                leftover = bytes(side.buf)
                side.buf.clear()
                self._headers_done(side)
                if side.body is not None:
                    side.body.data(leftover)
                    self._end_message(side, complete=side.state == S_BODY_CLOSE)
                elif leftover and side.tx is not None:
                    body = _Body(self, side.tx, side.direction, [], self._file_name(side.tx, []))
                    body.data(leftover)
                    body.end(False)
        for side in self.sides:
            self._finish_pending(side)
        if self._ranges is not None:
            self._ranges.close()
        if self.tunnel is not None:
            self.tunnel.close(ts)
        for tx in list(self.open_txs):
            self._log(tx)

    # ---------------------------------------------------------------- helpers

    def anomaly(self, kind: str, direction: int | None, tx_id: int | None) -> None:
        self.ctx.anomaly(kind, direction=direction, tx_id=tx_id)

    def _run(self, side: _Direction) -> None:
        steps = 0
        while side.buf and steps < 100000:
            steps += 1
            if not self._step(side):
                break

    def _abandon(self, side: _Direction, kind: str) -> None:
        tx_id = side.tx.tx_id if side.tx else None
        self.anomaly(kind, side.direction, tx_id)
        if side.body is not None:
            side.body.end(False)
            side.body = None
        if side.tx is not None:
            self._message_finished(side)
        side.buf.clear()
        side.state = S_RESYNC

    def _line(self, side: _Direction) -> bytes | None:
        """Next line without its terminator (LF, CRLF), or None if incomplete."""
        buf = side.buf
        nl = buf.find(b"\n")
        if nl < 0:
            return None
        end = nl - 1 if nl > 0 and buf[nl - 1] == 0x0D else nl
        line = bytes(buf[:end])
        del buf[: nl + 1]
        return line

    # ---------------------------------------------------------------- state machine

    def _step(self, side: _Direction) -> bool:
        st = side.state
        if st == S_LINE:
            return self._start_line(side)
        if st == S_HEADERS:
            return self._header_line(side)
        if st == S_SKIP_HEADERS:
            return self._skip_headers(side)
        if st == S_BODY_LEN:
            n = min(side.remaining, len(side.buf))
            if side.body is not None:
                side.body.data(bytes(side.buf[:n]))
            del side.buf[:n]
            side.remaining -= n
            if side.remaining == 0:
                self._end_message(side, complete=True)
            return True
        if st == S_BODY_CLOSE:
            if side.body is not None:
                side.body.data(bytes(side.buf))
            side.buf.clear()
            return False
        if st == S_SNIFF:
            return self._sniff(side, final=False)
        if st == S_CHUNK_SIZE:
            return self._chunk_size(side)
        if st == S_CHUNK_DATA:
            n = min(side.remaining, len(side.buf))
            if side.body is not None:
                side.body.data(bytes(side.buf[:n]))
            del side.buf[:n]
            side.remaining -= n
            if side.remaining == 0:
                side.state = S_CHUNK_END
            return True
        if st == S_CHUNK_END:
            return self._chunk_end(side)
        if st == S_TRAILERS:
            return self._trailer_line(side)
        if st == S_RESYNC:
            return self._resync(side)
        if st == S_TUNNEL:
            data = bytes(side.buf)
            side.buf.clear()
            self._tunnel_feed(side.direction, data, self.ts)
            return False
        return False

    # -- start lines

    def _finish_pending(self, side: _Direction) -> None:
        side.pending_lazy = None
        if side.pending is not None:
            body, side.pending = side.pending, None
            body.end(True)

    def _stray_response_bytes(self, side: _Direction) -> bool:
        """Append bytes before the next status line to the last response body."""
        buf = side.buf
        at = buf.find(b"HTTP/")
        if at == 0:
            self._finish_pending(side)
            return True
        if at > 0:
            line_start = buf.rfind(b"\n", 0, at)
            prefix = buf[line_start + 1:at] if line_start >= 0 else buf[:at]
            if prefix.strip(b" \t\r"):
                at = -1  # "HTTP/" inside a line: not a status line
        take = at if at > 0 else len(buf)
        if at < 0:
            # Keep a possible partial "HTTP/" at the end for the next segment.
            for k in range(min(4, len(buf)), 0, -1):
                if b"HTTP/".startswith(bytes(buf[-k:])):
                    take = len(buf) - k
                    break
        if side.pending_extra + take > self.max_header and side.pending_lazy is None:
            self._finish_pending(side)
            return True
        if take:
            chunk = bytes(buf[:take])
            body = side.pending
            if body is None and side.pending_lazy is not None and chunk.strip():
                # A response that may not carry a body (1xx, 204, 304, HEAD) did: frame it by
                # its headers as if it could, and inspect it as its body.
                tx, headers = side.pending_lazy
                side.pending_lazy = None
                self.anomaly("http.response_body_unexpected", TO_CLIENT, tx.tx_id)
                while buf[:1] in (b"\r", b"\n"):
                    del buf[:1]
                self._frame_body(side, tx, headers, force=True)
                return True
            if body is not None and chunk.strip():
                self.anomaly("http.response_body_unexpected", TO_CLIENT, body.tx.tx_id)
            if body is not None:
                if body.file is None or body.chain is not None:
                    body.data(chunk)
                else:
                    body.file.write(chunk)
            side.pending_extra += take
            del buf[:take]
        if at >= 0 and buf:
            self._finish_pending(side)
            return True
        return False

    def _skip_status_junk(self, side: _Direction) -> None:
        """Junk lines before a status line (" \\n", "SIP/2.0 200 ok\\n") are skipped."""
        if side.buf[:5] == b"HTTP/":
            return  # the usual case: nothing to skip
        head = bytes(side.buf[:256])
        n = len(head) - len(head.lstrip(_JUNK_PREFIX + b"\r\n"))
        if head[n:n + 5].upper() == b"HTTP/":
            if head[:n].strip(b"\r\n"):
                self.anomaly("http.status_line_junk", TO_CLIENT, None)
            del side.buf[:n]
            return
        if not head.strip(b"\r\n"):
            return
        m = _STATUS_AFTER_JUNK.search(head)
        if m is not None:
            self.anomaly("http.status_line_junk", TO_CLIENT, None)
            del side.buf[: m.start(1)]

    def _start_line(self, side: _Direction) -> bool:
        buf = side.buf
        if side.pending is not None or side.pending_lazy is not None:
            return self._stray_response_bytes(side)
        if side.direction == TO_CLIENT:
            self._skip_status_junk(side)
        # Blank lines between messages are tolerated (RFC 9112 2.2).
        while buf[:2] == b"\r\n" or buf[:1] == b"\n":
            del buf[: 2 if buf[:1] == b"\r" else 1]
        if not buf:
            return False
        if buf.find(b"\n") < 0:
            if side.direction == TO_CLIENT and not _status_prefix(bytes(buf[:32])):
                # Cannot become a status line: an HTTP/0.9-style response, body until close.
                line = bytes(buf)
                buf.clear()
                return self._response_line(side, line, newline=False)
            if len(buf) > self.max_header:
                self._header_cap(side)
                self._abandon(side, "http.start_line_too_long")
                return True
            return False
        start = self._line(side)
        assert start is not None
        if side.direction == TO_SERVER:
            return self._request_line(side, start)
        return self._response_line(side, start)

    def _request_line(self, side: _Direction, line: bytes) -> bool:
        parts = line.split()
        if len(parts) >= 2 and _METHOD_RE.match(parts[0]):
            method = _latin(parts[0])
            if method.upper() not in METHODS and not (len(parts) == 3 and parts[2].upper().startswith(b"HTTP/")):
                return self._junk(side, "http.request_line_invalid")
            if method not in METHODS:
                self.anomaly("http.method_unknown", TO_SERVER, None)
            self._finish_pending(self.sides[TO_CLIENT])
            tx = self._new_tx()
            tx.has_request = True
            tx.method = method
            tx.uri = _latin(parts[1])
            tx.protocol = _latin(parts[2]) if len(parts) >= 3 else "HTTP/0.9"
            if len(parts) > 3:
                self.anomaly("http.request_line_extra", TO_SERVER, tx.tx_id)
            side.tx = tx
            self.awaiting.append(tx)
            side.junk = 0
            if len(parts) == 2:
                # HTTP/0.9 simple request: no headers, no body.
                self._headers_done(side)
                return True
            side.headers = []
            side.header_bytes = len(line)
            side.line_by_line = False
            side.block_scanned = 0
            side.state = S_HEADERS
            return True
        return self._junk(side, "http.request_line_invalid")

    def _junk(self, side: _Direction, kind: str) -> bool:
        side.junk += 1
        if side.junk == 1:
            self.anomaly(kind, side.direction, None)
        if side.junk > 1000:
            side.state = S_DEAD
            side.buf.clear()
            self.ctx.stats.incr("http.gave_up")
            return False
        side.state = S_RESYNC
        return True

    def _response_line(self, side: _Direction, line: bytes, newline: bool = True) -> bool:
        rest: list[bytes] = []
        if b"\r" in line:
            # A bare CR ends the status line for some clients; the rest are header lines.
            line, *rest = line.split(b"\r")
            self.anomaly("http.header_bare_cr", TO_CLIENT, None)
        stripped = line.lstrip(_JUNK_PREFIX)
        if stripped is not line and stripped[:5].upper() == b"HTTP/" and len(line) - len(stripped) > 0:
            self.anomaly("http.status_line_junk_prefix", TO_CLIENT, None)
        if not stripped[:5].upper() == b"HTTP/":
            # Not a status line: browsers fall back to HTTP/0.9 (the whole rest is the body).
            tx = self._response_tx()
            self.anomaly("http.response_line_invalid", TO_CLIENT, tx.tx_id)
            tx.status = None
            tx.resp_protocol = "HTTP/0.9"
            side.tx = tx
            side.body = _Body(self, tx, TO_CLIENT, [], self._file_name(tx, []))
            original = b"\r".join([line, *rest])
            side.body.data(original + (b"\n" if newline else b""))
            side.state = S_BODY_CLOSE
            return True
        m = _STATUS_LINE.match(stripped)
        proto = _latin(m.group(1)) if m else "HTTP/?"
        code = int(m.group(2)) if m and m.group(2) and len(m.group(2)) == 3 else None
        if code is not None and code < 100:
            code = None  # "000": no status class
        valid = code is not None
        if code is None:
            # A status that is not three digits 100-999: framed as a plain body-bearing response
            # (200), but no status is reported for it.
            code = 200
            self.anomaly("http.status_invalid", TO_CLIENT, None)
        interim = 100 <= code < 200 and code != 101
        if code == 101 and not _has_upgrade(side.buf):
            interim = True
        tx = self._response_tx(peek=interim)
        side.tx = tx
        side.status = code
        if not interim:
            tx.status = code if valid else None
            tx.resp_protocol = proto
            tx.status_text = _latin(m.group(3) or b"") if m else ""
        side.headers = []
        side.header_bytes = len(line)
        side.line_by_line = False
        side.block_scanned = 0
        side.state = S_HEADERS
        for piece in rest:
            if piece.strip(b" \t"):
                self._header_field(side, piece)
        return True

    def _response_tx(self, peek: bool = False) -> Transaction:
        if self._awaiting_head < len(self.awaiting):
            return self.awaiting[self._awaiting_head] if peek else self._pop_awaiting()
        tx = self._new_tx()
        self.anomaly("http.response_without_request", TO_CLIENT, tx.tx_id)
        if peek:
            self.awaiting.append(tx)
        return tx

    def _new_tx(self) -> Transaction:
        tx = Transaction(tx_id=self.next_tx, ts=self.ts)
        self.next_tx += 1
        self.open_txs.append(tx)
        if len(self.open_txs) > 1000:
            # Unanswered pipelined requests: log the oldest rather than grow without bound.
            self.ctx.stats.incr("http.tx_cap")
            self._log(self.open_txs[0])
        return tx

    # -- headers

    def _header_cap(self, side: _Direction) -> None:
        self.ctx.stats.incr("http.header_cap")
        self.anomaly("http.header_too_long", side.direction, side.tx.tx_id if side.tx else None)

    def _header_line(self, side: _Direction) -> bool:
        buf = side.buf
        if not side.line_by_line and buf[:1] not in (b"\r", b"\n"):
            # Wait for the whole block and, when every line is a plain "Name: value" line, parse
            # it in one pass; otherwise (and at close or a gap) line by line below.
            m = _HEADER_BLOCK_END.search(buf, max(0, side.block_scanned - 2))
            if m is None:
                side.block_scanned = len(buf)
                if side.header_bytes + len(buf) <= self.max_header:
                    return False
            elif (side.header_bytes + m.end() <= self.max_header
                  and _CLEAN_HEADER_BLOCK.fullmatch(buf, 0, m.start() + 1)):
                self._header_block(side, m.start() - 1, m.end())
                return True
            side.line_by_line = True  # not plain: do not search this block again
        nl = buf.find(b"\n")
        if nl < 0:
            if side.header_bytes + len(buf) > self.max_header:
                self._header_cap(side)
                side.state = S_SKIP_HEADERS
                return True
            return False
        line = self._line(side)
        assert line is not None
        side.header_bytes += len(line) + 2
        if not line:
            self._headers_done(side)
            return True
        if not line.strip(b" \t\r"):
            # A whitespace-only line ("\r\r\n", " \n") ends the headers for some clients and
            # is folded or ignored by others. Decide by what follows: a header line, a folded
            # line or the empty line -> keep reading headers; anything else -> body.
            nxt = bytes(side.buf[:256])
            if _HEADER_START.match(nxt) or nxt[:1] in (b" ", b"\t", b"\n") or nxt[:2] == b"\r\n":
                self.anomaly("http.header_whitespace_line", side.direction, side.tx.tx_id if side.tx else None)
                return True
            self.anomaly("http.header_end_whitespace", side.direction, side.tx.tx_id if side.tx else None)
            self._headers_done(side)
            return True
        if b"\r" in line:
            # A bare CR ends a header line for some clients: parse each piece.
            self.anomaly("http.header_bare_cr", side.direction, side.tx.tx_id if side.tx else None)
            pieces = line.split(b"\r")
            for piece in pieces[:-1]:
                if piece:
                    self._header_field(side, piece)
            line = pieces[-1]
            if not line:
                return True
        return self._header_field(side, line)

    def _header_block(self, side: _Direction, text_end: int, block_end: int) -> None:
        """A header block of plain ``Name: value`` CRLF lines (checked by the caller): the
        same headers, in one pass, that :meth:`_header_field` would give line by line."""
        buf = side.buf
        text = buf[:text_end].decode("latin-1")
        del buf[:block_end]
        side.header_bytes += block_end
        side.nocolon = False
        if "chunk" in text.lower():
            side.chunk_hint = True
        headers = side.headers
        for line in text.split("\r\n"):
            name, _, value = line.partition(":")
            headers.append((name.lower(), value.strip(" \t")))
        self._headers_done(side)

    def _header_field(self, side: _Direction, line: bytes) -> bool:
        if b"chunk" in line.lower():
            side.chunk_hint = True
        if side.header_bytes > self.max_header:
            self._header_cap(side)
            side.state = S_SKIP_HEADERS
            return True
        if line[:1] in (b" ", b"\t"):
            if side.headers:
                k, v = side.headers[-1]
                extra = _latin(line.strip(b" \t\r"))
                if side.nocolon and extra.startswith(":"):
                    extra = extra[1:]  # "Name\r\n :value": the colon was folded away
                side.nocolon = False
                side.headers[-1] = (k, (v + " " + extra).strip())
                self.anomaly("http.obs_fold", side.direction, side.tx.tx_id if side.tx else None)
                return True
            self.anomaly("http.header_leading_space", side.direction, side.tx.tx_id if side.tx else None)
            line = line.lstrip(b" \t")
        side.nocolon = False
        name, sep, value = line.partition(b":")
        if not sep:
            self.anomaly("http.header_no_colon", side.direction, side.tx.tx_id if side.tx else None)
            loose = _LOOSE_NAME.sub(b"", name.lower())
            if loose in (b"content-encoding", b"transfer-encoding"):
                # Kept only as an obfuscated name whose value may follow on a folded line.
                side.headers.append((_LOOSE + _latin(loose), ""))
                side.nocolon = True
            return True
        key = name.strip(b" \t").lower()
        if key != name.lower():
            self.anomaly("http.header_name_space", side.direction, side.tx.tx_id if side.tx else None)
        side.headers.append((_latin(key), _latin(value.strip(b" \t\r"))))
        loose = _LOOSE_NAME.sub(b"", key)
        if loose != key and loose in (b"content-encoding", b"transfer-encoding", b"content-length"):
            self.anomaly("http.header_name_junk", side.direction, side.tx.tx_id if side.tx else None)
            side.headers.append((_LOOSE + _latin(loose), _latin(value.strip(b" \t\r"))))
        return True

    def _skip_headers(self, side: _Direction) -> bool:
        """Past the header cap: drop lines until the blank line, keep what was parsed."""
        while True:
            line = self._line(side)
            if line is None:
                keep = 1  # a lone CR may precede the LF
                if len(side.buf) > keep:
                    del side.buf[: len(side.buf) - keep]
                return False
            if not line:
                self._headers_done(side)
                return True

    def _trailer_line(self, side: _Direction) -> bool:
        line = self._line(side)
        if line is None:
            if len(side.buf) > self.max_header:
                self._header_cap(side)
                side.buf.clear()
            return False
        if not line.strip():
            self._end_message(side, complete=True)
        return True

    # -- message framing

    def _headers_done(self, side: _Direction) -> None:
        tx = side.tx
        assert tx is not None
        headers = side.headers
        side.headers = _NO_HEADERS
        hint, side.chunk_hint = side.chunk_hint, False
        if side.direction == TO_SERVER:
            tx.req_headers = headers
            self._request_ready(tx)
            if tx.method.upper() == "CONNECT":
                side.body = None
                tx.request_done = True
                side.tx = None
                side.state = S_HOLD
                return
        else:
            if 100 <= side.status < 200 and not (side.status == 101 and _has(headers, "upgrade")):
                # Interim response: the final one follows for the same request.
                side.pending_lazy = (tx, headers)
                side.tx = None
                side.state = S_LINE
                return
            tx.resp_headers = headers
        side.chunk_hint = hint
        self._frame_body(side, tx, headers)

    def _frame_body(self, side: _Direction, tx: Transaction, headers: list[tuple[str, str]],
                    force: bool = False) -> None:
        side.tx = tx
        mode, length = self._framing(side, tx, headers, force)
        side.chunk_hint = False
        if side.direction == TO_CLIENT:
            if self._is_tunnel(tx):
                self._message_finished(side)
                self._start_tunnel()
                return
            req = self.sides[TO_SERVER]
            if req.state == S_HOLD and tx.method.upper() == "CONNECT":
                # CONNECT refused: the client's held bytes are HTTP again.
                req.state = S_LINE
                self._run(req)
        if mode == "none":
            self._end_message(side, complete=True)
            if side.direction == TO_CLIENT and not force:
                side.pending_lazy = (tx, headers)
            return
        side.body = _Body(self, tx, side.direction, headers, self._file_name(tx, headers))
        if mode == "sniff":
            side.state = S_SNIFF
        elif mode == "length":
            side.remaining = length
            side.state = S_BODY_LEN
        elif mode == "chunked":
            side.chunks = 0
            side.chunked_fallback_len = length if length >= 0 else None
            side.state = S_CHUNK_SIZE
        else:
            side.state = S_BODY_CLOSE

    def _framing(self, side: _Direction, tx: Transaction, headers: list[tuple[str, str]],
                 force: bool = False) -> tuple[str, int]:
        """("none"|"length"|"chunked"|"close"|"sniff", content length or -1)."""
        d = side.direction
        if d == TO_CLIENT and not force:
            code = side.status
            if tx.method.upper() == "HEAD" or code in (204, 304) or 100 <= code < 200:
                return "none", 0
        # One pass: the exact names, else their loose (junk-stripped) forms.
        te_values: list[str] = []
        cl_values: list[str] = []
        loose_te: list[str] = []
        loose_cl: list[str] = []
        for k, v in headers:
            if k == "transfer-encoding":
                te_values.append(v)
            elif k == "content-length":
                cl_values.append(v)
            elif k == _LOOSE_TE:
                loose_te.append(v)
            elif k == _LOOSE_CL:
                loose_cl.append(v)
        te_values = te_values or loose_te
        cl_values = cl_values or loose_cl
        length = self._content_length(side, tx, cl_values)
        chunked = False
        if te_values:
            tokens = [_TOKEN_JUNK.sub("", t.lower()) for v in te_values for t in _TE_SPLIT.split(v)]
            tokens = [t for t in tokens if t]
            chunked = "chunked" in tokens
            if chunked and tokens[-1] != "chunked":
                self.anomaly("http.te_chunked_not_last", d, tx.tx_id)
            if not chunked:
                self.anomaly("http.te_unknown", d, tx.tx_id)
            if chunked and cl_values:
                self.anomaly("http.te_and_cl", d, tx.tx_id)
        if chunked:
            return "chunked", length if length is not None else -1
        if length is not None:
            mode = ("length", length) if length > 0 else ("none", 0)
        elif d == TO_SERVER:
            mode = ("none", 0)  # no or invalid length on a request: bodiless
        else:
            mode = ("close", -1)
        if (te_values or side.chunk_hint) and mode[0] != "none":
            # Chunked was hinted (folded, obfuscated or unknown Transfer-Encoding): the body's
            # first line decides.
            side.sniff_mode = mode
            return "sniff", mode[1]
        return mode

    def _sniff(self, side: _Direction, final: bool) -> bool:
        buf = side.buf
        if not final and len(buf) < _SNIFF_BYTES and buf.find(b"\n") < 0:
            return False
        mode, length = side.sniff_mode
        if self._looks_chunked(buf):
            self.anomaly("http.chunked_sniffed", side.direction, side.tx.tx_id if side.tx else None)
            side.chunks = 0
            side.chunked_fallback_len = length if length >= 0 else None
            side.state = S_CHUNK_SIZE
        elif mode == "length":
            side.remaining = length
            side.state = S_BODY_LEN
        else:
            side.state = S_BODY_CLOSE
        return True

    @staticmethod
    def _looks_chunked(buf: bytearray) -> bool:
        m = _LOOKS_CHUNKED.match(bytes(buf[:200]))
        return m is not None

    def _content_length(self, side: _Direction, tx: Transaction, values: list[str]) -> int | None:
        if len(values) == 1:
            v = values[0]
            if len(v) <= 18 and v.isdigit() and v.isascii():
                return int(v)  # one plain value below 10**18 (< _MAX_CL): nothing to report
        elif not values:
            return None  # no Content-Length (most requests)
        return self._content_length_general(side, tx, values)

    def _content_length_general(self, side: _Direction, tx: Transaction, values: list[str]) -> int | None:
        """Several, padded, overflowing or invalid Content-Length values (see the module docs)."""
        lengths: list[int] = []
        invalid = False
        for v in values:
            for piece in v.split(","):
                s = piece.strip()
                if s.isdigit() and s.isascii():
                    n = int(s[:20])
                    if n > _MAX_CL or len(s.lstrip("0")) > 19:
                        self.anomaly("http.content_length_overflow", side.direction, tx.tx_id)
                        invalid = True
                    else:
                        lengths.append(n)
                elif s:
                    invalid = True
        if invalid:
            self.anomaly("http.content_length_invalid", side.direction, tx.tx_id)
        if not lengths:
            return None
        if len(set(lengths)) > 1:
            self.anomaly("http.content_length_conflict", side.direction, tx.tx_id)
        if invalid and side.direction == TO_CLIENT:
            # Mixed valid/invalid values on a response: read to close (inspect everything).
            return None
        return max(lengths)

    def _is_tunnel(self, tx: Transaction) -> bool:
        if tx.status is None:
            return False
        if tx.method.upper() == "CONNECT" and 200 <= tx.status < 300:
            return True
        return tx.status == 101 and _has(tx.resp_headers, "upgrade")

    def _start_tunnel(self) -> None:
        from monitor.applayer import registry  # lazy: registry imports this module

        self.tunnel = registry.new_tcp_parser(self.ctx, tunnel=True)
        for side in self.sides:
            held = bytes(side.buf)
            side.buf.clear()
            side.state = S_TUNNEL
            if held:
                self._tunnel_feed(side.direction, held, self.ts)

    def _tunnel_feed(self, direction: int, data: bytes, ts: float) -> None:
        if self.tunnel is not None:
            self.tunnel.feed(direction, data, ts)

    def _chunk_size(self, side: _Direction) -> bool:
        buf = side.buf
        nl = buf.find(b"\n")
        if nl < 0:
            if len(buf) > 4096:
                return self._chunk_invalid(side, "http.chunk_line_too_long")
            if not _CHUNK_PREFIX.match(bytes(buf[:64])):
                # Cannot become a chunk-size line: decide now, do not wait for a newline.
                return self._chunk_invalid(side, "http.invalid_chunk_size")
            return False
        raw = bytes(buf[:nl]).rstrip(b"\r")
        line = raw.strip(b" \t\r\x0b\x0c")
        if not line:
            # Blank lines before a chunk size: tolerated (anomaly once).
            del buf[: nl + 1]
            self.anomaly("http.chunk_blank_line", side.direction, side.tx.tx_id if side.tx else None)
            return True
        size_txt = line.split(b";", 1)[0].strip(b" \t")
        digits = size_txt
        i = 0
        while i < len(digits) and digits[i] in _HEX:
            i += 1
        if i == 0:
            return self._chunk_invalid(side, "http.invalid_chunk_size")
        if i < len(digits):
            self.anomaly("http.chunk_size_junk", side.direction, side.tx.tx_id if side.tx else None)
        hexpart = digits[:i].lstrip(b"0") or b"0"
        if len(hexpart) > 15:
            return self._chunk_invalid(side, "http.chunk_size_overflow")
        size = int(hexpart, 16)
        if size < 0 or size > _MAX_CL:  # pragma: no cover - bounded by the digit count
            return self._chunk_invalid(side, "http.chunk_size_overflow")
        del buf[: nl + 1]
        side.chunks += 1
        if size == 0:
            side.state = S_TRAILERS
            return True
        side.remaining = size
        side.state = S_CHUNK_DATA
        return True

    def _chunk_invalid(self, side: _Direction, kind: str) -> bool:
        tx_id = side.tx.tx_id if side.tx else None
        self.anomaly(kind, side.direction, tx_id)
        if side.chunks == 0 and side.body is not None:
            # The body was labelled chunked but is not: read it as identity.
            n = side.chunked_fallback_len
            if n is not None and n > 0:
                side.remaining = n
                side.state = S_BODY_LEN
            elif side.direction == TO_CLIENT:
                side.state = S_BODY_CLOSE
            else:
                self._end_message(side, complete=True)
            return True
        # Mid-body: what follows is read as identity until close (never lost, never desynced).
        side.state = S_BODY_CLOSE if side.body is not None else S_RESYNC
        return True

    def _chunk_end(self, side: _Direction) -> bool:
        buf = side.buf
        if buf[:2] == b"\r\n":
            del buf[:2]
        elif buf[:1] == b"\n":
            del buf[:1]
        elif buf[:1] == b"\r" and len(buf) == 1:
            return False
        else:
            self.anomaly("http.chunk_missing_crlf", side.direction, side.tx.tx_id if side.tx else None)
            if buf[:1] == b"\r":
                del buf[:1]
        side.state = S_CHUNK_SIZE
        return True

    def _end_message(self, side: _Direction, complete: bool) -> None:
        if side.body is not None:
            body = side.body
            side.body = None
            if complete and side.direction == TO_CLIENT and body.file is not None:
                # Bytes that follow a complete response and do not start a status line are
                # that response's (libhtp's "unexpected response body"): keep the file open.
                self._finish_pending(side)
                side.pending = body
                side.pending_extra = 0
            else:
                body.end(complete)
            if side.tx is not None:
                if side.direction == TO_SERVER:
                    side.tx.request_length = body.raw_len
                else:
                    side.tx.response_length = body.raw_len
        self._message_finished(side)
        side.state = S_LINE

    def _message_finished(self, side: _Direction) -> None:
        tx = side.tx
        side.tx = None
        side.remaining = 0
        if tx is None:
            return
        if side.direction == TO_SERVER:
            tx.request_done = True
        else:
            tx.response_done = True
        if tx.response_done and (tx.request_done or not tx.has_request):
            self._log(tx)

    def _resync(self, side: _Direction) -> bool:
        """Drop bytes until something that starts a message at the beginning of a line."""
        buf = side.buf
        pat = _RESYNC_RESPONSE if side.direction == TO_CLIENT else _RESYNC_REQUEST
        m = pat.search(bytes(buf))
        if m is None:
            keep = 32
            if len(buf) > keep:
                del buf[: len(buf) - keep]
            return False
        del buf[: m.start(1)]
        side.state = S_LINE
        return True

    # ---------------------------------------------------------------- transactions

    def _request_ready(self, tx: Transaction) -> None:
        http = self.http_object(tx)
        self.ctx.tx_info(tx.tx_id, {"http": http})
        host = http.get("hostname")
        if host and not _is_ip_literal(host):
            self.ctx.learn_name(self.ctx.flow.server, host, "http")
        query = tx.uri.partition("?")[2]
        if query:
            decoded = urldecode(query.encode("latin-1"))
            if decoded != query.encode("latin-1"):
                self.ctx.inspect(decoded, where="http.request.uri > query", direction=TO_SERVER,
                                 tx_id=tx.tx_id)

    def _file_name(self, tx: Transaction, headers: list[tuple[str, str]]) -> str:
        for k, v in headers:
            if k == "content-disposition":
                _, params = parse_params(_text(v))
                if params.get("filename"):
                    return params["filename"]
        path = tx.uri
        if "://" in path[:12]:
            path = "/" + path.split("://", 1)[1].partition("/")[2]
        path = path.partition("?")[0].partition("#")[0]
        if "%" not in path:
            return path  # unquoting is UTF-8 encoding, and decoding that gives the same text back
        return decode_header_text(unquote_to_bytes(path))

    @staticmethod
    def _request_view(tx: Transaction) -> tuple[dict[str, Any], dict[str, Any]]:
        """(host/url/method fields, request header fields) of the EVE http object; kept with
        the transaction until its request headers change (the object is built several times)."""
        if tx.req_view is not None and tx.req_view_of is tx.req_headers:
            return tx.req_view
        req: dict[str, str] = {}  # the first value of each wanted header, as tx.header()
        for k, v in tx.req_headers:
            if k in _REQ_WANTED and k not in req:
                req[k] = v
        head: dict[str, Any] = {}
        host = req.get("host")
        if host is None and "://" in tx.uri[:12]:
            host = tx.uri.split("://", 1)[1].partition("/")[0]
        if host:
            name, port = split_host(_text(host))
            head["hostname"] = name
            if port is not None:
                head["http_port"] = port
        if tx.uri:
            head["url"] = _text(tx.uri)
        if tx.method:
            head["http_method"] = tx.method
        fields: dict[str, Any] = {}
        for field_name, header in _REQ_FIELDS:
            value = req.get(header)
            if value is not None:
                fields[field_name] = _text(value)
        tx.req_view = (head, fields)
        tx.req_view_of = tx.req_headers
        return tx.req_view

    @staticmethod
    def _response_fields(tx: Transaction) -> dict[str, Any]:
        """The response header fields of the EVE http object (content type, redirect, range);
        kept with the transaction until its response headers or status change."""
        resp: dict[str, str] = {}
        for k, v in tx.resp_headers:
            if k in _RESP_WANTED and k not in resp:
                resp[k] = v
        fields: dict[str, Any] = {}
        ctype = resp.get("content-type")
        if ctype is not None:
            fields["http_content_type"] = _text(ctype).split(";")[0].strip()
        location = resp.get("location")
        if location is not None:
            fields["redirect"] = _text(location)
        if tx.status == 206:
            cr_value = resp.get("content-range")
            cr = parse_content_range(_text(cr_value)) if cr_value is not None else None
            if cr is not None:
                fields["content_range"] = cr.as_eve()
        return fields

    def http_object(self, tx: Transaction) -> dict[str, Any]:
        """The EVE ``http`` object (Suricata field names) for what is known of ``tx``."""
        head, fields = self._request_view(tx)
        h: dict[str, Any] = dict(head)
        proto = tx.protocol or tx.resp_protocol
        if proto:
            h["protocol"] = proto
        if tx.status is not None:
            h["status"] = tx.status
        h.update(fields)
        view = tx.resp_view
        if (view is None or tx.resp_view_of is not tx.resp_headers or view[0] != tx.status
                or tx.status == 206):  # (a fresh content_range object for each http object)
            view = tx.resp_view = (tx.status, self._response_fields(tx))
            tx.resp_view_of = tx.resp_headers
        if view[1]:
            h.update(view[1])
        h["length"] = tx.response_length
        h["request_length"] = tx.request_length
        return h

    def _log(self, tx: Transaction) -> None:
        if tx.logged:
            return
        tx.logged = True
        if tx in self.open_txs:
            self.open_txs.remove(tx)
        self.ctx.event("http", {"http": self.http_object(tx)}, direction=TO_SERVER, tx_id=tx.tx_id,
                       ts=self.ts)
