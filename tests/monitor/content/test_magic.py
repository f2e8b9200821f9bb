"""magic.detect_type with its fast paths (one startswith before the magic table, one translate
pass for the plain-text test) against the table walk and per-byte test it replaced."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.content import magic
from monitor.content.magic import HEAD_BYTES, detect_type


def reference_detect_type(head: bytes) -> str | None:
    """detect_type as it was: the whole table in order, then a Python loop over the bytes."""
    for sig, offset, mime in magic._MAGIC:  # noqa: SLF001
        if head[offset : offset + len(sig)] == sig:
            return mime
    stripped = head.lstrip()[:64].lower()
    if stripped.startswith((b"<!doctype html", b"<html")):
        return "text/html"
    if stripped.startswith(b"<?xml"):
        return "application/xml"
    if stripped.startswith((b"{", b"[")):
        return "application/json"
    if head and all(b >= 0x20 or b in (9, 10, 13) for b in head[:256] if b < 0x80):
        return "text/plain"
    return None


SIGNATURES = [sig for sig, _, _ in magic._MAGIC] + [b"<html>", b"<?xml ", b"{", b"[", b" \r\n<!DOCTYPE HTML"]  # noqa: SLF001
TEXTISH = st.binary(max_size=HEAD_BYTES).map(lambda b: bytes(c if c >= 0x20 or c in (9, 10, 13) else 0x41 for c in b))
SETTINGS = settings(max_examples=1500, deadline=None, derandomize=True)


@SETTINGS
@given(st.binary(max_size=HEAD_BYTES))
def test_random_heads(head):
    assert detect_type(head) == reference_detect_type(head)


@SETTINGS
@given(st.sampled_from(SIGNATURES), st.integers(0, 300), TEXTISH, st.booleans(), st.integers(0, 0x7F))
def test_heads_with_a_signature_somewhere_and_textual_or_control_bytes(sig, pos, filler, tar, odd):
    head = (filler[:pos] + sig + filler[pos:])[:HEAD_BYTES]
    if tar:  # "ustar" at 257 wins over every magic listed after it (PNG, JPEG, MZ ...) and loses to those before
        head = head.ljust(262, b" ")[:257] + b"ustar" + head[262:]
    assert detect_type(head) == reference_detect_type(head)
    with_odd = head[:pos] + bytes([odd]) + head[pos + 1 :]
    assert detect_type(with_odd) == reference_detect_type(with_odd)


def test_known_answers():
    assert detect_type(b"%PDF-1.7\n") == "application/pdf"
    assert detect_type(b"\x89PNG\r\n\x1a\n" + b"\x00" * 249 + b"ustar") == "application/x-tar"
    assert detect_type(b"%PDF-" + b"\x00" * 252 + b"ustar") == "application/pdf"
    assert detect_type(b"hello") == "text/plain"
    assert detect_type("日本語\t\r\n".encode()) == "text/plain"
    assert detect_type(b"hello\x7f") == "text/plain"  # DEL is not a control byte to this test
    assert detect_type(b"hello\x0b") is None
    assert detect_type(b"a" * 256 + b"\x00") == "text/plain"  # only the first 256 bytes are looked at
    assert detect_type(b"") is None
