"""OOXML (docx, xlsx, pptx): the text of the XML parts people write into.

Covered parts: Word body, headers, footers, footnotes, endnotes, comments and tracked deletions;
Excel shared strings (phonetic guides skipped), inline and formula-string cells, comments,
threaded comments; PowerPoint slides, notes and comments; the core properties (title, subject,
keywords...) of all three. Embedded objects (``*/embeddings/*``) come back as members.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from monitor.content.archive import ZipMember, read_all, read_zip_member
from monitor.content.budget import Budget, CapHit
from monitor.content.items import Item, Member, Notice, Text
from monitor.content.xmltext import XmlRules, xml_text

_WORD = XmlRules(
    text=frozenset({"t", "delText"}),
    newline_after=frozenset({"p"}),
    newline=frozenset({"br", "cr"}),
    tab=frozenset({"tab"}),
    skip=frozenset({"pPr", "rPr", "sectPr", "tblPr", "instrText"}),
)
_SHARED_STRINGS = XmlRules(text=frozenset({"t"}), newline_after=frozenset({"si"}), skip=frozenset({"rPh"}))
_SHEET = XmlRules(
    text=frozenset({"t"}),
    newline_after=frozenset({"c"}),
    skip=frozenset({"rPh", "f"}),
    cell=("c", "t", frozenset({"str", "inlineStr"}), "v"),
)
_XL_COMMENTS = XmlRules(text=frozenset({"t", "text"}), newline_after=frozenset({"comment", "threadedComment"}),
                        skip=frozenset({"rPh"}))
_DRAWING = XmlRules(text=frozenset({"t", "text"}), newline_after=frozenset({"p", "cm"}), newline=frozenset({"br"}))
_CORE = XmlRules(newline_after=frozenset({"title", "subject", "creator", "keywords", "description",
                                          "lastModifiedBy", "category"}),
                 skip=frozenset({"created", "modified", "revision", "lastPrinted", "language"}))

_PARTS: list[tuple[re.Pattern[str], XmlRules]] = [
    (re.compile(r"word/(document|header\d*|footer\d*|footnotes|endnotes|comments\w*|glossary/document)\.xml"),
     _WORD),
    (re.compile(r"xl/sharedStrings\.xml"), _SHARED_STRINGS),
    (re.compile(r"xl/worksheets/sheet\d*\.xml"), _SHEET),
    (re.compile(r"xl/(comments\d*|threadedComments/\w+)\.xml"), _XL_COMMENTS),
    (re.compile(r"ppt/(slides/slide|notesSlides/notesSlide|comments/\w*?)\d*\.xml"), _DRAWING),
    (re.compile(r"docProps/core\.xml"), _CORE),
]
_EMBEDDING = re.compile(r"(word|xl|ppt)/embeddings/[^/]+")


def is_ooxml(names: set[str]) -> bool:
    return "[Content_Types].xml" in names


def ooxml_format(names: set[str]) -> str:
    if "word/document.xml" in names:
        return "docx"
    if "xl/workbook.xml" in names:
        return "xlsx"
    if "ppt/presentation.xml" in names:
        return "pptx"
    return "ooxml"


def zip_part_text(data: bytes, m: ZipMember, rules: XmlRules, budget: Budget) -> Iterator[Item]:
    """Text of one XML part of a zip-based document, then any notice its decoding raised."""
    room = budget.limits.max_text - budget.text
    if room <= 0:
        budget.count_cap("text")
        raise CapHit("text", "text cap reached")
    text, clipped, error, utf8 = xml_text(read_zip_member(data, m, budget), rules, room)
    text, over = budget.clip_text(text)
    if text.strip():
        yield Text(text, f"zip:{m.entry.name}", None if over else utf8)
    if clipped or over:
        budget.count_cap("text")
        raise CapHit("text", "text cap reached")
    if isinstance(error, CapHit):
        if error.fatal:
            raise error
        yield Notice("bomb", f"{error.detail} in a document part")
    elif error is not None:
        budget.stats.incr("content.malformed", format="xml")
        yield Notice("malformed", str(error))


def ooxml_items(data: bytes, members: list[ZipMember], budget: Budget, can_descend: bool) -> Iterator[Item]:
    for m in members:
        name = m.entry.name
        if m.entry.encrypted or m.entry.is_dir:
            continue
        rules = next((r for p, r in _PARTS if p.fullmatch(name)), None)
        if rules is not None:
            budget.check_time()
            yield from zip_part_text(data, m, rules, budget)
        elif _EMBEDDING.fullmatch(name) and can_descend:
            budget.take_member()
            body, err = read_all(read_zip_member(data, m, budget))
            yield Member(name.rpartition("/")[2], body, f"zip:{name}", truncated=err is not None)
            if isinstance(err, CapHit) and err.fatal:
                raise err
