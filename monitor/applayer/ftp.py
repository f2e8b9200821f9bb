"""FTP (RFC 959, 2428 EPRT/EPSV, 3659 MLSD): control channel and data connections.

:class:`FtpParser` parses the control connection: commands, single- and multi-line replies,
matched in order (1xx replies are preliminary, the next final reply completes the command). One
EVE ``ftp`` event per command with its replies (``command``, ``command_data`` -- never for
``PASS``/``ACCT``, ``reply``, ``completion_code``, ``dynamic_port``, ``mode``).

Data connections are announced before they are opened, so each announcement registers an
expectation with :meth:`AppContext.expect`:

* passive: the port of a ``227`` (PASV) or ``229`` (EPSV) reply on the control connection's
  server (clients such as ftplib and curl ignore the 227 address; when it differs, a second
  expectation for it is registered too); the data connection's client is the FTP client;
* active: the address/port of ``PORT``/``EPRT`` (IPv4 and IPv6), registered when the command
  is seen (pyftpdlib connects before it replies ``200``); the FTP server connects to it, so the
  FTP *client* is that flow's server.

The expectation's ``info`` dict is live: ``command``, ``filename`` and ``tx_id`` are filled in when
the data command (STOR, STOU, APPE, RETR, LIST, NLST, MLSD) follows -- ftplib opens a passive
data connection before it sends the command. :class:`FtpDataParser` reads them when data flows
and when the connection closes: file transfers become one file object (``source
ftp.data[STOR]``, named after the command's argument), listings are inspected buffers only;
either way an EVE ``ftp_data`` event (``command``, ``filename``) is written.
"""

from __future__ import annotations

import ipaddress
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from monitor.applayer.base import AppContext, AppParser
from monitor.applayer.smtp import tls_handoff
from monitor.content import charsets
from monitor.files import STATE_TRUNCATED, FileObject
from monitor.model import TO_CLIENT, TO_SERVER

UPLOADS = frozenset({"STOR", "STOU", "APPE"})
DOWNLOADS = frozenset({"RETR"})
LISTINGS = frozenset({"LIST", "NLST", "MLSD"})
DATA_COMMANDS = UPLOADS | DOWNLOADS | LISTINGS
SECRET_COMMANDS = frozenset({"PASS", "ACCT", "ADAT"})

MAX_LINE = 8192  # control lines longer than this are cut (and reported)
MAX_REPLIES = 16  # reply lines kept per command
MAX_REPLY_TEXT = 512
MAX_PENDING = 64
LISTING_CHUNK = 64 * 1024  # listing bytes handed to detection per inspect() call

_PASV = re.compile(rb"(\d{1,3}),\s*(\d{1,3}),\s*(\d{1,3}),\s*(\d{1,3}),\s*(\d{1,3}),\s*(\d{1,3})")
_EPSV = re.compile(rb"\(([!-~])\1\1(\d{1,5})\1\)")
_REPLY = re.compile(rb"^(\d{3})([ -]|$)")
_STOU_NAME = re.compile(rb"(?i)FILE:\s*(\S.*)$")


@dataclass(slots=True)
class _Command:
    tx_id: int
    command: str
    data: str | None  # argument, None for secrets
    replies: list[str] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)
    dynamic_port: int | None = None
    mode: str | None = None
    active: tuple[bytes, int] | None = None  # PORT/EPRT target
    info: dict[str, Any] | None = None  # the data connection's live info (data commands)


def parse_port_arg(arg: str) -> tuple[bytes, int] | None:
    """``PORT h1,h2,h3,h4,p1,p2`` argument -> (packed IPv4, port)."""
    m = _PASV.search(arg.encode("latin-1", "replace"))
    if m is None:
        return None
    nums = [int(x) for x in m.groups()]
    if any(n > 255 for n in nums):
        return None
    port = nums[4] * 256 + nums[5]
    return bytes(nums[:4]), port


def parse_eprt_arg(arg: str) -> tuple[bytes, int] | None:
    """``EPRT |1|132.235.1.2|6275|`` or ``|2|::1|6275|`` -> (packed address, port)."""
    arg = arg.strip()
    if len(arg) < 7:
        return None
    parts = arg[1:].split(arg[0])
    if len(parts) < 3 or parts[0] not in ("1", "2") or not parts[2].isdigit():
        return None
    try:
        addr = ipaddress.ip_address(parts[1])
    except ValueError:
        return None
    port = int(parts[2])
    if port > 65535 or addr.version != (4 if parts[0] == "1" else 6):
        return None
    return addr.packed, port


def _text(raw: bytes) -> str:
    """Control-channel text: UTF-8 (RFC 2640) or a legacy Japanese encoding, sniffed."""
    if raw.isascii():
        return raw.decode("ascii")
    return charsets.decode(raw)


class FtpParser:
    """FTP control connection (see the module docstring)."""

    name = "ftp"

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        ctx.set_app_proto("ftp")
        self.ts = 0.0
        self._cbuf = bytearray()
        self._sbuf = bytearray()
        self._skip = [False, False]
        self._pending: deque[_Command] = deque()
        self._multiline: bytes | None = None  # code of an open multi-line reply
        self._next_tx = 0
        self._greeted = False
        self._unbound: dict[str, Any] | None = None  # announced data connection, no command yet
        self._tls: AppParser | None = None
        self._tls_wait = False
        self._rest = 0  # REST offset accepted for the next transfer

    # ------------------------------------------------------------ AppParser

    def feed(self, direction: int, data: bytes, ts: float) -> None:
        if not data:
            return
        self.ts = ts
        if self._tls is not None:
            self._tls.feed(direction, data, ts)
            return
        buf = self._cbuf if direction == TO_SERVER else self._sbuf
        buf += data
        while self._tls is None:
            nl = buf.find(b"\n")
            if nl == -1:
                if len(buf) > MAX_LINE:
                    if not self._skip[direction]:
                        self.ctx.anomaly("ftp.line_too_long", direction=direction)
                    self._skip[direction] = True
                    buf.clear()
                return
            line = bytes(buf[:nl]).rstrip(b"\r")
            del buf[: nl + 1]
            if self._skip[direction]:
                self._skip[direction] = False
                continue
            if len(line) > MAX_LINE:
                self.ctx.anomaly("ftp.line_too_long", direction=direction)
                line = line[:MAX_LINE]
            if direction == TO_SERVER:
                self._command(line)
            else:
                self._reply_line(line)
        if buf:  # the rest of this segment is already TLS
            rest = bytes(buf)
            buf.clear()
            self._tls.feed(direction, rest, ts)

    def gap(self, direction: int, length: int, ts: float) -> None:
        self.ts = ts
        if self._tls is not None:
            self._tls.gap(direction, length, ts)
            return
        (self._cbuf if direction == TO_SERVER else self._sbuf).clear()
        self._skip[direction] = True
        if direction == TO_CLIENT:
            self._multiline = None

    def close(self, ts: float) -> None:
        self.ts = ts
        if self._tls is not None:
            self._tls.close(ts)
        while self._pending:
            self._emit(self._pending.popleft(), received=False)

    # ------------------------------------------------------------ commands

    def _command(self, line: bytes) -> None:
        if self._tls_wait:
            return  # bytes after AUTH TLS before its reply: the handshake, already on its way
        text = _text(line).strip()
        if not text:
            return
        verb, _, arg = text.partition(" ")
        verb = verb.upper()[:16]
        arg = arg.strip()
        cmd = _Command(self._next_tx, verb, None if verb in SECRET_COMMANDS else arg[:MAX_LINE])
        self._next_tx += 1
        if verb in ("PORT", "EPRT"):
            cmd.active = parse_port_arg(arg) if verb == "PORT" else parse_eprt_arg(arg)
            cmd.mode = "active"
            if cmd.active is None:
                self.ctx.anomaly(f"ftp.invalid_{verb.lower()}", direction=TO_SERVER, tx_id=cmd.tx_id)
            else:
                # Servers such as pyftpdlib connect as soon as they read PORT, before replying.
                addr, port = cmd.active
                cmd.dynamic_port = port
                self._unbound = self._expect(addr, port, self.ctx.flow.server, "active")
        elif verb in ("PASV", "EPSV"):
            cmd.mode = "passive"
        elif verb in DATA_COMMANDS:
            self._bind_data(cmd, arg)
        elif verb == "AUTH" and arg.upper() in ("TLS", "SSL", "TLS-C", "TLS-P"):
            self._tls_wait = True
        if len(self._pending) >= MAX_PENDING:
            self._emit(self._pending.popleft(), received=False)
            self.ctx.stats.incr("ftp.cap_hit", cap="pending")
        self._pending.append(cmd)
        self.ctx.tx_info(cmd.tx_id, {"ftp": self._ftp_object(cmd)})

    def _bind_data(self, cmd: _Command, arg: str) -> None:
        info = self._unbound
        self._unbound = None
        if info is None:
            # No PASV/PORT first: RFC 959 default, the server connects from port 20 to the
            # client's control port.
            flow = self.ctx.flow
            info = self._expect(flow.client, flow.cport, flow.server, "active")
        info["command"] = cmd.command
        info["filename"] = arg or None
        if self._rest:
            info["rest"] = self._rest  # a partial transfer: no hash is claimed for it
            self._rest = 0
        info["tx_id"] = cmd.tx_id
        cmd.info = info
        cmd.mode = info.get("mode")
        cmd.dynamic_port = info.get("port")
        if arg and cmd.command not in LISTINGS:
            self.ctx.inspect(arg.encode("utf-8"), where=f"ftp.command[{cmd.command}]", direction=TO_SERVER,
                             tx_id=cmd.tx_id, charset="utf-8")

    def _expect(self, server: bytes | None, port: int, client: bytes | None, mode: str) -> dict[str, Any]:
        info: dict[str, Any] = {"command": None, "filename": None, "tx_id": None, "mode": mode, "port": port,
                                "control_flow_id": self.ctx.flow.flow_id}
        self.ctx.expect(server=server, server_port=port, client=client,
                        factory=data_factory(info), info=info)
        return info

    # ------------------------------------------------------------ replies

    def _reply_line(self, line: bytes) -> None:
        if self._multiline is not None:
            if line[:3] == self._multiline and line[3:4] in (b" ", b""):
                code = self._multiline
                self._multiline = None
                self._reply(code, line[4:])
            elif self._pending:
                self._add_text(self._pending[0], line)
            return
        m = _REPLY.match(line)
        if m is None:
            self.ctx.anomaly("ftp.invalid_reply", direction=TO_CLIENT)
            return
        if m.group(2) == b"-":
            self._multiline = m.group(1)
            if self._pending:
                self._add_text(self._pending[0], line[4:])
            return
        self._reply(m.group(1), line[4:])

    def _add_text(self, cmd: _Command, text: bytes) -> None:
        if len(cmd.replies) < MAX_REPLIES:
            cmd.replies.append(_text(text[:MAX_REPLY_TEXT]))

    def _reply(self, code_b: bytes, text: bytes) -> None:
        if not self._pending:
            if self._greeted:
                self.ctx.anomaly("ftp.unmatched_reply", direction=TO_CLIENT)
            self._greeted = True
            return
        self._greeted = True
        cmd = self._pending[0]
        code = int(code_b)
        cmd.codes.append(code_b.decode("ascii"))
        self._add_text(cmd, text)
        if code < 200:
            if cmd.command == "STOU" and cmd.info is not None and not cmd.info.get("filename"):
                m = _STOU_NAME.search(text)
                if m:
                    cmd.info["filename"] = _text(m.group(1).strip())[:MAX_LINE]
            return  # preliminary: the final reply is still to come
        self._pending.popleft()
        self._final(cmd, code, text)
        self._emit(cmd, received=True)

    def _final(self, cmd: _Command, code: int, text: bytes) -> None:
        flow = self.ctx.flow
        if code == 227 and cmd.command == "PASV":
            m = _PASV.search(text)
            if m is None:
                self.ctx.anomaly("ftp.invalid_pasv_reply", direction=TO_CLIENT, tx_id=cmd.tx_id)
                return
            nums = [int(x) for x in m.groups()]
            port = nums[4] * 256 + nums[5]
            if any(n > 255 for n in nums) or port == 0:
                self.ctx.anomaly("ftp.invalid_pasv_reply", direction=TO_CLIENT, tx_id=cmd.tx_id)
                return
            cmd.dynamic_port = port
            self._unbound = self._expect(flow.server, port, flow.client, "passive")
            announced = bytes(nums[:4])
            if flow.ip_version == 4 and announced not in (flow.server, b"\0\0\0\0"):
                # A different address (NAT, or an FTP bounce): expect that too, sharing the info.
                info = self._unbound
                self.ctx.expect(server=announced, server_port=port, client=flow.client,
                                factory=data_factory(info), info=info)
        elif code == 229 and cmd.command == "EPSV":
            m = _EPSV.search(text)
            port = int(m.group(2)) if m else 0
            if not 0 < port <= 65535:
                self.ctx.anomaly("ftp.invalid_epsv_reply", direction=TO_CLIENT, tx_id=cmd.tx_id)
                return
            cmd.dynamic_port = port
            self._unbound = self._expect(flow.server, port, flow.client, "passive")
        elif code >= 400 and cmd.command in ("PORT", "EPRT") and self._unbound is not None:
            self._unbound["refused"] = True  # the expectation expires unused
            self._unbound = None
        elif code == 350 and cmd.command == "REST" and cmd.data and cmd.data.isdigit():
            self._rest = int(cmd.data[:20])
        elif code == 234 and cmd.command == "AUTH":
            self._tls = tls_handoff(self.ctx)
            if self._tls is None:
                self.ctx.stats.incr("ftp.tls_unparsed")
                self._tls = _Ignore()
        elif cmd.command == "AUTH":
            self._tls_wait = False
        elif code >= 400 and cmd.info is not None:
            cmd.info["refused"] = True

    def _ftp_object(self, cmd: _Command) -> dict[str, Any]:
        obj: dict[str, Any] = {"command": cmd.command}
        if cmd.data:
            obj["command_data"] = cmd.data
        if cmd.replies:
            obj["reply"] = list(cmd.replies)
        if cmd.codes:
            obj["completion_code"] = list(cmd.codes)
        if cmd.dynamic_port is not None:
            obj["dynamic_port"] = cmd.dynamic_port
        if cmd.mode:
            obj["mode"] = cmd.mode
        return obj

    def _emit(self, cmd: _Command, *, received: bool) -> None:
        obj = self._ftp_object(cmd)
        obj["reply_received"] = "yes" if received else "no"
        self.ctx.event("ftp", {"ftp": obj}, direction=TO_SERVER, tx_id=cmd.tx_id, ts=self.ts)


def data_factory(info: dict[str, Any]) -> Callable[[AppContext], AppParser]:
    """The parser factory handed to ``expect`` for one announced data connection."""

    def factory(ctx: AppContext) -> AppParser:
        return FtpDataParser(ctx, info)

    return factory


class _Ignore:
    """Swallows the bytes of a TLS session nobody can parse."""

    name = "tls"

    def feed(self, direction: int, data: bytes, ts: float) -> None:
        pass

    def gap(self, direction: int, length: int, ts: float) -> None:
        pass

    def close(self, ts: float) -> None:
        pass


class FtpDataParser:
    """One FTP data connection: a file (transfers) or inspected buffers (listings)."""

    name = "ftp-data"

    def __init__(self, ctx: AppContext, info: dict[str, Any]) -> None:
        self.ctx = ctx
        self.info = info
        ctx.set_app_proto("ftp-data")
        self.direction: int | None = None
        self.file: FileObject | None = None
        self.listing: bytearray | None = None
        self.ts = 0.0
        self._wrong_way = False
        self._app: dict[str, Any] = {"ftp_data": {}}

    @property
    def command(self) -> str:
        return str(self.info.get("command") or "")

    def _expected_direction(self) -> int | None:
        """Where the bytes should flow, in this data connection's own terms."""
        cmd = self.command
        if not cmd:
            return None
        to_ftp_server = cmd in UPLOADS
        passive = self.info.get("mode") == "passive"
        # Passive: this flow's client is the FTP client; active: it is the FTP server.
        return TO_SERVER if to_ftp_server == passive else TO_CLIENT

    def _start(self, direction: int) -> None:
        self.direction = direction
        expected = self._expected_direction()
        if expected is not None and expected != direction:
            self.ctx.anomaly("ftp_data.unexpected_direction", direction=direction)
        cmd = self.command
        if cmd in LISTINGS:
            self.listing = bytearray()
            return
        self._update_app()
        self.file = self.ctx.open_file(direction, name=self.info.get("filename") or "",
                                       source=f"ftp.data[{cmd or 'unknown'}]", protocol="ftp-data",
                                       app=self._app)

    def _update_app(self) -> None:
        obj = self._app["ftp_data"]
        obj["command"] = self.command or "UNKNOWN"
        if self.info.get("filename"):
            obj["filename"] = self.info["filename"]

    def feed(self, direction: int, data: bytes, ts: float) -> None:
        if not data:
            return
        self.ts = ts
        if self.direction is None:
            self._start(direction)
        if direction != self.direction:
            # Data commands move bytes one way; anything the other way is still inspected.
            if not self._wrong_way:
                self._wrong_way = True
                self.ctx.anomaly("ftp_data.both_directions", direction=direction)
            self.ctx.inspect(data, where=f"ftp.data[{self.command or 'unknown'}] > reverse", direction=direction)
            return
        if self.file is not None:
            self.file.write(data)
        elif self.listing is not None:
            self.listing += data
            if len(self.listing) >= LISTING_CHUNK:
                self._flush_listing()

    def _flush_listing(self) -> None:
        if self.listing and self.direction is not None:
            self.ctx.inspect(bytes(self.listing), where=f"ftp.data[{self.command}]", direction=self.direction)
            self.listing.clear()

    def gap(self, direction: int, length: int, ts: float) -> None:
        self.ts = ts
        if self.direction is None:
            self._start(direction)
        if direction != self.direction:
            return
        if self.file is not None:
            self.file.gap(length)
        else:
            self._flush_listing()

    def close(self, ts: float) -> None:
        self.ts = ts
        self._flush_listing()
        self._update_app()
        if self.file is not None:
            if not self.file.name and self.info.get("filename"):
                self.file.name = self.info["filename"]  # the command followed the first bytes
            partial = bool(self.info.get("rest")) or bool(self.info.get("refused"))
            self.file.close(STATE_TRUNCATED if partial else None)
        if self.direction is None and not self.command:
            return  # an expected connection that carried nothing and matched no command
        # Flow orientation (as Suricata): src is the data connection's initiator; the file
        # object carries the direction the bytes moved.
        self.ctx.event("ftp_data", dict(self._app), ts=ts)
