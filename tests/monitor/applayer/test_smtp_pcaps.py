"""SMTP/MIME end to end: captures replayed through capture -> decode -> flow -> reassembly ->
protocol detection -> SmtpParser. Our own lab captures (pcaps/make_mail_ftp.py) and the public
corpus (../shared/corpus, expected values from its README / upstream test.yaml)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from functools import cache
from typing import Any

import pytest

from alerts.schema import validate_lines
from monitor.applayer.smtp import SmtpParser
from monitor.files import STATE_CLOSED
from tests.conftest import PCAPS, corpus
from tests.monitor.applayer.mailftp_replay import MailFtpReplay, replay
from tests.monitor.test_files import md5_hashes

SV = "suricata-verify/"


@cache
def run(path: str, force: bool = False) -> MailFtpReplay:
    with md5_hashes():  # as suricata-verify's force-hash md5: some tests check fileinfo md5
        r = replay(path, ports={25: SmtpParser} if force else None)
    r.eve()  # every smtp/anomaly record validates against the schema
    return r


def lab(name: str) -> MailFtpReplay:
    return run(str(PCAPS / name))


def cor(rel: str, force: bool = False) -> MailFtpReplay:
    return run(str(corpus(rel)), force)


def smtp_events(r: MailFtpReplay) -> list[dict[str, Any]]:
    return r.events("smtp")


def one_file(r: MailFtpReplay, name: str) -> Any:
    files = r.file_named(name)
    assert len(files) == 1, [f.name for f in r.files]
    return files[0]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------ lab captures


def test_lab_iso2022jp_mail_with_japanese_subject() -> None:
    r = lab("mail-smtplib.pcap")
    evs = smtp_events(r)
    assert len(evs) == 4
    first = evs[0]
    assert first["smtp"] == {"helo": "ws01.lab.example", "mail_from": "<yamada@lab.example>",
                             "rcpt_to": ["<partner@lab.example>"]}
    assert first["email"]["subject"] == "【機密】設計図面の送付について"
    assert first["email"]["from"] == "山田 <yamada@lab.example>"
    body = [f for f in r.files if f.tx_id == 0]
    assert len(body) == 1 and body[0].charset == "iso2022_jp"
    text = body[0].content().decode("iso2022_jp")
    assert text == "関係各位\r\n\r\n設計図面を送付します。取扱注意。\r\nLEAKMON-TEST-MARKER-JIS"
    assert any(i.charset == "iso2022_jp" and b"LEAKMON-TEST-MARKER-JIS" in i.data for i in r.inspected)
    assert r.anomalies == []


def test_lab_docx_attachment_with_rfc2231_japanese_name() -> None:
    r = lab("mail-smtplib.pcap")
    ev = smtp_events(r)[1]
    assert ev["email"]["subject"] == "設計書 送付"
    assert ev["email"]["to"] == ["partner@lab.example", "鈴木 <suzuki@lab.example>"]
    assert ev["email"]["cc"] == ["boss@lab.example"]
    assert ev["email"]["attachment"] == ["設計書（社外秘）.docx"]
    assert ev["email"]["url"] == ["https://files.lab.example/share/123"]
    f = one_file(r, "設計書（社外秘）.docx")
    assert (f.size, f.state, f.sha256) == (656, STATE_CLOSED,
                                           "3a2dd7e318ba1dbaac96cf49cf985a913976de82f7e9dd565f2a0418d01dafcb")
    assert f.detected_type == "application/zip" and f.tx_id == 1
    assert f.source == "smtp.mail > mime[2] > attachment[file=設計書（社外秘）.docx]"
    assert f.app["email"]["subject"] == "設計書 送付"


def test_lab_quoted_printable_shift_jis_and_euc_jp_bodies() -> None:
    r = lab("mail-smtplib.pcap")
    evs = smtp_events(r)
    assert [e["email"]["subject"] for e in evs[2:]] == ["見積書", "議事録"]
    sjis = [f for f in r.files if f.tx_id == 2][0]
    assert sjis.charset == "cp932"
    assert sjis.content().decode("cp932") == "見積書の件\r\n単価は社外秘です。\r\nLEAKMON-TEST-MARKER-SJIS ① ㈱"
    euc = [f for f in r.files if f.tx_id == 3][0]
    assert euc.charset == "euc_jp"
    # smtplib dot-stuffed the line starting with "."; the parser removed the extra dot.
    assert euc.content().decode("euc_jp") == "議事録\r\n.先頭がドットの行\r\nLEAKMON-TEST-MARKER-EUC"


def test_lab_starttls_is_recorded_and_nothing_after_it_is_parsed_as_smtp() -> None:
    r = lab("mail-starttls.pcap")
    [ev] = smtp_events(r)
    assert ev["smtp"] == {"helo": "ws01.lab.example", "rcpt_to": [], "starttls": True}
    assert r.files == [] and r.anomalies == []
    if importlib.util.find_spec("monitor.applayer.tls") is not None:
        # The rest of the session went to the registry's TLS parser.
        assert any(c.tls_infos or c.event_bodies("tls") for c in r.contexts)


def test_lab_bdat_chunks_split_mid_base64_line_and_pipelined() -> None:
    r = lab("mail-bdat.pcap")
    evs = smtp_events(r)
    assert [e["email"]["subject"] for e in evs] == ["BDAT テスト", "second BDAT mail"]
    assert all(e["email"]["status"] == "PARSE_DONE" for e in evs)
    blob = one_file(r, "blob.bin")
    assert blob.content() == bytes((i * 7 + 3) % 256 for i in range(3000))
    assert blob.sha256 == "f541874101876255b4baf3a739778d04cb9cba25ffa38b30bc1fb8b0701f2a45"
    second = [f for f in r.files if f.tx_id == 1][0]
    assert second.content() == b".LEAKMON-TEST-MARKER-BDAT-2 a line starting with a dot, not stuffed in BDAT\r\n"
    assert r.anomalies == []


# ------------------------------------------------------------------ suricata-verify corpus


def test_sv_bug_3616_and_smtp_eve() -> None:
    r = cor(SV + "bug-3616-smtp/input.pcap")
    [ev] = smtp_events(r)
    assert ev["smtp"] == {"helo": "GP", "mail_from": "<gurpartap@patriots.in>",
                          "rcpt_to": ["<raj_deol2002in@yahoo.co.in>"]}
    assert ev["email"]["from"] == '"Gurpartap Singh" <gurpartap@patriots.in>'
    assert ev["email"]["to"] == ["<raj_deol2002in@yahoo.co.in>"]
    assert ev["email"]["attachment"] == ["NEWS.txt"] and ev["email"]["status"] == "PARSE_DONE"
    f = one_file(r, "NEWS.txt")
    assert (f.size, f.state, f.gaps, f.tx_id) == (10807, STATE_CLOSED, False, 0)
    assert f.sha256 == "ac04c5d2cd8fa9a2670c959806f5181a56b3e9bb1cc7da150af98ba074c86b55"
    assert f.md5 == "98b40d2ca6fe05f78229984a923909bf"
    rec = [x for x in r.eve() if x["event_type"] == "smtp"][0]
    assert (rec["src_ip"], rec["src_port"], rec["dest_ip"], rec["dest_port"]) == ("10.10.1.4", 1470, "74.53.140.153", 25)
    # the fileinfo record the pipeline writes for it: fileinfo + the mail's smtp/email objects
    fi = {"timestamp": "2009-10-05T06:06:07.000000+0000", "event_type": "fileinfo", "fileinfo": f.fileinfo(), **f.app}
    [checked] = validate_lines([json.dumps(fi, ensure_ascii=False)])
    assert checked["email"]["attachment"] == ["NEWS.txt"] and checked["smtp"]["helo"] == "GP"


@pytest.mark.parametrize("rel,name,size,sha256", [
    ("smtp-attachment-md5/input.pcap", "EICAR-Test-File", 68,
     "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f"),
    ("mime/mime-quoted-printable/input.pcap", "words.txt", 1058,
     "a5e3aba74847e34edee282bd666d3a7606393118b0874e63682c31b3dc0daada"),
    ("mime/mime-quoted-printable/input.pcap", "related.patch", 34224,
     "359641873610597882317aee0f72104ed54fe8aa82d6fa323a5418e4529bd3b9"),
    ("smtp-long-DATA-line/input.pcap", "winmail.dat", 10451,
     "c14d632ab473fb815381a33bc29103fe34a2bea0e3451a9eae8c6dc0bee2f3eb"),
    ("smtp-bug-5981/input.pcap", "winmail.dat", 10451,
     "5f41c213e35d8421647181cc9b8925a5b2ab34c23102907581214fd574157fff"),
    ("smtp-rfc2231/input.pcap",
     "smtptest-2021-02-25T13-54-22Z-aefb2fc1308d62f4b6c74769f69b13ddf80e995fd98ae442f3be499ea928c67f..zip", 51675,
     "4679e7f2018c1918258f3205a610afbf28e1afd00f60e1786e95d928611d3253"),
    ("bug-6207-2/input.pcap",
     "smtptest-2021-02-25T13-54-22Z-aefb2fc1308d62f4b6c74769f69b13ddf80e995fd98ae442f3be499ea928c67f..zip", 2,
     "73475cb40a568e8da8a045ced110137e159f890ac4da883b6b17dc651b3a8049"),
    ("smtp-file-data-01/input.pcap", "J.txt", 16384,
     "d410bead384b3a0a8717c900c5934478d1b1ccd35eeadbc719f99bb22cd69de9"),
    ("mime/mime-dec-parse-long-filename02/input.pcap", "12characters12characters12characters.exe", 25, None),
])
def test_sv_attachments(rel: str, name: str, size: int, sha256: str | None) -> None:
    r = cor(SV + rel)
    f = one_file(r, name)
    assert (f.size, f.state, f.gaps) == (size, STATE_CLOSED, False)
    if sha256:
        assert f.sha256 == sha256
    [ev] = smtp_events(r)
    assert name in ev["email"]["attachment"] and ev["email"]["status"] == "PARSE_DONE"
    assert f.app["email"] is ev["email"]  # fileinfo events carry the mail's email object


def test_sv_specific_expectations() -> None:
    r = cor(SV + "smtp-attachment-md5/input.pcap")
    assert one_file(r, "EICAR-Test-File").md5 == "44d88612fea8a8f36de82e1278abb02f"
    r = cor(SV + "bug-6207-2/input.pcap")
    [ev] = smtp_events(r)
    assert ev["smtp"] == {"helo": "smtp.intra", "mail_from": "blah@smtp.lab.com", "rcpt_to": ["test@wut.com"]}
    assert r.files[-1].content() == b"42"  # the documented base64 policy
    r = cor(SV + "smtp-long-DATA-line/input.pcap")
    assert r.anomalies.count("mime.long_line") == 1
    r = cor(SV + "smtp-file-data-01/input.pcap")
    assert b"if was" in one_file(r, "J.txt").content()
    r = cor(SV + "smtp-url-base64/smtp-url-b64.pcap")
    [ev] = smtp_events(r)
    assert ev["email"]["url"][0] == "http://codashop-free01.duckdns.org/"


@pytest.mark.parametrize("case", ["smtp-mime-encap-8649-baseline", "smtp-mime-encap-8649-combined"])
def test_sv_mime_encapsulation_evasion(case: str) -> None:
    r = cor(SV + f"mime/{case}/input.pcap")
    f = one_file(r, "malware.exe")
    assert f.content() == b"EICAR-MIME-BYPASS-TEST-PAYLOAD" and f.state == STATE_CLOSED
    assert "malware.exe" in smtp_events(r)[0]["email"]["attachment"]


def test_sv_bdat_multichunk_second_mail_parsed() -> None:
    r = cor(SV + "smtp-bdat-multichunk-inspection/input.pcap")
    evs = smtp_events(r)
    assert len(evs) == 2
    assert evs[0]["smtp"]["mail_from"] == "<a@example.com>" and evs[0]["smtp"]["rcpt_to"] == ["<b@example.com>"]
    assert evs[1]["smtp"]["mail_from"] == "<evil@example.com>" and evs[1]["smtp"]["rcpt_to"] == ["<victim@example.com>"]
    assert evs[1]["email"]["subject"] == "SECOND-MAIL-MARKER" and evs[1]["email"]["status"] == "PARSE_DONE"
    assert [tx for c in r.contexts for t, _b, tx in c.events if t == "smtp"] == [0, 1]
    assert r.anomalies == []


# ------------------------------------------------------------------ zeek and arkime corpus


def test_zeek_smtp_two_sessions() -> None:
    r = cor("zeek/smtp.pcap")
    evs = smtp_events(r)
    subjects = [e["email"]["subject"] for e in evs]
    assert subjects == ["SMTP", "Re: Bro SMTP CC Header"]
    assert evs[1]["email"]["cc"] == ["felica4uu@hotmail.com", "davis_mark1@outlook.com"]
    assert one_file(r, "NEWS.txt").sha256 == "ac04c5d2cd8fa9a2670c959806f5181a56b3e9bb1cc7da150af98ba074c86b55"


@pytest.mark.parametrize("rel,force", [("zeek/smtp-attachment-msg.pcap", True), ("zeek/smtp/rfc3030-bdat-nonascii.pcap", False)])
def test_zeek_message_rfc822_attachment(rel: str, force: bool) -> None:
    r = cor(rel, force)  # the first capture holds the client side only: detection cannot classify it
    [ev] = smtp_events(r)
    assert ev["email"]["attachment"] == ["test.msg"]
    assert [f.content() for f in r.files] == [b"this is the body"]


def test_zeek_bdat_multipart_chunked() -> None:
    r = cor("zeek/smtp/rfc3030-bdat-multipart-chunked.pcap")
    f = one_file(r, "zeek-logo.png")
    data = f.content()
    assert f.size == 2011 and f.detected_type == "image/png" and data.endswith(b"IEND\xaeB`\x82")
    assert f.sha256 == "de85e2b5b3664e82b758cf4fce54e972bc1f2aa40992368b3f8935a56d2a04cc"
    assert smtp_events(r)[0]["email"]["subject"] == "Zeek Logo"


ARKIME_SUBJECTS = {
    "smtp-subject-8859-b": "test å é î ø ü",
    "smtp-subject-8859-multi": "4spaces    å é î ø ü     5spaces",
    "smtp-subject-8859-q": "é î ø ü" + " " * 185 + "test",
    "smtp-subject-encoded-empty": "Can this 10 Second Trick Help Prevent YOUR Heart Attack?",
    "smtp-subject-gb2312-b": "test 测试",
    "smtp-subject-utf8-mixed": "这是用空格测试" + " " * 114 + "å é î ø ü" + " " * 78 + "test",
    "smtp-subject-utf8-q": "xxxxxx xxxxxx xx xxxxxxxxx xx-xxxxxxx（ANA）GGL_xxxxxxxxxxxxx_xxxxxx.zip",
    "smtp-subject-windows": "Awesome windows: See What’s Next in charset decoding!",
    "smtp-zip": "zip test",
}


@pytest.mark.parametrize("name", sorted(ARKIME_SUBJECTS))
def test_arkime_subject_decoding(name: str) -> None:
    import json

    expected = json.loads(corpus(f"arkime/{name}.expected.json").read_text())["sessions3"][0]["body"]["email"]
    assert expected["subject"] == [ARKIME_SUBJECTS[name]]
    r = cor(f"arkime/{name}.pcap")
    [ev] = smtp_events(r)
    assert ev["email"]["subject"] == ARKIME_SUBJECTS[name]
    # Arkime hashes each decoded body part; where it lists hashes, ours must include them.
    ours = {f.sha256 for f in r.files}
    assert set(expected.get("sha256", [])) <= ours


def test_arkime_zip_attachment() -> None:
    r = cor("arkime/smtp-zip.pcap")
    f = one_file(r, "a.zip")
    assert (f.size, f.md5, f.sha256) == (310, "40be8f5100e9beabab293c9d7bacaff0",
                                         "61479904e443b354d4427a51b990c696f731e341e4c63328e07c1a92658ba591")
