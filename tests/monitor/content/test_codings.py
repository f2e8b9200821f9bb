"""Streaming content-coding decoders: every coding, stacking, passthrough, caps, fuzz."""

from __future__ import annotations

import gzip
import lzma
import zlib

import brotli
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.content.codings import CodingChain, CodingLimits, parse_content_encoding
from monitor.stats import Stats

TEXT = ("取扱注意 LEAKMON-CODINGS-MARKER " * 500).encode()


def run(codings: list[str], blob: bytes, step: int = 7, limits: CodingLimits | None = None,
        stats: Stats | None = None) -> tuple[bytes, CodingChain]:
    chain = CodingChain(codings, limits, stats)
    out = b"".join(chain.decode(blob[i:i + step]) for i in range(0, len(blob), step)) + chain.flush()
    return out, chain


def raw_deflate(data: bytes) -> bytes:
    co = zlib.compressobj(wbits=-15)
    return co.compress(data) + co.flush()


def test_each_coding_streams_byte_by_byte() -> None:
    cases = {
        "gzip": gzip.compress(TEXT, mtime=0),
        "deflate": zlib.compress(TEXT),
        "br": brotli.compress(TEXT),
        "lzma": lzma.compress(TEXT),
    }
    for name, blob in cases.items():
        out, chain = run([name], blob, step=1)
        assert out == TEXT, name
        assert chain.problems == [], name
    out, _ = run(["deflate"], raw_deflate(TEXT), step=3)
    assert out == TEXT


def test_header_tokens_are_normalised() -> None:
    assert parse_content_encoding(["x-gzip"]) == ["gzip"]
    assert parse_content_encoding(["gzip, deflate", "br"]) == ["gzip", "deflate", "br"]
    assert parse_content_encoding(["deflate,", "identity"]) == ["deflate"]
    assert parse_content_encoding(["gz\x00ip"]) == ["gzip"]  # junk inside a token (evasion)
    assert parse_content_encoding(["gzip_x"]) == ["?"]


def test_stacked_codings_undo_last_first() -> None:
    blob = zlib.compress(gzip.compress(TEXT, mtime=0))  # gzip applied first, then deflate
    out, chain = run(["gzip", "deflate"], blob)
    assert out == TEXT and chain.problems == []


def test_layer_limit_counts_and_leaves_inner_layer_coded() -> None:
    stats = Stats()
    inner = gzip.compress(TEXT, mtime=0)
    blob = zlib.compress(zlib.compress(zlib.compress(inner)))
    out, chain = run(["gzip", "deflate", "deflate", "deflate"], blob,
                     limits=CodingLimits(layer_limit=3), stats=stats)
    assert out == inner  # the 4th (innermost) coding was not undone
    assert "layer_limit" in chain.problems
    assert stats.get("content.decompress_cap", cap="layers") == 1


def test_label_without_coding_is_passed_through() -> None:
    body = b'{"sdk_version":"1.0","device_id":"x"}'
    out, chain = run(["gzip"], body)
    assert out == body and chain.passthrough and "passthrough" in chain.problems


def test_double_label_single_compression_skips_the_missing_layer() -> None:
    out, chain = run(["gzip", "gzip"], gzip.compress(TEXT, mtime=0))
    assert out == TEXT and "passthrough" in chain.problems and not chain.passthrough


def test_unknown_label_is_sniffed() -> None:
    out, chain = run(["?"], gzip.compress(TEXT, mtime=0))
    assert out == TEXT and "sniffed_coding" in chain.problems
    out, _ = run(["?"], b"plain text, not coded")
    assert out == b"plain text, not coded"


def test_gzip_tolerance_and_anomalies() -> None:
    blob = bytearray(gzip.compress(TEXT, mtime=0))
    blob[3] |= 0x20  # a reserved flag bit
    blob[-5] ^= 0xFF  # a wrong CRC
    out, chain = run(["gzip"], bytes(blob))
    assert out == TEXT
    assert {"gzip_reserved_flags", "gzip_bad_trailer"} <= set(chain.problems)
    out, chain = run(["gzip"], gzip.compress(TEXT, mtime=0)[:-8])
    assert out == TEXT and "gzip_missing_trailer" in chain.problems
    two = gzip.compress(b"first ", mtime=0) + gzip.compress(b"second", mtime=0)
    assert run(["gzip"], two)[0] == b"first second"


def test_corrupt_stream_keeps_decoded_prefix() -> None:
    blob = bytearray(zlib.compress(TEXT))
    blob[len(blob) // 2:] = b"\xff" * (len(blob) - len(blob) // 2)
    out, chain = run(["deflate"], bytes(blob), step=16)
    assert chain.broken and "corrupt" in chain.problems
    assert TEXT.startswith(out)


def test_size_cap_stops_and_counts() -> None:
    stats = Stats()
    blob = gzip.compress(b"A" * (4 << 20), mtime=0)
    out, chain = run(["gzip"], blob, step=len(blob), limits=CodingLimits(max_output=1 << 20, max_ratio=10**6),
                     stats=stats)
    assert len(out) == 1 << 20 and chain.capped == "size"
    assert stats.get("content.decompress_cap", cap="size") == 1


def test_ratio_cap_stops_a_bomb() -> None:
    stats = Stats()
    bomb = gzip.compress(b"\0" * (64 << 20), mtime=0)
    out, chain = run(["gzip"], bomb, step=len(bomb), limits=CodingLimits(max_ratio=100), stats=stats)
    assert chain.capped == "ratio"
    assert len(out) <= 100 * len(bomb) + (1 << 18)
    assert stats.get("content.decompress_cap", cap="ratio") == 1


def test_gap_breaks_a_coded_stream() -> None:
    chain = CodingChain(["gzip"])
    blob = gzip.compress(TEXT, mtime=0)
    first = chain.decode(blob[:40])
    chain.gap()
    assert chain.decode(blob[60:]) == b"" and chain.broken
    assert TEXT.startswith(first)


CODINGS = st.lists(st.sampled_from(["gzip", "deflate", "br", "lzma", "?"]), max_size=4)


@settings(max_examples=200, deadline=None)
@given(codings=CODINGS, data=st.binary(max_size=2048), step=st.integers(1, 300))
def test_fuzz_random_input_never_raises(codings: list[str], data: bytes, step: int) -> None:
    limits = CodingLimits(layer_limit=3, max_output=64 << 10, max_ratio=50)
    out, chain = run(codings, data, step=step, limits=limits)
    assert len(out) <= max(len(data), limits.max_output) + 64


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=4096), cut=st.integers(0, 4096), flip=st.integers(0, 4095))
def test_fuzz_mutated_gzip_never_raises(data: bytes, cut: int, flip: int) -> None:
    blob = bytearray(gzip.compress(data, mtime=0))
    if blob:
        blob[flip % len(blob)] ^= 0x5A
    out, _ = run(["gzip", "deflate"], bytes(blob[:cut]), step=13,
                 limits=CodingLimits(max_output=32 << 10))
    assert len(out) <= max(len(blob), 32 << 10) + 64
