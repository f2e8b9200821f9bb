"""Every encoding and variant of a marker: found with the exact sid and variant; near misses are not."""

from __future__ import annotations

import base64
import json
import quopri
import re
import urllib.parse

import pytest

from detectors import matcher as m
from detectors.variants import base64_inner, encode_raw, fullwidth, halfwidth, literal_variants
from tests.factories import tflow

MARKER = "保護すべき情報"
SID = 9100001
ENGINES = [e for e in m.ENGINES if e != "hyperscan" or m.hyperscan_available()]


def only_alert(h, sid):
    alerts = h.alerts(sid)
    assert len(alerts) == 1, [a["leakmon"] for a in h.alerts()]
    return alerts[0]


def test_variant_table_covers_every_family():
    names = {v.name for v in literal_variants(MARKER)}
    for expected in ["utf-8", "cp932", "euc-jp", "iso-2022-jp", "utf-16le", "utf-16be",
                     "percent/utf-8/upper", "percent/utf-8/lower", "percent/cp932/upper", "percent/cp932/lower",
                     "json-u/lower", "json-u/upper", "html-dec", "html-hex/lower", "html-hex/upper",
                     "qp/utf-8", "qp/cp932", "base64/utf-8/0", "base64/utf-8/1", "base64/utf-8/2",
                     "base64/cp932/0", "base64/iso-2022-jp/2", "base64/utf-16le/1"]:
        assert expected in names
    kata = {v.name for v in literal_variants("ヒミツ・テスト")}
    assert {"halfwidth/utf-8", "halfwidth/cp932", "halfwidth/euc-jp"} <= kata
    ascii_nocase = {v.name for v in literal_variants("JDA Confidential", nocase=True)}
    assert {"fullwidth/utf-8", "fullwidth/cp932", "utf-16le"} <= ascii_nocase


@pytest.mark.parametrize("engine", ENGINES)
def test_each_generated_variant_is_reported_as_itself(harness, engine):
    h = harness(engine=engine)
    for variant, data, lead, trail in literal_variants(MARKER):
        if lead is not None or trail is not None:  # base64 with edge checks: a real encoding at that alignment
            _, src, k = variant.split("/")
            raw = b"p" * int(k) + encode_raw(MARKER, src) + b"xy"
            data = base64.b64encode(raw)
            if variant.startswith("base64url"):
                data = base64.urlsafe_b64encode(raw)
        flow = tflow()
        h.events.clear()
        h.det.buffer(flow, 0, b"<p>" + data + b"</p>", where="http.request.body", ts=1.0)
        a = only_alert(h, SID)
        if variant.startswith("base64url/"):  # where no '-'/'_' falls in the run, both alphabets agree
            assert a["leakmon"]["variant"] in (variant, variant.replace("base64url/", "base64/"))
        else:
            assert a["leakmon"]["variant"] == variant
        assert a["flow_id"] == flow.flow_id


def realistic_forms() -> list[tuple[str, bytes]]:
    """The marker as real encoders produce it, inside surrounding text."""
    text = f"この資料は{MARKER}を含みます。"
    u8 = text.encode("utf-8")
    out = [
        ("utf-8", u8),
        ("cp932", text.encode("cp932")),
        ("shift_jis" if text.encode("shift_jis") != text.encode("cp932") else "cp932", text.encode("shift_jis")),
        ("euc-jp", text.encode("euc_jp")),
        ("iso-2022-jp", b"Subject: test\r\n\r\n" + text.encode("iso2022_jp")),
        ("utf-16le", text.encode("utf-16")),  # with BOM, little-endian on this machine
        ("utf-16be", text.encode("utf-16-be")),
        ("percent/utf-8/upper", b"q=" + urllib.parse.quote(text).encode()),
        ("percent/utf-8/lower", b"q=" + urllib.parse.quote(text).lower().encode()),
        ("percent/cp932/upper", b"q=" + urllib.parse.quote(text, encoding="cp932").encode()),
        ("percent/euc-jp/upper", b"q=" + urllib.parse.quote(text, encoding="euc_jp").encode()),
        ("json-u/lower", json.dumps({"comment": text}).encode()),
        ("json-u/upper", re.sub(rb"\\u([0-9a-f]{4})", lambda mm: b"\\u" + mm.group(1).upper(),
                                json.dumps({"comment": text}).encode())),
        ("html-dec", text.encode("ascii", "xmlcharrefreplace")),
        ("html-hex/lower", "".join(f"&#x{ord(c):x};" for c in text).encode()),
        ("qp/utf-8", quopri.encodestring(u8)),
        ("qp/cp932", quopri.encodestring(text.encode("cp932"))),
    ]
    return out


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("variant,data", realistic_forms(), ids=[v for v, _ in realistic_forms()])
def test_realistic_encodings_in_the_raw_stream(harness, engine, variant, data):
    h = harness(engine=engine)
    flow = tflow()
    # Stream mode, cut into 7-byte segments so the marker straddles chunk boundaries.
    for i in range(0, len(data), 7):
        h.det.stream_data(flow, 0, data[i:i + 7], 1.0, i)
    h.det.flow_end(flow)
    a = only_alert(h, SID)
    assert a["leakmon"]["variant"] == variant
    assert a["leakmon"]["where"] == "raw-stream"
    assert a["leakmon"]["direction"] == "outbound"


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("source,codec", [("utf-8", "utf-8"), ("cp932", "cp932"), ("euc-jp", "euc_jp"),
                                          ("utf-16le", "utf-16-le")])
@pytest.mark.parametrize("k", [0, 1, 2])
def test_base64_all_alignments_with_mime_line_breaks(harness, engine, source, codec, k):
    h = harness(engine=engine)
    payload = b"P" * k + (MARKER * 3).encode(codec) + b"tail"
    mime = base64.encodebytes(b"Q" * (40 + k) + payload)  # 76-character lines, \n breaks
    mime = mime.replace(b"\n", b"\r\n")
    body = b"Content-Transfer-Encoding: base64\r\n\r\n" + mime
    flow = tflow()
    for i in range(0, len(body), 50):
        h.det.stream_data(flow, 0, body[i:i + 50], 1.0, i)
    h.det.flow_end(flow)
    a = only_alert(h, SID)
    assert a["leakmon"]["variant"].startswith(f"base64/{source}/")
    assert a["leakmon"]["where"] == "raw-stream"


def test_base64_inner_is_alignment_stable():
    data = MARKER.encode("utf-8")
    for k in range(3):
        inner = base64_inner(data, k)
        for prefix in (b"", b"a", b"ab", b"abc", b"\xff\xfe"):
            if len(prefix) % 3 == k:
                assert inner in base64.b64encode(prefix + data + b"xy")


def test_iso_2022_jp_found_wherever_the_escape_sits(harness):
    h = harness()
    for text in (f"【{MARKER}】", f"abc {MARKER}", f"{MARKER}です", f"前文の後に{MARKER}"):
        flow = tflow()
        h.events.clear()
        h.det.buffer(flow, 0, text.encode("iso2022_jp"), where="smtp.body", ts=1.0)
        assert only_alert(h, SID)["leakmon"]["variant"] == "iso-2022-jp"


def test_width_variants_of_katakana_and_ascii(harness):
    h = harness()
    cases = [("ﾋﾐﾂ･ﾃｽﾄ".encode("cp932"), 9100007, "halfwidth/cp932"),
             (halfwidth("ヒミツ・テスト").encode("utf-8"), 9100007, "halfwidth/utf-8"),
             (fullwidth("JDA Confidential").encode("utf-8"), 9100006, "fullwidth/utf-8"),
             (fullwidth("jda confidential").encode("cp932"), 9100006, "fullwidth/cp932"),
             (b"jda CONFIDENTIAL", 9100006, "utf-8"),
             ("jda confidential".encode("utf-16-le"), 9100006, "utf-16le")]
    for data, sid, variant in cases:
        flow = tflow()
        h.events.clear()
        h.det.buffer(flow, 0, b"x " + data + b" y", where="http.request.body", ts=1.0)
        assert only_alert(h, sid)["leakmon"]["variant"] == variant, variant


def test_regex_marker_in_stream_and_buffer(harness):
    h = harness()
    flow = tflow()
    data = b"ref: JDA-2031-00417 end"
    h.det.stream_data(flow, 0, data[:10], 1.0, 1)
    h.det.stream_data(flow, 0, data[10:], 1.0, 2)
    h.det.flow_end(flow)
    a = only_alert(h, 9100004)
    assert a["leakmon"]["variant"] == "regex"
    assert a["pcap_cnt"] == 2
    assert a["leakmon"]["context"] == "○○○: " + "■" * 14 + " ○○○"


@pytest.mark.parametrize("engine", ENGINES)
def test_near_misses_raise_nothing(harness, engine):
    h = harness(engine=engine)
    near = ["保護すべき情熱", "保護すべき状報", "JDA-2031-0041", "JDA-203X-00417", "JDA Confidentia1", "ヒミツ・テヌト"]
    for text in near:
        for v in literal_variants(text):
            data = v.data
            flow = tflow()
            h.det.buffer(flow, 0, data, where="http.request.body", ts=1.0)
            h.det.stream_data(flow, 0, data, 1.0, 1)
            h.det.flow_end(flow)
    assert h.alerts() == []


def test_base64_near_miss_in_the_last_bits_is_not_a_match(harness):
    # ト (E3 83 88) and ド (E3 83 89) differ only in the low bits of the last byte.
    h = harness()
    for k in range(3):
        for codec in ("utf-8", "cp932", "utf-16-le"):
            raw = b"x" * k + "ヒミツ・テスド".encode(codec) + b"zz"
            h.det.buffer(tflow(), 0, base64.b64encode(raw), where="b", ts=1.0)
            flow = tflow()
            h.det.stream_data(flow, 0, base64.encodebytes(b"q" * 50 + raw), 1.0, 1)
            h.det.flow_end(flow)
    assert h.alerts() == []


def test_base64_run_ending_at_a_chunk_boundary_waits_for_the_next_byte(harness):
    raw = b"ab" + MARKER.encode("utf-8") + b"tail-bytes"
    body = base64.b64encode(raw)
    for cut in range(1, len(body)):
        h = harness()
        flow = tflow()
        h.det.stream_data(flow, 0, body[:cut], 1.0, 1)
        h.det.stream_data(flow, 0, body[cut:], 1.0, 2)
        h.det.flow_end(flow)
        assert [a["leakmon"]["variant"] for a in h.alerts(SID)] == ["base64/utf-8/2"], cut
