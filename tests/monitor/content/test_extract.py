"""extract() on real documents made by LibreOffice, cairo, Info-ZIP and Python (tests/data/docs)."""

from __future__ import annotations

import pytest

from monitor.content.extract import detect_format
from tests.monitor.content.helpers import MARKER, by_where, doc, run, run_walk

BODY = f"本文書は{MARKER}を含む。取扱いには注意すること。"
BODY2 = "試験用の装備品仕様書、第三版。"
HEADER = f"ヘッダー：{MARKER}（社外秘）"
FOOTER = "フッター：防衛装備庁向け"
FOOTNOTE = "脚注：契約番号ＡＢＣ－１２３"
COMMENT = "コメント：この段落を確認"


def test_docx_body_header_footer_footnote_comment():
    members, texts, notices, stats = run(doc("sample.docx"), "sample.docx")
    assert members == [] and notices == []
    parts = by_where(texts)
    assert parts["zip:word/document.xml"] == f"試験文書\n{BODY}\n{BODY2}\n"
    assert parts["zip:word/header1.xml"] == f"{HEADER}\n"
    assert parts["zip:word/footer1.xml"] == f"{FOOTER}\n"
    assert FOOTNOTE in parts["zip:word/footnotes.xml"]
    assert parts["zip:word/comments.xml"] == f"{COMMENT}\n"
    assert "試験文書" in parts["zip:docProps/core.xml"]
    assert stats.get("content.decoded", format="docx") == 1


def test_xlsx_shared_strings():
    members, texts, notices, stats = run(doc("sample.xlsx"), "sample.xlsx")
    parts = by_where(texts)
    assert parts["zip:xl/sharedStrings.xml"] == f"レーダー諸元表\n{MARKER}：射程データ\n"
    assert stats.get("content.decoded", format="xlsx") == 1 and notices == []


def test_pptx_slide_and_notes():
    _, texts, notices, stats = run(doc("sample.pptx"), "sample.pptx")
    parts = by_where(texts)
    assert parts["zip:ppt/slides/slide1.xml"] == f"{MARKER}の概要\nスライド本文：試作機の性能\n"
    assert parts["zip:ppt/notesSlides/notesSlide1.xml"] == "発表者ノート：口外禁止\n"
    assert stats.get("content.decoded", format="pptx") == 1 and notices == []


def test_odt_content_styles_meta():
    _, texts, notices, stats = run(doc("sample.odt"), "sample.odt")
    parts = by_where(texts)
    content = parts["zip:content.xml"]
    assert content.startswith(f"試験文書\n{BODY}")
    assert FOOTNOTE in content and COMMENT in content and f"{BODY2}\n" in content
    assert parts["zip:styles.xml"] == f"{HEADER}\n{FOOTER}\n"
    assert parts["zip:meta.xml"] == "試験文書\n"
    assert stats.get("content.decoded", format="odt") == 1 and notices == []


@pytest.mark.parametrize("name,fmt,expected", [
    ("sample.ods", "ods", f"レーダー諸元表\n42\n{MARKER}：射程データ\nレーダー諸元表\n"),
    ("sample.odp", "odp", f"{MARKER}の概要\nスライド本文：試作機の性能\n発表者ノート：口外禁止\n"),
])
def test_ods_odp(name, fmt, expected):
    _, texts, _, stats = run(doc(name), name)
    assert by_where(texts)["zip:content.xml"] == expected
    assert stats.get("content.decoded", format=fmt) == 1


@pytest.mark.parametrize("name", ["sample.pdf", "sample-cid.pdf"])
def test_libreoffice_pdf_page_text(name):
    # LibreOffice writes subset simple fonts (TrueType for IPA Mincho, Type1/CFF for Noto CJK)
    # with ToUnicode CMaps; lines are split by the text matrix, never inside a sentence.
    _, texts, notices, stats = run(doc(name), name)
    assert notices == [] and [t.where for t in texts] == ["pdf:page1"]
    lines = texts[0].text.split("\n")
    for sentence in (HEADER, "試験文書", BODY, BODY2, FOOTER):
        assert sentence in lines
    assert "1" + FOOTNOTE in lines
    assert stats.get("content.decoded", format="pdf") == 1


def test_cairo_pdf_cid_identity_h():
    # cairo: Type0 / CIDFontType2 / Identity-H with ToUnicode, FlateDecode content.
    _, texts, notices, _ = run(doc("sample-cairo.pdf"), "sample-cairo.pdf")
    assert notices == []
    assert texts[0].text == f"{BODY}\nカイロ（cairo）で作成したPDF。\nPlain ASCII line 42."


def test_legacy_doc_piece_table():
    _, texts, notices, stats = run(doc("sample.doc"), "sample.doc")
    assert notices == [] and [t.where for t in texts] == ["ole:WordDocument"]
    lines = [ln.strip() for ln in texts[0].text.split("\n")]
    for sentence in ("試験文書", BODY, BODY2, FOOTNOTE, HEADER, FOOTER, COMMENT):
        assert sentence in lines
    assert stats.get("content.decoded", format="doc") == 1


def test_legacy_xls_sst():
    _, texts, notices, stats = run(doc("sample.xls"), "sample.xls")
    assert notices == []
    assert texts[0].where == "ole:Workbook"
    assert texts[0].text == f"レーダー諸元表\n{MARKER}：射程データ"
    assert stats.get("content.decoded", format="xls") == 1


@pytest.mark.parametrize("name,fmt", [("encrypted.zip", "zip"), ("encrypted.pdf", "pdf"),
                                      ("encrypted.docx", "ooxml")])
def test_encrypted_documents_are_reported(name, fmt):
    members, texts, notices, stats = run(doc(name), name)
    assert members == [] and texts == []
    assert [n.kind for n in notices] == ["encrypted"]
    assert stats.get("content.encrypted", format=fmt) == 1
    assert MARKER not in notices[0].detail


def test_nested_zip_one_level_per_call():
    members, texts, notices, stats = run(doc("nested.zip"), "nested.zip")
    assert [(m.name, m.path) for m in members] == [("inner.zip", "zip:inner.zip"), ("memo.txt", "zip:memo.txt")]
    assert members[1].data == "外側のメモ\n".encode() and not members[0].truncated
    inner, _, _, _ = run(members[0].data, "inner.zip", depth=1)
    assert [m.name for m in inner] == ["report/sample.docx", "report/readme.txt"]
    assert inner[0].data == doc("sample.docx")
    assert stats.get("content.decoded", format="zip") == 1


def test_walk_nested_zip_reaches_docx_text():
    items, stats = run_walk(doc("nested.zip"), "nested.zip")
    found = {(path, item.where): item.text for path, item in items}
    assert found[("zip:inner.zip > zip:report/sample.docx", "zip:word/document.xml")].startswith("試験文書\n" + BODY)
    assert found[("zip:inner.zip > zip:report/readme.txt", "text:utf-8")] == f"{MARKER}の説明書\n"
    assert stats.get("content.decoded", format="docx") == 1
    assert stats.get("content.decoded", format="zip") == 2


def test_tar_gz_members_and_text():
    members, _, _, stats = run(doc("docs.tar.gz"), "docs.tar.gz")
    assert [(m.name, m.path) for m in members] == [("docs.tar", "gzip:docs.tar")]
    tar_members, _, _, _ = run(members[0].data, "docs.tar", depth=1)
    assert [(m.name, m.path) for m in tar_members] == [("docs/sample.odt", "tar:docs/sample.odt"),
                                                       ("docs/sample.pdf", "tar:docs/sample.pdf")]
    assert tar_members[1].data == doc("sample.pdf")
    items, _ = run_walk(doc("docs.tar.gz"), "docs.tar.gz")
    wheres = [(p, i.where) for p, i in items]
    assert ("gzip:docs.tar > tar:docs/sample.pdf", "pdf:page1") in wheres
    assert ("gzip:docs.tar > tar:docs/sample.odt", "zip:content.xml") in wheres


@pytest.mark.parametrize("name,fmt", [
    ("sample.docx", "zip"), ("sample.pdf", "pdf"), ("sample.doc", "ole"), ("docs.tar.gz", "gzip"),
])
def test_detect_format_by_content_not_name(name, fmt):
    assert detect_format(doc(name), "upload.bin", "application/octet-stream") == fmt


@pytest.mark.parametrize("codec", ["utf-8", "euc-jp", "cp932", "iso-2022-jp", "utf-16-le"])
def test_plain_text_any_japanese_charset(codec):
    text = f"{BODY}\n{BODY2}\n"
    data = (b"\xff\xfe" if codec == "utf-16-le" else b"") + text.encode(codec)
    _, texts, _, _ = run(data, "memo.txt")
    assert texts[0].text.lstrip("\ufeff") == text
    assert texts[0].where == f"text:{codec}"


def test_multipart_body_is_not_sniffed_as_its_part():
    # A multipart/form-data upload carrying a PDF: the HTTP parser splits the parts itself; the
    # outer body must not be taken for a PDF because "%PDF-" sits inside its first KiB.
    body = (b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.pdf\"\r\n"
            b"Content-Type: application/pdf\r\n\r\n" + doc("sample.pdf") + b"\r\n--b--\r\n")
    assert detect_format(body, "/upload", "multipart/form-data; boundary=b") is None
    assert detect_format(body, "mail.eml", "message/rfc822") is None
    assert detect_format(body, "/upload", "application/octet-stream") == "pdf"
