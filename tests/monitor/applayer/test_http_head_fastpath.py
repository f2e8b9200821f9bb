"""Clean message heads parsed in one match from the segment (``HttpParser._clean_heads``) give
exactly what the general state machine gives for the same bytes.

Each input is run twice: as it is, and with the clean-head patterns replaced by one that never
matches (every head then goes start line -> header block -> framing through ``_step``). Both runs
must report the same transactions, EVE events, anomalies (in order), files (names, sources,
sizes, states, hashes, app objects), inspected buffers, learned names and counters. Inputs:
hypothesis-generated exchanges (clean heads and near-misses of each condition the fast path
checks), token soup after a clean start, every capture in pcaps/ and ../shared/corpus. Each
test also checks that the fast path did run, so the comparison is never between two general runs.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.applayer import http1
from monitor.applayer.http1 import HttpParser
from monitor.config import AppLayerConfig, Config, HttpConfig, default_config
from monitor.model import TO_CLIENT, TO_SERVER
from tests.conftest import CORPUS, PCAPS
from tests.factories import RecordingContext, tflow
from tests.monitor.applayer.replay import eve_lines, replay

_NEVER = re.compile(rb"(?!)")  # matches nothing: every head takes the general path
# Process-wide counters (tests.factories.tflow's flow ids, FileObject's file ids): renumbered by
# first appearance, so two runs compare by what they say rather than by when they ran.
_IDS = re.compile(r'"(flow_id|file_id|parent_file_id)":(\d+)')


def _numbered(lines: list[str]) -> list[str]:
    seen: dict[tuple[str, str], int] = {}

    def renumber(m: re.Match[str]) -> str:
        key = ("flow" if m.group(1) == "flow_id" else "file", m.group(2))
        return f'"{m.group(1)}":{seen.setdefault(key, len(seen))}'

    return [_IDS.sub(renumber, line) for line in lines]


@contextmanager
def counting_fast_heads() -> Iterator[list[int]]:
    """Counts the heads the fast path parses (one list item: the count) while in the block."""
    count = [0]
    original = HttpParser._clean_header_block

    def counted(self: HttpParser, side: Any, block: bytes, head_len: int) -> None:
        count[0] += 1
        original(self, side, block, head_len)

    HttpParser._clean_header_block = counted  # type: ignore[method-assign]
    try:
        yield count
    finally:
        HttpParser._clean_header_block = original  # type: ignore[method-assign]


@contextmanager
def general_path_only() -> Iterator[None]:
    saved = http1._CLEAN_REQUEST_HEAD, http1._CLEAN_RESPONSE_HEAD
    http1._CLEAN_REQUEST_HEAD = http1._CLEAN_RESPONSE_HEAD = _NEVER
    try:
        yield
    finally:
        http1._CLEAN_REQUEST_HEAD, http1._CLEAN_RESPONSE_HEAD = saved


def outcome(contexts: list[RecordingContext]) -> list[dict[str, Any]]:
    return [{
        "events": ctx.events,
        "txs": ctx.txs,
        "anomalies": ctx.anomalies,
        "files": [(f.name, f.source, f.size, f.state, f.sha256, f.declared_type, f.charset, f.tx_id,
                   f.direction, f.depth, f.gaps, f.app, f.content()) for f in ctx.files],
        "closed": [f.name for f in ctx.closed_files],
        "inspected": [(i.data, i.where, i.direction, i.tx_id, i.charset) for i in ctx.inspected],
        "names": ctx.names,
        "tls": ctx.tls_infos,
        "stats": ctx.stats.snapshot(),
        "eve": _numbered(eve_lines([ctx])),
    } for ctx in contexts]


def run_feeds(feeds: list[tuple[int, bytes]], cuts: list[int]) -> list[dict[str, Any]]:
    """Feed each (direction, bytes) cut at the given offsets (modulo its length), then close;
    a parser exception is part of the outcome (the pipeline would drop the parser)."""
    ctx = RecordingContext(flow=tflow(sport=8080))
    p = HttpParser(ctx)
    error = None
    try:
        for d, data in feeds:
            points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
            for a, b in zip(points, points[1:], strict=False):
                p.feed(d, data[a:b], 1.0)
        p.close(2.0)
    except Exception as exc:  # noqa: BLE001 - compared, not hidden
        error = type(exc).__name__
    out = outcome([ctx])
    out[0]["error"] = error
    return out


def both_ways(feeds: list[tuple[int, bytes]], cuts: list[int]) -> tuple[Any, Any, int]:
    with counting_fast_heads() as fast_heads:
        fast = run_feeds(feeds, cuts)
    with general_path_only(), counting_fast_heads() as none:
        general = run_feeds(feeds, cuts)
    assert none == [0]
    return fast, general, fast_heads[0]


# ------------------------------------------------------------------ generated exchanges

_METHODS = [b"GET", b"POST", b"PUT", b"HEAD", b"OPTIONS", b"CONNECT", b"M-SEARCH", b"PROPFIND",
            b"get", b"FOO", b"G3T", b"GE", b"VERYLONGMETHODNAME"]
_URIS = [b"/", b"/files/a.bin", b"/a?q=%E8%A6%8B&x=1", b"/chunk/x", b"http://h.example:8080/p?a=b",
         b"*", b"h.example:443", b"/x y", b"/\xe8\xa6\x8b", b"/a\x00b", b"/%2e%2e/etc", b"/dl?file=%41.txt"]
_PROTOCOLS = [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.1", b"HTTP/2", b"http/1.1", b"HTTP/1.1 extra", b""]
_SEPS = [b" ", b" ", b" ", b"  ", b"\t", b" \x0b"]
_CODES = [b"200", b"200", b"201", b"204", b"206", b"304", b"404", b"500", b"999", b"100", b"101",
          b"2000", b"20", b"abc", b"000", b"099"]
_REASONS = [b"OK", b"OK", b"Not Found", b"", b"OK ", b" OK", b"\xe3\x81\x82", b"OK\x00", b"A\tB", b"Partial Content"]
_LINES = [
    b"Host: files.example.jp", b"Host: 10.0.0.1:8080", b"Host: [::1]:8000", b"User-Agent: Mozilla/5.0 (X11)",
    b"Content-Type: text/plain; charset=utf-8", b"Content-Type: application/x-www-form-urlencoded",
    b"Content-Type: application/json", b"Content-Type: multipart/form-data; boundary=bb",
    b"Content-Type: multipart/byteranges; boundary=bb", b"Content-Range: bytes 0-4/10", b"ETag: \"e1\"",
    b"Content-Disposition: attachment; filename=\"r\xc3\xa9sum\xc3\xa9.txt\"", b"Location: /elsewhere",
    b"X-Empty:", b"X-Spaces:    padded   ", b"Accept: */*", b"Referer: http://a.example/\xe8\xa6\x8b",
    b"Transfer-Encoding: chunked", b"Transfer-Encoding: gzip, chunked", b"Transfer-Encoding: identity",
    b"Content-Length: 5", b"Content-Length: 5, 7", b"Content-Length: -1", b"Content-Length: 99999999999999999999",
    b"Content-Encoding: gzip", b"Content-Encoding: identity", b"Upgrade: websocket", b"Connection: Upgrade",
    b" folded continuation", b"\tTab-folded", b"NoColonHere", b"Bad Name: x", b"Content_Length: 7",
    b"X-Bare: a\rb", b" ", b"X-Tok.en: y", b"Transfer-Encoding : chunked", b"content-LENGTH: 5",
    b"X-Tab:\tv\t", b"X-Ctl: \x00\x0b\x7f\xff", b"X-Chunky: chunk",
]
_BODIES = [b"", b"hello", b"hello world " * 20, gzip.compress(b"gzipped text " * 30, mtime=0),
           b"--bb\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.txt\"\r\n\r\nsecret\r\n--bb--\r\n",
           b"a=1&b=%E8%A6%8B", b"{\"k\": \"v\"}", b"HTTP/1.1 200 OK\r\n"]


@st.composite
def message(draw: st.DrawFn, request: bool) -> bytes:
    sep = draw(st.sampled_from(_SEPS)) if draw(st.integers(0, 4)) == 0 else b" "
    if request:
        parts = [draw(st.sampled_from(_METHODS)), draw(st.sampled_from(_URIS)), draw(st.sampled_from(_PROTOCOLS))]
        start = sep.join(p for p in parts if p)
    else:
        start = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0"])) + sep + \
            draw(st.sampled_from(_CODES))
        reason = draw(st.sampled_from(_REASONS))
        if reason or draw(st.booleans()):
            start += b" " + reason
    lines = draw(st.lists(st.sampled_from(_LINES), max_size=7))
    body = draw(st.sampled_from(_BODIES))
    framing = draw(st.sampled_from(["length", "length", "chunked", "none"]))
    if framing == "length":
        lines.append(b"Content-Length: %d" % len(body))
    elif framing == "chunked":
        lines.append(b"Transfer-Encoding: chunked")
        body = (b"%x\r\n" % len(body) + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
    bare_lf = draw(st.sampled_from([0, 0, 0, draw(st.integers(0, 511))]))
    ends = [b"\n" if bare_lf >> i & 1 else b"\r\n" for i in range(len(lines) + 2)]
    head = start + ends[0] + b"".join(line + ends[i + 1] for i, line in enumerate(lines)) + ends[-1]
    return head + body


@settings(max_examples=400)
@given(
    requests=st.lists(message(True), min_size=1, max_size=3),
    responses=st.lists(message(False), min_size=0, max_size=3),
    pipelined=st.booleans(),
    cuts=st.lists(st.integers(0, 600), max_size=5),
)
def test_generated_exchanges_fast_equals_general(requests: list[bytes], responses: list[bytes], pipelined: bool,
                                                 cuts: list[int]) -> None:
    if pipelined:
        feeds = [(TO_SERVER, b"".join(requests)), (TO_CLIENT, b"".join(responses))]
    else:
        feeds = [(d, m) for i, req in enumerate(requests)
                 for d, m in [(TO_SERVER, req)] + ([(TO_CLIENT, responses[i])] if i < len(responses) else [])]
    fast, general, _ = both_ways([f for f in feeds if f[1]], cuts)
    assert fast == general


_SOUP = [b"GET", b"HTTP/1.1", b"HTTP/", b" ", b"  ", b"\r\n", b"\n", b"\r", b":", b": ", b"Host", b"a", b"/",
         b"\t", b"\x00", b"\xe8", b"200", b"chunked", b"Content-Length", b"Transfer-Encoding", b"5", b"-", b"0",
         b"\r\n\r\n", b"\r\n ", b"Upgrade", b"X-Y"]


@settings(max_examples=300)
@given(
    request_soup=st.lists(st.sampled_from(_SOUP), max_size=30),
    response_soup=st.lists(st.sampled_from(_SOUP), max_size=30),
    cuts=st.lists(st.integers(0, 300), max_size=4),
)
def test_token_soup_after_clean_start_lines(request_soup: list[bytes], response_soup: list[bytes],
                                            cuts: list[int]) -> None:
    feeds = [(TO_SERVER, b"POST /up HTTP/1.1\r\n" + b"".join(request_soup) + b"\r\n\r\nGET /n HTTP/1.1\r\n\r\n"),
             (TO_CLIENT, b"HTTP/1.1 200 OK\r\n" + b"".join(response_soup) + b"\r\n\r\nHTTP/1.1 204 -\r\n\r\n")]
    fast, general, _ = both_ways(feeds, cuts)
    assert fast == general


def test_clean_keepalive_exchange_takes_the_fast_path_with_the_same_fields() -> None:
    req = b"GET /a/b.txt?x=%E8%A6%8B HTTP/1.1\r\nHost: files.example.jp:8080\r\nUser-Agent: ua/1.0\r\n\r\n"
    body = b"0123456789" * 300
    resp = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n\r\n"
            % len(body)) + body
    segments = [(TO_CLIENT, resp[i:i + 1448]) for i in range(0, len(resp), 1448)]
    feeds = [(TO_SERVER, req), *segments, (TO_SERVER, req.replace(b"/a/", b"/c/")),
             (TO_CLIENT, b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n")]
    fast, general, heads = both_ways(feeds, [])
    assert heads == 4 and fast == general
    http = [b["http"] for t, b, _ in fast[0]["events"] if t == "http"]
    assert [(h["url"], h["status"], h["hostname"], h["http_port"], h["length"]) for h in http] == [
        ("/a/b.txt?x=%E8%A6%8B", 200, "files.example.jp", 8080, len(body)),
        ("/c/b.txt?x=%E8%A6%8B", 304, "files.example.jp", 8080, 0)]
    assert fast[0]["anomalies"] == []
    assert fast[0]["files"][0][2:5] == (len(body), "CLOSED", hashlib.sha256(body).hexdigest())


@pytest.mark.parametrize("near_miss", [
    b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n folded\r\n\r\n",      # obs-fold
    b"GET / HTTP/1.1\r\nHost: h\rX: b\r\n\r\n",                   # bare CR
    b"GET / HTTP/1.1\r\nHost: h\n\r\n",                           # bare LF
    b"get / HTTP/1.1\r\nHost: h\r\n\r\n",                         # lower-case method
    b"FOO / HTTP/1.1\r\nHost: h\r\n\r\n",                         # unknown method
    b"GET /x y HTTP/1.1\r\nHost: h\r\n\r\n",                      # four parts
    b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",                     # space in a name
    b"\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",                     # blank line first
])
def test_near_misses_leave_the_fast_path_and_agree(near_miss: bytes) -> None:
    fast, general, heads = both_ways([(TO_SERVER, near_miss), (TO_CLIENT, b"HTTP/1.1 200 OK\r\n\r\n")], [])
    assert fast == general
    assert heads == 1  # only the clean response head


@pytest.mark.parametrize(("headers", "anomaly"), [
    (b"Content-Length: 1\r\nContent-Length: 2\r\n", "http.content_length_conflict"),
    (b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n", "http.te_and_cl"),
    (b"Transfer-Encoding: gzip\r\n", "http.te_unknown"),
    (b"Content-Length: 99999999999999999999\r\n", "http.content_length_overflow"),
])
def test_framing_anomalies_of_clean_heads_are_the_general_paths(headers: bytes, anomaly: str) -> None:
    """A clean head with hostile framing headers is parsed by the fast path; the framing decision
    (and its anomalies) is the one shared _framing makes for both."""
    req = b"POST /u HTTP/1.1\r\nHost: h\r\n" + headers + b"\r\nab"
    fast, general, heads = both_ways([(TO_SERVER, req), (TO_CLIENT, b"HTTP/1.1 200 OK\r\n" + headers + b"\r\nab")], [])
    assert heads == 2 and fast == general
    assert anomaly in fast[0]["anomalies"]


def test_head_over_the_cap_takes_the_general_path() -> None:
    cap = Config().app_layer.http.max_header_size
    big = b"GET / HTTP/1.1\r\n" + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"v" * 200) for i in range(cap // 200)) + b"\r\n"
    fast, general, heads = both_ways([(TO_SERVER, big), (TO_CLIENT, b"HTTP/1.1 200 OK\r\n\r\n")], [])
    assert fast == general and heads == 1
    assert "http.header_too_long" in fast[0]["anomalies"]


# ------------------------------------------------------------------ captures


def _captures(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix in (".pcap", ".pcapng", ".cap")
                  or p.name.endswith(".pcap.gz"))


def _replay_both(paths: list[Path]) -> tuple[int, list[str]]:
    heads = 0
    differ = []
    for path in paths:
        with counting_fast_heads() as count:
            fast = outcome(replay(path).contexts)
        with general_path_only():
            general = outcome(replay(path).contexts)
        heads += count[0]
        if fast != general:
            differ.append(str(path))
    return heads, differ


def test_committed_pcaps_fast_equals_general() -> None:
    heads, differ = _replay_both(_captures(PCAPS))
    assert differ == []
    assert heads >= 20  # pcaps/http-uploads.pcap and the sample leak alone carry more


def test_corpus_captures_fast_equals_general() -> None:
    paths = _captures(CORPUS) if CORPUS.exists() else []
    if not paths:
        pytest.skip("../shared/corpus not present")
    heads, differ = _replay_both(paths)
    assert differ == []
    assert heads >= 500  # the corpus carries over 700 HTTP transactions, most of them clean


# ------------------------------------------------------------------ identity body segments


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_segments_written_straight_to_the_file_stop_at_the_body_limit(framing: str) -> None:
    """Segments inside an identity body go to the file without _Body.data; the body limit, its
    anomaly and counter, and the raw length are those of the general write."""
    cfg = default_config()
    cfg = dataclasses.replace(cfg, app_layer=AppLayerConfig(http=HttpConfig(body_limit=5000)))
    ctx = RecordingContext(flow=tflow(sport=8080), config=cfg)
    p = HttpParser(ctx)
    body = bytes(range(256)) * 40  # 10,240 bytes
    if framing == "length":
        wire = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    else:
        wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
    p.feed(TO_SERVER, b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n", 1.0)
    p.feed(TO_CLIENT, wire[:100], 1.0)  # the head and the first body bytes: the file is open
    (f,) = ctx.files
    first = f.size  # body bytes written with the head
    seen = bytearray()
    f.listener.on_file_data = lambda _f, data: seen.extend(data)  # type: ignore[method-assign,union-attr]
    for i in range(100, len(wire), 1448):
        p.feed(TO_CLIENT, wire[i:i + 1448], 1.0)
    p.close(2.0)
    assert 0 < first < 100 and (f.size, f.state, bytes(seen)) == (5000, "TRUNCATED", body[first:5000])
    assert ctx.anomalies == ["http.body_limit"]
    assert ctx.stats.snapshot()["http"] == {"body_limit": 1}
    assert ctx.event_bodies("http")[0]["http"]["length"] == len(body)
