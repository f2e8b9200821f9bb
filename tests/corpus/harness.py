"""Replay the public regression corpus through the sensor and check tests/corpus/expected.yaml.

Shared by ``test_corpus.py`` (one pytest case per manifest entry) and ``scoreboard.py`` (the
pass counts per area for the README).

Each capture is replayed in-process through the same path as ``leakmon replay``: a
:class:`monitor.pipeline.Pipeline` built from ``tests/corpus/leakmon.yaml`` (EVE to a file,
no evidence), every packet from :func:`monitor.capture.pcapfile.read_capture`, then
``finish()``. The EVE file is validated with :func:`alerts.schema.validate_lines` and checked.

Expectation format (``expected.yaml``, keyed by the manifest's ``local`` path)::

    suricata-verify/http-gap-simple:
      area: http                      # scoreboard group
      pcap: [input.pcap]              # relative to the entry (default: its only *.pcap)
      hunt: ["THIS_IS_A_TEST"]        # optional ad-hoc literals (sids 9900001..), see below
      checks:                         # suricata-verify style filters over EVE records
        - {count: 1, match: {event_type: http, http.url: /1, http.status: 200}}
        - {min: 1, match: {event_type: fileinfo, fileinfo.state: TRUNCATED}}
      config: {stream: {overlap_policy: last}}   # optional config overrides for this capture
      xfail: "module.function: reason"   # optional: a known failure owned elsewhere

``match`` keys are dotted paths (``email.attachment[0]``), compared for equality or with an
operator (``{startswith: "smtp."}``, ``{in: [a, b]}``, ``{min: 3}``); ``not-has-key``/``has-key``
name a path or a list of paths; ``found: LITERAL`` selects the ``finding`` events of
that hunt literal (a policy.inbound_events finding: the literal was seen in that flow's
decoded data or raw stream). ``count`` is exact; ``min`` (default 1) is a lower bound.

Every capture also has to satisfy the invariants of ``invariant_failures``: valid EVE, a
final stats record, no parser or decoder crash contained by the pipeline, no open file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from alerts.schema import validate_lines
from monitor.capture.pcapfile import read_capture
from monitor.config import Config, load_config
from monitor.files import FileObject
from monitor.pipeline import Pipeline
from monitor.runner import adhoc_signature_file

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CORPUS = ROOT.parent / "shared" / "corpus"
CONFIG = HERE / "leakmon.yaml"
EXPECTED = HERE / "expected.yaml"
HUNT_SID = 9900001  # sids of ad-hoc literals, as `leakmon replay --literal`
EVADER = "suricata-verify/http-evader/http-evader-NNN/ (502 dirs)"
EVADER_LITERALS = ["EICAR-STANDARD-ANTIVIRUS-TEST-FILE", "X5O!P%@AP[4"]
# Anomalies that mean the pipeline contained a crash (a parser or decoder raised).
CRASH_ANOMALIES = {"applayer.parser_error", "content.decoder_error"}
PCAP_SUFFIXES = (".pcap", ".pcapng", ".cap", ".trace")


@dataclass
class Outcome:
    key: str
    area: str
    failures: list[str] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    xfail: str | None = None
    detail: str = ""

    @property
    def passed(self) -> bool:
        return not self.failures


def manifest() -> list[dict[str, Any]]:
    with open(CORPUS / "manifest.json", encoding="utf-8") as fh:
        return list(json.load(fh)["entries"])


def expected() -> dict[str, dict[str, Any]]:
    with open(EXPECTED, encoding="utf-8") as fh:
        return dict(yaml.safe_load(fh))


def corpus_present() -> bool:
    return (CORPUS / "manifest.json").exists()


def base_config() -> Config:
    return load_config(str(CONFIG))


def captures(key: str, spec: dict[str, Any]) -> list[Path]:
    """The capture files of one manifest entry (in replay order)."""
    base = CORPUS / key
    if spec.get("pcap"):
        names = spec["pcap"] if isinstance(spec["pcap"], list) else [spec["pcap"]]
        root = base if base.is_dir() else base.parent
        return [(root / n).resolve() for n in names]
    if base.is_file():
        return [base]
    found = sorted(p for p in base.iterdir() if p.suffix in PCAP_SUFFIXES)
    if len(found) != 1:
        raise ValueError(f"{key}: {len(found)} captures; name them with pcap:")
    return found


class SharedDetection:
    """One compiled rule set reused by many short replays (the 502 http-evader captures).

    Compiling the Hyperscan databases costs ~0.15 s per pipeline, more than replaying one
    evader capture; the detection object keeps its per-flow state in the flows, so one
    instance serves consecutive pipelines. Its events go to whichever pipeline is replaying.
    """

    def __init__(self, cfg: Config, hunt: list[str]) -> None:
        from detectors.engine import Detection
        from monitor.names import HostNames
        from monitor.stats import Stats

        self.target: Pipeline | None = None
        self.names = HostNames()
        sig_file = adhoc_signature_file(hunt, [])
        try:
            cfg = dataclasses.replace(cfg, signatures=[*cfg.signatures, sig_file])
            self.detection = Detection(cfg, Stats(), self._emit, self.names)
        finally:
            os.unlink(sig_file)

    def _emit(self, event: Any) -> None:
        assert self.target is not None
        self.target.emit(event)

    def pipeline(self, cfg: Config, eve_path: Path) -> Pipeline:
        pipeline = Pipeline(cfg, eve_path=str(eve_path), replay=True, detection=self.detection)
        pipeline.names = self.names
        self.target = pipeline
        return pipeline


def replay_eve(paths: list[Path], eve_path: Path, cfg: Config, hunt: list[str],
               shared: SharedDetection | None = None) -> list[dict[str, Any]]:
    """Replay ``paths`` through one pipeline; the validated EVE records. With ``shared`` the
    hunt literals are the ones ``shared`` was built with."""
    sig_file = None
    if hunt and shared is None:
        sig_file = adhoc_signature_file(hunt, [])
        cfg = dataclasses.replace(cfg, signatures=[*cfg.signatures, sig_file])
    if eve_path.exists():
        eve_path.unlink()  # the EVE writer appends
    saved_hashes = FileObject.configured_hashes  # Pipeline() sets the config's hashes; later tests get these back
    try:
        if shared is not None:
            pipeline = shared.pipeline(cfg, eve_path)
        else:
            pipeline = Pipeline(cfg, eve_path=str(eve_path), replay=True)
        cnt = 0
        for path in paths:
            for raw in read_capture(str(path), stats=pipeline.stats, bpf=cfg.capture.bpf, start_cnt=cnt):
                pipeline.process(raw)
                cnt = raw.pcap_cnt
        pipeline.finish("shutdown")
    finally:
        FileObject.configured_hashes = saved_hashes
        if sig_file is not None:
            os.unlink(sig_file)
    return validate_lines(eve_path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------- matching

_INDEX = re.compile(r"^(.*)\[(\d+)\]$")
_MISSING = object()


def lookup(rec: Any, path: str) -> Any:
    """``a.b[0].c`` in a record; ``_MISSING`` when absent."""
    cur = rec
    for part in path.split("."):
        m = _INDEX.match(part)
        name, index = (m.group(1), int(m.group(2))) if m else (part, None)
        if not isinstance(cur, dict) or name not in cur:
            return _MISSING
        cur = cur[name]
        if index is not None:
            if not isinstance(cur, list) or index >= len(cur):
                return _MISSING
            cur = cur[index]
    return cur


def _value_ok(got: Any, want: Any) -> bool:
    """Equality, or an operator: ``{startswith: s}``, ``{in: [..]}``, ``{min: n}``."""
    if isinstance(want, dict) and len(want) == 1 and next(iter(want)) in ("startswith", "in", "min"):
        op, arg = next(iter(want.items()))
        if got is _MISSING:
            return False
        if op == "startswith":
            return isinstance(got, str) and got.startswith(arg)
        if op == "in":
            return got in arg
        return isinstance(got, (int, float)) and got >= arg
    return bool(got == want)


def matches(rec: dict[str, Any], match: dict[str, Any], hunt: list[str]) -> bool:
    for key, want in match.items():
        if key in ("not-has-key", "has-key"):
            for path in want if isinstance(want, list) else [want]:
                if (lookup(rec, path) is _MISSING) == (key == "has-key"):
                    return False
        elif key == "found":
            if rec.get("event_type") != "finding" or want not in hunt:
                return False
            if lookup(rec, "finding.signature_id") != HUNT_SID + hunt.index(want):
                return False
        elif not _value_ok(lookup(rec, key), want):
            return False
    return True


def check_failures(records: list[dict[str, Any]], checks: list[dict[str, Any]], hunt: list[str]) -> list[str]:
    out = []
    for chk in checks:
        match = chk.get("match", {})
        n = sum(1 for r in records if matches(r, match, hunt))
        if "count" in chk:
            if n != chk["count"]:
                out.append(f"want {chk['count']}, got {n}: {json.dumps(match, ensure_ascii=False)}")
        elif n < chk.get("min", 1):
            out.append(f"want >= {chk.get('min', 1)}, got {n}: {json.dumps(match, ensure_ascii=False)}")
    return out


def invariant_failures(records: list[dict[str, Any]]) -> list[str]:
    out = []
    crashes = [r["anomaly"]["event"] for r in records
               if r.get("event_type") == "anomaly" and r["anomaly"]["event"] in CRASH_ANOMALIES]
    if crashes:
        out.append(f"contained crash: {sorted(set(crashes))}")
    if not any(r.get("event_type") == "stats" for r in records):
        out.append("no final stats record")
    return out


# ---------------------------------------------------------------- running entries


def with_overrides(cfg: Config, overrides: dict[str, dict[str, Any]]) -> Config:
    """``{stream: {overlap_policy: last}}`` -> a config with those fields replaced."""
    for section, values in overrides.items():
        cfg = dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **values)})
    return cfg


def run_entry(key: str, spec: dict[str, Any], work: Path, cfg: Config | None = None) -> Outcome:
    cfg = with_overrides(cfg or base_config(), spec.get("config", {}))
    outcome = Outcome(key, spec.get("area", "other"), xfail=spec.get("xfail"))
    t0 = time.perf_counter()
    try:
        if key == EVADER:
            _run_evader(outcome, work, cfg)
        else:
            hunt = list(spec.get("hunt", []))
            paths = captures(key, spec)
            work.mkdir(parents=True, exist_ok=True)
            records = replay_eve(paths, work / "eve.json", cfg, hunt)
            outcome.records = records
            outcome.failures += invariant_failures(records)
            outcome.failures += check_failures(records, spec.get("checks", []), hunt)
    except Exception as exc:  # noqa: BLE001 - a crash of the sensor is a failed case, reported as such
        outcome.failures.append(f"replay raised {type(exc).__name__}: {exc}")
    outcome.seconds = time.perf_counter() - t0
    return outcome


def evader_cases() -> list[Path]:
    return sorted(p for p in (CORPUS / "suricata-verify" / "http-evader").glob("http-evader-*") if p.is_dir())


def evader_filename(case: Path) -> str | None:
    """The file name the case's test.yaml expects on its fileinfo event (None: no such check)."""
    with open(case / "test.yaml", encoding="utf-8") as fh:
        doc = yaml.safe_load(fh)
    for chk in doc.get("checks", []):
        name = chk.get("filter", {}).get("match", {}).get("fileinfo.filename")
        if name:
            return str(name)
    return None


def _run_evader(outcome: Outcome, work: Path, cfg: Config) -> None:
    """Each of the 502 captures: its body decodes to EICAR (both hunt literals found in a
    decoded response file) and a fileinfo with the upstream file name exists."""
    cases = evader_cases()
    failed = []
    shared = SharedDetection(cfg, EVADER_LITERALS)
    for case in cases:
        d = work / case.name
        d.mkdir(parents=True, exist_ok=True)
        try:
            records = replay_eve([case / "input.pcap"], d / "eve.json", cfg, EVADER_LITERALS, shared)
        except Exception as exc:  # noqa: BLE001
            failed.append(f"{case.name}: {type(exc).__name__}")
            continue
        problems = invariant_failures(records)
        name = evader_filename(case)
        if name is not None and not any(r.get("event_type") == "fileinfo" and r["fileinfo"]["filename"] == name
                                        for r in records):
            problems.append(f"no fileinfo {name}")
        for lit in EVADER_LITERALS:
            hits = [r for r in records if matches(r, {"found": lit}, EVADER_LITERALS)
                    and r["leakmon"].get("where") != "raw-stream"]
            if not hits:
                problems.append(f"{lit!r} not found in decoded data")
        if problems:
            failed.append(f"{case.name}: {'; '.join(problems)}")
    outcome.detail = f"{len(cases) - len(failed)}/{len(cases)} http-evader captures decode to EICAR"
    if not cases:
        outcome.failures.append("no http-evader captures")
    if failed:
        outcome.failures.append(f"{len(failed)} of {len(cases)} failed: " + " | ".join(failed[:10]))


def entries() -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(key, manifest entry, expectation) for every manifest entry, in manifest order."""
    exp = expected()
    for e in manifest():
        yield e["local"], e, exp.get(e["local"], {})
