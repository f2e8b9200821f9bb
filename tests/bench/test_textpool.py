"""bench/textpool.py: the benign text of the precision check is varied, reproducible and benign."""

from __future__ import annotations

import random
import re
import unicodedata
from pathlib import Path

import pytest

from bench.textpool import benign, sentence_pool
from detectors.signatures import load_signatures

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pools() -> tuple[list[str], list[str]]:
    rng = random.Random(20261125)
    return sentence_pool(rng, 20_000, ja=True), sentence_pool(rng, 20_000, ja=False)


def test_same_seed_same_text_other_seed_other_text() -> None:
    a = sentence_pool(random.Random(7), 300, ja=True)
    assert a == sentence_pool(random.Random(7), 300, ja=True)
    assert a != sentence_pool(random.Random(8), 300, ja=True)


def test_pools_are_varied(pools: tuple[list[str], list[str]]) -> None:
    ja, en = pools
    assert len(set(ja)) > 15_000 and len(set(en)) > 15_000
    kanji = {c for s in ja for c in s if "\u4e00" <= c <= "\u9fff"}
    assert len(kanji) > 250
    words = {w.strip(".,;:?()").lower() for s in en for w in s.split()}
    assert len(words) > 500
    text = "".join(ja)
    assert "０" in text or "１" in text  # full-width digits
    assert any("\uff66" <= c <= "\uff9f" for c in text)  # half-width katakana
    assert "二十" in text  # kanji numbers


def test_pools_hold_near_misses_of_the_shipped_markers(pools: tuple[list[str], list[str]]) -> None:
    ja, en = pools
    text = "\n".join(ja + en)
    for near in ("注意事項", "取り扱いに注意", "保護すべき資産", "社外の方", "JDA-2024-117", "JDA-12345-6789", "confidential"):
        assert near in text


def test_no_sentence_holds_a_shipped_marker(pools: tuple[list[str], list[str]]) -> None:
    """Checked against the real shipped signature set, so a new shipped marker is covered too."""
    sigs = load_signatures([str(ROOT / "signatures")])
    literals = [unicodedata.normalize("NFKC", r.literal).casefold() for r in sigs.markers if r.literal]
    regexes = [re.compile(r.regex, re.I if r.nocase else 0) for r in sigs.markers if r.regex]
    assert len(literals) >= 5 and regexes
    for s in pools[0] + pools[1]:
        folded = unicodedata.normalize("NFKC", s).casefold()
        assert not any(lit in folded for lit in literals), s
        assert not any(rx.search(s) for rx in regexes), s


@pytest.mark.parametrize("text", ["この資料は社外秘です。", "ＪＤＡ　ＣＯＮＦＩＤＥＮＴＩＡＬ", "jda confidential",
                                  "番号はJDA-1234-12345です。", "｢注意｣", "保護すべき情報"])
def test_benign_rejects_markers_in_any_width_or_case(text: str) -> None:
    assert not benign(text)


@pytest.mark.parametrize("text", ["取扱説明書を読む。", "JDA-2024-117", "注意事項", "社外の方"])
def test_benign_accepts_near_misses(text: str) -> None:
    assert benign(text)
