"""FTP end to end: captures replayed through capture -> decode -> flow -> reassembly -> detection,
with data connections bound to the expectations the control parser registers. Our lab capture
(pcaps/make_mail_ftp.py: pyftpdlib + ftplib) and the public corpus."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import pytest

from alerts.schema import validate_lines
from monitor.applayer.ftp import FtpParser
from monitor.files import STATE_CLOSED, STATE_TRUNCATED
from monitor.model import TO_CLIENT, TO_SERVER, ip_text
from tests.conftest import PCAPS, corpus
from tests.monitor.applayer.mailftp_replay import MailFtpReplay, replay
from tests.monitor.test_files import md5_hashes

SV = "suricata-verify/"


@cache
def run(path: str) -> MailFtpReplay:
    with md5_hashes():  # as suricata-verify's force-hash md5: a test checks the md5
        r = replay(path)
    r.eve()  # ftp, ftp_data and anomaly records validate against the schema
    return r


def ftp_data(r: MailFtpReplay) -> list[tuple[str, str | None]]:
    return [(b["ftp_data"]["command"], b["ftp_data"].get("filename")) for b in r.events("ftp_data")]


def data_files(r: MailFtpReplay) -> list[tuple[str, str, int, str | None, str]]:
    out = []
    for c in r.contexts:
        if c.flow.app_proto != "ftp-data":
            continue
        for f in c.files:
            out.append((f.source, f.name, f.size, f.sha256, f.state))
    return out


# ------------------------------------------------------------------ lab capture


LAB_FILES = [
    # (source, name, size, sha256), in the order the client ran them
    ("ftp.data[STOR]", "upload-passive.txt", 1185, "6dd19776c017e692708811bea490ec4d8554059749aee70a282d085412d5d0b3"),
    ("ftp.data[RETR]", "served.txt", 5400, "55164a8f2a6e45b296cf29b0efe00900600194588a8e5ff42eded39c3baa5112"),
    ("ftp.data[APPE]", "upload-passive.txt", 140, "d62e82070759fc80fb75e5f20fb2ba09935b0d2accd77a5258767843bd56acb9"),
    ("ftp.data[STOU]", "unique.txt", 65, "9d300cea26504c57ee179048fc7ce3d1f75622b19e1fa7b8e74a8b2abebea58b"),
    ("ftp.data[STOR]", "upload-active.bin", 16384, "a1f259d4365ed4320c377ce26f5c8c56dcdc9a89e7b641bfd8eabfbbeac86654"),
    ("ftp.data[RETR]", "served.txt", 5400, "55164a8f2a6e45b296cf29b0efe00900600194588a8e5ff42eded39c3baa5112"),
    ("ftp.data[STOR]", "report-v6.txt", 2700, "514e5edacc1d92eb39efe4a99c2aafb199b38eac2bd1e8b66852329d5a4a4582"),
    ("ftp.data[RETR]", "served.txt", 5400, "55164a8f2a6e45b296cf29b0efe00900600194588a8e5ff42eded39c3baa5112"),
    ("ftp.data[RETR]", "report-v6.txt", 2700, "514e5edacc1d92eb39efe4a99c2aafb199b38eac2bd1e8b66852329d5a4a4582"),
]


def test_lab_ftplib_transfers_all_modes_ipv4_ipv6() -> None:
    r = run(str(PCAPS / "ftp-ftplib.pcap"))
    assert [(s, n, z, h) for s, n, z, h, _st in data_files(r)] == LAB_FILES
    assert all(st == STATE_CLOSED for *_x, st in data_files(r))
    assert ftp_data(r) == [
        ("STOR", "upload-passive.txt"), ("RETR", "served.txt"), ("APPE", "upload-passive.txt"),
        ("STOU", "unique.txt"), ("LIST", None), ("NLST", None), ("MLSD", None),
        ("STOR", "upload-active.bin"), ("RETR", "served.txt"),
        ("STOR", "report-v6.txt"), ("RETR", "served.txt"), ("RETR", "report-v6.txt")]
    assert r.matched == 12 and r.anomalies == []
    # which data flow went where, and in which direction the file moved
    by_name: dict[str, list[tuple[Any, int]]] = {}
    for c in r.contexts:
        for f in c.files:
            by_name.setdefault(f.name, []).append((c.flow, f.direction))
    (flow, direction), = by_name["upload-active.bin"]
    assert ip_text(flow.client) == "10.77.0.2" and direction == TO_CLIENT  # active: the server connected
    (flow, direction), = by_name["upload-passive.txt"][:1]
    assert ip_text(flow.client) == "10.77.0.1" and 30000 <= flow.sport < 30050 and direction == TO_SERVER
    v6 = [flow for flow, _d in by_name["report-v6.txt"]]
    assert [ip_text(f.client) for f in v6] == ["fd77::1", "fd77::2"]  # EPSV then EPRT
    # PASS never reaches an event; the listing bytes are inspected, not filed
    cmds = [b["ftp"] for b in r.events("ftp")]
    assert [c for c in cmds if c["command"] == "PASS"] == 4 * [{"command": "PASS", "reply": ["Login successful."],
                                                                "completion_code": ["230"], "reply_received": "yes"}]
    assert "s3cret-pass" not in repr(r.events("ftp"))
    assert {c.get("mode") for c in cmds if c["command"] in ("PASV", "EPSV", "PORT", "EPRT")} == {"passive", "active"}
    assert any(i.where == "ftp.data[LIST]" and b"served.txt" in i.data for i in r.inspected)
    # the fileinfo records the pipeline writes: fileinfo + the ftp_data object
    lines = [json.dumps({"timestamp": "2024-04-01T00:00:00.000000+0000", "event_type": "fileinfo",
                         "fileinfo": f.fileinfo(), **f.app}) for f in r.files]
    assert {rec["ftp_data"]["command"] for rec in validate_lines(lines)} == {"STOR", "RETR", "APPE", "STOU"}


# ------------------------------------------------------------------ corpus


@pytest.mark.parametrize("rel,command,direction", [
    ("ftp/ftp-upload-active/input.pcap", "STOR", TO_CLIENT),
    ("ftp/ftp-download-passive/input.pcap", "RETR", TO_CLIENT),
])
def test_sv_ftp_index_html(rel: str, command: str, direction: int) -> None:
    r = run(str(corpus(SV + rel)))
    assert (command, "index.html") in ftp_data(r)
    [f] = [f for f in r.files if f.name == "index.html"]
    assert (f.size, f.sha256, f.source, f.direction) == (
        39, "5ef391d886d04116cf84b584ae37ef136f83950ab69b7bfb2a6da7506f7b3a57", f"ftp.data[{command}]", direction)
    users = [b for b in r.events("ftp") if b["ftp"]["command"] == "USER"]
    assert len(users) == 1
    recs = [x for x in r.eve() if x["event_type"] == "ftp_data" and x["ftp_data"].get("filename") == "index.html"]
    if command == "STOR":  # upstream: the active STOR's ftp_data record goes 172.23.0.2 -> 172.23.0.3
        assert (recs[0]["src_ip"], recs[0]["dest_ip"]) == ("172.23.0.2", "172.23.0.3")


def test_sv_bug_4877_both_files_both_directions() -> None:
    r = run(str(corpus(SV + "bug-4877/input.pcap")))
    got = sorted((n, z, h, src) for src, n, z, h, _st in data_files(r))
    pdf = ("test.pdf", 118196, "7d400735ff3054837da5d92a10ad2faa8b6825f100dc167a6b008e753015b382")
    exe = ("notepad.exe", 69120, "fefeac4c10bbe237cc6c861229ecaacbd2a366ac4fbd04a3862b62bd7a778093")
    assert got == sorted([(*exe, "ftp.data[RETR]"), (*exe, "ftp.data[STOR]"),
                          (*pdf, "ftp.data[RETR]"), (*pdf, "ftp.data[STOR]")])


def test_sv_output_eve_ftp_data_amid_http() -> None:
    r = run(str(corpus(SV + "output-eve-ftp-data/input.pcap")))
    events = ftp_data(r)
    assert len(events) == 2 and ("RETR", "temp.txt") in events
    [f] = [f for f in r.files if f.name == "temp.txt"]
    assert (f.size, f.sha256) == (1164, "db84caf61a8664263fe33a31aff60ca256f84ab1e88d70f753d0769b897f6252")


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_sv_firewall_all_data_commands(family: str) -> None:
    num = 116 if family == "ipv4" else 117
    r = run(str(corpus(SV + f"firewall/ruletype-firewall-{num}-ftp-all-data-{family}/input.pcap")))
    events = ftp_data(r)
    for mode in ("active", "passive"):
        assert events.count(("APPE", f"all-data-{family}-{mode}-stor-appe.txt")) == 1
        assert events.count(("STOU", f"all-data-{family}-{mode}-stou.txt")) == 1
        assert events.count(("STOR", f"all-data-{family}-{mode}-stor-appe.txt")) == 1
    assert events.count(("LIST", None)) == 2 and events.count(("MLSD", None)) == 2
    stored = [f for f in r.files if f.source == "ftp.data[STOR]"]
    assert {(f.size, f.sha256) for f in stored} == {
        (83, "703e6235d6a8e6c807a9844add62f53d0b8058aba5b20dd6a1ee1fa6d5781930")}
    assert r.anomalies == []


@pytest.mark.parametrize("rel,name,size,sha256", [
    ("zeek/ftp/retr.pcap", "/README", 16557, "202674eba48e832690a4475113acf8b16a3f6c82c04c94b36bb2c7ce457ac8d2"),
    ("zeek/ftp/ipv4.pcap", "robots.txt", 77, "92101c97b7425d24309c923bbd4a554f85d8b0b1ce105666bc8f64c0c72d7fac"),
    ("zeek/ftp/ipv6.pcap", "robots.txt", 77, "92101c97b7425d24309c923bbd4a554f85d8b0b1ce105666bc8f64c0c72d7fac"),
])
def test_zeek_ftp_retr(rel: str, name: str, size: int, sha256: str) -> None:
    r = run(str(corpus(rel)))
    files = [f for f in r.files if f.name == name]
    assert files and all((f.size, f.sha256, f.state) == (size, sha256, STATE_CLOSED) for f in files)
    if rel == "zeek/ftp/retr.pcap":
        assert files[0].md5 == "7192a8075196267203adb3dfaa5c908d"


def test_zeek_bigtransfer_sparse_capture_is_truncated_not_hashed() -> None:
    r = run(str(corpus("zeek/ftp/bigtransfer.pcap")))
    [f] = [f for f in r.files if f.name == "rand.txt"]
    assert f.state == STATE_TRUNCATED and f.sha256 is None and f.missing_bytes > 5_000_000_000
    assert f.buffer is None  # nothing was buffered for the multi-GB hole


def test_arkime_control_only_session() -> None:
    r = replay(str(corpus("arkime/ftp.pcap")), ports={21: FtpParser})
    cmds = [b["ftp"]["command"] for b in r.events("ftp")]
    assert cmds and "USER" in cmds and r.files == []
    assert all("command_data" not in b["ftp"] for b in r.events("ftp") if b["ftp"]["command"] == "PASS")

