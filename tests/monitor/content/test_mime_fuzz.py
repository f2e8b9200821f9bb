"""Hypothesis: the MIME parser and decoders never raise, respect their caps, never amplify, and
give the same parts whatever the chunking."""

from __future__ import annotations

import base64

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.content import charsets
from monitor.content.mime import MimeLimits, MimeParser
from monitor.content.mimecodec import Base64Decoder, QuotedPrintableDecoder
from monitor.content.mimeheaders import decode_header, parse_params
from monitor.stats import Stats
from tests.monitor.content.test_mime import Sink, sample_message

LIMITS = MimeLimits(max_depth=4, max_header_bytes=2048, max_headers=16, max_line=512, max_parts=12)
SETTINGS = settings(max_examples=int(__import__("os").environ.get("LM_FUZZ_EXAMPLES", "150")), deadline=None, suppress_health_check=[HealthCheck.too_slow])

TOKENS = [b"--b\r\n", b"--b--\r\n", b"--c\r\n", b"\r\n", b"\n", b"\r\n\r\n",
          b'Content-Type: multipart/mixed; boundary="b"\r\n', b'Content-Type: multipart/alternative; boundary=c\r\n',
          b"Content-Type: message/rfc822\r\n", b"Content-Transfer-Encoding: base64\r\n",
          b"Content-Transfer-Encoding: quoted-printable\r\n", b'Content-Disposition: attachment; filename*0*=utf-8\'\'%E6%97\r\n',
          b"Subject: =?iso-2022-jp?B?GyRCRnxLXBsoQg==?=\r\n", b"QUJD", b"=3D=\r\n", b"=", b"NA=", b"=Mg",
          b"\x1b$B", b"\xff\xfe", b"body text\r\n", b" folded\r\n", b"X-H: v\r\n", b"-", b"--"]

messages = st.one_of(
    st.binary(max_size=3000),
    st.lists(st.sampled_from(TOKENS), max_size=120).map(b"".join),
    st.tuples(st.just(sample_message()), st.lists(st.tuples(st.integers(0, 6000), st.binary(max_size=8)), max_size=6))
      .map(lambda t: _mutate(*t)),
)


def _mutate(msg: bytes, edits: list[tuple[int, bytes]]) -> bytes:
    b = bytearray(msg)
    for pos, data in edits:
        pos %= max(1, len(b))
        b[pos : pos + len(data)] = data
    return bytes(b)


def run(msg: bytes, cuts: list[int]) -> tuple[Sink, Stats, int]:
    sink, stats = Sink(), Stats()
    p = MimeParser(sink, LIMITS, stats)
    most = 0
    pos = 0
    for cut in sorted(set(c % (len(msg) + 1) for c in cuts)) + [len(msg)]:
        p.feed(msg[pos:cut])
        pos = cut
        most = max(most, len(p._buf))  # noqa: SLF001 - the carry between chunks is the memory bound
    p.finish()
    return sink, stats, most


@SETTINGS
@given(messages, st.lists(st.integers(0, 10_000), max_size=20))
def test_never_raises_and_respects_caps(msg: bytes, cuts: list[int]) -> None:
    sink, _stats, most = run(msg, cuts)
    assert most <= 2 * LIMITS.max_line + 64
    assert len(sink.leaves) <= LIMITS.max_parts
    assert all(p.depth <= LIMITS.max_depth + 1 for p in sink.headers)
    assert all(len(p.headers) <= LIMITS.max_headers for p in sink.headers)
    assert sum(len(d) for d in sink.data.values()) <= len(msg)  # decoding never amplifies
    assert len(sink.ended) == len(sink.leaves)  # every leaf is closed


@SETTINGS
@given(st.lists(st.sampled_from(TOKENS), max_size=80).map(b"".join), st.lists(st.integers(0, 3000), max_size=12))
def test_chunking_does_not_change_the_result(msg: bytes, cuts: list[int]) -> None:
    whole, _, _ = run(msg, [])
    split, _, _ = run(msg, cuts)
    assert split.summary() == whole.summary()
    assert split.anomalies == whole.anomalies


@SETTINGS
@given(st.binary(max_size=600), st.lists(st.integers(0, 700), max_size=10))
def test_decoders_are_chunk_invariant_and_bounded(data: bytes, cuts: list[int]) -> None:
    for cls in (Base64Decoder, QuotedPrintableDecoder):
        whole = cls()
        expected = whole.feed(data) + whole.flush()
        d = cls()
        out = b""
        pos = 0
        for cut in sorted(set(c % (len(data) + 1) for c in cuts)) + [len(data)]:
            out += d.feed(data[pos:cut])
            pos = cut
        out += d.flush()
        assert out == expected and len(out) <= len(data)


@given(st.binary(max_size=400))
def test_base64_roundtrip_survives_noise(data: bytes) -> None:
    enc = base64.encodebytes(data).replace(b"\n", b" \r\n\t")
    d = Base64Decoder()
    assert d.feed(enc) + d.flush() == data


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.text(max_size=80))
def test_header_helpers_never_raise(raw: bytes, text: str) -> None:
    assert isinstance(decode_header(raw), str)
    assert isinstance(charsets.decode(raw, text[:20] or None), str)
    main, params = parse_params(text + "; " + raw.decode("latin-1"))
    assert isinstance(main, str) and all(isinstance(v, str) for v in params.values())


class _TolerantOnly(Base64Decoder):
    """The policy's slow path for every chunk: the reference for the fast path."""

    __slots__ = ()

    def feed(self, data: bytes) -> bytes:
        return self._feed_tolerant(data)


B64_TOKENS = [b"QUJD", b"QUI=", b"QQ==", b"Zm9vYmFy", b"=", b"==", b"\r\n", b"\n", b" ", b"\t", b"\v", b"\x00",
              b"*", b"A", b"AB", b"ABC", b"-", b"_", b"\xe3\x81\x82"]


@SETTINGS
@given(st.lists(st.sampled_from(B64_TOKENS), max_size=60).map(b"".join), st.lists(st.integers(0, 400), max_size=8),
       st.sampled_from(["pybase64_strict", "binascii_strict"]))
def test_base64_fast_path_equals_the_tolerant_policy(data: bytes, cuts: list[int], accel: str) -> None:
    from monitor.content import mimecodec

    if accel == "pybase64_strict" and mimecodec.pybase64 is None:
        accel = "binascii_strict"
    saved = mimecodec.strict_b64decode
    mimecodec.strict_b64decode = getattr(mimecodec, accel)
    try:
        fast, ref = Base64Decoder(), _TolerantOnly()
        got, want = b"", b""
        pos = 0
        for cut in sorted(set(c % (len(data) + 1) for c in cuts)) + [len(data)]:
            got += fast.feed(data[pos:cut])
            want += ref.feed(data[pos:cut])
            pos = cut
        got += fast.flush()
        want += ref.flush()
    finally:
        mimecodec.strict_b64decode = saved
    assert got == want
    assert (fast.invalid, fast.dangling) == (ref.invalid, ref.dangling)
