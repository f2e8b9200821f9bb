"""Files are first-class and protocol-independent (Zeek's Files framework).

Every transferred object -- an HTTP body, a multipart part, a mail attachment, an FTP data
stream, an archive member -- is one :class:`FileObject`. Parsers write bytes and gaps into it;
the pipeline's :class:`FileListener` scans the bytes as they arrive, and on close runs the
content decoders, checks fingerprints and writes the ``fileinfo`` event. A hash is reported
only for a complete file without gaps.

Hashing (the ``content.hashes`` set, SHA-256 always as detection needs it, each reported in
``fileinfo``) is the floor of the per-byte cost, so it is done once and late: while the content
is buffered, the hashes are fed from the buffer in :data:`HASH_BLOCK` runs (one call per run, not
one per write); once the buffer is given up (over
``max_buffer``) every write is hashed as it comes. A gap, or a close as TRUNCATED/ERROR, ends the
hashing -- those files never report a hash, so the bytes still pending are not hashed at all.
The hash objects themselves are created on the first run to hash (most files stay buffered
until their close, and an open file -- a keep-alive response waiting for stray bytes -- then
holds no hash state).

The buffer is a list of the written pieces, not one growing bytearray: a write keeps a reference
(no copy, no reallocation of everything so far), writes under :data:`SMALL_WRITE` bytes share
one bytearray (so a stream of tiny writes costs no more memory than before), and a clean close
joins the pieces once into the ``bytes`` that :meth:`FileObject.content` returns (a file written
in one piece is never copied) and hashes what is still pending in one call.

An archive member written again as the very same ``bytes`` object (the extraction cache replays
a repeated archive's members as the same objects) takes its digests from a small memo keyed by
that object's identity instead of being hashed again (:class:`_DigestMemo`); so that the memo
can answer, a member's single piece is hashed at the close rather than at the write.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, ClassVar, Protocol, cast

from monitor.content.magic import HEAD_BYTES, detect_type
from monitor.model import Flow

STATE_OPEN = "OPEN"
STATE_CLOSED = "CLOSED"
STATE_TRUNCATED = "TRUNCATED"
STATE_ERROR = "ERROR"

_file_ids = itertools.count(1)
# The hashes a file can report, in fileinfo order; SHA-256 is always computed (file fingerprints,
# evidence and incidents are keyed by it). MD5/SHA-1 are identifiers here, not security.
HASH_NAMES = ("sha256", "md5", "sha1")
REQUIRED_HASH = "sha256"
_HASH_FACTORIES = {"sha256": hashlib.sha256, "md5": hashlib.md5, "sha1": hashlib.sha1}
HASH_BLOCK = 256 * 1024  # buffered bytes hashed together (bounds the work done by one write)
# Writes shorter than this are appended to one shared bytearray rather than kept as pieces: a
# piece costs about 40 bytes of object and list slot, under 8 % of a piece this long.
SMALL_WRITE = 512
# The digest memo (see _DigestMemo) keeps at most this many bytes of member contents alive, and
# only members at least DIGEST_MEMO_MIN long (shorter ones cost less to hash than to look up).
DIGEST_MEMO_BYTES = 8 << 20
DIGEST_MEMO_MIN = 4096


class FileListener(Protocol):
    def on_file_data(self, f: FileObject, data: bytes) -> None: ...
    def on_file_gap(self, f: FileObject, length: int) -> None: ...
    def on_file_close(self, f: FileObject) -> None: ...


class FileObject:
    """A transferred object. ``buffer`` keeps the content (up to ``max_buffer``) for decoders."""

    __slots__ = (
        "file_id", "flow", "tx_id", "direction", "name", "source", "protocol", "declared_type",
        "detected_type", "size", "missing_bytes", "state", "depth", "parent", "charset",
        "_hashers", "_hash_names", "_hashing", "sha256", "md5", "sha1",
        "_chunks", "_tail", "_buffered", "_hashed", "_hashed_chunks", "buffer_overflow", "max_buffer",
        "listener", "app", "extra", "_head", "declared_size",
    )

    # The hashes computed when the constructor is not given ``hashes``: set once per pipeline from
    # content.hashes (configure_hashes), so the set costs nothing per file.
    configured_hashes: ClassVar[tuple[str, ...]] = (REQUIRED_HASH,)

    @classmethod
    def configure_hashes(cls, names: Iterable[str]) -> None:
        cls.configured_hashes = hash_set(names)

    def __init__(
        self,
        flow: Flow | None,
        direction: int,
        *,
        name: str = "",
        source: str = "",
        protocol: str = "",
        tx_id: int | None = None,
        declared_type: str | None = None,
        declared_size: int | None = None,
        charset: str | None = None,
        depth: int = 0,
        parent: FileObject | None = None,
        max_buffer: int = 64 << 20,
        listener: FileListener | None = None,
        app: dict[str, Any] | None = None,
        hashes: Iterable[str] | None = None,
    ) -> None:
        self.file_id = next(_file_ids)
        self.flow = flow
        self.tx_id = tx_id
        self.direction = direction
        self.name = name
        self.source = source  # where path: "http.request.body > multipart[file=a.docx]"
        self.protocol = protocol
        self.declared_type = declared_type
        self.declared_size = declared_size
        self.detected_type: str | None = None
        self.charset = charset
        self.size = 0
        self.missing_bytes = 0
        self.state = STATE_OPEN
        self.depth = depth
        self.parent = parent
        self._hashing = True  # False once no hash can be reported (gap, truncation)
        self._hash_names = self.configured_hashes if hashes is None else hash_set(hashes)
        self._hashers: list[Any] | None = None  # the hash objects, from the first bytes hashed (_hash)
        self.sha256: str | None = None
        self.md5: str | None = None
        self.sha1: str | None = None
        # The buffered content, as pieces (None: given up). The first _hashed_chunks pieces, the
        # first _hashed bytes, have been fed to the hashes; _tail is the last piece when it is
        # the bytearray that small writes are appended to (never one of the hashed pieces).
        self._chunks: list[bytes | bytearray] | None = []
        self._tail: bytearray | None = None
        self._buffered = 0
        self._hashed = 0
        self._hashed_chunks = 0
        self.buffer_overflow = False
        self.max_buffer = max_buffer
        self.listener = listener
        self.app = app or {}  # app-layer object merged into fileinfo/alert events ({"http": {...}})
        self.extra: dict[str, Any] = {}
        self._head = b""

    @property
    def gaps(self) -> bool:
        return self.missing_bytes > 0

    @property
    def is_open(self) -> bool:
        return self.state == STATE_OPEN

    @property
    def buffer(self) -> bytes | None:
        """The content so far (None: given up -- over ``max_buffer``, a gap, or used and dropped)."""
        chunks = self._chunks
        if chunks is None:
            return None
        return chunks[0] if len(chunks) == 1 and type(chunks[0]) is bytes else b"".join(chunks)

    @buffer.setter
    def buffer(self, value: bytes | bytearray | None) -> None:
        if value is None and self._chunks is not None and self.state == STATE_OPEN:
            self._hash_pending()  # the buffered bytes are still owed to the hashes
        self._chunks = None if value is None else [bytes(value)]
        self._tail = None
        self._buffered = self._hashed = 0 if value is None else len(value)
        self._hashed_chunks = 0 if value is None else 1

    def write(self, data: bytes) -> None:
        if self.state != STATE_OPEN or not data:
            return
        size = self.size
        n = len(data)
        if size < HEAD_BYTES:
            self._head += data[: HEAD_BYTES - size]
        self.size = size + n
        chunks = self._chunks
        if chunks is None:
            if self._hashing:
                self._hash(data)
        elif self._buffered + n <= self.max_buffer:
            first = not chunks
            if n >= SMALL_WRITE:
                # A reference, not a copy; bytes only (a caller may reuse a bytearray or view).
                chunks.append(data if type(data) is bytes else bytes(data))
                self._tail = None
            elif self._tail is None:
                self._tail = bytearray(data)
                chunks.append(self._tail)
            else:
                self._tail += data
            self._buffered += n
            # A member's one piece waits for the close, where the digest memo may know it.
            if self._buffered - self._hashed >= HASH_BLOCK and not (first and self.parent is not None):
                self._hash_pending()
        else:
            self._hash_pending()
            if self._hashing:
                self._hash(data)
            self._chunks = self._tail = None
            self.buffer_overflow = True
        if self.listener is not None:
            self.listener.on_file_data(self, data)

    def _hash(self, data: Any) -> None:
        hashers = self._hashers
        if hashers is None:
            names = self._hash_names
            if len(names) == 1:  # SHA-256 alone, the default: no list comprehension frame
                self._hashers = [hashlib.sha256(data)]
            else:
                self._hashers = [_HASH_FACTORIES[name](data) for name in names]
        else:
            for h in hashers:
                h.update(data)

    def _hash_pending(self) -> None:
        """Join the buffered pieces not yet hashed into one (so the list stays short) and feed it
        to the hashes in one call."""
        chunks = self._chunks
        if chunks is None or self._hashed >= self._buffered:
            return
        first = self._hashed_chunks
        block = chunks[first]
        if len(chunks) > first + 1 or type(block) is not bytes:
            block = b"".join(chunks[first:])
            chunks[first:] = [block]
        self._tail = None  # the shared bytearray is now part of a hashed piece
        self._hashed_chunks = len(chunks)
        self._hashed = self._buffered
        if self._hashing:
            self._hash(block)

    def _join(self) -> bytes | None:
        """At a clean close: the pieces become one ``bytes`` (what content() returns)."""
        chunks = self._chunks
        if chunks is None:
            return None
        whole = chunks[0] if len(chunks) == 1 and type(chunks[0]) is bytes else b"".join(chunks)
        self._chunks = [whole]
        self._tail = None
        self._buffered = len(whole)
        self._hashed_chunks = 1
        return whole

    def _digests(self) -> tuple[str, ...]:
        """At a clean close: the hex digests of the whole content, in ``_hash_names`` order. The
        part not hashed yet is hashed from the joined content in one call; a member nothing of
        which was hashed yet may find its digests in the memo instead."""
        whole = self._join()
        memo_key = whole if self._may_use_memo(whole) else None
        if memo_key is not None:
            known = _digest_memo.get(memo_key, self._hash_names)
            if known is not None:
                self._hashed = len(memo_key)
                return known
        if whole is not None and self._hashed < len(whole):
            if self._hashed:
                with memoryview(whole) as view, view[self._hashed:] as pending:
                    self._hash(pending)
            else:
                self._hash(whole)
            self._hashed = len(whole)
        if self._hashers is None:
            self._hash(b"")  # an empty file (nothing was ever hashed)
        hashers = cast(list[Any], self._hashers)
        digests = (hashers[0].hexdigest(),) if len(hashers) == 1 else tuple(h.hexdigest() for h in hashers)
        if memo_key is not None:
            _digest_memo.put(memo_key, self._hash_names, digests)
        return digests

    def _may_use_memo(self, whole: bytes | None) -> bool:
        """A member's content of which nothing was hashed yet (see :class:`_DigestMemo`)."""
        return whole is not None and self._hashers is None and self.parent is not None and len(whole) >= DIGEST_MEMO_MIN

    def gap(self, length: int) -> None:
        if self.state != STATE_OPEN or length <= 0:
            return
        self.missing_bytes += length
        self.size += length
        # A file with a hole never reports a hash: stop hashing. Content decoders cannot trust a
        # buffer with a hole either; the file is still scanned as a stream.
        self._hashing = False
        self._hashers = None
        self._chunks = self._tail = None
        if self.listener is not None:
            self.listener.on_file_gap(self, length)

    def close(self, state: str | None = None) -> None:
        """Finish the file. ``state`` TRUNCATED/ERROR overrides; gaps always mean TRUNCATED."""
        if self.state != STATE_OPEN:
            return
        self.detected_type = detect_type(self._head)
        if state in (STATE_ERROR, STATE_TRUNCATED):
            self.state = state
        elif self.gaps:
            self.state = STATE_TRUNCATED
        else:
            self.state = STATE_CLOSED
        if self.state == STATE_CLOSED and self._hashing:
            for name, digest in zip(self._hash_names, self._digests(), strict=True):
                setattr(self, name, digest)
        self._hashing = False
        self._hashers = None
        if self.listener is not None:
            self.listener.on_file_close(self)

    def content(self) -> bytes | None:
        """The whole content when it was kept (complete, within max_buffer), else None."""
        chunks = self._chunks
        if chunks is None or self.state != STATE_CLOSED:
            return None
        if len(chunks) != 1 or type(chunks[0]) is not bytes:  # closed before the join (no hashing)
            chunks[:] = [b"".join(chunks)]
        return cast(bytes, chunks[0])

    def fileinfo(self) -> dict[str, Any]:
        """The EVE ``fileinfo`` object."""
        info: dict[str, Any] = {
            "file_id": self.file_id,
            "filename": self.name,
            "source": self.source,
            "protocol": self.protocol,
            "size": self.size,
            "state": self.state,
            "gaps": self.gaps,
            "stored": False,
            "depth": self.depth,
        }
        if self.tx_id is not None:
            info["tx_id"] = self.tx_id
        if self.declared_type:
            info["declared_type"] = self.declared_type
        if self.detected_type:
            info["magic"] = self.detected_type
        if self.missing_bytes:
            info["missing_bytes"] = self.missing_bytes
        if self.sha256:
            for name in self._hash_names:
                info[name] = getattr(self, name)
        if self.parent is not None:
            info["parent_file_id"] = self.parent.file_id
        return info


def hash_set(names: Iterable[str]) -> tuple[str, ...]:
    """The hashes named, in fileinfo order. ValueError for an unknown name or a set without SHA-256."""
    wanted = set(names)
    unknown = sorted(wanted.difference(HASH_NAMES))
    if unknown:
        raise ValueError(f"unknown hash {unknown[0]!r} (known: {', '.join(HASH_NAMES)})")
    if REQUIRED_HASH not in wanted:
        raise ValueError(f"must include {REQUIRED_HASH!r}: file fingerprints, evidence and incidents use it")
    return tuple(name for name in HASH_NAMES if name in wanted)


class _DigestMemo:
    """The digests of member contents hashed recently, found by the identity of the content.

    :class:`monitor.content.extract.ExtractCache` replays a repeated archive (the same attachment
    mailed again, the same zip downloaded again) as the very same Member objects, so the
    pipeline writes the same ``bytes`` object into the member's FileObject: hashing it again
    would give the same digests. An entry keeps its ``bytes`` object alive, so no other object
    can take its ``id`` while the entry exists, and a match is checked with ``is``: equal digests
    follow from the identical immutable object, never from a hash of the content. At most
    DIGEST_MEMO_BYTES of contents are held, least recently used first out.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._entries: OrderedDict[int, tuple[bytes, tuple[str, ...], tuple[str, ...]]] = OrderedDict()

    def get(self, content: bytes, names: tuple[str, ...]) -> tuple[str, ...] | None:
        entry = self._entries.get(id(content))
        if entry is None or entry[0] is not content or entry[1] != names:
            return None
        self._entries.move_to_end(id(content))
        return entry[2]

    def put(self, content: bytes, names: tuple[str, ...], digests: tuple[str, ...]) -> None:
        if len(content) > self.max_bytes:
            return
        old = self._entries.pop(id(content), None)
        if old is not None:
            self.size -= len(old[0])
        self._entries[id(content)] = (content, names, digests)
        self.size += len(content)
        while self.size > self.max_bytes:
            _, (dropped, _, _) = self._entries.popitem(last=False)
            self.size -= len(dropped)


_digest_memo = _DigestMemo(DIGEST_MEMO_BYTES)
