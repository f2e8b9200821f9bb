"""charset.guess on Japanese text in every encoding people send it in, without labels."""

from __future__ import annotations

import os

import pytest

from monitor.content.charset import guess

TEXT = "本文書は保護すべき情報を含む。取扱いには注意すること。ｶﾀｶﾅも少し。"


@pytest.mark.parametrize("codec", ["utf-8", "euc-jp", "cp932", "iso-2022-jp", "utf-16-le", "utf-16-be"])
def test_japanese_without_bom(codec):
    data = TEXT.replace("ｶﾀｶﾅ", "カタカナ").encode(codec) if codec == "iso-2022-jp" else TEXT.encode(codec)
    assert guess(data) == codec


@pytest.mark.parametrize("bom,codec", [(b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"),
                                       (b"\xfe\xff", "utf-16-be")])
def test_bom_wins(bom, codec):
    assert guess(bom + TEXT.encode(codec)) == codec


def test_utf16_ascii_by_nul_column_and_plain_ascii():
    assert guess("plain report text\r\n".encode("utf-16-le")) == "utf-16-le"
    assert guess("plain report text\r\n".encode("utf-16-be")) == "utf-16-be"
    assert guess(b"plain report text\r\n") == "ascii"


def test_multibyte_character_cut_at_the_end_is_tolerated():
    for codec in ("utf-8", "euc-jp", "cp932"):
        assert guess(TEXT.encode(codec)[:-1]) == codec


def test_binary_is_not_text():
    assert guess(os.urandom(4096)) is None
    assert guess(b"\x00\x01\x02\x03binary") is None
    assert guess(b"") is None
    assert guess(b"\x1b[31mterminal colours\x1b[0m") is None  # ESC but no ISO-2022-JP designation
