"""Hypothesis: FtpParser and FtpDataParser never raise, keep their caps, close their files, and
every record validates against the EVE schema."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerts.eve import dumps, eve_record
from alerts.schema import validate_lines
from monitor.applayer.ftp import MAX_LINE, MAX_PENDING, MAX_REPLIES, FtpParser
from monitor.events import Event
from monitor.files import STATE_OPEN
from monitor.model import TO_CLIENT, TO_SERVER
from tests.factories import RecordingContext, tflow

SETTINGS = settings(max_examples=int(os.environ.get("LM_FUZZ_EXAMPLES", "150")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

CLIENT = [b"USER a\r\n", b"PASS b\r\n", b"PASV\r\n", b"EPSV\r\n", b"PORT 10,0,0,5,1,2\r\n", b"PORT 999,1\r\n",
          b"EPRT |2|::1|5|\r\n", b"EPRT |1|x|y|\r\n", b"STOR f\r\n", b"RETR g\r\n", b"STOU\r\n", b"APPE h\r\n",
          b"LIST\r\n", b"MLSD\r\n", b"REST 10\r\n", b"AUTH TLS\r\n", b"\xe8\xa8\xad\r\n", b"A" * 100]
SERVER = [b"220 hi\r\n", b"227 (203,0,113,7,1,2)\r\n", b"227 (300,1,1,1,1,1)\r\n", b"229 (|||4000|)\r\n",
          b"229 (|||0|)\r\n", b"150 x\r\n", b"226 ok\r\n", b"200 ok\r\n", b"350 ok\r\n", b"234 tls\r\n",
          b"211-features\r\n", b" MLST\r\n", b"211 end\r\n", b"550 no\r\n", b"garbage\r\n"]

steps = st.lists(st.one_of(
    st.tuples(st.just(TO_SERVER), st.lists(st.sampled_from(CLIENT), min_size=1, max_size=5).map(b"".join)),
    st.tuples(st.just(TO_CLIENT), st.lists(st.sampled_from(SERVER), min_size=1, max_size=5).map(b"".join)),
    st.tuples(st.sampled_from([TO_SERVER, TO_CLIENT]), st.binary(max_size=300)),
    st.tuples(st.sampled_from([TO_SERVER, TO_CLIENT]), st.integers(1, 9000)),
), max_size=40)


def validate(ctx: RecordingContext) -> None:
    validate_lines([dumps(eve_record(Event(t, 1.0, b, flow=ctx.flow, tx_id=tx))) for t, b, tx in ctx.events])


@SETTINGS
@given(steps, st.lists(st.tuples(st.sampled_from([TO_SERVER, TO_CLIENT]), st.binary(max_size=100)), max_size=6))
def test_random_sessions_and_data_connections(parts: list[tuple[int, bytes | int]],
                                              data: list[tuple[int, bytes]]) -> None:
    ctx = RecordingContext(flow=tflow(sport=21))
    p = FtpParser(ctx)
    for d, item in parts:
        if isinstance(item, int):
            p.gap(d, item, 1.0)
        else:
            p.feed(d, item, 1.0)
        assert len(p._cbuf) <= MAX_LINE + 2 and len(p._sbuf) <= MAX_LINE + 2  # noqa: SLF001
        assert len(p._pending) <= MAX_PENDING  # noqa: SLF001
    p.close(2.0)
    assert all(len(b["ftp"].get("reply", [])) <= MAX_REPLIES for b in ctx.event_bodies("ftp"))
    assert all("command_data" not in b["ftp"] for b in ctx.event_bodies("ftp") if b["ftp"]["command"] == "PASS")
    validate(ctx)
    for exp in ctx.expectations:  # every announced data connection, fed random bytes
        dctx = RecordingContext(flow=tflow(sport=exp["server_port"] or 20))
        dp = exp["factory"](dctx)
        for d, chunk in data:
            dp.feed(d, chunk, 3.0)
        dp.gap(TO_CLIENT, 10, 3.0)
        dp.close(4.0)
        assert all(f.state != STATE_OPEN for f in dctx.files)
        validate(dctx)
