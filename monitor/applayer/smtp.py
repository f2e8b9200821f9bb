"""SMTP (RFC 5321) with PIPELINING, CHUNKING (BDAT, RFC 3030) and STARTTLS (RFC 3207).

Sans-IO, per :mod:`monitor.applayer.base`. The client side is parsed as commands, DATA
(dot-unstuffed, end marker found even when split across segments) or BDAT chunks (exactly the
declared sizes); the message bytes go to a streaming :class:`~monitor.content.mime.MimeParser`
whose leaves become file objects. Server replies are matched to commands in order (a pipelined
client may send several before the first reply).

One transaction per mail (``MAIL FROM`` .. end of message). When the reply to the end of the
message arrives (or the flow ends), an EVE ``smtp`` event is written with an ``smtp`` object
(helo, mail_from, rcpt_to) and an ``email`` object like Suricata's (from, to, cc, subject decoded,
message_id, attachment names, URLs found in text bodies).

Message bytes are gathered into runs of :data:`MESSAGE_BATCH` bytes before the MIME parser
runs, so its per-call costs (and those of decoding, hashing and detection behind it) are paid
per run, not per TCP segment. DATA is framed on those runs with ``bytes.find`` for the end marker
(``\r\n.\r\n`` or ``\n.\n``, also split across segments) and ``bytes.replace`` for the
dot-stuffing; a run is cut so that a line break (which may be the end marker's) and a leading dot
stay with the next run. The end of the message, a gap, RSET and the flow's end hand over what is
gathered, so at most one run per flow waits for more bytes.

DATA is entered as soon as the command is seen (the 354 may arrive after the client's bytes
have been fed); a rejecting reply before any message byte returns to command mode. After
``STARTTLS`` the client's bytes are held (capped) until the reply: on 220 the rest of both
directions is handed to the TLS parser from the registry (if present) and ``smtp.starttls`` is
recorded; otherwise the held bytes are parsed as commands.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from monitor.applayer.base import AppContext, AppParser
from monitor.content.mime import MimeLimits, MimeParser, MimePart
from monitor.content.mimeheaders import split_addresses
from monitor.files import STATE_TRUNCATED, FileObject
from monitor.model import TO_CLIENT, TO_SERVER

# Client modes.
_CMD, _DATA, _BDAT, _TLS_WAIT, _TLS = range(5)

MAX_RCPT = 100  # recipients kept per mail (more are counted)
MAX_ATTACHMENTS = 100  # names listed per mail
MAX_URLS = 50  # URLs listed per mail
MAX_URL_LEN = 2048
MAX_PENDING = 256  # commands awaiting a reply
TEXT_CHUNK = 1 << 20  # decoded text handed to detection per inspect() call
TLS_HOLD = 64 * 1024  # client bytes held while the reply to STARTTLS is awaited
MESSAGE_BATCH = 64 * 1024  # message bytes gathered before they go to the MIME parser

_URL = re.compile(rb"(?:[Hh][Tt][Tt][Pp][Ss]?|[Ff][Tt][Pp])://[^\s<>\"'`{}|\\^\[\]()]+")
_URL_TRAILING = ".,;:!?*"
_SCHEME_SEP = re.compile(rb"://")  # sre's literal search is faster than bytes.find here
_REPLY = re.compile(rb"^(\d{3})([ -]|$)")
_END_MARKER = re.compile(rb"\n\.\r?\n")  # one pass finds both forms (two finds cost twice)
_LINE_DOT = re.compile(rb"\n\.")  # a line starting with a dot: stuffing, or the end marker


@dataclass(slots=True, eq=False)
class _Mail:
    """One mail transaction."""

    tx_id: int
    mail_from: str | None = None
    rcpt_to: list[str] = field(default_factory=list)
    email: dict[str, Any] | None = None
    app: dict[str, Any] = field(default_factory=dict)  # shared with the files' fileinfo events
    mime: MimeParser | None = None
    data_bytes: int = 0
    complete: bool = False  # end of message seen
    truncated: bool = False
    emitted: bool = False


@dataclass(slots=True)
class _Pending:
    verb: str
    mail: _Mail | None = None
    last: bool = False  # BDAT ... LAST


class _MailSink:
    """Turns the MIME parser's callbacks into files, inspected buffers and the email object."""

    def __init__(self, parser: SmtpParser, mail: _Mail) -> None:
        self.p = parser
        self.mail = mail
        self.files: dict[int, FileObject] = {}
        self.text: dict[int, bytearray] = {}
        self.aborting = False

    def on_headers(self, part: MimePart) -> None:
        ctx = self.p.ctx
        if part.is_message and part.depth == 0:
            email = self.mail.email if self.mail.email is not None else {}
            self.mail.email = email
            email.update(_email_fields(part))
            email.setdefault("attachment", [])
            email.setdefault("url", [])
            self.mail.app["email"] = email
            ctx.tx_info(self.mail.tx_id, self.p.tx_body(self.mail))
            subject = email.get("subject")
            if subject:
                ctx.inspect(subject.encode("utf-8"), where="smtp.mail > header[subject]", direction=TO_SERVER,
                            tx_id=self.mail.tx_id, charset="utf-8")
        elif part.is_message:
            # An encapsulated message (a forwarded .eml): listed by name; its parts become files.
            if part.parent is not None and part.parent.filename:
                self._list_attachment(part.parent.filename)
            subject = part.decoded("subject")
            if subject:
                ctx.inspect(subject.encode("utf-8"), where=f"smtp.mail > mime[{part.label}] > header[subject]",
                            direction=TO_SERVER, tx_id=self.mail.tx_id, charset="utf-8")

    def _list_attachment(self, name: str) -> None:
        if self.mail.email is None:
            self.mail.email = {"attachment": [], "url": []}
            self.mail.app["email"] = self.mail.email
        names = self.mail.email.setdefault("attachment", [])
        if len(names) < MAX_ATTACHMENTS:
            names.append(name)
        else:
            self.p.ctx.stats.incr("smtp.cap_hit", cap="attachments")

    def on_leaf_begin(self, part: MimePart) -> None:
        if part.is_attachment:
            if part.filename:
                self._list_attachment(part.filename)
                self.p.ctx.inspect(part.filename.encode("utf-8"), where=f"smtp.mail > mime[{part.label}] > filename",
                                   direction=TO_SERVER, tx_id=self.mail.tx_id, charset="utf-8")
            self._open(part)  # even an empty attachment is worth a fileinfo record
        if part.is_text:
            self.text[id(part)] = bytearray()

    def _open(self, part: MimePart) -> FileObject:
        if part.is_attachment:
            source = f"smtp.mail > mime[{part.label}] > attachment[file={part.filename}]"
        else:
            source = f"smtp.mail > mime[{part.label}] > body[{part.content_type}]"
        f = self.p.ctx.open_file(TO_SERVER, name=part.filename, source=source, protocol="smtp",
                                 tx_id=self.mail.tx_id, declared_type=part.content_type, charset=part.charset,
                                 app=self.mail.app)
        self.files[id(part)] = f
        return f

    def on_leaf_data(self, part: MimePart, data: bytes) -> None:
        f = self.files.get(id(part)) or self._open(part)  # body parts open with their first byte
        f.write(data)
        buf = self.text.get(id(part))
        if buf is not None:
            buf += data
            if len(buf) >= TEXT_CHUNK:
                self._flush_text(part, buf)

    def on_leaf_gap(self, part: MimePart, length: int) -> None:
        f = self.files.get(id(part)) or self._open(part)
        f.gap(length)
        buf = self.text.get(id(part))
        if buf:
            self._flush_text(part, buf)

    def on_leaf_end(self, part: MimePart) -> None:
        buf = self.text.pop(id(part), None)
        if buf:
            self._flush_text(part, buf)
        f = self.files.pop(id(part), None)
        if f is not None:
            f.close(STATE_TRUNCATED if self.aborting else None)

    def on_anomaly(self, kind: str, detail: str = "") -> None:
        self.p.ctx.anomaly(kind, detail, direction=TO_SERVER, tx_id=self.mail.tx_id)

    def _flush_text(self, part: MimePart, buf: bytearray) -> None:
        data = bytes(buf)
        buf.clear()
        kind = "attachment" if part.is_attachment else "body"
        self.p.ctx.inspect(data, where=f"smtp.mail > mime[{part.label}] > {kind}[{part.content_type}]",
                           direction=TO_SERVER, tx_id=self.mail.tx_id, file=self.files.get(id(part)),
                           charset=part.charset)
        if part.content_type in ("text/plain", "text/html"):
            self._urls(data)

    def _urls(self, data: bytes) -> None:
        if self.mail.email is None:
            self.mail.email = {"attachment": [], "url": []}
            self.mail.app["email"] = self.mail.email
        urls: list[str] = self.mail.email.setdefault("url", [])
        # Jump between "://" occurrences and match only around them: a regex scan of
        # every position of a megabyte of text is the slow part otherwise.
        sep = _SCHEME_SEP.search(data)
        while sep is not None:
            pos = sep.start()
            m = _URL.search(data, max(0, pos - 5), pos + 3 + MAX_URL_LEN)
            if m is None or m.start() > pos:
                sep = _SCHEME_SEP.search(data, pos + 3)
                continue
            if len(urls) >= MAX_URLS:
                self.p.ctx.stats.incr("smtp.cap_hit", cap="urls")
                return
            url = m.group(0)[:MAX_URL_LEN].decode("latin-1").rstrip(_URL_TRAILING)
            if url not in urls:
                urls.append(url)
            sep = _SCHEME_SEP.search(data, m.end())


def _email_fields(root: MimePart) -> dict[str, Any]:
    """Suricata-style ``email`` fields from the top-level header block."""
    out: dict[str, Any] = {}
    for name, key in (("from", "from"), ("subject", "subject"), ("message-id", "message_id"),
                      ("date", "date"), ("x-mailer", "x_mailer"), ("user-agent", "user_agent"),
                      ("reply-to", "reply_to")):
        v = root.decoded(name)
        if v is not None:
            out[key] = v.strip()
    for name in ("to", "cc"):
        v = root.decoded(name)
        if v is not None:
            out[name] = split_addresses(v, MAX_RCPT)
    out["content_type"] = root.content_type
    return out


def _address_arg(arg: str) -> str:
    """``<a@b> SIZE=10`` -> ``<a@b>`` (the path, without ESMTP parameters)."""
    arg = arg.strip()
    if arg.startswith("<"):
        end = arg.find(">")
        if end != -1:
            return arg[: end + 1]
    return arg.split(None, 1)[0] if arg else ""


class SmtpParser:
    """SMTP session parser (see the module docstring)."""

    name = "smtp"

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        cfg = ctx.config.app_layer.smtp
        self.max_line = cfg.max_line
        self.limits = MimeLimits(max_depth=cfg.mime_max_depth, max_line=cfg.max_line,
                                 max_header_bytes=max(cfg.max_line, 64 * 1024))
        ctx.set_app_proto("smtp")
        self.ts = 0.0
        # client side
        self._mode = _CMD
        self._cbuf = bytearray()
        self._cskip = False
        self._bdat_left = 0
        self._bdat_last = False
        self._mbuf = bytearray()  # message bytes gathered (DATA: still dot-stuffed)
        self._stuffed = False  # _mbuf holds DATA bytes (dot-stuffed, end marker to find)
        self._msent = False  # _mbuf[0] is a synthetic line break: the message's first line starts
        self._mdots = False  # _mbuf has a line starting with a dot (to unstuff)
        self._tls_hold = bytearray()
        # server side
        self._sbuf = bytearray()
        self._sskip = False
        self._server_tls = False
        self._greeted = False
        # session
        self.helo: str | None = None
        self.starttls = False
        self._tls: AppParser | None = None
        self._pending: deque[_Pending] = deque()
        self._mail: _Mail | None = None  # the transaction the client is in
        self._sink: _MailSink | None = None
        self._waiting: list[_Mail] = []  # complete, awaiting the reply to their end of message
        self._next_tx = 0

    # ------------------------------------------------------------ AppParser

    def feed(self, direction: int, data: bytes, ts: float) -> None:
        if not data:
            return
        self.ts = ts
        if direction == TO_SERVER:
            if self._mode == _DATA:  # the common case, inside a message
                used = self._data(data)
                if used < len(data):
                    self._client(data[used:])
            else:
                self._client(data)
        else:
            self._server(data)

    def gap(self, direction: int, length: int, ts: float) -> None:
        self.ts = ts
        if self._tls is not None and (direction == TO_CLIENT and self._server_tls or
                                      direction == TO_SERVER and self._mode == _TLS):
            self._tls.gap(direction, length, ts)
            return
        if direction == TO_CLIENT:
            self._sbuf.clear()
            self._sskip = True  # resynchronise at the next line break
            return
        if self._mode == _DATA and self._mail is not None and self._mail.mime is not None:
            self._mail.truncated = True
            self._flush_message()
            self._mbuf.clear()
            self._msent = False  # where the bytes after the gap stand in their line is unknown
            self._mail.mime.gap(length)
        elif self._mode == _BDAT and self._mail is not None and self._mail.mime is not None:
            self._mail.truncated = True
            self._flush_message()
            lost = min(length, self._bdat_left)
            self._bdat_left -= lost
            self._mail.mime.gap(lost)
            if self._bdat_left == 0:
                self._bdat_done()
            if length > lost:
                self._cbuf.clear()
                self._cskip = True
        else:
            self._cbuf.clear()
            self._cskip = True

    def close(self, ts: float) -> None:
        self.ts = ts
        if self._tls is not None:
            self._tls.close(ts)
        self._drop_mail()
        for mail in self._waiting:
            self._emit(mail)
        self._waiting.clear()

    # ------------------------------------------------------------ client

    def _client(self, data: bytes) -> None:
        while data:
            mode = self._mode
            if mode == _CMD:
                self._cbuf += data
                data = b""
                self._command_lines()
                if self._mode != _CMD:
                    data = bytes(self._cbuf)
                    self._cbuf.clear()
            elif mode == _DATA:
                used = self._data(data)
                data = data[used:]
            elif mode == _BDAT:
                take = min(self._bdat_left, len(data))
                self._message_bytes(data[:take])
                self._bdat_left -= take
                data = data[take:]
                if self._bdat_left == 0:
                    self._bdat_done()
            elif mode == _TLS_WAIT:
                room = TLS_HOLD - len(self._tls_hold)
                if len(data) > room:
                    self.ctx.stats.incr("smtp.cap_hit", cap="tls_hold")
                self._tls_hold += data[:room]
                data = b""
            else:  # _TLS
                if self._tls is not None:
                    self._tls.feed(TO_SERVER, data, self.ts)
                data = b""

    def _command_lines(self) -> None:
        buf = self._cbuf
        while self._mode == _CMD:
            nl = buf.find(b"\n")
            if nl == -1:
                if len(buf) > self.max_line:
                    if not self._cskip:
                        self.ctx.anomaly("smtp.line_too_long", direction=TO_SERVER)
                    self._cskip = True
                    buf.clear()
                return
            line = bytes(buf[:nl]).rstrip(b"\r")
            del buf[: nl + 1]
            if self._cskip:
                self._cskip = False
                continue
            if len(line) > self.max_line:
                self.ctx.anomaly("smtp.line_too_long", direction=TO_SERVER)
                line = line[: self.max_line]
            self._command(line)

    def _command(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace")
        verb, _, arg = text.strip().partition(" ")
        verb = verb.upper()
        mail = self._mail
        if verb in ("EHLO", "HELO", "LHLO"):
            self.helo = arg.strip()[:255]
            if self.helo:
                self.ctx.learn_name(self.ctx.flow.client, self.helo, "smtp_helo")
        elif verb == "MAIL" and arg[:5].upper() == "FROM:":
            self._drop_mail()  # a mail abandoned without (or in the middle of) its message
            mail = self._new_mail()
            mail.mail_from = _address_arg(arg[5:])[:1024]
            self.ctx.tx_info(mail.tx_id, self.tx_body(mail))
        elif verb == "RCPT" and arg[:3].upper() == "TO:":
            mail = mail or self._new_mail()
            if len(mail.rcpt_to) < MAX_RCPT:
                mail.rcpt_to.append(_address_arg(arg[3:])[:1024])
            else:
                self.ctx.stats.incr("smtp.cap_hit", cap="rcpt")
            self.ctx.tx_info(mail.tx_id, self.tx_body(mail))
        elif verb == "DATA":
            if mail is not None and mail.mime is not None:
                self._drop_mail()  # DATA in the middle of a BDAT message: that message ends here
                mail = None
            mail = mail or self._new_mail()
            self._start_message(mail)
            self._mode = _DATA
            self._mbuf = bytearray(b"\n")
            self._stuffed = True
            self._msent = True
            self._mdots = False
        elif verb == "BDAT":
            self._bdat(arg)
            return  # its pending entry is pushed by _bdat
        elif verb == "RSET":
            self._drop_mail()
        elif verb == "STARTTLS":
            self._mode = _TLS_WAIT
        self._push(_Pending(verb, self._mail))

    def _bdat(self, arg: str) -> None:
        words = arg.split()
        try:
            size = int(words[0]) if words and words[0].isdigit() else -1
        except ValueError:
            size = -1
        if size < 0:
            self.ctx.anomaly("smtp.bdat_invalid_size", direction=TO_SERVER)
            self._push(_Pending("BDAT"))
            return
        mail = self._mail or self._new_mail()
        if mail.mime is None:
            self._start_message(mail)
            self._mbuf = bytearray()
            self._stuffed = self._msent = False
        self._bdat_last = len(words) > 1 and words[1].upper() == "LAST"
        self._bdat_left = size
        self._push(_Pending("BDAT", mail, self._bdat_last))
        self._mode = _BDAT
        if size == 0:
            self._bdat_done()

    def _bdat_done(self) -> None:
        self._mode = _CMD
        if self._bdat_last:
            self._end_message(reply_pending=False)  # the reply to BDAT ... LAST ends the mail

    def _data(self, data: bytes) -> int:
        """Consume DATA bytes; returns how many of ``data`` belong to the message (incl. the end)."""
        buf = self._mbuf
        old = len(buf)
        buf += data
        # The end marker is "\n.\r\n" or "\n.\n" (_mbuf starts with a line break at the message's
        # start): look where it may begin, including the last 3 bytes already searched. Both it and
        # dot-stuffing start with "\n.", which most runs (base64) never contain: a memchr for "."
        # decides for them (sre's search for "\n." costs ten times more per byte).
        start = old - 3 if old > 3 else 0
        first_dot = buf.find(b".", start + 1)
        dot = _LINE_DOT.search(buf, first_dot - 1) if first_dot != -1 else None
        m = None
        if dot is not None:
            m = _END_MARKER.search(buf, dot.start())
            if m is None or m.start() != dot.start():
                # A stuffed line to unstuff (or a marker not yet complete). The marker itself is
                # cut off below, so when it is the only "\n." the run needs no unstuffing pass.
                self._mdots = True
        if m is None:
            if len(buf) >= MESSAGE_BATCH:
                self._flush_message(hold=True)
            return len(data)
        end = m.start()
        used = m.end() - old
        # The line break before the terminating "." belongs to the end marker.
        del buf[end - 1 if end > 0 and buf[end - 1] == 13 else end :]
        self._mode = _CMD
        self._end_message()
        return used

    def _flush_message(self, hold: bool = False) -> None:
        """Hand the gathered message bytes to the MIME parser (DATA bytes dot-unstuffed).

        ``hold``: more bytes follow, so a trailing line break (it may precede the end marker) and
        what follows it within the last 3 bytes (a dot that may be stuffing or the marker's) stay.
        """
        buf = self._mbuf
        n = len(buf)
        if self._stuffed and hold:
            nl = buf.rfind(b"\n", max(0, n - 3))
            if nl != -1:
                n = nl - 1 if nl > 0 and buf[nl - 1] == 13 else nl
            elif n and buf[n - 1] == 13:
                n -= 1
        first = 1 if self._msent else 0
        if n <= first:
            return
        with memoryview(buf) as view, view[:n] as run:
            chunk = run.tobytes()  # one copy (bytes(buf[:n]) makes two)
        del buf[:n]
        if self._stuffed:
            # RFC 5321 4.5.2: the first dot of a line is removed. The run starts with a line break
            # (or the message's start), so every line start is preceded by one inside it.
            if self._mdots:
                chunk = _LINE_DOT.sub(b"\n", chunk)  # twice as fast as bytes.replace on text
                self._mdots = b"\n." in buf  # the few bytes held back
            if first:
                chunk = chunk[1:]
                self._msent = False
        self._deliver(chunk)

    def _drop_mail(self) -> None:
        """Finish the current transaction now (RSET, a new MAIL, STARTTLS, the flow's end)."""
        mail = self._mail
        if mail is None:
            return
        if mail.mime is not None and not mail.complete:
            # Inside a message (DATA without its end, BDAT without LAST): what came is kept.
            mail.truncated = True
            self._end_message(aborted=True)
            if self._mode in (_DATA, _BDAT):
                self._mode = _CMD
        else:
            self._emit(mail)
        self._mail = None

    # ------------------------------------------------------------ messages

    def _new_mail(self) -> _Mail:
        mail = _Mail(tx_id=self._next_tx)
        self._next_tx += 1
        self._mail = mail
        mail.app["smtp"] = self._smtp_object(mail)
        return mail

    def _start_message(self, mail: _Mail) -> None:
        self._sink = _MailSink(self, mail)
        mail.mime = MimeParser(self._sink, self.limits, self.ctx.stats)

    def _message_bytes(self, data: bytes) -> None:
        """BDAT bytes (not dot-stuffed): gathered, handed over in runs."""
        buf = self._mbuf
        buf += data
        if len(buf) >= MESSAGE_BATCH:
            self._flush_message()

    def _deliver(self, data: bytes) -> None:
        mail = self._mail
        if mail is None or mail.mime is None or not data:
            return
        mail.data_bytes += len(data)
        mail.mime.feed(data)

    def _end_message(self, aborted: bool = False, reply_pending: bool = True) -> None:
        mail = self._mail
        if mail is None or mail.mime is None:
            return
        self._flush_message()  # what is gathered is message content now (even a last line break)
        self._mbuf = bytearray()
        self._stuffed = self._msent = False
        if self._sink is not None:
            self._sink.aborting = aborted or mail.truncated
        mail.mime.finish()
        mail.complete = not aborted
        self._sink = None
        self._mail = None
        if aborted:
            self._emit(mail)
        else:
            self._waiting.append(mail)
            if reply_pending:
                self._push(_Pending("EOM", mail))

    def _abort_data(self, mail: _Mail) -> None:
        """The server refused DATA before any message byte: back to commands."""
        if self._mode == _DATA and self._mail is mail and mail.data_bytes == 0:
            self._mode = _CMD
            if self._sink is not None:  # a gap may have opened a part already: close it
                for f in self._sink.files.values():
                    f.close(STATE_TRUNCATED)
            mail.mime = None
            self._sink = None
            # Nothing reached the MIME parser: the bytes sent after DATA were commands.
            held = self._mbuf[1:] if self._msent else self._mbuf
            self._mbuf = bytearray()
            self._stuffed = self._msent = False
            if held:
                self._cbuf[:0] = held
                rest = bytes(self._cbuf)
                self._cbuf.clear()
                self._client(rest)

    # ------------------------------------------------------------ server

    def _server(self, data: bytes) -> None:
        if self._server_tls:
            if self._tls is not None:
                self._tls.feed(TO_CLIENT, data, self.ts)
            return
        buf = self._sbuf
        buf += data
        while not self._server_tls:
            nl = buf.find(b"\n")
            if nl == -1:
                if len(buf) > self.max_line:
                    if not self._sskip:
                        self.ctx.anomaly("smtp.line_too_long", direction=TO_CLIENT)
                    self._sskip = True
                    buf.clear()
                return
            line = bytes(buf[:nl]).rstrip(b"\r")
            del buf[: nl + 1]
            if self._sskip:
                self._sskip = False
                continue
            if len(line) > self.max_line:
                self.ctx.anomaly("smtp.line_too_long", direction=TO_CLIENT)
                line = line[: self.max_line]
            m = _REPLY.match(line)
            if m is None:
                self.ctx.anomaly("smtp.invalid_reply", direction=TO_CLIENT)
                continue
            if m.group(2) != b"-":
                self._reply(int(m.group(1)))
        if buf and self._tls is not None:
            rest = bytes(buf)
            buf.clear()
            self._tls.feed(TO_CLIENT, rest, self.ts)

    def _reply(self, code: int) -> None:
        if not self._pending:
            if not self._greeted:
                self._greeted = True
            else:
                self.ctx.anomaly("smtp.unmatched_reply", direction=TO_CLIENT)
            return
        self._greeted = True
        cmd = self._pending.popleft()
        if cmd.verb == "STARTTLS":
            if code == 220:
                self._start_tls()
            else:
                self._mode = _CMD
                held = bytes(self._tls_hold)
                self._tls_hold.clear()
                if held:
                    self._client(held)
        elif cmd.verb == "DATA" and code >= 400 and cmd.mail is not None:
            self._abort_data(cmd.mail)
        elif cmd.mail is not None and (cmd.verb == "EOM" or cmd.verb == "BDAT" and cmd.last) and cmd.mail.complete:
            self._emit(cmd.mail)
            if cmd.mail in self._waiting:
                self._waiting.remove(cmd.mail)

    def _push(self, cmd: _Pending) -> None:
        if len(self._pending) >= MAX_PENDING:
            self._pending.popleft()
            self.ctx.stats.incr("smtp.cap_hit", cap="pending")
        self._pending.append(cmd)

    def _start_tls(self) -> None:
        self.starttls = True
        self._server_tls = True
        self._mode = _TLS
        self._tls = tls_handoff(self.ctx)
        self._drop_mail()
        self._emit(self._new_mail())  # records the upgrade (helo, starttls)
        self._mail = None
        held = bytes(self._tls_hold)
        self._tls_hold.clear()
        if held and self._tls is not None:
            self._tls.feed(TO_SERVER, held, self.ts)

    # ------------------------------------------------------------ events

    def _smtp_object(self, mail: _Mail) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        if self.helo:
            obj["helo"] = self.helo
        if mail.mail_from is not None:
            obj["mail_from"] = mail.mail_from
        obj["rcpt_to"] = list(mail.rcpt_to)
        if self.starttls:
            obj["starttls"] = True
        return obj

    def tx_body(self, mail: _Mail) -> dict[str, Any]:
        smtp = mail.app.get("smtp", {})
        smtp.update(self._smtp_object(mail))
        mail.app["smtp"] = smtp
        body: dict[str, Any] = {"smtp": smtp}
        if mail.email is not None:
            body["email"] = mail.email
        return body

    def _emit(self, mail: _Mail) -> None:
        if mail.emitted:
            return
        mail.emitted = True
        body = self.tx_body(mail)
        if mail.email is not None:
            mail.email["status"] = "TRUNCATED" if mail.truncated else "PARSE_DONE" if mail.complete else "INCOMPLETE"
        elif mail.mime is None and mail.data_bytes == 0 and not self.starttls and not mail.rcpt_to \
                and mail.mail_from is None:
            return  # nothing happened in this transaction
        self.ctx.event("smtp", body, direction=TO_SERVER, tx_id=mail.tx_id, ts=self.ts)


def tls_handoff(ctx: AppContext) -> AppParser | None:
    """The registry's TLS parser for the rest of the session, when the registry provides one."""
    try:
        from monitor.applayer import registry  # type: ignore[attr-defined]

        parser: AppParser | None = registry.create("tls", ctx)
    except Exception:  # noqa: BLE001 - no registry, or no TLS parser in it: the bytes stay unparsed
        ctx.stats.incr("applayer.tls_handoff_missing")
        return None
    return parser
