"""Command line: ``leakmon replay|run|check-config|reload|flow|fingerprint|incidents|evidence|audit|coverage``.

Exit codes: 0 success, 1 runtime failure, 2 bad usage or configuration (the message names the
file, key and reason).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from monitor import __version__
from monitor.config import ConfigError, describe, load_config
from monitor.errors import LeakmonError

# Modules that add their own subcommands through ``register(subparsers)``.
COMMAND_MODULES = (
    "alerts.cli_incidents",
    "monitor.coverage",
)

# The subcommands defined in this file. A command line that starts with one of them is parsed
# without importing COMMAND_MODULES (the coverage tracker and uuid: ~15 ms of every replay).
BUILTIN_COMMANDS = frozenset({"replay", "run", "check-config", "reload", "flow", "fingerprint"})


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", required=True, help="YAML configuration file")
    p.add_argument("--eve-log", metavar="PATH|-", help="EVE JSON output (overrides outputs.eve.path; '-' = stdout)")
    p.add_argument("--bpf", default=None, help="BPF filter expression (overrides capture.bpf)")
    p.add_argument("--metrics-addr", default=None, metavar="HOST:PORT",
                   help="Prometheus exporter address (overrides metrics.addr; '' disables)")
    p.add_argument("--workers", type=int, default=1, help="Worker processes; flows are sharded by a symmetric hash")
    p.add_argument("-v", "--verbose", action="count", default=0)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser; with ``command`` one of BUILTIN_COMMANDS, a parser that parses that
    command the same way but leaves out the subcommands of COMMAND_MODULES."""
    ap = argparse.ArgumentParser(prog="leakmon", description="Network data-leak monitor (常時監視 sensor)")
    ap.add_argument("--version", action="version", version=f"leakmon {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("replay", help="Replay capture files (pcap, pcapng, gzip) through the full pipeline")
    p.add_argument("files", nargs="+", help="Capture files")
    _add_common(p)
    p.add_argument("--literal", action="append", default=[], metavar="TEXT",
                   help="Ad-hoc marker to hunt (all encodings and variants apply); repeatable")
    p.add_argument("--sha256", action="append", default=[], metavar="HEX", help="Ad-hoc file hash to hunt")
    p.add_argument("--no-progress", action="store_true", help="No progress bar even on a terminal")
    p.set_defaults(func=_cmd_replay)

    p = sub.add_parser("run", help="Live capture on AF_PACKET interfaces")
    p.add_argument("-i", "--interface", action="append", required=True, dest="interfaces", help="Interface (repeatable)")
    _add_common(p)
    p.add_argument("--pidfile", default=None, help="Write the pid here (for `leakmon reload`)")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("check-config", help="Validate a configuration and its signature files")
    p.add_argument("-c", "--config", required=True)
    p.add_argument("--explain", action="store_true", help="Print every option with its default and help")
    p.set_defaults(func=_cmd_check_config)

    p = sub.add_parser("reload", help="Reload signatures of a running sensor (SIGHUP)")
    p.add_argument("--pidfile", required=True)
    p.set_defaults(func=_cmd_reload)

    p = sub.add_parser("flow", help="Print one flow's transactions, files and findings from a capture")
    p.add_argument("capture")
    p.add_argument("flow_id", help="flow_id from an alert, a Community ID, or A:port-B:port")
    p.add_argument("-c", "--config", required=True)
    p.add_argument("--dissect", action="store_true", help="Show tshark's own dissection of the same packets")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_flow)

    p = sub.add_parser("fingerprint", help="Partial-document fingerprints of protected documents")
    fsub = p.add_subparsers(dest="fingerprint_command", required=True)
    fi = fsub.add_parser("index", help="Index a folder of protected documents (stores winnowed hashes only)")
    fi.add_argument("dir")
    fi.add_argument("-o", "--output", required=True, help="Index file to write (JSON, hashes only, never text)")
    fi.set_defaults(func=_cmd_fingerprint_index)

    if command not in BUILTIN_COMMANDS:
        for mod_name in COMMAND_MODULES:
            importlib.import_module(mod_name).register(sub)
    return ap


def _builtin_command(argv: Sequence[str]) -> str | None:
    """The subcommand when the command line starts with a built-in one; anything else (options
    first, --help, an unknown or module-defined command) gets the full parser and its messages."""
    return argv[0] if argv and argv[0] in BUILTIN_COMMANDS else None


def _cmd_fingerprint_index(args: argparse.Namespace) -> int:
    from detectors.partial import main as partial_main

    return partial_main(["index", args.dir, "-o", args.output])


def _cmd_replay(args: argparse.Namespace) -> int:
    from monitor.runner import replay

    return replay(args)


def _cmd_run(args: argparse.Namespace) -> int:
    from monitor.runner import live

    return live(args)


def _cmd_check_config(args: argparse.Namespace) -> int:
    if args.explain:
        for key, default, help_text in describe():
            print(f"{key:45} {default:22} {help_text}")
        return 0
    cfg = load_config(args.config)
    from detectors.signatures import load_signatures

    sigs = load_signatures([cfg.resolve(p) for p in cfg.signatures])
    counts = ", ".join(f"{n} {k}" for k, n in sigs.describe().items())
    print(f"{args.config}: OK (signatures {sigs.version}: {counts})")
    return 0


def _cmd_reload(args: argparse.Namespace) -> int:
    import os
    import signal

    try:
        with open(args.pidfile) as fh:
            pid = int(fh.read().strip())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError) as exc:
        print(f"leakmon reload: {args.pidfile}: {exc}", file=sys.stderr)
        return 1
    print(f"sent SIGHUP to {pid}")
    return 0


def _cmd_flow(args: argparse.Namespace) -> int:
    from monitor.investigate import show_flow

    return show_flow(args)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = build_parser(_builtin_command(argv))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * min(getattr(args, "verbose", 0) or 0, 2),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"leakmon: configuration error: {exc}", file=sys.stderr)
        return 2
    except LeakmonError as exc:
        print(f"leakmon: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
