"""``leakmon flow CAPTURE FLOW -c CONFIG [--dissect] [--json]``: one flow's evidence, from an alert in one step.

The capture is replayed through a full :class:`~monitor.pipeline.Pipeline` (same decoders,
signatures and policy as the sensor) with an in-memory sink instead of the EVE file; only the
events of the requested flow are kept and printed: its flow record, transactions (http, smtp,
email, ftp, ftp_data, tls, dns), files (name, size, SHA-256, state, where), alerts and findings
(sid, message, variant, where, redacted context) and anomalies. Nothing is written to disk.

Which flow: ``FLOW`` is a flow id, a Community ID (``1:...``) or endpoints
(``10.77.0.1:41626-10.77.0.2:8080``, IPv6 in brackets). Flow ids are not stable across runs (each
pipeline salts them), so an id taken from an alert is first looked up in the EVE log the config
names (``outputs.eve.path``): that record gives the flow's Community ID and start, which identify
it in this replay. Several flows with one Community ID (port reuse) are told apart by the start
time closest to the alert's.

With ``--dissect``, tshark's own dissection of the same packets follows (selected by the flow's
addresses and ports): a one-line summary per packet and the application-layer detail
(``-O http,smtp,imf,ftp,ftp-data,tls,dns,...``), capped at :data:`MAX_DETAIL_LINES` lines.
The output is for an analyst's terminal: like EVE alerts it may show file names; the redacted
context never shows the matched text, but tshark's detail shows the packets as they are.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

from alerts.eve import eve_record, format_ts
from monitor.config import Config, load_config
from monitor.events import Event
from monitor.flow.community_id import flow_community_id
from monitor.model import Flow

APP_EVENTS = ("http", "smtp", "ftp", "ftp_data", "tls", "dns")
MAX_FLOW_EVENTS = 20_000  # events kept for the chosen flow (a long-lived flow must not exhaust memory)
MAX_INDEX = 50  # other flows listed when the requested one is not in the capture
MAX_DETAIL_LINES = 400
MAX_LINE = 240
TSHARK_TIMEOUT = 120
TSHARK_DETAIL_PROTOCOLS = "http,mime_multipart,urlencoded-form,json,smtp,imf,ftp,ftp-data,tls,dns"


class FlowNotFound(Exception):
    pass


@dataclass(frozen=True)
class FlowSelector:
    """What the analyst asked for; ``flow_id`` and ``community_id`` may both be set (EVE lookup)."""

    flow_id: int | None = None
    community_id: str | None = None
    endpoints: frozenset[tuple[str, int]] | None = None
    near_ts: float | None = None  # start time of the flow according to the EVE log
    eve_source: str | None = None

    def matches(self, flow: Flow) -> bool:
        if self.flow_id is not None and flow.flow_id == self.flow_id:
            return True
        if self.community_id is not None:
            if not flow.community_id:  # computed lazily, on the flow's first EVE record
                flow.community_id = flow_community_id(flow)
            if flow.community_id == self.community_id:
                return True
        if self.endpoints is not None:
            src, sport, dst, dport = flow.endpoints(0)
            return frozenset({(src, sport), (dst, dport)}) == self.endpoints
        return False


def parse_selector(text: str | int) -> FlowSelector:
    """``123`` | ``1:base64=`` | ``A:port-B:port`` (``[v6]:port``)."""
    if isinstance(text, int):
        return FlowSelector(flow_id=text)
    s = text.strip()
    if s.isdigit():
        return FlowSelector(flow_id=int(s))
    if s.startswith("1:"):
        return FlowSelector(community_id=s)
    parts = s.replace(" ", "-").split("-")
    if len(parts) == 2:
        try:
            return FlowSelector(endpoints=frozenset(_endpoint(p) for p in parts))
        except ValueError:
            pass
    raise ValueError(f"not a flow id, Community ID (1:...) or endpoints (A:port-B:port): {text!r}")


def _endpoint(text: str) -> tuple[str, int]:
    if text.startswith("["):
        host, _, port = text[1:].partition("]:")
    else:
        host, _, port = text.rpartition(":")
    return str(ipaddress.ip_address(host)), int(port)


def eve_lookup(path: str, flow_id: int) -> dict[str, Any] | None:
    """The first EVE record of ``flow_id`` in ``path`` (a cheap substring test before parsing)."""
    needle = f'"flow_id":{flow_id},'
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if needle in line:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue
                    if rec.get("flow_id") == flow_id:
                        return rec
    except OSError:
        return None
    return None


def _parse_ts(text: str | None) -> float | None:
    import datetime as dt

    if not text:
        return None
    try:
        return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
    except (TypeError, ValueError):
        return None


def resolve_selector(sel: FlowSelector, cfg: Config) -> FlowSelector:
    """An id from an alert: add the Community ID and time its EVE record gives."""
    if sel.flow_id is None:
        return sel
    path = cfg.resolve(cfg.outputs.eve.path) if cfg.outputs.eve.path not in ("", "-") else ""
    rec = eve_lookup(path, sel.flow_id) if path else None
    if rec is None or not rec.get("community_id"):
        return sel
    start = (rec.get("flow") or {}).get("start") or rec.get("timestamp")
    return FlowSelector(flow_id=sel.flow_id, community_id=rec["community_id"], near_ts=_parse_ts(start),
                        eve_source=path)


# ------------------------------------------------------------------ replay


@dataclass
class FlowReport:
    flow_id: int
    header: dict[str, Any]
    flow: dict[str, Any] | None
    transactions: list[dict[str, Any]] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    anomalies: list[dict[str, Any]] = field(default_factory=list)
    matched_by: str = ""
    requested: int | None = None  # the flow id asked for, when it differs from this replay's
    also_matching: list[int] = field(default_factory=list)
    events_dropped: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"flow_id": self.flow_id, "requested_flow_id": self.requested, "matched_by": self.matched_by,
                "also_matching": self.also_matching,
                **{k: self.header[k] for k in _HEADER_KEYS if k in self.header},
                "flow": self.flow, "transactions": self.transactions, "files": [file_summary(f) for f in self.files],
                "alerts": [alert_summary(a) for a in self.alerts], "anomalies": self.anomalies,
                "events_dropped": self.events_dropped}


_HEADER_KEYS = ("community_id", "src_ip", "src_port", "dest_ip", "dest_port", "proto", "app_proto")


class _Collector:
    """The in-memory sink: EVE records of the matching flows, a short index of the others."""

    def __init__(self, sel: FlowSelector, sensor: str) -> None:
        self.sel = sel
        self.sensor = sensor
        self.by_flow: dict[int, list[dict[str, Any]]] = {}
        self.starts: dict[int, float] = {}
        self.dropped: dict[int, int] = {}
        self.index: list[dict[str, Any]] = []
        self.flows_seen = 0

    def __call__(self, ev: Event) -> None:
        flow = ev.flow
        if flow is None:
            return
        if ev.event_type == "flow":
            self.flows_seen += 1
            if len(self.index) < MAX_INDEX:
                rec = eve_record(ev)
                self.index.append({k: rec.get(k) for k in ("flow_id", *_HEADER_KEYS)})
        if not self.sel.matches(flow):
            return
        events = self.by_flow.setdefault(flow.flow_id, [])
        self.starts.setdefault(flow.flow_id, flow.start_ts)
        if len(events) >= MAX_FLOW_EVENTS:
            self.dropped[flow.flow_id] = self.dropped.get(flow.flow_id, 0) + 1
            return
        events.append(eve_record(ev, self.sensor))


def collect_flow(cfg: Config, capture: str, sel: FlowSelector) -> FlowReport:
    from monitor.capture.pcapfile import read_capture
    from monitor.pipeline import Pipeline

    pipeline = Pipeline(cfg, eve_path="", replay=True, evidence=False)
    collector = _Collector(sel, cfg.sensor.name)
    pipeline.bus.subscribe("investigate", collector)
    for raw in read_capture(capture, stats=pipeline.stats, bpf=cfg.capture.bpf):
        pipeline.process(raw)
    pipeline.finish("shutdown")
    if not collector.by_flow:
        raise FlowNotFound(_not_found_message(sel, capture, collector))
    return _report(sel, collector)


def _not_found_message(sel: FlowSelector, capture: str, c: _Collector) -> str:
    lines = [f"no flow matching {_describe(sel)} in {capture} ({c.flows_seen} flows)"]
    if sel.flow_id is not None and sel.community_id is None:
        lines.append("  flow ids change from run to run; give the Community ID or the endpoints from the alert, "
                     "or keep the EVE log the config names (outputs.eve.path) so the id can be looked up")
    for f in c.index:
        lines.append(f"  {f['flow_id']}  {f.get('community_id', '')}  {f.get('proto')} "
                     f"{_addr(f.get('src_ip'), f.get('src_port'))} -> {_addr(f.get('dest_ip'), f.get('dest_port'))}"
                     f"  {f.get('app_proto') or ''}")
    if c.flows_seen > len(c.index):
        lines.append(f"  ... {c.flows_seen - len(c.index)} more")
    return "\n".join(lines)


def _describe(sel: FlowSelector) -> str:
    parts = []
    if sel.flow_id is not None:
        parts.append(f"flow_id {sel.flow_id}")
    if sel.community_id:
        parts.append(f"community_id {sel.community_id}" + (f" (from {sel.eve_source})" if sel.eve_source else ""))
    if sel.endpoints:
        parts.append("endpoints " + " ".join(sorted(_addr(h, p) for h, p in sel.endpoints)))
    return ", ".join(parts)


def _report(sel: FlowSelector, c: _Collector) -> FlowReport:
    ids = list(c.by_flow)
    if sel.flow_id is not None and sel.flow_id in c.by_flow:
        chosen, how = sel.flow_id, "flow_id"
    elif sel.community_id is not None and sel.near_ts is not None:
        near = sel.near_ts
        chosen = min(ids, key=lambda i: abs(c.starts[i] - near))
        how = "community_id (from the EVE log)" if sel.eve_source else "community_id"
    else:
        chosen = ids[0]
        how = "community_id" if sel.community_id else "endpoints"
    events = c.by_flow[chosen]
    flow_rec = next((e for e in reversed(events) if e["event_type"] == "flow"), None)
    header = flow_rec or events[0]
    requested = sel.flow_id if sel.flow_id is not None and sel.flow_id != chosen else None
    report = FlowReport(chosen, header, flow_rec["flow"] if flow_rec else None, matched_by=how, requested=requested,
                        also_matching=[i for i in ids if i != chosen], events_dropped=c.dropped.get(chosen, 0))
    for e in events:
        t = e["event_type"]
        if t in APP_EVENTS:
            report.transactions.append(e)
        elif t == "fileinfo":
            report.files.append(e)
        elif t in ("alert", "finding"):
            report.alerts.append(e)
        elif t == "anomaly":
            report.anomalies.append({k: e.get(k) for k in ("timestamp", "direction", "anomaly")})
    return report


# ------------------------------------------------------------------ summaries


def file_summary(rec: dict[str, Any]) -> dict[str, Any]:
    fi = rec.get("fileinfo", {})
    out = {k: fi[k] for k in ("file_id", "filename", "size", "sha256", "state", "magic", "declared_type",
                              "parent_file_id", "encrypted") if k in fi}
    out["where"] = fi.get("source", "")
    out["direction"] = rec.get("direction")
    return out


def alert_summary(rec: dict[str, Any]) -> dict[str, Any]:
    body = rec.get("alert") or rec.get("finding") or {}
    lm = rec.get("leakmon", {})
    out: dict[str, Any] = {"event_type": rec["event_type"], "timestamp": rec.get("timestamp"),
                           "sid": body.get("signature_id"), "msg": body.get("signature"),
                           "category": body.get("category"), "severity": body.get("severity")}
    for k in ("kind", "variant", "where", "direction", "match_count", "context", "document", "shared_chars",
              "sha256", "fingerprint_name", "approved_destination", "rule_sid", "tls"):
        if k in lm:
            out[k] = lm[k]
    fi = rec.get("fileinfo")
    if fi:
        out["file"] = {"file_id": fi.get("file_id"), "filename": fi.get("filename")}
    return out


def transaction_line(rec: dict[str, Any]) -> str:
    t = rec["event_type"]
    o = rec.get(t, {})
    if t == "http":
        s = f"{o.get('http_method', '?')} {o.get('hostname', '')}{o.get('url', '')} -> {o.get('status', '-')}"
        if o.get("http_user_agent"):
            s += f"  ua={o['http_user_agent']}"
        return s
    if t == "smtp":
        s = f"helo={o.get('helo', '')} from={o.get('mail_from', '')} to={','.join(o.get('rcpt_to', []))}"
        em = rec.get("email")
        if em:
            s += f"  subject={em.get('subject', '')!r} attachments={em.get('attachment', [])}"
        return s
    if t == "ftp":
        reply = " ".join(o.get("completion_code", []))
        return f"{o.get('command', '?')} {o.get('command_data', '')}  -> {reply}".rstrip()
    if t == "ftp_data":
        return f"{o.get('command', '?')} {o.get('filename', '')}"
    if t == "tls":
        return f"{o.get('version', '?')} {o.get('cipher_suite', '')} sni={o.get('sni', '')} subject={o.get('subject', '')}"
    if t == "dns":
        return f"{o.get('type', '')} {o.get('rrname', '')} {o.get('rrtype', '')} {o.get('rcode', '')}".strip()
    return json.dumps(o, ensure_ascii=False)[:MAX_LINE]


def _addr(ip: Any, port: Any) -> str:
    ip = str(ip)
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def render_text(r: FlowReport) -> str:
    h = r.header
    out = [f"flow {r.flow_id}  {h.get('proto', '')} {_addr(h.get('src_ip'), h.get('src_port'))} -> "
           f"{_addr(h.get('dest_ip'), h.get('dest_port'))}  app_proto={h.get('app_proto', '-')}",
           f"  community_id {h.get('community_id', '-')}  (matched by {r.matched_by})"]
    if r.requested is not None:
        out.append(f"  flow {r.requested} in the EVE log is flow {r.flow_id} in this replay (ids are salted per run)")
    if r.also_matching:
        out.append(f"  also matching: {', '.join(map(str, r.also_matching))}")
    if r.flow:
        f = r.flow
        out.append(f"  {f.get('start')} .. {f.get('end')}  pkts {f.get('pkts_toserver')}/{f.get('pkts_toclient')}  "
                   f"bytes {f.get('bytes_toserver')}/{f.get('bytes_toclient')}  state {f.get('state')}  "
                   f"protected_side {f.get('protected_side')}  gaps {f.get('gaps')}  alerted {f.get('alerted')}")
    out.append(f"\ntransactions ({len(r.transactions)})")
    for t in r.transactions:
        tx = f"tx {t['tx_id']}" if "tx_id" in t else "    "
        out.append(f"  [{tx}] {t['event_type']:8} {transaction_line(t)}")
    out.append(f"\nfiles ({len(r.files)})")
    for rec in r.files:
        f = file_summary(rec)
        out.append(f"  #{f.get('file_id')} {f.get('filename', '')!r}  {f.get('size')} B  {f.get('state')}  "
                   f"sha256 {f.get('sha256', '-')}")
        out.append(f"      where {f['where']}  ({f.get('direction')}, {f.get('magic') or f.get('declared_type') or '?'})")
    out.append(f"\nalerts and findings ({len(r.alerts)})")
    for rec in r.alerts:
        a = alert_summary(rec)
        label = "alert" if a["event_type"] == "alert" else "finding"
        out.append(f"  {label} sid {a['sid']} [{a.get('category')}] sev {a.get('severity')}  {a.get('msg')}")
        detail = [f"kind {a.get('kind')}"]
        for k in ("variant", "match_count", "document", "shared_chars", "fingerprint_name", "sha256"):
            if a.get(k) is not None:
                detail.append(f"{k} {a[k]}")
        if a.get("file"):
            detail.append(f"file #{a['file']['file_id']} {a['file']['filename']!r}")
        out.append("      " + "  ".join(detail))
        out.append(f"      where {a.get('where')}")
        if a.get("context"):
            out.append(f"      context {a['context']}")
    if r.anomalies:
        out.append(f"\nanomalies ({len(r.anomalies)})")
        for an in r.anomalies:
            ev = an.get("anomaly") or {}
            out.append(f"  {ev.get('event')} {ev.get('detail', '')}".rstrip())
    if r.events_dropped:
        out.append(f"\n({r.events_dropped} further events of this flow not kept)")
    return "\n".join(out)


# ------------------------------------------------------------------ tshark dissection


def display_filter(header: dict[str, Any]) -> str:
    """tshark display filter selecting exactly this flow's packets (both directions)."""
    proto = str(header.get("proto", "TCP")).lower()
    l4 = "udp" if proto == "udp" else "tcp"
    src, dst = str(header["src_ip"]), str(header["dest_ip"])
    ipf = "ipv6" if ":" in src else "ip"
    sp, dp = header["src_port"], header["dest_port"]
    one = f"{ipf}.src=={src} && {l4}.srcport=={sp} && {ipf}.dst=={dst} && {l4}.dstport=={dp}"
    two = f"{ipf}.src=={dst} && {l4}.srcport=={dp} && {ipf}.dst=={src} && {l4}.dstport=={sp}"
    return f"({one}) || ({two})"


def _tshark(argv: list[str]) -> tuple[str, str | None]:
    try:
        p = subprocess.run(["tshark", "-n", *argv], capture_output=True, text=True, errors="replace",
                           timeout=TSHARK_TIMEOUT)
    except subprocess.TimeoutExpired:
        return "", f"tshark timed out after {TSHARK_TIMEOUT}s"
    except OSError as exc:
        return "", f"tshark failed: {exc}"
    if p.returncode != 0:
        return p.stdout, (p.stderr.strip().splitlines() or ["tshark failed"])[-1]
    return p.stdout, None


def dissect(capture: str, header: dict[str, Any]) -> dict[str, Any]:
    """tshark's summary and application-layer detail of the flow's packets."""
    if shutil.which("tshark") is None:
        return {"error": "tshark not installed"}
    filt = display_filter(header)
    fields = ["frame.number", "frame.time_epoch", "_ws.col.Source", "_ws.col.Destination", "frame.len",
              "_ws.col.Protocol", "tcp.stream", "_ws.col.Info"]
    argv = ["-r", capture, "-Y", filt, "-T", "fields", "-E", "separator=\t", "-E", "occurrence=f"]
    for f in fields:
        argv += ["-e", f]
    text, err = _tshark(argv)
    out: dict[str, Any] = {"filter": filt, "packets": []}
    if err:
        out["error"] = err
    for line in text.splitlines():
        cols = line.split("\t")
        if len(cols) < len(fields):
            continue
        num, ts, src, dst, length, proto, stream, info = cols[:8]
        out["packets"].append({"frame": int(num), "time": float(ts or 0), "src": src, "dst": dst,
                               "len": int(length or 0), "protocol": proto, "info": info[:MAX_LINE],
                               **({"tcp_stream": int(stream)} if stream else {})})
    streams = {p["tcp_stream"] for p in out["packets"] if "tcp_stream" in p}
    if len(streams) == 1:
        out["tcp_stream"] = streams.pop()
    detail, err = _tshark(["-r", capture, "-Y", filt, "-O", TSHARK_DETAIL_PROTOCOLS])
    lines = detail.splitlines()
    out["detail"] = [ln[:MAX_LINE] for ln in lines[:MAX_DETAIL_LINES]]
    out["detail_truncated"] = max(0, len(lines) - MAX_DETAIL_LINES)
    if err and "error" not in out:
        out["error"] = err
    return out


def render_dissection(d: dict[str, Any]) -> str:
    out = [f"\ntshark dissection  (-Y {d.get('filter', '')})"]
    if "tcp_stream" in d:
        out.append(f"  tcp.stream == {d['tcp_stream']}  (follow: tshark -r CAPTURE -qz follow,tcp,ascii,{d['tcp_stream']})")
    if d.get("error"):
        out.append(f"  error: {d['error']}")
    for p in d.get("packets", []):
        out.append(f"  {p['frame']:>6} {format_ts(p['time'])}  {p['src']} -> {p['dst']}  {p['protocol']:<6} "
                   f"{p['len']:>5}  {p['info']}")
    if d.get("detail"):
        out.append("\n  application layer (tshark -O):")
        out.extend("  " + ln for ln in d["detail"])
        if d.get("detail_truncated"):
            out.append(f"  ... {d['detail_truncated']} more lines")
    return "\n".join(out)


# ------------------------------------------------------------------ command


def show_flow(args: argparse.Namespace) -> int:
    """``leakmon flow``: 0 printed, 1 flow not in the capture, 2 bad flow argument."""
    cfg = load_config(args.config)
    try:
        sel = parse_selector(args.flow_id)
    except ValueError as exc:
        print(f"leakmon flow: {exc}", file=sys.stderr)
        return 2
    sel = resolve_selector(sel, cfg)
    try:
        report = collect_flow(cfg, args.capture, sel)
    except FlowNotFound as exc:
        print(f"leakmon flow: {exc}", file=sys.stderr)
        return 1
    dissection = dissect(args.capture, report.header) if getattr(args, "dissect", False) else None
    if getattr(args, "json", False):
        doc = report.to_json()
        if dissection is not None:
            doc["dissection"] = dissection
        print(json.dumps(doc, ensure_ascii=False, indent=2, default=str))
    else:
        text = render_text(report)
        if dissection is not None:
            text += "\n" + render_dissection(dissection)
        print(text)
    return 0
