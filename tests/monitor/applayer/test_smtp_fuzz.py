"""Hypothesis: SmtpParser never raises on random or mutated sessions, closes every file, keeps
its caps, and every record it writes validates against the EVE schema."""

from __future__ import annotations

import dataclasses
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerts.eve import dumps, eve_record
from alerts.schema import validate_lines
from monitor.applayer.smtp import MAX_PENDING, SmtpParser
from monitor.config import AppLayerConfig, SmtpConfig, default_config
from monitor.events import Event
from monitor.files import STATE_OPEN
from monitor.model import TO_CLIENT, TO_SERVER
from tests.factories import RecordingContext
from tests.monitor.applayer.test_smtp import dialog

SETTINGS = settings(max_examples=int(os.environ.get("LM_FUZZ_EXAMPLES", "150")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
CFG = dataclasses.replace(default_config(), app_layer=AppLayerConfig(smtp=SmtpConfig(max_line=256, mime_max_depth=3)))

CLIENT = [b"EHLO a\r\n", b"HELO b\r\n", b"MAIL FROM:<x@y>\r\n", b"RCPT TO:<z@w>\r\n", b"DATA\r\n", b"BDAT 5\r\n",
          b"BDAT 0 LAST\r\n", b"BDAT x\r\n", b"RSET\r\n", b"STARTTLS\r\n", b"QUIT\r\n", b".\r\n", b"..x\r\n",
          b"\r\n.\r\n", b"Subject: =?utf-8?B?5pel?=\r\n", b'Content-Type: multipart/mixed; boundary="b"\r\n',
          b"--b\r\n", b"--b--\r\n", b"Content-Transfer-Encoding: base64\r\n", b"QUJD\r\n", b"\r\n", b"\x16\x03\x01",
          b"A" * 300]
SERVER = [b"220 hi\r\n", b"250 ok\r\n", b"250-x\r\n", b"354 go\r\n", b"554 no\r\n", b"221 bye\r\n", b"junk\r\n",
          b"220 tls\r\n", b"454 no tls\r\n"]

steps = st.lists(st.one_of(
    st.tuples(st.just(TO_SERVER), st.lists(st.sampled_from(CLIENT), min_size=1, max_size=6).map(b"".join)),
    st.tuples(st.just(TO_CLIENT), st.lists(st.sampled_from(SERVER), min_size=1, max_size=4).map(b"".join)),
    st.tuples(st.sampled_from([TO_SERVER, TO_CLIENT]), st.binary(max_size=200)),
    st.tuples(st.sampled_from([TO_SERVER, TO_CLIENT]), st.integers(1, 5000)),  # a gap
), max_size=40)


def play(parts: list[tuple[int, bytes | int]]) -> RecordingContext:
    ctx = RecordingContext(config=CFG)
    p = SmtpParser(ctx)
    for d, item in parts:
        if isinstance(item, int):
            p.gap(d, item, 1.0)
        else:
            p.feed(d, item, 1.0)
        assert len(p._cbuf) <= CFG.app_layer.smtp.max_line + 2  # noqa: SLF001 - the line buffers are capped
        assert len(p._sbuf) <= CFG.app_layer.smtp.max_line + 2  # noqa: SLF001
        assert len(p._pending) <= MAX_PENDING  # noqa: SLF001
    p.close(2.0)
    return ctx


def check(ctx: RecordingContext) -> None:
    assert all(f.state != STATE_OPEN for f in ctx.files)
    assert all(len(b["smtp"]["rcpt_to"]) <= 100 for b in ctx.event_bodies("smtp"))
    validate_lines([dumps(eve_record(Event(t, 1.0, b, flow=ctx.flow, tx_id=tx))) for t, b, tx in ctx.events])


@SETTINGS
@given(steps)
def test_random_sessions(parts: list[tuple[int, bytes | int]]) -> None:
    check(play(parts))


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 5000), st.binary(min_size=1, max_size=6)), max_size=8),
       st.lists(st.integers(1, 4000), max_size=10))
def test_mutated_valid_session(edits: list[tuple[int, bytes]], cuts: list[int]) -> None:
    parts: list[tuple[int, bytes | int]] = []
    for d, data in dialog():
        b = bytearray(data)
        for pos, rep in edits:
            if b and pos % 3 == d:
                i = pos % len(b)
                b[i : i + len(rep)] = rep
        pos = 0
        for cut in sorted({c % (len(b) + 1) for c in cuts}) + [len(b)]:
            if cut > pos:
                parts.append((d, bytes(b[pos:cut])))
                pos = cut
    check(play(parts))
