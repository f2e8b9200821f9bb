"""HTTP/1.x parser: framing, pipelining, bodies as files, forms, smuggling edge cases, fuzz."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.schema import validate_lines
from monitor.applayer.http1 import HttpParser, split_host
from monitor.config import AppLayerConfig, HttpConfig, default_config
from monitor.files import STATE_CLOSED, STATE_TRUNCATED
from monitor.model import TO_CLIENT, TO_SERVER
from tests.factories import RecordingContext, tflow
from tests.monitor.applayer.replay import eve_lines


def ctx_for(**http: int) -> RecordingContext:
    cfg = default_config()
    if http:
        cfg = dataclasses.replace(cfg, app_layer=AppLayerConfig(http=HttpConfig(**http)))
    return RecordingContext(flow=tflow(sport=8080), config=cfg)


def run(exchanges: list[tuple[int, bytes]], step: int = 0, ctx: RecordingContext | None = None) -> RecordingContext:
    ctx = ctx or ctx_for()
    p = HttpParser(ctx)
    for d, data in exchanges:
        if step:
            for i in range(0, len(data), step):
                p.feed(d, data[i:i + step], 1.0)
        else:
            p.feed(d, data, 1.0)
    p.close(2.0)
    validate_lines(eve_lines([ctx]))
    return ctx


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def resp(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def test_pipelined_keepalive_responses_match_requests_in_order() -> None:
    reqs = b"".join(b"GET /p%d HTTP/1.1\r\nHost: files.example.jp:8080\r\nUser-Agent: t\r\n\r\n" % i for i in range(3))
    resps = resp(b"zero") + b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\none" + resp(b"two!")
    ctx = run([(TO_SERVER, reqs), (TO_CLIENT, resps)], step=5)
    https = [b["http"] for b in ctx.event_bodies("http")]
    assert [(h["url"], h["status"], h["length"]) for h in https] == [("/p0", 200, 4), ("/p1", 404, 3), ("/p2", 200, 4)]
    assert https[0]["hostname"] == "files.example.jp" and https[0]["http_port"] == 8080
    assert [f.name for f in ctx.closed_files] == ["/p0", "/p1", "/p2"]
    assert ctx.names == [(ctx.flow.server, "files.example.jp", "http")] * 3
    assert sorted(ctx.txs) == [0, 1, 2] and ctx.txs[1]["http"]["url"] == "/p1"


def test_chunked_with_extensions_and_trailers_any_split() -> None:
    body = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\n"
    for step in (1, 3, 1000):
        ctx = run([(TO_SERVER, b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + body
                    + b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n")], step=step)
        f = ctx.closed_files[0]
        assert (f.name, f.size, f.state, f.sha256) == ("/up", 11, STATE_CLOSED, sha(b"hello world"))
        assert [b["http"]["url"] for b in ctx.event_bodies("http")] == ["/up", "/next"]


def test_bodiless_responses_and_100_continue() -> None:
    reqs = (b"HEAD /h HTTP/1.1\r\nHost: h\r\n\r\n"
            b"POST /c HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\ndata"
            b"GET /n HTTP/1.1\r\nHost: h\r\n\r\n")
    resps = (b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
             b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"
             b"HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n")
    ctx = run([(TO_SERVER, reqs), (TO_CLIENT, resps)])
    assert [(b["http"]["url"], b["http"].get("status")) for b in ctx.event_bodies("http")] == [
        ("/h", 200), ("/c", 201), ("/n", 304)]
    assert [(f.name, f.size, f.direction) for f in ctx.closed_files] == [("/c", 4, TO_SERVER), ("/c", 2, TO_CLIENT)]
    assert ctx.anomalies == []


def test_multipart_upload_children_with_japanese_names() -> None:
    body = (b"--B\r\nContent-Disposition: form-data; name=\"f\"; filename*=UTF-8''%E8%A6%8B%E7%A9%8D.docx\r\n"
            b"Content-Type: application/octet-stream\r\n\r\nPK\x03\x04docx\r\n"
            b"--B\r\nContent-Disposition: form-data; name=\"n\"\r\n\r\nnote\r\n--B--\r\n")
    req = b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Type: multipart/form-data; boundary=B\r\nContent-Length: %d\r\n\r\n" % len(body)
    ctx = run([(TO_SERVER, req + body)], step=7)
    parent, *children = ctx.files
    assert (parent.name, parent.size, parent.source) == ("/upload", len(body), "http.request.body")
    assert [(c.name, c.content(), c.source, c.parent) for c in children] == [
        ("見積.docx", b"PK\x03\x04docx", "http.request.body > multipart[name=f,file=見積.docx]", parent),
        ("", b"note", "http.request.body > multipart[name=n]", parent)]
    assert children[0].detected_type == "application/zip"


def test_form_and_json_bodies_are_decoded_for_inspection() -> None:
    form = b"comment=%E8%A6%8B%E7%A9%8D+%E6%A9%9F%E5%AF%86&x=1"
    js = json.dumps({"t": "見積書"}, ensure_ascii=True).encode()
    ctx = run([(TO_SERVER,
                b"POST /f HTTP/1.1\r\nHost: h\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s"
                % (len(form), form)
                + b"POST /j?q=%%E7%%A7%%98 HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                % (len(js), js))])
    got = {i.where: i.data for i in ctx.inspected}
    assert got["http.request.body > form"] == "comment=見積 機密&x=1".encode()
    assert got["http.request.body > json"] == "t\n見積書".encode()
    assert got["http.request.uri > query"] == "q=秘".encode()


def test_gzip_request_body_and_mislabelled_gzip() -> None:
    z = gzip.compress(b"secret " * 100, mtime=0)
    ctx = run([(TO_SERVER, b"POST /z HTTP/1.1\r\nHost: h\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
                % (len(z), z) + b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Encoding: gzip\r\nContent-Length: 5\r\n\r\nplain")],
              step=11)
    assert [(f.name, f.content()) for f in ctx.closed_files] == [("/z", b"secret " * 100), ("/p", b"plain")]
    assert "http.content_encoding.passthrough" in ctx.anomalies


def test_gap_in_body_truncates_only_that_file() -> None:
    ctx = ctx_for()
    p = HttpParser(ctx)
    p.feed(TO_SERVER, b"GET /1 HTTP/1.0\r\n\r\nGET /2 HTTP/1.0\r\n\r\nGET /3 HTTP/1.0\r\n\r\n", 1.0)
    p.feed(TO_CLIENT, resp(b"first") + b"HTTP/1.0 200 OK\r\nContent-Length: 20\r\n\r\n0123", 1.0)
    p.gap(TO_CLIENT, 6, 1.0)
    p.feed(TO_CLIENT, b"abcdefghij" + resp(b"third"), 1.0)
    p.close(2.0)
    assert [(f.name, f.size, f.state, f.missing_bytes, f.sha256 is None) for f in ctx.closed_files] == [
        ("/1", 5, STATE_CLOSED, 0, False), ("/2", 20, STATE_TRUNCATED, 6, True), ("/3", 5, STATE_CLOSED, 0, False)]


def test_header_cap_is_counted_and_parsing_continues() -> None:
    ctx = ctx_for(max_header_size=512)
    big = b"X-Big: " + b"a" * 2000 + b"\r\n"
    run([(TO_SERVER, b"POST /x HTTP/1.1\r\nContent-Length: 2\r\n" + big + b"\r\nokGET /y HTTP/1.1\r\n\r\n")], ctx=ctx)
    assert "http.header_too_long" in ctx.anomalies
    assert ctx.stats.get("http.header_cap") == 1
    assert [b["http"]["url"] for b in ctx.event_bodies("http")] == ["/x", "/y"]
    assert ctx.closed_files[0].content() == b"ok"


def test_smuggling_edge_cases_make_anomalies_and_sane_decisions() -> None:
    # TE + CL: chunked wins; the smuggled request after the chunked body is still a request.
    ctx = run([(TO_SERVER, b"POST /a HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n")])
    assert "http.te_and_cl" in ctx.anomalies
    assert [b["http"]["url"] for b in ctx.event_bodies("http")] == ["/a", "/smuggled"]
    # Conflicting Content-Length on a response: the largest is read.
    ctx = run([(TO_SERVER, b"GET / HTTP/1.1\r\n\r\n"),
               (TO_CLIENT, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 6\r\n\r\nabcdef")])
    assert "http.content_length_conflict" in ctx.anomalies and ctx.closed_files[0].content() == b"abcdef"
    # Negative and 2^64 lengths, 2^64 chunk size: anomalies, no exception, nothing lost.
    for head in (b"Content-Length: -1\r\n", b"Content-Length: 18446744073709551616\r\n"):
        ctx = run([(TO_SERVER, b"POST /n HTTP/1.1\r\n" + head + b"\r\nGET /after HTTP/1.1\r\n\r\n")])
        assert "http.content_length_invalid" in ctx.anomalies
        assert [b["http"]["url"] for b in ctx.event_bodies("http")] == ["/n", "/after"]
    ctx = run([(TO_SERVER, b"GET / HTTP/1.1\r\n\r\n"),
               (TO_CLIENT, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
                b"10000000000000000\r\nsecret-after-overflow")])
    assert "http.chunk_size_overflow" in ctx.anomalies
    assert ctx.closed_files[0].buffer is not None and b"secret-after-overflow" in bytes(ctx.files[0].buffer or b"")


def test_connect_hands_the_tunnel_to_tls() -> None:
    from tests.monitor.applayer.test_tls import client_hello

    ctx = run([(TO_SERVER, b"CONNECT secret.example.jp:443 HTTP/1.1\r\nHost: secret.example.jp:443\r\n\r\n"),
               (TO_CLIENT, b"HTTP/1.1 200 Connection established\r\n\r\n"),
               (TO_SERVER, client_hello(sni="secret.example.jp"))])
    tls = ctx.event_bodies("tls")
    assert tls and tls[0]["tls"]["sni"] == "secret.example.jp"
    assert ctx.flow.app_proto is None  # the registry names the flow; the tunnel does not rename it


def test_split_host() -> None:
    assert split_host("[::1]:8000") == ("[::1]", 8000)
    assert split_host("example.jp") == ("example.jp", None)
    assert split_host("a:b:c") == ("a:b:c", None)


BASE = [
    (TO_SERVER, b"POST /u HTTP/1.1\r\nHost: h\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n20\r\n--b\r\nContent-Disposition: form-data; n\r\n"
                b"a\r\name=\"x\"; filename=\"a\"\r\n\r\n\r\n8\r\nDATA\r\n--\r\n3\r\nb--\r\n0\r\n\r\n"),
    (TO_CLIENT, b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 30\r\n\r\n"
                + gzip.compress(b"x" * 40, mtime=0)[:30]),
]


@settings(max_examples=120, deadline=None)
@given(data=st.data())
def test_fuzz_mutated_exchanges_never_raise(data: st.DataObject) -> None:
    ctx = ctx_for(max_header_size=256, body_limit=64)
    p = HttpParser(ctx)
    for d, blob in BASE:
        b = bytearray(blob)
        for _ in range(data.draw(st.integers(0, 6))):
            i = data.draw(st.integers(0, len(b) - 1))
            b[i] = data.draw(st.integers(0, 255))
        step = data.draw(st.integers(1, 64))
        gap_at = data.draw(st.integers(0, len(b) * 2))  # past the end: no gap
        for i in range(0, len(b), step):
            if i <= gap_at < i + step:
                p.gap(d, data.draw(st.integers(1, 50)), 1.0)
            p.feed(d, bytes(b[i:i + step]), 1.0)
    p.close(2.0)
    for f in ctx.files:
        assert not f.is_open
        if f.source.endswith("body"):
            assert f.size - f.missing_bytes <= 64 + 256  # body_limit (+ stray bytes after a response)


@settings(max_examples=200, deadline=None)
@given(a=st.binary(max_size=600), b=st.binary(max_size=600))
def test_fuzz_random_bytes_never_raise(a: bytes, b: bytes) -> None:
    p = HttpParser(ctx_for(max_header_size=128))
    p.feed(TO_SERVER, b"GET / HTTP/1.1\r\n" + a, 1.0)
    p.feed(TO_CLIENT, b"HTTP/1.1 200 OK\r\n" + b, 1.0)
    p.close(2.0)


def test_status_000_is_invalid_not_zero() -> None:
    """http-evader-462: "HTTP/1.1 000 ok" is a body-bearing response with no status class."""
    body = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
    ctx = run([(TO_SERVER, b"GET /e HTTP/1.1\r\nHost: h\r\n\r\n"),
               (TO_CLIENT, b"HTTP/1.1 000 ok\r\nContent-length: %d\r\n\r\n%s" % (len(body), body))])
    assert "http.status_invalid" in ctx.anomalies
    assert "status" not in ctx.event_bodies("http")[0]["http"]
    assert [f.sha256 for f in ctx.closed_files] == [sha(body)]
