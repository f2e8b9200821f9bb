"""Partial-document fingerprints: winnowed k-gram hashes of protected documents, never their text.

Indexing (``leakmon fingerprint index DIR -o FILE``): each document's text is extracted with
the content decoders, normalised (NFKC, case-folded, everything but letters and digits
removed, so spacing, punctuation, full/half width and line breaks do not matter), cut into
overlapping k-grams of :data:`K` characters, each hashed to 64 bits, and *winnowed*: of every
window of :data:`W` consecutive k-gram hashes only the smallest is kept (Schleimer, Wilkerson,
Aiken, SIGMOD 2003). Only those hashes are stored.

Matching: every k-gram of an outgoing text is hashed (numpy, vectorised) and looked up. Any
passage shared with a document and at least ``W + K - 1`` normalised characters long contains
at least one of the document's kept hashes (winnowing's guarantee), and along a shared passage
the kept hashes recur at most ``W`` positions apart, so a shared passage shows up as a *run* of
hits. Runs of at least two hits count; a text shares ``sum(run coverage)`` characters with a
document (coverage of a run: from its first hit to the end of its last k-gram). An alert needs
``detection.partial_min_chars`` shared characters (default 60: about two sentences of Japanese
or one of English, well above the longest boilerplate k-gram chains measured on unrelated
text; see docs/signatures.md for the measurements).

Why K = 16 and W = 6: K must exceed the common phrases of both languages after spaces are
removed (Japanese formulaic phrases run 8-14 characters, an English 3-word phrase is about 15),
and W <= K keeps the k-grams of consecutive kept hashes overlapping, so a run's coverage is
within W - 1 characters of the true shared length at each end. The index keeps about
2/(W+1) = 29 % of the k-grams (8 bytes each).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import sys
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
else:

    class _LazyNumpy:
        """numpy, imported on first use: it costs 0.1-0.2 s of start-up in every process (and
        every ``--workers`` worker), and only rule sets with ``documents:`` indexes need it."""

        def __getattr__(self, name: str) -> Any:
            import numpy

            globals()["np"] = numpy  # later lookups find the module itself
            return getattr(numpy, name)

    np = _LazyNumpy()

K = 16
W = 6
FORMAT = "leakmon-partial-index"
FORMAT_VERSION = 1
NORMALIZER = "nfkc-casefold-alnum-v1"  # with the hash below: bump both together
HASH = "splitmix-linear-v2"
MIN_RUN_FACTOR = 2  # a run must cover 2 k-grams' worth of characters to count
MAX_TEXT_CHARS = 8 << 20  # a longer outgoing text is matched on its first 8 Mi characters

_NON_WORD = re.compile(r"[\W_]+")


def _splitmix64(n: int, seed: int) -> list[int]:
    out, x = [], seed
    for _ in range(n):
        x = (x + 0x9E3779B97F4A7C15) % (1 << 64)
        z = x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % (1 << 64)
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % (1 << 64)
        out.append((z ^ (z >> 31)) | 1)
    return out


# Independent random odd 64-bit multipliers, one per k-gram position (fixed: part of the index
# format). Characters are scrambled first, so the sum over positions is not a linear function of
# the code points (a linear one collides on anagram-like k-grams).
@cache
def _multipliers() -> np.ndarray:
    return np.array(_splitmix64(64, 0x6C65616B6D6F6E), dtype=np.uint64)


class IndexError_(ValueError):  # noqa: N801 - "IndexError" is a builtin
    """A partial index file that cannot be used."""


def normalize(text: str) -> str:
    """The fingerprint normal form: NFKC, case-folded, letters and digits only.

    Deliberately self-contained (not monitor.content's text normaliser): this function is part
    of the index format, so it may change only together with :data:`NORMALIZER`.
    """
    return _NON_WORD.sub("", unicodedata.normalize("NFKC", text).casefold())


def kgram_hashes(norm: str, k: int = K) -> np.ndarray:
    """64-bit hash of every k-gram of an already normalised text (empty if shorter than k)."""
    n = len(norm) - k + 1
    if n <= 0:
        return np.zeros(0, dtype=np.uint64)
    codes = _mix(np.frombuffer(norm.encode("utf-32-le"), dtype="<u4").astype(np.uint64))
    h = np.zeros(n, dtype=np.uint64)
    mult = _multipliers()
    for j in range(k):
        h += codes[j:j + n] * mult[j]
    return _mix(h)  # spreads the bits so "smallest hash" is an unbiased choice


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, vectorised (uint64 arithmetic wraps)."""
    h = h + np.uint64(0x9E3779B97F4A7C15)
    h ^= h >> np.uint64(30)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(27)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(31)
    return h


def winnow(hashes: np.ndarray, w: int = W) -> np.ndarray:
    """The hashes winnowing keeps (sorted, unique)."""
    if len(hashes) == 0:
        return hashes
    if len(hashes) <= w:
        return np.unique(hashes[[int(hashes.argmin())]])
    windows = np.lib.stride_tricks.sliding_window_view(hashes, w)
    pos = windows.argmin(axis=1) + np.arange(len(windows))
    return np.unique(hashes[np.unique(pos)])


@dataclass(frozen=True)
class DocumentInfo:
    name: str  # path relative to the indexed folder
    chars: int  # normalised characters
    hashes: int


@dataclass(frozen=True)
class DocumentMatch:
    doc: DocumentInfo
    shared_chars: int
    hits: int

    @property
    def fraction(self) -> float:
        return min(1.0, self.shared_chars / self.doc.chars) if self.doc.chars else 0.0


class PartialIndex:
    """Loaded index: sorted hash array with the document of each hash."""

    def __init__(self, docs: list[DocumentInfo], per_doc: list[np.ndarray], k: int = K, w: int = W) -> None:
        self.docs = docs
        self.k = k
        self.w = w
        if per_doc:
            keys = np.concatenate(per_doc) if per_doc else np.zeros(0, dtype=np.uint64)
            owner = np.concatenate([np.full(len(a), i, dtype=np.int32) for i, a in enumerate(per_doc)])
            order = np.argsort(keys, kind="stable")
            self.keys = keys[order]
            self.owner = owner[order]
        else:
            self.keys = np.zeros(0, dtype=np.uint64)
            self.owner = np.zeros(0, dtype=np.int32)

    def __len__(self) -> int:
        return len(self.keys)

    # -- persistence
    @classmethod
    def load(cls, path: str) -> PartialIndex:
        try:
            with open(path, encoding="utf-8") as fh:
                doc = json.load(fh)
        except json.JSONDecodeError as exc:
            raise IndexError_(f"not a JSON index: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise IndexError_(f"not a {FORMAT} file")
        if doc.get("version") != FORMAT_VERSION:
            raise IndexError_(f"index version {doc.get('version')!r}, this leakmon reads {FORMAT_VERSION}")
        if doc.get("normalizer") != NORMALIZER:
            raise IndexError_(f"index normaliser {doc.get('normalizer')!r} differs from {NORMALIZER!r}: rebuild it")
        k, w = doc.get("k"), doc.get("w")
        if not isinstance(k, int) or not isinstance(w, int) or not (4 <= k <= 64 and 1 <= w <= 64):
            raise IndexError_("bad k/w")
        docs: list[DocumentInfo] = []
        arrays: list[np.ndarray] = []
        for d in doc.get("documents", []):
            try:
                raw = base64.b64decode(d["hashes"], validate=True)
                arr = np.frombuffer(raw, dtype="<u8").astype(np.uint64)
                docs.append(DocumentInfo(str(d["name"]), int(d["chars"]), len(arr)))
            except (KeyError, TypeError, ValueError) as exc:
                raise IndexError_(f"bad document entry: {exc}") from None
            arrays.append(arr)
        return cls(docs, arrays, k, w)

    @staticmethod
    def dump(entries: list[tuple[str, int, np.ndarray]], path: str, k: int = K, w: int = W) -> None:
        out = {
            "format": FORMAT, "version": FORMAT_VERSION, "normalizer": NORMALIZER, "k": k, "w": w,
            "note": "winnowed k-gram hashes only; the documents' text is not stored",
            "documents": [
                {"name": name, "chars": chars, "hashes": base64.b64encode(arr.astype("<u8").tobytes()).decode()}
                for name, chars, arr in entries
            ],
        }
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(out, fh, ensure_ascii=False)
        os.replace(tmp, path)

    # -- matching
    def match_normalized(self, norm: str, min_chars: int) -> list[DocumentMatch]:
        """Documents sharing at least ``min_chars`` characters with ``norm``, best first."""
        if len(self.keys) == 0 or len(norm) < min(self.k, min_chars):
            return []
        h = kgram_hashes(norm, self.k)
        idx = np.searchsorted(self.keys, h)
        idx[idx >= len(self.keys)] = len(self.keys) - 1
        found = self.keys[idx] == h
        if not found.any():
            return []
        positions = np.nonzero(found)[0]
        left = idx[positions]
        right = np.searchsorted(self.keys, h[positions], side="right")
        per_doc: dict[int, list[int]] = {}
        for p, lo, hi in zip(positions.tolist(), left.tolist(), right.tolist(), strict=True):
            for d in set(self.owner[lo:hi].tolist()):
                per_doc.setdefault(d, []).append(p)
        out = []
        for d, pos in per_doc.items():
            shared, hits = _run_coverage(np.array(pos, dtype=np.int64), self.k, self.w)
            if shared >= min_chars:
                out.append(DocumentMatch(self.docs[d], shared, hits))
        out.sort(key=lambda m: -m.shared_chars)
        return out


def _run_coverage(pos: np.ndarray, k: int, w: int) -> tuple[int, int]:
    """(covered characters, hits) summed over the runs (hits spaced at most ``w`` apart) that
    cover at least ``MIN_RUN_FACTOR * k`` characters: shorter runs are common phrases."""
    if len(pos) < 2:
        return 0, 0
    pos = np.unique(pos)
    breaks = np.nonzero(np.diff(pos) > w)[0]
    starts = np.concatenate(([0], breaks + 1))
    ends = np.concatenate((breaks, [len(pos) - 1]))
    sizes = ends - starts + 1
    cover = (pos[ends] + k) - pos[starts]
    keep = cover >= MIN_RUN_FACTOR * k
    if not keep.any():
        return 0, 0
    return int(cover[keep].sum()), int(sizes[keep].sum())


def match(indexes: list[PartialIndex], text: str, min_chars: int) -> list[tuple[PartialIndex, DocumentMatch]]:
    norm = normalize(text[:MAX_TEXT_CHARS])
    out = []
    for ix in indexes:
        for m in ix.match_normalized(norm, min_chars):
            out.append((ix, m))
    out.sort(key=lambda t: -t[1].shared_chars)
    return out


# ---------------------------------------------------------------- indexing


def document_text(data: bytes, name: str) -> str:
    """All text of one document (any format the content decoders read; plain text otherwise)."""
    parts: list[str] = []
    try:
        from monitor.config import ContentConfig
        from monitor.content.extract import Text, walk
        from monitor.stats import Stats

        for _path, item in walk(data, name=name, limits=ContentConfig(), stats=Stats()):
            if isinstance(item, Text):
                parts.append(item.text)
        if parts:
            return "\n".join(parts)
    except ImportError:
        pass
    for codec in ("utf-8", "cp932", "euc_jp", "iso2022_jp", "utf-16"):
        try:
            return data.decode(codec)
        except UnicodeDecodeError:
            continue
    return ""


def index_folder(folder: str) -> Iterator[tuple[str, int, np.ndarray]]:
    """(relative name, normalised chars, kept hashes) for every file under ``folder``."""
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for fname in sorted(files):
            full = os.path.join(root, fname)
            try:
                with open(full, "rb") as fh:
                    data = fh.read()
            except OSError:
                continue
            norm = normalize(document_text(data, fname))
            kept = winnow(kgram_hashes(norm))
            if len(kept):
                yield os.path.relpath(full, folder), len(norm), kept


def build_index(folder: str, out: str) -> list[tuple[str, int, int]]:
    """Index ``folder`` into ``out``; returns (name, chars, hashes) per indexed document."""
    entries = list(index_folder(folder))
    PartialIndex.dump(entries, out)
    return [(n, c, len(a)) for n, c, a in entries]


def main(argv: list[str] | None = None) -> int:
    """``leakmon fingerprint index DIR -o FILE`` (also ``python -m detectors.partial index ...``)."""
    ap = argparse.ArgumentParser(prog="leakmon fingerprint", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    ix = sub.add_parser("index", help="index the protected documents under DIR")
    ix.add_argument("dir")
    ix.add_argument("-o", "--output", required=True, help="index file to write (JSON, hashes only)")
    args = ap.parse_args(argv)
    if not os.path.isdir(args.dir):
        print(f"leakmon fingerprint: {args.dir}: not a directory", file=sys.stderr)
        return 2
    done = build_index(args.dir, args.output)
    total = sum(h for _, _, h in done)
    digest = hashlib.sha256(open(args.output, "rb").read()).hexdigest()[:16]
    print(f"indexed {len(done)} documents, {total} hashes (k={K}, w={W}) -> {args.output} [{digest}]")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
