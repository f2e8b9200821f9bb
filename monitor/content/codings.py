"""Streaming HTTP content-coding decoders (gzip, x-gzip, deflate, br, lzma) with caps.

A :class:`CodingChain` turns a ``Content-Encoding`` header into a chain of streaming
decoders (the last listed coding is removed first) and decodes the body as it arrives:
``decode(chunk) -> bytes``, ``flush() -> bytes``. Every chain has

- a layer limit (``cfg.app_layer.http.decompress_layer_limit``): codings beyond it are not
  decoded (counter ``content.decompress_cap{cap=layers}``);
- an output cap (``cfg.content.max_decompressed``) and a ratio cap (``cfg.content.max_ratio``,
  output/input, checked once the output passes 1 MiB): when hit, decoding stops and the
  counter ``content.decompress_cap{cap=size|ratio}`` is raised (the bytes decoded so far are
  kept; detection still sees the raw stream).

A body labelled with a coding that does not decode from its first byte (``gzip`` that is
plain JSON) is passed through as-is and reported in :attr:`CodingChain.problems`
(``passthrough``). A stream that breaks later keeps what was decoded and stops
(``corrupt``). Decoders are tolerant the way browsers are: gzip header flags are parsed by
hand (reserved bits ignored), a bad CRC/ISIZE trailer is only an anomaly, ``deflate`` may be
zlib-wrapped or raw, and an unknown coding label on a body that starts with gzip or zlib
magic is sniffed (evasion: ``Content-Encoding: gzip_x``).
"""

from __future__ import annotations

import lzma
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass

try:  # brotli is a declared dependency; keep the module importable without it
    import brotli
except ImportError:  # pragma: no cover - exercised only on broken installs
    brotli = None

from monitor.config import Config
from monitor.stats import Stats

# zlib/brotli produce at most this much per internal step; keeps one call's memory bounded.
_STEP_OUT = 1 << 18
# Ratio checks start once this much output exists (small bodies compress well legitimately).
RATIO_GRACE = 1 << 20
# Largest piece of coded input pushed through the layers at once.
_SLICE = 4096
# Bytes gathered before an unknown coding label is sniffed.
_SNIFF_BYTES = 64
# Input a layer keeps until its first output byte (to pass it on if the layer is skipped).
_REPLAY_MAX = 1 << 20
# Longest gzip header (FEXTRA/FNAME/FCOMMENT) we wait for before calling the stream corrupt.
_GZIP_HEADER_MAX = 64 << 10

IDENTITY_NAMES = frozenset({"identity", "none", ""})


class CodingError(Exception):
    """The coded stream is not valid (internal; never escapes this module)."""


class _Layer:
    """One streaming decoder. ``decode`` may return less than everything (``max_out``)."""

    name = ""
    finished = False
    started = False  # produced at least one byte
    skipped = False  # failed before its first byte: treated as not applied
    seen = b""  # input kept until the first output, replayed if the layer is skipped
    seen_overflow = False

    def decode(self, data: bytes, max_out: int) -> bytes:
        raise NotImplementedError

    def pending(self) -> bool:
        """True when output is waiting inside the decoder (call decode(b"") again)."""
        return False


class _Inflate(_Layer):
    """deflate: zlib-wrapped (RFC 1950) or raw (RFC 1951), decided on the first bytes."""

    name = "deflate"

    def __init__(self) -> None:
        self._obj: zlib._Decompress | None = None
        self._head = b""
        self._tail = b""
        self.started = False

    def decode(self, data: bytes, max_out: int) -> bytes:
        if self._obj is None:
            self._head += data
            if len(self._head) < 2:
                return b""
            data, self._head = self._head, b""
            b0, b1 = data[0], data[1]
            wrapped = (b0 & 0x0F) == 8 and (b0 >> 4) <= 7 and ((b0 << 8) | b1) % 31 == 0
            self._obj = zlib.decompressobj(15 if wrapped else -15)
        return self._run(data, max_out)

    def _run(self, data: bytes, max_out: int) -> bytes:
        assert self._obj is not None
        if self.finished:
            return b""
        data = self._tail + data
        try:
            out = self._obj.decompress(data, max_out)
        except zlib.error as exc:
            raise CodingError(str(exc)) from None
        self._tail = self._obj.unconsumed_tail
        if self._obj.eof:
            self.finished = True
            self._tail = b""
        if out:
            self.started = True
        return out

    def pending(self) -> bool:
        return bool(self._tail) and not self.finished


class _Gunzip(_Layer):
    """gzip / x-gzip: header parsed by hand, raw inflate, trailer checked, members chained."""

    name = "gzip"

    def __init__(self, on_problem: Callable[[str], None]) -> None:
        self._buf = b""
        self._inflate: zlib._Decompress | None = None
        self._tail = b""
        self._crc = 0
        self._size = 0
        self._trailer = b""
        self._members = 0
        self._problem = on_problem
        self.started = False

    def _parse_header(self) -> bool:
        """Consume a member header from ``_buf``; False when more bytes are needed."""
        b = self._buf
        if self._members == 0 and b[:1] in (b"\r", b"\n", b" ", b"\t"):
            # Whitespace before the magic (a sloppy header terminator): skipped, like clients do.
            b = self._buf = b.lstrip(b"\r\n \t")
            self._problem("gzip_leading_whitespace")
        if len(b) < 10:
            if b[:2] not in (b"\x1f\x8b"[: len(b)], b"") and self._members == 0:
                raise CodingError("not gzip")
            return False
        if b[0] != 0x1F or b[1] != 0x8B or b[2] != 8:
            raise CodingError("not gzip")
        flags = b[3]
        pos = 10
        if flags & 0x04:  # FEXTRA
            if len(b) < pos + 2:
                return self._too_long()
            pos += 2 + int.from_bytes(b[pos:pos + 2], "little")
        for bit in (0x08, 0x10):  # FNAME, FCOMMENT: zero-terminated
            if flags & bit:
                end = b.find(b"\x00", pos)
                if end < 0:
                    return self._too_long()
                pos = end + 1
        if flags & 0x02:  # FHCRC
            pos += 2
        if len(b) < pos:
            return self._too_long()
        if flags & 0xE0:
            self._problem("gzip_reserved_flags")
        self._buf = b[pos:]
        self._inflate = zlib.decompressobj(-15)
        self._crc = 0
        self._size = 0
        self._trailer = b""
        return True

    def _too_long(self) -> bool:
        if len(self._buf) > _GZIP_HEADER_MAX:
            raise CodingError("gzip header too long")
        return False

    def decode(self, data: bytes, max_out: int) -> bytes:
        out: list[bytes] = []
        budget = max_out
        self._buf += data
        while budget > 0 and not self.finished:
            if self._inflate is None:
                if not self._buf:
                    break
                if self._members > 0 and not self._buf.startswith(b"\x1f\x8b"[: len(self._buf)]):
                    # Bytes after the last member: browsers ignore them.
                    self._problem("gzip_trailing_garbage")
                    self._buf = b""
                    self.finished = True
                    break
                if not self._parse_header():
                    break
            if self._inflate is not None and not self._inflate.eof:
                chunk = self._tail + self._buf
                self._buf = b""
                try:
                    piece = self._inflate.decompress(chunk, budget)
                except zlib.error as exc:
                    raise CodingError(str(exc)) from None
                self._tail = self._inflate.unconsumed_tail
                if piece:
                    self.started = True
                    self._crc = zlib.crc32(piece, self._crc)
                    self._size += len(piece)
                    budget -= len(piece)
                    out.append(piece)
                if not self._inflate.eof:
                    if not self._tail:
                        break
                    continue
                self._buf = self._inflate.unused_data + self._tail
                self._tail = b""
            if self._inflate is not None and self._inflate.eof:
                need = 8 - len(self._trailer)
                self._trailer += self._buf[:need]
                self._buf = self._buf[need:]
                if len(self._trailer) < 8:
                    break
                crc = int.from_bytes(self._trailer[:4], "little")
                isize = int.from_bytes(self._trailer[4:], "little")
                if crc != self._crc or isize != (self._size & 0xFFFFFFFF):
                    self._problem("gzip_bad_trailer")
                self._members += 1
                self._inflate = None
        return b"".join(out)

    def end(self) -> None:
        """The body ended: a missing trailer is an anomaly, not an error (browsers accept it)."""
        if self._inflate is not None and self._inflate.eof and len(self._trailer) < 8:
            self._problem("gzip_missing_trailer")

    def pending(self) -> bool:
        return bool(self._tail) and not self.finished


class _Brotli(_Layer):
    name = "br"

    def __init__(self) -> None:
        if brotli is None:
            raise CodingError("brotli not available")
        self._obj = brotli.Decompressor()
        self._waiting = False
        self._queued = b""
        self.started = False

    def decode(self, data: bytes, max_out: int) -> bytes:
        try:
            if self._waiting:
                # The decoder still holds output: it takes no input until drained.
                self._queued += data
                out = self._obj.process(b"", output_buffer_limit=max_out)
            else:
                data = self._queued + data
                self._queued = b""
                out = self._obj.process(data, output_buffer_limit=max_out)
            self._waiting = not self._obj.can_accept_more_data()
        except brotli.error as exc:
            raise CodingError(str(exc)) from None
        if out:
            self.started = True
        if self._obj.is_finished():
            self.finished = True
        return out

    def pending(self) -> bool:
        return (self._waiting or bool(self._queued)) and not self.finished


class _Lzma(_Layer):
    name = "lzma"

    def __init__(self) -> None:
        self._obj = lzma.LZMADecompressor(format=lzma.FORMAT_AUTO)
        self.started = False

    def decode(self, data: bytes, max_out: int) -> bytes:
        if self._obj.eof:
            self.finished = True
            return b""
        try:
            out = self._obj.decompress(data, max_out)
        except lzma.LZMAError as exc:
            raise CodingError(str(exc)) from None
        if out:
            self.started = True
        if self._obj.eof:
            self.finished = True
        return out

    def pending(self) -> bool:
        return not self._obj.needs_input and not self._obj.eof


def normalize_coding(token: str) -> str | None:
    """A Content-Encoding token to the decoder name, None for identity, '?' for unknown."""
    # Junk inside a token (NUL, control bytes, quotes, stray separators) is what evasions add;
    # clients that still honour the coding ignore it, so the sensor does too.
    t = re.sub(r"[^a-z0-9_-]", "", token.lower())
    if t in IDENTITY_NAMES:
        # "" (an empty token as in "deflate,") is no coding at all.
        return None
    if t in ("gzip", "x-gzip"):
        return "gzip"
    if t in ("deflate", "x-deflate"):
        return "deflate"
    if t == "br":
        return "br"
    if t in ("lzma", "xz", "x-lzma"):
        return "lzma"
    return "?"


def parse_content_encoding(values: list[str]) -> list[str]:
    """All Content-Encoding header values -> coding names in the order they were applied.

    Empty tokens (``deflate,``) and identity are dropped; unknown tokens are kept as ``"?"``.
    """
    out: list[str] = []
    for v in values:
        for tok in v.split(","):
            name = normalize_coding(tok)
            if name is not None:
                out.append(name)
    return out


def sniff_coding(head: bytes) -> str | None:
    """gzip/zlib magic, or a raw deflate stream that inflates cleanly, at the start of a body.

    Used only for bodies whose Content-Encoding header exists but is unreadable.
    """
    if head[:3] == b"\x1f\x8b\x08":
        return "gzip"
    if len(head) >= 2 and (head[0] & 0x0F) == 8 and ((head[0] << 8) | head[1]) % 31 == 0:
        return "deflate"
    try:
        out = zlib.decompressobj(-15).decompress(head, 4096)
    except zlib.error:
        return None
    return "deflate" if out else None


@dataclass
class CodingLimits:
    layer_limit: int = 3
    max_output: int = 256 << 20
    max_ratio: int = 200


class CodingChain:
    """Decode a body through its content codings, streaming, with caps.

    ``codings`` lists the codings in the order they were applied (header order); the chain
    undoes them last-first. Problems (anomaly identifiers) accumulate in ``problems``.
    """

    def __init__(self, codings: list[str], limits: CodingLimits | None = None,
                 stats: Stats | None = None) -> None:
        self.codings = list(codings)
        self.limits = limits or CodingLimits()
        self.stats = stats
        self.problems: list[str] = []
        self.input_bytes = 0
        self.output_bytes = 0
        self.capped: str | None = None  # "size" | "ratio" once a cap stopped decoding
        self.passthrough = False  # the body did not decode: handed on as-is
        self.broken = False  # decoding stopped mid-stream (corrupt data or a gap)
        self._setup()

    def _setup(self) -> None:
        names = list(self.codings)
        if len(names) > self.limits.layer_limit:
            self._count("layers")
            self.problems.append("layer_limit")
            # Undo only the outermost ``layer_limit`` codings; the rest is inspected as-is.
            names = names[len(names) - self.limits.layer_limit:]
        self._pending_sniff = bool(names) and names[-1] == "?"
        self._layers: list[_Layer] = [self._make(n) for n in reversed(names) if n != "?"]
        if any(n == "?" for n in names):
            self.problems.append("unknown_coding")
        self._head = b""

    def _make(self, name: str) -> _Layer:
        if name == "gzip":
            return _Gunzip(self._problem)
        if name == "br" and brotli is not None:
            return _Brotli()
        if name == "lzma":
            return _Lzma()
        return _Inflate()

    def _problem(self, kind: str) -> None:
        if kind not in self.problems:
            self.problems.append(kind)

    def _count(self, cap: str) -> None:
        if self.stats is not None:
            self.stats.incr("content.decompress_cap", cap=cap)

    @property
    def active(self) -> bool:
        return bool(self._layers) or self._pending_sniff

    def decode(self, data: bytes) -> bytes:
        """Decoded bytes for this chunk of coded input (may be empty)."""
        if not data:
            return b""
        if self.broken or self.capped:
            self.input_bytes += len(data)
            return b""
        if self._pending_sniff:
            # An unknown label: decode only when the body carries gzip/zlib magic.
            self._head += data
            if len(self._head) < _SNIFF_BYTES:
                return b""
            data, self._head = self._head, b""
            self._pending_sniff = False
            sniffed = sniff_coding(data)
            if sniffed is not None:
                self._problem("sniffed_coding")
                self._layers.append(self._make(sniffed))
        if not self._layers:
            self.input_bytes += len(data)
            return data
        # Bounded input slices: a stream that breaks keeps the output of the slices before,
        # and the ratio cap sees input and output grow together.
        out = []
        for i in range(0, len(data), _SLICE):
            piece = data[i:i + _SLICE]
            self.input_bytes += len(piece)
            out.append(self._run(piece))
            if self.broken or self.capped:
                self.input_bytes += len(data) - i - len(piece)
                break
        return b"".join(out)

    def _run(self, data: bytes) -> bytes:
        out: list[bytes] = []
        while True:
            budget = min(_STEP_OUT, self.limits.max_output - self.output_bytes)
            if budget <= 0:
                self._cap("size")
                break
            try:
                piece = self._through(0, data, budget)
            except CodingError:
                self.broken = True
                self._problem("corrupt")
                break
            data = b""
            if piece:
                out.append(piece)
                self.output_bytes += len(piece)
                if (self.output_bytes > RATIO_GRACE
                        and self.output_bytes > self.limits.max_ratio * max(self.input_bytes, 1)):
                    self._cap("ratio")
                    break
            if not piece or not any(layer.pending() for layer in self._layers if not layer.skipped):
                break
        return b"".join(out)

    def _through(self, i: int, data: bytes, budget: int) -> bytes:
        """Push ``data`` through layer ``i`` and all inner layers; at most ``budget`` out.

        A layer that fails before producing its first byte was not really applied (a body
        labelled gzip twice but compressed once, or not at all): it is skipped and the bytes it
        had received go on unchanged.
        """
        if i == len(self._layers):
            return data
        layer = self._layers[i]
        if layer.skipped:
            return self._through(i + 1, data, budget)
        if not layer.started:
            if len(layer.seen) < _REPLAY_MAX:
                layer.seen += data
            else:
                layer.seen_overflow = True
        try:
            out = layer.decode(data, budget)
        except CodingError:
            if layer.started or layer.seen_overflow:
                raise
            return self._skip(i, budget)
        if out and layer.seen:
            layer.seen = b""
        inner = self._through(i + 1, out, budget)
        while not inner and layer.pending():
            more = layer.decode(b"", budget)
            if not more:
                break
            inner = self._through(i + 1, more, budget)
        return inner

    def _skip(self, i: int, budget: int) -> bytes:
        layer = self._layers[i]
        layer.skipped = True
        self.passthrough = all(x.skipped for x in self._layers)
        self._problem("passthrough")
        replay, layer.seen = layer.seen, b""
        return self._through(i + 1, replay, budget)

    def _cap(self, cap: str) -> None:
        if self.capped is None:
            self.capped = cap
            self._count(cap)
            self._problem(f"{cap}_cap")

    def flush(self) -> bytes:
        """End of body: pending output, trailer checks, layers that never produced a byte."""
        if self._pending_sniff and self._head:
            # A short body: sniff what there is.
            head, self._head = self._head, b""
            self._pending_sniff = False
            sniffed = sniff_coding(head)
            if sniffed is None:
                return head
            self._problem("sniffed_coding")
            self._layers.append(self._make(sniffed))
            return self._run(head) + self.flush()
        if self.broken or self.capped or not self._layers:
            return b""
        out = [self._run(b"")] if any(x.pending() for x in self._layers if not x.skipped) else []
        for i, layer in enumerate(self._layers):
            if layer.skipped:
                continue
            if not layer.started and layer.seen and not layer.seen_overflow:
                # Consumed without one decoded byte (truncated header, not coded at all):
                # hand on what it received rather than nothing.
                budget = max(0, self.limits.max_output - self.output_bytes)
                try:
                    piece = self._skip(i, budget)
                except CodingError:
                    self.broken = True
                    self._problem("corrupt")
                    break
                self.output_bytes += len(piece)
                out.append(piece)
            elif isinstance(layer, _Gunzip):
                layer.end()
        return b"".join(out)

    def gap(self) -> None:
        """Bytes were lost: a compressed stream cannot resume after a hole."""
        if self._layers and not self.passthrough:
            self.broken = True
            self._problem("gap")


def limits_from_config(cfg: Config) -> CodingLimits:
    """CodingLimits from the configuration (HTTP layer limit, content caps)."""
    return CodingLimits(layer_limit=cfg.app_layer.http.decompress_layer_limit,
                        max_output=cfg.content.max_decompressed, max_ratio=cfg.content.max_ratio)
