"""Helpers of the end-to-end leak scenario tests (test_leaks.py, test_negatives.py, and
tests/monitor/test_investigate.py): replay a committed capture through the CLI,
validate its EVE, and read the capture's TCP connections with tshark (an independent dissector).

Each capture is replayed once per config per session (the CLI in-process: the same argv, parser
and code path as ``python3 -m monitor replay``; one test also runs the real subprocess). The
configs are copies of pcaps/leaks*.yaml whose outputs (EVE, incident DB, audit log) point into a
temporary folder, so tests never write next to the committed config. Not a conftest.py:
tests/e2e/ is shared with other areas; the test modules import the ``replay`` fixture from here.

Matcher engine: the scenario replays use ``detection.engine: ahocorasick`` (built in 0.2 s; a
Hyperscan build takes about 2 s per replay, which over 30+ captures would dominate the suite).
The production engine is covered by ``test_leaks.py::test_hyperscan_engine_agrees`` (every leak
capture in one Hyperscan run, compared with these results) and by the subprocess test, which runs the config unchanged.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from alerts.schema import validate_lines

ROOT = Path(__file__).resolve().parents[2]
PCAPS = ROOT / "pcaps"
LEAKS = PCAPS / "leaks"
MARKER = "保護すべき情報"
CLIENT4, SERVER4, CLIENT6, SERVER6 = "10.77.0.1", "10.77.0.2", "fd77::1", "fd77::2"
PROTECTED = {CLIENT4, CLIENT6}
LEAK_SIDS = range(9100000, 9400000)  # marker, fingerprint and document rules of the test set
SID_PLAINTEXT, SID_TLS_VERSION, SID_TLS_CIPHER = 9000001, 9000002, 9000003


@dataclass
class Replay:
    capture: str
    config: str
    records: list[dict[str, Any]]
    stderr: str = ""

    def of_type(self, event_type: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["event_type"] == event_type]

    def alerts(self, sid: int | None = None) -> list[dict[str, Any]]:
        return [r for r in self.of_type("alert") if sid is None or r["alert"]["signature_id"] == sid]

    def sids(self) -> set[int]:
        return {r["alert"]["signature_id"] for r in self.of_type("alert")}

    def stats(self) -> dict[str, Any]:
        found = self.of_type("stats")
        assert found, "replay wrote no final stats record"
        return found[-1]["stats"]


@dataclass(frozen=True)
class Conn:
    """One TCP connection as tshark sees its SYN: initiator first."""

    src: str
    sport: int
    dst: str
    dport: int

    def oriented(self) -> tuple[str, int, str, int]:
        """(src, sport, dest, dport) of the data leaving the protected host."""
        if self.src in PROTECTED:
            return self.src, self.sport, self.dst, self.dport
        return self.dst, self.dport, self.src, self.sport


def derived_config(name: str, folder: Path, **overrides: Any) -> Path:
    """pcaps/<name> with absolute signature paths and every output inside ``folder``."""
    src = PCAPS / name
    doc = yaml.safe_load(src.read_text(encoding="utf-8"))
    doc["signatures"] = [str((PCAPS / p).resolve()) for p in doc.get("signatures", [])]
    doc.setdefault("outputs", {})["eve"] = {"path": str(folder / "eve.json")}
    doc["incidents"] = {**doc.get("incidents", {}), "db": str(folder / "leakmon.db")}
    doc["audit"] = {**doc.get("audit", {}), "path": str(folder / "audit.jsonl")}
    doc["coverage"] = {**doc.get("coverage", {}), "path": str(folder / "coverage.jsonl")}
    doc["evidence"] = {**doc.get("evidence", {}), "enabled": False}
    for dotted, value in overrides.items():
        section, key = dotted.split("__")
        doc.setdefault(section, {})[key] = value
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / name
    out.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return out


@contextlib.contextmanager
def _strict_detection() -> Iterator[None]:
    # Detection contains its own exceptions (counted); in tests a bug must surface instead.
    old = os.environ.get("LEAKMON_DETECT_STRICT")
    os.environ["LEAKMON_DETECT_STRICT"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("LEAKMON_DETECT_STRICT", None)
        else:
            os.environ["LEAKMON_DETECT_STRICT"] = old


def replay_cli(capture: Path | list[Path], config: Path, eve: Path) -> Replay:
    """``leakmon replay CAPTURE... -c CONFIG --eve-log EVE`` in-process; all EVE validated."""
    from monitor.cli import main

    captures = capture if isinstance(capture, list) else [capture]
    err = io.StringIO()
    with _strict_detection(), contextlib.redirect_stderr(err):
        rc = main(["replay", *map(str, captures), "-c", str(config), "--eve-log", str(eve), "--no-progress"])
    assert rc == 0, err.getvalue()
    records = validate_lines(eve.read_text(encoding="utf-8"))
    return Replay(" ".join(c.name for c in captures), config.name, records, err.getvalue())


class Replayer:
    """Replays each (capture, config variant) once per session."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self._cache: dict[tuple[str, str, tuple[tuple[str, Any], ...]], Replay] = {}

    def __call__(self, capture: str, config: str = "leaks.yaml", **overrides: Any) -> Replay:
        overrides.setdefault("detection__engine", "ahocorasick")
        key = (capture, config, tuple(sorted(overrides.items())))
        if key not in self._cache:
            folder = self.base / f"{len(self._cache):03d}-{Path(capture).stem}"
            cfg = derived_config(config, folder, **overrides)
            self._cache[key] = replay_cli(LEAKS / capture, cfg, folder / "out.eve.json")
        return self._cache[key]


_SHARED: list[Replayer] = []


@pytest.fixture(scope="session", name="replay")
def replay_fixture(tmp_path_factory: pytest.TempPathFactory) -> Replayer:
    # One cache for every module that imports this fixture (each import is its own fixture definition).
    if not _SHARED:
        _SHARED.append(Replayer(tmp_path_factory.mktemp("e2e-leaks")))
    return _SHARED[0]


# ------------------------------------------------------------------ tshark oracle


_CONNS: dict[str, list[Conn]] = {}


def tcp_connections(capture: str) -> list[Conn]:
    """The TCP connections of a capture (from each initial SYN), as tshark dissects them."""
    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed (scripts/install installs it)")
    if capture not in _CONNS:
        out = subprocess.run(
            ["tshark", "-n", "-r", str(LEAKS / capture), "-Y", "tcp.flags.syn == 1 && tcp.flags.ack == 0",
             "-T", "fields", "-E", "separator=\t", "-e", "ip.src", "-e", "ipv6.src", "-e", "tcp.srcport",
             "-e", "ip.dst", "-e", "ipv6.dst", "-e", "tcp.dstport"],
            capture_output=True, text=True, check=True, timeout=60).stdout
        conns = []
        for line in out.splitlines():
            s4, s6, sp, d4, d6, dp = line.split("\t")
            conn = Conn(s4 or s6, int(sp), d4 or d6, int(dp))
            if conn not in conns:  # a retransmitted SYN is the same connection
                conns.append(conn)
        _CONNS[capture] = conns
    return _CONNS[capture]


def marker_renderings() -> list[str]:
    """How the marker could show up in a context string: as text, or as any encoding read as latin-1."""
    out = [MARKER, *MARKER]
    for codec in ("utf-8", "cp932", "euc_jp", "iso2022_jp", "utf-16-le", "utf-16-be"):
        raw = MARKER.encode(codec)
        if codec == "iso2022_jp":
            raw = raw[3:-3]  # the JIS X 0208 run between the escapes
        out.append(raw.decode("latin-1"))
    return out


def assert_redacted(context: str) -> None:
    assert context, "a marker alert carries a redacted context"
    for shown in marker_renderings():
        assert shown not in context, f"context {context!r} shows {shown!r}"
