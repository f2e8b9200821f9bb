"""DNS over UDP and TCP: queries, answers, compression, loop protection, names learnt, fuzz."""

from __future__ import annotations

import ipaddress
import struct
from typing import Any

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


@settings(max_examples=500)
@given(address=st.one_of(st.binary(min_size=4, max_size=4), st.binary(min_size=16, max_size=16)),
       prefix=st.sampled_from([b"", b"\x00" * 12, b"\x00" * 10 + b"\xff\xff", b"\x20\x01\x0d\xb8" + b"\x00" * 8]))
def test_address_records_match_the_ipaddress_module(address: bytes, prefix: bytes) -> None:
    """A/AAAA rdata text and the packed address handed to learn_name (built without ipaddress
    objects) are what the ipaddress module gives, for any address (IPv4-mapped and zero runs
    included)."""
    from monitor.applayer.dns import _packed, _rdata

    if len(address) == 16 and prefix:
        address = prefix + address[len(prefix):]
    rtype = 1 if len(address) == 4 else 28
    text = _rdata(b"\x00" * 7 + address, rtype, 7, len(address))
    assert text == str(ipaddress.ip_address(address))
    assert text is not None and _packed(rtype, text) == ipaddress.ip_address(text).packed == address


def _answer(ident: int, name: str, records: list[tuple[int, bytes]]) -> bytes:
    qname = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\x00"
    msg = struct.pack("!HHHHHH", ident, 0x8180, 1, len(records), 0, 0) + qname + struct.pack("!HH", 1, 1)
    for rtype, rdata in records:
        msg += b"\xc0\x0c" + struct.pack("!HHIH", rtype, 1, 300, len(rdata)) + rdata
    return msg


def test_answer_addresses_are_learnt_as_packed_bytes() -> None:
    ctx = udp_ctx()
    p = DnsParser(ctx)
    addresses = [ipaddress.ip_address(a) for a in ("192.0.2.7", "0.0.0.255", "::ffff:c000:201", "2001:db8::1")]
    p.feed(TO_CLIENT, _answer(9, "w.example", [(1 if a.version == 4 else 28, a.packed) for a in addresses]), 1.1)
    answers = [a["rdata"] for b in ctx.event_bodies("dns") for a in b["dns"]["answers"]]
    assert answers == ["192.0.2.7", "0.0.0.255", "::ffff:c000:201", "2001:db8::1"]
    assert ctx.names == [(a.packed, "w.example", "dns") for a in addresses]


def _reference_parse(msg: bytes) -> dict[str, Any]:
    """parse_message as it read its fixed-size fields before struct (frozen reference; names and
    rdata through the module's own helpers)."""
    from monitor.applayer.dns import MAX_RECORDS, DnsMalformed, _rdata, rrtype_name

    if len(msg) < 12:
        raise DnsMalformed("short header")
    ident = int.from_bytes(msg[0:2], "big")
    flags = int.from_bytes(msg[2:4], "big")
    qd, an, ns, _ar = (int.from_bytes(msg[i:i + 2], "big") for i in (4, 6, 8, 10))
    pos = 12
    questions = []
    for _ in range(min(qd, MAX_RECORDS)):
        name, pos = read_name(msg, pos)
        if pos + 4 > len(msg):
            raise DnsMalformed("question past end")
        questions.append((name, int.from_bytes(msg[pos:pos + 2], "big")))
        pos += 4
    answers = []
    truncated = False
    for i in range(an + ns):
        if i >= MAX_RECORDS:
            truncated = True
            break
        name, pos = read_name(msg, pos)
        if pos + 10 > len(msg):
            raise DnsMalformed("record past end")
        rtype = int.from_bytes(msg[pos:pos + 2], "big")
        ttl = int.from_bytes(msg[pos + 4:pos + 8], "big")
        rdlen = int.from_bytes(msg[pos + 8:pos + 10], "big")
        pos += 10
        if pos + rdlen > len(msg):
            raise DnsMalformed("rdata past end")
        if i < an:
            answers.append({"rrname": name, "rrtype": rrtype_name(rtype), "ttl": ttl,
                            "rdata": _rdata(msg, rtype, pos, rdlen), "_type": rtype})
        pos += rdlen
    return {"id": ident, "flags": flags, "qr": bool(flags & 0x8000), "opcode": (flags >> 11) & 0xF,
            "aa": bool(flags & 0x0400), "tc": bool(flags & 0x0200), "rd": bool(flags & 0x0100),
            "ra": bool(flags & 0x0080), "rcode": flags & 0xF, "questions": questions,
            "answers": answers, "records_capped": truncated}


def _outcome(fn: Any, msg: bytes) -> Any:
    try:
        return fn(msg)
    except Exception as exc:  # noqa: BLE001 - the kind of failure is compared
        return type(exc).__name__


_RECORD_TYPES = st.sampled_from([1, 28, 5, 2, 12, 15, 16, 33, 6, 99, 65])


@st.composite
def dns_message(draw: st.DrawFn) -> bytes:
    records = draw(st.lists(st.tuples(_RECORD_TYPES, st.integers(0, 2**32 - 1), st.binary(max_size=20)), max_size=6))
    questions = draw(st.integers(0, 2))
    answers = draw(st.integers(0, len(records)))
    authority = draw(st.integers(0, len(records) - answers))
    msg = struct.pack("!HHHHHH", draw(st.integers(0, 0xFFFF)), draw(st.integers(0, 0xFFFF)), questions,
                      answers, authority, 0)
    for _ in range(questions):
        msg += b"\x01a\x07example\x00" + struct.pack("!HH", draw(_RECORD_TYPES), 1)
    for rtype, ttl, rdata in records:
        if rtype == 1 and draw(st.booleans()):
            rdata = rdata[:4].ljust(4, b"\x00")
        msg += b"\xc0\x0c" + struct.pack("!HHIH", rtype, 1, ttl, len(rdata)) + rdata
    cut = draw(st.integers(0, len(msg)))
    return msg if draw(st.integers(0, 3)) else msg[:cut]


@settings(max_examples=500)
@given(msg=st.one_of(dns_message(), st.binary(max_size=80)))
def test_parse_message_reads_fields_as_the_reference(msg: bytes) -> None:
    from monitor.applayer.dns import parse_message

    assert _outcome(parse_message, msg) == _outcome(_reference_parse, msg)
