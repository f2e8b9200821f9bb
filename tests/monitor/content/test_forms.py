"""Form bodies: multipart (streaming, RFC 2231/5987 names, caps), urlencoded, JSON strings."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.content.forms import (
    MultipartParser,
    PartInfo,
    boundary_of,
    json_strings,
    parse_params,
    urldecode,
    urlencoded_pairs,
)


class Sink:
    def __init__(self, info: PartInfo, out: list[Sink]) -> None:
        self.info = info
        self.data = b""
        self.complete: bool | None = None
        out.append(self)

    def write(self, data: bytes) -> None:
        self.data += data

    def end(self, complete: bool) -> None:
        self.complete = complete


def parse(body: bytes, boundary: bytes, step: int, **kw: int) -> tuple[list[Sink], MultipartParser]:
    parts: list[Sink] = []
    mp = MultipartParser(boundary, lambda info: Sink(info, parts), **kw)
    for i in range(0, len(body), step):
        mp.feed(body[i:i + step])
    mp.close()
    return parts, mp


BODY = (b"preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\n"
        b"line1\r\n--XyZ-not-a-boundary\r\n"
        b"--XyZ\r\nContent-Disposition: form-data; name=\"doc\"; filename*=UTF-8''%E8%A6%8B%E7%A9%8D.txt\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n\xe8\xa6\x8b\xe7\xa9\x8d\r\n\r\n"
        b"--XyZ--\r\nepilogue")


def test_multipart_parts_identical_at_every_split() -> None:
    for step in (1, 2, 3, 5, 8, 13, 64, len(BODY)):
        parts, mp = parse(BODY, b"XyZ", step)
        assert [(p.info.name, p.info.filename, p.data, p.complete) for p in parts] == [
            ("note", None, b"line1\r\n--XyZ-not-a-boundary", True),
            ("doc", "見積.txt", "見積\r\n".encode(), True),
        ], step
        assert parts[1].info.content_type == "text/plain; charset=utf-8"
        assert mp.problems == []


def test_multipart_lf_only_and_truncated() -> None:
    body = b"--b\nContent-Disposition: form-data; name=\"a\"; filename=\"a.txt\"\n\nhello\n--b\nContent-Disposition: form-data; name=\"c\"\n\ncut off"
    parts, mp = parse(body, b"b", 4)
    assert [(p.info.filename, p.data, p.complete) for p in parts] == [("a.txt", b"hello", True), (None, b"cut off", False)]
    assert "truncated" in mp.problems


def test_multipart_caps() -> None:
    many = b"".join(b"--b\r\nContent-Disposition: form-data; name=\"f%d\"\r\n\r\nx\r\n" % i for i in range(20)) + b"--b--"
    parts, mp = parse(many, b"b", 50, max_parts=5)
    assert len(parts) == 5 and "too_many_parts" in mp.problems
    huge = b"--b\r\nX-Junk: " + b"j" * 5000 + b"\r\n\r\nbody\r\n--b--"
    parts, mp = parse(huge, b"b", 100, max_header=1024)
    assert "part_header_too_long" in mp.problems


def test_params_rfc2231_and_quirks() -> None:
    assert parse_params("attachment; filename*0*=UTF-8''%E8%A8%AD; filename*1*=%E8%A8%88.txt") == (
        "attachment", {"filename": "設計.txt"})
    assert parse_params('form-data; name="f"; filename="C:\\Users\\u\\a.txt"')[1]["filename"] == "C:\\Users\\u\\a.txt"
    assert parse_params("form-data; filename=\"\xe8\xa6\x8b.txt\"".encode().decode("latin-1"))[1]["filename"]
    assert parse_params('form-data; name="q\\"x"')[1]["name"] == 'q"x'
    assert boundary_of("multipart/form-data; boundary=\"----WebKitFormBoundaryA1\"") == b"----WebKitFormBoundaryA1"
    assert boundary_of("text/plain; boundary=x") is None


def test_urldecode() -> None:
    assert urldecode(b"mail=test%40oisf.net&q=a+b%E8%A6%8B%zz") == "mail=test@oisf.net&q=a b見%zz".encode()
    assert list(urlencoded_pairs(b"a=1&&b=%E8%A6%8B")) == [(b"a", b"1"), (b"b", "見".encode())]


def test_json_strings_decode_escapes() -> None:
    text, ok = json_strings(b'{"title":"\\u898b\\u7a4d\\u66f8","list":[1,"\\ud83d\\ude00",{"k":"v"}]}')
    assert ok and text.split("\n") == ["title", "見積書", "list", "😀", "k", "v"]
    text, ok = json_strings(b'{"title":"\\u898b\\u7a4d", "cut": "abc')
    assert not ok and "見積" in text and "abc" in text


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=1500), boundary=st.binary(min_size=1, max_size=20), step=st.integers(1, 200))
def test_fuzz_multipart_never_raises(body: bytes, boundary: bytes, step: int) -> None:
    parts, mp = parse(body, boundary, step, max_parts=10, max_header=256)
    assert len(parts) <= 10
    assert sum(len(p.data) for p in parts) <= len(body)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=1000))
def test_fuzz_json_and_urldecode_never_raise(data: bytes) -> None:
    text, _ = json_strings(data, limit=500)
    assert len(text) <= 500
    assert len(urldecode(data)) <= len(data)
