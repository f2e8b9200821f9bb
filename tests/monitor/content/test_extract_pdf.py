"""PDF text: font encodings real producers use, structure variants, hostile streams."""

from __future__ import annotations

import zlib

from monitor.content.pdf import Name, Ref, parse_cmap, parse_value
from tests.monitor.content.helpers import MARKER, run
from tests.monitor.content.pdfbuild import one_page, pdf, stream

# Adobe-Japan1 CIDs of 保護すべき情報 (from the Adobe-Japan1-7 ordering)
JAPAN1 = [3629, 1954, 866, 898, 854, 2520, 3651]


def page_text(data: bytes) -> str:
    _, texts, notices, _ = run(data, "x.pdf")
    assert [n for n in notices if n.kind != "bomb"] == []
    return "".join(t.text for t in texts)


def test_identity_h_without_tounicode_uses_adobe_japan1():
    cids = b"".join(c.to_bytes(2, "big") for c in JAPAN1)
    data = one_page(
        b"BT /F1 12 Tf 72 700 Td <" + cids.hex().encode() + b"> Tj ET",
        fonts=b"/F1 5 0 R",
        extra={
            5: b"<< /Type /Font /Subtype /Type0 /BaseFont /HeiseiMin-W3 /Encoding /Identity-H "
               b"/DescendantFonts [6 0 R] >>",
            6: b"<< /Type /Font /Subtype /CIDFontType0 /BaseFont /HeiseiMin-W3 "
               b"/CIDSystemInfo << /Registry (Adobe) /Ordering (Japan1) /Supplement 2 >> >>",
        },
    )
    assert page_text(data) == MARKER


def test_predefined_rksj_cmap_is_shift_jis():
    raw = MARKER.encode("cp932")
    lit = raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")
    data = one_page(b"BT /F1 12 Tf 72 700 Td (" + lit + b") Tj ET", fonts=b"/F1 5 0 R",
                    extra={5: b"<< /Type /Font /Subtype /Type0 /BaseFont /MS-Mincho /Encoding /90ms-RKSJ-H "
                              b"/DescendantFonts [] >>"})
    assert page_text(data) == MARKER


def test_tounicode_bfrange_array_and_bfchar_with_two_byte_codespace():
    cmap = (b"/CIDInit /ProcSet findresource begin 12 dict begin begincmap\n"
            b"1 begincodespacerange <0000> <FFFF> endcodespacerange\n"
            b"1 beginbfchar <0001> <4FDD> endbfchar\n"
            b"1 beginbfrange <0002> <0003> [<8B77> <3059>] endbfrange\n"
            b"1 beginbfrange <0010> <0012> <3079> endbfrange\n"
            b"endcmap CMapName currentdict /CMap defineresource pop end end")
    data = one_page(b"BT /F1 12 Tf 1 0 0 1 72 700 Tm <000100020003> Tj [<0010> -20 <0012>] TJ ET",
                    fonts=b"/F1 5 0 R",
                    extra={5: b"<< /Type /Font /Subtype /Type0 /Encoding /Identity-H /ToUnicode 6 0 R "
                              b"/DescendantFonts [] >>", 6: stream(b"", cmap)})
    # 0x0010 -> U+3079 べ, 0x0012 -> U+307B (range offset 2)
    assert page_text(data) == "保護すべほ"


def test_simple_font_differences_and_winansi():
    data = one_page(b"BT /F1 10 Tf 72 700 Td (AB\\223x\\224) Tj ET", fonts=b"/F1 5 0 R",
                    extra={5: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding "
                              b"<< /BaseEncoding /WinAnsiEncoding /Differences [65 /uni4FDD /u8B77] >> >>"})
    assert page_text(data) == "保護\u201cx\u201d"


def test_lines_spaces_and_pages_in_tree_order():
    objects = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: b"<< /Type /Pages /Kids [7 0 R 3 0 R] /Count 2 /Resources << /Font << /F1 5 0 R >> >> >>",
        3: b"<< /Type /Page /Parent 2 0 R /Contents 4 0 R >>",  # second page, resources inherited
        4: stream(b"", b"BT /F1 10 Tf 14 TL 72 700 Td (second) Tj T* (page) Tj ET"),
        5: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        7: b"<< /Type /Page /Parent 2 0 R /Contents [8 0 R 9 0 R] >>",
        8: stream(b"", b"BT /F1 10 Tf 12 TL 72 700 Td [(Hello) -400 (World)] TJ 0 -14 Td (next line) Tj"),
        9: stream(b"", b" (!) ' ET", flate=False),
    }
    _, texts, _, _ = run(pdf(objects), "x.pdf")
    assert [(t.where, t.text) for t in texts] == [("pdf:page1", "Hello World\nnext line\n!"),
                                                  ("pdf:page2", "second\npage")]


def test_object_streams_and_broken_xref():
    # Word-style: page, fonts and catalog inside an object stream; the xref offsets are junk.
    inner = [(1, b"<< /Type /Catalog /Pages 2 0 R >>"),
             (2, b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>"),
             (3, b"<< /Type /Page /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>"),
             (5, b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")]
    body = b""
    header = b""
    for num, obj in inner:
        header += b"%d %d " % (num, len(body))
        body += obj + b"\n"
    objstm = stream(b"/Type /ObjStm /N %d /First %d" % (len(inner), len(header)), header + body)
    data = pdf({4: stream(b"", b"BT /F1 9 Tf (inside objstm) Tj ET"), 6: objstm}, root=1)
    assert page_text(data) == "inside objstm"


def test_inline_image_and_form_xobject_cycle():
    content = (b"q BI /W 4 /H 4 /BPC 8 /CS /G ID \x00(\xff) Tj ]]>> EI Q "
               b"BT /F1 9 Tf (before) Tj ET /X1 Do BT /F1 9 Tf 0 -20 Td (after) Tj ET")
    form = stream(b"/Type /XObject /Subtype /Form /BBox [0 0 100 100] "
                  b"/Resources << /Font << /F1 5 0 R >> /XObject << /X1 6 0 R >> >>",
                  b"BT /F1 9 Tf 0 -10 Td (in form) Tj ET /X1 Do")
    data = one_page(content, fonts=b"/F1 5 0 R",
                    extra={5: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>", 6: form},
                    resources_extra=b"/XObject << /X1 6 0 R >>")
    assert page_text(data) == "before\nin form\nafter"


def test_pages_without_catalog_found_by_type():
    data = pdf({3: b"<< /Type /Page /Contents 4 0 R /Resources << >> >>",
                4: stream(b"", b"BT (orphan page) Tj ET")}, root=99)
    assert page_text(data) == "orphan page"


def test_flate_bomb_in_content_stream_is_capped():
    bomb = zlib.compress(b"\x00" * (30 << 20), 9)
    objects = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        3: b"<< /Type /Page /Contents [4 0 R 5 0 R] /Resources << >> >>",
        4: b"<< /Filter /FlateDecode /Length %d >>\nstream\n" % len(bomb) + bomb + b"\nendstream",
        5: stream(b"", b"BT (" + MARKER.encode("utf-8") + b") Tj ET"),
    }
    _, texts, notices, stats = run(pdf(objects), "bomb.pdf")
    assert [n.kind for n in notices] == ["bomb"]
    assert stats.get("content.cap", cap="ratio") == 1
    assert texts[0].text.endswith(MARKER.encode("utf-8").decode("latin-1"))


def test_parse_value_refs_nesting_and_strings():
    v, _ = parse_value(b"<< /A [1 0 R 2 (a\\(b\\)\\101\\\nc) <4142>] /B /N#41me /C true >>", 0)
    assert v == {"A": [Ref(1, 0), 2, b"a(b)Ac", b"AB"], "B": Name("NAme"), "C": True}
    deep, _ = parse_value(b"[" * 100_000 + b"]" * 100_000, 0)  # no recursion
    assert isinstance(deep, list)


def test_cmap_range_is_not_expanded_in_memory():
    cm = parse_cmap(b"1 begincodespacerange <00000000> <FFFFFFFF> endcodespacerange "
                    b"1 beginbfrange <00000000> <FFFFFFFF> <0041> endbfrange")
    assert cm.lookup(b"\x00\x00\x00\x01") == "B" and len(cm.chars) == 1  # only the code looked up
