"""DNS over UDP and TCP: queries, answers, compression, loop protection, names learnt, fuzz."""

from __future__ import annotations

import ipaddress
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.schema import validate_lines
from monitor.applayer.dns import DnsParser, read_name
from monitor.model import PROTO_UDP, TO_CLIENT, TO_SERVER
from pcaps.make_tls_dns import build_answer, build_query
from tests.conftest import PCAPS
from tests.factories import RecordingContext, tflow
from tests.monitor.applayer.replay import eve_lines, replay


def udp_ctx() -> RecordingContext:
    return RecordingContext(flow=tflow(sport=53, proto=PROTO_UDP))


def test_udp_query_and_answer_with_cname_chain() -> None:
    ctx = udp_ctx()
    p = DnsParser(ctx)
    q = build_query(0x1234, "www.example.jp", 1)
    p.feed(TO_SERVER, q, 1.0)
    p.feed(TO_CLIENT, build_answer(q), 1.0)
    query, answer = ctx.event_bodies("dns")
    assert query["dns"] == {"version": 2, "type": "query", "id": 0x1234, "rrname": "www.example.jp",
                            "rrtype": "A", "tx_id": 0}
    assert answer["dns"]["rcode"] == "NOERROR"
    assert answer["dns"]["answers"] == [
        {"rrname": "www.example.jp", "rrtype": "CNAME", "ttl": 300, "rdata": "cdn.example.net"},
        {"rrname": "cdn.example.net", "rrtype": "A", "ttl": 300, "rdata": "10.77.0.9"}]
    assert ctx.names == [(ipaddress.ip_address("10.77.0.9").packed, "www.example.jp", "dns")]
    assert [tx for _, _, tx in ctx.events] == [0, 0]
    validate_lines(eve_lines([ctx]))


def test_tcp_framing_split_anywhere() -> None:
    q = build_query(7, "files.example.jp", 28)
    a = build_answer(q)
    stream_q = struct.pack("!H", len(q)) + q
    stream_a = struct.pack("!H", len(a)) + a
    for step in (1, 3, 100):
        ctx = RecordingContext(flow=tflow(sport=53))
        p = DnsParser(ctx, tcp=True)
        for d, s in ((TO_SERVER, stream_q * 2), (TO_CLIENT, stream_a * 2)):
            for i in range(0, len(s), step):
                p.feed(d, s[i:i + step], 1.0)
        p.close(2.0)
        bodies = ctx.event_bodies("dns")
        assert [b["dns"]["type"] for b in bodies] == ["query", "query", "answer", "answer"]
        assert bodies[2]["dns"]["answers"][0]["rdata"] == "fd77::2"


def test_compression_loops_and_bad_messages_are_anomalies() -> None:
    loop = b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + b"\xc0\x0c" + b"\x00\x01\x00\x01"
    ctx = udp_ctx()
    p = DnsParser(ctx)
    p.feed(TO_SERVER, loop, 1.0)
    p.feed(TO_SERVER, b"\x00\x01", 1.0)
    assert ctx.anomalies == ["dns.malformed", "dns.malformed"] and ctx.events == []
    msg = b"\x00" * 12 + b"\x03abc\xc0\x0c"
    try:
        read_name(msg, 12)
        raise AssertionError("forward pointer accepted")
    except Exception as exc:  # noqa: BLE001
        assert "loop" in str(exc)


def test_captured_lookups() -> None:
    r = replay(PCAPS / "dns-lookups.pcap")
    answers = [b["dns"] for b in r.events("dns") if b["dns"]["type"] == "answer"]
    got = {(a["rrname"], a["rrtype"]): [x.get("rdata") for x in a.get("answers", [])] for a in answers}
    assert got == {
        ("files.example.jp", "A"): ["10.77.0.2"],
        ("files.example.jp", "AAAA"): ["fd77::2"],
        ("www.example.jp", "A"): ["cdn.example.net", "10.77.0.9"],
        ("example.jp", "MX"): ["mail.example.jp"],
        ("example.jp", "TXT"): ["v=spf1 -all"],
        ("2.0.77.10.in-addr.arpa", "PTR"): ["files.example.jp"],
        ("missing.example.jp", "A"): [],
    }
    assert [a["rcode"] for a in answers if a["rrname"] == "missing.example.jp"] == ["NXDOMAIN"]
    assert sum(1 for c in r.contexts if c.flow.app_proto == "dns") == len(r.contexts)
    assert len(answers) == 8  # 7 over UDP + 1 over TCP
    validate_lines(eve_lines(r.contexts))


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=600), tcp=st.booleans())
def test_fuzz_never_raises(data: bytes, tcp: bool) -> None:
    ctx = udp_ctx()
    p = DnsParser(ctx, tcp=tcp)
    p.feed(TO_CLIENT, data, 1.0)
    p.feed(TO_CLIENT, build_answer(build_query(1, "a.b", 1))[:len(data) % 60], 1.0)
    p.close(2.0)
    for b in ctx.event_bodies("dns"):
        assert len(b["dns"].get("answers", [])) <= 256
