"""Streaming Content-Transfer-Encoding decoders for MIME bodies: base64, quoted-printable, identity.

Each decoder takes arbitrary chunks (``feed``) and returns what it could decode so far; ``flush``
returns the rest at the end of the part. State carried between chunks is a few bytes.

Base64 policy (documented because decoders disagree, and the disagreement is an evasion vector):

* Every byte outside the alphabet ``A-Z a-z 0-9 + /`` and ``=`` is ignored: whitespace, line
  breaks of any length, and invalid characters (the latter are counted in ``invalid``).
* Characters are decoded in 4-character quanta carried across lines and chunks, so odd line
  lengths do not matter.
* ``=`` ends the current quantum: a partial quantum of 2 or 3 characters is decoded as if padded;
  further ``=`` are skipped, and decoding resumes with the next alphabet character. Padding
  split across lines ("NA=" / "=Mg") therefore decodes to the bytes of both quanta ("42"), as
  Suricata does, where a strict decoder would stop at the first pad.
* A partial quantum at the end of the part is decoded as if padded; a single dangling character
  carries no whole byte and is dropped (counted in ``dangling``).

Speed: a chunk is stripped of CR and LF with two ``bytes.replace`` and its whole quanta are
decoded by :data:`strict_b64decode` (``pybase64`` when installed, else
``binascii.a2b_base64(strict_mode=True)``), which also verifies that nothing but the alphabet is
left. Only when that check fails (an invalid character, a pad, a space or tab) does the chunk
take the slow path that applies the policy above; both paths give the same bytes.

Quoted-printable: ``=XX`` escapes (either case), soft line breaks ``=\\r\\n`` and ``=\\n``,
also with whitespace between ``=`` and the line break; an ``=`` not followed by two hex digits or
a line break is kept literally (counted in ``invalid``, looked for in a part's first 64 KiB).
Hard line breaks are kept as sent.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Callable

try:  # SIMD base64 (PyPI pybase64, ~20x binascii here); binascii is the always-present fallback
    import pybase64
except ImportError:  # pragma: no cover - depends on the installation
    pybase64 = None  # type: ignore[assignment]


def binascii_strict(data: bytes) -> bytes:
    return binascii.a2b_base64(data, strict_mode=True)


def pybase64_strict(data: bytes) -> bytes:
    out: bytes = pybase64.b64decode(data, validate=True)
    return out


# Decodes whole quanta of the alphabet (a final pad allowed); raises ValueError (binascii.Error)
# on anything else. Module-level so a benchmark can compare the two.
strict_b64decode: Callable[[bytes], bytes] = pybase64_strict if pybase64 is not None else binascii_strict

_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_NOT_B64 = bytes(b for b in range(256) if b not in _ALPHABET and b != ord("="))
_WHITESPACE = b" \t\r\n\v\f"


class IdentityDecoder:
    """7bit, 8bit, binary and unknown encodings: bytes pass through."""

    invalid = 0
    dangling = 0

    def feed(self, data: bytes) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""

    def reset(self) -> None:
        pass


class Base64Decoder:
    """Tolerant streaming base64 (see the module docstring for the policy)."""

    __slots__ = ("_carry", "invalid", "dangling")

    def __init__(self) -> None:
        self._carry = b""
        self.invalid = 0  # non-whitespace characters outside the alphabet
        self.dangling = 0  # lone characters before a pad or at the end (no whole byte)

    def feed(self, data: bytes) -> bytes:
        # Line breaks go with two single-byte replaces (memchr-driven, twice as fast as a
        # translate); a space or tab left over fails the strict decode below, so such a chunk
        # takes the tolerant path, which gives the same bytes.
        stripped = data.replace(b"\n", b"").replace(b"\r", b"")
        buf = self._carry + stripped if self._carry else stripped
        whole = len(buf) & ~3
        rest = buf[whole:]
        if rest.translate(None, _ALPHABET):
            return self._feed_tolerant(data)  # the partial quantum carried on must be clean too
        try:
            out = strict_b64decode(buf[:whole] if rest else buf)
        except ValueError:  # binascii.Error is one
            return self._feed_tolerant(data)  # a character outside the alphabet, or a pad
        self._carry = rest
        return out

    def _feed_tolerant(self, data: bytes) -> bytes:
        clean = data.translate(None, _NOT_B64)
        if len(clean) != len(data):
            self.invalid += len(data.translate(None, _WHITESPACE)) - len(clean)
        if not clean:
            return b""
        buf = self._carry + clean if self._carry else clean
        if b"=" not in buf:
            whole = len(buf) & ~3
            self._carry = buf[whole:]
            return binascii.a2b_base64(buf[:whole]) if whole else b""
        out: list[bytes] = []
        pieces = buf.split(b"=")
        for piece in pieces[:-1]:
            if piece:  # an empty piece is a pad continuing a finished quantum
                out.append(self._decode_padded(piece))
        last = pieces[-1]
        whole = len(last) & ~3
        if whole:
            out.append(binascii.a2b_base64(last[:whole]))
        self._carry = last[whole:]
        return b"".join(out)

    def _decode_padded(self, chars: bytes) -> bytes:
        whole = len(chars) & ~3
        out = binascii.a2b_base64(chars[:whole]) if whole else b""
        rest = chars[whole:]
        if len(rest) >= 2:
            out += binascii.a2b_base64(rest + b"=" * (4 - len(rest)))
        elif rest:
            self.dangling += 1
        return out

    def flush(self) -> bytes:
        carry, self._carry = self._carry, b""
        return self._decode_padded(carry) if carry else b""

    def reset(self) -> None:
        """Forget a partial quantum (after a gap: the bytes before and after do not align)."""
        self._carry = b""


def b64decode_tolerant(data: bytes) -> bytes:
    """A whole base64 string decoded with the streaming policy (RFC 2047 B words)."""
    d = Base64Decoder()
    return d.feed(data) + d.flush()


_SOFT_BREAK_WS = re.compile(rb"=[ \t]+(?=\r?\n)")
_BAD_ESCAPE = re.compile(rb"=(?![0-9A-Fa-f]{2}|\r?\n|[ \t]+\r?\n)")
# How far back an unfinished "=" (escape or soft break padded with whitespace) may start.
_QP_HOLD = 80
_QP_CHECK = 64 * 1024  # bytes of a part scanned for invalid escapes


class QuotedPrintableDecoder:
    """Streaming quoted-printable (RFC 2045 6.7), lenient as described in the module docstring."""

    __slots__ = ("_carry", "invalid", "dangling", "_checked")

    def __init__(self) -> None:
        self._carry = b""
        self.invalid = 0
        self.dangling = 0
        self._checked = 0

    def feed(self, data: bytes) -> bytes:
        buf = self._carry + data if self._carry else data
        cut = len(buf)
        eq = buf.rfind(b"=", max(0, cut - _QP_HOLD))
        if eq != -1 and (cut - eq < 3 or not buf[eq + 1 :].strip(b" \t\r")):
            cut = eq  # "=", "=X", "=\r" or "=   ": the rest arrives with the next chunk
        elif buf.endswith(b"\r"):
            cut -= 1  # keep CR with its LF so "=\r" + "\n" is never split later
        self._carry = buf[cut:]
        return self._decode(buf[:cut])

    def _decode(self, chunk: bytes) -> bytes:
        if not chunk:
            return b""
        if b"=" in chunk:
            if b"= " in chunk or b"=\t" in chunk:
                chunk = _SOFT_BREAK_WS.sub(b"=", chunk)
            if self._checked < _QP_CHECK and not self.invalid:
                # Invalid escapes are looked for in the first bytes only: the regex visits every
                # "=", and Japanese QP text is nothing but escapes.
                self._checked += len(chunk)
                self.invalid += len(_BAD_ESCAPE.findall(chunk))
        return binascii.a2b_qp(chunk)

    def flush(self) -> bytes:
        carry, self._carry = self._carry, b""
        if carry.startswith(b"=") and not carry[1:].strip(b" \t\r"):
            return b""  # a soft break (or lone "=") at the very end
        return self._decode(carry)

    def reset(self) -> None:
        self._carry = b""


Decoder = IdentityDecoder | Base64Decoder | QuotedPrintableDecoder


def make_decoder(encoding: str) -> Decoder:
    """The decoder for a Content-Transfer-Encoding value (lower-case, stripped)."""
    if encoding == "base64":
        return Base64Decoder()
    if encoding == "quoted-printable":
        return QuotedPrintableDecoder()
    return IdentityDecoder()


KNOWN_ENCODINGS = frozenset({"", "7bit", "8bit", "binary", "base64", "quoted-printable"})
