"""textnorm.normalize: the one normal form partial fingerprints are built on."""

from __future__ import annotations

from monitor.content.textnorm import normalize


def test_nfkc_casefold_punctuation_whitespace():
    assert normalize("「保護すべき\n 情報」を含む。") == "保護すべき情報を含む"
    assert normalize("ＡＢＣ－１２３  Hello,\tWorld!") == "abc123 hello world"
    assert normalize("ｶﾀｶﾅ・ﾃｷｽﾄ") == "カタカナテキスト"
    assert normalize("①　㈱防衛") == "1株防衛"  # ㈱ -> (株), parentheses are punctuation


def test_pdf_line_break_inside_a_sentence_does_not_matter():
    assert normalize("本文書は保護すべき情\n報を含む。") == normalize("本文書は保護すべき情報を含む。")
    assert normalize("Plain ASCII\nline 42.") == "plain ascii line 42"


def test_symbols_and_digits_are_kept():
    assert normalize("価格 ￥1,000 ＋ 税 ©") == "価格¥1000 +税©"
