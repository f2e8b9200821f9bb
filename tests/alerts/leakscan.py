"""Never leak while reporting (issue 5, item 6): scan every output for protected content.

The end-to-end test replays captures that carry markers and protected files, then calls
:func:`assert_no_leak` over the output directory tree (EVE, audit log, incident database and
its WAL, report drafts, evidence manifests), the captured stdout/stderr, the metrics scrape and
the notifications received. A marker is searched in UTF-8, CP932, EUC-JP, UTF-16LE/BE, as JSON
``\\uXXXX`` escapes, and its UTF-8/CP932 bytes percent-encoded and in base64 (each alignment);
a protected file by windows of its bytes. Files sealed by the evidence
store (they start with the ``LMEV1`` magic and are AES-256-GCM ciphertext) are the only thing
skipped: a file is skipped for what it is, never for its name.
"""

from __future__ import annotations

import base64
import gzip
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from alerts.evidence import is_sealed

ENCODINGS = ("utf-8", "cp932", "euc-jp", "utf-16-le", "utf-16-be", "json-escape")
# Transfer forms of the UTF-8 and CP932 bytes that outputs could carry them in (a URL, a dump).
ESCAPED_FROM = ("utf-8", "cp932")
WINDOW = 32


@dataclass(frozen=True)
class Needle:
    label: str  # "marker[0]" / "file[1]" (never the content itself, so failures do not leak either)
    form: str  # encoding or "bytes@offset"
    data: bytes


@dataclass(frozen=True)
class Hit:
    where: str
    label: str
    form: str
    offset: int

    def __str__(self) -> str:
        return f"{self.where} @{self.offset}: {self.label} ({self.form})"


def _json_escape(text: str) -> bytes:
    return "".join(c if ord(c) < 128 else f"\\u{ord(c):04x}" for c in text).encode("ascii")


def _percent(b: bytes, upper: bool) -> bytes:
    return "".join(f"%{c:02X}" if upper else f"%{c:02x}" for c in b).encode("ascii")


def _base64_cores(b: bytes) -> list[bytes]:
    """The part of base64(b) that does not depend on the bytes around b, at each of the 3 alignments."""
    out = []
    for k in range(3):
        enc = base64.b64encode(b"\0" * k + b)
        start = 4 if k else 0
        end = (k + len(b)) // 3 * 4  # characters made only of b's bytes (and the prefix, before start)
        core = enc[start:end]
        if len(core) >= 8:
            out.append(core)
    return out


def needles(markers: Iterable[str] = (), files: Iterable[bytes] = ()) -> list[Needle]:
    out: list[Needle] = []
    for i, m in enumerate(markers):
        seen: set[bytes] = set()
        forms: list[tuple[str, bytes]] = []
        for enc in ENCODINGS:
            try:
                forms.append((enc, _json_escape(m) if enc == "json-escape" else m.encode(enc)))
            except UnicodeEncodeError:
                continue
        for enc in ESCAPED_FROM:
            try:
                b = m.encode(enc)
            except UnicodeEncodeError:
                continue
            if any(c >= 0x80 for c in b):  # pure ASCII needs no percent form of its own
                forms += [(f"percent-{enc}", _percent(b, True)), (f"percent-{enc}-lower", _percent(b, False))]
            forms += [(f"base64-{enc}", core) for core in _base64_cores(b)]
        for form, b in forms:
            if b not in seen:
                seen.add(b)
                out.append(Needle(f"marker[{i}]", form, b))
    for i, data in enumerate(files):
        if len(data) <= 3 * WINDOW:
            out.append(Needle(f"file[{i}]", "bytes@0", data))
            continue
        for frac in (0.25, 0.5, 0.75):
            off = int(len(data) * frac)
            out.append(Needle(f"file[{i}]", f"bytes@{off}", data[off:off + WINDOW]))
    return out


def scan_bytes(data: bytes, where: str, ns: list[Needle]) -> list[Hit]:
    hits = []
    for n in ns:
        pos = data.find(n.data)
        if pos >= 0:
            hits.append(Hit(where, n.label, n.form, pos))
    return hits


def scan_tree(root: str | os.PathLike[str], ns: list[Needle]) -> tuple[list[Hit], list[str], list[str]]:
    """(hits, files scanned, sealed files skipped) for every regular file under ``root``.

    gzip-compressed files (rotated logs) are scanned decompressed as well.
    """
    hits: list[Hit] = []
    scanned: list[str] = []
    skipped: list[str] = []
    for dirpath, _dirs, files in os.walk(root):
        for name in sorted(files):
            p = Path(dirpath, name)
            if not p.is_file() or p.is_symlink():
                continue
            data = p.read_bytes()
            rel = str(p.relative_to(root))
            if is_sealed(data[:8]):
                skipped.append(rel)
                continue
            scanned.append(rel)
            hits += scan_bytes(data, rel, ns)
            if data[:2] == b"\x1f\x8b":
                try:
                    hits += scan_bytes(gzip.decompress(data), rel + " (gunzipped)", ns)
                except (OSError, EOFError):
                    pass
    return hits, scanned, skipped


def assert_no_leak(*, markers: Iterable[str] = (), files: Iterable[bytes] = (), trees: Iterable[str | os.PathLike[str]] = (),
                   texts: dict[str, str | bytes] | None = None) -> dict[str, list[str]]:
    """Fail listing every place (file, offset, which marker/file, which encoding) where content leaked.

    ``texts`` holds captured stdout/stderr, the metrics scrape, notification bodies, by name.
    Returns what was scanned and skipped, so a test can also assert the scan covered its outputs.
    """
    ns = needles(markers, files)
    hits: list[Hit] = []
    scanned: list[str] = []
    skipped: list[str] = []
    for t in trees:
        h, s, k = scan_tree(t, ns)
        hits += h
        scanned += s
        skipped += k
    for name, text in (texts or {}).items():
        data = text.encode("utf-8") if isinstance(text, str) else text
        hits += scan_bytes(data, name, ns)
        scanned.append(name)
    if hits:
        raise AssertionError("protected content found in outputs:\n" + "\n".join(str(h) for h in hits))
    return {"scanned": scanned, "skipped": skipped}
