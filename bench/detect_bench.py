#!/usr/bin/env python3
"""Detection hot path and per-flow detection memory, both matcher engines.

``segments``: many flows, both directions, stream bytes cut into 1448-byte segments (the
reassembler's in-order hand-over) and interleaved round-robin across flows, fed to
``Detection.stream_data`` -- the per-segment call the pipeline makes. Content is seeded:
English and Japanese text lines, HTML, random binary, and base64 MIME bodies (which open flat
runs), with the shipped example signatures loaded. Reports CPU microseconds per segment
(best of ``--repeat``) and MB/s, plus the bare ``MarkerStreams.feed`` cost on the same
segments, and checks that the planted markers are found (same count every run).

``compile``: the shipped signatures' matcher built with no cache, on a cache miss (compile and
store) and on a hit (load), CPU milliseconds.

``memory``: detection state of idle HTTP flows -- a request head in one direction, a response
head in the other, then nothing -- for ``--flows`` flows. Python objects through tracemalloc;
Hyperscan stream state (malloc'd by the library, invisible to tracemalloc) from the RSS growth.

    python3 bench/detect_bench.py                     # both modes, both engines
    python3 bench/detect_bench.py segments --engine hyperscan --repeat 5
    python3 bench/detect_bench.py segments --engine hyperscan --capture bench/data/m50.pcap
    python3 bench/detect_bench.py memory --flows 20000
    python3 bench/detect_bench.py compile --repeat 5
    python3 bench/detect_bench.py segments --capture bench/data/m50.pcap --markers 1000   # 1,000-marker set
    python3 bench/detect_bench.py views --capture bench/data/m50.pcap

``views``: every matcher call a replay of ``--capture`` makes -- raw streams, file streams and
decoded buffers -- replayed through the marker layer (``MarkerStreams.feed``, ``MarkerSet.scan``)
and through bare Hyperscan with and without the line probe (the floors: what the Python layer
and the probe cost on top of the bytes). CPU milliseconds per view, best of ``--repeat``; under
``valgrind --tool=callgrind`` the recorded calls are the same on every run.
"""

from __future__ import annotations

import argparse
import base64
import gc
import os
import random
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LEAKMON_CACHE_DIR", "off")  # measure the hot path, not the cache

from detectors.engine import Detection  # noqa: E402
from detectors.markers import MarkerStreams  # noqa: E402
from monitor.config import load_config  # noqa: E402
from monitor.model import Flow  # noqa: E402
from monitor.stats import Stats  # noqa: E402

SEGMENT = 1448
SEED = 20261125
EN = ("the quarterly report lists every shipment and its customs reference number " * 3).split()
JA = "調達における情報セキュリティ基準に基づき常時監視を行う担当者は記録を保存する".encode()


def _text_lines(rnd: random.Random, n: int) -> bytes:
    out = []
    for _ in range(n):
        if rnd.random() < 0.3:
            out.append(JA[: rnd.randrange(30, len(JA)) // 3 * 3])
        else:
            out.append(" ".join(rnd.choice(EN) for _ in range(rnd.randrange(5, 14))).encode())
    return b"\r\n".join(out) + b"\r\n"


def _stream(rnd: random.Random, size: int, marker: bytes | None) -> bytes:
    """One direction's bytes: a mix of text, HTML, binary and a base64 MIME body."""
    parts: list[bytes] = []
    total = 0
    while total < size:
        kind = rnd.random()
        if kind < 0.4:
            p = _text_lines(rnd, 40)
        elif kind < 0.55:
            p = b"<html><body><p>" + _text_lines(rnd, 20).replace(b"\r\n", b"</p><p>") + b"</p></body></html>"
        elif kind < 0.85:
            p = rnd.randbytes(rnd.randrange(2000, 20000))
        else:
            raw = rnd.randbytes(rnd.randrange(3000, 12000))
            p = b"\r\n\r\n" + base64.encodebytes(raw).replace(b"\n", b"\r\n") + b"\r\n"
        parts.append(p)
        total += len(p)
    data = b"".join(parts)[:size]
    if marker is not None:  # planted so that it straddles a segment boundary
        at = (len(data) // SEGMENT // 2) * SEGMENT - len(marker) // 2
        data = data[:at] + marker + data[at + len(marker):]
    return data


_EXTRA_SIGNATURES: list[str] = []  # --markers: bench/memory.py's generated marker file


def _config(engine: str) -> Any:
    cfg = load_config(str(ROOT / "bench" / "bench.yaml"))
    object.__setattr__(cfg.detection, "engine", engine)  # Config is frozen: a benchmark-only override
    if _EXTRA_SIGNATURES:
        object.__setattr__(cfg, "signatures", [*cfg.signatures, *_EXTRA_SIGNATURES])
    return cfg


def _add_markers(count: int, tmp: str) -> None:
    """The shipped signatures plus ``count`` generated markers (bench/memory.py's ``signatures``
    set: every encoding and variant of each, so about ten matcher patterns per marker)."""
    sys.path.insert(0, str(ROOT / "bench"))
    from memory import signature_files

    files = signature_files(Path(tmp), count, 0, hashes_as_rules=True)
    _EXTRA_SIGNATURES.extend(str(f) for f in files)


def _flow(i: int) -> Flow:
    f = Flow(flow_id=i, proto=6, client=bytes([10, 0, i >> 8 & 255, i & 255]), server=bytes([192, 0, 2, 1]),
             cport=40000 + i % 20000, sport=80)
    f.protected_side = "client"
    f.app_proto = "http"
    return f


def _segments(flows: int, per_dir: int, marker: bytes) -> tuple[list[tuple[int, int, bytes]], int]:
    """Interleaved (flow index, direction, segment); every 10th flow carries the planted marker."""
    rnd = random.Random(SEED)
    per_flow: list[list[tuple[int, int, bytes]]] = []
    planted = 0
    for i in range(flows):
        segs = []
        for d in (0, 1):
            data = _stream(rnd, per_dir, marker if (i % 10 == 0 and d == 0) else None)
            planted += i % 10 == 0 and d == 0
            segs.append([data[j:j + SEGMENT] for j in range(0, len(data), SEGMENT)])
        seq = [(i, d, s) for pair in zip(segs[0], segs[1], strict=False) for d, s in enumerate(pair)]
        per_flow.append(seq)
    out = [seg for group in zip(*per_flow, strict=False) for seg in group]
    return out, planted


class _Emitted:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def __call__(self, ev: Any) -> None:
        self.events.append(ev)


def _replay(capture: str) -> None:
    """Replay ``capture`` through a real sensor with the Hyperscan engine (callers record calls)."""
    from monitor.capture.pcapfile import read_capture
    from monitor.runner import Sensor

    sensor = Sensor(_config("hyperscan"), eve_path=None, replay=True)
    for raw in read_capture(capture, stats=sensor.stats):
        sensor.pipeline.process(raw)
    sensor.finish()


def _captured(capture: str) -> tuple[list[tuple[int, int, bytes]], int, list[Flow]]:
    """The stream_data calls a real replay of ``capture`` makes (flow index, direction, data)."""
    import detectors.engine as engine_mod

    calls: list[tuple[Flow, int, bytes]] = []
    real = engine_mod.Detection.stream_data

    def record(self: Any, flow: Flow, dir: int, data: bytes, ts: float, pcap_cnt: int | None = None) -> None:  # noqa: A002
        calls.append((flow, dir, data))
        real(self, flow, dir, data, ts, pcap_cnt)

    engine_mod.Detection.stream_data = record  # type: ignore[method-assign]
    try:
        _replay(capture)
    finally:
        engine_mod.Detection.stream_data = real  # type: ignore[method-assign]
    index: dict[int, int] = {}
    flows: list[Flow] = []
    out = []
    for flow, d, data in calls:
        i = index.get(id(flow))
        if i is None:
            i = index[id(flow)] = len(flows)
            flows.append(flow)
        out.append((i, d, data))
    return out, 0, flows


def bench_segments(engine: str, flows: int, per_dir: int, repeat: int, capture: str | None = None) -> None:
    cfg = _config(engine)
    if capture:
        segs, planted, real_flows = _captured(capture)
        flows = len(real_flows)
    else:
        segs, planted = _segments(flows, per_dir, cfg.canary.marker.encode())  # the canary rule is always loaded
    nbytes = sum(len(s) for _, _, s in segs)
    best = best_feed = float("inf")
    alerts = -1
    for _ in range(repeat):
        sink = _Emitted()
        det = Detection(cfg, Stats(), sink)
        fl = [_flow(i) for i in range(flows)]
        if capture:
            for f, real in zip(fl, real_flows, strict=True):
                f.app_proto, f.protected_side = real.app_proto, real.protected_side
        gc.collect()
        t0 = time.process_time()
        ts = 1.0e9
        for i, d, s in segs:
            det.stream_data(fl[i], d, s, ts, 1)
            ts += 0.0001
        for f in fl:
            det.flow_end(f)
        best = min(best, time.process_time() - t0)
        alerts = len(sink.events)
        # the bare stream feed on the same segments
        ms = det.rules.markers
        streams = [[MarkerStreams(ms), MarkerStreams(ms)] for _ in range(flows)]
        t0 = time.process_time()
        for i, d, s in segs:
            streams[i][d].feed(s)
        best_feed = min(best_feed, time.process_time() - t0)
    n = len(segs)
    print(f"{engine:12s} {n} segments, {nbytes / 1e6:.1f} MB, {flows} flows, "
          f"{det.rules.markers.pattern_count} patterns: stream_data {best / n * 1e6:.2f} us/seg "
          f"({nbytes / best / 1e6:.0f} MB/s); MarkerStreams.feed {best_feed / n * 1e6:.2f} us/seg; "
          f"events {alerts} (planted {planted})")


def _record_views(capture: str) -> list[tuple[str, int, bytes]]:
    """Every matcher call of a replay of ``capture``: (view, stream key, bytes); view "stream"
    (a flow direction), "file" (a file object) or "buffer" (a block scan, key 0). A key is
    forgotten when its flow or file ends, so a recycled ``id()`` starts a new stream."""
    import detectors.engine as engine_mod

    calls: list[tuple[str, int, bytes]] = []
    keys: dict[tuple[str, int], int] = {}
    det = engine_mod.Detection
    real = (det.stream_data, det.file_data, det.buffer, det._file_closed, det._flow_end)

    def key(kind: str, obj: Any, sub: int = 0) -> int:
        return keys.setdefault((kind, id(obj) * 2 + sub), len(keys) + 1)

    def stream_data(self: Any, flow: Flow, dir: int, data: bytes, ts: float, pcap_cnt: int | None = None) -> None:  # noqa: A002
        calls.append(("stream", key("flow", flow, dir), bytes(data)))
        real[0](self, flow, dir, data, ts, pcap_cnt)

    def file_data(self: Any, f: Any, data: bytes, ts: float) -> None:
        if data:
            calls.append(("file", key("file", f), bytes(data)))
        real[1](self, f, data, ts)

    def buffer(self: Any, flow: Flow, dir: int, data: bytes, **kw: Any) -> None:  # noqa: A002
        if data:
            calls.append(("buffer", 0, bytes(data)))
        real[2](self, flow, dir, data, **kw)

    def file_closed(self: Any, f: Any, ts: float) -> None:
        keys.pop(("file", id(f) * 2), None)
        real[3](self, f, ts)

    def flow_end(self: Any, flow: Flow) -> Any:
        keys.pop(("flow", id(flow) * 2), None)
        keys.pop(("flow", id(flow) * 2 + 1), None)
        return real[4](self, flow)

    det.stream_data, det.file_data, det.buffer = stream_data, file_data, buffer  # type: ignore[method-assign]
    det._file_closed, det._flow_end = file_closed, flow_end  # type: ignore[method-assign]
    try:
        _replay(capture)
    finally:
        det.stream_data, det.file_data, det.buffer, det._file_closed, det._flow_end = real  # type: ignore[method-assign]
    return calls


def _replay_markers(markers: Any, calls: list[tuple[str, int, bytes]], view: str) -> int:
    """The marker layer on one view's calls; returns the hits."""
    streams: dict[int, MarkerStreams] = {}
    hits = 0
    for kind, key, data in calls:
        if kind != view:
            continue
        if kind == "buffer":
            hits += len(markers.scan(data))
            continue
        s = streams.get(key)
        if s is None:
            s = streams[key] = MarkerStreams(markers)
        hits += len(s.feed(data))
    for s in streams.values():
        s.close()
    return hits


def _replay_bare(stream_db: Any, block_db: Any, calls: list[tuple[str, int, bytes]], view: str) -> None:
    """Bare Hyperscan on one view's calls (positional calls, no Python per match beyond the callback)."""
    from detectors import matcher as mm

    ctx = mm._Collector()
    streams: dict[int, Any] = {}
    for kind, key, data in calls:
        if kind != view:
            continue
        if kind == "buffer":
            block_db.scan(data, mm._on_hit, 0, ctx)
        else:
            s = streams.get(key)
            if s is None:
                s = streams[key] = stream_db.stream(mm._on_hit, 0, ctx).__enter__()
            s.scan(data)
        ctx.hits = []
    for s in streams.values():
        s.close()


def _probe_free_dbs(matcher: Any) -> tuple[Any, Any]:
    """The marker matcher's patterns compiled without the line probe (stream and block)."""
    import hyperscan as hs

    from detectors import matcher as mm

    exprs = [p.data if p.regex else mm._hex_escape(p.data) for p in matcher.patterns]
    ids = [p.id for p in matcher.patterns]
    flags = [hs.HS_FLAG_DOTALL | (hs.HS_FLAG_CASELESS if p.nocase else 0) for p in matcher.patterns]
    return (mm._compile_hs(exprs, ids, flags, hs.HS_MODE_STREAM), mm._compile_hs(exprs, ids, flags, hs.HS_MODE_BLOCK))


def bench_views(capture: str, repeat: int) -> None:
    calls = _record_views(capture)
    det = Detection(_config("hyperscan"), Stats(), _Emitted())
    markers = det.rules.markers
    matcher: Any = markers.raw.matcher
    plain_stream, plain_block = _probe_free_dbs(matcher)
    for view in ("stream", "file", "buffer"):
        n = sum(1 for k, _, _ in calls if k == view)
        nbytes = sum(len(d) for k, _, d in calls if k == view)
        best = {"markers": float("inf"), "hyperscan": float("inf"), "no probe": float("inf")}
        hits = 0
        for _ in range(repeat):
            gc.collect()
            t0 = time.process_time()
            hits = _replay_markers(markers, calls, view)
            best["markers"] = min(best["markers"], time.process_time() - t0)
            t0 = time.process_time()
            _replay_bare(matcher._streamdb, matcher._block, calls, view)
            best["hyperscan"] = min(best["hyperscan"], time.process_time() - t0)
            t0 = time.process_time()
            _replay_bare(plain_stream, plain_block, calls, view)
            best["no probe"] = min(best["no probe"], time.process_time() - t0)
        print(f"{view:7s} {n:6d} calls {nbytes / 1e6:7.1f} MB: " +
              ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in best.items()) + f"; hits {hits}")


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _idle_flows(det: Detection, flows: list[Flow], req: bytes, resp: bytes | None) -> None:
    for f in flows:
        det.stream_data(f, 0, bytes(req), 1.0)
        if resp is not None:
            det.stream_data(f, 1, bytes(resp), 1.0)


def bench_memory(engine: str, flows: int) -> None:
    """Per idle flow: Python objects (tracemalloc) and everything (RSS growth, which also counts
    Hyperscan's malloc'd stream state), each on its own set of flows."""
    cfg = _config(engine)
    det = Detection(cfg, Stats(), _Emitted())
    req = (b"GET /index.html?q=1 HTTP/1.1\r\nHost: intranet.example\r\nUser-Agent: Mozilla/5.0\r\n"
           b"Accept: */*\r\nConnection: keep-alive\r\n\r\n")
    resp = (b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/html; charset=utf-8\r\n"
            b"Content-Length: 1234\r\nConnection: keep-alive\r\n\r\n")
    warm = [_flow(1 << 20)]
    _idle_flows(det, warm, req, resp)  # first-use allocations (scratch, caches) outside the count
    # The request/response bytes are the caller's; the stream history keeps references to them.
    payload = {"request only": sys.getsizeof(req), "request + response": sys.getsizeof(req) + sys.getsizeof(resp)}
    for label, second in (("request only", None), ("request + response", resp)):
        fl = [_flow(i) for i in range(flows)]
        gc.collect()
        rss0 = _rss()
        _idle_flows(det, fl, req, second)
        gc.collect()
        rss = (_rss() - rss0) / flows
        fl2 = [_flow(i) for i in range(flows)]
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        _idle_flows(det, fl2, req, second)
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        py = sum(s.size_diff for s in after.compare_to(before, "filename")) / flows
        print(f"{engine:12s} idle HTTP flow, {label:18s}: detection state {py:.0f} B/flow Python objects "
              f"(tracemalloc; includes {payload[label]} B of referenced payload), {rss:.0f} B/flow RSS "
              f"(with Hyperscan stream state) over {flows} flows")
        for f in fl + fl2:
            det.flow_end(f)


def bench_compile(repeat: int) -> None:
    """Start-up share of detection: the shipped rules' matcher, compiled vs. from the cache."""
    import tempfile

    from detectors.dbcache import DatabaseCache
    from detectors.markers import MarkerSet
    from detectors.signatures import load_signatures

    rules = load_signatures([str(ROOT / "signatures")]).markers
    with tempfile.TemporaryDirectory() as tmp:
        timings: dict[str, list[float]] = {"compile (no cache)": [], "miss + store": [], "hit (load)": []}
        for i in range(repeat):
            for label, cache in (("compile (no cache)", None), ("miss + store", DatabaseCache(f"{tmp}/{i}")),
                                 ("hit (load)", DatabaseCache(f"{tmp}/{i}"))):
                t0 = time.process_time()
                MarkerSet(rules, "hyperscan", cache)
                timings[label].append(time.process_time() - t0)
    print(f"hyperscan    shipped signatures' MarkerSet, CPU ms (best of {repeat}): " +
          ", ".join(f"{k} {min(v) * 1e3:.1f}" for k, v in timings.items()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", nargs="?", choices=("segments", "memory", "compile", "views", "all"), default="all")
    ap.add_argument("--engine", choices=("hyperscan", "ahocorasick", "both"), default="both")
    ap.add_argument("--flows", type=int, default=200)
    ap.add_argument("--bytes-per-direction", type=int, default=64 * 1024)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--capture", help="segments: the stream bytes a replay of this capture hands to detection")
    ap.add_argument("--markers", type=int, default=0,
                    help="also load this many generated markers (bench/memory.py signatures: 1000)")
    args = ap.parse_args()
    if args.markers:
        import tempfile

        _add_markers(args.markers, tempfile.mkdtemp(prefix="lm-detect-bench-"))
    if args.mode == "views":
        bench_views(args.capture or str(ROOT / "bench" / "data" / "m50.pcap"), args.repeat)
        return 0
    engines = ("hyperscan", "ahocorasick") if args.engine == "both" else (args.engine,)
    for engine in engines:
        if args.mode in ("segments", "all"):
            bench_segments(engine, args.flows, args.bytes_per_direction, args.repeat, args.capture)
        if args.mode in ("memory", "all"):
            bench_memory(engine, max(args.flows, 10000))
    if args.mode in ("compile", "all") and "hyperscan" in engines:
        bench_compile(args.repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
