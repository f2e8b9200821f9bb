"""Content decoders: one container level of a file into members, text buffers and notices.

    for item in extract(data, name="a.docx", mime=None, depth=0, limits=cfg.content, stats=stats):
        Member -> the pipeline makes a child FileObject and calls extract() on it with depth + 1
        Text   -> inspected by the detectors (where: "zip:word/document.xml", "pdf:page3")
        Notice -> event + counter (encrypted, bomb, depth, members, malformed, truncated)

The format comes from the content (magic bytes, archive directory), the name and MIME type are
only hints. ``extract`` never raises: every cap in ``limits`` is enforced while streaming and a
breach yields a Notice and counts ``content.cap{cap=ratio|size|depth|members|text|time|pages}``;
each decoded document counts ``content.decoded{format=...}``. :func:`walk` follows members
recursively (for ``leakmon fingerprint index`` and tests), the pipeline does its own recursion.

Formats: zip (stored, deflate, bzip2), gzip, bzip2, xz, tar, OOXML, ODF, PDF, OLE2 Office
(doc, xls, ppt, encrypted OOXML) and plain text in any charset :func:`charset.guess` knows.
"""

from __future__ import annotations

import lzma
import time
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any, cast

from monitor.config import ContentConfig
from monitor.content import charset
from monitor.content.archive import gunzip, gzip_name, read_all, read_zip_member, tar_members, zip_members
from monitor.content.budget import NOTICE_OF_CAP, Budget, CapHit, Malformed, account, inflate
from monitor.content.items import Item, Member, Notice, Text
from monitor.content.odf import odf_format, odf_items
from monitor.content.ole2 import OLE_MAGIC, ole_items
from monitor.content.ooxml import is_ooxml, ooxml_format, ooxml_items
from monitor.content.pdf import pdf_items
from monitor.stats import Stats

__all__ = ["ExtractCache", "Member", "Notice", "Text", "detect_format", "extract", "walk"]

# CPU-time budget of one extract() call (thread CPU time, so a loaded host does not cut documents
# short); pure-Python decoders (PDF, tar, SST) check it between objects and pages.
EXTRACT_SECONDS = 5.0

_TEXT_NAMES = (".txt", ".csv", ".tsv", ".log", ".md", ".json", ".xml", ".html", ".htm", ".eml", ".ini")
_COMPRESSED_NAMES = {".gz": "", ".tgz": ".tar", ".bz2": "", ".tbz2": ".tar", ".xz": "", ".txz": ".tar"}


def detect_format(data: bytes, name: str = "", mime: str | None = None) -> str | None:
    """``zip``, ``gzip``, ``bzip2``, ``xz``, ``tar``, ``pdf``, ``ole``, ``text`` or None."""
    mime = (mime or "").lower()
    if mime.startswith(("multipart/", "message/")):
        # The app layer splits these into parts itself; sniffing would find a part's PDF header
        # inside the first KiB (below) and extract the same document twice under the wrong path.
        return None
    if data.startswith(_LEADING_MAGIC):  # most files have none: one test instead of five
        fmt = _leading_magic_format(data)
        if fmt is not None:
            return fmt
    if data[257:262] == b"ustar":
        return "tar"
    if data.find(b"%PDF-", 0, 1024) >= 0:  # b"%PDF-" in data[:1024], without the copy
        return "pdf"
    lname = name.lower()
    if (lname.endswith(".tar") or "x-tar" in mime) and len(data) >= 512:
        return "tar"
    if mime.startswith("text/") or lname.endswith(_TEXT_NAMES) or _looks_textual(data):
        return "text"
    return None


_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
_LEADING_MAGIC = (*_ZIP_MAGIC, b"\x1f\x8b", OLE_MAGIC, b"BZh", b"\xfd7zXZ\x00")


def _leading_magic_format(data: bytes) -> str | None:
    if data.startswith(_ZIP_MAGIC):
        return "zip"
    if data.startswith(b"\x1f\x8b"):
        return "gzip"
    if data.startswith(OLE_MAGIC):
        return "ole"
    if data.startswith(b"BZh") and data[4:10] == b"1AY&SY":
        return "bzip2"
    if data.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    return None  # "BZh" without the bzip2 block magic: the checks below decide


def _looks_textual(data: bytes) -> bool:
    sample = data[:4096]
    return bool(sample) and charset.guess(sample) is not None


def extract(
    data: bytes, *, name: str, mime: str | None, depth: int, limits: ContentConfig, stats: Stats
) -> Iterator[Member | Text | Notice]:
    """Members, text and notices of one file (see the module docstring). Never raises.

    Lazy like a generator: nothing runs before the first item is asked for."""
    return _items(data, name, mime, depth, limits, stats, None)


def _items(
    data: bytes, name: str, mime: str | None, depth: int, limits: ContentConfig, stats: Stats, known: str | None
) -> Iterator[Item]:
    """extract()'s body; ``known`` is detect_format's answer when the caller has it already."""
    fmt = "unknown"
    try:
        if depth > limits.max_depth:
            raise Budget(limits, stats, len(data)).fail("depth", f"nesting deeper than {limits.max_depth}")
        fmt = known or detect_format(data, name, mime) or "unknown"
        if fmt == "text":
            # Text never checks the CPU-time budget: no clock read (a system call) for it.
            yield from _text(data, name, depth, Budget(limits, stats, len(data)))
            return
        handler = _HANDLERS.get(fmt)
        if handler is not None:
            budget = Budget(limits, stats, len(data), deadline=time.thread_time() + EXTRACT_SECONDS)
            yield from handler(data, name, depth, budget)
    except CapHit as e:
        yield Notice(NOTICE_OF_CAP.get(e.cap, "truncated"), e.detail)
    except Malformed as e:
        stats.incr("content.malformed", format=fmt)
        yield Notice("malformed", f"{fmt}: {e}")
    except Exception as e:  # noqa: BLE001 - hostile input must never take the sensor down
        stats.incr("content.error", format=fmt)
        yield Notice("malformed", f"{fmt}: decoder error {e.__class__.__name__}")


def _decoded(budget: Budget, fmt: str) -> None:
    budget.stats.incr("content.decoded", format=fmt)


def _container_allowed(budget: Budget, depth: int) -> None:
    if depth >= budget.limits.max_depth:
        raise budget.fail("depth", f"members would be deeper than {budget.limits.max_depth}")


def _member_notices(err: CapHit | Malformed | None, budget: Budget, fmt: str) -> Iterator[Notice]:
    if isinstance(err, CapHit):
        if err.fatal:
            raise err
        yield Notice(NOTICE_OF_CAP.get(err.cap, "truncated"), err.detail)
    elif isinstance(err, Malformed):
        budget.stats.incr("content.malformed", format=fmt)
        yield Notice("malformed", f"{fmt}: {err}")


def _zip(data: bytes, name: str, depth: int, budget: Budget) -> Iterator[Item]:
    # Directories and OOXML parts count too: room for them above the member cap.
    members, overlapping = zip_members(data, limit=2 * budget.limits.max_members + 64)
    if overlapping:
        budget.stats.incr("content.bomb", kind="overlap")
        yield Notice("bomb", f"{overlapping} overlapping zip entries refused")
    names = {m.entry.name for m in members}
    can_descend = depth < budget.limits.max_depth
    if is_ooxml(names):
        _decoded(budget, ooxml_format(names))
        yield from ooxml_items(data, members, budget, can_descend)
        return
    odf = odf_format(data, members, budget)
    if odf is not None:
        _decoded(budget, odf)
        yield from odf_items(data, members, budget)
        return
    _decoded(budget, "zip")
    files = [m for m in members if not m.entry.is_dir]
    encrypted = sum(m.entry.encrypted for m in files)
    if encrypted:
        budget.stats.incr("content.encrypted", format="zip")
        yield Notice("encrypted", f"{encrypted} of {len(files)} zip members encrypted")
    _container_allowed(budget, depth)
    for m in files:
        if m.entry.encrypted:
            continue
        budget.check_time()
        budget.take_member()
        body, err = read_all(read_zip_member(data, m, budget))
        if body or err is None:
            yield Member(m.entry.name, body, f"zip:{m.entry.name}", truncated=err is not None)
        yield from _member_notices(err, budget, "zip")


def _single(fmt: str, chunks: Callable[[bytes, Budget], Iterator[bytes]]) -> Callable[..., Iterator[Item]]:
    """A handler for one-member compressed files (gzip, bzip2, xz)."""

    def handler(data: bytes, name: str, depth: int, budget: Budget) -> Iterator[Item]:
        _decoded(budget, fmt)
        _container_allowed(budget, depth)
        inner = gzip_name(data) if fmt == "gzip" else None
        if not inner:
            base, dot, ext = name.rpartition(".")
            inner = base + _COMPRESSED_NAMES.get(dot + ext.lower(), "") if dot and base else name or "data"
        budget.take_member()
        body, err = read_all(chunks(data, budget))
        if body or err is None:
            yield Member(inner, body, f"{fmt}:{inner}", truncated=err is not None)
        yield from _member_notices(err, budget, fmt)

    return handler


def _bunzip2(data: bytes, budget: Budget) -> Iterator[bytes]:
    return inflate(data, "bzip2", budget)


def _unxz(data: bytes, budget: Budget) -> Iterator[bytes]:
    d = lzma.LZMADecompressor()
    pos = 0
    produced = 0
    view = memoryview(data)
    while not d.eof:
        feed = view[pos : pos + (1 << 16)] if d.needs_input else b""
        pos += len(feed)
        try:
            out = d.decompress(feed, 1 << 16)
        except lzma.LZMAError as e:
            raise Malformed("corrupt xz data") from e
        if not out and d.needs_input and pos >= len(data):
            raise Malformed("truncated xz stream")
        produced += len(out)
        if produced > max(1 << 20, budget.limits.max_ratio * len(data)):
            raise budget.fail("ratio", f"xz decompression ratio over {budget.limits.max_ratio}")
        if out:
            yield from account(budget, out)


def _tar(data: bytes, name: str, depth: int, budget: Budget) -> Iterator[Item]:
    _decoded(budget, "tar")
    _container_allowed(budget, depth)
    for member_name, body in tar_members(data, budget):
        yield Member(member_name, body, f"tar:{member_name}")


def _pdf(data: bytes, name: str, depth: int, budget: Budget) -> Iterator[Item]:
    _decoded(budget, "pdf")
    yield from pdf_items(data, budget)


def _ole(data: bytes, name: str, depth: int, budget: Budget) -> Iterator[Item]:
    yield from ole_items(data, budget)


def _text(data: bytes, name: str, depth: int, budget: Budget) -> tuple[Item, ...]:
    # A tuple, not a generator: one decoding gives at most two items, nothing to stream.
    decoded = charset.decode(data)
    if decoded is None:
        return ()
    cs, text, utf8 = decoded
    _decoded(budget, "text")
    text, clipped = budget.clip_text(text)
    if not clipped:
        return (Text(text, f"text:{cs}", utf8),) if text else ()
    notice = Notice("truncated", "text cap reached")
    return (Text(text, f"text:{cs}", None), notice) if text else (notice,)


_HANDLERS: dict[str, Callable[[bytes, str, int, Budget], Iterable[Item]]] = {
    "zip": _zip,
    "gzip": _single("gzip", gunzip),
    "bzip2": _single("bzip2", _bunzip2),
    "xz": _single("xz", _unxz),
    "tar": _tar,
    "pdf": _pdf,
    "ole": _ole,
    "text": _text,
}


def walk(
    data: bytes, *, name: str, limits: ContentConfig, stats: Stats, mime: str | None = None, depth: int = 0
) -> Iterator[tuple[str, Text | Notice]]:
    """Text and notices of a file and, recursively, of all its members, as (path, item).

    ``path`` joins the member paths with " > ". The members of the whole walk together are held
    to ``max_decompressed`` bytes and ``max_members`` files, so recursion cannot multiply the caps.
    """
    stack: list[tuple[bytes, str, str, int]] = [(data, name, "", depth)]
    total_bytes = 0
    total_members = 0
    while stack:
        blob, blob_name, path, d = stack.pop()
        children: list[tuple[bytes, str, str, int]] = []
        for item in extract(blob, name=blob_name, mime=mime if d == depth else None, depth=d,
                            limits=limits, stats=stats):
            if isinstance(item, Member):
                total_bytes += len(item.data)
                total_members += 1
                if total_bytes > limits.max_decompressed or total_members > limits.max_members:
                    cap = "size" if total_bytes > limits.max_decompressed else "members"
                    stats.incr("content.cap", cap=cap)
                    yield path, Notice(NOTICE_OF_CAP[cap], f"walk over its {cap} cap")
                    return
                children.append((item.data, item.name, f"{path} > {item.path}" if path else item.path, d + 1))
            else:
                yield path, item
        stack.extend(reversed(children))


class _RecordingStats:
    """Forwards ``incr`` to the real counters and keeps the calls, to be replayed on a hit."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.calls: list[tuple[str, int, dict[str, Any]]] = []

    def incr(self, name: str, n: int = 1, **labels: Any) -> None:
        self.calls.append((name, n, labels))
        self.stats.incr(name, n, **labels)


_CACHED_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08", OLE_MAGIC, b"%PDF-")
_CACHED_FORMATS = ("zip", "ole", "pdf")


_Calls = list[tuple[str, int, dict[str, Any]]]


class _Entry:
    """A kept ``extract()`` outcome; ``size`` includes the results of its members (below)."""

    __slots__ = ("items", "calls", "size", "member_ids")

    def __init__(self, items: list[Item], calls: _Calls, size: int) -> None:
        self.items = items
        self.calls = calls
        self.size = size
        self.member_ids: list[int] = []  # the ids of the member contents registered for it


class _MemberResults:
    """The outcomes of ``extract()`` on one member content of a kept entry, by the rest of the
    arguments (name, MIME type, depth, limits)."""

    __slots__ = ("data", "owner", "results")

    def __init__(self, data: bytes, owner: _Entry) -> None:
        self.data = data
        self.owner = owner
        self.results: dict[tuple[Any, ...], tuple[list[Item], _Calls]] = {}


class ExtractCache:
    """The items and counter increments of recent ``extract()`` calls, replayed for a call with
    the same bytes, name, MIME type, depth and limits.

    The same attachment mailed to many recipients, the same archive downloaded again: decoding
    it again would give the same items (``extract`` is a function of those arguments and the
    limits) and the same counters, which are replayed. Only zip (and OOXML, ODF), OLE2 and PDF
    files are kept: the costly decoders, and formats found by their magic bytes whose decoding
    never looks at the name or MIME type, so those are not part of the key (a download's name
    is its URL). Only calls that ran to the end without the CPU-time cap (whose outcome depends
    on the machine, not the input) are kept. At most ``max_bytes`` of inputs and outputs are
    held, least recently used first out; an input over ``max_input`` bytes is never kept.

    A hit replays the very Member objects of the first call, and the pipeline extracts each
    member again: a text member of a repeated zip would be decoded again each time. So the
    members of a kept entry are registered by the identity of their content (the entry keeps
    the ``bytes`` object alive, so no other object can take its ``id``; a match is checked with
    ``is``), and ``extract()`` on such a content is kept as well, whatever its format, keyed by
    name, MIME type, depth and limits, under the same rules; it leaves with its entry.
    """

    def __init__(self, max_bytes: int = 32 << 20, max_input: int = 4 << 20) -> None:
        self.max_bytes = max_bytes
        self.max_input = max_input
        self.size = 0
        self.hits = 0
        self.member_hits = 0
        self._entries: OrderedDict[tuple[Any, ...], _Entry] = OrderedDict()
        self._members: dict[int, _MemberResults] = {}

    def extract(
        self, data: bytes, *, name: str, mime: str | None, depth: int, limits: ContentConfig, stats: Stats
    ) -> Iterator[Member | Text | Notice]:
        """``extract()`` with the same items and counters, from the cache when it can (lazy too).

        A plain function, not a generator: a file the cache does not keep goes straight to
        extract()'s iterator, with no generator of its own in between."""
        fmt = self._cacheable(data, name, mime) if self.max_bytes > 0 else None
        if fmt is not None:
            return self._cached(data, name, mime, depth, limits, stats, fmt)
        member = self._members.get(id(data)) if self._members else None
        if member is not None and member.data is data:
            return self._member(member, name, mime, depth, limits, stats)
        return _items(data, name, mime, depth, limits, stats, None)

    def _cached(
        self, data: bytes, name: str, mime: str | None, depth: int, limits: ContentConfig, stats: Stats, fmt: str
    ) -> Iterator[Item]:
        key = (data, depth, limits)
        hit = self._entries.get(key)
        if hit is not None:
            self._entries.move_to_end(key)
            self.hits += 1
            yield from _replay(hit.items, hit.calls, stats)
            return
        items, calls = yield from _recorded(data, name, mime, depth, limits, stats, fmt)
        if _keepable(calls):
            self._put(key, items, calls)

    def _member(
        self, member: _MemberResults, name: str, mime: str | None, depth: int, limits: ContentConfig, stats: Stats
    ) -> Iterator[Item]:
        """extract() of a registered member content, kept with its entry (see the class docstring)."""
        key = (name, mime, depth, limits)
        hit = member.results.get(key)
        if hit is not None:
            self.member_hits += 1
            yield from _replay(hit[0], hit[1], stats)
            return
        items, calls = yield from _recorded(member.data, name, mime, depth, limits, stats, None)
        owner = member.owner
        # The owner may have left the cache while the items were read (the pipeline extracts
        # the members' members in between): then there is nothing to keep them with.
        if _keepable(calls) and self._members.get(id(member.data)) is member:
            size = 64 + sum(_held(i) for i in items)
            member.results[key] = (items, calls)
            self._register_members(owner, items)
            owner.size += size
            self.size += size
            self._evict()

    def _cacheable(self, data: bytes, name: str, mime: str | None) -> str | None:
        """The format of a file the cache keeps (zip, ole, pdf), else None."""
        if len(data) > self.max_input or not (data.startswith(_CACHED_MAGIC) or data.find(b"%PDF-", 0, 1024) >= 0):
            return None
        fmt = detect_format(data, name, mime)  # cheap with these magic bytes
        return fmt if fmt in _CACHED_FORMATS else None

    def _put(self, key: tuple[Any, ...], items: list[Item], calls: _Calls) -> None:
        size = len(key[0]) + 256 + sum(_held(i) for i in items)
        if size > self.max_bytes // 4:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self._drop(old)
        entry = _Entry(items, calls, size)
        self._entries[key] = entry
        self.size += size
        self._register_members(entry, items)
        self._evict()

    def _register_members(self, owner: _Entry, items: list[Item]) -> None:
        for item in items:
            if not isinstance(item, Member):
                continue
            data = item.data
            # bytes only: an id stands for unchanged content only while the object cannot change.
            # Short ones too: a 200-byte gzip member may hold megabytes of text.
            if type(data) is bytes and id(data) not in self._members:
                self._members[id(data)] = _MemberResults(data, owner)
                owner.member_ids.append(id(data))

    def _evict(self) -> None:
        while self.size > self.max_bytes:
            _, dropped = self._entries.popitem(last=False)
            self._drop(dropped)

    def _drop(self, entry: _Entry) -> None:
        self.size -= entry.size
        for member_id in entry.member_ids:
            member = self._members.get(member_id)
            if member is not None and member.owner is entry:
                del self._members[member_id]


def _recorded(data: bytes, name: str, mime: str | None, depth: int, limits: ContentConfig, stats: Stats,
              fmt: str | None) -> Generator[Item, None, tuple[list[Item], _Calls]]:
    """extract()'s items, yielded as they come; returns them with the counter increments they made."""
    recorder = _RecordingStats(stats)
    items = []
    for item in _items(data, name, mime, depth, limits, cast(Stats, recorder), fmt):
        items.append(item)
        yield item
    return items, recorder.calls


def _replay(items: list[Item], calls: _Calls, stats: Stats) -> Iterator[Item]:
    for counter, n, labels in calls:
        stats.incr(counter, n, **labels)
    yield from items


def _keepable(calls: _Calls) -> bool:
    """A recorded outcome may be kept: the CPU-time cap (which depends on the machine, not the
    input) did not cut it short."""
    return not any(c == "content.cap" and labels.get("cap") == "time" for c, _, labels in calls)


def _held(item: Item) -> int:
    """About the bytes an item keeps alive (text at 2 bytes a character, plus its UTF-8)."""
    if isinstance(item, Member):
        return len(item.data) + 128
    if isinstance(item, Text):
        return 2 * len(item.text) + len(item.utf8 or b"") + 128
    return 128
