"""Legacy OLE2 (Compound File) Office documents, read with olefile.

Covered:
* Word 97-2003 ``.doc``: the whole text (body, footnotes, headers, comments, text boxes) from the
  piece table in the table stream (CLX), each piece CP1252 ("compressed") or UTF-16LE; when the
  piece table is unusable, UTF-16LE runs of the WordDocument stream. ``fEncrypted`` -> encrypted.
* Excel 97-2003 ``.xls`` (BIFF8): the shared string table (SST, across CONTINUE records, with rich
  text and phonetic blocks skipped) and formula string results (STRING). FILEPASS -> encrypted.
* PowerPoint 97-2003 ``.ppt``: TextCharsAtom, TextBytesAtom and CString records.
* Encrypted OOXML (an OLE2 file with EncryptionInfo and EncryptedPackage streams) -> encrypted.
Not covered: Word 6/95, BIFF5 and earlier, embedded OLE objects inside these files.
"""

from __future__ import annotations

import io
import re
import struct
from collections.abc import Iterator

import olefile

from monitor.content.budget import Budget, Malformed
from monitor.content.items import Item, Notice, Text

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"

_WORD_IDENT = 0xA5EC
_F_ENCRYPTED = 0x0100
_F_WHICH_TABLE = 0x0200
_FC_CLX = 0x01A2

_BIFF_FILEPASS = 0x002F
_BIFF_SST = 0x00FC
_BIFF_CONTINUE = 0x003C
_BIFF_STRING = 0x0207

_PPT_TEXT_CHARS = 0x0FA0
_PPT_TEXT_BYTES = 0x0FA8
_PPT_CSTRING = 0x0FBA

# Word's in-text control characters: paragraph/cell marks become breaks, field and object marks go.
_WORD_CONTROLS = str.maketrans({"\r": "\n", "\x07": "\t", "\x0b": "\n", "\x0c": "\n", "\x1e": "-",
                                "\x1f": "", "\x01": "", "\x08": "", "\x13": "", "\x14": "", "\x15": "",
                                "\x02": "", "\x05": ""})


def ole_items(data: bytes, budget: Budget) -> Iterator[Item]:
    try:
        ole = olefile.OleFileIO(io.BytesIO(data))
    except Exception as e:  # noqa: BLE001 - olefile raises many types on bad input
        raise Malformed("unreadable OLE2 container") from e
    with ole:
        streams = {"/".join(p) for p in ole.listdir(streams=True, storages=False)}

        def read(name: str) -> bytes:
            with ole.openstream(name) as f:  # bounded by the file itself: OLE2 does not compress
                out: bytes = f.read()
            budget.take_output(len(out))
            return out

        if "EncryptionInfo" in streams and "EncryptedPackage" in streams:
            budget.stats.incr("content.encrypted", format="ooxml")
            yield Notice("encrypted", "encrypted OOXML package (OLE2 EncryptionInfo/EncryptedPackage)")
            return
        if "WordDocument" in streams:
            budget.stats.incr("content.decoded", format="doc")
            yield from _word(read, streams, budget)
        elif "Workbook" in streams or "Book" in streams:
            budget.stats.incr("content.decoded", format="xls")
            yield from _excel(read("Workbook" if "Workbook" in streams else "Book"), budget)
        elif "PowerPoint Document" in streams:
            budget.stats.incr("content.decoded", format="ppt")
            yield from _powerpoint(read("PowerPoint Document"), budget)
        else:
            budget.stats.incr("content.decoded", format="ole")


def _emit(text: str, where: str, budget: Budget) -> Iterator[Item]:
    text, clipped = budget.clip_text(text)
    if text.strip():
        yield Text(text, where)
    if clipped:
        yield Notice("truncated", "text cap reached")


# --- Word --------------------------------------------------------------------------------------


def _word(read, streams: set[str], budget: Budget) -> Iterator[Item]:  # type: ignore[no-untyped-def]
    wd = read("WordDocument")
    if len(wd) < _FC_CLX + 8:
        raise Malformed("short Word FIB")
    ident, flags = struct.unpack_from("<H8xH", wd, 0)
    if ident != _WORD_IDENT:
        raise Malformed("not a Word 97+ document")
    if flags & _F_ENCRYPTED:
        budget.stats.incr("content.encrypted", format="doc")
        yield Notice("encrypted", "encrypted Word document")
        return
    table_name = "1Table" if flags & _F_WHICH_TABLE else "0Table"
    text = None
    if table_name in streams:
        fc_clx, lcb_clx = struct.unpack_from("<II", wd, _FC_CLX)
        text = _pieces(wd, read(table_name)[fc_clx : fc_clx + lcb_clx], budget)
    if text is None:
        budget.stats.incr("content.malformed", format="doc")
        text = _utf16_runs(wd)
    yield from _emit(text.translate(_WORD_CONTROLS), "ole:WordDocument", budget)


def _pieces(wd: bytes, clx: bytes, budget: Budget) -> str | None:
    """Text through the piece table, or None when the CLX does not parse."""
    pos = 0
    while pos < len(clx) and clx[pos] == 0x01:  # Prc: property modifiers, skipped
        if pos + 3 > len(clx):
            return None
        pos += 3 + struct.unpack_from("<H", clx, pos + 1)[0]
    if pos + 5 > len(clx) or clx[pos] != 0x02:
        return None
    (lcb,) = struct.unpack_from("<I", clx, pos + 1)
    plc = clx[pos + 5 : pos + 5 + lcb]
    n = (len(plc) - 4) // 12
    if n <= 0:
        return None
    cps = struct.unpack_from(f"<{n + 1}I", plc, 0)
    parts: list[str] = []
    size = 0
    for i in range(n):
        (fc_raw,) = struct.unpack_from("<I", plc, 4 * (n + 1) + 8 * i + 2)
        count = max(0, cps[i + 1] - cps[i])
        if count > len(wd) or size > budget.limits.max_text:
            break
        if fc_raw & 0x40000000:
            start = (fc_raw & 0x3FFFFFFF) // 2
            parts.append(wd[start : start + count].decode("cp1252", "replace"))
        else:
            start = fc_raw & 0x3FFFFFFF
            parts.append(wd[start : start + 2 * count].decode("utf-16-le", "replace"))
        size += count
    return "".join(parts)


_UTF16_RUN = re.compile(rb"(?:[\x20-\x7e\r\n\t]\x00|[\x00-\xff][\x30-\x9f\xff]){4,}")


def _utf16_runs(data: bytes) -> str:
    return "\n".join(m.group().decode("utf-16-le", "replace") for m in _UTF16_RUN.finditer(data))


# --- Excel -------------------------------------------------------------------------------------


class _Segments:
    """Reads across an SST record and its CONTINUE records; a string's characters that cross a
    record boundary restart with a fresh option byte (high-byte flag)."""

    def __init__(self, parts: list[bytes]) -> None:
        self.parts = parts
        self.i = 0
        self.pos = 0

    def _room(self) -> int:
        while self.i < len(self.parts) and self.pos >= len(self.parts[self.i]):
            self.i += 1
            self.pos = 0
        return len(self.parts[self.i]) - self.pos if self.i < len(self.parts) else 0

    def read(self, n: int) -> bytes:
        out = bytearray()
        while n > 0 and self._room():
            take = min(n, self._room())
            out += self.parts[self.i][self.pos : self.pos + take]
            self.pos += take
            n -= take
        if n:
            raise Malformed("SST runs past its records")
        return bytes(out)

    def chars(self, cch: int, high: bool) -> str:
        out = []
        while cch > 0:
            room = self._room()
            if not room:
                raise Malformed("SST string runs past its records")
            width = 2 if high else 1
            take = min(cch, room // width) if room >= width else 0
            if take == 0:
                raise Malformed("SST string split inside a character")
            raw = self.read(take * width)
            out.append(raw.decode("utf-16-le" if high else "latin-1", "replace"))
            cch -= take
            if cch and self.pos >= len(self.parts[self.i]):
                self.i += 1
                self.pos = 0
                if self.i >= len(self.parts):
                    raise Malformed("SST string runs past its records")
                high = bool(self.read(1)[0] & 0x01)
        return "".join(out)


def _biff_records(wb: bytes) -> Iterator[tuple[int, bytes]]:
    pos = 0
    while pos + 4 <= len(wb):
        rtype, length = struct.unpack_from("<HH", wb, pos)
        yield rtype, wb[pos + 4 : pos + 4 + length]
        pos += 4 + length


def _excel(wb: bytes, budget: Budget) -> Iterator[Item]:
    records = list(_biff_records(wb))
    strings: list[str] = []
    size = 0
    for i, (rtype, body) in enumerate(records):
        if rtype == _BIFF_FILEPASS:
            budget.stats.incr("content.encrypted", format="xls")
            yield Notice("encrypted", "encrypted Excel workbook")
            return
        if rtype == _BIFF_SST:
            parts = [body]
            for rt, b in records[i + 1 :]:
                if rt != _BIFF_CONTINUE:
                    break
                parts.append(b)
            try:
                for s in _sst(parts, budget):
                    strings.append(s)
                    size += len(s)
                    if size > budget.limits.max_text:
                        break
            except Malformed:
                budget.stats.incr("content.malformed", format="xls")
                yield Notice("malformed", "xls: shared string table cut short")
        elif rtype == _BIFF_STRING and len(body) >= 3:
            cch, opts = struct.unpack_from("<HB", body, 0)
            raw = body[3 : 3 + cch * (2 if opts & 1 else 1)]
            strings.append(raw.decode("utf-16-le" if opts & 1 else "latin-1", "replace"))
    yield from _emit("\n".join(strings), "ole:Workbook", budget)


def _sst(parts: list[bytes], budget: Budget) -> Iterator[str]:
    seg = _Segments(parts)
    _total, unique = struct.unpack("<II", seg.read(8))
    for n in range(unique):
        if n & 0x3FF == 0:
            budget.check_time()
        cch, opts = struct.unpack("<HB", seg.read(3))
        runs = struct.unpack("<H", seg.read(2))[0] if opts & 0x08 else 0
        ext = struct.unpack("<I", seg.read(4))[0] if opts & 0x04 else 0
        yield seg.chars(cch, bool(opts & 0x01))
        seg.read(4 * runs)
        seg.read(ext)


# --- PowerPoint --------------------------------------------------------------------------------


def _powerpoint(doc: bytes, budget: Budget) -> Iterator[Item]:
    parts: list[str] = []
    size = 0
    pos = 0
    while pos + 8 <= len(doc) and size <= budget.limits.max_text:
        ver_inst, rtype, length = struct.unpack_from("<HHI", doc, pos)
        if ver_inst & 0x000F == 0x000F:  # container: its children follow its header
            pos += 8
            continue
        body = doc[pos + 8 : pos + 8 + length]
        if rtype in (_PPT_TEXT_CHARS, _PPT_CSTRING):
            parts.append(body.decode("utf-16-le", "replace"))
        elif rtype == _PPT_TEXT_BYTES:
            parts.append(body.decode("latin-1"))
        else:
            pos += 8 + length
            continue
        size += len(parts[-1])
        pos += 8 + length
    yield from _emit("\n".join(p.replace("\r", "\n") for p in parts), "ole:PowerPoint Document", budget)
