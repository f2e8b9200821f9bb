"""xml_text's fast path (bare expat check + regex) against the reference expat-callback path.

Every comparison runs both paths on the same chunks and asserts the same text, the same clipped
flag and the same error (type and message); where the fast path cannot promise that it must
fall back, so the results are equal either way. Some tests also assert the fast path was taken,
so the comparison is not vacuous.
"""

from __future__ import annotations

import io
import random
import zipfile
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.content import odf, ooxml, xmltext
from monitor.content.budget import CapHit, Malformed
from monitor.content.extract import extract
from monitor.stats import Stats
from tests.monitor.content.helpers import DOCS, limits

RULES = {
    "word": ooxml._WORD,
    "shared": ooxml._SHARED_STRINGS,
    "sheet": ooxml._SHEET,
    "xlcomments": ooxml._XL_COMMENTS,
    "drawing": ooxml._DRAWING,
    "core": ooxml._CORE,
    "odf-body": odf._BODY,
    "odf-meta": odf._META,
}


def split(doc: bytes, sizes: list[int]) -> list[bytes]:
    out, pos = [], 0
    for n in sizes:
        if pos >= len(doc):
            break
        out.append(doc[pos : pos + n])
        pos += n
    if pos < len(doc):
        out.append(doc[pos:])
    return out


def outcome(result: tuple) -> tuple:
    text, clipped, error = result[:3]
    return text, clipped, (type(error).__name__, str(error)) if error is not None else None


def assert_same(chunks: list[bytes], rules: xmltext.XmlRules, max_chars: int = 1 << 30) -> tuple:
    fast = xmltext.xml_text(list(chunks), rules, max_chars)
    slow = xmltext._expat_text(list(chunks), rules, max_chars)
    assert outcome(fast) == outcome(slow)
    if fast[3] is not None:  # the fast path's UTF-8 is its text
        assert fast[3] == fast[0].encode("utf-8")
    return fast


def parts_of(path) -> Iterator[tuple[str, bytes, xmltext.XmlRules]]:
    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            rules = next((r for p, r in ooxml._PARTS if p.fullmatch(name)), None) or odf._PARTS.get(name)
            if rules is not None:
                yield name, z.read(name), rules


OFFICE = sorted(p for p in DOCS.iterdir() if p.suffix in (".docx", ".xlsx", ".pptx", ".odt", ".ods", ".odp")
                and p.name != "encrypted.docx")


@pytest.mark.parametrize("path", OFFICE, ids=lambda p: p.name)
def test_real_document_parts_same_text_any_chunking(path):
    rng = random.Random(path.name)
    for _, data, rules in parts_of(path):
        assert_same([data], rules)
        for _ in range(5):
            assert_same(split(data, [rng.randint(1, 300) for _ in range(400)]), rules)


def test_fast_path_taken_for_word_excel_and_powerpoint_bodies():
    taken = set()
    for name in ("sample.docx", "sample.xlsx", "sample.pptx"):
        for part, data, rules in parts_of(DOCS / name):
            if assert_same([data], rules)[3] is not None:
                taken.add(part.split("/")[0])
    assert taken == {"word", "xl", "ppt"}


def test_text_cap_in_the_middle_of_a_part():
    for _, data, rules in parts_of(DOCS / "sample.docx"):
        for cap in (0, 1, 5, 40, 200):
            assert_same(split(data, [64] * 1000), rules, cap)


@pytest.mark.parametrize("exc", [CapHit("size", "over", fatal=True), CapHit("ratio", "bomb", fatal=False),
                                 Malformed("corrupt deflate data")])
def test_error_from_the_chunks_keeps_text_before_it_and_reads_no_further(exc):
    data = next(d for n, d, _ in parts_of(DOCS / "sample.docx") if n == "word/document.xml")
    pieces = split(data, [50] * 10_000)

    def chunks(read: list[int]) -> Iterator[bytes]:
        for i, c in enumerate(pieces):
            if i == len(pieces) // 2:
                raise exc
            read.append(i)
            yield c

    read_fast: list[int] = []
    read_slow: list[int] = []
    fast = xmltext.xml_text(chunks(read_fast), ooxml._WORD, 1 << 30)
    slow = xmltext._expat_text(chunks(read_slow), ooxml._WORD, 1 << 30)
    assert outcome(fast) == outcome(slow)
    assert fast[2] is exc and fast[0]
    assert read_fast == read_slow


def test_cap_stops_reading_at_the_same_chunk():
    data = next(d for n, d, _ in parts_of(DOCS / "sample.docx") if n == "word/document.xml")
    pieces = split(data, [20] * 10_000)
    for cap in (10, 100, 300):
        reads: list[list[int]] = [[], []]
        for k, fn in enumerate((xmltext.xml_text, xmltext._expat_text)):
            def chunks(read=reads[k]) -> Iterator[bytes]:
                for i, c in enumerate(pieces):
                    read.append(i)
                    yield c
            fn(chunks(), ooxml._WORD, cap)
        assert reads[0] == reads[1]


EDGE_CASES = [
    b'<?xml version="1.0" encoding="UTF-8"?>\r\n<w:document><w:body><w:p><w:r><w:t xml:space="preserve"> a&amp;b '
    b'&#x41;&#66;&lt;&gt;&quot;&apos;</w:t></w:r></w:p></w:body></w:document>\r\n',
    b"<w:p><w:r><w:t>line\r\nbreak\rcr&#13;ref</w:t></w:r><w:br/><w:tab/><w:cr /></w:p>",
    b"<w:p><w:pPr><w:tabs><w:tab w:val='left'/></w:tabs><w:rPr><w:rPr><w:t>x</w:t></w:rPr></w:rPr></w:pPr>"
    b"<w:r><w:t>kept</w:t></w:r></w:p>",
    b"<w:p><w:r><w:t>outer<w:x/>inner</w:t></w:r></w:p>",  # markup inside a text element
    b"<w:p><w:r><w:t a='>' b=\"/>\">gt in attribute</w:t></w:r></w:p><w:p/><w:p a='1' />",
    b"<a:b:p><a:b:t>two colons</a:b:t></a:b:p>",
    b"<root><!-- c --><w:t>comment</w:t><![CDATA[<w:t>cdata</w:t>]]></root>",
    b'<?xml version="1.0" encoding="ISO-8859-1"?><w:t>\xe9t\xe9</w:t>',
    b"\xef\xbb\xbf<w:t>bom</w:t>",
    '<w:t>ｶﾀｶﾅ 保護すべき情報</w:t>'.encode("utf-16"),
    b'<!DOCTYPE x [<!ENTITY a "aaaa">]><w:t>&a;</w:t>',
    b"<w:t>unclosed",
    b"<w:t>a</w:p>",
    b"<w:t>&undefined;</w:t>",
    b"<w:t>bad \xff utf-8</w:t>",
    b"<w:t>x</w:t><w:t>y</w:t>",  # junk after the document element
    b"<sst><si><t>one</t><rPh><t>phonetic</t></rPh></si><si><r><rPr/><t>two</t></r></si></sst>",
    b'<worksheet><sheetData><row><c r="A1" t="s"><v>0</v></c><c t="str"><f>SUM(1)</f><v>3</v></c>'
    b'<c t="inlineStr"><is><t>inline</t></is></c><c t="str"><v>a<x/>b</v></c><c t="str"/><v>loose</v>'
    b"</row></sheetData></worksheet>",
    b'<office:text><text:p>a<text:s text:c="3"/>b<text:s/>c<text:s text:c="999"/><text:tab/>'
    b'<text:line-break/><text:span>sp</text:span></text:p><text:s text:c="\xc2\xb2"/></office:text>',
    b'<t:s text:c="\xd9\xa3"/>',
    b"<x><w:p><w:t>a</w:t></w:p>   \n</x>\n\n",
    b'<w:t>\xf0\x9f\x98\x80 &#x1F600;</w:t>',
    b"<w:p><w:instrText>HYPERLINK</w:instrText><w:delText>deleted</w:delText></w:p>",
]


@pytest.mark.parametrize("doc", EDGE_CASES)
@pytest.mark.parametrize("rules", RULES.values(), ids=RULES.keys())
def test_edge_cases(doc, rules):
    assert_same([doc], rules)
    assert_same([doc[i : i + 3] for i in range(0, len(doc), 3)], rules)
    for cap in (0, 2, 7):
        assert_same([doc], rules, cap)


# --- generated documents ----------------------------------------------------------------------

LOCALS = ["t", "p", "r", "br", "cr", "tab", "rPr", "pPr", "delText", "instrText", "si", "rPh", "c", "v",
          "f", "is", "text", "comment", "cm", "s", "line-break", "h", "span", "title", "created", "date",
          "automatic-styles", "x"]
PREFIXES = ["", "", "w:", "w:", "a:", "text:", "x:y:"]
CLEAN_TEXT = st.text(alphabet=st.sampled_from(list("ab <>&\"'\r\n\t") + ["保", "ｶ", "\U0001f600"]), max_size=12)
MESSY_TEXT = st.text(alphabet=st.sampled_from(list("ab <>&\"'\r\n\t]") + ["保", "ｶ", "\U0001f600", "\x01"]),
                     max_size=12)
ATTR_VALUES = st.sampled_from(["1", "3", "64", "str", "s", "inlineStr", "a>b", "x/", " 2 ", "a\r\nb", "&amp;",
                               "&#51;", "²", ""])


def _escape(s: str, amp: bool) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;") if amp else s


@st.composite
def elements(draw, depth: int = 0, clean: bool = True) -> str:
    """An element with a random name, attributes and content; ``clean`` ones are well formed
    and use only what the fast path covers (most of the time), the others may not be."""
    pfx = draw(st.sampled_from(PREFIXES))
    name = pfx + draw(st.sampled_from(LOCALS))
    attrs = ""
    for key in draw(st.lists(st.sampled_from(["t", "text:c", "w:val", "xml:space"]), max_size=2, unique=True)):
        quote = draw(st.sampled_from(['"', "'"]))
        attrs += f"{draw(st.sampled_from([' ', chr(10), '  ']))}{key}={quote}{draw(ATTR_VALUES)}{quote}"
    if draw(st.integers(0, 4)) == 0:
        return f"<{name}{attrs}{draw(st.sampled_from(['/', ' /']))}>"
    body = []
    for _ in range(draw(st.integers(0, 3 if depth < 4 else 0))):
        kind = draw(st.integers(0, 9))
        if kind < 5:
            body.append(draw(elements(depth + 1, clean)))
        elif kind < 8:
            body.append(_escape(draw(CLEAN_TEXT if clean else MESSY_TEXT), clean or draw(st.integers(0, 9)) > 0))
        elif kind == 8:
            body.append(draw(st.sampled_from(["&#x41;", "&#13;", "&lt;", "&gt;", "&quot;", "&apos;", "&#x1F600;"])))
        elif not clean:
            body.append(draw(st.sampled_from(["<!-- c -->", "<![CDATA[<t>x</t>]]>", "<?pi x?>", "&undef;"])))
    close = name if clean or draw(st.integers(0, 30)) else name + "x"  # sometimes mismatched
    return f"<{name}{attrs}>{''.join(body)}</{close}>"


CLEAN_HEADS = ["", '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\r\n', "<?xml version='1.0'?>", "  "]


@st.composite
def documents(draw, clean: bool = True) -> bytes:
    heads = CLEAN_HEADS + ([] if clean else ['<?xml version="1.0" encoding="utf-16"?>', "<!DOCTYPE r>"])
    head = draw(st.sampled_from(heads))
    body = draw(elements(0, clean))
    tail = draw(st.sampled_from(["", "\n", "  \r\n"] + ([] if clean else ["<!-- end -->", "junk"])))
    doc = (head + body + tail).encode("utf-8")
    if not clean and draw(st.integers(0, 15)) == 0:
        doc = doc[: draw(st.integers(0, len(doc)))]
    return doc


GEN = settings(max_examples=600, deadline=None, derandomize=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@GEN
@given(doc=documents(), rules=st.sampled_from(list(RULES.values())),
       sizes=st.lists(st.integers(1, 64), max_size=8), cap=st.sampled_from([1 << 30, 0, 3, 50]))
def test_generated_documents_same_as_expat(doc, rules, sizes, cap):
    assert_same(split(doc, sizes), rules, cap)


@GEN
@given(doc=documents(clean=False), rules=st.sampled_from(list(RULES.values())),
       sizes=st.lists(st.integers(1, 64), max_size=8), cap=st.sampled_from([1 << 30, 0, 3, 50]))
def test_generated_broken_documents_same_as_expat(doc, rules, sizes, cap):
    assert_same(split(doc, sizes), rules, cap)


@GEN
@given(st.binary(max_size=300), st.sampled_from(list(RULES.values())))
def test_random_bytes_same_as_expat(data, rules):
    assert_same([b"<w:p><w:t>" + data + b"</w:t></w:p>"], rules)
    assert_same([data], rules)


# --- whole documents through extract(): same items, same counters -----------------------------


def _docx(rng: random.Random, n: int) -> bytes:
    words = ["報告", "secret", "a&b", "<x>", "ｶﾀｶﾅ", "line\r\nbreak", "\U0001f600", "tab\there", "保護すべき情報"]

    def esc(s: str) -> str:
        return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    paras = []
    for _ in range(n):
        runs = "".join(
            f'<w:r><w:rPr><w:b/></w:rPr><w:t xml:space="preserve">{esc(" ".join(rng.choices(words, k=3)))}</w:t></w:r>'
            + rng.choice(["", "<w:r><w:tab/></w:r>", "<w:r><w:br/></w:r>"])
            for _ in range(rng.randint(1, 3)))
        paras.append(f'<w:p><w:pPr><w:tabs><w:tab w:val="left"/></w:tabs></w:pPr>{runs}</w:p>')
    body = "".join(paras) + "<w:p/>"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types/>')
        z.writestr("word/document.xml", '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\r\n'
                   f'<w:document xmlns:w="urn:w"><w:body>{body}</w:body></w:document>')
        z.writestr("docProps/core.xml", "<cp:coreProperties><dc:title>t&amp;t</dc:title></cp:coreProperties>")
        z.writestr("xl/sharedStrings.xml", f'<sst><si><t>{esc(rng.choice(words))}</t></si></sst>')
    return buf.getvalue()


def _items_and_counters(data: bytes, name: str, **caps: int) -> tuple[list, dict]:
    stats = Stats()
    items = list(extract(data, name=name, mime=None, depth=0, limits=limits(**caps), stats=stats))
    return items, stats.snapshot()


@pytest.mark.parametrize("seed", range(8))
def test_generated_docx_same_items_and_counters(seed, monkeypatch):
    rng = random.Random(seed)
    data = _docx(rng, rng.randint(1, 60))
    for caps in ({}, {"max_text": rng.randint(1, 400)}, {"max_decompressed": rng.randint(200, 3000)}):
        fast = _items_and_counters(data, "a.docx", **caps)
        with monkeypatch.context() as m:
            m.setattr(xmltext, "_plain_text", lambda doc, rules: None)
            slow = _items_and_counters(data, "a.docx", **caps)
        assert fast == slow
        for item in fast[0]:
            if getattr(item, "utf8", None) is not None:
                assert item.utf8 == item.text.encode("utf-8")
