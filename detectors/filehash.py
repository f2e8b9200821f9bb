"""Exact file fingerprints: the SHA-256 of every complete file object against a registered set.

The set is a plain dict keyed by the 32-byte digest, so a lookup costs one hash probe whatever
its size; the per-packet path never touches it (files are hashed incrementally by
``monitor.files.FileObject`` and looked up once, when they close without gaps).

Hash list files (``fingerprint_lists:`` in a signature file) hold one entry per line:
``<sha256 hex> [name]``; ``#`` starts a comment; blank lines are ignored. 100,000 lines load
in well under a second.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class HashEntry:
    sid: int
    name: str  # what the registrant called the file (may be empty)


class HashListError(ValueError):
    def __init__(self, line: int, reason: str) -> None:
        self.line = line
        super().__init__(f"line {line}: {reason}")


def is_sha256(text: str) -> bool:
    return len(text) == 64 and set(text.lower()) <= _HEX


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class HashSet:
    """Registered SHA-256 digests -> (sid, name)."""

    def __init__(self) -> None:
        self._by_digest: dict[bytes, HashEntry] = {}

    def __len__(self) -> int:
        return len(self._by_digest)

    def add(self, hexdigest: str, sid: int, name: str = "") -> bool:
        """Register a digest; False when it was already registered (the first sid wins)."""
        key = bytes.fromhex(hexdigest)
        if key in self._by_digest:
            return False
        self._by_digest[key] = HashEntry(sid, name)
        return True

    def lookup(self, hexdigest: str | None) -> HashEntry | None:
        if not hexdigest or len(hexdigest) != 64:
            return None
        try:
            return self._by_digest.get(bytes.fromhex(hexdigest))
        except ValueError:
            return None

    def load_list(self, path: str, sid: int) -> int:
        """Add every line of a hash list file under ``sid``; returns how many were new.

        Raises OSError when unreadable and HashListError (with the line) for a bad entry.
        """
        added = 0
        with open(path, encoding="utf-8", errors="strict") as fh:
            for lineno, line in enumerate(fh, 1):
                line = line.strip()
                if not line or line[0] == "#":
                    continue
                digest, _, name = line.partition(" ")
                try:
                    key = bytes.fromhex(digest)
                except ValueError:
                    key = b""
                if len(key) != 32 or len(digest) != 64:  # 64 hex digits, no whitespace inside
                    raise HashListError(lineno, f"not a SHA-256 hex digest: {digest[:80]!r}")
                if key not in self._by_digest:
                    self._by_digest[key] = HashEntry(sid, name.strip())
                    added += 1
        return added
