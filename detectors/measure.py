"""Measurements quoted in docs/signatures.md (not tests; deterministic, seeded).

``python3 -m detectors.measure matcher``: throughput of both matcher engines with 10 and 1,000
markers, every encoding and variant, in block mode (1 MiB buffers) and stream mode (1,448-byte
segments), on a mixed payload (Japanese text in three encodings, English text, random bytes,
base64).

``python3 -m detectors.measure segments``: the per-segment cost of the raw-stream path as the
pipeline calls it (``Detection.stream_data`` with 1,448-byte segments, the containment, state
and counters included) and of ``MarkerStreams.feed`` alone, in microseconds per segment and
MB/s, with the shipped signatures and with 1,000 markers, on the mixed payload and on MIME
base64 (where the flat view runs). CPU time, best of three.

``python3 -m detectors.measure trace record CAPTURE -c CONFIG -o TRACE`` then
``python3 -m detectors.measure trace run TRACE -c CONFIG``: every call the pipeline made into
detection while replaying CAPTURE (raw-stream segments, file bytes, decoded buffers, gaps, file
and flow ends, in order, with their bytes) is recorded once and then replayed into a fresh
``Detection`` several times: the CPU time detection costs on that capture, free of the other
stages and (best of N) of the noise of a shared machine.

``python3 -m detectors.measure load``: time and memory to load 1,000 markers (every variant,
both matcher databases) and 100,000 file hashes.

``python3 -m detectors.measure partial``: partial-document fingerprints on real Japanese text
(the gettext catalogues under /usr/share/locale/ja) and English text (their msgids and the text
files under /usr/share/doc): the shortest excerpt reliably caught and the false-positive rate on
unrelated text.
"""

from __future__ import annotations

import argparse
import base64
import gettext
import glob
import gzip
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from detectors import partial
from detectors.markers import MarkerSet
from detectors.signatures import Rule


def _markers(n: int, seed: int = 7) -> list[Rule]:
    rnd = random.Random(seed)
    kanji = [chr(c) for c in range(0x4E00, 0x9FA0)]
    kana = [chr(c) for c in range(0x30A1, 0x30F7)]
    rules = []
    for i in range(n):
        if i % 10 == 9:
            text = "CONF-" + "".join(rnd.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(8))
        else:
            text = "".join(rnd.choice(kanji if rnd.random() < 0.7 else kana) for _ in range(rnd.randint(4, 8)))
        rules.append(Rule(sid=9500000 + i, msg=f"m{i}", kind="marker", priority=2, category="protected-data-leak",
                          rev=1, metadata={}, file="bench", line=0, literal=text, nocase=(i % 10 == 9)))
    return rules


def _payload(size: int, seed: int = 11, mime_base64: bool = True) -> bytes:
    rnd = random.Random(seed)
    ja = "".join(chr(rnd.choice([rnd.randint(0x3041, 0x3093), rnd.randint(0x4E00, 0x9FA0)])) for _ in range(20000))
    en = " ".join(rnd.choice(["the", "protocol", "server", "upload", "table", "value", "report", "of", "and",
                              "configuration", "network", "data"]) for _ in range(20000))
    blocks = [ja.encode("utf-8"), ja.encode("cp932", "replace"), ja.encode("euc_jp", "replace"), en.encode(),
              rnd.randbytes(60000)]
    if mime_base64:
        blocks.append(base64.encodebytes(rnd.randbytes(45000)))
    out = bytearray()
    while len(out) < size:
        out += rnd.choice(blocks)
    return bytes(out[:size])


def measure_matcher(size_mb: int) -> None:
    payloads = {"mixed": _payload(size_mb << 20), "no-mime": _payload(size_mb << 20, mime_base64=False)}
    print(f"payloads: {size_mb} MiB each; mixed = Japanese UTF-8/CP932/EUC-JP text, English, random bytes and "
          "MIME base64 (line-wrapped: the flat view is flattened); no-mime = the same without base64")
    print(f"{'markers':>8} {'patterns':>9} {'engine':>12} {'compile s':>10} {'payload':>8} {'block MB/s':>11} "
          f"{'stream MB/s':>12}")
    for n, (label, data) in [(n, p) for n in (10, 1000) for p in payloads.items()]:
        rules = _markers(n)
        for engine in ("hyperscan", "ahocorasick"):
            t0 = time.process_time()
            ms = MarkerSet(rules, engine)
            compile_s = time.process_time() - t0
            block = 1 << 20
            t0 = time.process_time()
            for i in range(0, len(data), block):
                ms.scan(data[i:i + block])
            block_rate = len(data) / (time.process_time() - t0) / 1e6
            from detectors.markers import MarkerStreams

            seg = 1448
            streams = MarkerStreams(ms)
            streams.feed(b"warm-up")
            t0 = time.process_time()
            for i in range(0, len(data), seg):
                streams.feed(data[i:i + seg])
            stream_rate = len(data) / (time.process_time() - t0) / 1e6
            streams.close()
            print(f"{n:>8} {ms.pattern_count:>9} {engine:>12} {compile_s:>10.2f} {label:>8} {block_rate:>11.1f} "
                  f"{stream_rate:>12.1f}")
            sys.stdout.flush()


def _best_cpu(fn: Callable[..., None], *args: Any, reps: int = 3) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.process_time()
        fn(*args)
        best = min(best, time.process_time() - t0)
    return best


def _via_engine(det: Any, segs: list[bytes]) -> None:
    from monitor.model import PROTO_TCP, Flow

    flow = Flow(flow_id=1, proto=PROTO_TCP, client=bytes([10, 0, 0, 5]), server=bytes([192, 0, 2, 7]),
                cport=50000, sport=80, ip_version=4, protected_side="client")
    feed = det.stream_data
    for i, seg in enumerate(segs):
        feed(flow, 0, seg, 1.0, i)
    det.flow_end(flow)


def _streams_only(markers: MarkerSet, segs: list[bytes]) -> None:
    from detectors.markers import MarkerStreams

    st = MarkerStreams(markers)
    feed = st.feed
    for seg in segs:
        feed(seg)
    st.close()


def measure_segments(size_mb: int, seg: int = 1448) -> None:
    from detectors.engine import Detection
    from monitor.config import DetectionConfig, NetworksConfig, default_config
    from monitor.stats import Stats

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    shipped = os.path.join(root, "signatures", "markers.yaml")
    rnd = random.Random(5)
    mime = base64.encodebytes(rnd.randbytes(size_mb << 19)).replace(b"\n", b"\r\n")
    payloads = {"mixed": _payload(size_mb << 20, mime_base64=False), "mime-base64": mime[: size_mb << 20]}
    print(f"segments of {seg} bytes, {size_mb} MiB per payload; CPU time, best of 3")
    print(f"{'rules':>10} {'payload':>12} {'path':>22} {'us/segment':>11} {'MB/s':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        thousand = os.path.join(tmp, "m1000.yaml")
        with open(thousand, "w", encoding="utf-8") as fh:
            fh.write("markers:\n")
            for r in _markers(1000):
                fh.write(f"  - sid: {r.sid}\n    msg: m\n    literal: \"{r.literal}\"\n    nocase: {str(r.nocase).lower()}\n")
        for label, path in (("shipped", shipped), ("1000", thousand)):
            cfg = default_config(networks=NetworksConfig(protected=["10.0.0.0/8"]),
                                 detection=DetectionConfig(engine="hyperscan"))
            det = Detection(cfg, Stats(), lambda ev: None, signature_paths=[path])
            for pname, data in payloads.items():
                segs = [data[i:i + seg] for i in range(0, len(data) - seg + 1, seg)]

                for name, fn, target in (("Detection.stream_data", _via_engine, det),
                                         ("MarkerStreams.feed", _streams_only, det.rules.markers)):
                    cpu = _best_cpu(fn, target, segs)
                    print(f"{label:>10} {pname:>12} {name:>22} {cpu / len(segs) * 1e6:>11.2f} "
                          f"{len(segs) * seg / cpu / 1e6:>8.0f}")
                    sys.stdout.flush()


def measure_load(markers: int, hashes: int) -> None:
    import resource

    from detectors.engine import Detection
    from monitor.config import DetectionConfig, NetworksConfig, default_config
    from monitor.stats import Stats

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "big.yaml")
        rnd = random.Random(9)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write("markers:\n")
            for r in _markers(markers):
                fh.write(f"  - sid: {r.sid}\n    msg: m\n    literal: \"{r.literal}\"\n    nocase: {str(r.nocase).lower()}\n")
            # 100,000 hashes are one registered set (a fingerprint list: one line per file), not
            # 100,000 rules of their own.
            fh.write("fingerprint_lists:\n  - sid: 9300000\n    msg: registered drawings\n    file: hashes.txt\n")
        with open(os.path.join(tmp, "hashes.txt"), "w", encoding="utf-8") as fh:
            for i in range(hashes):
                fh.write(f"{rnd.randbytes(32).hex()} drawing-{i:06d}.pdf\n")
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0, c0 = time.monotonic(), time.process_time()
        cfg = default_config(networks=NetworksConfig(protected=["10.0.0.0/8"]),
                             detection=DetectionConfig(engine="hyperscan"))
        det = Detection(cfg, Stats(), lambda ev: None, signature_paths=[path])
        wall, cpu = time.monotonic() - t0, time.process_time() - c0
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        d = det.rules.sigs.describe()
        print(f"{d['markers']} markers ({det.rules.markers.pattern_count} distinct patterns), {d['hashes']} hashes: "
              f"loaded in {wall:.2f} s wall ({cpu:.2f} s CPU); peak RSS {rss1 / 1024:.0f} MiB "
              f"(+{(rss1 - rss0) / 1024:.0f} MiB over the interpreter with leakmon imported, {rss0 / 1024:.0f} MiB)")


def trace_record(capture: str, config: str, out: str) -> None:
    """Replay ``capture`` with the real CLI and record every call into detection."""
    import pickle

    from detectors import engine
    from monitor.cli import main as cli_main

    calls: list[tuple[Any, ...]] = []
    flows: dict[int, tuple[Any, ...]] = {}
    files: dict[int, tuple[Any, ...]] = {}
    D = engine.Detection
    orig = {n: getattr(D, n) for n in ("stream_data", "stream_gap", "stream_alt", "buffer", "file_data", "file_gap",
                                       "file_closed", "flow_end")}

    def fl(flow: Any) -> int:
        if flow.flow_id not in flows:
            flows[flow.flow_id] = (flow.proto, flow.client, flow.server, flow.cport, flow.sport, flow.ip_version,
                                   flow.protected_side)
        return int(flow.flow_id)

    def fi(f: Any) -> int:
        if f.file_id not in files:
            files[f.file_id] = (fl(f.flow) if f.flow is not None else None, f.direction, f.name, f.source,
                                f.protocol, f.tx_id, f.declared_type)
        return int(f.file_id)

    def stream_data(self: Any, flow: Any, d: int, data: bytes, ts: float, pcap_cnt: Any = None) -> None:
        calls.append(("s", fl(flow), d, bytes(data), ts))
        orig["stream_data"](self, flow, d, data, ts, pcap_cnt)

    def stream_gap(self: Any, flow: Any, d: int, length: int) -> None:
        calls.append(("g", fl(flow), d, length))
        orig["stream_gap"](self, flow, d, length)

    def stream_alt(self: Any, flow: Any, d: int, data: bytes, ts: float) -> None:
        calls.append(("a", fl(flow), d, bytes(data), ts))
        orig["stream_alt"](self, flow, d, data, ts)

    def buffer(self: Any, flow: Any, d: int, data: bytes, **kw: Any) -> None:
        f = kw.get("file")
        calls.append(("b", fl(flow), d, bytes(data), kw["where"], kw["ts"], kw.get("tx_id"),
                      fi(f) if f is not None else None, kw.get("charset")))
        orig["buffer"](self, flow, d, data, **kw)

    def file_data(self: Any, f: Any, data: bytes, ts: float) -> None:
        calls.append(("f", fi(f), bytes(data), ts))
        orig["file_data"](self, f, data, ts)

    def file_gap(self: Any, f: Any, length: int) -> None:
        calls.append(("fg", fi(f), length))
        orig["file_gap"](self, f, length)

    def file_closed(self: Any, f: Any, ts: float) -> None:
        calls.append(("fc", fi(f), f.sha256, ts))
        orig["file_closed"](self, f, ts)

    def flow_end(self: Any, flow: Any) -> Any:
        calls.append(("e", fl(flow)))
        return orig["flow_end"](self, flow)

    for name, fn in (("stream_data", stream_data), ("stream_gap", stream_gap), ("stream_alt", stream_alt),
                     ("buffer", buffer), ("file_data", file_data), ("file_gap", file_gap),
                     ("file_closed", file_closed), ("flow_end", flow_end)):
        setattr(D, name, fn)
    try:
        cli_main(["replay", capture, "-c", config, "--eve-log", "/dev/null", "--no-progress"])
    finally:
        for name, fn in orig.items():
            setattr(D, name, fn)
    with open(out, "wb") as fh:
        pickle.dump({"flows": flows, "files": files, "calls": calls}, fh, protocol=pickle.HIGHEST_PROTOCOL)
    nbytes = sum(len(c[3]) for c in calls if c[0] in ("s", "a", "b")) + sum(len(c[2]) for c in calls if c[0] == "f")
    print(f"{len(calls)} calls, {len(flows)} flows, {len(files)} files, {nbytes / 1e6:.1f} MB of bytes -> {out}")


def _trace_once(det: Any, trace: dict[str, Any]) -> int:
    from monitor.files import STATE_CLOSED, FileObject
    from monitor.model import Flow

    flows: dict[int, Any] = {}
    files: dict[int, Any] = {}

    def flow(fid: int) -> Any:
        f = flows.get(fid)
        if f is None:
            proto, client, server, cport, sport, ipv, side = trace["flows"][fid]
            f = flows[fid] = Flow(flow_id=fid, proto=proto, client=client, server=server, cport=cport, sport=sport,
                                  ip_version=ipv, protected_side=side)
        return f

    def file(xid: int) -> Any:
        f = files.get(xid)
        if f is None:
            owner, direction, name, source, protocol, tx_id, declared = trace["files"][xid]
            f = files[xid] = FileObject(flow(owner) if owner is not None else None, direction, name=name,
                                        source=source, protocol=protocol, tx_id=tx_id, declared_type=declared)
        return f

    alerts = 0
    for c in trace["calls"]:
        k = c[0]
        if k == "s":
            det.stream_data(flow(c[1]), c[2], c[3], c[4])
        elif k == "f":
            det.file_data(file(c[1]), c[2], c[3])
        elif k == "b":
            det.buffer(flow(c[1]), c[2], c[3], where=c[4], ts=c[5], tx_id=c[6],
                       file=file(c[7]) if c[7] is not None else None, charset=c[8])
        elif k == "g":
            det.stream_gap(flow(c[1]), c[2], c[3])
        elif k == "a":
            det.stream_alt(flow(c[1]), c[2], c[3], c[4])
        elif k == "fg":
            det.file_gap(file(c[1]), c[2])
        elif k == "fc":
            f = file(c[1])
            f.sha256, f.state = c[2], STATE_CLOSED
            det.file_closed(f, c[3])
        elif k == "e":
            f = flows.pop(c[1], None)
            if f is not None:
                summary = det.flow_end(f)
                alerts += (summary or {}).get("alerts", 0)
    return alerts


def trace_run(path: str, config: str, reps: int) -> None:
    import pickle

    from detectors.engine import Detection
    from monitor.config import load_config
    from monitor.stats import Stats

    with open(path, "rb") as fh:
        trace = pickle.load(fh)
    cfg = load_config(config)
    counts: dict[str, int] = {}
    for c in trace["calls"]:
        counts[c[0]] = counts.get(c[0], 0) + 1
    best = float("inf")
    alerts = 0
    for _ in range(reps):
        events: list[Any] = []
        det = Detection(cfg, Stats(), events.append)
        t0 = time.process_time()
        alerts = _trace_once(det, trace)
        best = min(best, time.process_time() - t0)
    nbytes = sum(len(c[3]) for c in trace["calls"] if c[0] in ("s", "a", "b")) + \
        sum(len(c[2]) for c in trace["calls"] if c[0] == "f")
    print(f"{len(trace['calls'])} calls (segments {counts.get('s', 0)}, file writes {counts.get('f', 0)}, "
          f"buffers {counts.get('b', 0)}), {nbytes / 1e6:.1f} MB scanned: detection CPU {best:.3f} s "
          f"(best of {reps}), {nbytes / best / 1e6:.0f} MB/s, {alerts} alerts")


# ---------------------------------------------------------------- partial documents


def _catalog_texts(lang_glob: str) -> list[tuple[str, list[str], list[str]]]:
    """(catalogue name, translated messages, English msgids) of every gettext catalogue."""
    out = []
    for mo in sorted(glob.glob(lang_glob)):
        try:
            with open(mo, "rb") as fh:
                cat = gettext.GNUTranslations(fh)._catalog  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - a catalogue we cannot read is simply skipped
            continue
        ja, en = [], []
        for k, v in cat.items():
            if isinstance(k, tuple):
                k = k[0]
            if not k or not isinstance(v, str):
                continue
            ja.append(v)
            en.append(k)
        if len(ja) > 20:
            out.append((os.path.basename(mo), ja, en))
    return out


def _english_docs(limit_chars: int) -> str:
    parts, n = [], 0
    for path in sorted(glob.glob("/usr/share/doc/*/*")):
        if n > limit_chars:
            break
        try:
            if path.endswith(".gz"):
                text = gzip.open(path, "rt", encoding="utf-8", errors="strict").read(200_000)
            elif path.endswith((".txt", "README", "NEWS", "changelog")) or os.path.basename(path).isupper():
                text = open(path, encoding="utf-8", errors="strict").read(200_000)
            else:
                continue
        except (OSError, UnicodeDecodeError, EOFError):
            continue
        parts.append(text)
        n += len(text)
    return "\n".join(parts)


def _chunks(text: str, size: int) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text) - size + 1, size)]


def measure_partial(min_chars: int, samples: int) -> None:
    cats = _catalog_texts("/usr/share/locale/ja/LC_MESSAGES/*.mo")
    if len(cats) < 6:
        print("not enough Japanese catalogues under /usr/share/locale/ja")
        return
    rnd = random.Random(3)
    rnd.shuffle(cats)
    half = len(cats) // 2
    protected_ja = [(name, "\n".join(ja)) for name, ja, _ in cats[:half]]
    unrelated_ja = "\n".join("\n".join(ja) for _, ja, _ in cats[half:])
    protected_en = [(name + ".en", "\n".join(en)) for name, _, en in cats[:half]]
    unrelated_en = "\n".join("\n".join(en) for _, _, en in cats[half:]) + "\n" + _english_docs(8_000_000)

    entries = []
    for name, text in protected_ja + protected_en:
        norm = partial.normalize(text)
        entries.append((name, len(norm), partial.winnow(partial.kgram_hashes(norm))))
    index = partial.PartialIndex([partial.DocumentInfo(n, c, len(a)) for n, c, a in entries], [a for _, _, a in entries])
    total_chars = sum(c for _, c, _ in entries)
    print(f"protected set: {len(entries)} documents ({len(protected_ja)} Japanese, {len(protected_en)} English), "
          f"{total_chars / 1e6:.2f} M normalised characters, {len(index)} hashes (k={partial.K}, w={partial.W}), "
          f"partial_min_chars={min_chars}")

    # Recall: excerpts of L normalised characters, pasted between unrelated sentences.
    print(f"{'excerpt':>8} {'caught JA':>10} {'caught EN':>10}")
    filler_ja = partial.normalize(unrelated_ja)
    for length in (40, 50, 60, 65, 70, 75, 80, 90, 100, 120, 150):
        rates = []
        for docs in (protected_ja, protected_en):
            caught = 0
            for _ in range(samples):
                norm = ""
                while len(norm) <= length + 1:
                    norm = partial.normalize(rnd.choice(docs)[1])
                s = rnd.randrange(0, len(norm) - length)
                f = rnd.randrange(0, len(filler_ja) - 100)
                probe = filler_ja[f:f + 50] + norm[s:s + length] + filler_ja[f + 50:f + 100]
                caught += bool(index.match_normalized(partial.normalize(probe), min_chars))
            rates.append(caught / samples)
        print(f"{length:>8} {rates[0]:>10.1%} {rates[1]:>10.1%}")

    # False positives: other catalogues / documentation cut into 4,000-character outgoing texts.
    # An alert is "genuine" when the passage it found really occurs in the matched document (a
    # shared boilerplate passage such as a licence text or a message two programs share), and
    # "chance" when it does not (a hash collision: a true false positive of the method).
    norm_docs = {name: partial.normalize(text) for name, text in protected_ja + protected_en}
    doc_keys = {i: set(index.keys[index.owner == i].tolist()) for i in range(len(index.docs))}
    for label, text in (("Japanese", unrelated_ja), ("English", unrelated_en)):
        chunks = _chunks(text, 4000)
        genuine = chance = 0
        for c in chunks:
            norm = partial.normalize(c)
            found = index.match_normalized(norm, min_chars)
            if not found:
                continue
            doc_text = norm_docs[found[0].doc.name]
            keys = doc_keys[index.docs.index(found[0].doc)]
            h = partial.kgram_hashes(norm).tolist()
            ok = all(norm[p:p + partial.K] in doc_text for p in range(len(h)) if h[p] in keys)
            genuine += ok
            chance += not ok
        mb = sum(len(c.encode()) for c in chunks) / 1e6
        print(f"unrelated {label}: {len(chunks)} texts of 4,000 characters ({mb:.1f} MB): "
              f"{chance} chance false positives, {genuine} alerts on passages genuinely shared with a document")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m detectors.measure")
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("matcher")
    m.add_argument("--mb", type=int, default=32)
    sg = sub.add_parser("segments")
    sg.add_argument("--mb", type=int, default=8)
    tr = sub.add_parser("trace")
    tr.add_argument("action", choices=("record", "run"))
    tr.add_argument("path", help="record: the capture; run: the trace file")
    tr.add_argument("-c", "--config", required=True)
    tr.add_argument("-o", "--out", help="record: the trace file to write")
    tr.add_argument("--reps", type=int, default=5)
    ld = sub.add_parser("load")
    ld.add_argument("--markers", type=int, default=1000)
    ld.add_argument("--hashes", type=int, default=100_000)
    p = sub.add_parser("partial")
    p.add_argument("--min-chars", type=int, default=60)
    p.add_argument("--samples", type=int, default=300)
    args = ap.parse_args(argv)
    if args.cmd == "matcher":
        measure_matcher(args.mb)
    elif args.cmd == "segments":
        measure_segments(args.mb)
    elif args.cmd == "trace":
        if args.action == "record":
            trace_record(args.path, args.config, args.out or "detect-trace.pkl")
        else:
            trace_run(args.path, args.config, args.reps)
    elif args.cmd == "load":
        measure_load(args.markers, args.hashes)
    else:
        measure_partial(args.min_chars, args.samples)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
