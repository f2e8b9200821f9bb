"""Real curl uploads recorded by pcaps/make_http.py: exact names, sizes, hashes and decoded text.

The upload server replied with the SHA-256 of each body it received, so the capture carries
an independent oracle for the decoded request bodies.
"""

from __future__ import annotations

import hashlib
import json

from alerts.schema import validate_lines
from pcaps.make_http import FORM_FIELDS, JSON_TEXT, payloads
from tests.conftest import PCAPS
from tests.monitor.applayer.replay import eve_lines, replay

CAPTURE = PCAPS / "http-uploads.pcap"


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def by_source(r, source: str) -> dict[str, object]:  # type: ignore[no-untyped-def]
    return {f.name: f for f in r.files if f.source == source}


def test_uploads_decode_to_the_sent_bytes() -> None:
    r = replay(CAPTURE)
    p = payloads()
    files = {(f.source, f.name): f for f in r.files}
    docx = files[("http.request.body > multipart[name=file,file=見積書.docx]", "見積書.docx")]
    assert (docx.size, docx.sha256, docx.state, docx.detected_type) == (
        len(p["docx"]), sha(p["docx"]), "CLOSED", "application/zip")
    jp = files[("http.request.body > multipart[name=doc,file=設計図.txt]", "設計図.txt")]
    assert jp.content() == p["rfc5987"]
    assert files[("http.request.body", "/chunked")].sha256 == sha(p["chunked"])
    gz = files[("http.request.body", "/gzip")]
    assert (gz.size, gz.sha256) == (len(p["plain_gz_source"]), sha(p["plain_gz_source"]))
    assert files[("http.request.body", "/continue")].sha256 == sha(p["continue"])
    assert r.anomalies == []
    validate_lines(eve_lines(r.contexts))


def test_server_reported_hashes_match_decoded_request_bodies() -> None:
    r = replay(CAPTURE)
    requests = by_source(r, "http.request.body")
    checked = 0
    for f in r.files:
        if f.source != "http.response.body" or f.declared_type != "application/json":
            continue
        reply = json.loads(f.content() or b"{}")
        if reply.get("path") in ("/gzip",):
            continue  # the server hashed the still-compressed body
        req = requests[reply["path"]]
        assert (req.size, req.sha256) == (reply["size"], reply["sha256"]), reply["path"]
        checked += 1
    assert checked == 6


def test_decoded_text_buffers() -> None:
    r = replay(CAPTURE)
    where = {}
    for i in r.inspected:
        where.setdefault(i.where, []).append(i.data)
    form = "&".join(f"{k}={v}" for k, v in FORM_FIELDS).encode()
    assert form in where["http.request.body > form"]
    assert f"title\n{JSON_TEXT}\nn".encode() in where["http.request.body > json"]


def test_keepalive_and_continue_transactions() -> None:
    r = replay(CAPTURE)
    https = [b["http"] for b in r.events("http")]
    assert [h["url"] for h in https] == ["/form", "/upload", "/upload5987", "/chunked", "/gzip", "/api",
                                         "/continue", "/ka/1", "/ka/2", "/ka/3"]
    assert all(h["status"] == 200 and h["hostname"] == "10.77.0.2" for h in https)
    ka = [c for c in r.contexts if any(b["http"]["url"] == "/ka/1" for b in c.event_bodies("http"))][0]
    assert [b["http"]["url"] for b in ka.event_bodies("http")] == ["/ka/1", "/ka/2", "/ka/3"]
    assert [f.content() for f in ka.closed_files] == [b"page /ka/1\n", b"page /ka/2\n", b"page /ka/3\n"]
