"""A streaming MIME parser: message bytes in, a tree of parts and decoded leaf bytes out.

``MimeParser(sink, limits, stats).feed(chunk)`` may be called with any split of the message
(``\\r\\n`` or bare ``\\n`` line ends); ``finish()`` ends it. Memory is bounded: a header block is
kept up to ``limits.max_header_bytes``; bodies are never buffered -- they are scanned for
delimiter lines with ``bytes.find`` and passed, decoded, to the sink chunk by chunk. At most one
incomplete line (capped) is carried between chunks.

Structure:

* ``multipart/*`` pushes its boundary; a line ``--boundary`` opens the next part, ``--boundary--``
  closes the multipart. The line break before a delimiter belongs to the delimiter (RFC 2046).
  A delimiter of an outer multipart closes the inner ones (counted as ``mime.boundary_mismatch``).
* ``message/rfc822`` (and ``message/global``, and the parts of ``multipart/digest``) is parsed
  by a child parser fed with the part's decoded body, so an encapsulated message's attachments
  are leaves too. A base64 CTE on such a part is invalid (RFC 2046 5.2.1); when its body does
  not look like base64 (a header line is not), it is parsed as it is (``mime.encoded_message``).
* Every other part is a leaf: ``on_leaf_begin``, ``on_leaf_data`` (decoded bytes),
  ``on_leaf_end``. Content-Transfer-Encoding decoding follows :mod:`monitor.content.mimecodec`.
* Nesting deeper than ``limits.max_depth`` is not followed: the too-deep container becomes one
  leaf holding its raw body (``mime.depth_exceeded``), so its bytes are still inspected.
* Malformed input (no blank line after headers, missing boundary parameter, missing close
  delimiter, invalid base64/QP characters, over-long lines) -> ``sink.on_anomaly`` + a counter
  ``mime.anomaly{type=...}``; parsing goes on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

from monitor.content import charsets
from monitor.content.mimecodec import KNOWN_ENCODINGS, Base64Decoder, Decoder, make_decoder
from monitor.content.mimeheaders import MAX_VALUE, decode_words, header_text, parse_params, unfold
from monitor.stats import Stats

RFC5322_LINE = 998  # longer lines are reported once per message (mime.long_line)
LINE_CHECK = 1 << 20  # bytes of a message whose inner lines are measured one by one


@dataclass(frozen=True, slots=True)
class MimeLimits:
    max_depth: int = 20  # nesting of multiparts and encapsulated messages
    max_header_bytes: int = 64 * 1024  # one entity's header block
    max_headers: int = 256  # header fields kept per entity
    max_line: int = 64 * 1024  # one header line
    max_parts: int = 10_000  # leaves per message
    max_boundary: int = 200  # boundary parameter length accepted


@dataclass(slots=True, eq=False)
class MimePart:
    """One MIME entity. ``path`` numbers parts as IMAP does: "" is the root, "1", "2.1" ..."""

    path: str
    depth: int
    parent: MimePart | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)  # (lower-case name, unfolded raw text)
    content_type: str = "text/plain"
    params: dict[str, str] = field(default_factory=dict)
    charset_label: str | None = None
    charset: str | None = None  # Python codec name, when the label is known
    encoding: str = ""  # Content-Transfer-Encoding, lower-case
    disposition: str = ""
    filename: str = ""
    boundary: bytes | None = None
    is_message: bool = False  # the root of a message (top level or encapsulated)
    children: int = 0
    size: int = 0  # decoded bytes delivered (leaves)
    gaps: bool = False

    def header(self, name: str) -> str | None:
        """The first value of a header field (raw text, unfolded, encoded words not decoded)."""
        for n, v in self.headers:
            if n == name:
                return v
        return None

    def decoded(self, name: str) -> str | None:
        """The first value of a header field with RFC 2047 words decoded."""
        v = self.header(name)
        return None if v is None else decode_words(v)[:MAX_VALUE]

    @property
    def is_attachment(self) -> bool:
        return self.disposition == "attachment" or bool(self.filename)

    @property
    def is_text(self) -> bool:
        return self.content_type.startswith("text/")

    @property
    def label(self) -> str:
        """Path as shown in ``source`` strings: the root leaf of a simple message is part 1."""
        return self.path or "1"


class MimeSink(Protocol):
    def on_headers(self, part: MimePart) -> None: ...
    def on_leaf_begin(self, part: MimePart) -> None: ...
    def on_leaf_data(self, part: MimePart, data: bytes) -> None: ...
    def on_leaf_gap(self, part: MimePart, length: int) -> None: ...
    def on_leaf_end(self, part: MimePart) -> None: ...
    def on_anomaly(self, kind: str, detail: str = "") -> None: ...


_HEADERS, _BODY = 0, 1
# What the body bytes of the current entity are for.
_OWNER_DISCARD, _OWNER_LEAF, _OWNER_MESSAGE = 0, 1, 2
_HEADER_NAME = re.compile(rb"^[\x21-\x39\x3b-\x7e]{1,76}[ \t]*:")
_MESSAGE_TYPES = ("message/rfc822", "message/global")
_PADDING = 64  # transport padding accepted after a delimiter
_JOIN_TAIL = 4096  # a carried tail shorter than this is joined with the next chunk into one bytes


class _Shared:
    """State shared by a parser and the child parsers of its encapsulated messages."""

    __slots__ = ("sink", "limits", "stats", "leaves", "reported", "line_checked")

    def __init__(self, sink: MimeSink, limits: MimeLimits, stats: Stats | None) -> None:
        self.sink = sink
        self.limits = limits
        self.stats = stats
        self.leaves = 0
        self.reported: set[str] = set()
        self.line_checked = 0

    def anomaly(self, kind: str, detail: str = "", once: bool = False) -> None:
        if once:
            if kind in self.reported:
                return
            self.reported.add(kind)
        if self.stats is not None:
            self.stats.incr("mime.anomaly", type=kind)
        self.sink.on_anomaly(kind, detail)

    def cap(self, name: str) -> None:
        if self.stats is not None:
            self.stats.incr("mime.cap_hit", cap=name)


def _has_long_line(data: bytes, start: int, end: int, limit: int) -> bool:
    """Whether a line of ``data[start:end]`` (split at LF) is longer than ``limit`` bytes.

    Jumps from line start to the last LF within ``limit + 1`` bytes (one C ``rfind`` per ~``limit``
    bytes) instead of splitting every line into an object: a line starting at ``p`` is too long
    exactly when ``data[p : p + limit + 1]`` holds no LF."""
    p = start
    while end - p > limit:
        q = data.rfind(b"\n", p, p + limit + 1)
        if q == -1:
            return True
        p = q + 1
    return False


class MimeParser:
    """Streaming parser of one message (see the module docstring)."""

    def __init__(self, sink: MimeSink, limits: MimeLimits | None = None, stats: Stats | None = None,
                 *, path: str = "", depth: int = 0, _shared: _Shared | None = None) -> None:
        self._sh = _shared or _Shared(sink, limits or MimeLimits(), stats)
        self._root = MimePart(path=path, depth=depth, is_message=True)
        self._entity = self._root
        self._state = _HEADERS
        self._header_lines: list[bytes] = []
        self._header_bytes = 0
        self._skip_line = False  # discarding the rest of an over-long header line
        self._buf = bytearray()
        self._bol = True  # buf[0] starts a line
        self._pending_eol = b""  # line break before buf[0], not yet known to be body
        self._line_len = 0
        self._stack: list[MimePart] = []  # open multiparts, innermost last
        self._delims: dict[bytes, tuple[int, bool]] = {}  # delimiter line -> (stack index, is close)
        self._max_delim = 0
        self._needles: list[bytes] = []  # b"\n--" + each open boundary
        self._owner = _OWNER_DISCARD
        self._decoder: Decoder | None = None
        self._child: MimeParser | None = None
        self._sniff_message = False  # rfc822 with base64 CTE: decide on the first body bytes
        self._finished = False

    @property
    def root(self) -> MimePart:
        return self._root

    # ------------------------------------------------------------ input

    def feed(self, data: bytes) -> None:
        if self._finished or not data:
            return
        # The steps read ``buf`` in place and return how far they got; only the unfinished tail
        # (an incomplete line, usually a few bytes) is copied into ``_buf`` for the next chunk.
        tail = self._buf
        if not tail:
            buf: bytes | bytearray = data
        elif len(tail) < _JOIN_TAIL:
            buf = b"".join((tail, data))
        else:
            tail += data  # a long incomplete line: append, do not copy it again and again
            buf = tail
        pos = self._run(buf, final=False)
        if buf is tail:
            del tail[:pos]
        else:
            self._buf = bytearray(buf[pos:])
        if len(self._buf) > 2 * self._sh.limits.max_line + _PADDING:
            # Only a capped incomplete line may wait; anything else means a logic slip.
            self._sh.cap("carry")
            self._emit_body(bytes(self._buf))
            self._buf.clear()
            self._bol = False

    def gap(self, length: int) -> None:
        """``length`` message bytes were lost: the current leaf gets a hole, line state resets."""
        if self._finished or length <= 0:
            return
        self._buf.clear()
        self._pending_eol = b""
        self._bol = False
        self._skip_line = False
        if self._state == _HEADERS:
            self._end_headers()
        if self._owner == _OWNER_LEAF:
            part = self._entity
            part.gaps = True
            if self._decoder is not None:
                self._decoder.reset()
            self._sh.sink.on_leaf_gap(part, length)
        elif self._owner == _OWNER_MESSAGE and self._child is not None:
            self._child.gap(length)

    def finish(self) -> None:
        """End of the message: flush what is held and close every open part."""
        if self._finished:
            return
        del self._buf[: self._run(self._buf, final=True)]
        if self._state == _HEADERS:
            self._end_headers()
        if self._pending_eol:
            self._emit_body(self._pending_eol)
            self._pending_eol = b""
        if self._buf:
            self._emit_body(bytes(self._buf))
            self._buf.clear()
        self._close_owner()
        if self._stack:
            self._sh.anomaly("mime.missing_close_boundary", once=True)
            self._stack.clear()
        self._finished = True

    def _run(self, buf: bytes | bytearray, final: bool) -> int:
        """Parse as much of ``buf`` as can be decided; returns where the undecided rest starts."""
        pos = 0
        n = len(buf)
        while pos < n:
            state = self._state
            new = self._headers_step(buf, pos, final) if state == _HEADERS else self._body_step(buf, pos, final)
            if new == pos and self._state == state:
                break  # needs more data
            pos = new
        return pos

    # ------------------------------------------------------------ headers

    def _headers_step(self, buf: bytes | bytearray, pos: int, final: bool) -> int:
        limits = self._sh.limits
        n = len(buf)
        while pos < n and self._state == _HEADERS:
            nl = buf.find(b"\n", pos)
            if nl == -1:
                if final:
                    nl = n  # the last line of the message has no line break
                elif n - pos > limits.max_line:
                    if not self._skip_line:
                        self._sh.anomaly("mime.long_header_line", once=True)
                        self._header_line(bytes(buf[pos : pos + limits.max_line]))
                    self._skip_line = True
                    pos = n
                    break
                else:
                    break
            start = pos
            line = bytes(buf[pos:nl])
            pos = nl + 1
            if self._skip_line:
                self._skip_line = False
                continue
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:  # the blank line ending the header block
                self._end_headers()
                break
            if line[:2] == b"--" and self._delims and self._match(line) is not None:
                # A delimiter where a header or the blank line was expected: the part has no body.
                self._sh.anomaly("mime.missing_header_end", once=True)
                self._end_headers()
                pos = start
                break
            if line[:1] not in (b" ", b"\t") and not _HEADER_NAME.match(line):
                if not self._header_lines and self._entity is self._root and line[:5] == b"From ":
                    continue  # an mbox "From " line before the headers
                verdict = self._stray_line_verdict(buf, pos, final) if self._header_lines else "body"
                if verdict == "wait":
                    pos = start
                    break
                self._sh.anomaly("mime.invalid_header", once=True)
                if verdict == "body":
                    # The headers are over and this line is body (lenient: the bytes are kept).
                    self._end_headers()
                    pos = start
                    break
                line = b" " + line  # a folded line that lost its leading whitespace
            self._header_line(line)
            if self._header_bytes > limits.max_header_bytes:
                self._sh.anomaly("mime.header_block_too_large", once=True)
                self._sh.cap("header_bytes")
                self._end_headers()
                break
        return pos

    def _stray_line_verdict(self, buf: bytes | bytearray, nxt: int, final: bool) -> str:
        """A line that is not a header inside a header block: a broken fold when the next line is
        a header or the blank line (``Content-Type: text/html;`` / ``charset="utf-8"``), else
        the start of the body. Deciding wrongly the other way would skip CTE decoding."""
        nl = buf.find(b"\n", nxt)
        if nl == -1:
            if final or len(buf) - nxt > self._sh.limits.max_line:
                return "body"
            return "wait"
        following = bytes(buf[nxt:nl]).rstrip(b"\r")
        if not following or _HEADER_NAME.match(following) or following[:1] in (b" ", b"\t"):
            return "fold"
        return "body"

    def _header_line(self, line: bytes) -> None:
        self._header_bytes += len(line) + 2
        if self._header_bytes <= self._sh.limits.max_header_bytes:
            self._header_lines.append(line)

    def _end_headers(self) -> None:
        part = self._entity
        self._parse_headers(part, self._header_lines)
        self._header_lines = []
        self._header_bytes = 0
        self._skip_line = False
        self._state = _BODY
        self._bol = True
        self._pending_eol = b""
        self._line_len = 0
        self._sh.sink.on_headers(part)
        self._open_body(part)

    def _parse_headers(self, part: MimePart, lines: list[bytes]) -> None:
        fields: list[list[bytes]] = []
        for line in lines:
            if line[:1] in (b" ", b"\t") and fields:
                fields[-1].append(line)
            elif b":" in line:
                fields.append([line])
        max_headers = self._sh.limits.max_headers
        if len(fields) > max_headers:
            self._sh.anomaly("mime.too_many_headers", once=True)
            self._sh.cap("headers")
            fields = fields[:max_headers]
        for f in fields:
            name, _, first = f[0].partition(b":")
            raw = b"\r\n".join([first, *f[1:]]).strip()
            part.headers.append((name.strip().decode("latin-1").lower(), unfold(header_text(raw[: MAX_VALUE * 4]))))
        default = "message/rfc822" if part.parent is not None and part.parent.content_type == "multipart/digest" else "text/plain"
        ctype = part.header("content-type")
        params: dict[str, str] = {}
        if ctype:
            main, params = parse_params(ctype)
            if "/" in main and " " not in main:
                part.content_type = main
            else:
                self._sh.anomaly("mime.invalid_content_type", once=True)
                part.content_type = default
        else:
            part.content_type = default
        part.params = params
        label = params.get("charset")
        if label:
            part.charset_label = label
            part.charset = charsets.codec_name(label)
        cte = part.header("content-transfer-encoding")
        if cte:
            enc = cte.strip().strip('"').lower()
            if enc not in KNOWN_ENCODINGS:
                if enc not in ("x-uuencode", "uuencode", "x-uue"):
                    self._sh.anomaly("mime.unknown_encoding", once=True)
                enc = "8bit"
            part.encoding = enc
        disp = part.header("content-disposition")
        dparams: dict[str, str] = {}
        if disp:
            part.disposition, dparams = parse_params(disp)
        part.filename = (dparams.get("filename") or params.get("name") or "").strip()
        if part.content_type.startswith("multipart/"):
            b = params.get("boundary", "")
            if not b or len(b) > self._sh.limits.max_boundary:
                self._sh.anomaly("mime.missing_boundary" if not b else "mime.boundary_too_long", once=True)
            else:
                part.boundary = b.encode("utf-8", "surrogateescape")

    # ------------------------------------------------------------ body

    def _open_body(self, part: MimePart) -> None:
        sh = self._sh
        max_depth = sh.limits.max_depth
        container = part.boundary is not None or part.content_type in _MESSAGE_TYPES
        if container and part.depth >= max_depth:
            sh.anomaly("mime.depth_exceeded", once=True)
            sh.cap("depth")
            container = False
            part.boundary = None
        if part.boundary is not None:
            self._push(part)
            self._owner = _OWNER_DISCARD  # the preamble
            return
        if container:
            self._child = MimeParser(sh.sink, path=part.path, depth=part.depth + 1, _shared=sh)
            self._child._root.parent = part
            self._decoder = make_decoder(part.encoding)
            self._sniff_message = part.encoding == "base64"
            self._owner = _OWNER_MESSAGE
            return
        if sh.leaves >= sh.limits.max_parts:
            sh.anomaly("mime.too_many_parts", once=True)
            sh.cap("parts")
            self._owner = _OWNER_DISCARD
            return
        sh.leaves += 1
        self._decoder = make_decoder(part.encoding)
        self._owner = _OWNER_LEAF
        sh.sink.on_leaf_begin(part)

    def _close_owner(self) -> None:
        part = self._entity
        if self._owner == _OWNER_LEAF:
            assert self._decoder is not None
            rest = self._decoder.flush()
            if rest:
                part.size += len(rest)
                self._sh.sink.on_leaf_data(part, rest)
            self._check_decoder()
            self._sh.sink.on_leaf_end(part)
        elif self._owner == _OWNER_MESSAGE and self._child is not None:
            if self._decoder is not None:
                rest = self._decoder.flush()
                if rest:
                    self._child.feed(rest)
                self._check_decoder()
            self._child.finish()
            self._child = None
        self._owner = _OWNER_DISCARD
        self._decoder = None

    def _check_decoder(self) -> None:
        d = self._decoder
        if d is None:
            return
        if d.invalid:
            kind = "mime.base64_invalid" if isinstance(d, Base64Decoder) else "mime.qp_invalid"
            self._sh.anomaly(kind, once=True)
        if d.dangling:
            self._sh.anomaly("mime.base64_dangling", once=True)

    def _emit_body(self, data: bytes) -> None:
        if not data:
            return
        self._track_lines(data)
        owner = self._owner
        if owner == _OWNER_DISCARD:
            return
        if owner == _OWNER_MESSAGE:
            if self._sniff_message:
                self._sniff_message = False
                first = data.lstrip()[:200].split(b"\n", 1)[0]
                if _HEADER_NAME.match(first):
                    self._sh.anomaly("mime.encoded_message", once=True)
                    self._decoder = make_decoder("8bit")
            assert self._decoder is not None and self._child is not None
            out = self._decoder.feed(data)
            if out:
                self._child.feed(out)
            return
        assert self._decoder is not None
        out = self._decoder.feed(data)
        if out:
            self._entity.size += len(out)
            self._sh.sink.on_leaf_data(self._entity, out)

    def _track_lines(self, data: bytes) -> None:
        """Report a line longer than RFC 5322 allows, once per message, without a per-line loop."""
        if "mime.long_line" in self._sh.reported:
            return
        nl = data.find(b"\n")
        if nl == -1:
            self._line_len += len(data)
        else:
            longest = self._line_len + nl
            last = data.rfind(b"\n")
            if last - nl > RFC5322_LINE and self._sh.line_checked < LINE_CHECK:
                # Lines wholly inside one chunk are measured in a message's first megabyte only;
                # lines longer than a chunk are always caught by the running length.
                self._sh.line_checked += last - nl
                if _has_long_line(data, nl + 1, last, RFC5322_LINE + 1):
                    longest = RFC5322_LINE + 2
            self._line_len = len(data) - last - 1
            if longest > RFC5322_LINE + 1:
                self._sh.anomaly("mime.long_line", once=True)
                return
        if self._line_len > RFC5322_LINE + 1:
            self._sh.anomaly("mime.long_line", once=True)

    def _push(self, part: MimePart) -> None:
        self._stack.append(part)
        self._rebuild_delims()

    def _rebuild_delims(self) -> None:
        delims: dict[bytes, tuple[int, bool]] = {}
        for i, p in enumerate(self._stack):
            assert p.boundary is not None
            delims[b"--" + p.boundary] = (i, False)
            delims[b"--" + p.boundary + b"--"] = (i, True)
        self._delims = delims
        self._needles = list(dict.fromkeys(b"\n--" + p.boundary for p in self._stack if p.boundary is not None))
        self._max_delim = max((len(k) for k in delims), default=0) + _PADDING

    def _match(self, line: bytes) -> tuple[int, bool] | None:
        return self._delims.get(line.rstrip(b" \t\r"))

    def _body_step(self, buf: bytes | bytearray, pos: int, final: bool) -> int:
        n = len(buf)
        while pos < n:
            if self._bol:
                if self._delims:
                    if n - pos < 2 and not final:
                        break  # cannot tell yet whether this line starts with "--"
                    if n - pos >= 2 and buf[pos] == 45 and buf[pos + 1] == 45:  # "--"
                        nl = buf.find(b"\n", pos, pos + self._max_delim + 1)
                        if nl == -1 and n - pos <= self._max_delim:
                            if not final:
                                break  # a possible delimiter line, incomplete
                            nl = n  # the message's last line, without a line break
                        if nl != -1:
                            hit = self._match(bytes(buf[pos:nl]))
                            if hit is not None:
                                self._pending_eol = b""
                                self._delimiter(*hit)
                                return nl + 1
                if self._pending_eol:
                    self._emit_body(self._pending_eol)
                    self._pending_eol = b""
                self._bol = False
            # Inside a line that is not a delimiter: jump to the next line that may be one.
            cand = self._next_delimiter_line(buf, pos, n) if self._delims else -1
            if cand == -1:
                last_nl = buf.rfind(b"\n", pos)
                if last_nl == -1 or (self._delims and n - last_nl - 1 >= 2) or not self._delims:
                    end = n - 1 if buf[n - 1] == 13 else n  # a CR may start the next line break
                    if end > pos:
                        self._emit_body(bytes(buf[pos:end]))
                    pos = end
                    break
                # The last line is too short to judge: hold its line break.
                eol = last_nl - 1 if last_nl > pos and buf[last_nl - 1] == 13 else last_nl
                self._emit_body(bytes(buf[pos:eol]))
                self._pending_eol = bytes(buf[eol : last_nl + 1])
                pos = last_nl + 1
                self._bol = True
                break
            eol = cand - 1 if cand > pos and buf[cand - 1] == 13 else cand
            if eol > pos:
                self._emit_body(bytes(buf[pos:eol]))
            self._pending_eol = bytes(buf[eol : cand + 1])
            pos = cand + 1
            self._bol = True
        return pos

    def _next_delimiter_line(self, buf: bytes | bytearray, pos: int, n: int) -> int:
        """Where the line break before the next possible delimiter line is, or -1.

        The open boundaries themselves are searched for (``\n--boundary``: a long needle, found
        three times faster than ``\n--``, and text has many ``--`` lines); near the end of the
        buffer any ``--`` line may still grow into a delimiter, so there ``\n--`` is enough.

        Every candidate has a "-" right after its line break, so the searches start at the first
        "-" (one ``memchr``): a base64 body has none, and the needle searches, ten times slower
        per byte, then skip it whole."""
        dash = buf.find(b"-", pos + 1)
        if dash == -1:
            return -1
        pos = dash - 1
        best = -1
        for needle in self._needles:
            i = buf.find(needle, pos)
            if i != -1 and (best == -1 or i < best):
                best = i
        if best == -1:
            best = buf.find(b"\n--", max(pos, n - self._max_delim - 1))
        return best

    def _delimiter(self, index: int, close: bool) -> None:
        self._close_owner()
        if index != len(self._stack) - 1:
            self._sh.anomaly("mime.boundary_mismatch", once=True)
            del self._stack[index + 1 :]
            # The closed levels' boundaries leave the delimiter table too: one of them may reuse
            # an outer boundary, whose lines must now reach the outer level (not a level gone).
            self._rebuild_delims()
        multipart = self._stack[index]
        if close:
            self._stack.pop()
            self._rebuild_delims()
            self._owner = _OWNER_DISCARD  # the epilogue
            self._bol = True
            return
        multipart.children += 1
        prefix = f"{multipart.path}." if multipart.path else ""
        child = MimePart(path=f"{prefix}{multipart.children}", depth=multipart.depth + 1, parent=multipart)
        self._entity = child
        self._state = _HEADERS
        self._bol = True
