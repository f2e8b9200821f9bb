"""OpenDocument (odt, ods, odp and friends): text of content.xml, the page headers and footers in
styles.xml, and the title/subject/keywords in meta.xml. Encrypted packages (an
``encryption-data`` element in the manifest) are reported, not decoded."""

from __future__ import annotations

from collections.abc import Iterator

from monitor.content.archive import ZipMember, read_all, read_zip_member
from monitor.content.budget import Budget
from monitor.content.items import Item, Notice
from monitor.content.ooxml import zip_part_text
from monitor.content.xmltext import XmlRules

ODF_MIME_PREFIX = b"application/vnd.oasis.opendocument."

_BODY = XmlRules(
    newline_after=frozenset({"p", "h", "creator"}),
    newline=frozenset({"line-break"}),
    tab=frozenset({"tab"}),
    space=frozenset({"s"}),
    # Formatting definitions: data styles carry literal characters that are not document text.
    skip=frozenset({"automatic-styles", "font-face-decls", "styles", "scripts", "settings", "date"}),
)
_META = XmlRules(
    newline_after=frozenset({"title", "subject", "keyword", "description", "initial-creator", "creator"}),
    skip=frozenset({"creation-date", "date", "editing-duration", "editing-cycles", "generator",
                    "document-statistic", "template"}),
)
_PARTS = {"content.xml": _BODY, "styles.xml": _BODY, "meta.xml": _META}


def odf_format(data: bytes, members: list[ZipMember], budget: Budget) -> str | None:
    """``odt``/``ods``/``odp``/... when the package's ``mimetype`` member says OpenDocument."""
    m = next((m for m in members if m.entry.name == "mimetype"), None)
    if m is None:
        return None
    head = bytes(memoryview(data)[m.start : min(m.end, m.start + 100)]) if m.entry.method == 0 else b""
    if not head.startswith(ODF_MIME_PREFIX):
        return None
    kind = head[len(ODF_MIME_PREFIX):].decode("ascii", "replace")
    return {"text": "odt", "spreadsheet": "ods", "presentation": "odp", "graphics": "odg"}.get(kind, "odf")


def odf_items(data: bytes, members: list[ZipMember], budget: Budget) -> Iterator[Item]:
    manifest = next((m for m in members if m.entry.name == "META-INF/manifest.xml"), None)
    if manifest is not None:
        body, _ = read_all(read_zip_member(data, manifest, budget))
        if b"encryption-data" in body:
            budget.stats.incr("content.encrypted", format="odf")
            yield Notice("encrypted", "OpenDocument package with encrypted parts")
            return
    for m in members:
        rules = _PARTS.get(m.entry.name)
        if rules is not None and not m.entry.encrypted:
            budget.check_time()
            yield from zip_part_text(data, m, rules, budget)
