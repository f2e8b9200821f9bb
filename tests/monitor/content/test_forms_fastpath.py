"""Multipart parts written straight from the segment equal what the general step loop gives."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.content.forms import MultipartParser, PartInfo

BOUNDARY = b"----WebKitFormBoundary7MA4YWxkTrZu0gW"
# Content fragments that come close to a delimiter: the fast path must hand all of them on.
_FRAGMENTS = [b"\r", b"\n", b"\r\n", b"--", b"\r\n--", b"\r\n--" + BOUNDARY[:10], b"\r\n--" + BOUNDARY + b"x",
              b"\n--" + BOUNDARY + b"-more", b"plain text ", "見積".encode(), b"\x00\xff" * 20, b"-"]


class Part:
    def __init__(self, info: PartInfo, out: list[Part]) -> None:
        self.info = info
        self.chunks: list[bytes] = []
        self.complete: bool | None = None
        out.append(self)

    def write(self, data: bytes) -> None:
        assert isinstance(data, bytes) and data  # what files and detection expect
        self.chunks.append(data)

    def end(self, complete: bool) -> None:
        self.complete = complete


def parse(body: bytes, cuts: list[int]) -> tuple[list[tuple[str, bytes, bool | None]], list[str]]:
    parts: list[Part] = []
    mp = MultipartParser(BOUNDARY, lambda info: Part(info, parts))
    points = sorted({c % (len(body) + 1) for c in cuts} | {0, len(body)})
    for a, b in zip(points, points[1:], strict=False):
        mp.feed(body[a:b])
    mp.close()
    return [(p.info.name, b"".join(p.chunks), p.complete) for p in parts], mp.problems


@settings(max_examples=200)
@given(
    contents=st.lists(st.lists(st.sampled_from(_FRAGMENTS) | st.binary(max_size=300), max_size=12),
                      min_size=1, max_size=3),
    cuts=st.lists(st.integers(0, 6000), max_size=15),
    truncate=st.integers(0, 80),
)
def test_multipart_any_segmentation_equals_one_piece(contents: list[list[bytes]], cuts: list[int],
                                                     truncate: int) -> None:
    body = b"".join(
        b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="p%d"\r\n\r\n' % i + b"".join(c) + b"\r\n"
        for i, c in enumerate(contents)) + b"--" + BOUNDARY + b"--\r\n"
    if truncate:
        body = body[:-truncate]
    whole = parse(body, [])
    assert parse(body, cuts) == whole
    # Cuts right around every place a delimiter (or a look-alike) starts.
    near = [i + k for i in range(len(body)) if body.startswith(b"\n--", i) for k in (-1, 0, 1, 2, 5)]
    assert parse(body, near) == whole
    assert parse(body, list(range(0, len(body), 1448))) == whole
    if not truncate:
        assert [data for _, data, _ in whole[0]] == [b"".join(c) for c in contents]


def test_every_single_cut_point() -> None:
    body = (b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="a"\r\n\r\n' + b"x" * 100
            + b"\r\n--" + BOUNDARY[:7] + b"\r\r\n--" + BOUNDARY + b"-not\r\n" + b"y" * 60 + b"\r\n--" + BOUNDARY
            + b'\r\nContent-Disposition: form-data; name="b"\r\n\r\n' + b"z" * 70 + b"\r\n--" + BOUNDARY + b"--\r\n")
    whole = parse(body, [])
    assert [d for _, d, _ in whole[0]] == [b"x" * 100 + b"\r\n--" + BOUNDARY[:7] + b"\r\r\n--" + BOUNDARY
                                           + b"-not\r\n" + b"y" * 60, b"z" * 70]
    for cut in range(len(body)):
        # The second cut leaves a segment longer than the delimiter, so the fast path runs.
        assert parse(body, [cut, cut + 60]) == whole, cut


def test_large_part_written_uncopied_in_segments() -> None:
    payload = bytes(range(256)) * 200 + b"\r\n--" + BOUNDARY[:5]
    body = b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="f"\r\n\r\n' + payload + \
        b"\r\n--" + BOUNDARY + b"--\r\n"
    parts: list[Part] = []
    mp = MultipartParser(BOUNDARY, lambda info: Part(info, parts))
    for i in range(0, len(body), 1448):
        mp.feed(body[i:i + 1448])
    mp.close()
    assert b"".join(parts[0].chunks) == payload and parts[0].complete is True and mp.problems == []
    # One write per segment (no per-line work, no gathering): the carried tail is usually empty.
    assert len(parts[0].chunks) <= len(body) // 1448 + 2
