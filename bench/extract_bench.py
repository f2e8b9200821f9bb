#!/usr/bin/env python3
"""Content extraction micro-benchmark: the files bench/gen.py puts in the mixed capture, through
``monitor.content.extract.walk`` (every member level, as the pipeline does), in CPU seconds.

    python3 bench/extract_bench.py [--repeat 5] [--seed 20261125] [--only tiny,files]

Workloads, built from bench/gen.py's ``Content`` pools with a fixed seed:
  docx   the 32 Word documents (word/document.xml of 2-20 k characters, core.xml, a PNG)
  zip    the 32 archives of text members (UTF-8, CP932 CSV, EUC-JP, UTF-16, JSON, HTML) + a blob
  text   gzip-decoded HTML bodies (UTF-8 text, 5-120 kB) as the HTTP parser hands them over
  binary the 16 executable-shaped blobs (not text: only format detection runs)
  repeat the docx and zip pools 8 times over in a seeded order, top level only, through
         ``ExtractCache`` as the pipeline calls it (the capture carries each pool file ~10 times)
  tiny   4,000 short text bodies (5-300 bytes: "hello", JSON, HTML snippets, as in the many-flows
         capture) through ``ExtractCache``: extract()'s fixed cost per file
  files  FileObject write/close/content for 600 files of 0.5-512 KiB written in 1448-4096 byte
         pieces (the m200 capture's mix), with SHA-256: the per-write and per-file cost
  members the docx and zip pools 8 times over in the seeded order of ``repeat``, as the pipeline
         handles a file: a FileObject (SHA-256) written in 1448-byte pieces, and on its close
         ``ExtractCache`` and, for every member, a child FileObject and the same again (the
         capture's repeated archives: what a repeated file's members cost)
Prints MB/s of input and CPU ms per pass (best of --repeat), and a digest of the items so two
trees can be checked to give the same output.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.gen import Content  # noqa: E402
from monitor.config import ContentConfig  # noqa: E402
from monitor.content.extract import Member, extract, walk  # noqa: E402
from monitor.files import STATE_TRUNCATED, FileObject  # noqa: E402
from monitor.stats import Stats  # noqa: E402

try:  # trees before the cache existed: time plain extract(), for a before/after comparison
    from monitor.content.extract import ExtractCache
except ImportError:  # pragma: no cover
    ExtractCache = None  # type: ignore[assignment,misc]


def workloads(seed: int) -> dict[str, list[tuple[bytes, str, str | None]]]:
    content = Content(random.Random(seed))
    rng = random.Random(seed + 1)
    texts = [content.text(rng.randint(5000, 120000)).encode() for _ in range(48)]
    return {
        "docx": [(d, "report.docx", None) for d in content.docx],
        "zip": [(z, "data.zip", "application/zip") for z in content.zips],
        "text": [(t, "", "text/html") for t in texts],
        "binary": [(b, "", "application/octet-stream") for b in content.binaries],
    }


def tiny_bodies(seed: int) -> list[tuple[bytes, str, str | None]]:
    rng = random.Random(seed)
    shapes = [
        lambda i: (b"hello", "", "text/plain"),
        lambda i: (b'{"ok": true, "id": %d}' % i, "", "application/json"),
        lambda i: (f"<p>{i} 件の結果</p>".encode(), "", "text/html"),
        lambda i: (b"ok", "", None),
        lambda i: (bytes(rng.randrange(32, 127) for _ in range(rng.randint(20, 300))), "", "text/plain"),
    ]
    return [shapes[i % len(shapes)](i) for i in range(4000)]


def file_writes(seed: int) -> list[list[bytes]]:
    """The pieces of 600 files: sizes 0.5-512 KiB, pieces of 1448, 2896 or 4096 bytes."""
    rng = random.Random(seed)
    pool = {n: rng.randbytes(n) for n in (1448, 2896, 4096)}
    files = []
    for _ in range(600):
        left = 1 << rng.choice([9, 12, 13, 15, 15, 15, 16, 16, 16, 16, 18, 18, 19])
        pieces = []
        while left > 0:
            n = min(left, rng.choice((1448, 2896, 4096)))
            pieces.append(pool[n] if n in pool else rng.randbytes(n))
            left -= n
        files.append(pieces)
    return files


def files_pass(files: list[list[bytes]]) -> tuple[float, str]:
    """FileObject as the pipeline drives it: write the pieces, close, take content(), drop it."""
    digest = hashlib.sha256()
    sums = []
    t0 = time.process_time()
    for pieces in files:
        f = FileObject(None, 0)
        for piece in pieces:
            f.write(piece)
        f.close()
        content = f.content()
        sums.append((f.sha256, f.detected_type, len(content or b"")))
        f.buffer = None
    elapsed = time.process_time() - t0
    digest.update(repr(sums).encode())
    return elapsed, digest.hexdigest()[:16]


class _Extractor:
    """Pipeline.on_file_close/_extract without detection: extraction and member files."""

    def __init__(self, limits: ContentConfig) -> None:
        self.limits = limits
        self.stats = Stats()
        self.cache = ExtractCache() if ExtractCache is not None else None
        self.seen: list[tuple[Any, ...]] = []

    def on_file_data(self, f: FileObject, data: bytes) -> None:
        pass

    def on_file_gap(self, f: FileObject, length: int) -> None:
        pass

    def on_file_close(self, f: FileObject) -> None:
        self.seen.append((f.name, f.size, f.state, f.sha256, f.detected_type))
        content = f.content()
        if content is not None and f.depth < self.limits.max_depth:
            run = self.cache.extract if self.cache is not None else extract
            for item in run(content, name=f.name, mime=f.declared_type or f.detected_type, depth=f.depth,
                            limits=self.limits, stats=self.stats):
                if isinstance(item, Member):
                    child = FileObject(None, f.direction, name=item.name, parent=f, depth=f.depth + 1,
                                       listener=self, max_buffer=self.limits.max_buffer)
                    child.write(item.data)
                    child.close(STATE_TRUNCATED if item.truncated else None)
                else:
                    self.seen.append((f.name, repr(item)))
        f.buffer = None


def members_pass(files: list[tuple[bytes, str, str | None]], limits: ContentConfig) -> tuple[float, str]:
    """Files as the pipeline handles them: written in pieces, closed, extracted with their members."""
    extractor = _Extractor(limits)
    pieces = [[data[i : i + 1448] for i in range(0, len(data), 1448)] for data, _, _ in files]
    t0 = time.process_time()
    for (_, name, mime), parts in zip(files, pieces, strict=True):
        f = FileObject(None, 0, name=name, declared_type=mime, listener=extractor, max_buffer=limits.max_buffer)
        for part in parts:
            f.write(part)
        f.close()
    elapsed = time.process_time() - t0
    digest = hashlib.sha256(repr(extractor.seen).encode())
    digest.update(repr(sorted(extractor.stats.snapshot().items())).encode())
    return elapsed, digest.hexdigest()[:16]


def repeated(files: list[tuple[bytes, str, str | None]], seed: int) -> list[tuple[bytes, str, str | None]]:
    out = files * 8
    random.Random(seed).shuffle(out)
    return out


def cached_pass(files: list[tuple[bytes, str, str | None]], limits: ContentConfig) -> tuple[float, str]:
    """One fresh ExtractCache over ``files`` (top level), as Pipeline._extract calls it."""
    stats = Stats()
    run = ExtractCache().extract if ExtractCache is not None else extract
    digest = hashlib.sha256()
    items: list[Any] = []
    t0 = time.process_time()
    for data, name, mime in files:
        items.extend(run(data, name=name, mime=mime, depth=0, limits=limits, stats=stats))
    elapsed = time.process_time() - t0
    for item in items:
        digest.update(repr(item).encode())
    digest.update(repr(sorted(stats.snapshot().items())).encode())
    return elapsed, digest.hexdigest()[:16]


def one_pass(files: list[tuple[bytes, str, str | None]], limits: ContentConfig) -> tuple[float, str]:
    stats = Stats()
    digest = hashlib.sha256()
    items: list[Any] = []
    t0 = time.process_time()
    for data, name, mime in files:
        items.extend(walk(data, name=name, mime=mime, limits=limits, stats=stats))
    elapsed = time.process_time() - t0
    for path, item in items:
        digest.update(repr((path, item)).encode())
    digest.update(repr(sorted(stats.snapshot().items())).encode())
    return elapsed, digest.hexdigest()[:16]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seed", type=int, default=20261125)
    ap.add_argument("--only", default="", help="comma-separated workloads to run (default: all)")
    args = ap.parse_args()
    limits = ContentConfig()
    total = 0.0
    print(f"{'workload':8s} {'files':>5s} {'MB':>7s} {'cpu ms':>8s} {'MB/s':>7s}  digest")
    loads = workloads(args.seed)
    loads["repeat"] = repeated(loads["docx"] + loads["zip"], args.seed)
    loads["tiny"] = tiny_bodies(args.seed)
    loads["members"] = loads["repeat"]
    only = set(filter(None, args.only.split(",")))
    for name, files in loads.items():
        if only and name not in only:
            continue
        size = sum(len(f[0]) for f in files)
        timed = members_pass if name == "members" else cached_pass if name in ("repeat", "tiny") else one_pass
        runs = [timed(files, limits) for _ in range(args.repeat)]
        best = min(r[0] for r in runs)
        total += best
        print(f"{name:8s} {len(files):5d} {size / 1e6:7.2f} {best * 1e3:8.1f} {size / 1e6 / best:7.1f}  {runs[0][1]}")
    if only and "files" not in only:
        print(f"{'total':8s} {'':5s} {'':7s} {total * 1e3:8.1f}")
        return 0
    pieces = file_writes(args.seed)
    size = sum(len(p) for f in pieces for p in f)
    runs = [files_pass(pieces) for _ in range(args.repeat)]
    best = min(r[0] for r in runs)
    total += best
    print(f"{'files':8s} {len(pieces):5d} {size / 1e6:7.2f} {best * 1e3:8.1f} {size / 1e6 / best:7.1f}  {runs[0][1]}")
    print(f"{'total':8s} {'':5s} {'':7s} {total * 1e3:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
