"""First-report (第一報) and detail-report (詳細報告) drafts, base 12(1)ア.

"直ちに把握し得る限りの全ての内容を、その後速やかにその詳細を" -- the first report is built the
moment an incident opens, from the alert's EVE record and what the sensor knows of the flow and
its hosts; the detail report adds the timeline of every alert, the evidence hashes and the
state history. Both are a JSON data model (stable English keys, for scripts) rendered to
Markdown through editable templates (``alerts/templates/*.md``, or ``incidents.templates``).

Only the alert's redacted context and identifiers go in: never protected content. A field the
detector found the match in (a mail subject, a URL) is masked.

The template language is deliberately tiny and safe (no attribute access, no code):
``${a.b}`` (Markdown-escaped), ``${a.b|raw}``, ``${a.b|opt}`` (empty stays empty), ``{% for x in a.list %}..{% endfor %}``,
``{% if a.b %}..{% else %}..{% endif %}`` (``if not`` too). Unknown names are errors.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BUILTIN_TEMPLATES = Path(__file__).parent / "templates"
TEMPLATE_KINDS = ("first_report", "detail_report")
MAX_VALUE_CHARS = 400
MAX_FIRST_DETECTIONS = 50


class TemplateError(Exception):
    pass


# ---------------------------------------------------------------- labels


LABELS: dict[str, dict[str, Any]] = {
    "ja": {
        "unknown": "不明",
        "none": "なし",
        "yes": "はい",
        "no": "いいえ",
        "masked": "［検知箇所のためマスク］",
        "status": {"open": "対応中（未確認）", "acked": "確認済み（対応中）", "closed": "終結"},
        "completed": {"true": "完了（転送は最後まで行われた）", "false": "未完了（途中で切断、または欠落あり）",
                      "none": "不明（検知時点で転送中、または転送単位を特定できない）"},
        "action": {"allowed": "検知・記録のみ（leakmon は受動監視のため通信は遮断していない）",
                   "blocked": "遮断", "drop": "遮断", "reject": "遮断"},
        "evidence": {"pending": "記録中（フロー終了時に暗号化して保存）", "stored": "保存済み",
                     "disabled": "保存されていない（証拠の暗号鍵が未設定）", "off": "保存しない設定"},
        "volume": "送信 {out} バイト／受信 {in_} バイト（{pkts} パケット、報告作成時点）",
    },
    "en": {
        "unknown": "unknown",
        "none": "none",
        "yes": "yes",
        "no": "no",
        "masked": "[masked: the match was found here]",
        "status": {"open": "open (not yet acknowledged)", "acked": "acknowledged", "closed": "closed"},
        "completed": {"true": "completed (the transfer ran to its end)", "false": "incomplete (cut off or with gaps)",
                      "none": "unknown (in progress at detection, or no transfer unit identified)"},
        "action": {"allowed": "detected and recorded only (leakmon is passive; the traffic was not blocked)",
                   "blocked": "blocked", "drop": "blocked", "reject": "blocked"},
        "evidence": {"pending": "recording (encrypted and stored when the flow ends)", "stored": "stored",
                     "disabled": "NOT stored (no evidence key configured)", "off": "disabled by configuration"},
        "volume": "{out} bytes sent / {in_} bytes received ({pkts} packets, at the time of this report)",
    },
}


def labels(language: str, templates_dir: str | None = None) -> dict[str, Any]:
    """Built-in labels, overridden key by key by ``labels.<lang>.json`` in the user's folder."""
    out = json.loads(json.dumps(LABELS.get(language, LABELS["en"])))
    if templates_dir:
        p = Path(templates_dir) / f"labels.{language}.json"
        if p.exists():
            try:
                user = json.loads(p.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise TemplateError(f"{p}: not valid JSON: {exc}") from None
            for k, v in user.items():
                if isinstance(v, dict) and isinstance(out.get(k), dict):
                    out[k].update(v)
                else:
                    out[k] = v
    return out


# ---------------------------------------------------------------- formatting helpers


def local_time(ts: float | None) -> str:
    """Sensor-local time with its UTC offset (reports are read by people; EVE stays UTC)."""
    if ts is None:
        return ""
    d = _dt.datetime.fromtimestamp(ts).astimezone()
    return d.strftime("%Y-%m-%d %H:%M:%S.") + f"{d.microsecond // 1000:03d}" + d.strftime(" %z")


def mac_text(mac: bytes | str | None) -> str:
    if not mac:
        return ""
    if isinstance(mac, str):
        return mac
    return ":".join(f"{b:02x}" for b in mac)


def host_names(names: Any, addr: bytes | None) -> list[str]:
    if names is None or addr is None:
        return []
    try:
        if hasattr(names, "sources"):
            src = names.sources(addr)
            return [f"{n} ({s})" for n, s in src.items()]
        return [str(n) for n in names.lookup(addr)]
    except Exception:  # noqa: BLE001 - a name cache must not break a report
        return []


def _masked_fields(where: str) -> set[str]:
    """Fields of the transaction that held the match (masked in reports)."""
    w = where.lower()
    out = set()
    if "subject" in w:
        out.add("subject")
    if any(k in w for k in ("url", "uri", "query", "path")):
        out.add("url")
    if "filename" in w or "file_name" in w:
        out.add("file_name")
    if "host" in w and "header" in w:
        out.add("hostname")
    return out


def transaction(rec: dict[str, Any], masked: set[str], mask: str) -> dict[str, Any]:
    """URL, mail from/to and subject, FTP file name: from the alert's app-layer objects."""
    http = rec.get("http") or {}
    smtp = rec.get("smtp") or {}
    email = rec.get("email") or {}
    ftp = rec.get("ftp") or {}
    ftp_data = rec.get("ftp_data") or {}
    fi = rec.get("fileinfo") or {}
    tx: dict[str, Any] = {
        "method": http.get("http_method", ""),
        "hostname": http.get("hostname", ""),
        "url": http.get("url", ""),
        "user_agent": http.get("http_user_agent", ""),
        "helo": smtp.get("helo", ""),
        "mail_from": smtp.get("mail_from") or email.get("from", ""),
        "rcpt_to": list(smtp.get("rcpt_to") or email.get("to") or []),
        "subject": email.get("subject", ""),
        "ftp_command": ftp.get("command", "") or ftp_data.get("command", ""),
        "ftp_file": ftp_data.get("filename", "") or (ftp.get("command_data", "") if ftp.get("command") in
                                                     ("STOR", "APPE", "STOU", "RETR") else ""),
        "file_name": fi.get("filename", ""),
        "sni": (rec.get("tls") or {}).get("sni", ""),
    }
    for k in masked:
        if tx.get(k):
            tx[k] = mask
    return tx


def detection(rec: dict[str, Any]) -> dict[str, Any]:
    a = rec.get("alert") or {}
    lm = rec.get("leakmon") or {}
    fi = rec.get("fileinfo") or {}
    return {
        "sid": a.get("signature_id"), "rev": a.get("rev"), "signature": a.get("signature", ""),
        "category": a.get("category", ""), "severity": a.get("severity"),
        "marker_id": lm.get("marker_id", ""), "fingerprint_id": lm.get("fingerprint_id", ""),
        "document": lm.get("document", ""), "encoding": lm.get("encoding", ""), "variant": lm.get("variant", ""),
        "where": lm.get("where", ""), "count": lm.get("count", 1), "context": lm.get("context", ""),
        "share": lm.get("share", ""), "direction": rec.get("direction", ""),
        "file_state": fi.get("state", ""), "file_sha256": fi.get("sha256", ""), "file_size": fi.get("size"),
    }


def completed(rec: dict[str, Any]) -> bool | None:
    state = (rec.get("fileinfo") or {}).get("state")
    if state == "CLOSED":
        return True
    if state in ("TRUNCATED", "ERROR"):
        return False
    return None


# ---------------------------------------------------------------- report builders


@dataclass
class HostInfo:
    """A host in a report: address, port, MAC and known names."""

    ip: str
    port: int | None = None
    mac: str = ""
    names: list[str] | None = None


def first_report(*, incident: dict[str, Any], alert: dict[str, Any], host: HostInfo, dest: HostInfo,
                 volume: dict[str, int], evidence: dict[str, Any], reporting: Any, sensor: str,
                 detected_at: float, traffic_ts: tuple[float, float], language: str,
                 lab: dict[str, Any], more_alerts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The 第一報 data model from an incident's first alert (EVE record) and what the sensor knows.

    ``more_alerts``: the incident's other alerts already known when the report is rendered (the
    same packet often raises several: the body and the file inside it); each adds a detection row.
    """
    det = detection(alert)
    dets = [det]
    seen = {(det["sid"], det["where"], det["variant"])}
    for rec in more_alerts or []:
        d = detection(rec)
        k = (d["sid"], d["where"], d["variant"])
        if k not in seen and len(dets) < MAX_FIRST_DETECTIONS:
            seen.add(k)
            dets.append(d)
    tx = transaction(alert, _masked_fields(det["where"]), lab["masked"])
    done = completed(alert)
    action = (alert.get("alert") or {}).get("action", "allowed")
    return {
        "kind": "first_report",
        "language": language,
        "incident_id": incident["id"],
        "status": incident.get("status", "open"),
        "status_text": lab["status"].get(incident.get("status", "open"), incident.get("status", "")),
        "generated_at": local_time(detected_at),
        "detection": {"time": local_time(detected_at), "sensor": sensor},
        "traffic": {"first_seen": local_time(traffic_ts[0]), "last_seen": local_time(traffic_ts[1])},
        "flow": {"flow_id": alert.get("flow_id"), "community_id": alert.get("community_id", "")},
        "host": {"ip": host.ip, "port": host.port, "mac": host.mac, "names": host.names or []},
        "destination": {"ip": dest.ip, "port": dest.port, "mac": dest.mac, "names": dest.names or []},
        "protocol": {"transport": alert.get("proto", ""), "app_proto": alert.get("app_proto", "")},
        "transaction": tx,
        "detections": dets,
        "volume": {**volume, "text": lab["volume"].format(out=volume.get("bytes_out", 0),
                                                          in_=volume.get("bytes_in", 0),
                                                          pkts=volume.get("packets", 0))},
        "transfer": {"completed": done, "file_state": det["file_state"],
                     "text": lab["completed"]["true" if done else "none" if done is None else "false"]},
        "action": {"value": action, "text": lab["action"].get(action, action)},
        "evidence": evidence,
        "reporting": reporting_chain(reporting),
    }


def reporting_chain(reporting: Any) -> dict[str, Any]:
    return {"company": getattr(reporting, "company", ""), "contract": getattr(reporting, "contract", ""),
            "chain": [{"role": c.role, "name": c.name, "organization": c.organization, "phone": c.phone,
                       "email": c.email} for c in getattr(reporting, "chain", [])]}


def detail_report(*, first: dict[str, Any], incident: dict[str, Any], alerts: list[dict[str, Any]],
                  evidence: dict[str, Any], history: list[dict[str, Any]], generated_at: float,
                  language: str, lab: dict[str, Any]) -> dict[str, Any]:
    """The 詳細報告 data model: the first report's facts, every alert in order, evidence, history."""
    timeline = []
    flows: dict[Any, dict[str, Any]] = {}
    for rec in alerts:
        det = detection(rec)
        tx = transaction(rec, _masked_fields(det["where"]), lab["masked"])
        ts = rec.get("_ts")
        timeline.append({**det, "time": local_time(ts) if ts is not None else rec.get("timestamp", ""),
                         "flow_id": rec.get("flow_id"), "src": f"{rec.get('src_ip', '')}:{rec.get('src_port', '')}",
                         "dest": f"{rec.get('dest_ip', '')}:{rec.get('dest_port', '')}",
                         "app_proto": rec.get("app_proto", ""), "file_name": tx["file_name"], "url": tx["url"],
                         "subject": tx["subject"], "ftp_file": tx["ftp_file"]})
        flows.setdefault(rec.get("flow_id"), {"flow_id": rec.get("flow_id"), "community_id": rec.get("community_id", ""),
                                              "app_proto": rec.get("app_proto", ""), "alerts": 0})
        flows[rec.get("flow_id")]["alerts"] += 1
    sids = sorted({t["sid"] for t in timeline if t["sid"] is not None})
    out = dict(first)
    out.update({
        "kind": "detail_report",
        "language": language,
        "status": incident.get("status", ""),
        "status_text": lab["status"].get(incident.get("status", ""), incident.get("status", "")),
        "generated_at": local_time(generated_at),
        "first_report_at": first.get("generated_at", ""),
        "traffic": {"first_seen": local_time(incident.get("first_ts")), "last_seen": local_time(incident.get("last_ts"))},
        "alert_count": len(timeline),
        "sids": sids,
        "flows": list(flows.values()),
        "timeline": timeline,
        "evidence": evidence,
        "history": [{**h, "time": local_time(h.get("ts"))} for h in history],
    })
    return out


# ---------------------------------------------------------------- template engine


_TAG = re.compile(r"\{%\s*(.*?)\s*%\}")
_VAR = re.compile(r"\$\{([A-Za-z_][\w.]*)(?:\|(raw|json|opt))?\}")
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#])")


@dataclass
class _Node:
    """A node of a parsed report template."""

    kind: str  # text | for | if
    text: str = ""
    var: str = ""
    path: str = ""
    neg: bool = False
    body: list[_Node] | None = None
    other: list[_Node] | None = None


def parse_template(src: str, name: str = "template") -> list[_Node]:
    pos = 0
    root: list[_Node] = []
    stack: list[tuple[_Node, list[_Node]]] = []
    cur = root
    for m in _TAG.finditer(src):
        if m.start() > pos:
            cur.append(_Node("text", text=src[pos:m.start()]))
        pos = m.end()
        tag = m.group(1)
        line = src.count("\n", 0, m.start()) + 1
        fm = re.fullmatch(r"for\s+(\w+)\s+in\s+([\w.]+)", tag)
        im = re.fullmatch(r"if\s+(not\s+)?([\w.]+)", tag)
        if fm:
            node = _Node("for", var=fm.group(1), path=fm.group(2), body=[])
            cur.append(node)
            stack.append((node, cur))
            cur = node.body  # type: ignore[assignment]
        elif im:
            node = _Node("if", neg=bool(im.group(1)), path=im.group(2), body=[], other=[])
            cur.append(node)
            stack.append((node, cur))
            cur = node.body  # type: ignore[assignment]
        elif tag == "else":
            if not stack or stack[-1][0].kind != "if":
                raise TemplateError(f"{name}:{line}: else without if")
            cur = stack[-1][0].other  # type: ignore[assignment]
        elif tag in ("endfor", "endif"):
            if not stack or stack[-1][0].kind != tag[3:]:
                raise TemplateError(f"{name}:{line}: {tag} does not close an open {tag[3:]}")
            _, cur = stack.pop()
        else:
            raise TemplateError(f"{name}:{line}: unknown tag {{% {tag} %}}")
    if stack:
        raise TemplateError(f"{name}: {{% {stack[-1][0].kind} %}} is never closed")
    if pos < len(src):
        cur.append(_Node("text", text=src[pos:]))
    return root


class _Missing(Exception):
    pass


def _lookup(ctx: list[dict[str, Any]], path: str) -> Any:
    parts = path.split(".")
    for scope in reversed(ctx):
        if parts[0] in scope:
            v = scope[parts[0]]
            break
    else:
        raise _Missing(path)
    for p in parts[1:]:
        if isinstance(v, dict) and p in v:
            v = v[p]
        else:
            raise _Missing(path)
    return v


def _text(v: Any, lab: dict[str, Any]) -> str:
    if v is None or v == "" or v == []:
        return str(lab.get("unknown", ""))
    if isinstance(v, bool):
        return str(lab["yes"] if v else lab["no"])
    if isinstance(v, list):
        return ", ".join(_text(x, lab) for x in v)
    if isinstance(v, dict):
        return json.dumps(v, ensure_ascii=False, sort_keys=True)
    return str(v)


def md_escape(s: str) -> str:
    """Untrusted text (host names, URLs, subjects) made inert in Markdown and kept on one line."""
    s = "".join(ch if ch >= " " or ch == "\t" else " " for ch in s.replace("\r", " ").replace("\n", " "))
    if len(s) > MAX_VALUE_CHARS:
        s = s[:MAX_VALUE_CHARS] + "…"
    return _MD_SPECIAL.sub(r"\\\1", s)


def _render(nodes: list[_Node], ctx: list[dict[str, Any]], lab: dict[str, Any], out: list[str], name: str) -> None:
    for n in nodes:
        if n.kind == "text":
            def sub(m: re.Match[str]) -> str:
                try:
                    v = _lookup(ctx, m.group(1))
                except _Missing:
                    raise TemplateError(f"{name}: unknown name ${{{m.group(1)}}}") from None
                if m.group(2) == "json":
                    return json.dumps(v, ensure_ascii=False)
                t = "" if m.group(2) == "opt" and v in (None, "", []) else _text(v, lab)
                return t if m.group(2) == "raw" else md_escape(t)
            out.append(_VAR.sub(sub, n.text))
        elif n.kind == "for":
            try:
                seq = _lookup(ctx, n.path)
            except _Missing:
                raise TemplateError(f"{name}: unknown list {n.path}") from None
            for item in seq or []:
                _render(n.body or [], ctx + [{n.var: item}], lab, out, name)
        else:
            try:
                v = _lookup(ctx, n.path)
            except _Missing:
                raise TemplateError(f"{name}: unknown name {n.path} in if") from None
            truth = bool(v) and v != [] and v != ""
            _render((n.body if truth != n.neg else n.other) or [], ctx, lab, out, name)


class Renderer:
    """Renders report data models with the built-in or the user's templates (validated at start)."""

    def __init__(self, templates_dir: str = "", language: str = "ja") -> None:
        self.language = language
        self.templates_dir = templates_dir or ""
        self.labels = labels(language, self.templates_dir or None)
        self._templates: dict[str, tuple[str, list[_Node]]] = {}
        for kind in TEMPLATE_KINDS:
            path = self._find(kind)
            src = path.read_text(encoding="utf-8")
            self._templates[kind] = (str(path), parse_template(src, str(path)))

    def _find(self, kind: str) -> Path:
        fname = f"{kind}.{self.language}.md"
        if self.templates_dir:
            p = Path(self.templates_dir) / fname
            if p.exists():
                return p
        p = BUILTIN_TEMPLATES / fname
        if not p.exists():
            raise TemplateError(f"no template {fname}")
        return p

    def markdown(self, report: dict[str, Any]) -> str:
        name, nodes = self._templates[report["kind"]]
        out: list[str] = []
        _render(nodes, [report], self.labels, out, name)
        return "".join(out)

    @staticmethod
    def json(report: dict[str, Any]) -> str:
        return json.dumps(report, ensure_ascii=False, indent=2, sort_keys=True) + "\n"

    def validate(self) -> None:
        """Render both templates against a sample report: a user's typo fails at startup, not mid-incident."""
        sample = sample_reports(self.language, self.labels)
        for rep in sample:
            self.markdown(rep)


def sample_reports(language: str, lab: dict[str, Any]) -> list[dict[str, Any]]:
    class _R:
        company, contract = "Example Co.", "C-1"
        chain: list[Any] = []
    rec = {"flow_id": 1, "proto": "TCP", "app_proto": "http", "src_ip": "10.0.0.1", "src_port": 1, "dest_ip": "192.0.2.1",
           "dest_port": 80, "alert": {"signature_id": 1, "signature": "s", "action": "allowed"},
           "leakmon": {"where": "http.request.body"}, "fileinfo": {"state": "CLOSED"}, "_ts": 0.0}
    inc = {"id": "INC-0", "status": "open", "first_ts": 0.0, "last_ts": 0.0}
    ev = {"status": "pending", "text": "", "items": [], "encryption": "AES-256-GCM"}
    first = first_report(incident=inc, alert=rec, host=HostInfo("10.0.0.1"), dest=HostInfo("192.0.2.1"),
                         volume={"bytes_out": 0, "bytes_in": 0, "packets": 0}, evidence=ev, reporting=_R(),
                         sensor="s", detected_at=0.0, traffic_ts=(0.0, 0.0), language=language, lab=lab)
    detail = detail_report(first=first, incident=inc, alerts=[rec], evidence=ev, history=[], generated_at=0.0,
                           language=language, lab=lab)
    return [first, detail]


def write_report_files(directory: str, report: dict[str, Any], renderer: Renderer) -> list[str]:
    """``<kind>.<lang>.md`` and ``<kind>.json`` in ``directory`` (mode 0600, atomic)."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    written = []
    for fname, text in ((f"{report['kind']}.{renderer.language}.md", renderer.markdown(report)),
                        (f"{report['kind']}.json", renderer.json(report))):
        path = os.path.join(directory, fname)
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, text.encode("utf-8"))
        finally:
            os.close(fd)
        os.replace(tmp, path)
        written.append(path)
    return written
