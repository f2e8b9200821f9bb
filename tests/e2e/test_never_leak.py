"""Issue 5 item 6: never leak while reporting -- every output scanned, end to end.

One ``leakmon replay -vv --metrics-addr`` of captures that carry markers (in UTF-8, CP932,
EUC-JP, ISO-2022-JP, UTF-16, percent/JSON/base64/QP escapes, inside Office files, PDFs, zips,
mails and FTP uploads) and protected files (a registered drawing, excerpts of a registered
specification): ``pcaps/sample-leak-http.pcap`` and every ``pcaps/leaks/*.pcap`` present, then
a stretch of uploads that keeps the sensor running while its metrics are scraped. A webhook
receiver on loopback takes the notifications. Then the CLI renders every incident (show, JSON,
first and detail reports, export).

:func:`tests.alerts.leakscan.assert_no_leak` scans all of it -- EVE, the stderr log at debug
level, stdout of every command, every metrics scrape, every notification body, report drafts,
the SQLite database with its WAL, the audit log, coverage and evidence manifests -- for the
marker texts (in every encoding) and windows of the protected files' bytes, and a regular
expression for the regex marker. Only files sealed by the evidence store are skipped, for what
they are (AES-256-GCM ciphertext), and the positive control shows the same scan does find the
content where it is allowed to be: in the captures and in the decrypted evidence export.

The test's signature file is the shipped ``signatures/markers.yaml`` with neutral rule names
(``marking rule <sid>``): a rule's name is reported by design (EVE ``alert.signature``, reports,
notifications), so a name that spells out the marker would be reported with it. That the
shipped names do so is checked separately.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from alerts.incidents import opens_incident
from alerts.schema import validate_lines
from monitor.cli import main as leakmon_main
from tests.alerts.leakscan import assert_no_leak, needles, scan_bytes
from tests.e2e.conftest_incidents import (
    LAB_CLIENT,
    LEAK_SIGNATURES,
    LEAKS_DIR,
    SAMPLE_PCAP,
    cli_argv,
    cli_env,
    duplicate_sample,
    eve_records,
    flow_frames,
    flow_tuples,
    make_config,
    marker_literals,
    neutral_signatures,
    read_pcap,
    shipped_markers,
)

pytestmark = pytest.mark.timeout(180)

TAIL_COPIES = 15  # uploads after the leak captures: the sensor stays up a little longer while it is scraped
TAIL_NET = "198.18."  # their destinations
FULL_SHOW = 5  # incidents also shown as text, detail report and exported reports (the rest: JSON, first report)
PROTECTED_DIR = LEAKS_DIR / "protected"


def cli(*args: str | Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = leakmon_main([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()


# ---------------------------------------------------------------- what must not leak


def marker_regexes() -> list[re.Pattern[bytes]]:
    return [re.compile(m["regex"].encode(), 0 if m.get("nocase") is False else re.IGNORECASE)
            for m in shipped_markers() if "regex" in m]


def protected_files() -> dict[str, bytes]:
    if not PROTECTED_DIR.is_dir():
        return {}
    return {str(p.relative_to(PROTECTED_DIR)): p.read_bytes() for p in sorted(PROTECTED_DIR.rglob("*")) if p.is_file()}


def leak_captures() -> list[Path]:
    return sorted(LEAKS_DIR.glob("*.pcap")) if LEAKS_DIR.is_dir() else []


def in_time_order(captures: list[Path]) -> list[Path]:
    """Replayed in the order they were recorded, so the sensor's clock never goes back."""
    return sorted(captures, key=lambda c: read_pcap(c)[1][0][0])


# ---------------------------------------------------------------- loopback webhook receiver


@dataclass
class Receiver:
    bodies: list[bytes] = field(default_factory=list)
    url: str = ""


@contextlib.contextmanager
def webhook_receiver() -> Iterator[Receiver]:
    rec = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            n = int(self.headers.get("Content-Length") or 0)
            rec.bodies.append(self.rfile.read(n))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    rec.url = f"http://127.0.0.1:{server.server_address[1]}/leakmon"
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- the run


@dataclass
class LeakRun:
    tmp: Path
    config: Path
    captures: list[Path]
    eve: list[dict[str, Any]]
    stdout: str
    stderr: str
    scrapes: list[str]
    notifications: list[bytes]
    cli_outputs: dict[str, str]

    @property
    def out(self) -> Path:
        return self.tmp / "out"


def _scrape_while_running(proc: subprocess.Popen[bytes], port: int) -> list[str]:
    scrapes = []
    while proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:  # noqa: S310
                scrapes.append(resp.read().decode("utf-8", "replace"))
        except OSError:
            pass
        time.sleep(0.05)
    return scrapes


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LeakRun]:
    tmp = tmp_path_factory.mktemp("never-leak")
    captures = in_time_order([SAMPLE_PCAP, *leak_captures()])
    last_ts = max(read_pcap(c)[1][-1][0] for c in captures)
    tail = tmp / "tail-uploads.pcap"
    duplicate_sample(tail, TAIL_COPIES, flows_per_destination=TAIL_COPIES, start_ts=last_ts + 60)
    with webhook_receiver() as hook:
        config = make_config(tmp, signatures=neutral_signatures(tmp), webhook=hook.url)
        doc = yaml.safe_load(config.read_text(encoding="utf-8"))
        # one incident per capture: the captures were recorded about a second apart
        doc["incidents"]["window"] = "250ms"
        config.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
        port = free_port()
        proc = subprocess.Popen(cli_argv("replay", *captures, tail, "-c", config, "--no-progress", "-vv",
                                         "--metrics-addr", f"127.0.0.1:{port}"),
                                cwd=tmp, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out_chunks: list[bytes] = []
        err_chunks: list[bytes] = []
        readers = [threading.Thread(target=lambda s=s, c=c: c.append(s.read()), daemon=True)
                   for s, c in ((proc.stdout, out_chunks), (proc.stderr, err_chunks))]
        for r in readers:
            r.start()
        scrapes = _scrape_while_running(proc, port)
        proc.wait(timeout=150)
        for r in readers:
            r.join(timeout=10)
        stderr = b"".join(err_chunks).decode("utf-8", "replace")
        assert proc.returncode == 0, stderr[-3000:]
        notifications = list(hook.bodies)
    eve = eve_records(tmp / "out" / "eve.json")
    # every way the CLI shows an incident
    outputs: dict[str, str] = {}
    rc, listed, _ = cli("incidents", "list", "-c", config, "--json")
    assert rc == 0
    outputs["incidents list --json"] = listed
    outputs["incidents list"] = cli("incidents", "list", "-c", config)[1]
    for i, row in enumerate(json.loads(listed)):
        inc = row["id"]
        variants: list[tuple[str, ...]] = [("--json",), ("--report", "first")]
        if i < FULL_SHOW:
            variants += [("--report", "detail"), ()]
        for args in variants:
            rc, text, err = cli("incidents", "show", inc, "-c", config, *args)
            assert rc == 0, err
            outputs[f"incidents show {inc} {' '.join(args)}"] = text + err
        if i < FULL_SHOW:
            rc, text, err = cli("incidents", "export", inc, "-c", config)
            assert rc == 0, err
            outputs[f"incidents export {inc}"] = text + err
    rc, text, _ = cli("audit", "verify", "-c", config)
    outputs["audit verify"] = text
    yield LeakRun(tmp, config, captures, eve, b"".join(out_chunks).decode("utf-8", "replace"), stderr, scrapes,
                  notifications, outputs)


# ---------------------------------------------------------------- the run did report (so the scan means something)


def test_the_captures_raised_incidents_with_reports_notifications_and_metrics(run: LeakRun) -> None:
    # EVE of the captures (the tail of repeated uploads is the same records again) is valid
    own = [r for r in run.eve if not str(r.get("dest_ip", "")).startswith(TAIL_NET)]
    assert len(validate_lines([json.dumps(r, ensure_ascii=False) for r in own])) == len(own)
    alerts = [r for r in run.eve if r["event_type"] == "alert"]
    sids = {a["alert"]["signature_id"] for a in alerts}
    assert 9100001 in sids
    if LEAK_SIGNATURES.exists() and leak_captures():
        assert {9200101, 9300101} <= sids, "the drawing fingerprint and the specification excerpt were found"
    rows = json.loads(run.cli_outputs["incidents list --json"])
    assert len(rows) >= 2 and all(r["host"] in (LAB_CLIENT, "fd77::1") for r in rows)
    for r in rows:
        d = run.out / "reports" / r["id"]
        assert (d / "first_report.ja.md").exists() and (d / "detail_report.ja.md").exists()
    # one webhook notification per incident (Alertmanager shape), all delivered to the receiver
    payloads = [json.loads(b) for b in run.notifications]
    assert sorted(p["alerts"][0]["labels"]["incident_id"] for p in payloads) == sorted(r["id"] for r in rows)
    # scraped while running, with the alerts counted
    assert run.scrapes, "no metrics scrape succeeded while the replay ran"
    assert any(re.search(r"^leakmon_alerts_total\{[^}]*sid=\"9100001\"[^}]*\} [1-9]", s, re.M) for s in run.scrapes)
    assert " INFO leakmon." in run.stderr, "-vv logs below the warning level"
    assert run.cli_outputs["audit verify"].startswith("OK: ")


def test_each_capture_has_its_incident_first_report_and_evidence_from_the_syn(run: LeakRun) -> None:
    """Per capture: each incident alert is in an incident of its protected host and destination;
    the incident that opened with the capture's first alert has a first report naming them, the
    protocol and the sid; the evidence export holds every alerting flow from its SYN, frame for
    frame as it is in the capture."""
    alerts = [r for r in run.eve if r["event_type"] == "alert" and opens_incident(r)]
    rows = {r["id"]: r for r in json.loads(run.cli_outputs["incidents list --json"])}
    origin: dict[tuple[tuple[str, int], tuple[str, int]], Path] = {}
    for cap in run.captures:
        for t in flow_tuples(cap):
            origin.setdefault(t, cap)
    bundles: dict[str, Path] = {}
    compared: set[int] = set()
    opened_by: dict[Path, str] = {}
    per_capture: dict[Path, int] = {}
    for a in alerts:
        ends = ((a["src_ip"], a["src_port"]), (a["dest_ip"], a["dest_port"]))
        found = origin.get((min(ends), max(ends)))
        if found is None:
            continue  # the tail of uploads made for the metrics scrape
        cap = found
        per_capture[cap] = per_capture.get(cap, 0) + 1
        inc = _incident_of(run, a)
        protected = a["leakmon"]["protected_host"]
        other = a["dest_ip"] if a["src_ip"] == protected else a["src_ip"]
        assert (rows[inc]["host"], rows[inc]["dest"]) == (protected, other), cap.name
        rep = json.loads((run.out / "reports" / inc / "first_report.json").read_text(encoding="utf-8"))
        if rep["flow"]["flow_id"] == a["flow_id"] and cap not in opened_by:
            opened_by[cap] = inc
            assert rep["host"]["ip"] == protected and rep["destination"]["ip"] == other, cap.name
            assert rep["protocol"]["app_proto"] == a["app_proto"], cap.name
            assert a["alert"]["signature_id"] in {d["sid"] for d in rep["detections"]}, cap.name
        if inc not in bundles:
            bundles[inc] = run.tmp / "bundles" / inc
            rc, _, err = cli("evidence", "export", inc, "-c", run.config, "--out", bundles[inc])
            assert rc == 0, err
        if a["flow_id"] in compared:
            continue
        compared.add(a["flow_id"])
        # byte for byte and to the microsecond (tshark's reading of such pcaps is checked in test_incident_e2e)
        want = flow_frames(cap, ends)
        got = flow_frames(bundles[inc] / f"flow-{a['flow_id']}.pcap", ends)
        assert got == want, f"{cap.name}: evidence of flow {a['flow_id']} differs from the capture's frames"
        if a["proto"] == "TCP":
            syn = want[0][1]
            l4 = 14 + ((syn[14] & 0x0F) * 4 if syn[12:14] == b"\x08\x00" else 40)
            assert syn[l4 + 13] & 0x12 == 0x02, f"{cap.name}: flow {a['flow_id']} does not start with its SYN"
    marker_captures = [c for c in run.captures if c == SAMPLE_PCAP or (
        "marker" in c.name and not c.name.startswith("neg-"))]
    assert [c.name for c in marker_captures if c not in per_capture] == [], "captures with a marker but no alert"
    assert [c.name for c in per_capture if c.name.startswith("neg-")] == [], "alerts from negative captures"
    assert opened_by, "no incident opened with a capture's alert"


def _incident_of(run: LeakRun, a: dict[str, Any]) -> str:
    import sqlite3

    from alerts.incidents import alert_key

    conn = sqlite3.connect(run.out / "leakmon.db")
    try:
        row = conn.execute("SELECT incident_id FROM alerts WHERE eve_key=?", (alert_key(a),)).fetchone()
    finally:
        conn.close()
    assert row is not None, f"alert {a['alert']['signature_id']} of flow {a['flow_id']} not in the database"
    return str(row[0])


# ---------------------------------------------------------------- the scan


def test_no_marker_text_or_protected_bytes_in_any_output(run: LeakRun) -> None:
    markers = marker_literals()
    files = protected_files()
    texts: dict[str, str | bytes] = {"stderr (-vv)": run.stderr, "stdout": run.stdout}
    texts.update({f"metrics scrape #{i}": s for i, s in enumerate(run.scrapes)})
    texts.update({f"webhook notification #{i}": b for i, b in enumerate(run.notifications)})
    texts.update(run.cli_outputs)
    covered = assert_no_leak(markers=markers, files=files.values(), trees=[run.out], texts=texts)
    # the scan covered every kind of output
    scanned = set(covered["scanned"])
    for must in ("eve.json", "leakmon.db", "audit.jsonl", "audit.jsonl.head"):
        assert must in scanned, must
    assert any(s.startswith("reports/") and s.endswith("first_report.ja.md") for s in scanned)
    assert any(s.startswith("reports/") and s.endswith("detail_report.json") for s in scanned)
    assert any(s.startswith("evidence/") and s.endswith("manifest.json") for s in scanned)
    assert any(s.startswith("evidence/") and s.endswith(".pcap.enc") for s in covered["skipped"])
    assert all(s.endswith(".enc") for s in covered["skipped"])
    # the regex marker: no text it matches anywhere either
    blobs = {name: (run.out / name).read_bytes() for name in covered["scanned"] if (run.out / name).is_file()}
    blobs.update({name: t.encode("utf-8") if isinstance(t, str) else t for name, t in texts.items()})
    for rx in marker_regexes():
        found = [name for name, data in blobs.items() if rx.search(data)]
        assert found == [], f"text matching a regex marker in {found}"


def test_positive_control_the_scan_finds_the_content_where_it_may_be(run: LeakRun) -> None:
    """The same needles are found in the captures and in the decrypted evidence: the scan works."""
    ns = needles(marker_literals(), protected_files().values())
    in_captures = {h.label for c in run.captures for h in scan_bytes(c.read_bytes(), c.name, ns)}
    assert "marker[0]" in in_captures
    if protected_files():
        assert any(lbl.startswith("file[") for lbl in in_captures)
    inc = json.loads(run.cli_outputs["incidents list --json"])[0]["id"]
    bundle = run.tmp / "control-bundle"
    rc, _, err = cli("evidence", "export", inc, "-c", run.config, "--out", bundle)
    assert rc == 0, err
    found = [h for p in bundle.iterdir() for h in scan_bytes(p.read_bytes(), p.name, ns)]
    assert any(h.label == "marker[0]" and h.where.endswith(".pcap") for h in found)
    assert any(h.label == "marker[0]" and h.where.startswith("file-") for h in found)


def test_shipped_rule_names_do_not_spell_out_their_markers() -> None:
    bad = [m["sid"] for m in shipped_markers() if "literal" in m and m["literal"].lower() in m["msg"].lower()]
    assert bad == []
