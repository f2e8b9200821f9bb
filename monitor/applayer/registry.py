"""Which parser reads a flow: detection by content first, ports only as hints.

:func:`new_tcp_parser` returns a :class:`DetectingParser`. It holds the first bytes of each
direction (at most ``PROBE_LIMIT`` per direction), runs the probes below, and once one
protocol matches it creates that parser, replays the held bytes in their original order and
forwards everything after. Nothing matches -> the flow's protocol is ``failed`` (counter
``applayer.detect_failed``); the pipeline's raw-stream matching still sees every byte.

Probes (``MATCH`` / ``NO`` / ``MAYBE`` = need more bytes):

| protocol | evidence | ports |
|---|---|---|
| tls  | a record header ``16 03 0[0-4]`` with a ClientHello/ServerHello, either direction | any |
| http | a request line (known method, or any token + ``HTTP/1.x``) or a response starting ``HTTP/`` | any |
| smtp | server ``220`` greeting and client ``EHLO``/``HELO``/``LHLO``; or the client command alone when the server side is missing from the capture | 25/587/2525 decide a bare ``220 ... SMTP`` greeting |
| ftp  | server ``220`` greeting and client ``USER``/``AUTH TLS``/``FEAT``/``SYST``/``OPTS`` | any (client alone: 21 only) |
| dns  | a 2-byte length prefix framing a plausible DNS header | 53/5353 only |

Parser errors are contained here (mitmproxy's ``safecall``): a parser that raises is
counted (``applayer.parser_error``), reported as an anomaly and detached; the flow keeps its
raw-stream matching.

Once the protocol is decided the detecting parser steps out of the per-segment path: if it is
the flow's parser (``ctx.flow.parser``), it puts the protocol parser itself there, so the
pipeline's ``flow.parser.feed(...)`` reaches it with no forwarding call and no ``Guarded``
call -- the pipeline's own ``try`` around every parser call contains errors the same way
(``applayer.parser_error`` anomaly, parser detached). A detecting parser that is not the flow's
parser (inside an HTTP tunnel) keeps forwarding through ``Guarded``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from monitor.applayer.base import AppContext, AppParser
from monitor.model import TO_CLIENT, TO_SERVER

PROBE_LIMIT = 8 << 10
MATCH, NO, MAYBE = 1, 0, 2

SMTP_PORTS = frozenset({25, 587, 2525})
DNS_PORTS = frozenset({53, 5353})

_HTTP_METHODS = (
    b"GET", b"POST", b"PUT", b"HEAD", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE",
    b"PROPFIND", b"PROPPATCH", b"MKCOL", b"COPY", b"MOVE", b"LOCK", b"UNLOCK", b"SEARCH",
    b"REPORT", b"SUBSCRIBE", b"NOTIFY", b"M-SEARCH", b"PURGE",
)
_SMTP_CLIENT = (b"EHLO", b"HELO", b"LHLO")
_FTP_CLIENT = (b"USER", b"AUTH TLS", b"AUTH SSL", b"FEAT", b"SYST", b"OPTS", b"PASS")

# name -> (module, class); SMTP and FTP are written elsewhere and may not be installed yet.
_PARSERS: dict[str, tuple[str, str]] = {
    "http": ("monitor.applayer.http1", "HttpParser"),
    "tls": ("monitor.applayer.tls", "TlsParser"),
    "dns": ("monitor.applayer.dns", "DnsParser"),
    "smtp": ("monitor.applayer.smtp", "SmtpParser"),
    "ftp": ("monitor.applayer.ftp", "FtpParser"),
}


_LOADED: dict[tuple[str, str], Callable[[AppContext], AppParser]] = {}  # spec -> class, once imported


def _factory(name: str) -> Callable[[AppContext], AppParser] | None:
    spec = _PARSERS.get(name)
    if spec is None:
        return None
    cls = _LOADED.get(spec)
    if cls is not None:
        return cls  # every flow after the first: no trip through the import machinery
    try:
        cls = getattr(importlib.import_module(spec[0]), spec[1])
    except (ImportError, AttributeError):
        return None  # not cached: a parser installed later is still found
    _LOADED[spec] = cls
    return cls


def create(name: str, ctx: AppContext) -> Guarded | None:
    """A parser for ``name`` (hand-offs: HTTP CONNECT and SMTP STARTTLS -> ``tls``), or None."""
    factory = _factory(name)
    if factory is None:
        ctx.stats.incr("applayer.parser_missing", proto=name)
        return None
    if name == "dns":
        return Guarded(_dns_parser_class()(ctx, tcp=True), ctx)
    return Guarded(factory(ctx), ctx)


# ---------------------------------------------------------------- probes


def probe_tls(buf: bytes) -> int:
    if not buf:
        return MAYBE
    if buf[0] != 0x16:
        return NO
    if len(buf) >= 2 and buf[1] != 0x03:
        return NO
    if len(buf) >= 3 and buf[2] > 0x04:
        return NO
    if len(buf) < 6:
        return MAYBE
    return MATCH if buf[5] in (1, 2) else NO


def probe_http_request(buf: bytes) -> int:
    if not buf:
        return MAYBE
    head = buf[:24]
    for m in _HTTP_METHODS:
        if head.startswith(m + b" "):
            return MATCH
        if len(head) <= len(m) and m.startswith(head):
            return MAYBE
    # An unknown method is HTTP only with a full request line ending in HTTP/1.x.
    nl = buf.find(b"\n", 0, 4096)
    if nl < 0:
        if len(buf) < 4096 and buf[:1].isalpha() and buf.split(b" ", 1)[0].isalpha():
            return MAYBE if b" " in buf[:20] else NO
        return NO
    parts = buf[:nl].split()
    if len(parts) == 3 and parts[0].isalpha() and parts[2].upper().startswith(b"HTTP/1."):
        return MATCH
    return NO


def probe_http_response(buf: bytes) -> int:
    if not buf:
        return MAYBE
    head = buf[:5].upper()
    if head == b"HTTP/":
        return MATCH
    return MAYBE if b"HTTP/".startswith(head) else NO


def probe_greeting(server: bytes) -> int:
    """A ``220`` service greeting (SMTP and FTP both start this way)."""
    if not server:
        return MAYBE
    if len(server) < 4:
        return MAYBE if b"220 ".startswith(server) or b"220-".startswith(server) else NO
    return MATCH if server[:3] == b"220" and server[3:4] in (b" ", b"-") else NO


def _first_word(buf: bytes, words: tuple[bytes, ...]) -> int:
    if not buf:
        return MAYBE
    up = buf[:16].upper()
    for w in words:
        if up.startswith(w) and (len(up) > len(w) and up[len(w):len(w) + 1] in (b" ", b"\r", b"\n")):
            return MATCH
        if len(up) <= len(w) and w.startswith(up):
            return MAYBE
    return NO


def probe_dns_tcp(buf: bytes) -> int:
    if len(buf) < 14:
        return MAYBE
    length = int.from_bytes(buf[:2], "big")
    qd, an = int.from_bytes(buf[6:8], "big"), int.from_bytes(buf[8:10], "big")
    opcode = (buf[4] >> 3) & 0x0F
    if length >= 12 and qd <= 16 and an <= 512 and opcode in (0, 1, 2, 4, 5):
        return MATCH
    return NO


# ---------------------------------------------------------------- detecting parser


class Guarded:
    """Runs a parser and contains its exceptions (counted, reported, parser detached)."""

    def __init__(self, inner: AppParser, ctx: AppContext) -> None:
        self.inner: AppParser | None = inner
        self.ctx = ctx
        self.name = inner.name

    def _fail(self, exc: BaseException) -> None:
        self.ctx.stats.incr("applayer.parser_error", proto=self.name)
        self.ctx.anomaly("applayer.parser_error", f"{self.name}: {type(exc).__name__}")
        self.inner = None

    def feed(self, direction: int, data: bytes, ts: float) -> None:
        if self.inner is not None:
            try:
                self.inner.feed(direction, data, ts)
            except Exception as exc:  # noqa: BLE001 - containment is the point
                self._fail(exc)

    def gap(self, direction: int, length: int, ts: float) -> None:
        if self.inner is not None:
            try:
                self.inner.gap(direction, length, ts)
            except Exception as exc:  # noqa: BLE001
                self._fail(exc)

    def close(self, ts: float) -> None:
        if self.inner is not None:
            try:
                self.inner.close(ts)
            except Exception as exc:  # noqa: BLE001
                self._fail(exc)


class DetectingParser:
    """Probes the first bytes, then becomes the detected protocol's parser."""

    name = "detect"

    def __init__(self, ctx: AppContext, tunnel: bool = False) -> None:
        self.ctx = ctx
        self.tunnel = tunnel  # inside HTTP CONNECT/Upgrade: the flow keeps its "http" name
        self.held: list[tuple[int, bytes | int, float]] = []  # (dir, data | gap length, ts)
        self.seen = [b"", b""]
        self.target: Guarded | None = None
        self.failed = False
        self.proto: str | None = None

    # -- AppParser

    def feed(self, direction: int, data: bytes, ts: float) -> None:
        if self.target is not None:
            self.target.feed(direction, data, ts)
            return
        if self.failed or not data:
            return
        self.held.append((direction, data, ts))
        if len(self.seen[direction]) < PROBE_LIMIT:
            self.seen[direction] += data[: PROBE_LIMIT - len(self.seen[direction])]
        self._decide(final=False)

    def gap(self, direction: int, length: int, ts: float) -> None:
        if self.target is not None:
            self.target.gap(direction, length, ts)
            return
        if self.failed:
            return
        if not self.seen[direction]:
            # A hole before the first byte: what follows is mid-stream; probing still helps.
            self.ctx.stats.incr("applayer.detect_gap")
        self.held.append((direction, length, ts))

    def close(self, ts: float) -> None:
        if self.target is None and not self.failed:
            self._decide(final=True)
        if self.target is not None:
            self.target.close(ts)

    # -- detection

    def _decide(self, final: bool) -> None:
        proto = self._detect(final)
        if proto is None:
            return
        if proto == "failed":
            self.failed = True
            self.held.clear()
            self.ctx.stats.incr("applayer.detect_failed")
            if not self.tunnel:
                self.ctx.set_app_proto("failed")
            return
        self.proto = proto
        if not self.tunnel:
            self.ctx.set_app_proto(proto)
        self.ctx.stats.incr("applayer.detected", proto=proto)
        target = create(proto, self.ctx)
        held, self.held = self.held, []
        if target is None:
            self.failed = True
            return
        self.target = target
        for direction, item, ts in held:
            if isinstance(item, int):
                target.gap(direction, item, ts)
            else:
                target.feed(direction, item, ts)
        flow = self.ctx.flow
        if not self.tunnel and flow.parser is self:
            # Out of the per-segment path (see the module docstring): None when the parser
            # already failed on the held bytes (it was detached and reported).
            flow.parser = target.inner

    def _detect(self, final: bool) -> str | None:
        flow = self.ctx.flow
        cli, srv = self.seen[TO_SERVER], self.seen[TO_CLIENT]
        results: dict[str, int] = {}
        t_c, t_s = probe_tls(cli), probe_tls(srv)
        if MATCH in (t_c, t_s):
            return "tls"
        results["tls"] = MAYBE if MAYBE in (t_c, t_s) and (not cli or t_c == MAYBE) else NO
        h_req, h_resp = probe_http_request(cli), probe_http_response(srv)
        if h_req == MATCH or (h_resp == MATCH and not cli):
            return "http"
        if h_resp == MATCH and h_req != NO:
            return "http"
        results["http"] = MAYBE if MAYBE in (h_req,) or (h_resp == MAYBE and not cli) else NO
        greet = probe_greeting(srv)
        if greet == MATCH:
            smtp_cmd = _first_word(cli, _SMTP_CLIENT)
            ftp_cmd = _first_word(cli, _FTP_CLIENT)
            if smtp_cmd == MATCH:
                return "smtp"
            if ftp_cmd == MATCH:
                return "ftp"
            banner = srv[:200].upper()
            if not cli and final:
                if flow.sport in SMTP_PORTS or b"SMTP" in banner:
                    return "smtp"
                if b"FTP" in banner or flow.sport == 21:
                    return "ftp"
            results["mail"] = MAYBE if MAYBE in (smtp_cmd, ftp_cmd) else NO
        elif not srv and cli:
            # The server's side is not in the capture (asymmetric tap, one-way loopback
            # recording): a client that opens with a mail greeting command is SMTP; an FTP
            # login is FTP only on port 21 (POP3 clients send USER too).
            if _first_word(cli, _SMTP_CLIENT) == MATCH:
                return "smtp"
            if flow.sport == 21 and _first_word(cli, _FTP_CLIENT) == MATCH:
                return "ftp"
            results["mail"] = greet
        else:
            results["mail"] = greet
        if flow.sport in DNS_PORTS or flow.cport in DNS_PORTS:
            d = probe_dns_tcp(cli) if cli else probe_dns_tcp(srv)
            if d == MATCH:
                return "dns"
            results["dns"] = d
        pending = any(v == MAYBE for v in results.values())
        full = len(cli) >= PROBE_LIMIT or len(srv) >= PROBE_LIMIT
        if final or full or not pending:
            return "failed"
        return None


def new_tcp_parser(ctx: AppContext, tunnel: bool = False) -> AppParser:
    """The parser for a new TCP flow (detects the protocol from its first bytes)."""
    return DetectingParser(ctx, tunnel=tunnel)


def new_udp_parser(ctx: AppContext) -> AppParser | None:
    """The parser for a new UDP flow: DNS on 53/5353, else None (raw matching only).

    The DNS parser itself, not wrapped in :class:`Guarded`: it is the flow's parser, and the
    pipeline's ``try`` around every datagram's ``feed`` contains its errors the same way (the
    ``applayer.parser_error`` counter and anomaly, parser detached) -- as for a TCP flow's parser
    once detected. The class is looked up once (no import statement per flow)."""
    flow = ctx.flow
    if flow.sport in DNS_PORTS or flow.cport in DNS_PORTS:
        dns_parser = _dns_parser_class()
        ctx.set_app_proto("dns")
        return dns_parser(ctx, tcp=False)
    return None


def _dns_parser_class() -> Any:
    cls = _LOADED.get(_PARSERS["dns"])
    if cls is None:
        from monitor.applayer.dns import DnsParser

        cls = _LOADED[_PARSERS["dns"]] = DnsParser
    return cls


def known_protocols() -> dict[str, Any]:
    """name -> whether its parser is importable (for ``check`` commands and tests)."""
    return {name: _factory(name) is not None for name in _PARSERS}


__all__ = ["DetectingParser", "Guarded", "create", "new_tcp_parser", "new_udp_parser", "TO_CLIENT"]
