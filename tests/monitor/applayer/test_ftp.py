"""FtpParser / FtpDataParser unit tests with the RecordingContext double."""

from __future__ import annotations

import ipaddress

from alerts.eve import dumps, eve_record
from alerts.schema import validate_lines
from monitor.applayer.ftp import FtpParser, parse_eprt_arg, parse_port_arg
from monitor.events import Event
from monitor.files import STATE_CLOSED, STATE_TRUNCATED
from monitor.model import TO_CLIENT, TO_SERVER
from tests.factories import RecordingContext, tflow

CLIENT, SERVER = "10.0.0.5", "203.0.113.7"


def packed(a: str) -> bytes:
    return ipaddress.ip_address(a).packed


def control(parts: list[tuple[int, bytes]], client: str = CLIENT, server: str = SERVER) -> RecordingContext:
    ctx = RecordingContext(flow=tflow(client, server, sport=21))
    p = FtpParser(ctx)
    for d, data in parts:
        p.feed(d, data, 1.0)
    p.close(2.0)
    return ctx


def validate(ctx: RecordingContext) -> list[dict]:
    return validate_lines([dumps(eve_record(Event(t, 1.0, b, flow=ctx.flow, tx_id=tx))) for t, b, tx in ctx.events])


def data_flow(exp: dict, client: str, server: str, sport: int, chunks: list[tuple[int, bytes]]) -> RecordingContext:
    ctx = RecordingContext(flow=tflow(client, server, cport=40000, sport=sport))
    p = exp["factory"](ctx)
    for d, data in chunks:
        p.feed(d, data, 3.0)
    p.close(4.0)
    return ctx


def test_port_argument_parsers() -> None:
    assert parse_port_arg("10,0,0,5,195,80") == (packed("10.0.0.5"), 50000)
    assert parse_port_arg("10,0,0,500,1,1") is None
    assert parse_eprt_arg("|1|132.235.1.2|6275|") == (packed("132.235.1.2"), 6275)
    assert parse_eprt_arg("|2|fd77::1|6275|") == (packed("fd77::1"), 6275)
    assert parse_eprt_arg("!2!fd77::1!6275!") == (packed("fd77::1"), 6275)
    assert parse_eprt_arg("|1|fd77::1|6275|") is None
    assert parse_eprt_arg("|2|::1|99999|") is None


def test_passive_stor_expectation_and_events() -> None:
    ctx = control([
        (TO_CLIENT, b"220-Welcome\r\n220 ready\r\n"),
        (TO_SERVER, b"USER alice\r\n"), (TO_CLIENT, b"331 pass\r\n"),
        (TO_SERVER, b"PASS hunter2\r\n"), (TO_CLIENT, b"230 ok\r\n"),
        (TO_SERVER, b"PASV\r\n"), (TO_CLIENT, b"227 Entering Passive Mode (203,0,113,7,117,48).\r\n"),
        (TO_SERVER, b"STOR \xe8\xa8\xad\xe8\xa8\x88\xe6\x9b\xb8.docx\r\n"),
        (TO_CLIENT, b"150 ok\r\n"), (TO_CLIENT, b"226 done\r\n"),
    ])
    [exp] = ctx.expectations
    assert (exp["server"], exp["server_port"], exp["client"]) == (packed(SERVER), 30000, packed(CLIENT))
    assert exp["info"]["command"] == "STOR" and exp["info"]["filename"] == "設計書.docx"
    assert exp["info"]["control_flow_id"] == ctx.flow.flow_id and exp["info"]["mode"] == "passive"
    ftp = [b["ftp"] for b in ctx.event_bodies("ftp")]
    assert [f["command"] for f in ftp] == ["USER", "PASS", "PASV", "STOR"]
    assert "command_data" not in ftp[1] and b"hunter2" not in repr(ctx.events).encode()
    assert ftp[2]["dynamic_port"] == 30000 and ftp[2]["mode"] == "passive"
    assert ftp[3] == {"command": "STOR", "command_data": "設計書.docx", "reply": ["ok", "done"],
                      "completion_code": ["150", "226"], "dynamic_port": 30000, "mode": "passive",
                      "reply_received": "yes"}
    assert ctx.flow.app_proto == "ftp" and ctx.anomalies == []
    validate(ctx)
    # the data connection: client -> server, bytes flow to the server
    dctx = data_flow(exp, CLIENT, SERVER, 30000, [(TO_SERVER, b"PK\x03\x04" + b"x" * 100)])
    [f] = dctx.files
    assert (f.name, f.size, f.state, f.direction, f.source) == ("設計書.docx", 104, STATE_CLOSED, TO_SERVER,
                                                                 "ftp.data[STOR]")
    assert dctx.flow.app_proto == "ftp-data" and dctx.anomalies == []
    assert dctx.event_bodies("ftp_data") == [{"ftp_data": {"command": "STOR", "filename": "設計書.docx"}}]
    validate(dctx)


def test_active_port_and_eprt_ipv6() -> None:
    ctx = control([
        (TO_CLIENT, b"220 ready\r\n"), (TO_SERVER, b"PORT 10,0,0,5,156,64\r\n"),
        (TO_CLIENT, b"200 ok\r\n"), (TO_SERVER, b"RETR secret.pdf\r\n"),
        (TO_CLIENT, b"150 opening\r\n226 done\r\n"),
    ])
    [exp] = ctx.expectations
    # Active: the FTP server connects to the client's announced port.
    assert (exp["server"], exp["server_port"], exp["client"]) == (packed(CLIENT), 40000, packed(SERVER))
    dctx = data_flow(exp, SERVER, CLIENT, 40000, [(TO_SERVER, b"%PDF-1.7 ...")])
    [f] = dctx.files
    assert f.name == "secret.pdf" and f.direction == TO_SERVER and dctx.anomalies == []
    c6, s6 = "fd77::1", "fd77::2"
    ctx = control([(TO_SERVER, b"EPRT |2|fd77::1|50001|\r\n"), (TO_CLIENT, b"200 ok\r\n"),
                   (TO_SERVER, b"STOR up.bin\r\n"), (TO_CLIENT, b"150 x\r\n226 y\r\n")], c6, s6)
    [exp] = ctx.expectations
    assert (exp["server"], exp["server_port"], exp["client"]) == (packed(c6), 50001, packed(s6))
    dctx = data_flow(exp, s6, c6, 50001, [(TO_CLIENT, b"upload bytes")])  # data flows to the FTP server
    assert dctx.files[0].direction == TO_CLIENT and dctx.anomalies == []


def test_epsv_listing_is_inspected_not_a_file() -> None:
    ctx = control([(TO_SERVER, b"EPSV\r\n"), (TO_CLIENT, b"229 Entering Extended Passive Mode (|||30001|)\r\n"),
                   (TO_SERVER, b"MLSD\r\n"), (TO_CLIENT, b"150 x\r\n226 y\r\n")])
    [exp] = ctx.expectations
    assert exp["server_port"] == 30001 and exp["info"]["command"] == "MLSD"
    dctx = data_flow(exp, CLIENT, SERVER, 30001, [(TO_CLIENT, b"type=file;size=3; a.txt\r\n")])
    assert dctx.files == []
    assert [i.where for i in dctx.inspected] == ["ftp.data[MLSD]"]
    assert dctx.event_bodies("ftp_data") == [{"ftp_data": {"command": "MLSD"}}]


def test_data_connection_opened_before_the_command() -> None:
    """ftplib connects after 227 and only then sends STOR: the live info fills in later."""
    p = FtpParser(ctx := RecordingContext(flow=tflow(CLIENT, SERVER, sport=21)))
    p.feed(TO_SERVER, b"PASV\r\n", 1.0)
    p.feed(TO_CLIENT, b"227 =203,0,113,7,117,50\r\n", 1.0)
    [exp] = ctx.expectations
    dctx = RecordingContext(flow=tflow(CLIENT, SERVER, sport=30002))
    d = exp["factory"](dctx)
    p.feed(TO_SERVER, b"APPE log.txt\r\n", 1.1)
    d.feed(TO_SERVER, b"more lines\n", 1.2)
    d.close(1.3)
    assert dctx.files[0].name == "log.txt" and dctx.files[0].source == "ftp.data[APPE]"


def test_pasv_address_differs_expects_both() -> None:
    ctx = control([(TO_SERVER, b"PASV\r\n"), (TO_CLIENT, b"227 Entering Passive Mode (192,168,1,9,117,48)\r\n")])
    assert [e["server"] for e in ctx.expectations] == [packed(SERVER), packed("192.168.1.9")]
    assert ctx.expectations[0]["info"] is ctx.expectations[1]["info"]


def test_rest_and_wrong_direction() -> None:
    ctx = control([(TO_SERVER, b"REST 100\r\n"), (TO_CLIENT, b"350 ok\r\n"), (TO_SERVER, b"PASV\r\n"),
                   (TO_CLIENT, b"227 (203,0,113,7,117,48)\r\n"), (TO_SERVER, b"RETR big.iso\r\n")])
    exp = ctx.expectations[0]
    dctx = data_flow(exp, CLIENT, SERVER, 30000, [(TO_SERVER, b"odd"), (TO_CLIENT, b"tail of file")])
    [f] = dctx.files
    assert f.state == STATE_TRUNCATED and f.sha256 is None  # a resumed transfer is not the whole file
    assert dctx.anomalies == ["ftp_data.unexpected_direction", "ftp_data.both_directions"]
    assert [i.data for i in dctx.inspected] == [b"tail of file"]


def test_malformed_control_input() -> None:
    ctx = control([(TO_SERVER, b"PORT 1,2,3\r\nEPRT |9|x|1|\r\n"), (TO_CLIENT, b"hello\r\n500 bad\r\n500 bad\r\n"),
                   (TO_CLIENT, b"200 unexpected\r\n"), (TO_SERVER, b"A" * 10000 + b"\r\nNOOP\r\n")])
    assert ctx.anomalies == ["ftp.invalid_port", "ftp.invalid_eprt", "ftp.invalid_reply", "ftp.unmatched_reply",
                             "ftp.line_too_long"]
    assert ctx.expectations == []
    [noop] = [b for b in ctx.event_bodies("ftp") if b["ftp"]["command"] == "NOOP"]
    assert noop["ftp"]["reply_received"] == "no"
    validate(ctx)


def test_auth_tls_stops_parsing_commands() -> None:
    ctx = control([(TO_SERVER, b"AUTH TLS\r\n"), (TO_CLIENT, b"234 go\r\n"),
                   (TO_SERVER, b"\x16\x03\x01\x00\x05hello"), (TO_SERVER, b"STOR x\r\n")])
    assert [b["ftp"]["command"] for b in ctx.event_bodies("ftp")] == ["AUTH"]
    assert ctx.expectations == []
