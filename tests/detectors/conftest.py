from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest

from alerts.eve import dumps, eve_record
from alerts.schema import validate_lines
from detectors.engine import Detection
from monitor.config import DetectionConfig, NetworksConfig, PolicyConfig, default_config
from monitor.events import Event
from monitor.stats import Stats

os.environ["LEAKMON_DETECT_STRICT"] = "1"  # a bug in detection fails the test instead of being counted

SIGS = """
markers:
  - sid: 9100001
    msg: "保護すべき情報 label"
    priority: 1
    literal: "保護すべき情報"
  - sid: 9100004
    msg: "document control number"
    regex: "JDA-[0-9]{4}-[0-9]{5}"
  - sid: 9100006
    msg: "JDA Confidential"
    literal: "JDA Confidential"
    nocase: true
  - sid: 9100007
    msg: "katakana marker"
    literal: "ヒミツ・テスト"
"""


class Harness:
    """A Detection over signature text written to a temp file, collecting its events."""

    def __init__(self, tmp: Path, sigs: str = SIGS, *, engine: str = "auto", protected: list[str] | None = None,
                 approved: list[str] | None = None, names: Any = None, extra_files: dict[str, bytes] | None = None,
                 **policy: Any) -> None:
        self.dir = tmp
        for name, data in (extra_files or {}).items():
            (tmp / name).write_bytes(data)
        self.sig_file = tmp / "rules.yaml"
        self.sig_file.write_text(sigs, encoding="utf-8")
        self.cfg = default_config(
            networks=NetworksConfig(protected=protected or ["10.0.0.0/8"], approved_destinations=approved or []),
            detection=DetectionConfig(engine=engine),
            policy=dataclasses.replace(PolicyConfig(), **policy),
        )
        self.stats = Stats()
        self.events: list[Event] = []
        self.det = Detection(self.cfg, self.stats, self.events.append, names,
                             signature_paths=[str(self.sig_file)])

    def alerts(self, sid: int | None = None) -> list[dict[str, Any]]:
        recs = self.eve()
        return [r for r in recs if r["event_type"] == "alert" and (sid is None or r["alert"]["signature_id"] == sid)]

    def eve(self) -> list[dict[str, Any]]:
        """Every event as an EVE record, validated against the schema."""
        lines = [dumps(eve_record(ev, "test-sensor")) for ev in self.events]
        return validate_lines(lines)


@pytest.fixture
def harness(tmp_path):
    def make(sigs: str = SIGS, **kw: Any) -> Harness:
        return Harness(tmp_path, sigs, **kw)

    return make
