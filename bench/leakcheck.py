"""What a replay's EVE output says about leaks: alerts by category, and recall against the
known leak flows a generated capture lists in ``<capture>.leaks.json`` (bench/gen.py).

Used by bench/precision.py (precision and recall on the mixed captures) and bench/run (the
smoke's "known leak flows raise their alerts" check).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detectors.signatures import (
    CATEGORY_FINGERPRINT,
    CATEGORY_LEAK,
    CATEGORY_PARTIAL,
    CATEGORY_PLAINTEXT,
)

# Alert categories that say "protected data left": any of them on benign traffic is a false
# positive. weak-crypto (a policy violation about the TLS session, not data) and canary
# (self-test) are counted but are not leak alerts.
LEAK_CATEGORIES = frozenset({CATEGORY_LEAK, CATEGORY_FINGERPRINT, CATEGORY_PARTIAL, CATEGORY_PLAINTEXT})

FlowKey = frozenset[tuple[str, int]]
_EVENT_TYPE = re.compile(r'"event_type":\s*"([a-z_]+)"')


def flow_key(src_ip: str, src_port: int, dest_ip: str, dest_port: int) -> FlowKey:
    """Both directions of a connection give the same key (alerts may be written either way round)."""
    return frozenset({(src_ip, int(src_port)), (dest_ip, int(dest_port))})


@dataclass
class Hit:
    """One alert or finding, reduced to what the checks and the report need."""

    event_type: str
    flow: FlowKey
    sid: int
    category: str
    where: str
    variant: str

    def describe(self) -> str:
        ends = " <-> ".join(f"{ip}:{port}" for ip, port in sorted(self.flow))
        return f"{self.event_type} sid {self.sid} [{self.category}] {ends} at {self.where} ({self.variant})"


@dataclass
class EveSummary:
    events: Counter[str] = field(default_factory=Counter)  # every EVE record, by event_type
    alerts_by_category: Counter[str] = field(default_factory=Counter)
    alerts_by_sid: Counter[int] = field(default_factory=Counter)
    findings_by_category: Counter[str] = field(default_factory=Counter)
    leak_alerts: list[Hit] = field(default_factory=list)
    findings: list[Hit] = field(default_factory=list)

    @property
    def leak_alert_count(self) -> int:
        return sum(n for c, n in self.alerts_by_category.items() if c in LEAK_CATEGORIES)


def _hit(ev: dict[str, Any], key: str) -> Hit:
    body = ev.get(key) or {}
    lm = ev.get("leakmon") or {}
    return Hit(ev.get("event_type", "?"),
               flow_key(ev.get("src_ip", ""), ev.get("src_port", 0), ev.get("dest_ip", ""), ev.get("dest_port", 0)),
               int(body.get("signature_id", 0)), str(body.get("category", "")),
               str(lm.get("where", "")), str(lm.get("variant", lm.get("kind", ""))))


def summarize(eve: Path) -> EveSummary:
    """Read an EVE file once; keep every alert in a leak category and every finding."""
    s = EveSummary()
    with open(eve, encoding="utf-8") as fh:
        for line in fh:
            if '"alert"' not in line and '"finding"' not in line:
                m = _EVENT_TYPE.search(line)
                s.events[m.group(1) if m else "?"] += 1
                continue
            ev = json.loads(line)
            et = ev.get("event_type", "?")
            s.events[et] += 1
            if et == "alert":
                h = _hit(ev, "alert")
                s.alerts_by_category[h.category] += 1
                s.alerts_by_sid[h.sid] += 1
                if h.category in LEAK_CATEGORIES:
                    s.leak_alerts.append(h)
            elif et == "finding":
                h = _hit(ev, "finding")
                s.findings_by_category[h.category] += 1
                s.findings.append(h)
    return s


@dataclass
class Recall:
    expected: list[dict[str, Any]]
    missed: list[dict[str, Any]]
    unexpected: list[Hit]  # leak-category alerts on flows that carry no known leak

    @property
    def found(self) -> int:
        return len(self.expected) - len(self.missed)

    @property
    def ok(self) -> bool:
        return not self.missed and not self.unexpected

    def line(self) -> str:
        return (f"leaks: {self.found}/{len(self.expected)} known leak flows alerted, "
                f"{len(self.unexpected)} leak alerts on other flows")


def load_leaks(capture: Path) -> list[dict[str, Any]] | None:
    """The known leak flows of a generated capture, or None when it has no leaks.json."""
    p = Path(str(capture) + ".leaks.json")
    if not p.exists():
        return None
    leaks: list[dict[str, Any]] = json.loads(p.read_text(encoding="utf-8")).get("leaks", [])
    return leaks


def check_recall(summary: EveSummary, leaks: list[dict[str, Any]]) -> Recall:
    """Every known leak flow has an alert with its sid; no other flow has a leak-category alert."""
    alerted: dict[FlowKey, set[int]] = {}
    for h in summary.leak_alerts:
        alerted.setdefault(h.flow, set()).add(h.sid)
    expected_flows = set()
    missed = []
    for leak in leaks:
        key = flow_key(leak["src_ip"], leak["src_port"], leak["dest_ip"], leak["dest_port"])
        expected_flows.add(key)
        if int(leak["sid"]) not in alerted.get(key, set()):
            missed.append(leak)
    unexpected = [h for h in summary.leak_alerts if h.flow not in expected_flows]
    return Recall(list(leaks), missed, unexpected)
