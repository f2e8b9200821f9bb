"""The SMTP/MIME fast paths give what the code before them gave (tests/monitor/content/
mail_reference.py): the same events, transactions, anomalies, files (fileinfo, content and the
chunks written to them), inspected buffers, learned names and counters, on hypothesis sessions
(DATA and BDAT, dot-stuffing, both end markers, pipelining, rejections, gaps), on bench/gen.py's
SMTP sessions of the benchmark capture, and on every SMTP capture in pcaps/ and ../shared/corpus."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.applayer.smtp import SmtpParser
from monitor.files import FileObject
from monitor.model import TO_CLIENT, TO_SERVER
from tests.conftest import CORPUS, PCAPS
from tests.factories import RecordingContext, tflow
from tests.monitor.applayer.mailftp_replay import replay
from tests.monitor.content import mail_reference as ref
from tests.monitor.content.test_mime_fastpath import messages

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class _Writes:
    """A file listener that records what each file is given, chunk by chunk (detection's input)."""

    def __init__(self, log: list[tuple[Any, ...]], closed: list[FileObject]) -> None:
        self.log = log
        self.closed = closed

    def on_file_data(self, f: FileObject, data: bytes) -> None:
        self.log.append(("data", f.source, bytes(data)))

    def on_file_gap(self, f: FileObject, length: int) -> None:
        self.log.append(("gap", f.source, length))

    def on_file_close(self, f: FileObject) -> None:
        self.log.append(("close", f.source, f.state))
        self.closed.append(f)


class TraceContext(RecordingContext):
    def __init__(self) -> None:
        super().__init__(flow=tflow(sport=25))
        self.writes: list[tuple[Any, ...]] = []

    def open_file(self, direction: int, **kw: Any) -> FileObject:
        f = super().open_file(direction, **kw)
        f.listener = _Writes(self.writes, self.closed_files)
        return f


def _fileinfo(f: FileObject) -> dict[str, Any]:
    info = f.fileinfo()
    info.pop("file_id")
    info.pop("parent_file_id", None)
    return info


def outcome(ctx: RecordingContext, writes: list[tuple[Any, ...]]) -> dict[str, Any]:
    """Everything the parser reported, in comparable form (file ids differ from run to run)."""
    return {
        "events": [(t, json.dumps(b, sort_keys=True, ensure_ascii=False, default=str), tx) for t, b, tx in ctx.events],
        "txs": json.dumps(ctx.txs, sort_keys=True, ensure_ascii=False, default=str),
        "anomalies": ctx.anomalies,
        "files": [(_fileinfo(f), f.content()) for f in ctx.files],
        "writes": writes,
        "inspected": [(i.data, i.where, i.direction, i.tx_id, i.charset, i.file.source if i.file else None)
                      for i in ctx.inspected],
        "names": ctx.names,
        "stats": ctx.stats.snapshot(),
    }


Step = tuple[int, bytes | int]


def run(steps: list[Step]) -> dict[str, Any]:
    ctx = TraceContext()
    p = SmtpParser(ctx)
    for d, data in steps:
        if isinstance(data, int):
            p.gap(d, data, 1.0)
        else:
            p.feed(d, data, 1.0)
    p.close(2.0)
    return outcome(ctx, ctx.writes)


def both(steps: list[Step]) -> dict[str, Any]:
    fast = run(steps)
    with ref.reference_mail_path():
        old = run(steps)
    assert fast == old
    return fast


# ------------------------------------------------------------------ generated sessions


def stuff(message: bytes) -> bytes:
    """RFC 5321 4.5.2: a line starting with "." gets one more."""
    return re.sub(rb"(^|\n)\.", rb"\1..", message)


@st.composite
def data_transaction(draw: Any) -> bytes:
    msg = draw(messages)
    if draw(st.booleans()):
        msg += draw(st.sampled_from([b"\r\n.trailing dot line\r\n", b"\n..\n", b"\r\n.\r\nnot the end\r\n"]))
    body = stuff(msg)
    marker = draw(st.sampled_from([b".\r\n", b".\n"])) if body.endswith(b"\n") else \
        draw(st.sampled_from([b"\r\n.\r\n", b"\n.\n"]))
    return b"MAIL FROM:<a@example.jp>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n" + body + marker


@st.composite
def bdat_transaction(draw: Any) -> bytes:
    msg = draw(messages)
    cut = draw(st.integers(0, len(msg)))
    return (b"MAIL FROM:<a@example.jp>\r\nRCPT TO:<b@example.com>\r\n"
            + b"BDAT %d\r\n" % cut + msg[:cut] + b"BDAT %d LAST\r\n" % (len(msg) - cut) + msg[cut:])


@st.composite
def sessions(draw: Any) -> list[Step]:
    client = b"EHLO ws01.example.jp\r\n" + b"".join(
        draw(st.lists(data_transaction() | bdat_transaction() | st.just(b"RSET\r\n"), min_size=1, max_size=3)))
    if draw(st.booleans()):
        client += b"QUIT\r\n"
    else:
        client = client[: draw(st.integers(len(client) // 2, len(client)))]  # the flow ends mid-way
    cuts = sorted(set(draw(st.lists(st.integers(0, len(client)), max_size=10)))
                  | set(range(0, len(client), draw(st.sampled_from([1448, 536, 9000, 7])))) | {len(client)})
    segments = [client[a:b] for a, b in zip(cuts, cuts[1:], strict=False) if b > a]
    replies = draw(st.lists(st.sampled_from([b"250 ok\r\n", b"354 go\r\n", b"554 no\r\n", b"250-a\r\n250 b\r\n"]),
                            max_size=8))
    gaps = draw(st.lists(st.integers(0, 40), max_size=2))
    steps: list[Step] = [(TO_CLIENT, b"220 mx ESMTP\r\n")]
    for i, seg in enumerate(segments):
        steps.append((TO_SERVER, seg))
        if i < len(replies):
            steps.append((TO_CLIENT, replies[i]))
        if i in gaps:
            steps.append((TO_SERVER, 100 + i))
    return steps


@SETTINGS
@given(steps=sessions())
def test_generated_sessions_report_as_before(steps: list[Step]) -> None:
    both(steps)


def test_stuffed_lines_unstuffed_and_marker_alone_needs_no_unstuffing() -> None:
    body = b"Subject: s\r\n\r\nline\r\n.dot\r\n..two\r\nend"
    steps: list[Step] = [(TO_CLIENT, b"220 hi\r\n"),
                         (TO_SERVER, b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n" + stuff(body) + b"\r\n.\r\n"),
                         (TO_CLIENT, b"250 ok\r\n250 ok\r\n354 go\r\n250 queued\r\n"),
                         (TO_SERVER, b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nSubject: t\r\n\r\nplain\r\n.\r\n")]
    out = both(steps)
    bodies = [json.loads(e[1]) for e in out["events"] if e[0] == "smtp"]
    assert [b["email"]["subject"] for b in bodies] == ["s", "t"]
    files = [content for _info, content in out["files"]]
    assert files == [b"line\r\n.dot\r\n..two\r\nend", b"plain"]


# ------------------------------------------------------------------ the benchmark capture's mail


def test_benchmark_capture_sessions_report_as_before() -> None:
    """bench/gen.py's SMTP sessions (ISO-2022-JP base64 text and a base64 zip/docx per mail) and
    bench/mail_bench.py's large workloads."""
    mail_bench = importlib.import_module("bench.mail_bench")
    for flow in mail_bench._gen_flows("smtp", 600_000):
        out = both([(d, data) for d, data in flow])
        assert [info["filename"] for info, _ in out["files"]][-1] == "data.zip"
        assert not out["anomalies"]
    rng = __import__("random").Random(7)
    for kind in ("b64", "8bit", "8bit-attach", "qp"):
        message, payload = mail_bench._message(kind, 200_000, rng)
        out = both(mail_bench._session(message, 1448))
        # A text payload's last line break is the end marker's.
        assert payload - 2 <= max(info["size"] for info, _ in out["files"]) <= payload


# ------------------------------------------------------------------ captures


def _captures() -> list[Path]:
    found = sorted(PCAPS.glob("mail-*.pcap"))
    manifest = CORPUS / "manifest.json"
    if manifest.exists():
        for entry in json.loads(manifest.read_text())["entries"]:
            if not entry.get("area", "").startswith("smtp"):
                continue
            local = CORPUS / entry["local"]
            found += sorted(local.glob("*.pcap*")) if local.is_dir() else [local]
    return [p for p in found if p.is_file()]


CAPTURES = _captures()


def _replayed(path: Path) -> dict[str, Any]:
    r = replay(path, ports={25: SmtpParser, 587: SmtpParser, 2525: SmtpParser})
    return {
        "eve": [json.dumps({k: v for k, v in rec.items() if k not in ("timestamp", "file_id", "flow_id")}, sort_keys=True)
                for rec in r.eve()],
        "files": [(_fileinfo(f), f.content()) for f in r.files],
        "anomalies": r.anomalies,
        "inspected": [(i.data, i.where, i.tx_id, i.charset) for i in r.inspected],
        "stats": r.stats.snapshot(),
    }


@pytest.mark.parametrize("path", CAPTURES, ids=[p.name if p.parent == PCAPS else str(p.relative_to(CORPUS))
                                                for p in CAPTURES])
def test_captures_report_as_before(path: Path) -> None:
    fast = _replayed(path)
    with ref.reference_mail_path():
        old = _replayed(path)
    assert fast == old
    assert fast["files"] or fast["eve"]  # the capture did reach the SMTP parser


def test_captures_cover_the_committed_and_corpus_mail() -> None:
    assert len([p for p in CAPTURES if p.parent == PCAPS]) >= 3
    if (CORPUS / "manifest.json").exists():
        assert len(CAPTURES) >= 20
