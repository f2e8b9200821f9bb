"""Protocol detection by content (ports as hints), replay order, hand-offs, error containment."""

from __future__ import annotations

from monitor.applayer import registry
from monitor.applayer.registry import DetectingParser, new_tcp_parser, new_udp_parser
from monitor.model import PROTO_UDP, TO_CLIENT, TO_SERVER
from tests.factories import RecordingContext, tflow
from tests.monitor.applayer.test_dns import build_query
from tests.monitor.applayer.test_tls import client_hello


def detect(chunks: list[tuple[int, bytes]], sport: int = 8080, close: bool = True) -> RecordingContext:
    ctx = RecordingContext(flow=tflow(sport=sport))
    p = new_tcp_parser(ctx)
    for d, data in chunks:
        p.feed(d, data, 1.0)
    if close:
        p.close(2.0)
    return ctx


def test_http_on_any_port_with_bytes_replayed_in_order() -> None:
    ctx = detect([(TO_SERVER, b"GE"), (TO_SERVER, b"T /x HTTP/1.1\r\nHost: a\r\n\r\n"),
                  (TO_CLIENT, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")], sport=31337)
    assert ctx.flow.app_proto == "http"
    assert [(b["http"]["url"], b["http"]["status"]) for b in ctx.event_bodies("http")] == [("/x", 200)]
    assert ctx.closed_files[0].content() == b"hi"


def test_http_response_first_midstream() -> None:
    ctx = detect([(TO_CLIENT, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz")])
    assert ctx.flow.app_proto == "http" and "http.response_without_request" in ctx.anomalies


def test_tls_anywhere_and_dns_on_53() -> None:
    assert detect([(TO_SERVER, client_hello())], sport=8443).flow.app_proto == "tls"
    assert detect([(TO_SERVER, client_hello()[:3]), (TO_SERVER, client_hello()[3:])], sport=25).flow.app_proto == "tls"
    q = build_query(9, "files.example.jp", 1)
    ctx = detect([(TO_SERVER, len(q).to_bytes(2, "big") + q)], sport=53)
    assert ctx.flow.app_proto == "dns" and ctx.event_bodies("dns")[0]["dns"]["rrname"] == "files.example.jp"


def test_greeting_then_command_picks_smtp_or_ftp() -> None:
    ctx = detect([(TO_CLIENT, b"220 mx.example.jp ESMTP ready\r\n"), (TO_SERVER, b"EHLO pc1\r\n")], sport=2525)
    assert ctx.flow.app_proto == "smtp"
    ctx = detect([(TO_CLIENT, b"220 (vsFTPd 3.0.3)\r\n"), (TO_SERVER, b"USER anonymous\r\n")], sport=2121)
    assert ctx.flow.app_proto == "ftp"
    ctx = detect([(TO_CLIENT, b"220 ready\r\n")], sport=587, close=False)
    assert ctx.flow.app_proto is None  # waits for the client's first command
    ctx = detect([(TO_CLIENT, b"220 ready\r\n"), (TO_SERVER, b"AUTH TLS\r\n")], sport=9921)
    assert ctx.flow.app_proto == "ftp"


def test_unknown_is_failed_and_counted() -> None:
    ctx = detect([(TO_SERVER, b"\x00\x01binary-proto"), (TO_CLIENT, b"\x05\x06")], sport=9999, close=False)
    assert ctx.flow.app_proto == "failed" and ctx.stats.get("applayer.detect_failed") == 1
    ctx = detect([(TO_SERVER, b"hello there")], sport=9999)  # one-sided: decided at close
    assert ctx.flow.app_proto == "failed"
    ctx = detect([(TO_SERVER, b"G" * 9000)], close=False)  # probe limit reached
    assert ctx.flow.app_proto == "failed"


def test_udp_parser_by_port() -> None:
    ctx = RecordingContext(flow=tflow(sport=53, proto=PROTO_UDP))
    p = new_udp_parser(ctx)
    assert p is not None and ctx.flow.app_proto == "dns"
    p.feed(TO_SERVER, build_query(1, "a.example", 1), 1.0)
    assert ctx.event_bodies("dns")[0]["dns"]["rrname"] == "a.example"
    assert new_udp_parser(RecordingContext(flow=tflow(sport=5000, proto=PROTO_UDP))) is None


def test_parser_exceptions_are_contained(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    class Boom:
        name = "http"

        def __init__(self, ctx: object) -> None:
            pass

        def feed(self, direction: int, data: bytes, ts: float) -> None:
            raise RuntimeError("bug")

        def gap(self, direction: int, length: int, ts: float) -> None:
            pass

        def close(self, ts: float) -> None:
            pass

    monkeypatch.setattr(registry, "_factory", lambda name: Boom)
    ctx = detect([(TO_SERVER, b"GET / HTTP/1.1\r\n\r\n"), (TO_SERVER, b"more")])
    assert ctx.anomalies == ["applayer.parser_error"]
    assert ctx.stats.get("applayer.parser_error", proto="http") == 1


def test_missing_parser_is_tolerated(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setitem(registry._PARSERS, "smtp", ("monitor.applayer.no_such_module", "X"))
    ctx = detect([(TO_CLIENT, b"220 mx ESMTP\r\n"), (TO_SERVER, b"HELO x\r\n")], sport=25)
    assert ctx.flow.app_proto == "smtp" and ctx.stats.get("applayer.parser_missing", proto="smtp") == 1


def test_create_for_handoff() -> None:
    ctx = RecordingContext(flow=tflow(sport=25))
    tls = registry.create("tls", ctx)
    assert tls is not None and tls.name == "tls"
    tls.feed(TO_SERVER, client_hello(sni="mx.example.jp"), 1.0)
    tls.close(2.0)
    assert ctx.event_bodies("tls")[0]["tls"]["sni"] == "mx.example.jp"
    assert registry.create("nope", ctx) is None
    assert isinstance(new_tcp_parser(ctx), DetectingParser)


def test_client_side_only_capture_is_detected_by_its_commands() -> None:
    """zeek/smtp-attachment-msg.pcap holds only the client's packets: EHLO alone means SMTP;
    USER alone means FTP only on port 21 (POP3 clients say USER too)."""
    ctx = detect([(TO_SERVER, b"ehlo localhost.localdomain\r\nmail FROM:<a@example.com>\r\n")], sport=2500)
    assert ctx.flow.app_proto == "smtp"
    assert detect([(TO_SERVER, b"USER anonymous\r\n")], sport=21).flow.app_proto == "ftp"
    assert detect([(TO_SERVER, b"USER bob\r\n")], sport=110).flow.app_proto == "failed"
    # With the server's side present the greeting still decides.
    ctx = detect([(TO_CLIENT, b"+OK POP3 ready\r\n"), (TO_SERVER, b"EHLO x\r\n")], sport=110)
    assert ctx.flow.app_proto == "failed"
