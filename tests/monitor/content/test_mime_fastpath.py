"""The MIME fast paths (long-line jump, "-" prefilter of the delimiter search, base64 line-break
stripping, cached and loop-free header parameters) give what the code before them gave
(tests/monitor/content/mail_reference.py) on generated messages and values, and what Python's
email package decodes on well-formed messages."""

from __future__ import annotations

import base64
import email
import email.policy
import hashlib
import quopri
from email.message import EmailMessage
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.content import mime, mimecodec, mimeheaders
from monitor.content.mime import MimeLimits, MimeParser, MimePart
from monitor.stats import Stats
from tests.monitor.content import mail_reference as ref

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Trace:
    """A sink that records every callback in order, with the part's parsed header fields."""

    def __init__(self) -> None:
        self.log: list[tuple[Any, ...]] = []

    @staticmethod
    def _part(p: MimePart) -> tuple[Any, ...]:
        return (p.path, p.depth, p.content_type, tuple(sorted(p.params.items())), p.charset, p.encoding,
                p.disposition, p.filename, p.boundary, p.is_message, tuple(p.headers), p.size, p.gaps)

    def on_headers(self, part: MimePart) -> None:
        self.log.append(("headers", self._part(part)))

    def on_leaf_begin(self, part: MimePart) -> None:
        self.log.append(("begin", self._part(part)))

    def on_leaf_data(self, part: MimePart, data: bytes) -> None:
        self.log.append(("data", part.path, data))

    def on_leaf_gap(self, part: MimePart, length: int) -> None:
        self.log.append(("gap", part.path, length))

    def on_leaf_end(self, part: MimePart) -> None:
        self.log.append(("end", self._part(part)))

    def on_anomaly(self, kind: str, detail: str = "") -> None:
        self.log.append(("anomaly", kind, detail))


def run(msg: bytes, cuts: list[int], gaps: tuple[int, ...] | list[int] = (), limits: MimeLimits | None = None
        ) -> tuple[list[tuple[Any, ...]], dict[str, Any]]:
    trace, stats = Trace(), Stats()
    p = MimeParser(trace, limits, stats)
    points = sorted({c % (len(msg) + 1) for c in cuts} | {0, len(msg)})
    for i, (a, b) in enumerate(zip(points, points[1:], strict=False)):
        p.feed(msg[a:b])
        if i in gaps:
            p.gap(3)
    p.finish()
    return trace.log, stats.snapshot()


def both(msg: bytes, cuts: list[int], gaps: tuple[int, ...] | list[int] = (), limits: MimeLimits | None = None) -> Any:
    fast = run(msg, cuts, gaps, limits)
    with ref.reference_mail_path():
        old = run(msg, cuts, gaps, limits)
    assert fast == old
    return fast


# ------------------------------------------------------------------ generated messages

BOUNDARIES = ["b1", "b10", "=_part_0_1", "----=_NextPart_000_0001", "a-b", "x"]
TEXT_PIECES = [b"plain line", "機密 設計図面".encode(), b".dotted", b"..", b".", b"--", b"--b1", b"--b10--",
               b"--=_part_0_1 ", b"\r\n--b", b"-", b"=", b"=3D", b"=\r\n", b" ", b"\t", b"\r", b"x" * 1001,
               b"y" * 997, b"From me", b"\x00\xff"]


@st.composite
def lines_text(draw: Any) -> bytes:
    pieces = draw(st.lists(st.lists(st.sampled_from(TEXT_PIECES) | st.binary(max_size=40), max_size=6), max_size=14))
    eol = draw(st.sampled_from([b"\r\n", b"\n"]))
    return eol.join(b"".join(p) for p in pieces)


@st.composite
def base64_body(draw: Any) -> bytes:
    raw = draw(st.binary(max_size=2500))
    width = draw(st.sampled_from([76, 64, 4, 7, 1000, 1200]))
    eol = draw(st.sampled_from([b"\r\n", b"\n", b" \r\n", b"\r\n\t"]))
    text = base64.b64encode(raw)
    out = eol.join(text[i : i + width] for i in range(0, len(text), width))
    # Sometimes damage it: an invalid character, a stray pad, spaces.
    for pos, junk in draw(st.lists(st.tuples(st.integers(0, 5000), st.sampled_from([b"!", b"=", b" ", b"\x00", b"==", b"\r"])),
                                   max_size=2)):
        pos %= len(out) + 1
        out = out[:pos] + junk + out[pos:]
    return out


@st.composite
def leaf(draw: Any) -> bytes:
    cte = draw(st.sampled_from(["base64", "quoted-printable", "8bit", "7bit", ""]))
    ctype = draw(st.sampled_from([b'text/plain; charset="utf-8"', b"text/plain; charset=ISO-2022-JP",
                                  b"application/octet-stream; name=data.bin", b"text/html", b"application/zip"]))
    head = b"Content-Type: " + ctype + b"\r\n"
    if cte:
        head += b"Content-Transfer-Encoding: " + cte.encode() + b"\r\n"
    if draw(st.booleans()):
        head += draw(st.sampled_from([b'Content-Disposition: attachment; filename="a b.zip"\r\n',
                                      b"Content-Disposition: attachment; filename*=UTF-8''%E5%9B%B3.bin\r\n",
                                      b'Content-Disposition: attachment;\r\n filename="=?UTF-8?B?5Zuz6Z2i?=.txt"\r\n',
                                      b'Content-Disposition: inline; filename="q\\"x.txt"; size=3\r\n']))
    if cte == "base64":
        body = draw(base64_body())
    elif cte == "quoted-printable":
        body = quopri.encodestring(draw(lines_text())) if draw(st.booleans()) else draw(lines_text())
    else:
        body = draw(lines_text())
    return head + b"\r\n" + body


@st.composite
def entity(draw: Any, depth: int = 0) -> bytes:
    kind = draw(st.sampled_from(["leaf", "multipart", "message"] if depth < 3 else ["leaf"]))
    if kind == "leaf":
        return draw(leaf())
    if kind == "message":
        return (b"Content-Type: message/rfc822\r\n\r\nSubject: =?UTF-8?B?6Lui6YCB?=\r\nFrom: a@b\r\n"
                + draw(entity(depth + 1)))
    boundary = draw(st.sampled_from(BOUNDARIES)).encode()
    parts = draw(st.lists(entity(depth + 1), min_size=1, max_size=3))
    out = (b'Content-Type: multipart/mixed; boundary="' + boundary + b'"\r\n\r\n'
           + draw(st.sampled_from([b"", b"preamble\r\n", b"--not-it\r\n"])))
    for p in parts:
        out += (b"--" + boundary + draw(st.sampled_from([b"\r\n", b"  \r\n", b"\n"])) + p
                + draw(st.sampled_from([b"\r\n", b"\n", b"\n\n", b"\r\n\r\n"])))
    if draw(st.booleans()):
        out += b"--" + boundary + b"--\r\n" + draw(st.sampled_from([b"", b"epilogue\r\n"]))
    return out


messages = entity().map(lambda e: b"From: =?UTF-8?B?5bGx55Sw?= <y@example.jp>\r\nTo: a@x, b@y\r\nSubject: s\r\n" + e)


@SETTINGS
@given(msg=messages, cuts=st.lists(st.integers(0, 20000), max_size=12))
def test_generated_messages_parse_as_before(msg: bytes, cuts: list[int]) -> None:
    both(msg, cuts)
    both(msg, list(range(0, len(msg), 1448)))


@SETTINGS
@given(msg=messages, cuts=st.lists(st.integers(0, 20000), min_size=1, max_size=8),
       gaps=st.lists(st.integers(0, 8), max_size=2))
def test_generated_messages_with_gaps_and_small_caps_parse_as_before(msg: bytes, cuts: list[int], gaps: list[int]) -> None:
    both(msg, cuts, gaps, MimeLimits(max_depth=2, max_header_bytes=300, max_headers=4, max_line=200, max_parts=3))


def test_long_line_found_in_and_across_chunks() -> None:
    base = b"Content-Type: text/plain\r\n\r\n"
    short = b"a" * 998 + b"\r\n"  # RFC 5322's 998 characters: the longest a line may be
    assert not any(e[1] == "mime.long_line" for e in both(base + short * 50, [])[0] if e[0] == "anomaly")
    long = b"a" * 999 + b"\r\n"
    for msg in (base + short * 20 + long + short * 20, base + long + short, base + short * 3 + long):
        log, stats = both(msg, [])
        assert [e[1] for e in log if e[0] == "anomaly"] == ["mime.long_line"]
        assert stats["mime"] == {"anomaly[type=mime.long_line]": 1}


def test_delimiters_found_after_dashes_and_in_base64() -> None:
    body = base64.encodebytes(bytes(range(256)) * 40).replace(b"\n", b"\r\n")
    msg = (b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n--b1\r\nContent-Transfer-Encoding: base64\r\n\r\n'
           + body + b"--b1\r\nContent-Type: text/plain\r\n\r\na - b -- c\r\n--b10\r\n---b1\r\n--b1--\r\n")
    log, _ = both(msg, list(range(0, len(msg), 1448)))
    data = [e for e in log if e[0] == "data"]
    assert b"".join(d[2] for d in data if d[1] == "1") == bytes(range(256)) * 40
    assert b"".join(d[2] for d in data if d[1] == "2") == b"a - b -- c\r\n--b10\r\n---b1"
    # Bare LF: the search starts on the empty line's LF, right before the delimiter's "-".
    msg = b'Content-Type: multipart/mixed; boundary="b1"\n\n--b1\n\nbody\n\n--b1\n\nnext\n--b1--\n'
    log, _ = both(msg, [])
    assert [e[2] for e in log if e[0] == "data"] == [b"body\n", b"next"]


# ------------------------------------------------------------------ building blocks


@SETTINGS
@given(lengths=st.lists(st.integers(0, 1100) | st.sampled_from([997, 998, 999, 1000, 1001]), max_size=40),
       trim=st.tuples(st.integers(0, 1200), st.integers(0, 1200)), limit=st.sampled_from([999, 5, 0, 1]))
def test_long_line_jump_equals_split(lengths: list[int], trim: tuple[int, int], limit: int) -> None:
    data = b"\n".join(b"x" * n for n in lengths)
    start = min(trim[0], len(data))
    end = max(start, len(data) - trim[1])
    assert mime._has_long_line(data, start, end, limit) == ref.has_long_line(data, start, end, limit)


B64_PIECES = [b"QUJD", b"QQ", b"Q", b"=", b"==", b"\r\n", b"\n", b"\r", b" ", b"\t", b"!", b"\x00", b"-", b"\xe3\x81\x82",
              b"TWFu", b"NA=", b"=Mg", b"\x0b"]


@SETTINGS
@given(pieces=st.lists(st.sampled_from(B64_PIECES) | st.binary(max_size=8), max_size=60),
       cuts=st.lists(st.integers(0, 400), max_size=8))
def test_base64_decoder_equals_translate_version(pieces: list[bytes], cuts: list[int]) -> None:
    data = b"".join(pieces)
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    chunks = [data[a:b] for a, b in zip(points, points[1:], strict=False)]
    new = mimecodec.Base64Decoder()
    old = mimecodec.Base64Decoder()
    for c in chunks:
        assert new.feed(c) == ref.base64_feed(old, c)  # chunk by chunk: the leaf writes stay the same
        assert new._carry == old._carry
    assert (new.flush(), new.invalid, new.dangling) == (old.flush(), old.invalid, old.dangling)


def test_base64_decoder_well_formed_and_spaced_bodies() -> None:
    raw = bytes(range(256)) * 30
    for eol in (b"\r\n", b"\n", b" \r\n", b"\t\n"):
        body = eol.join(base64.b64encode(raw)[i : i + 76] for i in range(0, 10240, 76))
        chunks = [body[i : i + 1000] for i in range(0, len(body), 1000)]
        d = mimecodec.Base64Decoder()
        assert b"".join(d.feed(c) for c in chunks) + d.flush() == raw
        assert (d.invalid, d.dangling) == (0, 0)
        assert ref.b64_reference_decode(chunks) == (raw, 0, 0)


PARAM_PIECES = ["text/plain", "multipart/mixed", "attachment", ";", " ", "\t", '"', "\\", "=", "charset=utf-8",
                'boundary="a;b"', "name*0*=UTF-8''%E5%9B%B3", "name*1=x.bin", "filename*=UTF-8''a%20b", "NAME=Up",
                "=?UTF-8?B?5Zuz?=", "=?ISO-2022-JP?B?GyRCOzFOQRsoQg==?=", "\r\n ", "é", "size=3", "*", "'"]


@SETTINGS
@given(value=st.lists(st.sampled_from(PARAM_PIECES) | st.text(max_size=5), max_size=16).map("".join),
       max_params=st.sampled_from([64, 2, 0]))
def test_parse_params_equals_reference(value: str, max_params: int) -> None:
    want = ref.parse_params(value, max_params)
    first = mimeheaders.parse_params(value, max_params)
    assert first == want
    first[1]["mutated"] = "by the caller"  # a cached result must not be shared with callers
    assert mimeheaders.parse_params(value, max_params) == want
    assert mimeheaders._split_params(value) == ref.split_params(value)
    assert mimeheaders._unquote(value) == ref.unquote(value)


def test_parse_params_long_values_are_not_cached() -> None:
    value = 'attachment; filename="' + "x" * 300 + '.bin"'
    before = mimeheaders._parse_params_cached.cache_info().currsize
    assert mimeheaders.parse_params(value) == ("attachment", {"filename": "x" * 300 + ".bin"})
    assert mimeheaders._parse_params_cached.cache_info().currsize == before


ADDRESS_PIECES = ["a@b", "山田 <y@example.jp>", ",", '"Doe, J"', "<x,y@z>", "(c, d)", "(", ")", "<", ">", '"', " "]


@SETTINGS
@given(value=st.lists(st.sampled_from(ADDRESS_PIECES) | st.text(max_size=4), max_size=12).map("".join),
       max_items=st.sampled_from([100, 1, 0, -1]))
def test_split_addresses_equals_reference(value: str, max_items: int) -> None:
    assert mimeheaders.split_addresses(value, max_items) == ref.split_addresses(value, max_items)


# ------------------------------------------------------------------ Python's email package as oracle


def _leaves(msg: bytes) -> list[tuple[str, str, bytes]]:
    """(content type, file name, decoded bytes) of every leaf, as Python's email package sees them."""
    out = []
    for part in email.message_from_bytes(msg, policy=email.policy.default).walk():
        if part.is_multipart():
            continue
        data = part.get_payload(decode=True)
        assert isinstance(data, bytes)
        out.append((part.get_content_type(), part.get_filename() or "", data))
    return out


class Leaves:
    def __init__(self) -> None:
        self.parts: list[MimePart] = []
        self.data: dict[int, bytearray] = {}
        self.anomalies: list[str] = []

    def on_headers(self, part: MimePart) -> None:
        pass

    def on_leaf_begin(self, part: MimePart) -> None:
        self.parts.append(part)
        self.data[id(part)] = bytearray()

    def on_leaf_data(self, part: MimePart, data: bytes) -> None:
        self.data[id(part)] += data

    def on_leaf_gap(self, part: MimePart, length: int) -> None:
        raise AssertionError("no gaps here")

    def on_leaf_end(self, part: MimePart) -> None:
        pass

    def on_anomaly(self, kind: str, detail: str = "") -> None:
        self.anomalies.append(kind)


@st.composite
def email_messages(draw: Any) -> bytes:
    m = EmailMessage()
    m["From"] = "山田 <yamada@example.jp>"
    m["To"] = "a@example.jp"
    m["Subject"] = draw(st.sampled_from(["設計図面", "report", "見積 --b1"]))
    charset = draw(st.sampled_from(["utf-8", "iso-2022-jp"]))
    alphabet = "abc 機密.\n-=" + ("é" if charset == "utf-8" else "")
    text = draw(st.text(alphabet=st.sampled_from(alphabet), max_size=400)) + "\n"
    m.set_content(text, charset=charset, cte=draw(st.sampled_from(["base64", "quoted-printable", "8bit"])))
    for i in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["binary", "text", "message"]))
        if kind == "binary":
            m.add_attachment(draw(st.binary(min_size=1, max_size=3000)), maintype="application",
                             subtype="octet-stream", filename=f"図面{i}.bin")
        elif kind == "text":
            m.add_attachment(draw(st.text(alphabet=st.sampled_from("xyz ü\n.-"), max_size=300)) + "\n",
                             subtype="plain", cte=draw(st.sampled_from(["quoted-printable", "base64"])),
                             filename=f"note{i}.txt")
        else:
            inner = EmailMessage()
            inner["Subject"] = "転送"
            inner.set_content("inner body\n")
            inner.add_attachment(draw(st.binary(min_size=1, max_size=500)), maintype="application",
                                 subtype="zip", filename="x.zip")
            m.add_attachment(inner, filename="fwd.eml")
    # Boundaries of our own ("_" is in no content): the package would draw them with random.
    for i, part in enumerate(m.walk()):
        if part.get_content_maintype() == "multipart":
            part.set_boundary(f"=_b{i}_x9")
    return m.as_bytes(policy=email.policy.SMTP)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(msg=email_messages(), segment=st.sampled_from([1448, 536, 65536, 7]))
def test_leaves_equal_python_email_package(msg: bytes, segment: int) -> None:
    sink = Leaves()
    p = MimeParser(sink)
    for i in range(0, len(msg), segment):
        p.feed(msg[i : i + segment])
    p.finish()
    got = [(part.content_type, part.filename, bytes(sink.data[id(part)])) for part in sink.parts]
    assert got == _leaves(msg)
    assert sink.anomalies == []
    assert [hashlib.sha256(d).hexdigest() for _, _, d in got] == [hashlib.sha256(d).hexdigest() for _, _, d in _leaves(msg)]
