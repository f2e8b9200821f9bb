"""ZIP, gzip and tar: one container level, members as bytes, every size counted as it streams.

ZIP is read from its central directory (falling back to a scan of local headers when the
directory is missing). Declared sizes are never trusted: a member's compressed bytes run at most
to the next local header (or the directory), its output is counted while it is inflated, and
entries whose data overlaps another entry's (the overlapping-file bombs) are refused, so the
total input inflated never exceeds the archive itself. Methods: stored, deflate, bzip2; others
(deflate64, lzma, zstd, AES) are reported, not decoded.
"""

from __future__ import annotations

import io
import struct
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from monitor.content.budget import CHUNK, RATIO_FLOOR, Budget, CapHit, Malformed, account, inflate

_EOCD = b"PK\x05\x06"
_EOCD64 = b"PK\x06\x06"
_EOCD64_LOC = b"PK\x06\x07"
_CDH = b"PK\x01\x02"
_LFH = b"PK\x03\x04"

_METHODS = {0: "stored", 8: "deflate", 12: "bzip2"}

FLAG_ENCRYPTED = 0x0001
FLAG_UTF8 = 0x0800
METHOD_AES = 99


@dataclass
class ZipEntry:
    name: str
    method: int
    flags: int
    compress_size: int
    header_offset: int
    is_dir: bool

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & FLAG_ENCRYPTED) or self.method == METHOD_AES


def _name(raw: bytes, flags: int) -> str:
    if flags & FLAG_UTF8:
        return raw.decode("utf-8", "replace")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        # Japanese Windows zip tools write CP932 names without the UTF-8 flag.
        return raw.decode("cp932", "replace")


def _zip64_extra(extra: bytes, usize: int, csize: int, offset: int) -> tuple[int, int]:
    """(compress_size, header_offset) from a ZIP64 extended-information extra field."""
    pos = 0
    while pos + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4 : pos + 4 + size]
        pos += 4 + size
        if tag != 0x0001:
            continue
        vals = [v for (v,) in struct.iter_unpack("<Q", body[: len(body) // 8 * 8])]
        i = 0
        if usize == 0xFFFFFFFF and i < len(vals):
            i += 1
        if csize == 0xFFFFFFFF and i < len(vals):
            csize = vals[i]
            i += 1
        if offset == 0xFFFFFFFF and i < len(vals):
            offset = vals[i]
        break
    return csize, offset


def _central_directory(data: bytes, limit: int) -> tuple[list[ZipEntry], int] | None:
    """Entries and the directory's offset, or None when there is no usable directory."""
    eocd = data.rfind(_EOCD, max(0, len(data) - 65557))
    if eocd < 0 or eocd + 22 > len(data):
        return None
    count, cd_size, cd_offset = struct.unpack_from("<HII", data, eocd + 10)
    loc = eocd - 20
    if loc >= 0 and data[loc : loc + 4] == _EOCD64_LOC:
        (eocd64,) = struct.unpack_from("<Q", data, loc + 8)
        if eocd64 + 56 <= len(data) and data[eocd64 : eocd64 + 4] == _EOCD64:
            count, cd_size, cd_offset = struct.unpack_from("<QQQ", data, eocd64 + 32)
    # Archives with a prefix (self-extractors, or a capture that started late) shift all offsets.
    shift = 0
    if data[cd_offset : cd_offset + 4] != _CDH:
        guess = eocd - cd_size
        if guess < 0 or data[guess : guess + 4] != _CDH:
            return None
        shift = guess - cd_offset
        cd_offset = guess
    entries: list[ZipEntry] = []
    pos = cd_offset
    while pos + 46 <= len(data) and data[pos : pos + 4] == _CDH:
        (flags, method, csize, usize, nlen, xlen, clen, offset) = struct.unpack_from("<4xHH8xIIHHH8xI", data, pos + 4)
        raw_name = data[pos + 46 : pos + 46 + nlen]
        extra = data[pos + 46 + nlen : pos + 46 + nlen + xlen]
        if 0xFFFFFFFF in (csize, usize, offset):
            csize, offset = _zip64_extra(extra, usize, csize, offset)
        name = _name(raw_name, flags)
        entries.append(ZipEntry(name, method, flags, csize, offset + shift, name.endswith("/")))
        pos += 46 + nlen + xlen + clen
        if len(entries) > limit:  # the member cap is what the caller reports
            break
    return entries, cd_offset


def _scan_local_headers(data: bytes, limit: int) -> list[ZipEntry]:
    """Entries found by their local headers, for archives without a central directory."""
    entries = []
    pos = data.find(_LFH)
    while 0 <= pos and pos + 30 <= len(data):
        flags, method, csize, usize, nlen, xlen = struct.unpack_from("<HH8xIIHH", data, pos + 6)
        raw_name = data[pos + 30 : pos + 30 + nlen]
        if 0xFFFFFFFF in (csize, usize):
            csize, _ = _zip64_extra(data[pos + 30 + nlen : pos + 30 + nlen + xlen], usize, csize, 0)
        name = _name(raw_name, flags)
        entries.append(ZipEntry(name, method, flags, csize, pos, name.endswith("/")))
        pos = data.find(_LFH, pos + 30 + nlen)
        if len(entries) > limit:
            break
    return entries


@dataclass
class ZipMember:
    entry: ZipEntry
    start: int  # first byte of the compressed data
    end: int  # no byte at or after this belongs to the entry


def zip_members(data: bytes, limit: int = 1 << 20) -> tuple[list[ZipMember], int]:
    """Readable members in archive order, and the number of overlapping entries that were dropped.

    At most ``limit`` + 1 directory entries are parsed. Raises :class:`Malformed` when there is
    no ZIP structure at all.
    """
    found = _central_directory(data, limit)
    if found is None:
        entries, boundary = _scan_local_headers(data, limit), len(data)
        if not entries:
            raise Malformed("no zip directory or local headers")
    else:
        entries, boundary = found
    starts = sorted({e.header_offset for e in entries} | {boundary})
    members: list[ZipMember] = []
    overlapping = 0
    taken_until = -1
    for e in sorted(entries, key=lambda e: e.header_offset):
        h = e.header_offset
        if h < taken_until or data[h : h + 4] != _LFH or h + 30 > len(data):
            overlapping += int(h < taken_until)
            continue
        nlen, xlen = struct.unpack_from("<HH", data, h + 26)
        start = h + 30 + nlen + xlen
        nxt = next((s for s in starts if s > h), len(data))
        end = min(nxt, len(data))
        if e.method == 0:
            end = min(end, start + e.compress_size)
        if start > end:
            continue
        members.append(ZipMember(e, start, end))
        taken_until = end
    return members, overlapping


def read_zip_member(data: bytes, m: ZipMember, budget: Budget) -> Iterator[bytes]:
    """The member's bytes in chunks (counted against the budget)."""
    method = _METHODS.get(m.entry.method)
    if method is None:
        raise Malformed(f"unsupported zip method {m.entry.method}")
    view = memoryview(data)[m.start : m.end]
    if method == "stored":
        for i in range(0, len(view), 1 << 16):
            chunk = bytes(view[i : i + (1 << 16)])
            yield from account(budget, chunk)
        return
    yield from inflate(view, method, budget)


def read_all(chunks: Iterator[bytes]) -> tuple[bytes, CapHit | Malformed | None]:
    """Join chunks; a cap or corruption ends the read and is returned beside the partial data."""
    buf = bytearray()
    try:
        for c in chunks:
            buf += c
    except (CapHit, Malformed) as e:
        return bytes(buf), e
    return bytes(buf), None


# --- gzip -------------------------------------------------------------------------------------

_FEXTRA, _FNAME = 0x04, 0x08


def gzip_name(data: bytes) -> str | None:
    """The original file name stored in a gzip header (FNAME), if any."""
    if len(data) < 10 or not data[3] & _FNAME:
        return None
    pos = 10
    if data[3] & _FEXTRA:
        if pos + 2 > len(data):
            return None
        pos += 2 + int.from_bytes(data[pos : pos + 2], "little")
    end = data.find(b"\x00", pos, pos + 1024)
    if end < 0:
        return None
    return data[pos:end].decode("latin-1") or None


def gunzip(data: bytes, budget: Budget) -> Iterator[bytes]:
    """All members of a (possibly multi-member) gzip file, decompressed as one stream."""
    pos = 0
    view = memoryview(data)
    while pos < len(data) and data[pos : pos + 2] == b"\x1f\x8b":
        consumed = 0
        for chunk in _gzip_member(view[pos:], budget):
            if isinstance(chunk, int):
                consumed = chunk
            else:
                yield chunk
        if consumed <= 0:
            return
        pos += consumed


def _gzip_member(view: memoryview, budget: Budget) -> Iterator[bytes | int]:
    """Chunks of one gzip member, then the number of input bytes it used."""
    d = zlib.decompressobj(31)
    pos = 0
    produced = 0
    limit = max(RATIO_FLOOR, budget.limits.max_ratio * max(len(view), 1))
    while not d.eof:
        feed = d.unconsumed_tail or view[pos : pos + CHUNK]
        if not d.unconsumed_tail:
            pos += len(feed)
        if not feed:
            raise Malformed("truncated gzip stream")
        try:
            out = d.decompress(feed, CHUNK)
        except zlib.error as e:
            raise Malformed("corrupt gzip data") from e
        if out:
            produced += len(out)
            if produced > limit:
                raise budget.fail("ratio", f"gzip decompression ratio over {budget.limits.max_ratio}")
            yield from account(budget, out)
    yield pos - len(d.unused_data)


# --- tar --------------------------------------------------------------------------------------


def tar_members(data: bytes, budget: Budget) -> Iterator[tuple[str, bytes]]:
    """Regular files of a tar archive (ustar, pax, GNU, v7) as (name, bytes)."""
    try:
        tf = tarfile.open(fileobj=io.BytesIO(data), mode="r:")
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        raise Malformed("not a tar archive") from e
    while True:
        try:
            info = tf.next()
        except (tarfile.TarError, EOFError, OSError, ValueError, UnicodeError) as e:
            raise Malformed("corrupt tar header") from e
        if info is None:
            return
        budget.check_time()
        if not info.isreg():
            continue
        budget.take_member()
        start = info.offset_data
        body = data[start : start + max(info.size, 0)]
        budget.take_output(len(body))
        # tarfile keeps every header it has seen; the member cap bounds that list.
        yield info.name, body
        if len(body) < info.size:
            raise Malformed("tar member runs past the end of the archive")
