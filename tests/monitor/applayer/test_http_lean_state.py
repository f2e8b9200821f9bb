"""Per-transaction shortcuts and the compact per-flow state of the HTTP parser give what the
general code gives.

- one plain ``Content-Length`` value is read without the general parser (same length, same
  anomalies: none);
- the response fields of the EVE ``http`` object are kept with the transaction and follow every
  change of its response headers or status;
- a URL path without ``%`` is its own file name (no unquoting);
- ``parse_params`` results are cached for short values, each caller getting its own dict;
- the awaiting-request queue is a list with a moving head (no deque): pipelined requests still
  meet their responses in order, past its compaction;
- per-flow state has no per-instance dicts and no range store until a 206.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.applayer import http1
from monitor.applayer.http1 import HttpParser, Transaction
from monitor.content import forms
from monitor.content.forms import decode_header_text, parse_params
from monitor.model import TO_CLIENT, TO_SERVER
from tests.factories import RecordingContext, tflow


def _parser() -> tuple[HttpParser, RecordingContext]:
    ctx = RecordingContext(flow=tflow(sport=80))
    return HttpParser(ctx), ctx


_CL_VALUES = st.one_of(
    st.text("0123456789", min_size=0, max_size=24),
    st.text("0123456789 ,+-x\t", min_size=0, max_size=24),
    st.sampled_from(["4611686018427387904", "4611686018427387903", "000000000000000000000007",
                     "99999999999999999999", "١٢٣", "²"]),
)


@settings(max_examples=400, deadline=None)
@given(_CL_VALUES, st.sampled_from([TO_SERVER, TO_CLIENT]))
def test_single_content_length_shortcut_equals_general_parser(value: str, direction: int) -> None:
    fast, fast_ctx = _parser()
    slow, slow_ctx = _parser()
    tx = Transaction(tx_id=0)
    got = fast._content_length(fast.sides[direction], tx, [value])  # noqa: SLF001
    want = slow._content_length_general(slow.sides[direction], tx, [value])  # noqa: SLF001
    assert (got, fast_ctx.anomalies) == (want, slow_ctx.anomalies)


def test_response_fields_follow_the_response_headers_and_status() -> None:
    p, _ = _parser()
    tx = Transaction(tx_id=0, method="GET", uri="/a.bin", protocol="HTTP/1.1",
                     req_headers=[("host", "example.jp")])
    assert "http_content_type" not in p.http_object(tx)
    tx.status = 200
    tx.resp_headers = [("content-type", "text/html; charset=utf-8"), ("location", "/b")]
    first = p.http_object(tx)
    assert (first["http_content_type"], first["redirect"], first["status"]) == ("text/html", "/b", 200)
    assert p.http_object(tx) == first and p.http_object(tx) is not first
    tx.resp_headers = [("content-type", "application/zip"), ("content-range", "bytes 0-9/100")]
    tx.status = 206
    obj = p.http_object(tx)
    assert obj["http_content_type"] == "application/zip" and "redirect" not in obj
    assert obj["content_range"] == {"raw": "bytes 0-9/100", "start": 0, "end": 9, "size": 100}
    assert p.http_object(tx)["content_range"] is not obj["content_range"]  # each object its own
    tx.status = 200
    assert "content_range" not in p.http_object(tx)
    assert list(first) == ["hostname", "url", "http_method", "protocol", "status",
                           "http_content_type", "redirect", "length", "request_length"]


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="%?#"),
               max_size=40))
def test_path_without_percent_is_its_own_file_name(path: str) -> None:
    p, _ = _parser()
    tx = Transaction(tx_id=0, uri="/" + path)
    assert p._file_name(tx, []) == decode_header_text(unquote_to_bytes("/" + path))  # noqa: SLF001


_PARAM_VALUES = st.builds(
    lambda head, params: head + "".join(params),
    st.sampled_from(["text/html", "multipart/form-data", "form-data", "attachment", " Text/Plain "]),
    st.lists(st.sampled_from([
        "; charset=utf-8", '; name="file"', '; filename="a b.docx"', "; filename*=UTF-8''%E8%A6%8B.txt",
        "; filename*0*=UTF-8''%E8", "; filename*1*=%A6%8B", '; boundary="----x"', "; boundary=abc",
        '; name="a\\"b"', "; x", ";;", '; filename="C:\\dir\\a.txt"',
    ]), max_size=5),
)


@settings(max_examples=300, deadline=None)
@given(_PARAM_VALUES)
def test_cached_parse_params_equals_uncached_and_hands_out_own_dicts(value: str) -> None:
    head, _, rest = value.partition(";")
    want = forms._parse_params(head, rest) if rest else (head.strip().lower(), {})  # noqa: SLF001
    first = parse_params(value)
    assert first == want
    first[1]["boundary"] = "changed by a caller"
    assert parse_params(value) == want


def test_long_parameter_values_are_parsed_but_not_cached() -> None:
    value = "form-data; name=" + "x" * 500
    before = forms._parse_params_cached.cache_info().currsize  # noqa: SLF001
    assert parse_params(value) == ("form-data", {"name": "x" * 500})
    assert forms._parse_params_cached.cache_info().currsize == before  # noqa: SLF001


def test_pipelined_requests_meet_their_responses_in_order_past_queue_compaction() -> None:
    p, ctx = _parser()
    n = 300
    p.feed(TO_SERVER, b"".join(b"GET /r%d HTTP/1.1\r\nHost: h\r\n\r\n" % i for i in range(n)), 1.0)
    assert len(p.awaiting) - p._awaiting_head == n  # noqa: SLF001
    for i in range(n):
        body = b"body-%d" % i
        p.feed(TO_CLIENT, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body), 1.0)
        assert len(p.awaiting) - p._awaiting_head == n - i - 1  # noqa: SLF001
        assert len(p.awaiting) <= n  # consumed entries are dropped, not kept for ever
    p.close(2.0)
    assert p.awaiting == [] and p._awaiting_head == 0  # noqa: SLF001
    urls = [(body["http"]["url"], body["http"]["length"]) for kind, body, _ in ctx.events if kind == "http"]
    assert urls == [(f"/r{i}", len(b"body-%d" % i)) for i in range(n)]
    assert [f.content() for f in ctx.files] == [b"body-%d" % i for i in range(n)]
    assert ctx.anomalies == []


def test_idle_flow_state_is_compact() -> None:
    p, _ = _parser()
    p.feed(TO_SERVER, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", 1.0)
    objects: list[Any] = [p, *p.sides, p.awaiting[0]]
    assert all(not hasattr(o, "__dict__") for o in objects)
    assert p._ranges is None  # noqa: SLF001 - made only for a 206
    p.feed(TO_CLIENT, b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-3/10\r\n"
                      b"Content-Length: 4\r\n\r\nabcd", 1.0)
    assert isinstance(p._ranges, http1.RangeStore)  # noqa: SLF001


def test_sides_keep_no_header_list_between_messages_and_each_message_gets_its_own() -> None:
    """Between messages a side holds the shared empty header sequence (no list per idle side);
    a header-less HTTP/0.9 request, then keep-alive requests with headers, each get exactly theirs."""
    p, ctx = _parser()
    assert p.sides[TO_SERVER].headers == () and p.sides[TO_CLIENT].headers == ()
    p.feed(TO_SERVER, b"GET /a\r\n", 1.0)
    p.feed(TO_SERVER, b"GET /b HTTP/1.1\r\nHost: b.example\r\n\r\n", 2.0)
    p.feed(TO_CLIENT, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 3.0)
    p.feed(TO_SERVER, b"GET /c HTTP/1.1\r\nHost: c.example\r\nX-A: 1\r\n\r\n", 4.0)
    assert p.sides[TO_SERVER].headers == () and p.sides[TO_CLIENT].headers == ()
    p.close(5.0)
    assert "applayer.parser_error" not in ctx.anomalies
    http = [body["http"] for kind, body, _ in ctx.events if kind == "http"]
    assert [(h["url"], h.get("hostname")) for h in http] == [("/a", None), ("/b", "b.example"),
                                                              ("/c", "c.example")]
    assert http[0]["status"] == 200  # responses meet requests in order: the 0.9 request's
