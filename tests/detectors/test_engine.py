"""Detection end to end over its API: policy, de-duplication, files, TLS, reload, EVE alerts."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Any

from detectors.engine import RAW_HOLD_BYTES, RAW_HOLD_SECONDS
from monitor.applayer.smtp import SmtpParser
from monitor.config import Suppression, Threshold
from monitor.files import FileObject
from monitor.model import TO_CLIENT, TO_SERVER
from monitor.names import HostNames
from tests.factories import RecordingContext, tflow

MARKER = "保護すべき情報".encode()


def test_outbound_leak_raises_leak_and_plaintext_alerts_with_redacted_context(harness):
    h = harness()
    flow = tflow(client="10.1.2.3", server="198.51.100.9")
    flow.metadata["tx"] = {0: {"http": {"hostname": "upload.example.net", "url": "/form", "http_method": "POST"}}}
    h.det.buffer(flow, TO_SERVER, "件名: ".encode() + MARKER + "の資料を送ります".encode(),
                 where="http.request.body > form[comment]", ts=10.0, tx_id=0)
    leak, plain = h.alerts(9100001), h.alerts(9000001)
    assert len(leak) == 1 and len(plain) == 1
    a = leak[0]
    assert a["alert"] == {"action": "allowed", "gid": 1, "signature_id": 9100001, "rev": 1,
                          "signature": "保護すべき情報 label", "category": "protected-data-leak", "severity": 1,
                          "metadata": {}}
    assert a["src_ip"] == "10.1.2.3" and a["dest_ip"] == "198.51.100.9" and a["direction"] == "to_server"
    assert a["http"]["hostname"] == "upload.example.net" and a["tx_id"] == 0
    lm = a["leakmon"]
    assert lm["variant"] == "utf-8" and lm["where"] == "http.request.body > form[comment]"
    assert lm["direction"] == "outbound" and lm["protected_host"] == "10.1.2.3"
    assert lm["destination"] == "198.51.100.9" and lm["approved_destination"] is False
    assert lm["context"] == "○○: ■■■■■■■○○○○○○○○"
    assert "保護" not in str(a) .replace("保護すべき情報 label", "")  # only the rule's own msg names it
    assert plain[0]["alert"]["category"] == "plaintext-transmission"
    assert plain[0]["leakmon"]["rule_sid"] == 9100001


def test_inbound_marker_raises_no_alert_but_optional_finding(harness):
    h = harness()
    flow = tflow(client="10.1.2.3", server="198.51.100.9")
    h.det.buffer(flow, TO_CLIENT, MARKER, where="http.response.body", ts=1.0)
    h.det.stream_data(flow, TO_CLIENT, MARKER, 1.0, 5)
    h.det.flow_end(flow)
    assert h.eve() == []
    assert h.stats.total("detect.not_outbound") == 1

    h2 = harness(inbound_events=True)
    flow = tflow(client="10.1.2.3", server="198.51.100.9")
    h2.det.buffer(flow, TO_CLIENT, MARKER, where="http.response.body", ts=1.0)
    (rec,) = h2.eve()
    assert rec["event_type"] == "finding" and rec["finding"]["signature_id"] == 9100001
    assert rec["leakmon"]["direction"] == "inbound"


def test_server_side_protected_host_leaks_in_responses(harness):
    h = harness()
    flow = tflow(client="198.51.100.9", server="10.9.9.9", protected_side="server")
    h.det.buffer(flow, TO_CLIENT, MARKER, where="http.response.body", ts=1.0)
    (a,) = h.alerts(9100001)
    assert a["src_ip"] == "10.9.9.9" and a["leakmon"]["protected_host"] == "10.9.9.9"


def test_internal_and_external_flows_raise_nothing(harness):
    h = harness()
    for side in ("both", None):
        flow = tflow(protected_side=side)
        h.det.buffer(flow, TO_SERVER, MARKER, where="b", ts=1.0)
    assert h.alerts() == []


def test_approved_destination_by_cidr_and_by_learned_name(harness):
    names = HostNames()
    names.learn(bytes([203, 0, 113, 50]), "files.partner.co.jp", "tls.sni")
    h = harness(approved=["192.0.2.0/24", "*.partner.co.jp"], names=names)
    for server in ("192.0.2.10", "203.0.113.50"):
        flow = tflow(client="10.0.0.1", server=server)
        h.det.buffer(flow, TO_SERVER, MARKER, where="http.request.body", ts=1.0)
    assert h.alerts(9100001) == []
    plain = h.alerts(9000001)
    assert [p["dest_ip"] for p in plain] == ["192.0.2.10", "203.0.113.50"]
    assert plain[1]["leakmon"]["destination_names"] == ["files.partner.co.jp"]
    assert all(p["leakmon"]["approved_destination"] for p in plain)


def test_one_alert_per_flow_sid_file_with_counts_in_flow_end(harness):
    h = harness(plaintext_violation=False)
    flow = tflow()
    for i in range(3):
        h.det.buffer(flow, TO_SERVER, MARKER + b" " + MARKER, where="form", ts=float(i))
    f1 = FileObject(flow, TO_SERVER, name="見積.txt", source="http.request.body > multipart[file=見積.txt]")
    f1.write(b"x" * 10 + MARKER)
    h.det.file_data(f1, b"x" * 10 + MARKER, 5.0)
    h.det.file_data(f1, MARKER, 5.0)
    (a_buf, a_file) = h.alerts(9100001)
    assert a_buf["leakmon"]["match_count"] == 2 and "fileinfo" not in a_buf
    assert a_file["fileinfo"]["filename"] == "見積.txt"
    assert a_file["leakmon"]["where"] == "http.request.body > multipart[file=見積.txt]"
    assert h.events[-1].extra["file"] is f1
    summary = h.det.flow_end(flow)
    assert summary["alerts"] == 2 and summary["matches"] == {"9100001": 8}
    assert flow.metadata["detect"] == summary


def test_raw_stream_hit_is_superseded_by_the_decoded_view(harness):
    h = harness(plaintext_violation=False)
    flow = tflow()
    # Parser before raw scan (pipeline order): decoded hit first, raw hit later -> one alert.
    h.det.buffer(flow, TO_SERVER, MARKER, where="http.request.body", ts=1.0)
    h.det.stream_data(flow, TO_SERVER, b"POST / " + MARKER, 1.0, 4)
    # Raw first, decoded on the next chunk (a parser that waited for more bytes) -> still one alert.
    flow2 = tflow()
    h.det.stream_data(flow2, TO_SERVER, b"junk " + MARKER, 1.0, 7)
    h.det.buffer(flow2, TO_SERVER, MARKER, where="smtp.body", ts=1.1)
    h.det.stream_data(flow2, TO_SERVER, b"more", 1.2, 8)
    # Raw only (unknown protocol): reported on the next chunk.
    flow3 = tflow()
    h.det.stream_data(flow3, TO_SERVER, b"custom" + MARKER, 2.0, 9)
    assert [a["leakmon"]["where"] for a in h.alerts()] == ["http.request.body", "smtp.body"]
    h.det.stream_data(flow3, TO_SERVER, b"next", 2.1, 10)
    alerts = h.alerts()
    assert [a["leakmon"]["where"] for a in alerts] == ["http.request.body", "smtp.body", "raw-stream"]
    assert alerts[2]["pcap_cnt"] == 9 and alerts[2]["flow_id"] == flow3.flow_id


def test_gap_restarts_the_stream_and_overlap_alternative_is_scanned(harness):
    h = harness(plaintext_violation=False)
    flow = tflow()
    h.det.stream_data(flow, TO_SERVER, MARKER[:9], 1.0, 1)
    h.det.stream_gap(flow, TO_SERVER, 100)
    h.det.stream_data(flow, TO_SERVER, MARKER[9:], 1.0, 2)
    h.det.flow_end(flow)
    assert h.alerts() == []
    flow = tflow()
    h.det.stream_alt(flow, TO_SERVER, MARKER, 1.0)
    h.det.flow_end(flow)
    (a,) = h.alerts(9100001)
    assert a["leakmon"]["where"] == "raw-stream (overlap alternative)"


def test_exact_fingerprint_and_one_byte_changed_file(harness, tmp_path):
    doc = b"%PDF-1.7 registered drawing " + bytes(range(256)) * 40
    sigs = f"""
fingerprints:
  - sid: 9200001
    msg: "registered drawing"
    path: drawing.pdf
  - sid: 9200002
    msg: "registered spec"
    sha256: "{hashlib.sha256(b'spec').hexdigest()}"
"""
    h = harness(sigs, extra_files={"drawing.pdf": doc}, plaintext_violation=False)
    flow = tflow()
    for data, name in ((doc, "renamed.bin"), (doc[:-1] + b"\x00", "changed.pdf"), (b"spec", "s.txt")):
        f = FileObject(flow, TO_SERVER, name=name, source=f"ftp-data > {name}")
        f.write(data)
        f.close()
        h.det.file_closed(f, 3.0)
    a1, a2 = h.alerts()
    assert a1["alert"]["signature_id"] == 9200001 and a1["alert"]["category"] == "fingerprint-match"
    assert a1["fileinfo"]["filename"] == "renamed.bin"
    assert a1["leakmon"]["sha256"] == hashlib.sha256(doc).hexdigest() == a1["fileinfo"]["sha256"]
    assert a1["leakmon"]["fingerprint_name"] == "drawing.pdf"
    assert a2["alert"]["signature_id"] == 9200002


def test_hash_list_of_100k_loads_fast(harness, tmp_path):
    import time

    lines = "".join(f"{hashlib.sha256(str(i).encode()).hexdigest()} doc{i}.pdf\n" for i in range(100_000))
    t0 = time.monotonic()
    h = harness("fingerprint_lists:\n  - sid: 9200100\n    msg: registered set\n    file: hashes.txt\n",
                extra_files={"hashes.txt": lines.encode()}, plaintext_violation=False)
    assert time.monotonic() - t0 < 3.0
    assert len(h.det.rules.sigs.hashes) == 100_000
    f = FileObject(tflow(), TO_SERVER, name="x")
    f.write(b"77777")
    f.close()
    h.det.file_closed(f, 1.0)
    (a,) = h.alerts(9200100)
    assert a["leakmon"]["fingerprint_name"] == "doc77777.pdf"


def test_weak_crypto(harness):
    h = harness()
    ok = tflow(sport=443)
    h.det.tls(ok, {"version": "TLSv1.3", "cipher_suite": 0x1301, "cipher_name": "TLS_AES_128_GCM_SHA256",
                   "sni": "ok.example"}, 1.0)
    old = tflow(sport=443)
    h.det.tls(old, {"version": "TLSv1", "cipher_suite": 0x0035, "cipher_name": "TLS_RSA_WITH_AES_256_CBC_SHA",
                    "sni": "legacy.example"}, 2.0)
    h.det.tls(old, {"version": "TLSv1", "cipher_suite": 0x0035}, 2.1)  # repeated facts: no new alert
    inbound_only = tflow(client="198.51.100.1", server="198.51.100.2", protected_side=None)
    h.det.tls(inbound_only, {"version": "SSLv3", "cipher_suite": 0x0005}, 3.0)
    alerts = h.alerts()
    assert [a["alert"]["signature_id"] for a in alerts] == [9000002, 9000003]
    assert all(a["alert"]["category"] == "weak-crypto" and a["flow_id"] == old.flow_id for a in alerts)
    assert alerts[1]["leakmon"]["tls"] == {"version": "TLSv1", "cipher_suite": "0x0035",
                                           "cipher_name": "TLS_RSA_WITH_AES_256_CBC_SHA", "sni": "legacy.example"}


def test_suppression_and_threshold(harness):
    h = harness(suppress=[Suppression(sid=9100001, host="10.5.0.0/16")],
                thresholds=[Threshold(sid=9000001, count=2, seconds=60.0)])
    for i in range(4):
        flow = tflow(client="10.5.1.1" if i == 0 else "10.6.1.1")
        h.det.buffer(flow, TO_SERVER, MARKER, where="b", ts=100.0 + i)
    assert [a["src_ip"] for a in h.alerts(9100001)] == ["10.6.1.1"] * 3
    # plaintext alerts: host 10.5.1.1 once, host 10.6.1.1 twice within the window
    assert [a["src_ip"] for a in h.alerts(9000001)] == ["10.5.1.1", "10.6.1.1", "10.6.1.1"]
    assert h.stats.total("detect.suppressed") == 1 and h.stats.total("detect.thresholded") == 1


def test_canary_is_informational_in_any_direction(harness):
    h = harness()
    flow = tflow(client="198.51.100.1", server="198.51.100.2", protected_side=None)
    h.det.stream_data(flow, TO_CLIENT, b"hello LEAKMON-CANARY-7f3a9c", 1.0, 3)
    h.det.flow_end(flow)
    (a,) = h.alerts()
    assert a["alert"]["signature_id"] == 9999901 and a["alert"]["category"] == "canary"
    assert a["alert"]["severity"] == 4 and a["leakmon"]["direction"] == "external"


def test_hot_reload_swaps_atomically_and_keeps_old_set_on_error(harness):
    h = harness(plaintext_violation=False)
    v1 = h.det.version
    assert h.stats.get("signatures.version_info", version=v1) == 1
    flow = tflow()
    h.det.stream_data(flow, TO_SERVER, b"prefix " + MARKER[:6], 1.0, 1)  # stream opened with v1
    h.sig_file.write_text('markers:\n  - sid: 9300001\n    msg: new\n    literal: "新しい標識"\n', encoding="utf-8")
    ok, msg = h.det.reload()
    assert ok, msg
    v2 = h.det.version
    assert v2 != v1 and h.stats.get("signatures.version_info", version=v2) == 1
    assert ("signatures.version_info", (("version", v1),)) not in h.stats.gauges
    # The existing flow's stream keeps v1 and still completes the straddling marker.
    h.det.stream_data(flow, TO_SERVER, MARKER[6:] + b" end", 1.0, 2)
    h.det.flow_end(flow)
    assert [a["alert"]["signature_id"] for a in h.alerts()] == [9100001]
    assert h.alerts()[0]["leakmon"]["signatures_version"] == v1
    new_flow = tflow()
    h.det.buffer(new_flow, TO_SERVER, "新しい標識".encode() + MARKER, where="b", ts=2.0)
    assert [a["alert"]["signature_id"] for a in h.alerts()] == [9100001, 9300001]
    # A broken file: the running set stays, the counter says so, the message says where.
    h.sig_file.write_text("markers:\n  - sid: 9300001\n    msg: new\n    regex: 'ab+'\n", encoding="utf-8")
    ok, msg = h.det.reload()
    assert not ok and "rules.yaml:4" in msg and "unbounded" in msg
    assert h.det.version == v2 and h.stats.total("signatures.reload_failed") == 1


def test_no_internal_errors_counted(harness):
    h = harness()
    flow = tflow()
    h.det.stream_data(flow, TO_SERVER, b"", 1.0, 1)
    h.det.buffer(flow, TO_SERVER, b"\xff" * 100, where="b", ts=1.0, charset="no-such-charset")
    h.det.tls(flow, {"version": 12, "cipher_suite": "x"}, 1.0)
    h.det.flow_end(flow)
    h.det.flow_end(flow)
    assert h.stats.total("detect.internal_error") == 0


def test_multipart_container_body_defers_to_its_part(harness):
    h = harness(plaintext_violation=False)
    flow = tflow()
    body = FileObject(flow, TO_SERVER, name="", source="http.request.body",
                      declared_type="multipart/form-data; boundary=x")
    part = FileObject(flow, TO_SERVER, name="図面一覧.txt", parent=body,
                      source="http.request.body > multipart[name=file,file=図面一覧.txt]")
    h.det.file_data(body, b"--x\r\n\r\n" + MARKER + b"\r\n--x--", 1.0)
    h.det.file_data(part, MARKER, 1.0)
    h.det.stream_data(flow, TO_SERVER, b"next", 1.1, 2)
    h.det.flow_end(flow)
    (a,) = h.alerts()
    assert a["fileinfo"]["filename"] == "図面一覧.txt"
    # A container whose parts are not files (or not decoded) still reports, on the next chunk.
    flow2 = tflow()
    body2 = FileObject(flow2, TO_SERVER, source="smtp.mail", declared_type="message/rfc822")
    h.det.file_data(body2, b"Subject: x\r\n\r\n" + MARKER, 2.0)
    h.det.stream_data(flow2, TO_SERVER, b"QUIT\r\n", 2.1, 3)
    assert h.alerts()[1]["leakmon"]["where"] == "smtp.mail"


# ------------------------------------------------------------------ raw hits wait for decoded views


@dataclass
class _DetectContext(RecordingContext):
    """A RecordingContext that hands what the parser reports to Detection, as the pipeline does."""

    det: Any = None
    step: int = 0
    body_steps: list[int] = field(default_factory=list)

    def inspect(self, data: bytes, *, where: str, direction: int, tx_id: int | None = None,
                file: FileObject | None = None, charset: str | None = None) -> None:
        super().inspect(data, where=where, direction=direction, tx_id=tx_id, file=file, charset=charset)
        if where.endswith("body[text/plain]"):
            self.body_steps.append(self.step)
        self.det.buffer(self.flow, direction, data, where=where, ts=1.0, tx_id=tx_id, file=file, charset=charset)


def _smtp_session_with_base64_jis_leak() -> list[tuple[int, bytes]]:
    text = ("お世話になっております。" * 40 + MARKER.decode() + "の資料です。" + "以上、よろしくお願いします。" * 900)
    body = base64.encodebytes(text.encode("iso2022_jp"))
    assert MARKER not in body and len(body) > 30_000
    msg = (b"From: a@example.jp\r\nTo: b@example.net\r\nSubject: test\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=BB\r\n\r\n--BB\r\n"
           b"Content-Type: text/plain; charset=iso-2022-jp\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           + body.replace(b"\n", b"\r\n") + b"--BB--\r\n.\r\n")
    steps = [(TO_CLIENT, b"220 mx ESMTP\r\n"), (TO_SERVER, b"EHLO pc\r\n"), (TO_CLIENT, b"250 mx\r\n"),
             (TO_SERVER, b"MAIL FROM:<a@example.jp>\r\n"), (TO_CLIENT, b"250 ok\r\n"),
             (TO_SERVER, b"RCPT TO:<b@example.net>\r\n"), (TO_CLIENT, b"250 ok\r\n"),
             (TO_SERVER, b"DATA\r\n"), (TO_CLIENT, b"354 go\r\n")]
    steps += [(TO_SERVER, msg[i:i + 1448]) for i in range(0, len(msg), 1448)]
    steps += [(TO_CLIENT, b"250 queued\r\n"), (TO_SERVER, b"QUIT\r\n"), (TO_CLIENT, b"221 bye\r\n")]
    return steps


def test_smtp_raw_hit_waits_for_the_batched_mime_body(harness):
    # The SMTP parser batches message bytes (64 KiB or end of message) before MIME decoding,
    # so the decoded body reports many chunks after the raw base64 hit: still one alert per sid.
    h = harness()
    ctx = _DetectContext(flow=tflow(sport=25))
    ctx.det = h.det
    parser = SmtpParser(ctx)
    for i, (direction, data) in enumerate(_smtp_session_with_base64_jis_leak()):
        ts = 1.0 + i * 0.001
        ctx.step = i
        parser.feed(direction, data, ts)  # parser first, raw scan second (pipeline order)
        h.det.stream_data(ctx.flow, direction, data, ts, i + 1)
    parser.close(2.0)
    summary = h.det.flow_end(ctx.flow)
    alerts = h.alerts()
    assert sorted(a["alert"]["signature_id"] for a in alerts) == [9000001, 9100001]
    assert {a["leakmon"]["where"] for a in alerts} == {"smtp.mail > mime[1] > body[text/plain]"}
    assert {a["leakmon"]["variant"] for a in alerts} == {"iso-2022-jp"}
    # The raw match (in the message's first segments) was seen and counted; the decoded body
    # came only at the end of the message, many segments later.
    assert summary["matches"]["9100001"] >= 2
    assert ctx.body_steps and min(ctx.body_steps) >= 20


def test_raw_hit_on_a_decoding_flow_is_released_by_byte_or_time_budget(harness):
    h = harness(plaintext_violation=False)
    by_bytes = tflow()
    by_bytes.app_proto = "smtp"
    h.det.stream_data(by_bytes, TO_SERVER, b"x" + MARKER, 1.0, 1)
    h.det.stream_data(by_bytes, TO_CLIENT, b"y" * 300_000, 1.1, 2)  # the other direction does not count
    h.det.stream_data(by_bytes, TO_SERVER, b"z" * (RAW_HOLD_BYTES - 1), 1.2, 3)
    assert h.alerts() == []
    h.det.stream_data(by_bytes, TO_SERVER, b"z", 1.3, 4)
    (a,) = h.alerts()
    assert a["leakmon"]["where"] == "raw-stream" and a["pcap_cnt"] == 1 and a["flow_id"] == by_bytes.flow_id

    by_time = tflow()
    by_time.app_proto = "http"
    h.det.stream_data(by_time, TO_SERVER, b"POST /" + MARKER, 5.0, 10)
    h.det.stream_data(by_time, TO_SERVER, b"more", 5.5, 11)
    other = tflow()
    h.det.stream_data(other, TO_SERVER, b"GET /", 5.0 + RAW_HOLD_SECONDS - 0.01, 12)
    assert len(h.alerts()) == 1
    h.det.stream_data(other, TO_SERVER, b"later", 5.0 + RAW_HOLD_SECONDS, 13)  # packet time of any flow
    assert [a["flow_id"] for a in h.alerts()] == [by_bytes.flow_id, by_time.flow_id]
    # Ended flows leave nothing held; a decoded view after a release adds no second alert per sid.
    h.det.buffer(by_time, TO_SERVER, MARKER, where="http.request.body", ts=6.0)
    h.det.flow_end(by_time)
    h.det.flow_end(by_bytes)
    assert len(h.alerts(9100001)) == 2 and not h.det._held
