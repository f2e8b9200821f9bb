"""Partial-document fingerprints: index hashes only; excerpts >= N characters are found, unrelated text is not."""

from __future__ import annotations

import json
import random
import zipfile
from pathlib import Path

from detectors import partial
from monitor.model import TO_SERVER
from tests.factories import tflow

WORDS = ["防衛", "装備品", "試験", "評価", "結果", "報告", "設計", "図面", "仕様", "変更", "管理", "番号",
         "部品", "構成", "性能", "確認", "の", "を", "に", "は", "が", "と", "で", "した", "する", "について",
         "により", "ため", "各", "次", "改訂", "保守", "点検", "記録", "手順", "基準", "温度", "圧力", "強度"]


def japanese(seed: int, chars: int) -> str:
    rnd = random.Random(seed)
    out: list[str] = []
    n = 0
    while n < chars:
        sentence = "".join(rnd.choice(WORDS) for _ in range(rnd.randint(6, 14))) + "。"
        out.append(sentence)
        n += len(sentence)
    return "".join(out)


def docx(text: str) -> bytes:
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/'
                   'package/2006/content-types"><Override PartName="/word/document.xml" ContentType="application/'
                   'vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>')
        z.writestr("word/document.xml", '<?xml version="1.0"?><w:document xmlns:w="http://schemas.openxmlformats'
                   f'.org/wordprocessingml/2006/main"><w:body><w:p><w:r><w:t>{text}</w:t></w:r></w:p></w:body>'
                   '</w:document>')
    return buf.getvalue()


def make_index(tmp: Path) -> tuple[Path, dict[str, str]]:
    docs = tmp / "protected"
    (docs / "sub").mkdir(parents=True)
    texts = {"spec.txt": japanese(1, 3000), "sub/report.docx": japanese(2, 3000),
             "english.txt": " ".join(f"The assembly torque for bolt {i} follows table {i % 7} of the manual."
                                     for i in range(60))}
    (docs / "spec.txt").write_text(texts["spec.txt"], encoding="cp932")
    (docs / "sub" / "report.docx").write_bytes(docx(texts["sub/report.docx"]))
    (docs / "english.txt").write_text(texts["english.txt"], encoding="utf-8")
    out = tmp / "index.json"
    assert partial.main(["index", str(docs), "-o", str(out)]) == 0
    return out, texts


def sigs_for(index: Path) -> str:
    return f"documents:\n  - sid: 9300001\n    msg: registered documents\n    index: {index.name}\n"


def test_index_holds_hashes_only(tmp_path):
    index, texts = make_index(tmp_path)
    raw = index.read_text(encoding="utf-8")
    doc = json.loads(raw)
    assert [d["name"] for d in doc["documents"]] == ["english.txt", "spec.txt", "sub/report.docx"]
    assert doc["k"] == partial.K and doc["w"] == partial.W
    for name, text in texts.items():
        size = 12 if name == "english.txt" else 3  # 12 ASCII characters cannot hide in base64 by chance
        for i in range(0, 2000, 97):
            piece = text[i:i + size]
            assert piece not in raw and json.dumps(piece)[1:-1] not in raw


def test_excerpt_pasted_into_a_form_is_found_with_document_and_share(harness, tmp_path):
    index, texts = make_index(tmp_path)
    h = harness(sigs_for(index), plaintext_violation=False)
    excerpt = texts["sub/report.docx"][1000:1100]
    body = f"お問い合わせ内容: 添付の件、{excerpt} よろしくお願いします。".encode()
    flow = tflow()
    h.det.buffer(flow, TO_SERVER, body, where="http.request.body > form[message]", ts=1.0, charset="utf-8")
    (a,) = h.alerts(9300001)
    lm = a["leakmon"]
    assert a["alert"]["category"] == "partial-document-match"
    assert lm["document"] == "sub/report.docx" and lm["where"] == "http.request.body > form[message]"
    assert 80 <= lm["shared_chars"] <= 110
    assert 0 < lm["share"] < 0.1


def test_english_excerpt_with_different_spacing_and_case(harness, tmp_path):
    index, texts = make_index(tmp_path)
    h = harness(sigs_for(index), plaintext_violation=False)
    excerpt = texts["english.txt"][500:700].upper().replace(" ", "\n  ")
    h.det.buffer(tflow(), TO_SERVER, excerpt.encode(), where="smtp.body", ts=1.0)
    (a,) = h.alerts(9300001)
    assert a["leakmon"]["document"] == "english.txt"


def test_unrelated_and_short_texts_raise_nothing(harness, tmp_path):
    index, texts = make_index(tmp_path)
    h = harness(sigs_for(index), plaintext_violation=False)
    flow = tflow()
    for seed in range(10, 30):  # same vocabulary, different text
        h.det.buffer(flow, TO_SERVER, japanese(seed, 4000).encode("utf-8"), where="b", ts=1.0)
    h.det.buffer(flow, TO_SERVER, texts["spec.txt"][200:240].encode(), where="b", ts=1.0)  # 40 < 60 chars
    h.det.buffer(flow, TO_SERVER, b"The assembly torque for bolt follows the manual.", where="b", ts=1.0)
    assert h.alerts() == []


def test_winnowing_guarantee():
    import numpy as np

    text = partial.normalize(japanese(5, 2000))
    kept = set(partial.winnow(partial.kgram_hashes(text)).tolist())
    h = partial.kgram_hashes(text)
    window = partial.W + partial.K - 1
    for start in range(0, len(text) - window, 13):
        sub = partial.kgram_hashes(text[start:start + window])
        assert set(sub.tolist()) & kept
    assert h.dtype == np.uint64
