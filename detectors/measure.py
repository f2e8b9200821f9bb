"""Measurements quoted in docs/signatures.md (not tests; deterministic, seeded).

``python3 -m detectors.measure matcher``: throughput of both matcher engines with 10 and 1,000
markers, every encoding and variant, in block mode (1 MiB buffers) and stream mode (1,448-byte
segments), on a mixed payload (Japanese text in three encodings, English text, random bytes,
base64).

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
import time

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
    p = sub.add_parser("partial")
    p.add_argument("--min-chars", type=int, default=60)
    p.add_argument("--samples", type=int, default=300)
    args = ap.parse_args(argv)
    if args.cmd == "matcher":
        measure_matcher(args.mb)
    else:
        measure_partial(args.min_chars, args.samples)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
