"""End-to-end leak scenarios: real-client captures (pcaps/make_leaks.py) replayed through the CLI.

Each scenario asserts the exact sid, the flow (from tshark's reading of the same capture), the
encoding/variant and the ``where`` path reported in ``alert.leakmon``, the file name, the
plaintext-transmission companion alert, and that the redacted context does not show the marker.
Where a decoder must have done the work, the test also checks that the marker's plain bytes are
*not* in the capture at all (so a raw-stream match cannot be what passed the test).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

import pytest

from alerts.schema import validate_lines
from tests.e2e.leaks_helpers import (
    CLIENT4,
    CLIENT6,
    LEAKS,
    MARKER,
    SERVER4,
    SERVER6,
    SID_PLAINTEXT,
    SID_TLS_CIPHER,
    SID_TLS_VERSION,
    Conn,
    Replay,
    Replayer,
    assert_redacted,
    derived_config,
    replay_cli,
    replay_fixture,  # noqa: F401 - provides the session fixture `replay`
    tcp_connections,
)

MULTIPART = "http.request.body > multipart[name=file,file={}]"
SID_MARKER, SID_SHAGAIHI, SID_DRAWING, SID_SPEC = 9100001, 9100005, 9200101, 9300101
CATEGORY = {"marker": "protected-data-leak", "fingerprint": "fingerprint-match", "partial": "partial-document-match"}


@dataclass(frozen=True)
class Leak:
    capture: str
    sid: int
    where: str
    variant: str | None = None  # exact, or a prefix when it ends with "/"
    filename: str | None = None  # fileinfo.filename of the file that matched
    kind: str = "marker"
    service: str = "http"  # picks the connection: http 8080, smtp 25, ftp the data connection
    other_sids: frozenset[int] = frozenset()  # further rule sids the content legitimately carries
    absent: tuple[str, str] | None = None  # (text, codec) whose bytes must not appear in the capture
    app: dict[str, Any] = field(default_factory=dict)  # dotted EVE path -> value

    @property
    def id(self) -> str:
        return self.capture


def _m(fname: str) -> str:
    return MULTIPART.format(fname)


LEAK_CASES = [
    # Plain text files in every Japanese encoding, uploaded with curl -F.
    Leak("http-multipart-utf8-marker", SID_MARKER, _m("会議メモ.txt"), "utf-8", "会議メモ.txt"),
    Leak("http-multipart-cp932-marker", SID_MARKER, _m("会議メモ_sjis.txt"), "cp932", "会議メモ_sjis.txt"),
    Leak("http-multipart-eucjp-marker", SID_MARKER, _m("memo-euc.txt"), "euc-jp", "memo-euc.txt"),
    Leak("http-multipart-iso2022jp-marker", SID_MARKER, _m("memo-jis.txt"), "iso-2022-jp", "memo-jis.txt"),
    Leak("http-multipart-utf16le-marker", SID_MARKER, _m("memo-utf16le.txt"), "utf-16le", "memo-utf16le.txt"),
    Leak("http-multipart-utf16be-marker", SID_MARKER, _m("memo-utf16be.txt"), "utf-16be", "memo-utf16be.txt"),
    # Escaped forms in web requests.
    Leak("http-form-percent-marker", SID_MARKER, "http.request.body", "percent/utf-8/upper", "/form",
         absent=(MARKER, "utf-8"), app={"http.http_method": "POST", "http.url": "/form"}),
    Leak("http-form-percent-cp932-marker", SID_MARKER, "http.request.body", "percent/cp932/lower", "/search",
         absent=(MARKER, "cp932")),
    Leak("http-json-uescape-marker", SID_MARKER, "http.request.body", "json-u/lower", "/api/v1/notes",
         absent=(MARKER, "utf-8"), app={"http.request_content_type": "application/json"}),
    Leak("http-json-base64-marker", SID_MARKER, "http.request.body", "base64/utf-8/", "/api/v1/files",
         absent=(MARKER, "utf-8")),
    # Real office documents (LibreOffice) and archives: the marker only exists after decompression.
    Leak("http-multipart-docx-marker", SID_MARKER, _m("見積仕様.docx") + " > zip:word/document.xml", "utf-8",
         "見積仕様.docx", other_sids=frozenset({SID_SHAGAIHI}), absent=(MARKER, "utf-8")),
    Leak("http-multipart-xlsx-marker", SID_MARKER, _m("諸元表.xlsx") + " > zip:xl/sharedStrings.xml", "utf-8",
         "諸元表.xlsx", absent=(MARKER, "utf-8")),
    Leak("http-multipart-pptx-marker", SID_MARKER, _m("概要説明.pptx") + " > zip:ppt/slides/slide1.xml", "utf-8",
         "概要説明.pptx", absent=(MARKER, "utf-8")),
    Leak("http-multipart-pdf-marker", SID_MARKER, _m("仕様書.pdf") + " > pdf:page1", "utf-8", "仕様書.pdf",
         other_sids=frozenset({SID_SHAGAIHI}), absent=(MARKER, "utf-8")),
    Leak("http-put-zip-in-zip-marker", SID_MARKER, "http.request.body > zip:設計資料.zip > zip:memo.txt", "euc-jp",
         "memo.txt", absent=(MARKER, "euc_jp"), app={"http.http_method": "PUT"}),
    # Registered documents: exact file fingerprint (renamed) and a pasted excerpt (partial).
    Leak("http-multipart-fingerprint-renamed", SID_DRAWING, _m("holiday-photo.jpg"), None, "holiday-photo.jpg",
         kind="fingerprint"),
    Leak("http-form-partial-excerpt", SID_SPEC, "http.request.body > form", None, "/board/post", kind="partial"),
    # Mail (smtplib + email package): JIS body, quoted-printable body, base64 attachment.
    Leak("smtp-iso2022jp-body-marker", SID_MARKER, "smtp.mail > mime[1] > body[text/plain]", "iso-2022-jp",
         service="smtp", app={"email.subject": "定例会議の件", "smtp.helo": "ws01.corp.example"}),
    Leak("smtp-qp-body-marker", SID_MARKER, "smtp.mail > mime[1] > body[text/plain]", "utf-8", service="smtp",
         absent=(MARKER, "utf-8"), app={"email.subject": "議事録"}),
    Leak("smtp-base64-attachment-marker", SID_MARKER, "smtp.mail > mime[2] > attachment[file=見積条件.txt]", "cp932",
         "見積条件.txt", service="smtp", absent=(MARKER, "cp932"), app={"email.subject": "見積書送付"}),
    # FTP uploads: passive (PASV), active (PORT), IPv6 passive (EPSV).
    Leak("ftp-stor-passive-marker", SID_MARKER, "ftp.data[STOR]", "euc-jp", "議事録.txt", service="ftp"),
    Leak("ftp-stor-active-marker", SID_MARKER, "ftp.data[STOR]", "utf-8", "minutes.txt", service="ftp"),
    Leak("ftp-stor-epsv-ipv6-marker", SID_MARKER, "ftp.data[STOR]", "utf-16le", "memo-v6.txt", service="ftp"),
]


def _dig(rec: dict[str, Any], dotted: str) -> Any:
    cur: Any = rec
    for part in dotted.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    return cur


def leak_connection(case: Leak) -> Conn:
    conns = tcp_connections(f"{case.capture}.pcap")
    if case.service == "ftp":
        picked = [c for c in conns if 21 not in (c.sport, c.dport)]
    else:
        port = {"http": 8080, "smtp": 25}[case.service]
        picked = [c for c in conns if c.dport == port]
    assert len(picked) == 1, f"expected one {case.service} data connection in {case.capture}: {conns}"
    return picked[0]


def the_alert(run: Replay, sid: int, where: str) -> dict[str, Any]:
    found = [a for a in run.alerts(sid) if a["leakmon"]["where"] == where]
    wheres = sorted({(a["alert"]["signature_id"], a["leakmon"]["where"]) for a in run.alerts()})
    assert len(found) == 1, f"sid {sid} at {where!r}: {len(found)} alerts; alerts seen: {wheres}"
    return found[0]


def assert_healthy(run: Replay) -> None:
    """No detection bug was contained and no parser failed on these well-formed captures."""
    stats = run.stats()
    assert not any(k.startswith("internal_error") for k in stats.get("detect", {})), stats.get("detect")
    kinds = [a["anomaly"]["event"] for a in run.of_type("anomaly")]
    assert "applayer.parser_error" not in kinds, kinds
    assert "content.decoder_error" not in kinds, kinds


@pytest.mark.parametrize("case", LEAK_CASES, ids=lambda c: c.id)
def test_leak_scenario(case: Leak, replay: Replayer) -> None:
    run = replay(f"{case.capture}.pcap")
    assert_healthy(run)
    alert = the_alert(run, case.sid, case.where)
    lm = alert["leakmon"]

    # The rule and its category.
    assert alert["alert"]["signature_id"] == case.sid
    assert alert["alert"]["category"] == CATEGORY[case.kind]
    assert alert["alert"]["action"] == "allowed"
    assert lm["kind"] == case.kind
    assert lm["marker_id" if case.kind == "marker" else "fingerprint_id"] == case.sid

    # The flow: the connection tshark finds in the same capture, oriented protected host -> outside.
    src, sport, dst, dport = leak_connection(case).oriented()
    assert (alert["src_ip"], alert["src_port"], alert["dest_ip"], alert["dest_port"]) == (src, sport, dst, dport)
    assert alert["proto"] == "TCP"
    assert src in (CLIENT4, CLIENT6) and dst in (SERVER4, SERVER6)
    assert lm["direction"] == "outbound"
    assert lm["protected_host"] == src and lm["destination"] == dst
    assert lm["approved_destination"] is False
    flows = [f for f in run.of_type("flow") if f["flow_id"] == alert["flow_id"]]
    assert len(flows) == 1 and flows[0]["flow"]["alerted"] is True
    assert flows[0]["community_id"] == alert["community_id"]

    # What matched, where, in which file.
    if case.variant is None:
        assert "variant" not in lm
    elif case.variant.endswith("/"):
        assert lm["variant"].startswith(case.variant), lm["variant"]
    else:
        assert lm["variant"] == case.variant
    if case.filename is not None:
        assert alert["fileinfo"]["filename"] == case.filename
    assert lm["match_count"] >= 1
    if case.kind == "marker":
        assert_redacted(lm["context"])
    for dotted, value in case.app.items():
        assert _dig(alert, dotted) == value, dotted

    # Clear text leaving the protected side is a violation of its own (基準 10(5)エ).
    companions = [a for a in run.alerts(SID_PLAINTEXT) if a["leakmon"]["where"] == case.where]
    assert len(companions) == 1
    assert companions[0]["alert"]["category"] == "plaintext-transmission"
    assert companions[0]["alert"]["metadata"]["rule"] == [str(case.sid)]
    assert companions[0]["flow_id"] == alert["flow_id"]

    # Nothing else: the rule sids raised are exactly the expected ones.
    assert run.sids() == {case.sid, SID_PLAINTEXT} | case.other_sids

    if case.absent is not None:
        text, codec = case.absent
        raw = (LEAKS / f"{case.capture}.pcap").read_bytes()
        assert text.encode(codec) not in raw, "the marker is in clear in the capture: no decoder was needed"


def test_fingerprint_names_the_registered_file(replay: Replayer) -> None:
    from pcaps.make_leaks import drawing_bytes

    run = replay("http-multipart-fingerprint-renamed.pcap")
    alert = the_alert(run, SID_DRAWING, _m("holiday-photo.jpg"))
    digest = hashlib.sha256(drawing_bytes()).hexdigest()
    assert alert["leakmon"]["sha256"] == digest
    assert alert["leakmon"]["fingerprint_name"] == "drawing-A1234.dwg"
    assert alert["fileinfo"]["sha256"] == digest
    assert alert["fileinfo"]["size"] == len(drawing_bytes())


def test_partial_excerpt_names_the_document(replay: Replayer) -> None:
    from detectors.partial import normalize
    from pcaps.make_leaks import SPEC_EXCERPT

    run = replay("http-form-partial-excerpt.pcap")
    lm = the_alert(run, SID_SPEC, "http.request.body > form")["leakmon"]
    assert lm["document"] == "装備品仕様書.txt"
    # At least the configured minimum, and no more than the excerpt itself.
    assert 60 <= lm["shared_chars"] <= len(normalize(SPEC_EXCERPT))
    assert 0 < lm["share"] < 0.5


def test_weak_cipher_suite_tls12(replay: Replayer) -> None:
    run = replay("tls-weak-cipher-tls12.pcap")
    assert_healthy(run)
    assert run.sids() == {SID_TLS_CIPHER}
    (alert,) = run.alerts(SID_TLS_CIPHER)
    conn = tcp_connections("tls-weak-cipher-tls12.pcap")[0]
    assert (alert["src_ip"], alert["src_port"], alert["dest_ip"], alert["dest_port"]) == conn.oriented()
    assert alert["alert"]["category"] == "weak-crypto"
    assert alert["leakmon"]["tls"]["cipher_suite"] == "0x002F"  # TLS_RSA_WITH_AES_128_CBC_SHA
    assert alert["leakmon"]["protected_host"] == CLIENT4
    (tls,) = run.of_type("tls")
    assert tls["tls"]["version"] == "TLS 1.2"  # Suricata's spelling
    assert tls["tls"]["sni"] == "files.partner.example"


def test_tls10_cipher_suite_flagged(replay: Replayer) -> None:
    run = replay("tls-weak-tls10.pcap")
    assert_healthy(run)
    (tls,) = run.of_type("tls")
    assert tls["tls"]["version"] == "TLSv1"
    (alert,) = run.alerts(SID_TLS_CIPHER)
    assert alert["leakmon"]["tls"]["cipher_suite"] == "0xC013"  # ECDHE_RSA_WITH_AES_128_CBC_SHA


def test_tls10_version_below_minimum(replay: Replayer) -> None:
    run = replay("tls-weak-tls10.pcap")
    assert run.sids() == {SID_TLS_VERSION, SID_TLS_CIPHER}
    (alert,) = run.alerts(SID_TLS_VERSION)
    assert alert["alert"]["category"] == "weak-crypto"
    assert alert["alert"]["metadata"]["min_version"] == ["TLSv1.2"]
    assert alert["leakmon"]["tls"]["version"] == "TLSv1"


def test_cli_subprocess_entry_point(tmp_path, replay: Replayer) -> None:
    """The real ``python3 -m monitor replay`` writes the same alert as the in-process run."""
    cfg = derived_config("leaks.yaml", tmp_path)
    capture = LEAKS / "http-multipart-docx-marker.pcap"
    proc = subprocess.run([sys.executable, "-m", "monitor", "replay", str(capture), "-c", str(cfg), "--eve-log", "-",
                           "--no-progress"], capture_output=True, text=True, timeout=120,
                          env={"LEAKMON_DETECT_STRICT": "1", "PATH": "/usr/bin:/bin", "TZ": "UTC"},
                          cwd=str(LEAKS.parent.parent))
    assert proc.returncode == 0, proc.stderr
    records = validate_lines(proc.stdout)
    got = {(r["alert"]["signature_id"], r["leakmon"]["where"], r["leakmon"].get("variant"))
           for r in records if r["event_type"] == "alert"}
    expected = {(r["alert"]["signature_id"], r["leakmon"]["where"], r["leakmon"].get("variant"))
                for r in replay("http-multipart-docx-marker.pcap").alerts()}
    assert got == expected
    assert (SID_MARKER, _m("見積仕様.docx") + " > zip:word/document.xml", "utf-8") in got
    assert "alerts" in proc.stderr and json.dumps(MARKER, ensure_ascii=False) not in proc.stderr


def _first_ts(path) -> float:
    from monitor.capture.pcapfile import read_capture
    from monitor.stats import Stats

    return next(iter(read_capture(str(path), stats=Stats()))).ts


def test_hyperscan_engine_agrees(tmp_path, replay: Replayer) -> None:
    """Every leak capture in one run with the production engine (one Hyperscan build) raises the
    same (flow, sid, where, variant) alerts as the per-capture pyahocorasick runs above."""
    pytest.importorskip("hyperscan")
    names = [f"{c.capture}.pcap" for c in LEAK_CASES] + ["tls-weak-cipher-tls12.pcap", "tls-weak-tls10.pcap"]
    # In capture time order, so no flow looks idle because a later capture was replayed first.
    paths = sorted((LEAKS / n for n in names), key=_first_ts)
    cfg = derived_config("leaks.yaml", tmp_path, detection__engine="hyperscan")
    together = replay_cli(paths, cfg, tmp_path / "eve.json")

    def key(a: dict[str, Any]) -> tuple[Any, ...]:
        return (a["src_ip"], a["src_port"], a["dest_ip"], a["dest_port"], a["alert"]["signature_id"],
                a["leakmon"]["where"], a["leakmon"].get("variant"))

    expected = {key(a) for n in names for a in replay(n).alerts()}
    assert {key(a) for a in together.alerts()} == expected
    assert len(expected) > 2 * len(LEAK_CASES)


def _visible_jis(context: str, text: str) -> list[str]:
    """Characters of ``text`` readable in ``context`` as JIS X 0208 byte pairs (ISO-2022-JP neighbours)."""
    seen = []
    for a, b in zip(context, context[1:], strict=False):
        if "!" <= a <= "~" and "!" <= b <= "~":
            ch = (b"\x1b$B" + (a + b).encode("ascii") + b"\x1b(B").decode("iso2022_jp", errors="replace")
            if ch in text and not ch.isascii():
                seen.append(ch)
    return seen


def test_iso2022jp_context_hides_the_neighbouring_text(replay: Replayer) -> None:
    from pcaps.make_leaks import marker_text

    run = replay("http-multipart-iso2022jp-marker.pcap")
    alert = the_alert(run, SID_MARKER, _m("memo-jis.txt"))
    text = marker_text("iso2022_jp").decode("iso2022_jp")
    assert _visible_jis(alert["leakmon"]["context"], text) == []
