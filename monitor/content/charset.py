"""Which charset a byte buffer is in, for Japanese text sent without a (correct) label.

``guess(data)`` returns a Python codec name or None (binary, or not text in a known charset):

1. a byte-order mark: ``utf-8`` (BOM), ``utf-16-le``, ``utf-16-be``;
2. UTF-16 without a BOM: NUL bytes in one column (odd or even) of ASCII-range text, or (for
   data that is neither ASCII nor UTF-8) 95 % of the code units being plausible Japanese text
   (ASCII, kana, CJK ideographs and punctuation, full-width forms);
3. ``iso-2022-jp``: 7-bit data with ESC ``$B``/``$@``/``(J``/``(B`` designations;
4. ``ascii``: 7-bit printable text; ``utf-8``: valid UTF-8 with multibyte sequences;
5. ``euc-jp`` vs ``cp932`` (Shift_JIS): whichever decodes; when both do, byte statistics decide:
   EUC-JP kana lead bytes 0xA4/0xA5 against Shift_JIS kana lead bytes 0x82/0x83, and half-width
   katakana (which Shift_JIS decoding of EUC-JP text produces in bulk) count against CP932.

Only the first :data:`SAMPLE` bytes are looked at; a multibyte character cut at the sample end is
tolerated. Control bytes other than tab/CR/LF/FF/ESC mean "not text".

``decode(data)`` is ``guess`` plus the decoding of all of ``data``, sharing the UTF-8 decoding the
guess needs anyway.
"""

from __future__ import annotations

import re

SAMPLE = 64 << 10

_ISO2022_ESC = re.compile(rb"\x1b(?:\$[@B]|\$\(D|\([BJI])")
# NUL first: binary data usually has one early, so the memchr scan below ends at once.
_CONTROL_BYTES = (0, *range(1, 9), *range(0x0E, 0x1B), *range(0x1C, 0x20), 0x7F)
# Every byte value but those: bytes.translate deletes them and leaves only the control bytes.
_NOT_CONTROL = bytes(sorted(set(range(256)).difference(_CONTROL_BYTES)))
# Up to this sample size one translate pass beats 28 memchr calls (each has a fixed cost).
_TRANSLATE_MAX = 2048
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
    if len(sample) < 4 or 0 not in sample:  # no NUL at all: neither column test below can pass
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


def _has_control(sample: bytes) -> bool:
    """A byte of ``[\\x00-\\x08\\x0e-\\x1a\\x1c-\\x1f\\x7f]`` in ``sample``.

    Short samples (most bodies): one ``translate`` pass that deletes every other byte value.
    Longer ones: one memchr per byte value (an int operand: no buffer protocol per call), ten
    times cheaper than a regex character class over 64 KiB and about twice a translate pass.
    """
    if len(sample) <= _TRANSLATE_MAX:
        return bool(sample.translate(None, _NOT_CONTROL))
    return any(map(sample.__contains__, _CONTROL_BYTES))


# High bytes of the code units _PLAUSIBLE accepts: U+0009..U+007E, U+3000..U+30FF,
# U+4E00..U+9FFF, U+FF00..U+FFEF.
_PLAUSIBLE_HIGH = bytes([0x00, 0x30, *range(0x4E, 0xA0), 0xFF])


def _may_be_plausible(high: bytes) -> bool:
    """False when the 95 % test of :func:`_utf16_plausible` must fail, judged from the units'
    high bytes alone (one C-level pass instead of two decodings and a regex over the text).

    With U units of which A have a plausible high byte: plausible characters <= A, and the
    decoded text has at least (U + A) / 2 characters (only units outside those high bytes can
    pair up into one astral character; lone surrogates become one U+FFFD each), so passing
    needs A >= 0.95 * (U + A) / 2, i.e. A >= 0.9048 U. Rejecting below 0.9 U is safe.
    """
    units = len(high)
    plausible = units - len(high.translate(None, _PLAUSIBLE_HIGH))
    return 10 * plausible >= 9 * units


def _utf16_plausible(data: bytes) -> str | None:
    sample = data[: 4096 & ~1]
    if len(sample) < 8 or sample.isascii() or _decodes(sample, "utf-8"):
        return None
    units = len(sample) // 2
    for codec in ("utf-16-le", "utf-16-be"):
        high = sample[1 : 2 * units : 2] if codec == "utf-16-le" else sample[0 : 2 * units : 2]
        if not _may_be_plausible(high):
            continue
        text = sample.decode(codec, "replace")
        if len(_PLAUSIBLE.findall(text)) >= 0.95 * len(text):
            return codec
    return None


_KANA = re.compile("[\u3040-\u30ff]")
_HALFWIDTH_KATAKANA = re.compile("[\uff61-\uff9f]")


def guess(data: bytes) -> str | None:
    """A codec name for ``data`` (see the module docstring), or None."""
    return _guess(data, False)[0]


def decode(data: bytes) -> tuple[str, str, bytes | None] | None:
    """(codec, text, utf8): ``guess(data)`` and all of ``data`` decoded with it ("replace"), or
    None. ``utf8`` is ``data`` itself when it is exactly ``text`` in UTF-8 (strict UTF-8 or
    ASCII data), so a caller that needs UTF-8 bytes need not encode ``text`` again."""
    codec, text = _guess(data, True)
    if codec is None:
        return None
    if text is not None:
        return codec, text, data
    if codec == "ascii" and data.isascii():
        return codec, data.decode("ascii"), data
    return codec, data.decode(codec, "replace"), None


def _guess(data: bytes, want_text: bool) -> tuple[str | None, str | None]:
    """The codec, and with ``want_text`` the strict UTF-8 decoding of all of ``data`` when the
    UTF-8 test below had it for free (else None: the caller decodes)."""
    if not data:
        return None, None
    if data.startswith(_BOMS):
        return _codec_of_bom(data), None
    sample = data[:SAMPLE]
    utf16 = _utf16_without_bom(sample)
    if utf16:
        return utf16, None
    control = _has_control(sample)
    if sample.isascii():
        if control:
            return None, None
        if b"\x1b" in sample:
            return ("iso-2022-jp" if _ISO2022_ESC.search(sample) else None), None
        return "ascii", None
    if not control:
        if want_text:
            # All of data decoding strictly implies its sample does (a character cut at the
            # sample end is tolerated), so this answers the test and decodes the text at once.
            try:
                return "utf-8", data.decode("utf-8")
            except UnicodeDecodeError:
                pass
        if _decodes(sample, "utf-8"):
            return "utf-8", None
    return _legacy(sample, control), None


_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")


def _codec_of_bom(data: bytes) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        return "utf-8"
    return "utf-16-le" if data.startswith(b"\xff\xfe") else "utf-16-be"


def _legacy(sample: bytes, control: bool) -> str | None:
    """UTF-16 judged by its characters, EUC-JP or Shift_JIS, for non-ASCII data that is not
    UTF-8 (see the module docstring)."""
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
    halfwidth = len(_HALFWIDTH_KATAKANA.findall(text))
    return "cp932" if sjis_score > euc_score and halfwidth < max(1, len(text) // 4) else "euc-jp"
