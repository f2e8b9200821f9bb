"""CLI: ``leakmon incidents|evidence|audit ...`` (registered into the main argparse CLI).

    leakmon incidents list [--status S] [--since 24h|ISO] [--host IP] [--sid N] [--json]
    leakmon incidents show INCIDENT [--json] [--report first|detail]
    leakmon incidents ack|close INCIDENT [--by NAME] [--note TEXT]
    leakmon incidents export INCIDENT [--out DIR]
    leakmon evidence export INCIDENT --out DIR [--reencrypt-key FILE]
    leakmon evidence verify DIR [--key FILE]
    leakmon audit verify [--log PATH] [--key FILE]

Every subcommand takes ``-c CONFIG``. Exit codes: 0 ok, 1 not found / verification failed,
2 configuration error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from monitor.config import Config, load_config
from monitor.errors import ConfigError

DEFAULT_CONFIG = os.environ.get("LEAKMON_CONFIG", "/etc/leakmon/leakmon.yaml")


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="configuration file (default: %(default)s)")


def register(sub: Any) -> None:
    """Add the ``incidents``, ``evidence`` and ``audit`` subcommands to an argparse subparsers object."""
    inc = sub.add_parser("incidents", help="list, show, acknowledge, close and export incidents")
    isub = inc.add_subparsers(dest="incidents_cmd", required=True)

    p = isub.add_parser("list", help="list incidents")
    _config_arg(p)
    p.add_argument("--status", choices=("open", "acked", "closed"))
    p.add_argument("--since", help="e.g. 24h, 7d or 2024-05-01T09:00")
    p.add_argument("--host", help="protected host IP")
    p.add_argument("--sid", type=int, help="incidents with an alert of this signature id")
    p.add_argument("--limit", type=int, default=1000)
    p.add_argument("--json", action="store_true", help="JSON output for scripts")
    p.set_defaults(func=cmd_list)

    p = isub.add_parser("show", help="show one incident")
    _config_arg(p)
    p.add_argument("incident")
    p.add_argument("--json", action="store_true")
    p.add_argument("--report", choices=("first", "detail"), help="print the report draft (Markdown)")
    p.set_defaults(func=cmd_show)

    for name, status, text in (("ack", "acked", "acknowledge an incident"), ("close", "closed", "close an incident")):
        p = isub.add_parser(name, help=text)
        _config_arg(p)
        p.add_argument("incident")
        p.add_argument("--by", help="who (default: the OS user)")
        p.add_argument("--note", default="")
        p.set_defaults(func=cmd_state, new_status=status)

    p = isub.add_parser("export", help="write the first and detail report drafts (Markdown + JSON)")
    _config_arg(p)
    p.add_argument("incident")
    p.add_argument("--out", help="folder (default: reports/<incident> beside the database)")
    p.set_defaults(func=cmd_export)

    ev = sub.add_parser("evidence", help="export and verify incident evidence")
    esub = ev.add_subparsers(dest="evidence_cmd", required=True)
    p = esub.add_parser("export", help="decrypt (or re-encrypt) an incident's evidence into a bundle")
    _config_arg(p)
    p.add_argument("incident")
    p.add_argument("--out", required=True)
    p.add_argument("--reencrypt-key", help="re-encrypt for the recipient with this AES-256 key file")
    p.set_defaults(func=cmd_evidence_export)
    p = esub.add_parser("verify", help="check a bundle or an evidence directory against its manifest")
    _config_arg(p)
    p.add_argument("dir")
    p.add_argument("--key", help="AES-256 key file for encrypted files (default: the configured evidence key)")
    p.set_defaults(func=cmd_evidence_verify)

    au = sub.add_parser("audit", help="audit log tools")
    asub = au.add_subparsers(dest="audit_cmd", required=True)
    p = asub.add_parser("verify", help="verify the hash chain and HMACs of the audit log")
    _config_arg(p)
    p.add_argument("--log", help="audit log path (default: audit.path of the config)")
    p.add_argument("--key", help="HMAC key file (default: from the config)")
    p.set_defaults(func=cmd_audit_verify)


# ---------------------------------------------------------------- helpers


def _load(args: argparse.Namespace, required: bool = True) -> Config | None:
    try:
        return load_config(args.config)
    except ConfigError as exc:
        if required:
            raise
        print(f"note: {exc}; continuing without a configuration", file=sys.stderr)
        return None


def _db(cfg: Config) -> Any:
    from alerts.incidents import IncidentDB

    return IncidentDB(cfg.resolve(cfg.incidents.db), synchronous=cfg.incidents.synchronous)


def _renderer(cfg: Config) -> Any:
    from alerts.report import Renderer

    return Renderer(cfg.resolve(cfg.incidents.templates), cfg.incidents.language)


def _audit(cfg: Config) -> Any:
    from alerts.audit import AuditLog

    return AuditLog(cfg.audit, base_dir=cfg.base_dir)


def _store(cfg: Config, audit: Any = None) -> Any:
    from alerts.evidence import EvidenceStore

    return EvidenceStore(cfg, audit=audit, background=False)


def _by(args: argparse.Namespace) -> dict[str, Any]:
    from alerts.audit import actor

    who = actor()
    if getattr(args, "by", None):
        who["name"] = args.by
    return who


# ---------------------------------------------------------------- incidents


def cmd_list(args: argparse.Namespace) -> int:
    from alerts.incidents import parse_since
    from alerts.report import local_time

    cfg = _load(args)
    assert cfg is not None
    db = _db(cfg)
    rows = db.query(status=args.status, since=parse_since(args.since) if args.since else None, host=args.host,
                   sid=args.sid, limit=args.limit)
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=1))
        return 0
    print(f"{'incident':20} {'status':7} {'opened':29} {'host':>15} -> {'destination':15} {'alerts':>6}  sids")
    for r in rows:
        print(f"{r['id']:20} {r['status']:7} {local_time(r['opened_at']):29} {r['host']:>15} -> {r['dest']:15} "
              f"{r['alert_count']:6}  {','.join(str(s) for s in r['sids'])}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from alerts.incidents import build_detail, rebuild_first

    cfg = _load(args)
    assert cfg is not None
    db = _db(cfg)
    inc = db.get(args.incident)
    if inc is None:
        print(f"no incident {args.incident}", file=sys.stderr)
        return 1
    renderer = _renderer(cfg)
    if args.report == "first":
        first = inc["first_report"] or rebuild_first(inc, (db.alerts(args.incident) or [{}])[0], renderer)
        sys.stdout.write(renderer.markdown(first))
        return 0
    store = _store(cfg) if cfg.evidence.enabled else None
    detail = build_detail(db, args.incident, store, renderer, time.time())
    if args.report == "detail":
        sys.stdout.write(renderer.markdown(detail))
        return 0
    if args.json:
        out = {k: v for k, v in inc.items() if k != "first_report"}
        out.update(alerts=db.alerts(args.incident), evidence=db.evidence(args.incident), flows=db.flows(args.incident),
                   history=db.history(args.incident), first_report=inc["first_report"])
        print(json.dumps(out, ensure_ascii=False, indent=1, default=str))
        return 0
    print(f"{inc['id']}  {detail['status_text']}")
    print(f"  host {inc['host']} -> {inc['dest']}   alerts {inc['alert_count']}   sids {inc['sids']}")
    print(f"  traffic {detail['traffic']['first_seen']} .. {detail['traffic']['last_seen']}")
    print(f"  evidence: {detail['evidence']['text']}")
    for e in detail["evidence"]["items"]:
        print(f"    {e['id']}  {e['kind']}  {e['size']} bytes  sha256 {e['sha256']}")
    for t in detail["timeline"]:
        print(f"  {t['time']}  sid {t['sid']}  {t['signature']}  flow {t['flow_id']}  {t['where']}")
    return 0


def cmd_state(args: argparse.Namespace) -> int:
    cfg = _load(args)
    assert cfg is not None
    db = _db(cfg)
    who = _by(args)
    by = who.get("name") or who["user"]
    try:
        old, new = db.set_status(args.incident, args.new_status, by, args.note)
    except KeyError:
        print(f"no incident {args.incident}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    _audit(cfg).record("incident_state", {"incident_id": args.incident, "old": old, "new": new, "by": who,
                                          "note": args.note})
    print(f"{args.incident}: {old} -> {new}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from alerts.incidents import build_detail, rebuild_first
    from alerts.report import write_report_files

    cfg = _load(args)
    assert cfg is not None
    db = _db(cfg)
    inc = db.get(args.incident)
    if inc is None:
        print(f"no incident {args.incident}", file=sys.stderr)
        return 1
    renderer = _renderer(cfg)
    out = args.out or os.path.join(os.path.dirname(cfg.resolve(cfg.incidents.db)), "reports", args.incident)
    first = inc["first_report"] or rebuild_first(inc, (db.alerts(args.incident) or [{}])[0], renderer)
    store = _store(cfg) if cfg.evidence.enabled else None
    detail = build_detail(db, args.incident, store, renderer, time.time())
    paths = write_report_files(out, first, renderer) + write_report_files(out, detail, renderer)
    for p in paths:
        print(p)
    return 0


# ---------------------------------------------------------------- evidence


def cmd_evidence_export(args: argparse.Namespace) -> int:
    from alerts.evidence import read_key_file

    cfg = _load(args)
    assert cfg is not None
    audit = _audit(cfg)
    store = _store(cfg, audit)
    if store.key is None:
        print(f"error: no evidence key ({store.disabled_reason})", file=sys.stderr)
        return 2
    rekey = read_key_file(args.reencrypt_key) if args.reencrypt_key else None
    try:
        bundle = store.export(args.incident, args.out, reencrypt_key=rekey)
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"exported {len(bundle['files'])} files of {args.incident} to {args.out} "
          f"({'re-encrypted, key id ' + bundle['key_id'] if rekey else 'decrypted'})")
    return 0


def cmd_evidence_verify(args: argparse.Namespace) -> int:
    from alerts.evidence import append_custody, load_key, read_key_file, verify_dir

    cfg = _load(args, required=False)
    key = read_key_file(args.key) if args.key else None
    if key is None and cfg is not None:
        key = load_key(cfg.evidence, cfg.base_dir)
    problems, checked = verify_dir(args.dir, key)
    for line in checked:
        print(f"ok    {line}")
    for line in problems:
        print(f"FAIL  {line}")
    ok = not problems
    print("VERIFIED" if ok else f"NOT VERIFIED: {len(problems)} problem(s)")
    if os.access(args.dir, os.W_OK):
        append_custody(args.dir, "verified", {"ok": ok, "problems": len(problems), "checked": len(checked)})
    if cfg is not None:
        try:
            _audit(cfg).record("evidence_verified", {"dir": os.path.abspath(args.dir), "ok": ok,
                                                     "problems": len(problems)})
        except Exception:  # noqa: BLE001 - verification result stands even without an audit log
            pass
    return 0 if ok else 1


# ---------------------------------------------------------------- audit


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from alerts.audit import AuditKeyError, read_key_file, resolve_key, verify

    cfg = _load(args, required=not (args.log and args.key))
    path = args.log or (cfg.resolve(cfg.audit.path) if cfg else "")
    try:
        if args.key:
            key = read_key_file(args.key)
        else:
            assert cfg is not None
            key, _ = resolve_key(cfg.audit, path, create=False)
    except AuditKeyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rep = verify(path, key)
    for note in rep.notes:
        print(f"note: {note}")
    for p in rep.problems:
        print(f"FAIL  {p}")
    if rep.ok:
        print(f"OK: {rep.records} records in {len(rep.files)} file(s), seq {rep.first_seq}..{rep.last_seq}")
        return 0
    print(f"NOT VERIFIED: {len(rep.problems)} problem(s); first at {rep.problems[0]}")
    return 1


# ---------------------------------------------------------------- standalone entry


def main(argv: list[str] | None = None) -> int:
    """``python -m alerts.cli_incidents ...`` (the same commands without the main CLI)."""
    parser = argparse.ArgumentParser(prog="leakmon")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(argv)
    try:
        rc: int = args.func(args)
        return rc
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
