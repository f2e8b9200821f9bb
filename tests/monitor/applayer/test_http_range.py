"""HTTP range reassembly: 206 bodies assembled into one file at their Content-Range offsets."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.schema import validate_lines
from monitor.applayer.http1 import HttpParser
from monitor.applayer.http_range import parse_content_range
from monitor.config import AppLayerConfig, HttpConfig, default_config
from monitor.model import TO_CLIENT, TO_SERVER
from tests.conftest import corpus
from tests.factories import RecordingContext, tflow
from tests.monitor.applayer.replay import eve_lines, replay

OBJECT = bytes(range(256)) * 40 + b"\x00MARKER-ACROSS-RANGES\x00" + b"tail" * 100
URL = b"/files/plan.bin"


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def ctx_for(**http: int) -> RecordingContext:
    cfg = default_config()
    if http:
        cfg = dataclasses.replace(cfg, app_layer=AppLayerConfig(http=HttpConfig(**http)))
    return RecordingContext(flow=tflow(sport=80), config=cfg)


def request(start: int, end: int, url: bytes = URL) -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: dl.example.jp\r\nRange: bytes=%d-%d\r\n\r\n" % (url, start, end)


def partial(obj: bytes, start: int, end: int, etag: bytes = b'"v1"', extra: bytes = b"") -> bytes:
    body = obj[start:end + 1]
    return (b"HTTP/1.1 206 Partial Content\r\nContent-Type: application/octet-stream\r\nETag: %s\r\n"
            b"Content-Range: bytes %d-%d/%d\r\nContent-Length: %d\r\n%s\r\n%s"
            % (etag, start, end, len(obj), len(body), extra, body))


def exchange(ranges: list[tuple[int, int]], obj: bytes = OBJECT, ctx: RecordingContext | None = None,
             etags: list[bytes] | None = None) -> RecordingContext:
    ctx = ctx or ctx_for()
    p = HttpParser(ctx)
    for i, (a, b) in enumerate(ranges):
        p.feed(TO_SERVER, request(a, b), 1.0 + i)
        p.feed(TO_CLIENT, partial(obj, a, b, etags[i] if etags else b'"v1"'), 1.0 + i)
    p.close(9.0)
    validate_lines(eve_lines([ctx]))
    return ctx


def range_files(ctx: RecordingContext) -> list:
    return [f for f in ctx.closed_files if f.source == "http.response.body > range"]


def test_sequential_ranges_over_transactions_make_one_closed_file() -> None:
    n = len(OBJECT)
    ctx = exchange([(0, 999), (1000, 4999), (5000, n - 1)])
    per_tx = [f for f in ctx.closed_files if f.source == "http.response.body"]
    assert [f.size for f in per_tx] == [1000, 4000, n - 5000]  # each transaction keeps its own file
    [rf] = range_files(ctx)
    assert (rf.name, rf.size, rf.state, rf.sha256) == ("/files/plan.bin", n, "CLOSED", sha(OBJECT))
    assert rf.tx_id == 2 and rf.app["http"]["content_range"] == {
        "raw": f"bytes 5000-{n - 1}/{n}", "start": 5000, "end": n - 1, "size": n}
    assert ctx.stats.total("http.range_files") == 1


def test_out_of_order_ranges_are_held_then_written_in_order() -> None:
    n = len(OBJECT)
    ctx = exchange([(8000, n - 1), (3000, 7999), (0, 2999)])
    [rf] = range_files(ctx)
    assert (rf.size, rf.state, rf.sha256) == (n, "CLOSED", sha(OBJECT))
    assert rf.content() == OBJECT


def test_missing_range_reports_truncated_file_with_the_hole_at_flow_end() -> None:
    n = len(OBJECT)
    ctx = exchange([(0, 999), (2000, n - 1)])
    [rf] = range_files(ctx)
    assert (rf.size, rf.state, rf.gaps, rf.missing_bytes, rf.sha256) == (n, "TRUNCATED", True, 1000, None)


def test_overlapping_ranges_first_copy_wins() -> None:
    n = len(OBJECT)
    forged = OBJECT[:1500] + b"X" * 1000 + OBJECT[2500:]
    ctx = ctx_for()
    p = HttpParser(ctx)
    p.feed(TO_SERVER, request(0, 1999), 1.0)
    p.feed(TO_CLIENT, partial(OBJECT, 0, 1999), 1.0)
    p.feed(TO_SERVER, request(1500, n - 1), 2.0)
    p.feed(TO_CLIENT, partial(forged, 1500, n - 1), 2.0)
    p.close(3.0)
    [rf] = range_files(ctx)
    assert rf.content() == OBJECT[:2000] + forged[2000:]
    assert ctx.stats.total("http.range_overlap") == 1


def test_a_changed_object_starts_another_range_file() -> None:
    n = len(OBJECT)
    ctx = exchange([(0, 999), (1000, n - 1)], etags=[b'"v1"', b'"v2"'])
    got = sorted((f.size, f.missing_bytes, f.state) for f in range_files(ctx))
    assert got == [(n, 1000, "TRUNCATED"), (n, n - 1000, "TRUNCATED")]


def test_whole_object_in_one_206_is_only_the_transaction_file() -> None:
    ctx = exchange([(0, len(OBJECT) - 1)])
    assert range_files(ctx) == []
    assert [f.sha256 for f in ctx.closed_files] == [sha(OBJECT)]
    assert ctx.stats.total("http.range_whole") == 1


def test_multipart_byteranges_parts_go_to_their_offsets() -> None:
    n = len(OBJECT)
    parts = b""
    for a, b in ((0, 4999), (5000, n - 1)):
        parts += (b"--SEP\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes %d-%d/%d\r\n\r\n"
                  % (a, b, n)) + OBJECT[a:b + 1] + b"\r\n"
    parts += b"--SEP--\r\n"
    ctx = ctx_for()
    p = HttpParser(ctx)
    p.feed(TO_SERVER, b"GET /files/plan.bin HTTP/1.1\r\nHost: dl.example.jp\r\nRange: bytes=0-4999,5000-\r\n\r\n", 1.0)
    p.feed(TO_CLIENT, b"HTTP/1.1 206 Partial Content\r\nContent-Type: multipart/byteranges; boundary=SEP\r\n"
           b"Content-Length: %d\r\n\r\n" % len(parts) + parts, 1.0)
    p.close(2.0)
    [rf] = range_files(ctx)
    assert (rf.size, rf.state, rf.sha256) == (n, "CLOSED", sha(OBJECT))
    [body] = [f for f in ctx.closed_files if f.source == "http.response.body"]
    assert body.size == len(parts)  # the response entity as sent stays the transaction's file
    validate_lines(eve_lines([ctx]))


def test_gzip_coded_ranges_are_decoded_once_assembled() -> None:
    coded = gzip.compress(OBJECT)
    n = len(coded)
    ctx = ctx_for()
    p = HttpParser(ctx)
    for i, (a, b) in enumerate(((0, n // 2), (n // 2 + 1, n - 1))):
        p.feed(TO_SERVER, request(a, b), 1.0 + i)
        p.feed(TO_CLIENT, partial(coded, a, b, extra=b"Content-Encoding: gzip\r\n"), 1.0 + i)
    p.close(3.0)
    [rf] = range_files(ctx)
    assert (rf.size, rf.state, rf.sha256) == (len(OBJECT), "CLOSED", sha(OBJECT))


def test_range_buffer_cap_writes_held_ranges_with_holes() -> None:
    n = len(OBJECT)
    ctx = ctx_for(range_buffer=3000)
    ctx = exchange([(6000, n - 1), (3000, 5999), (0, 2999)], ctx=ctx)
    [rf] = range_files(ctx)
    assert rf.state == "TRUNCATED" and rf.size == n
    assert ctx.stats.total("http.range_cap") >= 1


def test_range_files_per_flow_are_capped() -> None:
    ctx = ctx_for()
    p = HttpParser(ctx)
    for i in range(20):
        url = b"/o%d" % i
        p.feed(TO_SERVER, request(0, 9, url), 1.0)
        p.feed(TO_CLIENT, partial(OBJECT, 0, 9), 1.0)
    p.close(2.0)
    assert len(range_files(ctx)) == 16 and ctx.stats.total("http.range_files_cap") == 4


def test_invalid_content_range_is_an_anomaly_not_a_file() -> None:
    ctx = ctx_for()
    p = HttpParser(ctx)
    p.feed(TO_SERVER, request(0, 9), 1.0)
    p.feed(TO_CLIENT, b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 9-0/10\r\nContent-Length: 3\r\n\r\nabc", 1.0)
    p.close(2.0)
    assert "http.content_range_invalid" in ctx.anomalies and range_files(ctx) == []


@pytest.mark.parametrize(("value", "want"), [
    ("bytes 0-9999/146515", (0, 9999, 146515)),
    ("bytes 5-9/*", (5, 9, None)),
    ("BYTES 1-1/2", (1, 1, 2)),
    ("bytes */100", None),
    ("bytes 10-5/100", None),
    ("bytes 0-100/100", None),
    ("bytes 0-99999999999999999999/1", None),
    ("items 0-1/2", None),
])
def test_parse_content_range(value: str, want: tuple[int, int, int | None] | None) -> None:
    cr = parse_content_range(value)
    assert (None if cr is None else (cr.start, cr.end, cr.size)) == want


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(OBJECT) - 1), st.integers(0, 3000)), min_size=1, max_size=8),
       st.integers(500, 20000))
def test_fuzz_any_range_order_never_raises_and_stays_consistent(spans, cap) -> None:
    n = len(OBJECT)
    ranges = [(a, min(n - 1, a + ln)) for a, ln in spans]
    ctx = exchange(ranges, ctx=ctx_for(range_buffer=cap))
    for rf in range_files(ctx):
        assert rf.size == n and not rf.is_open
        if rf.state == "CLOSED":
            assert rf.sha256 == sha(OBJECT)
    covered = set()
    for a, b in ranges:
        covered.update(range(a, b + 1))
    if len(covered) == n and len(ranges) > 1 and cap >= n:
        assert [f.sha256 for f in range_files(ctx)] == [sha(OBJECT)]


# ---------------------------------------------------------------- corpus


def test_corpus_http_range_file_is_one_146515_byte_file() -> None:
    r = replay(corpus("suricata-verify/http-range-file/input.pcap"))
    ranged = [f for f in r.files if f.source == "http.response.body > range"]
    assert [(f.name, f.size, f.state, f.tx_id) for f in ranged] == [("/z4d4kWk.jpg", 146515, "CLOSED", 14)]
    assert ranged[0].detected_type == "image/jpeg"
    assert ranged[0].sha256 == "3795027cb7562436bd6d818f1f8d1f9548ae8ab6df459588f8af9e77dab4500b"
    assert sum(f.size for f in r.files if f.source == "http.response.body") == 146515
    validate_lines(eve_lines(r.contexts))


def test_corpus_content_range_gap_reports_the_object_with_its_holes() -> None:
    r = replay(corpus("zeek/http/content-range-gap.pcap"))
    [rf] = [f for f in r.files if f.source == "http.response.body > range"]
    # Range 20001-30353 of a 30354-byte PNG, 1380 bytes of it lost in the capture.
    assert (rf.size, rf.state, rf.missing_bytes) == (30354, "TRUNCATED", 20001 + 1380)


def test_corpus_multipart_byteranges_is_one_sparse_file() -> None:
    r = replay(corpus("zeek/http/byteranges.pcap"))
    [rf] = [f for f in r.files if f.source == "http.response.body > range"]
    # 20 parts of a 605,292,323-byte update package: one file, sparse (Zeek: one FUID).
    assert (rf.size, rf.state) == (605292323, "TRUNCATED")
    assert rf.size - rf.missing_bytes == 54229


def test_many_tiny_out_of_order_ranges_hit_the_piece_cap() -> None:
    """A hostile server answering with thousands of 1-byte ranges backwards costs no more than
    MAX_HELD_PIECES held entries."""
    from monitor.applayer.http_range import MAX_HELD_PIECES

    obj = bytes(range(256)) * 20
    ctx = ctx_for()
    p = HttpParser(ctx)
    for off in range(len(obj) - 1, 0, -1):
        p.feed(TO_SERVER, request(off, off), 1.0)
        p.feed(TO_CLIENT, partial(obj, off, off), 1.0)
    assert p.ranges.held_pieces <= MAX_HELD_PIECES
    p.close(2.0)
    [rf] = range_files(ctx)
    assert rf.size == len(obj) and rf.state == "TRUNCATED"
    assert ctx.stats.total("http.range_cap") >= 1
