"""SmtpParser unit tests: commands/replies, DATA framing, BDAT, STARTTLS, rejections, gaps, caps."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.eve import dumps, eve_record
from alerts.schema import validate_lines
from monitor.applayer import smtp as smtp_module
from monitor.applayer.smtp import SmtpParser
from monitor.config import AppLayerConfig, SmtpConfig, default_config
from monitor.events import Event
from monitor.files import STATE_CLOSED, STATE_TRUNCATED
from monitor.model import TO_CLIENT, TO_SERVER
from tests.factories import RecordingContext, tflow

GREETING = b"220 mx.example ESMTP\r\n"
MAIL = (b"From: =?UTF-8?B?5bGx55Sw?= <yamada@example.jp>\r\nTo: a@example.jp, b@example.jp\r\n"
        b"Cc: c@example.jp\r\nSubject: =?ISO-2022-JP?B?" + base64.b64encode("試験".encode("iso2022_jp"))
        + b"?=\r\nMessage-ID: <m1@example.jp>\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="XX"\r\n\r\n'
        b"--XX\r\nContent-Type: text/plain; charset=Shift_JIS\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        + b"=8B=40=96=A7 see http://leak.example/x?a=3D1.\r\n"
        b"..dot line\r\n"
        b'--XX\r\nContent-Type: application/pdf; name="a.pdf"\r\nContent-Disposition: attachment; filename="a.pdf"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(b"%PDF-1.4 fake").replace(b"\n", b"\r\n")
        + b"--XX--\r\n")


def session(ctx: RecordingContext, parts: list[tuple[int, bytes]]) -> SmtpParser:
    p = SmtpParser(ctx)
    for d, data in parts:
        p.feed(d, data, 1.0)
    p.close(2.0)
    return p


def eve(ctx: RecordingContext) -> list[dict]:
    lines = [dumps(eve_record(Event(t, 1.0, b, flow=ctx.flow, direction=TO_SERVER, tx_id=tx)))
             for t, b, tx in ctx.events]
    return validate_lines(lines)


def dialog(mail: bytes = MAIL) -> list[tuple[int, bytes]]:
    return [
        (TO_CLIENT, GREETING), (TO_SERVER, b"EHLO ws01.example.jp\r\n"),
        (TO_CLIENT, b"250-mx.example\r\n250-PIPELINING\r\n250 CHUNKING\r\n"),
        # pipelined: MAIL, two RCPT and DATA in one segment before any reply
        (TO_SERVER, b"MAIL FROM:<yamada@example.jp> SIZE=100\r\nRCPT TO:<a@example.jp>\r\n"
                    b"RCPT TO:<b@example.jp> NOTIFY=NEVER\r\nDATA\r\n"),
        (TO_CLIENT, b"250 OK\r\n250 OK\r\n250 OK\r\n354 go\r\n"),
        (TO_SERVER, mail + b".\r\n"), (TO_CLIENT, b"250 queued\r\n"),
        (TO_SERVER, b"QUIT\r\n"), (TO_CLIENT, b"221 bye\r\n"),
    ]


def test_pipelined_session_event_and_files() -> None:
    ctx = RecordingContext(flow=tflow(sport=25))
    session(ctx, dialog())
    [ev] = ctx.event_bodies("smtp")
    assert ev["smtp"] == {"helo": "ws01.example.jp", "mail_from": "<yamada@example.jp>",
                          "rcpt_to": ["<a@example.jp>", "<b@example.jp>"]}
    email = ev["email"]
    assert email["from"] == "山田 <yamada@example.jp>"
    assert email["subject"] == "試験"
    assert email["to"] == ["a@example.jp", "b@example.jp"] and email["cc"] == ["c@example.jp"]
    assert email["attachment"] == ["a.pdf"] and email["status"] == "PARSE_DONE"
    assert email["url"] == ["http://leak.example/x?a=1"]
    body, pdf = ctx.files
    assert body.content() == "機密".encode("cp932") + b" see http://leak.example/x?a=1.\r\n.dot line"
    assert body.charset == "cp932" and body.source == "smtp.mail > mime[1] > body[text/plain]"
    assert pdf.name == "a.pdf" and pdf.content() == b"%PDF-1.4 fake" and pdf.state == STATE_CLOSED
    assert pdf.source == "smtp.mail > mime[2] > attachment[file=a.pdf]"
    assert pdf.app["smtp"]["mail_from"] == "<yamada@example.jp>" and pdf.app["email"]["attachment"] == ["a.pdf"]
    assert ctx.flow.app_proto == "smtp"
    assert ctx.names == [(ctx.flow.client, "ws01.example.jp", "smtp_helo")]
    assert ctx.txs[0]["email"]["subject"] == "試験"
    text = [i for i in ctx.inspected if i.where == "smtp.mail > mime[1] > body[text/plain]"]
    assert text[0].charset == "cp932" and text[0].data.decode("cp932").startswith("機密")
    assert any(i.where == "smtp.mail > header[subject]" and i.data == "試験".encode() for i in ctx.inspected)
    assert ctx.anomalies == []
    rec = eve(ctx)[0]
    assert rec["event_type"] == "smtp" and rec["tx_id"] == 0 and rec["dest_port"] == 25


@pytest.mark.parametrize("step", [1, 2, 3, 5, 17])
def test_end_marker_and_dot_stuffing_split_anywhere(step: int) -> None:
    ctx = RecordingContext()
    p = SmtpParser(ctx)
    for d, data in dialog():
        for i in range(0, len(data), step):
            p.feed(d, data[i : i + step], 1.0)
    p.close(2.0)
    assert [f.content() for f in ctx.files] == [
        "機密".encode("cp932") + b" see http://leak.example/x?a=1.\r\n.dot line", b"%PDF-1.4 fake"]
    assert len(ctx.event_bodies("smtp")) == 1 and ctx.anomalies == []


def test_single_part_body_ends_before_the_end_marker_crlf() -> None:
    ctx = RecordingContext()
    msg = b"Subject: s\r\n\r\nline1\r\n.\r\n"  # ".\r\n" alone would end the message: here it is stuffed
    session(ctx, [(TO_SERVER, b"HELO h\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n"),
                  (TO_SERVER, msg.replace(b"\r\n.\r\n", b"\r\n..\r\n") + b".\r\n")])
    assert ctx.files[0].content() == b"line1\r\n."


def test_bdat_chunks_and_second_mail() -> None:
    body = b"Subject: chunked\r\nContent-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(b"X" * 300)
    c1, c2 = body[:70], body[70:]
    mail2 = b"Subject: second\r\n\r\n.not stuffed\r\n"
    ctx = RecordingContext()
    session(ctx, [
        (TO_CLIENT, GREETING), (TO_SERVER, b"EHLO h\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n"),
        (TO_SERVER, b"BDAT %d\r\n" % len(c1) + c1 + b"BDAT %d LAST\r\n" % len(c2) + c2[:10]),
        (TO_SERVER, c2[10:]),
        (TO_CLIENT, b"250 ok\r\n250 ok\r\n250 ok\r\n250 ok\r\n250 ok\r\n"),
        (TO_SERVER, b"MAIL FROM:<e@f>\r\nRCPT TO:<g@h>\r\nBDAT %d LAST\r\n" % len(mail2) + mail2 + b"QUIT\r\n"),
        (TO_CLIENT, b"250 ok\r\n250 ok\r\n250 ok\r\n221 bye\r\n"),
    ])
    evs = ctx.event_bodies("smtp")
    assert [e["email"]["subject"] for e in evs] == ["chunked", "second"]
    assert [e["email"]["status"] for e in evs] == ["PARSE_DONE", "PARSE_DONE"]
    assert [t for t, _, tx in ctx.events] == ["smtp", "smtp"] and [tx for *_, tx in ctx.events] == [0, 1]
    assert ctx.files[0].content() == b"X" * 300
    assert ctx.files[1].content() == b".not stuffed\r\n"  # BDAT is not dot-stuffed
    assert ctx.anomalies == []


def test_rejected_data_returns_to_commands() -> None:
    ctx = RecordingContext()
    session(ctx, [
        (TO_CLIENT, GREETING), (TO_SERVER, b"HELO h\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n"),
        (TO_CLIENT, b"250 ok\r\n250 ok\r\n250 ok\r\n554 no valid recipients\r\n"),
        (TO_SERVER, b"RSET\r\nMAIL FROM:<x@y>\r\nRCPT TO:<z@w>\r\nDATA\r\n"),
        (TO_CLIENT, b"250 reset\r\n250 ok\r\n250 ok\r\n354 go\r\n"),
        (TO_SERVER, b"Subject: ok\r\n\r\nhello\r\n.\r\n"), (TO_CLIENT, b"250 queued\r\n"),
    ])
    first, second = ctx.event_bodies("smtp")
    assert first["smtp"]["mail_from"] == "<a@b>" and "email" not in first
    assert second["smtp"]["mail_from"] == "<x@y>" and second["email"]["subject"] == "ok"
    assert [f.content() for f in ctx.files] == [b"hello"]
    eve(ctx)


def test_starttls_hands_the_rest_to_tls() -> None:
    ctx = RecordingContext()
    hello = bytes.fromhex("160301002f0100002b0303") + bytes(32) + bytes.fromhex("000002130101000000")
    session(ctx, [
        (TO_CLIENT, GREETING), (TO_SERVER, b"EHLO h\r\n"), (TO_CLIENT, b"250-mx\r\n250 STARTTLS\r\n"),
        (TO_SERVER, b"STARTTLS\r\n" + hello),  # the ClientHello before the 220 was fed
        (TO_CLIENT, b"220 go ahead\r\n"),
        (TO_SERVER, b"\x17\x03\x03\x00\x05MAIL FROM:<hidden@x>"),
    ])
    [ev] = ctx.event_bodies("smtp")
    assert ev["smtp"]["starttls"] is True and ev["smtp"]["helo"] == "h"
    assert ctx.files == [] and ctx.anomalies == []
    eve(ctx)


def test_starttls_refused_keeps_parsing_commands() -> None:
    ctx = RecordingContext()
    session(ctx, [
        (TO_CLIENT, GREETING), (TO_SERVER, b"EHLO h\r\nSTARTTLS\r\nMAIL FROM:<a@b>\r\n"),
        (TO_CLIENT, b"250 mx\r\n454 TLS not available\r\n250 ok\r\n"),
        (TO_SERVER, b"RCPT TO:<c@d>\r\nDATA\r\n"), (TO_CLIENT, b"250 ok\r\n354 go\r\n"),
        (TO_SERVER, b"Subject: plain\r\n\r\nx\r\n.\r\n"), (TO_CLIENT, b"250 ok\r\n"),
    ])
    [ev] = ctx.event_bodies("smtp")
    assert "starttls" not in ev["smtp"] and ev["smtp"]["mail_from"] == "<a@b>"
    assert ev["email"]["subject"] == "plain"


def test_gap_in_data_truncates_the_open_file() -> None:
    ctx = RecordingContext()
    p = SmtpParser(ctx)
    p.feed(TO_SERVER, b"HELO h\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n", 1.0)
    p.feed(TO_SERVER, b"Subject: g\r\n\r\nfirst part of the body ", 1.0)
    p.gap(TO_SERVER, 500, 1.0)
    p.feed(TO_SERVER, b"rest\r\n.\r\nQUIT\r\n", 1.0)
    p.close(2.0)
    [f] = ctx.files
    assert f.state == STATE_TRUNCATED and f.sha256 is None and f.missing_bytes == 500
    [ev] = ctx.event_bodies("smtp")
    assert ev["email"]["status"] == "TRUNCATED"


def test_flow_ends_mid_message() -> None:
    ctx = RecordingContext()
    session(ctx, [(TO_SERVER, b"HELO h\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n"
                              b"Subject: cut\r\nContent-Transfer-Encoding: base64\r\n\r\nQUJD")])
    [f] = ctx.files
    assert f.state == STATE_TRUNCATED and f.size == 3
    assert ctx.event_bodies("smtp")[0]["email"]["status"] == "TRUNCATED"


def test_line_caps_and_bad_replies() -> None:
    cfg = dataclasses.replace(default_config(), app_layer=AppLayerConfig(smtp=SmtpConfig(max_line=1024)))
    ctx = RecordingContext(config=cfg)
    session(ctx, [(TO_CLIENT, GREETING), (TO_SERVER, b"EHLO " + b"a" * 5000), (TO_SERVER, b"\r\nHELO ok\r\n"),
                  (TO_CLIENT, b"garbage\r\n250 ok\r\n250 extra\r\n")])
    assert ctx.anomalies == ["smtp.line_too_long", "smtp.invalid_reply", "smtp.unmatched_reply"]
    assert ctx.names[-1][1] == "ok"


def test_rcpt_cap_is_counted() -> None:
    ctx = RecordingContext()
    rcpts = b"".join(b"RCPT TO:<r%d@x>\r\n" % i for i in range(150))
    session(ctx, [(TO_SERVER, b"HELO h\r\nMAIL FROM:<a@b>\r\n" + rcpts)])
    [ev] = ctx.event_bodies("smtp")
    assert len(ev["smtp"]["rcpt_to"]) == 100 and ctx.stats.get("smtp.cap_hit", cap="rcpt") == 50
    json.dumps(ev)


LINES = [b".", b"..", b".x", b"abc", b"", b"\r", b".\r", b"\xe6\x97\xa5\xe6\x9c\xac", b"A" * 40]


@settings(max_examples=int(os.environ.get("LM_FUZZ_EXAMPLES", "150")), deadline=None)
@given(st.lists(st.tuples(st.sampled_from(LINES), st.sampled_from([b"\r\n", b"\n"])), min_size=1, max_size=40),
       st.lists(st.integers(1, 700), max_size=12), st.integers(4, 64))
def test_data_runs_unstuff_and_end_anywhere(lines: list[tuple[bytes, bytes]], cuts: list[int], batch: int) -> None:
    """Whatever the segment sizes and the run size, the message is the dot-unstuffed body without
    the line break that belongs to the end marker, and what follows the marker is a command."""
    body = b"".join(line + eol for line, eol in lines)
    stuffed = b"".join((b"." + line if line.startswith(b".") else line) + eol for line, eol in lines)
    wire = b"HELO h\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nSubject: s\r\n\r\n" + stuffed + b".\r\nRSET\r\n"
    ctx = RecordingContext()
    p = SmtpParser(ctx)
    saved = smtp_module.MESSAGE_BATCH
    smtp_module.MESSAGE_BATCH = batch
    try:
        pos = 0
        for cut in sorted(set(c % (len(wire) + 1) for c in cuts)) + [len(wire)]:
            p.feed(TO_SERVER, wire[pos:cut], 1.0)
            pos = cut
        assert p._mbuf == b"" and p._cbuf == b""  # noqa: SLF001 - RSET was parsed as a command
        assert [c.verb for c in p._pending][-2:] == ["EOM", "RSET"]  # noqa: SLF001
        p.close(2.0)
    finally:
        smtp_module.MESSAGE_BATCH = saved
    expected = body[:-2] if body.endswith(b"\r\n") else body[:-1]
    assert [f.content() for f in ctx.files] == ([expected] if expected else [])
    assert ctx.event_bodies("smtp")[0]["email"]["status"] == "PARSE_DONE"


def test_large_message_runs_keep_hash_and_stuffing() -> None:
    """A 300 KB body with dot lines every few lines, in 1448-byte segments (several runs)."""
    rnd = random.Random(7)
    lines = [(b"." if rnd.random() < 0.2 else b"") + rnd.randbytes(30).hex().encode() for _ in range(5000)]
    body = b"\r\n".join(lines)
    wire = b"Subject: big\r\n\r\n" + b"\r\n".join(b"." + ln if ln.startswith(b".") else ln for ln in lines) + b"\r\n.\r\n"
    ctx = RecordingContext()
    session(ctx, [(TO_SERVER, b"HELO h\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n")]
            + [(TO_SERVER, wire[i : i + 1448]) for i in range(0, len(wire), 1448)])
    [f] = ctx.files
    assert f.state == STATE_CLOSED and f.sha256 == hashlib.sha256(body).hexdigest()
