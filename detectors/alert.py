"""The EVE ``alert`` (and informational ``finding``) event, and the redacted match context.

Suricata-compatible ``alert`` object (action, gid, signature_id, rev, signature, category,
severity, metadata) so Filebeat's suricata module and EveBox read it, the app-layer object of
the transaction, ``fileinfo`` when a file matched, and a ``leakmon`` object with what matched,
where, in which direction and a *redacted* context: the marker is replaced by ■ (one per
character) and every letter or digit around it by ○; only punctuation, symbols and spaces of
the neighbourhood survive, which shows the structure (``<○:○>■■■■■■■ ○○○</○:○>``) without
repeating protected content into the alert stream.
"""

from __future__ import annotations

import binascii
from typing import Any

from detectors.policy import Finding, Verdict
from detectors.variants import codec_of
from monitor.events import Event

MARKER_MASK = "■"
TEXT_MASK = "○"
_BYTES_PER_CHAR = 4
_ESC = 0x1B
_JIS_IN = b"\x1b$B"  # into JIS X 0208
_JIS_OUT = b"\x1b(B"  # back to ASCII
_APP_KEYS = ("http", "smtp", "email", "ftp", "ftp_data", "tls", "dns")


def mask_text(s: str) -> str:
    out = []
    for ch in s:
        if ch.isalnum():
            out.append(TEXT_MASK)
        elif ch.isspace():
            out.append(" ")
        elif ch == "\ufffd" or not ch.isprintable():
            continue
        else:
            out.append(ch)
    return "".join(out)


def redacted_context(buf: bytes, start: int, end: int, variant: str, marker_chars: int, context_chars: int) -> str:
    """Masked neighbourhood of ``buf[start:end]`` (offsets into ``buf``; clipped to it)."""
    start = max(0, min(start, len(buf)))
    end = max(start, min(end, len(buf)))
    codec = codec_of(variant)
    if marker_chars <= 0:
        marker_chars = len(buf[start:end].decode(codec, errors="replace"))
    if context_chars <= 0:
        return MARKER_MASK * marker_chars
    span = context_chars * _BYTES_PER_CHAR
    lo = max(0, start - span)
    family = variant.split("/", 2)
    if family[0] == "iso-2022-jp" or family[:2] == ["qp", "iso-2022-jp"]:
        before_raw, after_raw = buf[lo:start], buf[end:end + span]
        if family[0] == "qp":
            # QP of JIS text keeps the JIS bytes (printable ASCII) as they are: decode the QP first.
            before_raw = binascii.a2b_qp(before_raw)
            after_raw = binascii.a2b_qp(after_raw)
        before, after = _jis_before(before_raw), _jis_after(after_raw)
    else:
        if codec.startswith("utf-16") and (start - lo) % 2:
            lo += 1
        before = buf[lo:start].decode(codec, errors="replace")
        after = buf[end:end + span].decode(codec, errors="replace")
    return mask_text(before[-context_chars:]) + MARKER_MASK * marker_chars + mask_text(after[:context_chars])


def _jis_before(raw: bytes) -> str:
    """Text before an ISO-2022-JP match. The match is JIS X 0208 (or starts with its ESC $ B),
    so the bytes just before it are two-byte JIS unless an escape sequence in between says
    otherwise; decoded as ASCII they would show the neighbouring kanji as punctuation-looking
    byte pairs. Where the mode is unknown they are read as JIS: ASCII misread as JIS becomes
    kanji or nothing, which is masked either way."""
    esc = raw.find(b"\x1b")
    if esc < 0:
        head, rest = raw, b""
    else:
        head, rest = raw[:esc], raw[esc:]
        if rest.startswith(b"\x1b$"):
            # The first escape switches *into* JIS: what precedes it was single-byte.
            return head.decode("ascii", errors="replace") + rest.decode("iso2022_jp", errors="replace")
    if len(head) % 2:
        head = head[1:]  # pairs are counted back from the escape (or from the match)
    return (_JIS_IN + head + _JIS_OUT + rest).decode("iso2022_jp", errors="replace")


def _jis_after(raw: bytes) -> str:
    """Text after an ISO-2022-JP match: still JIS X 0208 until an escape sequence."""
    if len(raw) % 2 and b"\x1b" not in raw:
        raw = raw[:-1]
    return (_JIS_IN + raw).decode("iso2022_jp", errors="replace")


def build_event(v: Verdict, f: Finding, signatures_version: str) -> Event:
    flow = f.flow
    body: dict[str, Any] = {}
    if v.event_type == "alert":
        body["alert"] = {
            "action": "allowed",  # passive sensor: nothing is blocked
            "gid": 1,
            "signature_id": v.sid,
            "rev": v.rev,
            "signature": v.msg,
            "category": v.category,
            "severity": v.severity,
            "metadata": v.metadata,
        }
    else:
        body["finding"] = {
            "signature_id": v.sid,
            "signature": v.msg,
            "category": v.category,
        }
    body.update(_app_objects(f))
    if f.file is not None:
        body["fileinfo"] = f.file.fileinfo()
    lm: dict[str, Any] = {"kind": f.kind}
    rule = f.rule
    if f.kind == "marker" and rule is not None:
        lm["marker_id"] = rule.sid
    elif f.kind in ("fingerprint", "partial") and rule is not None:
        lm["fingerprint_id"] = rule.sid
    if rule is not None and v.sid != rule.sid:
        lm["rule_sid"] = rule.sid
    if f.variant:
        lm["variant"] = f.variant
    lm["where"] = f.where
    lm["direction"] = v.direction_label
    who = v.parties
    if who.protected_host:
        lm["protected_host"] = who.protected_host
    if who.destination:
        lm["destination"] = who.destination
    if who.destination_names:
        lm["destination_names"] = who.destination_names
    lm["approved_destination"] = who.approved
    lm["match_count"] = f.count
    if f.context:
        lm["context"] = f.context
    lm.update(f.details)
    lm["signatures_version"] = signatures_version
    body["leakmon"] = lm
    extra: dict[str, Any] = {}
    if f.file is not None:
        extra["file"] = f.file
    return Event(v.event_type, f.ts, body, flow, direction=f.direction, pcap_cnt=f.pcap_cnt, tx_id=f.tx_id,
                 extra=extra)


def _app_objects(f: Finding) -> dict[str, Any]:
    """The transaction's app-layer object(s) (``{"http": {...}}``) from what the parser recorded."""
    out: dict[str, Any] = {}
    txs = f.flow.metadata.get("tx") if f.flow is not None else None
    if f.tx_id is not None and txs:
        tx = txs.get(f.tx_id)
        if isinstance(tx, dict):
            out.update({k: v for k, v in tx.items() if k in _APP_KEYS})
    if not out and f.file is not None and f.file.app:
        out.update({k: v for k, v in f.file.app.items() if k in _APP_KEYS})
    if not out and f.kind == "tls":
        tls = f.flow.metadata.get("tls")
        if isinstance(tls, dict):
            out["tls"] = {k: tls[k] for k in ("version", "sni", "subject", "issuerdn", "ja3", "ja3s")
                          if k in tls and tls[k] is not None}
    return out
