"""Policy: neutral findings in, alert decisions out. No matching happens here.

A :class:`Finding` says *what* was seen (a marker variant, a file hash, a shared passage, a TLS
handshake) and *where* (flow, direction, file, buffer). :meth:`Policy.decide` turns it into
zero or more :class:`Verdict` s:

* direction: only data flowing out of the protected side (``flow.outbound_direction()``) can
  leak. The same finding flowing in (or between two protected hosts, or between two outside
  hosts) raises no alert; with ``policy.inbound_events`` it becomes an informational
  ``finding`` event instead;
* approved destinations (``networks.approved_destinations``: CIDRs, and host names matched
  against what the sensor learned from DNS answers, TLS SNI and HTTP Host): no leak alert;
* plaintext transmission (基準 10(5)エ): protected data seen in clear text leaving the
  protected side is a violation of its own, *also* to an approved destination (sid 9000001,
  category ``plaintext-transmission``), unless ``policy.plaintext_violation`` is off;
* weak crypto (基準 10(7)): a TLS session between a protected host and the outside that
  negotiates a version below the TLS policy's minimum (sid 9000002) or a cipher suite outside
  the CRYPTREC list (sid 9000003), category ``weak-crypto``;
* informational rules (the canary marker) alert in any direction with their own category;
* suppression (``policy.suppress``: sid and protected host/CIDR) and thresholds
  (``policy.thresholds``: at most ``count`` alerts per ``seconds`` per sid and protected host).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from detectors.signatures import (
    CATEGORY_PLAINTEXT,
    CATEGORY_WEAK_CRYPTO,
    SID_PLAINTEXT,
    SID_TLS_CIPHER,
    SID_TLS_VERSION,
    Rule,
    TlsPolicy,
    tls_version_rank,
)
from monitor.config import Config
from monitor.files import FileObject
from monitor.model import TO_CLIENT, TO_SERVER, Flow
from monitor.stats import Stats

MAX_THRESHOLD_KEYS = 65536

POLICY_RULES = {
    SID_PLAINTEXT: ("LEAKMON protected data transmitted in clear text (基準 10(5)エ)", CATEGORY_PLAINTEXT, 2),
    SID_TLS_VERSION: ("LEAKMON TLS version below the TLS policy minimum (基準 10(7))", CATEGORY_WEAK_CRYPTO, 2),
    SID_TLS_CIPHER: ("LEAKMON TLS cipher suite not on the CRYPTREC list (基準 10(7))", CATEGORY_WEAK_CRYPTO, 2),
}


@dataclass(slots=True)
class Finding:
    """What a detector saw. Neutral: no severity, no decision."""

    kind: str  # marker | fingerprint | partial | tls
    flow: Flow
    direction: int
    ts: float
    where: str
    rule: Rule | None = None
    variant: str = ""
    file: FileObject | None = None
    tx_id: int | None = None
    pcap_cnt: int | None = None
    count: int = 1
    context: str = ""
    raw: bool = False  # found by the raw-stream scan (not a decoded buffer or file)
    details: dict[str, Any] = field(default_factory=dict)  # fingerprint/document/tls facts


@dataclass(frozen=True, slots=True)
class Parties:
    """Who sent protected data where, as the alert names them."""

    protected_host: str | None
    destination: str | None
    destination_names: list[str]
    approved: bool


@dataclass(slots=True)
class Verdict:
    """What the policy made of a finding: an alert or an informational finding event."""

    event_type: str  # alert | finding
    sid: int
    rev: int
    msg: str
    category: str
    severity: int
    metadata: dict[str, list[str]]
    direction_label: str  # outbound | inbound | internal | external
    parties: Parties


class _Approved:
    def __init__(self, entries: list[str]) -> None:
        self.nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self.names: set[str] = set()
        self.suffixes: tuple[str, ...] = ()
        suffixes = []
        for e in entries:
            e = e.strip()
            try:
                self.nets.append(ipaddress.ip_network(e, strict=False))
                continue
            except ValueError:
                pass
            name = e.lower().rstrip(".")
            if name.startswith("*."):
                suffixes.append(name[1:])
            elif name.startswith("."):
                suffixes.append(name)
            elif name:
                self.names.add(name)
        self.suffixes = tuple(suffixes)

    def addr(self, packed: bytes) -> bool:
        if not self.nets:
            return False
        ip = ipaddress.ip_address(packed)
        return any(ip in n for n in self.nets)

    def name(self, name: str) -> bool:
        n = name.lower().rstrip(".")
        return n in self.names or (bool(self.suffixes) and n.endswith(self.suffixes))


class Policy:
    def __init__(self, cfg: Config, stats: Stats, names: Any) -> None:
        self.cfg = cfg
        self.stats = stats
        self.names = names
        self.approved = _Approved(cfg.networks.approved_destinations)
        self._suppress = [(s.sid, ipaddress.ip_network(s.host, strict=False) if s.host else None)
                          for s in cfg.policy.suppress]
        self._thresholds = {t.sid: (t.count, t.seconds) for t in cfg.policy.thresholds}
        self._windows: dict[tuple[int, bytes], tuple[float, int]] = {}

    # -- who is who
    @staticmethod
    def protected_endpoint(flow: Flow) -> tuple[bytes | None, bytes | None]:
        """(protected host, outside host) packed, or (None, None) when not exactly one side is protected."""
        if flow.protected_side == "client":
            return flow.client, flow.server
        if flow.protected_side == "server":
            return flow.server, flow.client
        return None, None

    def _names_of(self, packed: bytes | None) -> list[str]:
        if packed is None or self.names is None:
            return []
        try:
            return list(self.names.lookup(packed))
        except Exception:  # noqa: BLE001 - a names table problem must not stop detection
            self.stats.incr("detect.names_error")
            return []

    def _is_approved(self, packed: bytes | None, names: list[str]) -> bool:
        if packed is None:
            return False
        return self.approved.addr(packed) or any(self.approved.name(n) for n in names)

    # -- decisions
    def decide(self, f: Finding) -> list[Verdict]:
        flow = f.flow
        protected, outside = self.protected_endpoint(flow)
        outbound = flow.outbound_direction()
        from monitor.model import ip_text

        names = self._names_of(outside)
        approved = self._is_approved(outside, names)
        base = Parties(ip_text(protected) if protected else None, ip_text(outside) if outside else None,
                       names, approved)
        rule = f.rule
        out: list[Verdict] = []
        if rule is not None and rule.informational:
            label = _direction_label(flow, f.direction)
            out.append(Verdict("alert", rule.sid, rule.rev, rule.msg, rule.category, rule.priority,
                               rule.metadata, label, base))
            return self._filter(out, protected, f.ts)
        if outbound is None or f.direction != outbound:
            self.stats.incr("detect.not_outbound")
            if self.cfg.policy.inbound_events and rule is not None:
                out.append(Verdict("finding", rule.sid, rule.rev, rule.msg, rule.category, rule.priority,
                                   rule.metadata, _direction_label(flow, f.direction), base))
            return out
        if rule is None:
            return out
        if approved:
            self.stats.incr("detect.approved_destination")
        else:
            out.append(Verdict("alert", rule.sid, rule.rev, rule.msg, rule.category, rule.priority,
                               rule.metadata, "outbound", base))
        if self.cfg.policy.plaintext_violation:
            msg, cat, sev = POLICY_RULES[SID_PLAINTEXT]
            out.append(Verdict("alert", SID_PLAINTEXT, 1, msg, cat, sev,
                               {"rule": [str(rule.sid)]}, "outbound", base))
        return self._filter(out, protected, f.ts)

    def decide_tls(self, flow: Flow, info: dict[str, Any], tls: TlsPolicy | None, ts: float) -> list[Verdict]:
        if not self.cfg.policy.weak_crypto_violation:
            return []
        protected, outside = self.protected_endpoint(flow)
        if protected is None:
            return []
        from monitor.model import ip_text

        names = self._names_of(outside)
        base = Parties(ip_text(protected), ip_text(outside) if outside else None, names,
                       self._is_approved(outside, names))
        out: list[Verdict] = []
        minimum = tls.min_version if tls else "TLSv1.2"
        version = str(info.get("version") or "")
        rank = tls_version_rank(version)
        if version and rank < 0:
            self.stats.incr("detect.tls_unknown_version")
        elif version and rank < tls_version_rank(minimum):
            msg, cat, sev = POLICY_RULES[SID_TLS_VERSION]
            out.append(Verdict("alert", SID_TLS_VERSION, 1, msg, cat, sev, {"min_version": [minimum]},
                               "outbound", base))
        suite = info.get("cipher_suite")
        if isinstance(suite, int) and not isinstance(suite, bool):
            if tls is None:
                self.stats.incr("detect.tls_policy_missing")
            elif suite not in tls.suites:
                msg, cat, sev = POLICY_RULES[SID_TLS_CIPHER]
                out.append(Verdict("alert", SID_TLS_CIPHER, 1, msg, cat, sev, {"cipher_list": ["CRYPTREC"]},
                                   "outbound", base))
        return self._filter(out, protected, ts)

    # -- suppression and thresholds
    def _filter(self, verdicts: list[Verdict], protected: bytes | None, ts: float) -> list[Verdict]:
        kept = []
        for v in verdicts:
            if v.event_type == "alert" and self._suppressed(v.sid, protected):
                self.stats.incr("detect.suppressed", category=v.category)
                continue
            if v.event_type == "alert" and not self._within_threshold(v.sid, protected, ts):
                self.stats.incr("detect.thresholded", category=v.category)
                continue
            kept.append(v)
        return kept

    def _suppressed(self, sid: int, host: bytes | None) -> bool:
        for s_sid, net in self._suppress:
            if s_sid and s_sid != sid:
                continue
            if net is None:
                return True
            if host is not None and ipaddress.ip_address(host) in net:
                return True
        return False

    def _within_threshold(self, sid: int, host: bytes | None, ts: float) -> bool:
        t = self._thresholds.get(sid)
        if t is None:
            return True
        count, seconds = t
        key = (sid, host or b"")
        start, n = self._windows.get(key, (ts, 0))
        if ts - start >= seconds:
            start, n = ts, 0
        if n >= count:
            return False
        if key not in self._windows and len(self._windows) >= MAX_THRESHOLD_KEYS:
            self._windows.clear()  # bounded: forgetting windows only lets a few more alerts through
            self.stats.incr("memcap.hit", cap="detect.thresholds")
        self._windows[key] = (start, n + 1)
        return True


def _direction_label(flow: Flow, direction: int) -> str:
    side = flow.protected_side
    if side == "both":
        return "internal"
    if side is None:
        return "external"
    outbound = TO_SERVER if side == "client" else TO_CLIENT
    return "outbound" if direction == outbound else "inbound"
