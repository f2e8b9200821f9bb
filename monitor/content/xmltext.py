"""Searchable text out of Office XML parts, streamed through expat with DTDs refused.

A document type declaration (the carrier of entity-expansion bombs such as "billion laughs" and
of external entities) ends the part at once: Office and ODF parts never need one. Element names
are matched by their local part (``w:t`` -> ``t``) since prefixes are only conventions.

Two paths give the same result. :func:`_expat_text` is the reference: expat with Python
callbacks for every element. The fast path (:func:`xml_text`) lets expat only *check* the part
(no callbacks, C speed) and then finds the few tags that matter with one regular expression
over the checked bytes; it gives up, and the reference path runs on the same chunks, wherever
it cannot promise the same text, notice and reading (see :func:`xml_text`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import chain
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
) -> tuple[str, bool, Exception | None, bytes | None]:
    """(text, clipped, error, utf8) of one XML part.

    ``error`` is a :class:`Malformed` for broken XML or a DTD, or the ``CapHit``/``Malformed``
    raised by ``chunks``; the text decoded before it is kept. ``utf8`` is ``text`` in UTF-8
    when the fast path assembled it that way (else None).

    Fast path, for rule sets that keep only the text of some elements (all OOXML parts but the
    core properties): the chunks go through a bare expat parser (DTDs refused the same way),
    then :func:`_plain_text` picks the text out of the checked bytes. The chunks read so far are
    replayed through :func:`_expat_text`, which then reads the rest exactly as it always did,
    on a parse error or DTD, on an error raised by ``chunks``, when the part has grown big
    enough that the text cap might stop the reading early (the reference path stops reading
    there), and for any part :func:`_plain_text` does not cover.
    """
    if not rules.text:
        return (*_expat_text(chunks, rules, max_chars), None)
    it = iter(chunks)
    seen: list[bytes] = []
    checker = _Checker()
    size = 0
    try:
        for chunk in it:
            seen.append(chunk)
            checker.parser.Parse(chunk, False)
            size += len(chunk)
            if size * _CHARS_PER_BYTE > max_chars:
                return (*_expat_text(chain(seen, it), rules, max_chars), None)
        checker.parser.Parse(b"", True)
    except (CapHit, Malformed) as e:  # raised by chunks: replay, then hand the same error over
        return (*_expat_text(chain(seen, _raising(e)), rules, max_chars), None)
    except (expat.ExpatError, _Refused, ValueError, RecursionError):
        return (*_expat_text(seen, rules, max_chars), None)
    plain = _plain_text(b"".join(seen), rules) if checker.plain() else None
    if plain is None:
        return (*_expat_text(seen, rules, max_chars), None)
    return plain[0], False, None, plain[1]


def _refuse(*_: object) -> None:
    raise _Refused("DTD in an Office XML part")


class _Checker:
    """A bare expat parser (no element or text callbacks, so it runs at C speed) that refuses
    DTDs like the reference parser and notes what the fast path does not cover: an encoding
    other than UTF-8, comments, processing instructions, CDATA sections."""

    def __init__(self) -> None:
        self.encoding: str | None = None
        self.other_markup = False
        p = self.parser = expat.ParserCreate()
        p.StartDoctypeDeclHandler = _refuse
        p.EntityDeclHandler = _refuse
        p.ExternalEntityRefHandler = _refuse  # type: ignore[assignment]
        p.XmlDeclHandler = self._declaration
        p.CommentHandler = p.ProcessingInstructionHandler = p.StartCdataSectionHandler = self._markup

    def _declaration(self, version: str, encoding: str | None, standalone: int) -> None:
        self.encoding = encoding

    def _markup(self, *_: object) -> None:
        self.other_markup = True

    def plain(self) -> bool:
        """The checked part is UTF-8 with elements, character data and references only."""
        utf8 = self.encoding is None or self.encoding.lower() == "utf-8"
        return utf8 and not self.other_markup


def _raising(e: Exception) -> Iterator[bytes]:
    raise e
    yield b""  # pragma: no cover - makes this a generator


# Most text one input byte can yield: ``<s text:c="64"/>`` is 16 bytes for 64 spaces; newlines,
# tabs and character references yield less. Below max_chars / 4 bytes the cap cannot be reached.
_CHARS_PER_BYTE = 4

_ATTR = re.compile(rb"""([^\s=]+)\s*=\s*(?:"([^"]*)"|'([^']*)')""")
_REF = re.compile(rb"&(?:#x([0-9a-fA-F]+);|#([0-9]+);|(lt|gt|amp|quot|apos);)")
_NAMED = {b"lt": b"<", b"gt": b">", b"amp": b"&", b"quot": b'"', b"apos": b"'"}
_WHITESPACE_TO_SPACE = bytes.maketrans(b"\t\n\r", b"   ")
# In a checked part without comments, CDATA or PIs, every '<' opens a tag and '>' may occur
# only in attribute values, which are quoted.
# Possessive quantifiers: a name's prefix is all of it up to its last ':' and the local part
# holds no ':', so backtracking could never find another split; cutting it off halves the time.
_PREFIX = rb"(?:[^\s/>:]*+:)*+"
_ATTRS = rb"""(?:\s[^>"']*+(?:(?:"[^"]*+"|'[^']*+')[^>"']*+)*+)?"""  # may end with the '/' of '/>'


@lru_cache(maxsize=64)
def _tokens(rules: XmlRules) -> re.Pattern[bytes]:
    """The tags of ``rules`` that change the state or the text, as one pattern whose groups are
    (end prefix, end name, start prefix, start name, attributes, "/", text, "</", empty name):

    * end tags of elements that add a newline after them or are skipped;
    * start and empty tags of elements that add a break, are skipped, hold text or cells, with
      the element's text and end tag when its content is character data only ("</" group);
    * empty tags of the elements that only add a newline after them (``<w:p/>``).
    """
    cell, _, _, value = rules.cell or ("", "", frozenset(), "")
    starts = rules.skip | rules.newline | rules.tab | rules.space | rules.text | {cell, value}
    ends = rules.skip | rules.newline_after

    def names(group: Iterable[str]) -> bytes:
        alts = sorted((re.escape(n.encode()) for n in set(group) if n), key=len, reverse=True)
        return b"|".join(alts) or b"(?!)"

    return re.compile(
        rb"<(?:/(" + _PREFIX + rb")(" + names(ends) + rb")\s*+>"
        rb"|(" + _PREFIX + rb")(" + names(starts) + rb")(?=[\s/>])(" + _ATTRS + rb")(/?)>"
        rb"(?:(?<!/>)([^<]*+)(</)[^>]*+>)?"
        rb"|" + _PREFIX + rb"(" + names(rules.newline_after - starts) + rb")(?=[\s/])" + _ATTRS + rb"(?:(?<=/)|/)>)"
    )


class _Unsupported(Exception):
    """The fast path cannot promise the reference path's text for this part."""


def _plain_text(doc: bytes, rules: XmlRules) -> tuple[str, bytes] | None:
    """The text :func:`_expat_text` gives for ``doc``, and that text in UTF-8; None where this
    path does not promise the same. ``doc`` is a part :class:`_Checker` has found well formed
    and plain, so its only '<' are tags (the XML declaration's "<?" matches no token)."""
    if doc[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in doc[:4]:
        return None  # UTF-16 (expat detects it without a BOM too)
    try:
        out = _walk(_tokens(rules).findall(doc), rules)
    except _Unsupported:
        return None
    joined = b"".join(out)
    if b"&" in joined:
        # In checked character data every '&' starts one of these references.
        ampersands = joined.count(b"&")
        joined, resolved = _REF.subn(_resolve, joined)
        if resolved != ampersands:
            return None
    try:
        return joined.decode("utf-8"), joined
    except UnicodeDecodeError:
        return None


@dataclass(frozen=True)
class _Kind:
    """What the reference callbacks do for one local name (see :func:`_expat_text`)."""

    skip: bool
    mark: bytes  # added at the start tag: newline or tab ("" for none)
    space: bool
    cell: bool
    text: bool
    value: bool
    newline_after: bool


_TEXT_ONLY = _Kind(skip=False, mark=b"", space=False, cell=False, text=True, value=False, newline_after=False)


@lru_cache(maxsize=64)
def _kinds(r: XmlRules) -> dict[bytes, _Kind]:
    cell, _, _, value = r.cell or ("", "", frozenset(), "")
    names = r.skip | r.newline | r.tab | r.space | r.text | r.newline_after | {cell, value}
    return {
        n.encode(): _Kind(
            skip=n in r.skip,
            mark=b"\n" if n in r.newline else b"\t" if n in r.tab else b"",
            space=n in r.space and n not in r.newline and n not in r.tab,
            cell=n == cell,
            text=n in r.text,
            value=n == value,
            newline_after=n in r.newline_after,
        )
        for n in names
        if n
    }


def _walk(tokens: list[tuple[bytes, ...]], r: XmlRules) -> list[bytes]:
    """The reference callbacks' state machine, run on the tokens of :func:`_tokens` only.

    Between two tokens no text is kept: no text-holding element is open there (an element
    holding more than character data is :class:`_Unsupported`) and skipped elements are passed
    over whole (by counting their own start and end tags, which is enough in a checked part).
    """
    kinds = _kinds(r)
    # Elements that only hold text: a token with their content is that content, nothing else.
    text_only = {n for n, k in kinds.items() if k == _TEXT_ONLY}
    _, cell_attr, cell_values, _ = r.cell or ("", "", frozenset(), "")
    out: list[bytes] = []
    add = out.append
    cell_is_text = False
    skipping = b""  # qualified name of the skipped element being passed over
    depth = 0
    for epfx, end, spfx, start, attrs, slash, text, close, empty_nl in tokens:
        if skipping:
            if end:
                if epfx + end == skipping:
                    depth -= 1
                    if not depth:
                        skipping = b""
            elif start and not (close or slash or attrs.endswith(b"/")) and spfx + start == skipping:
                depth += 1
            continue
        if close and start in text_only:
            add(text if b"\r" not in text else _chars(text))
            continue
        if end:
            if kinds[end].newline_after:
                add(b"\n")
            continue
        if empty_nl:
            add(b"\n")
            continue
        k = kinds[start]
        if k.skip:
            if not (close or slash or attrs.endswith(b"/")):
                skipping = spfx + start
                depth = 1
            continue
        # the reference start(): break marks, cell kind, text-holding state
        if k.mark:
            add(k.mark)
        elif k.space:
            add(_spaces(_attrs(attrs).get("text:c", "1")))
        if k.cell:
            cell_is_text = _attrs(attrs).get(cell_attr, "") in cell_values
        keep = k.text or (k.value and cell_is_text)
        if close:  # the element's character data, then the reference end()
            if keep:
                add(text if b"\r" not in text else _chars(text))
        elif not (slash or attrs.endswith(b"/")):
            if keep:  # a text-holding element with markup inside
                raise _Unsupported
            continue
        if k.newline_after:
            add(b"\n")
    return out


def _spaces(count: str) -> bytes:
    try:
        return b" " * min(int(count) if count.isdigit() else 1, 64)
    except ValueError as e:  # a digit int() refuses ("²"): the reference path reports it
        raise _Unsupported from e


def _chars(raw: bytes) -> bytes:
    """Character data with line ends normalised as expat does (references resolved later)."""
    if b"\r" in raw:
        raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return raw


def _resolve(m: re.Match[bytes]) -> bytes:
    hexa, dec, name = m.groups()
    if name:
        return _NAMED[name]
    return chr(int(hexa, 16) if hexa else int(dec)).encode("utf-8")


def _attrs(raw: bytes) -> dict[str, str]:
    """Attribute values as expat reports them: whitespace normalised, references resolved."""
    out = {}
    for m in _ATTR.finditer(raw):
        value = m.group(2) if m.group(2) is not None else m.group(3)
        value = value.replace(b"\r\n", b" ").translate(_WHITESPACE_TO_SPACE)
        out[m.group(1).decode("utf-8")] = _REF.sub(_resolve, value).decode("utf-8")
    return out


def _expat_text(
    chunks: Iterable[bytes], rules: XmlRules, max_chars: int
) -> tuple[str, bool, Exception | None]:
    """:func:`xml_text` through expat's callbacks: the reference path, for every part."""
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
