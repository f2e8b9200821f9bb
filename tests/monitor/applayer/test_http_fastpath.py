"""The HTTP fast paths give exactly what the general state machine gives.

Header blocks of plain lines are parsed in one pass, body bytes and plain chunk framing are taken
straight from the segment, and the detecting parser puts the protocol parser itself in
``flow.parser``. Each is checked against the general path on the same input, at many splits.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.applayer import http1
from monitor.applayer.http1 import HttpParser
from monitor.applayer.registry import DetectingParser, Guarded, new_tcp_parser
from monitor.files import STATE_CLOSED
from monitor.model import TO_CLIENT, TO_SERVER
from tests.factories import RecordingContext, tflow

_NEVER = re.compile(rb"(?!)")  # a pattern that matches nothing: forces the line-by-line path


class _HeaderRecorder(HttpParser):
    """Also records every parsed header block (names and values as the framing sees them)."""

    def _headers_done(self, side: Any) -> None:
        self.ctx.blocks.append(list(side.headers))  # type: ignore[attr-defined]
        super()._headers_done(side)


def feed(exchanges: list[tuple[int, bytes]], cuts: list[int]) -> RecordingContext:
    """Feed each exchange cut at the given offsets (modulo its length); close."""
    ctx = RecordingContext(flow=tflow(sport=8080))
    ctx.blocks = []  # type: ignore[attr-defined]
    p = _HeaderRecorder(ctx)
    for d, data in exchanges:
        points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
        for a, b in zip(points, points[1:], strict=False):
            p.feed(d, data[a:b], 1.0)
    p.close(2.0)
    return ctx


def outcome(ctx: RecordingContext) -> dict[str, Any]:
    return {
        "events": ctx.events,
        "txs": ctx.txs,
        "anomalies": sorted(ctx.anomalies),
        "files": [(f.name, f.source, f.size, f.state, f.sha256, f.declared_type) for f in ctx.files],
        "inspected": [(i.data, i.where) for i in ctx.inspected],
        "headers": ctx.blocks,  # type: ignore[attr-defined]
    }


_LINES = [
    b"Host: files.example.jp", b"User-Agent: Mozilla/5.0 (X11)", b"Content-Type: text/plain; charset=utf-8",
    b"X-Empty:", b"X-Spaces:    padded   ", b"Accept: */*", b"Referer: http://a.example/\xe8\xa6\x8b",
    b"Transfer-Encoding: chunked", b"Content-Length: 5", b"Content-Encoding: identity",
    b" folded continuation", b"\tTab-folded", b"NoColonHere", b"Bad Name: x", b"Content_Length: 7",
    b"X-Bare: a\rb", b"", b" ", b"X-Tok.en: y", b"Transfer-Encoding : chunked", b"content-LENGTH: 5", b"X-Tab:\tv\t",
    b"X-Ctl: \x00\x0b\x7f\xff",
]


def _both_ways(exchanges: list[tuple[int, bytes]], cuts: list[int]) -> tuple[dict[str, Any], dict[str, Any]]:
    fast = outcome(feed(exchanges, cuts))
    saved = http1._CLEAN_HEADER_BLOCK
    http1._CLEAN_HEADER_BLOCK = _NEVER
    try:
        slow = outcome(feed(exchanges, cuts))
    finally:
        http1._CLEAN_HEADER_BLOCK = saved
    return fast, slow


def _exchanges(block: bytes, body: bytes) -> list[tuple[int, bytes]]:
    req = b"POST /up HTTP/1.1\r\n" + block + b"\r\n" + body
    resp = b"HTTP/1.1 200 OK\r\n" + block + b"\r\n" + body
    return [(TO_SERVER, req + b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"), (TO_CLIENT, resp)]


@settings(max_examples=150)
@given(
    lines=st.lists(st.sampled_from(_LINES), min_size=0, max_size=8),
    lf_mask=st.one_of(st.just(0), st.integers(0, 255)),  # which lines end in a bare LF
    body=st.sampled_from([b"hello", b"5\r\nhello\r\n0\r\n\r\n", b""]),
    cuts=st.lists(st.integers(0, 400), max_size=6),
)
def test_header_block_one_pass_equals_line_by_line(lines: list[bytes], lf_mask: int, body: bytes,
                                                   cuts: list[int]) -> None:
    block = b"".join(line + (b"\n" if lf_mask >> (i % 8) & 1 else b"\r\n") for i, line in enumerate(lines))
    fast, slow = _both_ways(_exchanges(block, body), cuts)
    assert fast == slow


def test_each_header_line_kind_one_pass_equals_line_by_line() -> None:
    for line in _LINES:
        for body in (b"hello", b"5\r\nhello\r\n0\r\n\r\n"):
            block = b"Host: h\r\n" + line + b"\r\nAccept: */*\r\n"
            fast, slow = _both_ways(_exchanges(block, body), [])
            assert fast == slow, line


def test_header_block_parsed_in_one_pass_keeps_values_and_order() -> None:
    req = (b"GET /a?q=%E8%A6%8B HTTP/1.1\r\nHost: files.example.jp:8080\r\nUser-Agent:  ua/1.0 \r\n"
           b"Referer: http://x.example/\xe8\xa6\x8b\r\nX-Dup: 1\r\nX-Dup: 2\r\n\r\n")
    ctx = feed([(TO_SERVER, req), (TO_CLIENT, b"HTTP/1.1 204 No Content\r\nLocation: /b\r\n\r\n")], [7, 60])
    http = ctx.event_bodies("http")[0]["http"]
    assert http["hostname"] == "files.example.jp" and http["http_port"] == 8080
    assert http["http_user_agent"] == "ua/1.0" and http["http_refer"] == "http://x.example/見"
    assert http["status"] == 204 and http["redirect"] == "/b"
    assert ctx.anomalies == []


def _chunked(body: bytes, sizes: list[int], style: int) -> bytes:
    out = []
    i = 0
    k = 0
    while i < len(body):
        n = max(1, sizes[k % len(sizes)])
        piece = body[i:i + n]
        size = b"%x" % len(piece)
        if style == 1:
            size = size.upper()
        elif style == 2 and k % 3 == 0:
            size = b"000" + size + b";ext=1"
        elif style == 3 and k % 4 == 1:
            size = size + b" "
        sep = b"\n" if style == 4 and k % 2 else b"\r\n"
        out.append(size + sep + piece + sep)
        i += n
        k += 1
    return b"".join(out) + b"0\r\nX-Trailer: t\r\n\r\n"


@settings(max_examples=150)
@given(
    body=st.binary(min_size=0, max_size=3000),
    sizes=st.lists(st.integers(1, 700), min_size=1, max_size=6),
    style=st.integers(0, 4),
    cuts=st.lists(st.integers(0, 4000), max_size=12),
)
def test_chunked_bodies_any_segmentation(body: bytes, sizes: list[int], style: int, cuts: list[int]) -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    wire = head + _chunked(body, sizes, style) + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    exchanges = [(TO_SERVER, b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n"),
                 (TO_CLIENT, wire)]
    whole = feed(exchanges, [])
    split = feed(exchanges, cuts)
    assert outcome(split) == outcome(whole)
    files = split.files
    if body:
        assert files[0].state == STATE_CLOSED and files[0].sha256 == hashlib.sha256(body).hexdigest()
    assert [f.size for f in files][-1] == 2


def test_content_length_body_sliced_from_segments() -> None:
    body = bytes(range(256)) * 40
    wire = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body + \
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
    ctx = feed([(TO_SERVER, b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n"), (TO_CLIENT, wire)],
               list(range(0, len(wire), 1448)) + [len(wire) - 60])
    assert [(f.size, f.sha256) for f in ctx.files] == [
        (len(body), hashlib.sha256(body).hexdigest()), (3, hashlib.sha256(b"abc").hexdigest())]
    assert ctx.anomalies == []


def test_detecting_parser_steps_out_of_the_flow_path() -> None:
    ctx = RecordingContext(flow=tflow(sport=8080))
    ctx.flow.parser = new_tcp_parser(ctx)
    ctx.flow.parser.feed(TO_SERVER, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n", 1.0)
    assert isinstance(ctx.flow.parser, HttpParser)  # called directly by the pipeline from now on
    ctx.flow.parser.feed(TO_CLIENT, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", 1.0)
    ctx.flow.parser.close(2.0)
    assert ctx.closed_files[0].content() == b"hi"
    # A detecting parser that is not the flow's parser (inside a tunnel) keeps forwarding.
    other = RecordingContext(flow=tflow(sport=8080))
    p = DetectingParser(other, tunnel=True)
    other.flow.parser = p
    p.feed(TO_SERVER, b"GET /x HTTP/1.1\r\n\r\n", 1.0)
    assert other.flow.parser is p and isinstance(p.target, Guarded)
