"""The public regression corpus (../shared/corpus): one case per manifest entry.

Each capture is replayed through the sensor pipeline exactly as ``leakmon replay`` does
(in-process, one pipeline per capture, config ``tests/corpus/leakmon.yaml``); its EVE output
is validated against the schema and checked against ``tests/corpus/expected.yaml`` (files with
their names, sizes, SHA-256 and states; transactions; anomalies; hunt literals found in the
decoded data). ``test_cli_replay_matches_in_process`` shows the CLI gives the same records.
Known failures owned by other modules are ``xfail(strict=True)`` with the module named in
expected.yaml. ``python3 -m tests.corpus.scoreboard`` prints the pass counts per area.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from alerts.schema import validate_lines
from tests.corpus import harness

pytestmark = pytest.mark.skipif(not harness.corpus_present(), reason="../shared/corpus not present")


def _cases() -> list:
    if not harness.corpus_present():
        return []
    out = []
    for key, _entry, spec in harness.entries():
        marks = [pytest.mark.xfail(strict=True, reason=spec["xfail"])] if spec.get("xfail") else []
        out.append(pytest.param(key, spec, id=key, marks=marks))
    return out


@pytest.mark.parametrize(("key", "spec"), _cases())
def test_corpus_capture(key: str, spec: dict, tmp_path: Path) -> None:
    assert spec.get("checks") or key == harness.EVADER, f"{key}: no expectation in expected.yaml"
    outcome = harness.run_entry(key, spec, tmp_path)
    assert outcome.passed, f"{key}: " + "; ".join(outcome.failures)


def test_every_manifest_entry_has_an_area_and_provenance() -> None:
    exp = harness.expected()
    for e in harness.manifest():
        spec = exp[e["local"]]
        assert spec.get("area") and spec.get("upstream"), e["local"]


def test_checks_really_check(tmp_path: Path) -> None:
    """The matcher is not vacuous: a wrong size, a wrong hash and a missing literal fail."""
    key = "suricata-verify/http-gap-simple"
    spec = {"area": "http", "hunt": ["NOT-IN-THIS-CAPTURE"], "checks": [
        {"count": 1, "match": {"event_type": "fileinfo", "fileinfo.size": 71}},
        {"count": 1, "match": {"event_type": "fileinfo", "fileinfo.sha256": "0" * 64}},
        {"min": 1, "match": {"found": "NOT-IN-THIS-CAPTURE"}},
        {"count": 2, "match": {"event_type": "fileinfo", "fileinfo.state": "CLOSED", "fileinfo.size": {"in": [14]}}},
    ]}
    outcome = harness.run_entry(key, spec, tmp_path)
    assert len(outcome.failures) == 3, outcome.failures


def test_cli_replay_matches_in_process(tmp_path: Path) -> None:
    """`python3 -m monitor replay` on one capture writes the same files and transactions."""
    key = "suricata-verify/http-range-file"
    spec = harness.expected()[key]
    [pcap] = harness.captures(key, spec)
    text = harness.CONFIG.read_text(encoding="utf-8").replace("path: eve.json", f"path: {tmp_path / 'unused.json'}")
    text += f"audit:\n  path: {tmp_path / 'audit.jsonl'}\nincidents:\n  db: {tmp_path / 'leakmon.db'}\n"
    cfg = tmp_path / "leakmon.yaml"
    cfg.write_text(text, encoding="utf-8")
    eve = tmp_path / "cli.json"
    r = subprocess.run([sys.executable, "-m", "monitor", "replay", str(pcap), "-c", str(cfg), "--eve-log", str(eve),
                        "--no-progress"], capture_output=True, text=True, cwd=harness.ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    cli = validate_lines(eve.read_text(encoding="utf-8"))
    assert not harness.check_failures(cli, spec["checks"], [])
    inproc = harness.run_entry(key, spec, tmp_path / "inproc").records

    def key_of(records: list[dict]) -> list[str]:
        out = []
        for r in records:
            if r["event_type"] in ("fileinfo", "http"):
                rec = {k: r.get(k) for k in ("event_type", "tx_id", "fileinfo", "http")}
                if rec["fileinfo"]:
                    rec["fileinfo"] = {k: v for k, v in rec["fileinfo"].items() if k != "file_id"}  # per process
                out.append(json.dumps(rec, sort_keys=True))
        return sorted(out)

    assert key_of(cli) == key_of(inproc)
