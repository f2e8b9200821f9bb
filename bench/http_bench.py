#!/usr/bin/env python3
"""Micro-benchmark of the HTTP path: detection -> HTTP/1.x framing -> codings/multipart -> file.

A deterministic (seeded) HTTP connection per workload is fed in MSS-sized segments through the
parser the pipeline would run (``registry.new_tcp_parser``), called the way
``Pipeline.on_data`` calls it (``flow.parser.feed`` under a ``try``, the attribute read again for
every segment, so a parser that replaces itself in ``flow.parser`` once the protocol is decided
is measured as such). Contexts:

- ``real``: the pipeline's work minus detection -- real :class:`~monitor.files.FileObject` s
  (SHA-256 + MD5, content buffer) with a listener that drops the bytes;
- ``recording``: ``tests.factories.RecordingContext`` (what the unit tests use; real files);
- ``null``: files that only count bytes (no hashes, no buffer): the parsers' own cost.

Each workload also times its floors on the same bytes: ``FileObject.write`` of the decoded body in
segment-sized writes, SHA-256 + MD5 alone, and for gzip ``zlib`` inflating the same segments.

    python3 bench/http_bench.py [--mbytes 16] [--segment 1448] [--repeat 3]
        [--only cl,chunked,...] [--contexts null,real,recording] [--profile out.prof]
    python3 bench/http_bench.py --memory     # bytes of an idle flow's parser state (tracemalloc)
    python3 bench/http_bench.py --baseline old_http1.py --only small,mixed --contexts null

``--baseline FILE`` times another copy of ``monitor/applayer/http1.py`` (e.g. ``git show
HEAD:monitor/applayer/http1.py > /tmp/old_http1.py``) against the working one on the same
workloads, runs interleaved (baseline, current, baseline, ...): on a shared machine whose load
drifts, that is the fair before/after; it prints both best times and their ratio.

Workload ``mixed`` is bench/gen.py's HTTP traffic of the mixed capture (multipart Office uploads,
some chunked; keep-alive gzip / chunked / Content-Length downloads), many flows, one parser each.

Prints, per workload and stage: best CPU seconds (``time.process_time``; the build machines are
shared and wall time swings with their load) of --repeat, and MB/s of the connection's bytes
(both directions, headers and framing included: "stream") and of the decoded body bytes.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import gzip
import hashlib
import importlib
import importlib.util
import random
import sys
import zlib
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.appbench import EN, JA, BenchContext, best, chunks_of, run_file  # noqa: E402
from monitor.applayer import registry  # noqa: E402
from monitor.files import FileObject  # noqa: E402
from monitor.model import TO_CLIENT, TO_SERVER  # noqa: E402
from tests.factories import RecordingContext, tflow  # noqa: E402

WORKLOADS = ("cl", "cl-upload", "chunked", "chunked-small", "multipart", "gzip", "small", "mixed")
# The "mixed" workload: bench/gen.py's HTTP flows of the mixed capture (uploads : downloads 18 : 30).
MIXED_HTTP = (("http_upload", 18), ("http_download", 30))


# ------------------------------------------------------------ workloads


def _text(rng: random.Random, size: int) -> bytes:
    """Mixed English/Japanese UTF-8 lines (compresses ~3-4x with gzip, like documents and pages)."""
    lines: list[bytes] = []
    total = 0
    while total < size:
        words = rng.choices(JA if rng.random() < 0.4 else EN, k=rng.randint(6, 30))
        line = " ".join(words).encode("utf-8")[:200]
        lines.append(line)
        total += len(line) + 2
    return b"\r\n".join(lines) + b"\r\n"


def _binary(rng: random.Random, size: int) -> bytes:
    """Office/archive-like content: random bytes (incompressible) with text runs."""
    return rng.randbytes(size)


REQ = (b"GET /files/drawing-rev-c.bin HTTP/1.1\r\nHost: files.example.com\r\n"
       b"User-Agent: Mozilla/5.0 (Windows NT 10.0; Win64; x64)\r\nAccept: */*\r\n"
       b"Accept-Encoding: gzip, deflate, br\r\nConnection: keep-alive\r\n\r\n")


def _resp_head(extra: bytes) -> bytes:
    return (b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Mon, 01 Apr 2024 09:00:00 GMT\r\n"
            b"Connection: keep-alive\r\n" + extra + b"\r\n")


def _chunked(rng: random.Random, body: bytes, small: bool = False) -> bytes:
    out: list[bytes] = []
    i = 0
    while i < len(body):
        if small:  # a streaming server flushing small writes
            n = rng.randint(256, 2048)
        else:
            n = rng.choice((1024, 4096, 8000, 8192, 16384, 32768, rng.randint(1, 40000)))
        piece = body[i:i + n]
        out.append(b"%x\r\n" % len(piece) + piece + b"\r\n")
        i += n
    out.append(b"0\r\n\r\n")
    return b"".join(out)


def build(kind: str, size: int) -> tuple[list[tuple[int, bytes]], int]:
    """(connection as (direction, stream bytes) runs, decoded body bytes)."""
    rng = random.Random(f"http-bench-{kind}")
    if kind == "cl":
        body = _binary(rng, size)
        resp = _resp_head(b"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n" % len(body))
        return [(TO_SERVER, REQ), (TO_CLIENT, resp + body)], len(body)
    if kind == "cl-upload":
        body = _binary(rng, size)
        req = (b"PUT /upload/drawing-rev-c.bin HTTP/1.1\r\nHost: files.example.com\r\n"
               b"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n" % len(body))
        return [(TO_SERVER, req + body), (TO_CLIENT, _resp_head(b"Content-Length: 0\r\n"))], len(body)
    if kind in ("chunked", "chunked-small"):
        body = _binary(rng, size)
        resp = _resp_head(b"Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n")
        return [(TO_SERVER, REQ), (TO_CLIENT, resp + _chunked(rng, body, kind == "chunked-small"))], len(body)
    if kind == "multipart":
        boundary = b"----WebKitFormBoundary7MA4YWxkTrZu0gW"
        payload = _binary(rng, size)
        fields = b"".join(
            b"--" + boundary + b'\r\nContent-Disposition: form-data; name="f%d"\r\n\r\n' % i
            + _text(rng, 200) for i in range(3))
        body = (fields + b"--" + boundary
                + b'\r\nContent-Disposition: form-data; name="file"; filename="drawing-rev-c.docx"\r\n'
                  b"Content-Type: application/vnd.openxmlformats-officedocument.wordprocessingml.document"
                  b"\r\n\r\n" + payload + b"\r\n--" + boundary + b"--\r\n")
        req = (b"POST /upload HTTP/1.1\r\nHost: files.example.com\r\n"
               b"Content-Type: multipart/form-data; boundary=" + boundary
               + b"\r\nContent-Length: %d\r\n\r\n" % len(body))
        return [(TO_SERVER, req + body), (TO_CLIENT, _resp_head(b"Content-Length: 0\r\n"))], len(body)
    if kind == "gzip":
        plain = _text(rng, size)
        coded = gzip.compress(plain, 6, mtime=0)
        resp = _resp_head(b"Content-Type: text/html; charset=utf-8\r\nContent-Encoding: gzip\r\n"
                          b"Content-Length: %d\r\n" % len(coded))
        return [(TO_SERVER, REQ), (TO_CLIENT, resp + coded)], len(plain)
    if kind == "small":
        # Keep-alive page loads: many transactions of a few KB (header parsing dominates).
        steps: list[tuple[int, bytes]] = []
        total = decoded = 0
        n = 0
        while total < size:
            body = _binary(rng, rng.randint(200, 12000))
            req = REQ.replace(b"drawing-rev-c.bin", b"asset-%d.js" % n)
            resp = _resp_head(b"Content-Type: application/javascript\r\nContent-Length: %d\r\n"
                              b"Cache-Control: max-age=3600\r\nETag: \"%x\"\r\n" % (len(body), n))
            steps += [(TO_SERVER, req), (TO_CLIENT, resp + body)]
            total += len(req) + len(resp) + len(body)
            decoded += len(body)
            n += 1
        return steps, decoded
    raise SystemExit(f"unknown workload {kind}")


def build_mixed(size: int) -> tuple[list[list[tuple[int, bytes]]], int]:
    """bench/gen.py's HTTP flows, as the mixed capture carries them (multipart Office uploads, some
    chunked; keep-alive downloads, gzip / chunked / Content-Length): one segment list per flow,
    each segment a TCP payload as gen.py cut it. Returns (flows, stream bytes)."""
    # Imported by name: gen.py's own fallback import of textpool confuses a static checker.
    gen = importlib.import_module("bench.gen").Generator(20261125, leaks=False)
    kinds = [k for k, w in MIXED_HTTP for _ in range(w)]
    flows: list[list[tuple[int, bytes]]] = []
    total = 0
    while total < size:
        gen.n += 1
        steps: list[tuple[int, bytes]] = []
        for frame in getattr(gen, gen.rng.choice(kinds))():
            payload = frame[54:]  # Ethernet + IPv4 (no options) + TCP (no options), as gen.py writes
            if payload:
                steps.append((TO_SERVER if frame[:6] == _GEN_TO_SERVER else TO_CLIENT, payload))
                total += len(payload)
        flows.append(steps)
    return flows, total


_GEN_TO_SERVER = b"\x02\x00\x00\x00\x00\x02"  # gen.py's ETH_DST: frames the client sends


def segments(runs: list[tuple[int, bytes]], mss: int) -> list[tuple[int, bytes]]:
    return [(d, data[i:i + mss]) for d, data in runs for i in range(0, len(data), mss)]


# ------------------------------------------------------------ stages


def run_http(steps: list[tuple[int, bytes]], context: str = "real") -> Any:
    ctx: Any = RecordingContext(flow=tflow(sport=80)) if context == "recording" else \
        BenchContext(real_files=context == "real")
    run_flow(ctx, steps)
    return ctx


def run_flows(flows: list[list[tuple[int, bytes]]], context: str = "real") -> Any:
    """Several connections, one parser each (per-flow and per-transaction costs), one context."""
    ctx: Any = RecordingContext(flow=tflow(sport=80)) if context == "recording" else \
        BenchContext(real_files=context == "real")
    for steps in flows:
        ctx.flow.parser = None
        run_flow(ctx, steps)
    return ctx


def run_flow(ctx: Any, steps: list[tuple[int, bytes]]) -> None:
    flow = ctx.flow
    flow.parser = registry.new_tcp_parser(ctx)
    for d, data in steps:
        # As Pipeline.on_data: the parser is read from the flow for every segment.
        parser = flow.parser
        if parser is not None:
            try:
                parser.feed(d, data, 1.0)
            except Exception:  # noqa: BLE001 - as the pipeline
                flow.parser = None
    if flow.parser is not None:
        flow.parser.close(2.0)


def run_hashes(chunks: list[bytes]) -> str:
    s = hashlib.sha256()
    m = hashlib.md5()  # noqa: S324
    for c in chunks:
        s.update(c)
        m.update(c)
    return s.hexdigest() + m.hexdigest()


def run_zlib(chunks: list[bytes]) -> int:
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    return sum(len(d.decompress(c)) for c in chunks)


def _check(kind: str, ctx: Any, decoded: int) -> None:
    """The run decoded what it should (so a fast figure is never a broken parse)."""
    files = ctx.files
    if kind == "small":
        got = sum(f.size for f in files)
        assert got == decoded, (kind, got, decoded)
    else:
        biggest = max((f.size for f in files), default=0)
        want = decoded if kind != "multipart" else decoded - 2000
        assert biggest >= want * 0.99, (kind, biggest, decoded)
    for f in files:
        assert f.state == "CLOSED", (kind, f.state)
        if isinstance(f, FileObject) and f.size:
            assert f.sha256, kind
    anomalies = ctx.stats.total("applayer.anomaly")
    assert anomalies == 0, (kind, ctx.stats.snapshot())


def bench_mixed(size: int, args: argparse.Namespace) -> None:
    """The "mixed" workload: many flows, each through its own parser (as the pipeline runs them)."""
    flows, wire = build_mixed(size)
    for context in args.contexts.split(","):
        ctx = run_flows(flows, context)
        for f in ctx.files:
            assert f.state == "CLOSED", ("mixed", f.state)
        assert ctx.stats.total("applayer.anomaly") == 0, ("mixed", ctx.stats.snapshot())
    ctx = run_flows(flows, "real")
    decoded = sum(f.size for f in ctx.files if f.depth == 0)
    plain = [c for f in ctx.files if f.depth == 0 for c in chunks_of(f.buffer or b"", args.segment)]
    mb = wire / 1e6
    print(f"{'mixed':<13} {len(flows)} flows, {len(ctx.files)} files, {mb:.1f} MB stream", flush=True)
    for context in args.contexts.split(","):
        label = {"real": "http+file", "null": "http (file stub)", "recording": "http+RecordingContext"}[context]
        seconds = best(lambda c=context: run_flows(flows, c), args.repeat)  # type: ignore[misc]
        print(f"{'mixed':<13} {label:<24} {seconds:8.3f} {mb / seconds:9.1f} {decoded / 1e6 / seconds:9.1f}",
              flush=True)
    if not args.no_floors:
        for stage, fn in (("FileObject.write", lambda: [run_file(plain)]),
                          ("sha256+md5 (floor)", lambda: run_hashes(plain))):
            seconds = best(fn, args.repeat)
            print(f"{'mixed':<13} {stage:<24} {seconds:8.3f} {'':>9} {decoded / 1e6 / seconds:9.1f}", flush=True)
    if args.profile:
        cProfile.runctx("run_flows(flows, 'real')", globals(), {"run_flows": run_flows, "flows": flows},
                        args.profile)
        args.profile = None


_HTTP_SPEC = ("monitor.applayer.http1", "HttpParser")


def load_baseline(path: str) -> type:
    """The HttpParser class of another copy of http1.py, loaded beside the working one."""
    spec = importlib.util.spec_from_file_location("baseline_http1", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules["baseline_http1"] = module  # (dataclasses look their module up while it loads)
    spec.loader.exec_module(module)
    return module.HttpParser  # type: ignore[no-any-return]


def parser_class(cls: type) -> None:
    """Make the registry hand out ``cls`` for HTTP (its cache of imported parser classes)."""
    registry._factory("http")
    registry._LOADED[_HTTP_SPEC] = cls


def compare(kind: str, fn: Any, args: argparse.Namespace) -> None:
    """Best CPU time of the baseline parser and of the working one, runs interleaved."""
    current = registry._factory("http")
    baseline = load_baseline(args.baseline)
    times: dict[str, list[float]] = {"baseline": [], "current": []}
    try:
        for _ in range(args.repeat):
            for label, cls in (("baseline", baseline), ("current", current)):
                parser_class(cls)  # type: ignore[arg-type]
                times[label].append(best(fn, 1))
    finally:
        parser_class(current)  # type: ignore[arg-type]
    before, after = min(times["baseline"]), min(times["current"])
    print(f"{kind:<13} {args.contexts:<10} baseline {before:8.4f} s  current {after:8.4f} s  "
          f"current/baseline {after / before:6.3f}", flush=True)


def bench_workload(kind: str, size: int, args: argparse.Namespace) -> None:
    if args.baseline:
        if kind == "mixed":
            flows, _ = build_mixed(size)
            compare(kind, lambda: run_flows(flows, args.contexts), args)
        else:
            steps = segments(build(kind, size)[0], args.segment)
            compare(kind, lambda: run_http(steps, args.contexts), args)
        return
    if kind == "mixed":
        bench_mixed(size, args)
        return
    runs, decoded = build(kind, size)
    steps = segments(runs, args.segment)
    wire = sum(len(d) for _, d in steps)
    for context in args.contexts.split(","):
        _check(kind, run_http(steps, context), decoded)
    ctx = run_http(steps, "real")
    body = max(ctx.files, key=lambda f: f.size)
    plain = chunks_of(body.buffer or b"", args.segment) if kind != "small" else \
        [c for f in ctx.files for c in chunks_of(f.buffer or b"", args.segment)]
    mb = wire / 1e6

    def show(stage: str, seconds: float, nbytes: float = mb) -> None:
        if nbytes == mb:  # a parser stage: MB/s of the stream, and of the decoded body bytes
            rates = f"{mb / seconds:9.1f} {decoded / 1e6 / seconds:9.1f}"
        else:
            rates = f"{'':>9} {nbytes / seconds:9.1f}"
        print(f"{kind:<13} {stage:<24} {seconds:8.3f} {rates}", flush=True)

    for context in args.contexts.split(","):
        label = {"real": "http+file", "null": "http (file stub)", "recording": "http+RecordingContext"}[context]
        show(label, best(lambda c=context: run_http(steps, c), args.repeat))  # type: ignore[misc]
    if not args.no_floors:
        show("FileObject.write", best(lambda: run_file(plain), args.repeat), decoded / 1e6)
        show("sha256+md5 (floor)", best(lambda: run_hashes(plain), args.repeat), decoded / 1e6)
        if kind == "gzip":
            start = runs[1][1].find(b"\r\n\r\n") + 4
            coded = chunks_of(runs[1][1][start:], args.segment)
            show("zlib inflate (floor)", best(lambda: run_zlib(coded), args.repeat), mb)
    if args.profile:
        cProfile.runctx("run_http(steps, 'real')", globals(), {"run_http": run_http, "steps": steps},
                        args.profile)
        args.profile = None


def flow_memory(flows: int = 2000) -> None:
    """tracemalloc bytes per idle HTTP flow of the parser state (detecting parser -> HttpParser,
    its directions, transactions, buffers, open files): after the request of a keep-alive
    connection (waiting for the response), and after its response (waiting for the next request).
    The contexts, and their counters, are made before the measurement (the pipeline's, not the
    parser's); hash state inside OpenSSL is not seen by tracemalloc."""
    import tracemalloc

    req = b"GET /%d HTTP/1.1\r\nHost: h%d.example.com\r\nUser-Agent: Mozilla/5.0\r\nAccept: */*\r\n\r\n"
    resp = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 5\r\n\r\nhello"
    for stage in ("after request", "after response"):
        contexts = [BenchContext(real_files=True) for _ in range(flows + 1)]
        for ctx in contexts:
            ctx.stats.incr("applayer.anomaly", type="-")  # the counter's own first allocation
        _feed_flow(contexts.pop(), req % (0, 0), resp if stage == "after response" else b"")  # warm-up
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        for i, ctx in enumerate(contexts):
            _feed_flow(ctx, req % (i, i % 997), resp if stage == "after response" else b"")
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        grown = sum(d.size_diff for d in after.compare_to(before, "filename")
                    if not d.traceback[0].filename.endswith(("stats.py", "tracemalloc.py")))
        print(f"idle HTTP flow, {stage:<15} {grown / flows:8.0f} bytes/flow (tracemalloc, {flows} flows)")


def _feed_flow(ctx: Any, request: bytes, response: bytes) -> None:
    ctx.flow.parser = registry.new_tcp_parser(ctx)
    ctx.flow.parser.feed(TO_SERVER, request, 1.0)
    if response:
        ctx.flow.parser.feed(TO_CLIENT, response, 1.0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mbytes", type=float, default=16, help="body size in MB (default 16)")
    ap.add_argument("--segment", type=int, default=1448, help="TCP segment size (default 1448)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", default=",".join(WORKLOADS))
    ap.add_argument("--contexts", default="null,real,recording")
    ap.add_argument("--no-floors", action="store_true")
    ap.add_argument("--profile", help="write a cProfile of the real-context run of the first workload")
    ap.add_argument("--memory", action="store_true", help="only measure the bytes of an idle flow's parser state")
    ap.add_argument("--baseline", help="another http1.py to time against the working one (one context)")
    args = ap.parse_args(argv)
    if args.baseline and "," in args.contexts:
        ap.error("--baseline compares in one context: pass --contexts null (or real, recording)")
    if args.memory:
        flow_memory()
        return 0
    size = int(args.mbytes * 1e6)
    print(f"segment {args.segment} B, body ~{args.mbytes:g} MB, best CPU time of {args.repeat}")
    print(f"{'workload':<13} {'stage':<24} {'cpu s':>8} {'stream':>9} {'decoded':>9}  (MB/s)")
    for kind in args.only.split(","):
        bench_workload(kind, size, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
