#!/usr/bin/env python3
"""Micro-benchmark of the mail path: SMTP DATA framing -> MIME -> CTE decoding -> FileObject.

A deterministic (seeded) SMTP session is fed to :class:`~monitor.applayer.smtp.SmtpParser` in
MSS-sized segments, as TCP reassembly would hand it over. The context does what the pipeline's
does minus detection: it opens real :class:`~monitor.files.FileObject` s (hashes, buffer) with a
listener that drops the bytes, and counts the text handed to ``inspect``. So the figure is the
cost of the mail path alone; detection's matcher is measured by ``bench/run``.

Each workload also times its building blocks on the same bytes: the floor of the hashes
(SHA-256 and MD5 alone), ``FileObject.write`` of the decoded bytes, and the MIME parser with a
sink that drops everything.

    python3 bench/mail_bench.py [--mbytes 16] [--segment 1448] [--repeat 3] [--only b64,8bit]
        [--profile out.prof]

Workload ``mixed`` is bench/gen.py's SMTP traffic of the mixed capture (many ~50 KB messages: an
ISO-2022-JP base64 text part and a base64 zip/docx attachment), one parser per session, so the
per-message and per-part fixed costs weigh as they do on the benchmark capture; its
``multipart`` rows feed gen.py's HTTP upload bodies (multipart/form-data with an Office file) to
:class:`~monitor.content.forms.MultipartParser` in the same segments.

Prints, per workload and stage: best CPU seconds (``time.process_time``: the build machines are
shared, wall time swings 2-3x with their load) of --repeat and MB/s -- of SMTP message bytes (the
bytes on the wire after the DATA command, dot-stuffed) for the parser stages, of decoded bytes
for the file and hash stages.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import functools
import hashlib
import importlib
import random
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.appbench import EN, JA, BenchContext, best, chunks_of, run_file  # noqa: E402
from monitor.applayer.smtp import SmtpParser  # noqa: E402
from monitor.content import mimecodec  # noqa: E402
from monitor.content.forms import MultipartParser, PartInfo, boundary_of  # noqa: E402
from monitor.content.mime import MimeParser, MimePart  # noqa: E402
from monitor.model import TO_CLIENT, TO_SERVER  # noqa: E402

# ------------------------------------------------------------ workloads


def _text(rng: random.Random, size: int, *, dot_lines: bool) -> bytes:
    """Mixed English/Japanese UTF-8 lines of 40..200 bytes; some start with "." (stuffed later)."""
    lines: list[bytes] = []
    total = 0
    while total < size:
        words = rng.choices(JA if rng.random() < 0.4 else EN, k=rng.randint(6, 30))
        line = " ".join(words).encode("utf-8")[:200]
        if dot_lines and rng.random() < 0.02:
            line = b"." + line
        lines.append(line)
        total += len(line) + 2
    return b"\r\n".join(lines) + b"\r\n"


def _base64_lines(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def _message(kind: str, size: int, rng: random.Random) -> tuple[bytes, int]:
    """(message as sent after DATA, dot-stuffed and terminated; decoded payload bytes)."""
    head = (b"From: yamada@example.jp\r\nTo: partner@example.com\r\nSubject: bench\r\n"
            b"Message-ID: <bench@example.jp>\r\nMIME-Version: 1.0\r\n")
    if kind == "b64":
        payload = rng.randbytes(size * 3 // 4)
        body = (b'Content-Type: multipart/mixed; boundary="=_b0undary_42"\r\n\r\n'
                b"--=_b0undary_42\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
                + _text(rng, 600, dot_lines=False)
                + b'--=_b0undary_42\r\nContent-Type: application/octet-stream; name="drawing.bin"\r\n'
                  b'Content-Disposition: attachment; filename="drawing.bin"\r\n'
                  b"Content-Transfer-Encoding: base64\r\n\r\n"
                + _base64_lines(payload) + b"--=_b0undary_42--\r\n")
    elif kind == "8bit":
        payload = _text(rng, size, dot_lines=True)
        body = b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + payload
    elif kind == "8bit-attach":
        payload = _text(rng, size, dot_lines=True)
        body = (b'Content-Type: multipart/mixed; boundary="=_b0undary_42"\r\n\r\n'
                b"--=_b0undary_42\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nsee attached\r\n"
                b'--=_b0undary_42\r\nContent-Type: text/csv; name="parts.csv"\r\n'
                b'Content-Disposition: attachment; filename="parts.csv"\r\n'
                b"Content-Transfer-Encoding: 8bit\r\n\r\n" + payload + b"--=_b0undary_42--\r\n")
    elif kind == "qp":
        raw = _text(rng, size * 2 // 5, dot_lines=False)
        import quopri

        payload = raw
        qp = quopri.encodestring(raw).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        body = b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" + qp
    else:
        raise SystemExit(f"unknown workload {kind}")
    msg = head + body
    stuffed = msg.replace(b"\r\n.", b"\r\n..")
    return stuffed + b".\r\n", len(payload)


def _session(message: bytes, segment: int) -> list[tuple[int, bytes]]:
    steps = [(TO_CLIENT, b"220 mx ESMTP\r\n"), (TO_SERVER, b"EHLO ws01.example.jp\r\n"),
             (TO_CLIENT, b"250 mx\r\n"),
             (TO_SERVER, b"MAIL FROM:<yamada@example.jp>\r\nRCPT TO:<partner@example.com>\r\nDATA\r\n"),
             (TO_CLIENT, b"250 OK\r\n250 OK\r\n354 go\r\n")]
    steps += [(TO_SERVER, message[i : i + segment]) for i in range(0, len(message), segment)]
    steps += [(TO_CLIENT, b"250 queued\r\n"), (TO_SERVER, b"QUIT\r\n"), (TO_CLIENT, b"221 bye\r\n")]
    return steps


# ------------------------------------------------------------ stages


def run_smtp(steps: list[tuple[int, bytes]], real_files: bool = True) -> BenchContext:
    ctx = BenchContext(real_files, server_port=25)
    p = SmtpParser(ctx)  # type: ignore[arg-type]
    for d, data in steps:
        p.feed(d, data, 1.0)
    p.close(2.0)
    return ctx


class _NullMimeSink:
    def __init__(self) -> None:
        self.decoded = 0

    def on_headers(self, part: MimePart) -> None:
        pass

    def on_leaf_begin(self, part: MimePart) -> None:
        pass

    def on_leaf_data(self, part: MimePart, data: bytes) -> None:
        self.decoded += len(data)

    def on_leaf_gap(self, part: MimePart, length: int) -> None:
        pass

    def on_leaf_end(self, part: MimePart) -> None:
        pass

    def on_anomaly(self, kind: str, detail: str = "") -> None:
        pass


def run_mime(segments: list[bytes]) -> int:
    sink = _NullMimeSink()
    mp = MimeParser(sink)
    for s in segments:
        mp.feed(s)
    mp.finish()
    return sink.decoded


def run_hash(name: str, chunks: list[bytes]) -> str:
    h = hashlib.new(name)
    for c in chunks:
        h.update(c)
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mbytes", type=float, default=16, help="message size in MB (default 16)")
    ap.add_argument("--segment", type=int, default=1448, help="TCP segment size (default 1448)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", default="b64,8bit,8bit-attach,qp,mixed")
    ap.add_argument("--profile", help="write a cProfile of the full SMTP stage of the first workload")
    ap.add_argument("--binascii", action="store_true", help="decode base64 with binascii, not pybase64")
    args = ap.parse_args(argv)
    if args.binascii:
        mimecodec.strict_b64decode = mimecodec.binascii_strict
    decoder = getattr(mimecodec, "strict_b64decode", None)  # absent in older trees (before/after runs)
    print(f"base64 quanta decoded by {decoder.__name__ if decoder else 'binascii.a2b_base64'}")
    size = int(args.mbytes * 1e6)
    print(f"segment {args.segment} B, message ~{args.mbytes:g} MB, best CPU time of {args.repeat}")
    print(f"{'workload':<12} {'stage':<22} {'cpu s':>8} {'MB/s':>9}  of")
    for kind in args.only.split(","):
        if kind == "mixed":
            bench_mixed(size, args)
        else:
            bench_workload(kind, size, args)
    return 0


def bench_workload(kind: str, size: int, args: argparse.Namespace) -> None:
    rng = random.Random(f"mail-bench-{kind}")
    message, payload_len = _message(kind, size, rng)
    steps = _session(message, args.segment)
    segments = [data for i, (d, data) in enumerate(steps) if d == TO_SERVER and i >= 5][:-1]
    ctx = run_smtp(steps)
    decoded = [f for f in ctx.files if f.size >= payload_len * 0.9]
    assert decoded and decoded[0].sha256, f"{kind}: the payload file was not decoded completely"
    assert ctx.stats.total("applayer.anomaly") == 0, ctx.stats.snapshot()
    plain = chunks_of(decoded[0].buffer or b"", args.segment)
    mb = len(message) / 1e6

    def show(stage: str, seconds: float, nbytes: float = mb) -> None:
        unit = "message" if nbytes == mb else "decoded"
        print(f"{kind:<12} {stage:<22} {seconds:8.3f} {nbytes / seconds:9.1f}  {unit}")

    show("smtp+mime+file", best(lambda: run_smtp(steps), args.repeat))
    show("smtp+mime (file stub)", best(lambda: run_smtp(steps, real_files=False), args.repeat))
    show("mime (null sink)", best(lambda: run_mime(segments), args.repeat))
    show("FileObject.write", best(lambda: run_file(plain), args.repeat), payload_len / 1e6)
    show("sha256 (floor)", best(lambda: run_hash("sha256", plain), args.repeat), payload_len / 1e6)
    show("md5 (floor)", best(lambda: run_hash("md5", plain), args.repeat), payload_len / 1e6)
    if args.profile:
        cProfile.runctx("run_smtp(steps)", globals(), {"run_smtp": run_smtp, "steps": steps}, args.profile)
        args.profile = None


# ------------------------------------------------------------ the mixed capture's mail

_GEN_TO_SERVER = b"\x02\x00\x00\x00\x00\x02"  # gen.py's ETH_DST: frames the client sends


def _gen_flows(kind: str, size: int) -> list[list[tuple[int, bytes]]]:
    """bench/gen.py's flows of one kind (its seed), as TCP payloads in the order gen.py cut them."""
    gen = importlib.import_module("bench.gen").Generator(20261125, leaks=False)
    flows: list[list[tuple[int, bytes]]] = []
    total = 0
    while total < size:
        gen.n += 1
        steps: list[tuple[int, bytes]] = []
        for frame in getattr(gen, kind)():
            payload = frame[54:]  # Ethernet + IPv4 (no options) + TCP (no options), as gen.py writes
            if payload:
                steps.append((TO_SERVER if frame[:6] == _GEN_TO_SERVER else TO_CLIENT, payload))
                total += len(payload)
        flows.append(steps)
    return flows


def _upload_body(steps: list[tuple[int, bytes]]) -> tuple[bytes, bytes]:
    """(boundary, body) of a gen.py upload: the request's body, de-chunked."""
    request = b"".join(data for d, data in steps if d == TO_SERVER)
    head, _, body = request.partition(b"\r\n\r\n")
    if b"Transfer-Encoding: chunked" in head:
        out = bytearray()
        while True:
            line, _, body = body.partition(b"\r\n")
            n = int(line, 16)
            if n == 0:
                break
            out += body[:n]
            body = body[n + 2 :]
        body = bytes(out)
    ctype = re.search(rb"Content-Type: (multipart/[^\r]*)", head)
    assert ctype is not None
    boundary = boundary_of(ctype.group(1).decode())
    assert boundary is not None
    return boundary, body


def run_sessions(sessions: list[list[tuple[int, bytes]]], real_files: bool = True) -> BenchContext:
    ctx = BenchContext(real_files, server_port=25)
    for steps in sessions:
        p = SmtpParser(ctx)  # type: ignore[arg-type]
        for d, data in steps:
            p.feed(d, data, 1.0)
        p.close(2.0)
    return ctx


def run_multipart(bodies: list[tuple[bytes, list[bytes]]], real_files: bool = True) -> BenchContext:
    ctx = BenchContext(real_files)

    def on_part(info: PartInfo) -> Any:
        return _PartFile(ctx.open_file(TO_SERVER, name=info.filename, source="bench", protocol="http"))

    for boundary, segments in bodies:
        mp = MultipartParser(boundary, on_part, ctx.stats)
        for s in segments:
            mp.feed(s)
        mp.close()
    return ctx


class _PartFile:
    """A multipart part's sink writing into a file, as the HTTP parser's part sink does."""

    def __init__(self, f: Any) -> None:
        self.f = f

    def write(self, data: bytes) -> None:
        self.f.write(data)

    def end(self, complete: bool) -> None:
        self.f.close(None if complete else "TRUNCATED")


def bench_mixed(size: int, args: argparse.Namespace) -> None:
    sessions = _gen_flows("smtp", size)
    wire = sum(len(data) for steps in sessions for _, data in steps) / 1e6
    ctx = run_sessions(sessions)
    assert ctx.stats.total("applayer.anomaly") == 0, ctx.stats.snapshot()
    assert sum(1 for f in ctx.files if f.name == "data.zip" and f.sha256) == len(sessions), "attachments"
    print(f"{'mixed':<12} {len(sessions)} SMTP sessions, {wire:.1f} MB on the wire")
    show = functools.partial(_show, "mixed", wire)
    show("smtp+mime+file", best(lambda: run_sessions(sessions), args.repeat))
    show("smtp+mime (file stub)", best(lambda: run_sessions(sessions, real_files=False), args.repeat))
    uploads = [_upload_body(steps) for steps in _gen_flows("http_upload", size)]
    bodies = [(b, chunks_of(body, args.segment)) for b, body in uploads]
    mb = sum(len(body) for _, body in uploads) / 1e6
    ctx = run_multipart(bodies)
    assert len(ctx.files) == 2 * len(bodies) and not ctx.stats.total("content.multipart_problem"), "uploads"
    print(f"{'mixed':<12} {len(bodies)} multipart/form-data bodies, {mb:.1f} MB")
    show = functools.partial(_show, "mixed", mb)
    show("multipart+file", best(lambda: run_multipart(bodies), args.repeat))
    show("multipart (file stub)", best(lambda: run_multipart(bodies, real_files=False), args.repeat))
    if args.profile:
        cProfile.runctx("run_sessions(sessions, False)", globals(),
                        {"run_sessions": run_sessions, "sessions": sessions}, args.profile)
        args.profile = None


def _show(kind: str, mb: float, stage: str, seconds: float) -> None:
    print(f"{kind:<12} {stage:<22} {seconds:8.3f} {mb / seconds:9.1f}  message")


if __name__ == "__main__":
    raise SystemExit(main())
