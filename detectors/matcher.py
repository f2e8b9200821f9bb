"""One multi-pattern matcher interface over bytes, two engines: Hyperscan and pyahocorasick.

``compile(patterns, engine) -> Matcher``; ``Matcher.scan(data)`` (block mode) and
``Matcher.stream()`` (stream mode: ``feed(data)`` returns matches with absolute stream offsets,
so a pattern straddling two chunks is found). Both engines report exactly the same matches,
which the test suite checks with a property test.

Match semantics (the contract both engines implement):

* a match is ``(pattern_id, start, end)``, offsets into the scanned data (block) or into the
  whole stream since the last ``reset()`` (stream);
* literals: every occurrence, overlapping ones included;
* regexes: one match per distinct end offset, ``start`` the leftmost start of a match ending
  there (Hyperscan's SOM_LEFTMOST semantics). Regexes must have a bounded width of at most
  :data:`MAX_REGEX_WIDTH` bytes and no anchors, lookarounds, word boundaries or back
  references, so the fallback engine can confirm them on a window and streams carry a
  bounded history;
* ``nocase`` is ASCII case-insensitivity (bytes outside A-Z/a-z compare exactly);
* results are sorted by ``(end, pattern_id, start)``;
* ``compile(..., line_probe=True)`` adds the *line probe*: one extra match
  ``(LINE_PROBE, base, base)`` (``base``: 0 in block mode, the chunk's first offset in stream
  mode) where MIME-style lines *start* in the scanned data (the match ends there): a base64
  line of at least 40 characters after an empty line (a MIME part's body), after an armour
  line ending in ``-----`` (PEM, PGP) or as the first line of the data; a quoted-printable
  soft-broken line after a hard line break or as the first line (:data:`PROBES`). Whoever reads
  the probe keeps track of where the lines end (detectors/markers.py). Each probe is anchored on
  a literal (or on the start of the data), so Hyperscan keeps its speed: measured on the m50
  benchmark capture's segments, 0.72 us per segment without the probe and 0.9-1.0 us with it,
  where a probe for *any* line followed by 40 base64 characters cost 1.9-2.8 us (a one-byte
  ``\n`` literal wakes the repeat engine at every line break of text and every 256th byte of
  binary data). A long MIME body costs one callback, not one per line. The fallback engine
  runs the same regexes in Python (:func:`has_line_structure`). In stream mode the probe is
  a hint (a match may straddle chunks differently in the two engines); it is not part of the
  identical-matches contract.

Engine notes (measured traps of the PyPI builds):

* python-hyperscan 0.9.1 falls back to the stream's creation-time context when the
  ``context=`` passed to ``Stream.scan`` is *falsy* (an empty list!) and crashes; we always
  pass a truthy collector object explicitly.
* ``literal=True`` cuts patterns at NUL bytes, so every literal is compiled in regex mode
  with each byte hex-escaped (Hyperscan still plans them as literals).
* We never set HS_FLAG_SOM_LEFTMOST: literal starts are ``end - len``, fixed-width regex
  starts ``end - width``; a variable-width regex start is recomputed in Python from a short
  history window on the (rare) hit.
* ``Stream.scan(data)`` and ``Stream.close()`` with no keyword arguments use the handler and
  context given when the stream was created; the extension keeps *borrowed* references to them,
  so they must outlive the Hyperscan stream: the handler is a module function, the context the
  matcher's one collector, which each stream object references through its matcher. Keyword
  parsing costs about a microsecond per call (measured: opening and closing a stream with
  keywords 1.3 us, positionally 0.4 us), so every call into the extension is positional.
* ``Database.stream(...)`` returns its stream with one reference too many and
  ``Stream.__enter__`` returns it with one too few: only the pair balances, so streams are
  always made as ``db.stream(handler, 0, context).__enter__()`` (a ``hyperscan.Stream(...)``
  built directly is freed while still in use).
* pyahocorasick's PyPI build takes only ``str`` keys: bytes are mapped through latin-1 (one
  decode per buffer, and only when the gram filter found a window: see ``_GramFilter``).
  Its speed falls with the number of keys, so it scans only the windows where a key may start.
  Streams carry an overlap of ``max(max_literal_len - 1, max_regex_width)`` bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

try:  # re._parser is the 3.11+ name; sre_parse is deprecated but identical.
    import re._constants as _sre_c  # type: ignore[import-not-found]
    import re._parser as _sre_p  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - older Pythons
    import sre_constants as _sre_c  # type: ignore[no-redef]
    import sre_parse as _sre_p  # type: ignore[no-redef]

import ahocorasick as _ac

from detectors.dbcache import DatabaseCache, database_key

_hs: Any
try:
    import hyperscan as _hs
except ImportError:  # pragma: no cover - exercised where the wheel does not install
    _hs = None

MAX_REGEX_WIDTH = 1024
ENGINES = ("hyperscan", "ahocorasick")
LINE_PROBE = 0x7FFFFFFF  # pattern id of the line probe (never a user pattern id)

Match = tuple[int, int, int]
_NO_MATCHES: list[Match] = []  # returned (never mutated) when a scan found nothing

# The line probe (see the module doc): where base64 or QP lines start.
_B64 = rb"[A-Za-z0-9+/]"
PROBES = (
    rb"\n\r?\n" + _B64 + rb"{40}",  # a MIME part body (or any text block) after an empty line
    rb"-----\r?\n" + _B64 + rb"{40}",  # after an armour line: PEM, PGP
    rb"^[A-Za-z0-9+/=]{0,76}\r?\n" + _B64 + rb"{40}",  # from the first line of the data
    rb"(?:^|\n\r?\n|[^=\r\n]\r?\n)[\x20-\x7e]{0,76}=\r?\n",  # a QP soft-broken line after a hard break
)
_PROBE_RES = tuple(re.compile(p) for p in PROBES)
_PROBE_HISTORY = 120  # longest probe match


class PatternError(ValueError):
    """A pattern the matchers cannot run (the message says why)."""


@dataclass(frozen=True, slots=True)
class Pattern:
    """One pattern. ``data`` is the literal bytes, or a bytes regex when ``regex`` is true."""

    id: int
    data: bytes
    nocase: bool = False
    regex: bool = False


class Stream(Protocol):
    offset: int

    def feed(self, data: bytes) -> list[Match]: ...

    def reset(self) -> None: ...

    def close(self) -> None: ...


class Matcher(Protocol):
    engine: str

    def scan(self, data: bytes) -> list[Match]: ...

    def stream(self) -> Stream: ...


def hyperscan_available() -> bool:
    return _hs is not None


def resolve_engine(name: str) -> str:
    """``auto`` -> Hyperscan when importable, else pyahocorasick."""
    if name == "auto":
        return "hyperscan" if _hs is not None else "ahocorasick"
    if name not in ENGINES:
        raise ValueError(f"unknown matcher engine {name!r} (known: auto, {', '.join(ENGINES)})")
    if name == "hyperscan" and _hs is None:
        raise ValueError("matcher engine 'hyperscan' requested but the hyperscan module is not installed")
    return name


def compile(patterns: Iterable[Pattern], engine: str = "auto", *,  # noqa: A001 - the API's name
            line_probe: bool = False, cache: DatabaseCache | None = None) -> Matcher:
    """Compile patterns into one matcher. Raises PatternError for an unusable pattern.

    ``cache``: where Hyperscan databases are looked up and stored (detectors/dbcache.py)."""
    pats = list(patterns)
    seen: set[int] = set()
    for p in pats:
        if not p.data:
            raise PatternError(f"pattern {p.id}: empty")
        if p.id in seen or p.id == LINE_PROBE:
            raise PatternError(f"pattern {p.id}: duplicate or reserved id")
        seen.add(p.id)
    regexes = {p.id: RegexInfo.analyse(p) for p in pats if p.regex}
    name = resolve_engine(engine)
    if not pats and not line_probe:
        return _EmptyMatcher(name)
    if name == "hyperscan":
        return _HyperscanMatcher(pats, regexes, line_probe, cache)
    return _AhoMatcher(pats, regexes, line_probe)


def has_line_structure(data: bytes) -> bool:
    """Does the line probe match in ``data`` (block mode)?"""
    return _probe_after(data, 0, True)


def _probe_after(buf: bytes, fresh_from: int, at_start: bool) -> bool:
    """A line-probe match ending after ``fresh_from`` in ``buf`` (``at_start``: buf[0] starts the stream)."""
    if b"\n" not in buf:
        return False  # every probe match holds a line break
    pos = 0 if at_start else max(1, fresh_from - _PROBE_HISTORY)  # pos > 0: "^" cannot match
    for rx in _PROBE_RES[:_QP_PROBE]:
        if _first_match_after(rx, buf, pos, len(buf), fresh_from):
            return True
    return _qp_probe_after(buf, pos, fresh_from)


def _first_match_after(rx: re.Pattern[bytes], buf: bytes, pos: int, endpos: int, fresh_from: int) -> bool:
    """Does a match of ``rx`` starting in ``buf[pos:endpos]`` end after ``fresh_from``?"""
    m = rx.search(buf, pos, endpos)
    while m is not None and m.end() <= fresh_from:
        m = rx.search(buf, m.start() + 1, endpos)
    return m is not None


# The QP probe has no literal prefix, so ``re`` tries it at every byte (about 90 us per 1,448-byte
# segment). Every match ends at a soft line break "=\r?\n" and starts at most _QP_PROBE_WIDTH
# bytes before its end, and at any start at most one match is possible (the branches begin with
# different bytes, the printable run cannot cross the line break): so searching a window that
# ends at each soft break finds exactly the matches the whole-buffer search finds. Binary and
# plain text rarely hold "=\n"; a QP body costs one short search per soft-broken line.
_QP_PROBE = 3  # index of the QP probe in PROBES
_QP_BREAK = re.compile(rb"=\r?\n")
_QP_PROBE_WIDTH = 3 + 76 + 3  # "\n\r\n" or "x\r\n", the printable run, "=\r\n"


def _qp_probe_after(buf: bytes, pos: int, fresh_from: int) -> bool:
    rx = _PROBE_RES[_QP_PROBE]
    for brk in _QP_BREAK.finditer(buf, pos):
        end = brk.end()
        if end > fresh_from and _first_match_after(rx, buf, max(pos, end - _QP_PROBE_WIDTH), end, fresh_from):
            return True
    return False


# ---------------------------------------------------------------- regex analysis


@dataclass(slots=True)
class RegexInfo:
    """What both engines need to run a regex identically."""

    pattern: Pattern
    min_width: int
    max_width: int
    ends_at: re.Pattern[bytes]  # the regex anchored at endpos: finds the leftmost start for an end
    prefilter: list[bytes]  # a set of literals one of which every match contains
    prefilter_nocase: bool

    @property
    def fixed(self) -> bool:
        return self.min_width == self.max_width

    @classmethod
    def analyse(cls, p: Pattern) -> RegexInfo:
        flags = re.DOTALL | (re.IGNORECASE if p.nocase else 0)
        try:
            parsed = _sre_p.parse(p.data, flags)
            ends_at = re.compile(b"(?:" + p.data + b")\\Z", flags)
        except re.error as exc:
            raise PatternError(f"regex {p.data!r}: {exc}") from None
        _check_supported(parsed, p.data)
        lo, hi = parsed.getwidth()
        if hi >= _sre_c.MAXREPEAT or hi > MAX_REGEX_WIDTH:
            raise PatternError(
                f"regex {p.data!r}: unbounded or longer than {MAX_REGEX_WIDTH} bytes; "
                "use bounded repeats such as {1,64}"
            )
        if lo == 0:
            raise PatternError(f"regex {p.data!r}: can match the empty string")
        pre = _required_literals(list(parsed))
        if not pre:
            raise PatternError(
                f"regex {p.data!r}: has no required literal text (or small character class) "
                "to prefilter on; add a fixed part"
            )
        return cls(p, lo, hi, ends_at, sorted(set(pre)), p.nocase)


_UNSUPPORTED = {
    "AT": "anchors and word boundaries (^ $ \\b \\B \\A \\Z)",
    "ASSERT": "lookahead/lookbehind",
    "ASSERT_NOT": "negative lookahead/lookbehind",
    "GROUPREF": "back references",
    "GROUPREF_EXISTS": "conditional groups",
    "ATOMIC_GROUP": "atomic groups",
    "POSSESSIVE_REPEAT": "possessive repeats",
}


def _check_supported(items: Any, src: bytes) -> None:
    for op, av in items:
        name = str(op)
        if name in _UNSUPPORTED:
            raise PatternError(f"regex {src!r}: {_UNSUPPORTED[name]} are not supported")
        if name == "SUBPATTERN":
            _check_supported(av[-1], src)
        elif name in ("MAX_REPEAT", "MIN_REPEAT"):
            _check_supported(av[2], src)
        elif name == "BRANCH":
            for alt in av[1]:
                _check_supported(alt, src)


def _required_literals(items: list[Any]) -> list[bytes]:
    """A set of literals at least one of which occurs in every match, or [] if none is found.

    Takes the best of: the longest run of consecutive literal bytes in the top-level sequence;
    a required sub-group/branch whose every alternative has a required literal; a small
    character class (at most 16 single bytes).
    """
    candidates: list[list[bytes]] = []
    run = bytearray()

    def close_run() -> None:
        if run:
            candidates.append([bytes(run)])
            run.clear()

    for op, av in items:
        name = str(op)
        if name == "LITERAL":
            run.append(av)
            continue
        close_run()
        if name == "SUBPATTERN":
            sub = _required_literals(list(av[-1]))
            if sub:
                candidates.append(sub)
        elif name == "BRANCH":
            alts = [_required_literals(list(a)) for a in av[1]]
            if alts and all(alts):
                candidates.append([lit for a in alts for lit in a])
        elif name in ("MAX_REPEAT", "MIN_REPEAT") and av[0] >= 1:
            sub = _required_literals(list(av[2]))
            if sub:
                candidates.append(sub)
        elif name == "IN":
            bytes_in = _class_bytes(av)
            if bytes_in is not None and len(bytes_in) <= 16:
                candidates.append([bytes([b]) for b in bytes_in])
    close_run()
    if not candidates:
        return []
    # Prefer the set whose shortest literal is longest, then the smaller set.
    return max(candidates, key=lambda c: (min(len(x) for x in c), -len(c)))


def _class_bytes(av: list[Any]) -> list[int] | None:
    out: set[int] = set()
    for op, v in av:
        name = str(op)
        if name == "LITERAL":
            out.add(v)
        elif name == "RANGE":
            lo, hi = v
            if hi - lo > 16:
                return None
            out.update(range(lo, hi + 1))
        else:
            return None  # NEGATE, CATEGORY: too broad
    return sorted(out)


# ---------------------------------------------------------------- shared helpers


# Literal bytes as regex text: letters and digits as themselves, every other byte as \xHH (a
# table lookup per byte; short expressions also parse faster in the Hyperscan compiler).
_ESCAPED = [bytes([b]) if bytes([b]).isalnum() else f"\\x{b:02x}".encode("ascii") for b in range(256)]


def _hex_escape(data: bytes) -> bytes:
    return b"".join(map(_ESCAPED.__getitem__, data))


def _leftmost_start(info: RegexInfo, buf: bytes, end: int) -> int | None:
    """Leftmost start of a match of ``info`` ending exactly at ``end`` in ``buf``."""
    if info.fixed:
        return end - info.max_width
    m = info.ends_at.search(buf, max(0, end - info.max_width), end)
    return m.start() if m else None


class _EmptyMatcher:
    patterns: Sequence[Pattern] = ()

    def __init__(self, engine: str) -> None:
        self.engine = engine

    def scan(self, data: bytes) -> list[Match]:
        return []

    def stream(self) -> Stream:
        return _EmptyStream()


class _EmptyStream:
    def __init__(self) -> None:
        self.offset = 0

    def feed(self, data: bytes) -> list[Match]:
        self.offset += len(data)
        return []

    def reset(self) -> None:
        self.offset = 0

    def close(self) -> None:
        pass


# ---------------------------------------------------------------- Hyperscan


class _Collector:
    """Truthy context object for Hyperscan callbacks (an empty list would be falsy: see above)."""

    __slots__ = ("hits",)

    def __init__(self) -> None:
        self.hits: list[tuple[int, int]] = []

    def __bool__(self) -> bool:
        return True


def _on_hit(pid: int, _start: int, end: int, _flags: int, ctx: _Collector) -> None:
    ctx.hits.append((pid, end))


class _HyperscanMatcher:
    engine = "hyperscan"

    def __init__(self, patterns: list[Pattern], regexes: dict[int, RegexInfo], line_probe: bool = False,
                 cache: DatabaseCache | None = None) -> None:
        assert _hs is not None
        self.patterns = patterns
        self._regex = regexes
        # One collector for all of this matcher's streams (a stream hands its hits on before
        # anything else scans, and the sensor scans from one thread): two objects fewer per
        # flow direction. Held here: the Hyperscan streams only borrow it.
        self._stream_ctx = _Collector()
        self._block_ctx = _Collector()
        self._lit_len = {p.id: len(p.data) for p in patterns if not p.regex}
        self._history = max((r.max_width for r in regexes.values() if not r.fixed), default=0)
        exprs: list[bytes] = []
        flags: list[int] = []
        ids: list[int] = []
        for p in patterns:
            exprs.append(p.data if p.regex else _hex_escape(p.data))
            f = _hs.HS_FLAG_DOTALL
            if p.nocase:
                f |= _hs.HS_FLAG_CASELESS
            flags.append(f)
            ids.append(p.id)
        s_exprs, s_ids, s_flags = list(exprs), list(ids), list(flags)
        if line_probe:
            for expr in PROBES:
                exprs.append(expr)
                ids.append(LINE_PROBE)
                flags.append(_hs.HS_FLAG_SINGLEMATCH)  # block mode: once per buffer is enough
                s_exprs.append(expr)
                s_ids.append(LINE_PROBE)
                s_flags.append(0)  # stream mode: every chunk must hear of its own
        # Both databases now: a reload must be complete before the swap, and the first flow must
        # not pay for a compile. Sequentially: the extension releases the GIL while compiling,
        # but two compiles in two threads (measured with bench/memory.py's 1,000 markers) saved
        # no wall time on a busy 2-core machine and left the process 60 MiB larger (a second
        # malloc arena), over the 200 MB budget.
        self._block = _compile_hs(exprs, ids, flags, _hs.HS_MODE_BLOCK, cache)
        self._streamdb = _compile_hs(s_exprs, s_ids, s_flags, _hs.HS_MODE_STREAM, cache)

    def scan(self, data: bytes) -> list[Match]:
        # Positional (data, handler, flags, context): no keyword parsing. One collector for all
        # block scans, emptied before the next (the scan is synchronous, from one thread).
        ctx = self._block_ctx
        try:
            self._block.scan(data, _on_hit, 0, ctx)
        except BaseException:
            ctx.hits = []  # a failed scan's partial hits must not reach the next scan
            raise
        hits = ctx.hits
        if not hits:
            return _NO_MATCHES
        ctx.hits = []
        return self._resolve(hits, data, 0, 0)

    def _resolve(self, hits: list[tuple[int, int]], buf: bytes, base: int, chunk_start: int) -> list[Match]:
        """Hit ends (absolute) -> (id, start, end); ``buf`` starts at absolute offset ``base``."""
        out: list[Match] = []
        seen: set[tuple[int, int]] = set()
        probe = False
        for pid, end in hits:
            n = self._lit_len.get(pid)
            if n is not None:
                out.append((pid, end - n, end))
                continue
            if pid == LINE_PROBE:
                probe = True
                continue
            if (pid, end) in seen:
                continue
            seen.add((pid, end))
            info = self._regex[pid]
            start = _leftmost_start(info, buf, end - base)
            if start is not None:
                out.append((pid, start + base, end))
        if probe:
            out.append((LINE_PROBE, chunk_start, chunk_start))
        out.sort(key=lambda m: (m[2], m[0], m[1]))
        return out

    def stream(self) -> Stream:
        return _HyperscanStream(self)


def _compile_hs(exprs: list[bytes], ids: list[int], flags: list[int], mode: int,
                cache: DatabaseCache | None = None) -> Any:
    assert _hs is not None

    def compile_db() -> Any:
        db = _hs.Database(mode=mode)
        try:
            db.compile(expressions=exprs, ids=ids, elements=len(exprs), flags=flags)
        except _hs.error as exc:  # CompilerError names the failing expression index
            raise PatternError(f"hyperscan: {exc}") from None
        return db

    if cache is None or cache.directory is None:
        return compile_db()
    key = database_key(exprs, ids, flags, mode, _hs_engine_version())
    return cache.load_or_compile(key, compile_db, lambda blob: _load_hs(blob, mode), _hs.dumpb,
                                 _probe_db if mode == _hs.HS_MODE_STREAM else _probe_block_db)


def _load_hs(blob: bytes, mode: int) -> Any:
    """A serialized database, ready to scan: ``loadb`` leaves it without the scratch space
    that ``compile`` allocates (scanning then fails with HS_INVALID)."""
    assert _hs is not None
    db = _hs.loadb(blob, mode)
    db.scratch = _hs.Scratch(db)
    return db


_engine_version: bytes | None = None


def _hs_engine_version() -> bytes:
    """The binding's version and the library's version and target features on this host (a
    one-pattern compile: about 0.1 ms), so a cached database from another build or CPU misses."""
    global _engine_version
    if _engine_version is None:
        assert _hs is not None
        db = _hs.Database(mode=_hs.HS_MODE_BLOCK)
        db.compile(expressions=[b"a"], ids=[0], elements=1, flags=[0])
        info = db.info()
        _engine_version = (f"python-hyperscan {_hs.__version__}; ".encode() +
                           (info if isinstance(info, bytes) else str(info).encode()))
    return _engine_version


def _probe_block_db(db: Any) -> None:
    """A loaded block database must scan (raises, e.g. for another platform's database)."""
    db.scan(b"probe", match_event_handler=_on_hit, context=_Collector())


def _probe_db(db: Any) -> None:
    """A loaded stream database must open, scan and close a stream."""
    ctx = _Collector()
    st = db.stream(match_event_handler=_on_hit, context=ctx).__enter__()  # as _HyperscanStream does
    st.scan(b"probe", match_event_handler=_on_hit, context=ctx)
    st.close(match_event_handler=_on_hit, context=ctx)


class _HyperscanStream:
    """One Hyperscan stream. ``feed`` is the per-segment hot path: one scan call, no allocation
    when nothing matched (the history copy is kept only for variable-width regexes)."""

    __slots__ = ("_m", "_ctx", "_hs", "offset", "_tail", "_hist")

    def __init__(self, m: _HyperscanMatcher) -> None:
        self._m = m
        self._ctx = m._stream_ctx  # the matcher's, which outlives this stream
        self._hs: Any = None
        self.offset = 0
        self._tail = b""  # history for variable-width regex starts
        self._hist = m._history

    def _open(self) -> Any:
        # Positional (handler, flags, context); __enter__ opens the Hyperscan stream (module doc).
        self._hs = self._m._streamdb.stream(_on_hit, 0, self._ctx).__enter__()
        return self._hs

    def feed(self, data: bytes) -> list[Match]:
        hs_stream = self._hs or self._open()
        hs_stream.scan(data)  # the handler and context given at creation (see the module doc)
        base = self.offset
        self.offset = base + len(data)
        hist = self._hist
        hits = self._ctx.hits
        if not hits:
            if hist:
                self._tail = (self._tail + data)[-hist:] if len(data) < hist else data[-hist:]
            return _NO_MATCHES
        self._ctx.hits = []
        if hist:
            tail = self._tail
            out = self._m._resolve(hits, tail + data, base - len(tail), base)
            self._tail = (tail + data)[-hist:] if len(data) < hist else data[-hist:]
            return out
        return self._m._resolve(hits, data, base, base)

    def reset(self) -> None:
        self.close()
        self.offset = 0
        self._tail = b""

    def close(self) -> None:
        if self._hs is not None:
            self._hs.close()  # the handler and context given at creation (see the module doc)
            self._hs = None
            self._ctx.hits = []


# ---------------------------------------------------------------- pyahocorasick


class _Automaton:
    """One latin-1 automaton; keys map to lists of ``(pattern id, length, is_regex, exact)``
    (``exact``: the literal's own bytes when it must match case-sensitively, else None)."""

    def __init__(self) -> None:
        self.a = _ac.Automaton()
        self.empty = True

    def add(self, key: bytes, entry: _Entry) -> None:
        k = key.decode("latin-1")
        cur = self.a.get(k, None)
        if cur is None:
            self.a.add_word(k, [entry])
        else:
            cur.append(entry)
        self.empty = False

    def finish(self) -> None:
        if not self.empty:
            self.a.make_automaton()


_Entry = tuple[int, int, bool, "bytes | None"]

# pyahocorasick walks its trie with a linear search of each node's children, so its speed falls
# with the number of distinct bytes that can follow a state: 163 MB/s with 10 literals, 18 MB/s
# with the shipped signatures' 177 keys (69 distinct first bytes) on binary data. So it runs
# only over *windows* where a key may start, which a vectorised filter finds: every 4-byte
# gram of the (case-folded) data is hashed with numpy and looked up in a table of the keys'
# first grams; a hash hit whose gram really starts a key opens the window
# [start, start + longest such key). Every occurrence of a key lies inside the window opened
# at its start, windows are merged, and the automaton reports only matches that lie wholly
# within the window it scans, so each occurrence is found exactly once. Keys shorter than a
# gram, and buffers too short to repay numpy's per-call cost, take the whole-buffer scan.
_GRAM = 4
_TABLE_BITS = 20
_HASH_MUL = 0x9E3779B1  # Knuth's multiplicative hash (32-bit golden ratio)
FILTER_MIN_BYTES = 160  # below this a whole-buffer automaton pass costs less than the filter (measured: 96-192 bytes)


class _GramFilter:
    """Where a key of at least :data:`_GRAM` bytes may start in a buffer (see above)."""

    def __init__(self, keys: Iterable[bytes]) -> None:
        import numpy as np  # the fallback engine's dependency only: imported when it is built

        self._np = np
        self._u4 = np.dtype("<u4")  # a gram as a little-endian 32-bit number, on every platform
        self._mul = np.uint32(_HASH_MUL)
        self._shift = np.uint32(32 - _TABLE_BITS)
        self.longest: dict[bytes, int] = {}  # first gram -> longest key starting with it
        for k in keys:
            g = k[:_GRAM]
            self.longest[g] = max(self.longest.get(g, 0), len(k))
        self._table = np.zeros(1 << _TABLE_BITS, dtype=np.bool_)
        self._table[self._hashes(b"".join(self.longest), _GRAM)] = True

    def _hashes(self, data: bytes, step: int) -> Any:
        """Hash of the gram at every ``step``-th offset of ``data``."""
        # A strided view of (unaligned) 32-bit words, one per offset, copied once into an aligned
        # array that is then hashed in place: numpy's per-call cost, not the bytes, dominates a
        # segment's filter (five calls in all), and arithmetic on the unaligned view is 2x slower.
        h = self._np.ndarray(shape=((len(data) - _GRAM) // step + 1,), dtype=self._u4, buffer=data,
                             strides=(step,)).copy()
        h *= self._mul
        h >>= self._shift
        return h

    def windows(self, data: bytes) -> list[tuple[int, int]]:
        """Merged ``[start, end)`` windows of ``data`` holding every occurrence of every key."""
        if len(data) < _GRAM:
            return []
        starts = self._table.take(self._hashes(data, 1)).nonzero()[0]
        if not starts.size:
            return []
        longest = self.longest
        out: list[tuple[int, int]] = []
        for s in starts.tolist():  # ascending
            width = longest.get(data[s:s + _GRAM])
            if width is None:  # a hash collision, not a key's first gram
                continue
            e = min(s + width, len(data))
            if out and s <= out[-1][1]:
                if e > out[-1][1]:
                    out[-1] = (out[-1][0], e)
            else:
                out.append((s, e))
        return out


class _AhoMatcher:
    """pyahocorasick over the case-folded data: one automaton for all keys (literals and the
    regexes' required literals, ASCII-lowercased), so a buffer is lowered, filtered and decoded
    once; a case-sensitive literal's hit is confirmed on the original bytes (hits are rare)."""

    engine = "ahocorasick"

    def __init__(self, patterns: list[Pattern], regexes: dict[int, RegexInfo], line_probe: bool = False) -> None:
        self.patterns = patterns
        self._regex = regexes
        self.line_probe = line_probe
        self._long = _Automaton()  # keys of at least _GRAM bytes: scanned in the filter's windows
        self._short = _Automaton()  # shorter keys: whole-buffer scans
        long_keys: set[bytes] = set()
        max_lit = 1
        for p in patterns:
            if p.regex:
                for lit in regexes[p.id].prefilter:  # a superset of the hits is fine: _confirm decides
                    self._add(lit.lower(), (p.id, len(lit), True, None), long_keys)
                    max_lit = max(max_lit, len(lit))
            else:
                self._add(p.data.lower(), (p.id, len(p.data), False, None if p.nocase else p.data), long_keys)
                max_lit = max(max_lit, len(p.data))
        self._long.finish()
        self._short.finish()
        self._filter = _GramFilter(long_keys) if long_keys else None
        self.overlap = max(max_lit - 1, max((r.max_width for r in regexes.values()), default=0))

    def _add(self, key: bytes, entry: _Entry, long_keys: set[bytes]) -> None:
        if len(key) >= _GRAM:
            self._long.add(key, entry)
            long_keys.add(key)
        else:
            self._short.add(key, entry)

    def scan(self, data: bytes) -> list[Match]:
        data = bytes(data)
        out = self._scan(data, 0, 0)
        if self.line_probe and has_line_structure(data):
            return [(LINE_PROBE, 0, 0), *out]  # a new list: out may be the shared empty one
        return out

    def _hits(self, low: bytes) -> list[tuple[int, list[_Entry]]]:
        """(key end, entries) of every key occurrence in the lowered buffer."""
        text: str | None = None
        found: list[tuple[int, list[_Entry]]] = []
        if not self._long.empty:
            f = self._filter
            if f is None or len(low) < FILTER_MIN_BYTES:
                text = low.decode("latin-1")
                found.extend(self._long.a.iter(text))
            else:
                wins = f.windows(low)
                if wins:
                    text = low.decode("latin-1")
                    it = self._long.a.iter
                    for ws, we in wins:
                        found.extend(it(text, ws, we))
        if not self._short.empty:
            found.extend(self._short.a.iter(text if text is not None else low.decode("latin-1")))
        return found

    def _scan(self, buf: bytes, fresh_from: int, base: int) -> list[Match]:
        """Matches in ``buf`` whose end lies after ``fresh_from``; offsets shifted by ``base``."""
        found = self._hits(buf.lower())
        if not found:
            return _NO_MATCHES
        out: list[Match] = []
        regex_hits: list[tuple[int, int, int]] = []  # (pattern id, literal start, literal end)
        for last, entries in found:
            end = last + 1
            for pid, n, is_regex, exact in entries:
                if is_regex:
                    regex_hits.append((pid, end - n, end))
                elif end > fresh_from and (exact is None or buf.startswith(exact, end - n)):
                    out.append((pid, end - n + base, end + base))
        if regex_hits:
            out.extend(self._confirm(regex_hits, buf, fresh_from, base))
        out.sort(key=lambda m: (m[2], m[0], m[1]))
        return out

    def _confirm(self, hits: list[tuple[int, int, int]], buf: bytes, fresh_from: int,
                 base: int) -> list[Match]:
        """Every match of a regex ends within max_width of the start of a required literal."""
        tried: set[tuple[int, int]] = set()
        out: list[Match] = []
        n = len(buf)
        for pid, ls, le in hits:
            info = self._regex[pid]
            lo_end = max(le, fresh_from + 1, info.min_width)
            hi_end = min(n, ls + info.max_width)
            for end in range(lo_end, hi_end + 1):
                if (pid, end) in tried:
                    continue
                tried.add((pid, end))
                m = info.ends_at.search(buf, max(0, end - info.max_width), end)
                if m is not None:
                    out.append((pid, m.start() + base, end + base))
        return out

    def stream(self) -> Stream:
        return _AhoStream(self)


class _AhoStream:
    def __init__(self, m: _AhoMatcher) -> None:
        self._m = m
        self.offset = 0
        self._tail = b""
        self._probe_tail = b""

    def feed(self, data: bytes) -> list[Match]:
        if not data:
            return []
        tail = self._tail
        buf = tail + data if tail else bytes(data)
        base = self.offset
        out = self._m._scan(buf, len(tail), base - len(tail))
        self.offset += len(data)
        keep = self._m.overlap
        self._tail = buf[-keep:] if keep else b""
        if self._m.line_probe:
            pbuf = self._probe_tail + data
            if _probe_after(pbuf, len(self._probe_tail), base == len(self._probe_tail)):
                out = [(LINE_PROBE, base, base), *out]  # a new list: out may be the shared empty one
            self._probe_tail = pbuf[-_PROBE_HISTORY:]
        return out

    def reset(self) -> None:
        self.offset = 0
        self._tail = b""
        self._probe_tail = b""

    def close(self) -> None:
        self._tail = b""
        self._probe_tail = b""
