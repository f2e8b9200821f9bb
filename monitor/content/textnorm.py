"""One normal form of text for partial-document fingerprints.

``normalize(text)`` is deterministic and depends only on the Unicode database of the running
Python (NFKC data), so the index and the sensor must run the same Python minor version. Steps:

1. NFKC: full-width ASCII and half-width katakana fold to their usual forms (ＡＢＣ -> ABC,
   ｶﾀｶﾅ -> カタカナ), compatibility characters (①, ㈱) expand;
2. case folding (``casefold``) for Latin, Greek, Cyrillic;
3. every punctuation character (Unicode category P*: 、。「」・（） -- etc.) is removed;
4. whitespace runs become one space, and whitespace next to a CJK character (kana, kanji,
   ideographic symbols, full-width forms) is removed -- Japanese has no word spaces, so a
   layout line break inside a sentence must not split it; leading/trailing space is dropped.

Symbols (category S*: ＋, ￥, ©) and digits are kept: they are content in specifications.
"""

from __future__ import annotations

import re
import sys
import unicodedata

_WS = re.compile(r"\s+")
# Kana, CJK ideographs and symbols, Hangul, full-width forms: scripts written without spaces.
_CJK = "\u3000-\u30ff\u3100-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef"
_SPACE_NEAR_CJK = re.compile(rf"(?<=[{_CJK}]) | (?=[{_CJK}])")


_PUNCTUATION: dict[int, None] = {}


def _strip_punctuation(text: str) -> str:
    if not _PUNCTUATION:  # built once: every code point of category P*
        _PUNCTUATION.update(
            (cp, None) for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp)).startswith("P")
        )
    return text.translate(_PUNCTUATION)


def normalize(text: str) -> str:
    """The normal form described in the module docstring."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _strip_punctuation(text)
    text = _WS.sub(" ", text).strip()
    return _SPACE_NEAR_CJK.sub("", text)
