"""Detected file type from magic bytes (first bytes of a file)."""

from __future__ import annotations

_MAGIC: list[tuple[bytes, int, str]] = [
    (b"%PDF-", 0, "application/pdf"),
    (b"PK\x03\x04", 0, "application/zip"),
    (b"PK\x05\x06", 0, "application/zip"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", 0, "application/x-ole-storage"),
    (b"\x1f\x8b", 0, "application/gzip"),
    (b"BZh", 0, "application/x-bzip2"),
    (b"\xfd7zXZ\x00", 0, "application/x-xz"),
    (b"7z\xbc\xaf\x27\x1c", 0, "application/x-7z-compressed"),
    (b"Rar!\x1a\x07", 0, "application/vnd.rar"),
    (b"ustar", 257, "application/x-tar"),
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"GIF87a", 0, "image/gif"),
    (b"GIF89a", 0, "image/gif"),
    (b"MZ", 0, "application/x-dosexec"),
    (b"\x7fELF", 0, "application/x-executable"),
    (b"{\\rtf", 0, "text/rtf"),
    (b"\xef\xbb\xbf", 0, "text/plain"),
    (b"\xff\xfe", 0, "text/plain; charset=utf-16le"),
    (b"\xfe\xff", 0, "text/plain; charset=utf-16be"),
]

HEAD_BYTES = 512

# The magic numbers at offset 0, for one startswith() that tells whether the table can match at
# all (most heads match nothing); when it may, the table is walked in order as before.
_AT_START = tuple(magic for magic, offset, _ in _MAGIC if offset == 0)
_AT_OFFSET = [(magic, offset) for magic, offset, _ in _MAGIC if offset]
# Bytes that are not plain text: ASCII controls other than tab, LF and CR. translate() deletes
# every other byte value, so what is left is the controls.
_BINARY_CONTROLS = bytes(b for b in range(0x20) if b not in (9, 10, 13))
_NOT_BINARY = bytes(sorted(set(range(256)).difference(_BINARY_CONTROLS)))


def _may_have_magic(head: bytes) -> bool:
    if head.startswith(_AT_START):
        return True
    for magic, offset in _AT_OFFSET:
        if head[offset : offset + len(magic)] == magic:
            return True
    return False


def detect_type(head: bytes) -> str | None:
    """MIME type guessed from the first bytes, or None when unknown."""
    if _may_have_magic(head):
        for magic, offset, mime in _MAGIC:
            if head[offset : offset + len(magic)] == magic:
                return mime
    stripped = head.lstrip()[:64].lower()
    if stripped.startswith((b"<!doctype html", b"<html")):
        return "text/html"
    if stripped.startswith(b"<?xml"):
        return "application/xml"
    if stripped.startswith((b"{", b"[")):
        return "application/json"
    if head and not head[:256].translate(None, _NOT_BINARY):
        return "text/plain"
    return None
