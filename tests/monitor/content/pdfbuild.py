"""A tiny PDF writer for tests: numbered objects, optional FlateDecode streams, a trailer."""

from __future__ import annotations

import zlib


def stream(dict_body: bytes, data: bytes, flate: bool = True) -> bytes:
    if flate:
        data = zlib.compress(data)
        dict_body += b" /Filter /FlateDecode"
    return b"<< " + dict_body + b" /Length %d >>\nstream\n" % len(data) + data + b"\nendstream"


def pdf(objects: dict[int, bytes], root: int = 1, trailer_extra: bytes = b"") -> bytes:
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    for num in sorted(objects):
        offsets[num] = len(out)
        out += b"%d 0 obj\n" % num + objects[num] + b"\nendobj\n"
    xref = len(out)
    size = max(objects) + 1
    out += b"xref\n0 %d\n0000000000 65535 f \n" % size
    for num in range(1, size):
        out += b"%010d 00000 n \n" % offsets.get(num, 0)
    out += b"trailer\n<< /Size %d /Root %d 0 R %s>>\nstartxref\n%d\n%%%%EOF\n" % (size, root, trailer_extra, xref)
    return bytes(out)


def one_page(content: bytes, fonts: bytes = b"", extra: dict[int, bytes] | None = None,
             resources_extra: bytes = b"") -> bytes:
    """Catalog 1, Pages 2, Page 3, Contents 4; fonts/extra objects from 5 on."""
    objects = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        3: b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
           b"/Resources << /Font << " + fonts + b" >> " + resources_extra + b" >> >>",
        4: stream(b"", content),
    }
    objects.update(extra or {})
    return pdf(objects)
