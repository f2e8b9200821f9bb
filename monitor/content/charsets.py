"""Charset labels to Python codecs, and a decode that never fails.

Japanese mail uses four encodings, each with vendor variants that a strict codec rejects:

* ``Shift_JIS`` is, in practice, Microsoft's CP932 (NEC/IBM extensions such as ``①`` and
  ``㈱``); every Shift_JIS alias maps to ``cp932``.
* ``ISO-2022-JP`` written by Outlook is really CP50220/50221 (the same extensions, plus
  half-width katakana). When the strict codecs fail, :func:`decode` converts the JIS
  code points to Shift_JIS and decodes them as CP932.
* ``EUC-JP`` maps to ``euc_jp`` (``euc_jis_2004`` as a fallback).
* ``UTF-8``, and everything else Python knows under its label.

:func:`codec_name` resolves a label (``"Shift_JIS"``, ``"x-sjis"``, ``"utf-8*ja"`` from RFC
2231) to a codec name or None. :func:`decode` turns bytes into text with a label, falling back
to :func:`sniff` and finally to replacement characters; it never raises.
"""

from __future__ import annotations

import codecs
import re

# Labels whose Python codec is not the one real-world senders mean, or which Python lacks.
_ALIASES = {
    "shift_jis": "cp932", "shift-jis": "cp932", "sjis": "cp932", "x-sjis": "cp932", "s-jis": "cp932",
    "ms_kanji": "cp932", "csshiftjis": "cp932", "windows-31j": "cp932", "cswindows31j": "cp932",
    "ms932": "cp932", "cp932": "cp932", "x-ms-cp932": "cp932", "shift_jisx0213": "shift_jisx0213",
    "euc-jp": "euc_jp", "x-euc-jp": "euc_jp", "eucjp": "euc_jp", "eucjp-ms": "euc_jp", "euc-jp-ms": "euc_jp",
    "cseucpkdfmtjapanese": "euc_jp", "x-euc": "euc_jp",
    "iso-2022-jp": "iso2022_jp", "csiso2022jp": "iso2022_jp", "iso-2022-jp-ms": "iso2022_jp",
    "cp50220": "iso2022_jp", "cp50221": "iso2022_jp", "cp50222": "iso2022_jp", "jis": "iso2022_jp",
    "iso-2022-jp-2": "iso2022_jp_2", "iso-2022-jp-3": "iso2022_jp_3",
    "utf8": "utf-8", "x-unknown": "", "unknown-8bit": "", "x-user-defined": "",
    "us-ascii": "ascii", "ascii": "ascii", "ansi_x3.4-1968": "ascii",
    "ks_c_5601-1987": "cp949", "gb2312": "gbk",  # senders labelled GB2312 routinely send GBK
    "iso-8859-1": "cp1252",  # the WHATWG rule: latin-1 labels mean windows-1252
    "latin1": "cp1252", "latin-1": "cp1252",
}

# Fallback codecs for a failing strict decode, tried in order.
_FALLBACKS = {
    "iso2022_jp": ("iso2022_jp_2", "iso2022_jp_ext", "iso2022_jp_3"),
    "euc_jp": ("euc_jis_2004",),
    "cp932": ("shift_jisx0213",),
    "cp1252": ("latin-1",),
}

_NOT_CHARSETS = frozenset({"undefined", "mbcs", "oem", "raw_unicode_escape", "unicode_escape", "idna", "punycode",
                           "palmos"})
_LABEL_CHARS = re.compile(r"[^a-z0-9_.:\-]")


def codec_name(label: str | bytes | None) -> str | None:
    """The Python codec for a charset label, or None when unknown or empty."""
    if not label:
        return None
    if isinstance(label, bytes):
        label = label.decode("latin-1")
    name = label.strip().strip("\"'").lower()
    name = name.split("*", 1)[0]  # RFC 2231 "charset*language"
    if not name or len(name) > 40 or _LABEL_CHARS.search(name):
        return None
    if name in _ALIASES:
        return _ALIASES[name] or None
    try:
        info = codecs.lookup(name)
    except LookupError:
        return None
    # Only real text encodings (not "base64", "rot13", "undefined", ...).
    if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_CHARSETS:
        return None
    return info.name


def sniff(data: bytes) -> str:
    """A likely codec for unlabelled bytes (headers with raw 8-bit text, raw file names).

    ISO-2022-JP is recognised by its escape sequences; then UTF-8 if it decodes strictly; then
    EUC-JP or CP932 if one decodes strictly *and* reads as Japanese (kana, or runs of
    double-byte characters, and no half-width katakana, which is what Latin-1 accents turn
    into); otherwise CP1252 ("What\x92s" is an apostrophe, not the kanji 痴).
    """
    if not data or max(data) < 0x80:
        return "iso2022_jp" if b"\x1b$" in data or b"\x1b(" in data else "ascii"
    try:
        data.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        pass
    for name in ("euc_jp", "cp932"):
        try:
            text = data.decode(name)
        except UnicodeDecodeError:
            continue
        if _reads_japanese(text):
            return name
    return "cp1252"


_KANA = re.compile("[\u3041-\u30ff]")
_HALFWIDTH_KANA = re.compile("[\uff61-\uff9f]")
_WIDE_RUN = re.compile("[\u3000-\u9fff\uff01-\uff5e]{2}")


def _reads_japanese(text: str) -> bool:
    if _HALFWIDTH_KANA.search(text):
        return False
    return bool(_KANA.search(text) or _WIDE_RUN.search(text))


def decode(data: bytes, label: str | bytes | None = None) -> str:
    """Text from bytes in a labelled (or unlabelled) charset. Never raises.

    Order: the label's codec strictly, its known fallbacks, the JIS->CP932 conversion for
    ISO-2022-JP, then a sniffed codec, then the label's codec (or UTF-8) with U+FFFD.
    """
    name = codec_name(label)
    if name is not None:
        for candidate in (name, *_FALLBACKS.get(name, ())):
            try:
                return data.decode(candidate)
            except (UnicodeError, LookupError):
                continue
        if name.startswith("iso2022_jp"):
            return jis_to_cp932(data).decode("cp932", errors="replace")
    sniffed = sniff(data)
    if sniffed != name:
        if sniffed == "iso2022_jp":
            return decode(data, "iso-2022-jp")
        try:
            return data.decode(sniffed)
        except UnicodeDecodeError:
            pass
    try:
        return data.decode(name or "utf-8", errors="replace")
    except (UnicodeError, LookupError):
        return data.decode("utf-8", errors="replace")


# ISO-2022-JP designations (ESC + final bytes) and what follows them.
_ESC_SEQ = re.compile(rb"\x1b(\(B|\(J|\(I|\$@|\$B|\$\(D|\$\(Q|\$\(O|&@\x1b\$B)")
_MODE_ASCII, _MODE_KANA, _MODE_JIS = 0, 1, 2
_MODES = {
    b"(B": _MODE_ASCII, b"(J": _MODE_ASCII, b"(I": _MODE_KANA, b"$@": _MODE_JIS, b"$B": _MODE_JIS,
    b"$(D": _MODE_JIS, b"$(Q": _MODE_JIS, b"$(O": _MODE_JIS, b"&@\x1b$B": _MODE_JIS,
}


def jis_to_cp932(data: bytes) -> bytes:
    """ISO-2022-JP (including CP5022x extensions) re-encoded as Shift_JIS/CP932 bytes.

    JIS X 0208 rows map to Shift_JIS arithmetically, and CP932 decodes the NEC rows Outlook
    writes. Only used when the strict codecs fail, so a Python loop per character is fine.
    """
    out = bytearray()
    mode = _MODE_ASCII
    pos = 0
    for m in _ESC_SEQ.finditer(data):
        _append_segment(out, data[pos : m.start()], mode)
        mode = _MODES[m.group(1)]
        pos = m.end()
    _append_segment(out, data[pos:], mode)
    return bytes(out)


def _append_segment(out: bytearray, seg: bytes, mode: int) -> None:
    if mode == _MODE_ASCII:
        out += seg
    elif mode == _MODE_KANA:
        out += bytes((b | 0x80) if 0x21 <= b <= 0x5F else b for b in seg)
    else:
        i = 0
        n = len(seg)
        while i + 1 < n:
            j1, j2 = seg[i], seg[i + 1]
            if not (0x21 <= j1 <= 0x7E and 0x21 <= j2 <= 0x7E):
                out.append(j1)  # a stray byte (CR/LF inside a JIS run): keep and resync
                i += 1
                continue
            s1 = ((j1 + 1) >> 1) + (0x70 if j1 <= 0x5E else 0xB0)
            s2 = j2 + (0x1F if j2 <= 0x5F else 0x20) if j1 & 1 else j2 + 0x7E
            out += bytes((s1, s2))
            i += 2
        if i < n:
            out += seg[i:]
