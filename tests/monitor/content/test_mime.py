"""MIME streaming parser, transfer decoders, header decoding and Japanese charsets."""

from __future__ import annotations

import base64
import email
import email.policy
import hashlib
import quopri
import random
from email.message import EmailMessage

import pytest

from monitor.content import charsets
from monitor.content.mime import MimeLimits, MimeParser, MimePart
from monitor.content.mimecodec import Base64Decoder, QuotedPrintableDecoder, b64decode_tolerant
from monitor.content.mimeheaders import decode_header, decode_words, parse_params, split_addresses
from monitor.stats import Stats


class Sink:
    def __init__(self) -> None:
        self.leaves: list[MimePart] = []
        self.data: dict[int, bytearray] = {}
        self.gaps: dict[int, int] = {}
        self.ended: list[MimePart] = []
        self.headers: list[MimePart] = []
        self.anomalies: list[str] = []

    def on_headers(self, part: MimePart) -> None:
        self.headers.append(part)

    def on_leaf_begin(self, part: MimePart) -> None:
        self.leaves.append(part)
        self.data[id(part)] = bytearray()

    def on_leaf_data(self, part: MimePart, data: bytes) -> None:
        self.data[id(part)] += data

    def on_leaf_gap(self, part: MimePart, length: int) -> None:
        self.gaps[id(part)] = self.gaps.get(id(part), 0) + length

    def on_leaf_end(self, part: MimePart) -> None:
        self.ended.append(part)

    def on_anomaly(self, kind: str, detail: str = "") -> None:
        self.anomalies.append(kind)

    def leaf(self, i: int) -> bytes:
        return bytes(self.data[id(self.leaves[i])])

    def summary(self) -> list[tuple[str, str, str, int, str]]:
        return [(p.label, p.content_type, p.filename, len(self.data[id(p)]),
                 hashlib.sha256(self.data[id(p)]).hexdigest()) for p in self.leaves]


def parse(msg: bytes, chunk: int | None = None, limits: MimeLimits | None = None, seed: int = 0,
          stats: Stats | None = None) -> Sink:
    sink = Sink()
    p = MimeParser(sink, limits, stats)
    if chunk is None:
        p.feed(msg)
    else:
        rnd = random.Random(seed)
        i = 0
        while i < len(msg):
            n = rnd.randint(1, chunk)
            p.feed(msg[i : i + n])
            i += n
    p.finish()
    return sink


def sample_message() -> bytes:
    m = EmailMessage()
    m["Subject"] = "設計図面"
    m["From"] = "山田 <yamada@example.jp>"
    m["To"] = "a@example.jp"
    m.set_content("本文です。\n機密\n" * 3, charset="iso-2022-jp")
    m.add_attachment(bytes(range(256)) * 20, maintype="application", subtype="octet-stream",
                     filename="図面.bin")
    inner = EmailMessage()
    inner["Subject"] = "転送"
    inner.set_content("inner body\n")
    inner.add_attachment(b"ZIPDATA" * 50, maintype="application", subtype="zip", filename="x.zip")
    m.add_attachment(inner, filename="fwd.eml")
    m.add_attachment("quoted ü text =\n" * 30, subtype="plain", cte="quoted-printable", filename="qp.txt")
    return m.as_bytes(policy=email.policy.SMTP)


def reference(msg: bytes) -> list[tuple[str, str, int, str]]:
    """What Python's (whole-message) email package decodes, as the oracle."""
    out = []
    for part in email.message_from_bytes(msg, policy=email.policy.default).walk():
        if part.is_multipart() or part.get_content_type() == "message/rfc822":
            continue
        data = part.get_payload(decode=True)
        assert isinstance(data, bytes)
        out.append((part.get_content_type(), part.get_filename() or "", len(data), hashlib.sha256(data).hexdigest()))
    return out


def test_tree_matches_stdlib_oracle_and_paths() -> None:
    msg = sample_message()
    sink = parse(msg)
    got = [(ct, fn, n, h) for _label, ct, fn, n, h in sink.summary()]
    assert got == reference(msg)
    assert [p.label for p in sink.leaves] == ["1", "2", "3.1", "3.2", "4"]
    assert sink.leaves[1].filename == "図面.bin"
    assert sink.leaf(1) == bytes(range(256)) * 20
    assert sink.anomalies == []
    root = sink.headers[0]
    assert root.is_message and root.decoded("subject") == "設計図面"
    inner_root = [p for p in sink.headers if p.is_message and p.depth > 0]
    assert inner_root and inner_root[0].parent is not None and inner_root[0].parent.filename == "fwd.eml"


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1000])
def test_any_split_gives_the_same_parts(chunk: int) -> None:
    msg = sample_message()
    whole = parse(msg).summary()
    for seed in range(5):
        assert parse(msg, chunk=chunk, seed=seed).summary() == whole


def test_bare_lf_line_ends() -> None:
    msg = sample_message().replace(b"\r\n", b"\n")
    got = [(ct, fn, n, h) for _l, ct, fn, n, h in parse(msg, chunk=50).summary()]
    assert got == reference(msg)


def test_base64_policy_padding_split_across_lines() -> None:
    # Suricata's bug-6207-2: "NA=" then "=Mg" decodes to "42" (a strict decoder stops at "4").
    d = Base64Decoder()
    assert d.feed(b"NA=\r\n") + d.feed(b"=Mg\r\n") + d.flush() == b"42"
    assert b64decode_tolerant(b"SGVs bG8\r\n=") == b"Hello"
    d = Base64Decoder()
    assert d.feed(b"SGV*sbG8h!") + d.flush() == b"Hello!"
    assert d.invalid == 2
    d = Base64Decoder()
    assert d.feed(b"QUJD") + d.feed(b"R") + d.flush() == b"ABC"  # a single dangling char is dropped
    assert d.dangling == 1


def test_base64_odd_line_lengths_streaming() -> None:
    data = bytes(random.Random(1).randrange(256) for _ in range(4000))
    enc = base64.b64encode(data)
    lines = b"\r\n".join(enc[i : i + n] for i, n in zip(range(0, len(enc), 37), [37] * 1000, strict=False))
    d = Base64Decoder()
    out = b"".join(d.feed(lines[i : i + 13]) for i in range(0, len(lines), 13)) + d.flush()
    assert out == data


def test_quoted_printable_soft_breaks_split_anywhere() -> None:
    text = ("見積 = 100円\t\n" * 40).encode("cp932")
    enc = quopri.encodestring(text)
    for step in (1, 2, 3, 5):
        d = QuotedPrintableDecoder()
        out = b"".join(d.feed(enc[i : i + step]) for i in range(0, len(enc), step)) + d.flush()
        assert out == text
    d = QuotedPrintableDecoder()
    assert d.feed(b"a=  \r\nb =ZZ c=4") + d.flush() == b"ab =ZZ c=4"
    assert d.invalid >= 1  # counted until the first one is found


def test_rfc2047_words() -> None:
    jis = "=?ISO-2022-JP?B?GyRCJEgkRiRiGyhC?=  =?ISO-2022-JP?B?GyRCQmdAWiRKGyhC?="
    assert decode_words(jis) == "とても大切な"
    # a UTF-8 character split over two adjacent words
    word = "設".encode()
    split = f"=?utf-8?b?{base64.b64encode(word[:2]).decode()}?= =?utf-8?b?{base64.b64encode(word[2:]).decode()}?="
    assert decode_words(split) == "設"
    assert decode_words("=?utf-8?q?a_b=E3=81=82?= tail") == "a bあ tail"
    assert decode_words("=?x-bogus?B?5pel5pys?=") == "日本"  # unknown charset: sniffed as UTF-8
    assert decode_words("=?utf-8?B??= x") == " x"
    assert decode_words("=?iso-8859-1?B?dGVzdCDlIOkg7iD4IPw=?=") == "test å é î ø ü"
    sjis = base64.b64encode("見積書".encode("cp932"))
    euc = base64.b64encode("議事録".encode("euc_jp"))
    assert decode_header(b"=?Shift_JIS?B?" + sjis + b"?=\r\n =?EUC-JP?B?" + euc + b"?=") == "見積書議事録"


def test_rfc2231_parameters() -> None:
    main, params = parse_params("attachment; filename*0*=UTF-8''%E8%A8%AD%E8%A8%88; filename*1*=%E6%9B%B8.docx;"
                                ' filename="fallback.docx"')
    assert main == "attachment"
    assert params["filename"] == "設計書.docx"
    _, params = parse_params("application/octet-stream; name*=iso-2022-jp'ja'%1B%24B%40_7W%1B%28B.pdf")
    assert params["name"] == "設計.pdf"
    _, params = parse_params('text/plain; charset="Shift_JIS"; name="=?UTF-8?B?5pel5pys?=.txt"')
    assert params == {"charset": "Shift_JIS", "name": "日本.txt"}


def test_addresses() -> None:
    assert split_addresses('"Doe, J" <j@x>, a@b (c, d), <e@f>') == ['"Doe, J" <j@x>', "a@b (c, d)", "<e@f>"]


def test_charsets_japanese() -> None:
    assert charsets.codec_name("Shift_JIS") == "cp932"
    assert charsets.codec_name("x-sjis") == "cp932"
    assert charsets.codec_name("EUC-JP") == "euc_jp"
    assert charsets.codec_name("ISO-2022-JP") == "iso2022_jp"
    assert charsets.codec_name("utf-8*ja") == "utf-8"
    assert charsets.codec_name("no-such-charset") is None
    text = "丸数字①と㈱、ｶﾀｶﾅ"
    assert charsets.decode(text.encode("cp932"), "Shift_JIS") == text
    # CP50220-style ISO-2022-JP (NEC row 13 characters) decodes via the JIS -> CP932 path.
    assert charsets.decode(b"\x1b$B-!-j\x1b(B OK", "ISO-2022-JP") == "①㈱ OK"
    assert charsets.decode("議事録".encode("euc_jp")) == "議事録"
    assert charsets.decode(b"What\x92s") == "What’s"  # CP1252, not the kanji for 0x92 0x73
    assert charsets.decode(b"\xff\xfe\x00bad", "utf-8") == "\xff\xfe\x00bad"  # mislabelled: CP1252 fallback


def test_depth_cap_keeps_bytes_as_one_leaf() -> None:
    depth = 30
    body = b"LEAF-PAYLOAD\r\n"
    for i in reversed(range(depth)):
        body = (b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i) + body
                + b"\r\n--b%d--\r\n" % i)
    stats = Stats()
    sink = parse(b"Subject: deep\r\n" + body, limits=MimeLimits(max_depth=5), stats=stats)
    assert "mime.depth_exceeded" in sink.anomalies
    assert stats.get("mime.cap_hit", cap="depth") == 1
    assert len(sink.leaves) == 1 and sink.leaves[0].depth == 5
    assert b"LEAF-PAYLOAD" in sink.leaf(0)


def test_malformed_inputs_become_anomalies() -> None:
    msg = (b"Subject: x\r\nContent-Type: multipart/mixed\r\n\r\nno boundary parameter\r\n")
    sink = parse(msg)
    assert "mime.missing_boundary" in sink.anomalies and sink.leaf(0) == b"no boundary parameter\r\n"
    msg = b'Content-Type: multipart/mixed; boundary="q"\r\n\r\n--q\r\n\r\nbody without close'
    sink = parse(msg)
    assert sink.leaf(0) == b"body without close" and "mime.missing_close_boundary" in sink.anomalies
    # A folded line that lost its whitespace (smtp-url-base64): still a header, base64 still decoded.
    msg = b'Content-Type: text/html;\ncharset="utf-8"\nContent-Transfer-Encoding: base64\n\nPGI+aGk8L2I+\n'
    sink = parse(msg)
    assert sink.leaf(0) == b"<b>hi</b>" and sink.leaves[0].charset == "utf-8"
    assert "mime.invalid_header" in sink.anomalies
    # message/rfc822 labelled base64 whose body is plain headers (Suricata 8649 evasion)
    msg = (b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           b'Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename="m.exe"\r\n\r\n'
           b"PAYLOAD")
    sink = parse(msg)
    assert sink.leaves[0].filename == "m.exe" and sink.leaf(0) == b"PAYLOAD"
    assert "mime.encoded_message" in sink.anomalies


def test_outer_boundary_closes_inner_parts() -> None:
    msg = (b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n--outer\r\n'
           b'Content-Type: multipart/alternative; boundary="inner"\r\n\r\n--inner\r\n\r\nA\r\n'
           b"--outer\r\n\r\nB\r\n--outer--\r\n")
    sink = parse(msg)
    assert [sink.leaf(i) for i in range(len(sink.leaves))] == [b"A", b"B"]
    assert "mime.boundary_mismatch" in sink.anomalies


def test_inner_level_reusing_an_outer_boundary_is_closed_with_it() -> None:
    # outer "b10" > "b1" > a third level that reuses "b10". A plain "--b1" line closes that
    # third level (mismatch); the next "--b10" line belongs to the outermost level again. The
    # parser used to keep the closed level's delimiter and crash (IndexError: parser detached,
    # the rest of the message not decoded: an evasion).
    msg = (b'Content-Type: multipart/mixed; boundary="b10"\r\n\r\n--b10\r\n'
           b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n--b1\r\n'
           b'Content-Type: multipart/mixed; boundary="b10"\r\n\r\n--b10\r\n\r\nA\r\n'
           b"--b1\r\n\r\nB\r\n"
           b"--b10\r\nContent-Disposition: attachment; filename=c.txt\r\n\r\nC\r\n--b10--\r\n")
    for chunk in (None, 1, 7):
        sink = parse(msg, chunk)
        assert [sink.leaf(i) for i in range(len(sink.leaves))] == [b"A", b"B", b"C"]
        assert [p.label for p in sink.leaves] == ["1.1.1", "1.2", "2"]
        assert sink.leaves[2].filename == "c.txt"
        assert "mime.boundary_mismatch" in sink.anomalies


def test_header_and_part_caps() -> None:
    stats = Stats()
    msg = b"".join(b"X-H%d: v\r\n" % i for i in range(50)) + b"\r\nbody"
    sink = parse(msg, limits=MimeLimits(max_headers=10), stats=stats)
    assert len(sink.headers[0].headers) == 10 and stats.get("mime.cap_hit", cap="headers") == 1
    parts = b"".join(b"--z\r\n\r\npart%d\r\n" % i for i in range(20))
    msg = b'Content-Type: multipart/mixed; boundary="z"\r\n\r\n' + parts + b"--z--\r\n"
    sink = parse(msg, limits=MimeLimits(max_parts=5), stats=stats)
    assert len(sink.leaves) == 5 and stats.get("mime.cap_hit", cap="parts") == 15  # one per part skipped
    stats = Stats()
    huge = b"Subject: x\r\nX-Long: " + b"a" * 300_000 + b"\r\n\r\nbody"
    sink = parse(huge, chunk=4096, limits=MimeLimits(max_line=1024, max_header_bytes=4096), stats=stats)
    assert sink.leaf(0) == b"body" and "mime.long_header_line" in sink.anomalies


def test_gap_marks_the_open_leaf() -> None:
    sink = Sink()
    p = MimeParser(sink)
    p.feed(b"Content-Transfer-Encoding: base64\r\n\r\nQUJDQU")
    p.gap(100)
    p.feed(b"REVG\r\n")
    p.finish()
    assert sink.gaps[id(sink.leaves[0])] == 100 and sink.leaves[0].gaps
    assert sink.leaf(0) == b"ABCDEF"  # the partial quantum before the hole is not glued to what follows


def test_boundary_search_with_many_dash_lines_and_near_misses() -> None:
    """Boundaries are searched for by name; "--" lines, near misses and a delimiter arriving one
    byte at a time at the end of a chunk are handled as a line-by-line parser would."""
    body = b"".join(b"-- signature %d\r\n--b0und\r\n--b0undaryX\r\n---\r\n" % i for i in range(200))
    msg = (b'Content-Type: multipart/mixed; boundary="b0undary"\r\n\r\n--b0undary\r\n\r\n' + body
           + b"--b0undary\r\nContent-Type: text/plain\r\n\r\nsecond\r\n--b0undary--\r\n")
    for chunk in (None, 1, 3, 1448, 4096):
        sink = parse(msg, chunk)
        assert [sink.leaf(i) for i in range(2)] == [body[:-2], b"second"], chunk
        assert sink.anomalies == []
