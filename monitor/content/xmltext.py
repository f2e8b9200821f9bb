"""Searchable text out of Office XML parts, streamed through expat with DTDs refused.

A document type declaration (the carrier of entity-expansion bombs such as "billion laughs" and
of external entities) ends the part at once: Office and ODF parts never need one. Element names
are matched by their local part (``w:t`` -> ``t``) since prefixes are only conventions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from xml.parsers import expat

from monitor.content.budget import CapHit, Malformed


class _Refused(Exception):
    pass


@dataclass(frozen=True)
class XmlRules:
    """Which elements carry text and which mark breaks.

    ``text``: local names whose character data is kept; empty means all character data.
    ``cell``: (cell, attribute, values, value): character data of ``value`` elements kept when
    the enclosing ``cell``'s ``attribute`` is one of ``values`` (spreadsheet cells holding strings).
    """

    text: frozenset[str] = frozenset()
    newline_after: frozenset[str] = frozenset()
    newline: frozenset[str] = frozenset()
    tab: frozenset[str] = frozenset()
    space: frozenset[str] = frozenset()
    skip: frozenset[str] = frozenset()
    cell: tuple[str, str, frozenset[str], str] | None = None


@dataclass
class _State:
    rules: XmlRules
    max_chars: int
    parts: list[str] = field(default_factory=list)
    size: int = 0
    inside: int = 0  # depth inside text-bearing elements
    skipping: int = 0
    cell_is_text: bool = False
    in_value: bool = False
    full: bool = False

    def add(self, s: str) -> None:
        if self.full:
            return
        room = self.max_chars - self.size
        if len(s) > room:
            s = s[:room]
            self.full = True
        self.parts.append(s)
        self.size += len(s)


def _local(name: str) -> str:
    return name.rpartition(":")[2]


def xml_text(
    chunks: Iterable[bytes], rules: XmlRules, max_chars: int
) -> tuple[str, bool, Exception | None]:
    """(text, clipped, error) of one XML part.

    ``error`` is a :class:`Malformed` for broken XML or a DTD, or the ``CapHit``/``Malformed``
    raised by ``chunks``; the text decoded before it is kept.
    """
    st = _State(rules, max_chars)
    r = rules
    cell, cell_attr, cell_values, value_el = r.cell or ("", "", frozenset(), "")

    def start(name: str, attrs: dict[str, str]) -> None:
        local = _local(name)
        if st.skipping or local in r.skip:
            st.skipping += 1
            return
        if local in r.newline:
            st.add("\n")
        elif local in r.tab:
            st.add("\t")
        elif local in r.space:
            count = attrs.get("text:c", "1")
            st.add(" " * min(int(count) if count.isdigit() else 1, 64))
        if local == cell:
            st.cell_is_text = attrs.get(cell_attr, "") in cell_values
        if local in r.text:
            st.inside += 1
        elif local == value_el and st.cell_is_text:
            st.in_value = True

    def end(name: str) -> None:
        local = _local(name)
        if st.skipping:
            st.skipping -= 1
            return
        if local in r.text:
            st.inside = max(0, st.inside - 1)
        elif local == value_el:
            st.in_value = False
        if local in r.newline_after:
            st.add("\n")

    def chars(data: str) -> None:
        if not st.skipping and (st.inside or st.in_value or not r.text):
            st.add(data)

    def refuse(*_: object) -> None:
        raise _Refused("DTD in an Office XML part")

    p = expat.ParserCreate()
    p.buffer_text = True
    p.StartElementHandler = start
    p.EndElementHandler = end
    p.CharacterDataHandler = chars
    p.StartDoctypeDeclHandler = refuse
    p.EntityDeclHandler = refuse
    p.ExternalEntityRefHandler = refuse  # type: ignore[assignment]
    error: Exception | None = None
    try:
        for chunk in chunks:
            p.Parse(chunk, False)
            if st.full:
                break
        else:
            p.Parse(b"", True)
    except (expat.ExpatError, _Refused, ValueError, RecursionError) as e:
        error = Malformed(f"xml: {e.__class__.__name__}")
    except (CapHit, Malformed) as e:
        error = e
    return "".join(st.parts), st.full, error
