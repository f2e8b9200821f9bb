"""End-to-end negatives: what must *not* raise a leak alert, and the violation that replaces it.

Each negative also proves the content was actually seen (the file's name and SHA-256 in a
``fileinfo`` event, or an informational ``finding`` when configured), so "no alert" cannot come
from a capture the pipeline failed to read.
"""

from __future__ import annotations

import hashlib

from tests.e2e.leaks_helpers import (
    CLIENT4,
    LEAK_SIDS,
    MARKER,
    ROOT,
    SERVER4,
    SID_PLAINTEXT,
    Replay,
    Replayer,
    replay_fixture,  # noqa: F401 - provides the session fixture `replay`
    tcp_connections,
)
from tests.e2e.test_leaks import SID_MARKER, assert_healthy

DOCS = ROOT / "tests" / "data" / "docs"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _files(run: Replay) -> dict[str, dict]:
    return {f["fileinfo"]["filename"]: f for f in run.of_type("fileinfo")}


def test_near_miss_text_raises_nothing(replay: Replayer) -> None:
    from pcaps.make_leaks import NEAR_MISS_TEXT

    run = replay("neg-http-near-miss.pcap")
    assert_healthy(run)
    assert run.alerts() == []
    # The near-miss file was parsed and hashed: "nothing" is a verdict, not a blind spot.
    f = _files(run)["訂正.txt"]["fileinfo"]
    assert f["sha256"] == _sha(NEAR_MISS_TEXT.encode("utf-8"))
    assert f["state"] == "CLOSED"
    stats = run.stats()
    assert stats["detect"].get("bytes[view=file]", 0) >= len(NEAR_MISS_TEXT.encode("utf-8"))
    assert not any(k.startswith("matches") for k in stats["detect"]), stats["detect"]


def test_marker_flowing_into_the_protected_side_is_not_a_leak(replay: Replayer) -> None:
    from pcaps.make_leaks import marker_text

    run = replay("neg-http-inbound-download.pcap")
    assert_healthy(run)
    assert run.alerts() == []
    files = _files(run)
    for name, data in (("/notice.txt", marker_text("utf-8")), ("/sample.docx", (DOCS / "sample.docx").read_bytes())):
        f = files[name]
        assert f["fileinfo"]["sha256"] == _sha(data)
        assert (f["src_ip"], f["dest_ip"], f["direction"]) == (SERVER4, CLIENT4, "to_client")
    # The same content was matched and judged inbound (counted, not alerted).
    assert run.stats()["detect"].get("not_outbound", 0) >= 2


def test_inbound_marker_becomes_an_informational_finding_when_configured(replay: Replayer) -> None:
    run = replay("neg-http-inbound-download.pcap", policy__inbound_events=True)
    assert run.alerts() == []
    findings = [r for r in run.of_type("finding") if r["finding"]["signature_id"] == SID_MARKER]
    wheres = {r["leakmon"]["where"] for r in findings}
    assert "http.response.body" in wheres
    assert "http.response.body > zip:word/document.xml" in wheres
    for r in findings:
        assert r["leakmon"]["direction"] == "inbound"
        assert r["src_ip"] == SERVER4 and r["dest_ip"] == CLIENT4
        assert MARKER not in r["leakmon"].get("context", "")


def test_registered_file_with_one_byte_changed_raises_nothing(replay: Replayer) -> None:
    from pcaps.make_leaks import drawing_bytes, one_byte_changed

    run = replay("neg-http-fingerprint-one-byte-changed.pcap")
    assert_healthy(run)
    assert run.alerts() == []
    f = _files(run)["drawing-A1234.dwg"]["fileinfo"]
    assert f["sha256"] == _sha(one_byte_changed(drawing_bytes()))
    assert f["sha256"] != _sha(drawing_bytes())
    assert f["size"] == len(drawing_bytes())


def test_approved_destination_gives_plaintext_violation_not_leak(replay: Replayer) -> None:
    run = replay("http-approved-destination.pcap", "leaks-approved.yaml")
    assert_healthy(run)
    assert not any(s in LEAK_SIDS for s in run.sids()), run.sids()
    assert run.sids() == {SID_PLAINTEXT}
    where = "http.request.body > multipart[name=file,file=memo.txt]"
    (alert,) = [a for a in run.alerts(SID_PLAINTEXT) if a["leakmon"]["where"] == where]
    assert alert["alert"]["category"] == "plaintext-transmission"
    assert alert["alert"]["metadata"]["rule"] == [str(SID_MARKER)]
    lm = alert["leakmon"]
    assert lm["approved_destination"] is True
    assert "partner.example.jp" in lm["destination_names"]  # learned from the HTTP Host header
    assert alert["http"]["hostname"] == "partner.example.jp"
    (conn,) = tcp_connections("http-approved-destination.pcap")
    assert (alert["src_ip"], alert["src_port"], alert["dest_ip"], alert["dest_port"]) == conn.oriented()


def test_same_capture_without_approval_is_a_leak(replay: Replayer) -> None:
    """The control of the test above: only the config differs."""
    run = replay("http-approved-destination.pcap")
    where = "http.request.body > multipart[name=file,file=memo.txt]"
    (alert,) = [a for a in run.alerts(SID_MARKER) if a["leakmon"]["where"] == where]
    assert alert["leakmon"]["approved_destination"] is False
    assert alert["leakmon"]["variant"] == "utf-8"


def test_compliant_tls_raises_nothing(replay: Replayer) -> None:
    run = replay("neg-tls-compliant.pcap")
    assert_healthy(run)
    assert run.alerts() == []
    versions = sorted((t["tls"]["version"], t["tls"].get("cipher_suite")) for t in run.of_type("tls"))
    assert versions == [("TLS 1.2", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
                        ("TLS 1.3", "TLS_AES_256_GCM_SHA384")]
    assert len(tcp_connections("neg-tls-compliant.pcap")) == 2
