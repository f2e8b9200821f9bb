"""charset.guess as it was before its fast paths (commit 986e168), kept as the oracle for
tests/monitor/content/test_charset_fastpath.py. Do not optimise this file."""
from __future__ import annotations

import re

SAMPLE = 64 << 10

_ISO2022_ESC = re.compile(rb"\x1b(?:\$[@B]|\$\(D|\([BJI])")
_CONTROL = re.compile(rb"[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f]")
_EUC_KANA = re.compile(rb"[\xa4\xa5][\xa1-\xf6]")
_SJIS_KANA = re.compile(rb"\x82[\x9f-\xf1]|\x83[\x40-\x96]")


def _decodes(data: bytes, codec: str) -> bool:
    """Decodes cleanly, allowing a character cut off by the sample end."""
    for cut in range(4):
        try:
            (data[: len(data) - cut] if cut else data).decode(codec)
            return True
        except UnicodeDecodeError as e:
            if e.start < len(data) - 3:
                return False
    return False


def _utf16_without_bom(data: bytes) -> str | None:
    sample = data[: 4096 & ~1]
    if len(sample) < 4:
        return None
    even_nul = sample[0::2].count(0)
    odd_nul = sample[1::2].count(0)
    half = len(sample) // 2
    if odd_nul > 0.4 * half and even_nul < 0.05 * half:
        return "utf-16-le" if _decodes(sample, "utf-16-le") else None
    if even_nul > 0.4 * half and odd_nul < 0.05 * half:
        return "utf-16-be" if _decodes(sample, "utf-16-be") else None
    return None


_PLAUSIBLE = re.compile("[\t\n\r\x20-\x7e\u3000-\u30ff\u4e00-\u9fff\uff00-\uffef]")


def _utf16_plausible(data: bytes) -> str | None:
    sample = data[: 4096 & ~1]
    if len(sample) < 8 or sample.isascii() or _decodes(sample, "utf-8"):
        return None
    for codec in ("utf-16-le", "utf-16-be"):
        text = sample.decode(codec, "replace")
        if len(_PLAUSIBLE.findall(text)) >= 0.95 * len(text):
            return codec
    return None


_KANA = re.compile("[\u3040-\u30ff]")


def guess(data: bytes) -> str | None:
    """A codec name for ``data`` (see the module docstring), or None."""
    if not data:
        return None
    if data.startswith(b"\xef\xbb\xbf"):
        return "utf-8"
    if data.startswith(b"\xff\xfe"):
        return "utf-16-le"
    if data.startswith(b"\xfe\xff"):
        return "utf-16-be"
    sample = data[:SAMPLE]
    utf16 = _utf16_without_bom(sample)
    if utf16:
        return utf16
    control = _CONTROL.search(sample) is not None
    if sample.isascii():
        if control:
            return None
        if b"\x1b" in sample:
            return "iso-2022-jp" if _ISO2022_ESC.search(sample) else None
        return "ascii"
    if not control and _decodes(sample, "utf-8"):
        return "utf-8"
    utf16 = _utf16_plausible(sample)
    euc = not control and _decodes(sample, "euc-jp")
    sjis = not control and _decodes(sample, "cp932")
    if utf16 and (euc or sjis):
        # Shift_JIS kanji bytes are also valid UTF-16BE ideographs; real text has kana.
        legacy = "cp932" if sjis else "euc-jp"
        if len(_KANA.findall(sample.decode(utf16, "replace"))) <= len(_KANA.findall(sample.decode(legacy, "replace"))):
            utf16 = None
    if utf16:
        return utf16
    if euc and not sjis:
        return "euc-jp"
    if sjis and not euc:
        return "cp932"
    if not (euc or sjis):
        return None
    euc_score = len(_EUC_KANA.findall(sample))
    sjis_score = len(_SJIS_KANA.findall(sample))
    text = sample.decode("cp932", "ignore")
    halfwidth = sum(1 for ch in text if "\uff61" <= ch <= "\uff9f")
    return "cp932" if sjis_score > euc_score and halfwidth < max(1, len(text) // 4) else "euc-jp"
