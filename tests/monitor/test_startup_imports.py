"""Start-up loads only what the run at hand uses: a replay without a metrics exporter, notification
receivers or evidence does not import prometheus_client, smtplib, urllib.request or cryptography
(nor the subcommand modules it does not run); configured, each is imported and works."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from tests.factories import sample_config

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "pcaps" / "sample-leak-http.pcap"

# Loaded only by the metrics exporter, the notification channels, the evidence cipher and the
# parsers of the `incidents`/`evidence`/`audit`/`coverage` subcommands.
OPTIONAL = ("prometheus_client", "alerts.metrics", "smtplib", "cryptography", "alerts.cli_incidents",
            "monitor.coverage")


def _config(tmp_path: Path, **sections: dict) -> Path:
    p = sample_config(tmp_path)
    doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    doc.update(sections)
    p.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return p


def _python(code: str, *args: str) -> dict:
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


# `leakmon replay ...` as the console script runs it, then the modules it imported.
_REPLAY = """
import json, sys
from monitor.cli import main
rc = main(sys.argv[1:])
print(json.dumps({"rc": rc, "modules": sorted(sys.modules)}))
"""


def _loaded(modules: list[str], name: str) -> bool:
    return any(m == name or m.startswith(name + ".") for m in modules)


def test_replay_without_optional_subsystems_does_not_import_them(tmp_path: Path) -> None:
    cfg = _config(tmp_path, evidence={"enabled": False}, metrics={"addr": ""})
    eve = tmp_path / "eve.json"
    got = _python(_REPLAY, "replay", str(SAMPLE), "-c", str(cfg), "--eve-log", str(eve), "--no-progress")
    assert got["rc"] == 0
    # The replay did its work: the leaks alerted and became incidents (audit and incidents ran).
    alerts = [r for r in map(json.loads, eve.read_text(encoding="utf-8").splitlines()) if r["event_type"] == "alert"]
    assert len(alerts) >= 3
    assert (tmp_path / "out" / "leakmon.db").exists() and (tmp_path / "out" / "audit.jsonl").exists()
    assert "alerts.incidents" in got["modules"] and "alerts.audit" in got["modules"]
    assert [m for m in OPTIONAL if _loaded(got["modules"], m)] == []


def test_metrics_addr_option_disables_the_exporter_import(tmp_path: Path) -> None:
    cfg = _config(tmp_path, evidence={"enabled": False}, metrics={"addr": "127.0.0.1:9"})
    got = _python(_REPLAY, "replay", str(SAMPLE), "-c", str(cfg), "--eve-log", str(tmp_path / "eve.json"),
                  "--no-progress", "--metrics-addr", "")
    assert got["rc"] == 0
    assert not _loaded(got["modules"], "prometheus_client")


# A sensor with every optional subsystem configured: each is imported at start-up and works.
_CONFIGURED = """
import json, sys
from monitor.runner import Sensor
from monitor.config import load_config

cfg = load_config(sys.argv[1])
sensor = Sensor(cfg, eve_path="", replay=True)
loaded = sorted(sys.modules)
body, ctype = sensor.metrics.exposition()
notifier = sensor.incidents.notifier
out = {
    "modules": loaded,
    "metrics_port": sensor.metrics.port,
    "exposition": body.decode(),
    "channels": [ch.name for ch in notifier.channels],
    "evidence": bool(sensor.incidents.evidence.enabled),
}
sensor.finish("shutdown")
print(json.dumps(out))
"""


def test_configured_subsystems_are_imported_and_work(tmp_path: Path) -> None:
    cfg = _config(tmp_path, metrics={"addr": "127.0.0.1:0"},
                  notify={"webhook": {"url": "http://127.0.0.1:9/hook", "retries": 0},
                          "email": {"host": "127.0.0.1", "port": 9, "recipients": ["soc@example.jp"], "retries": 0}})
    got = _python(_CONFIGURED, str(cfg))
    for name in ("prometheus_client", "alerts.metrics", "smtplib", "urllib.request", "cryptography"):
        assert _loaded(got["modules"], name), name
    assert got["metrics_port"] > 0
    assert "leakmon_flows_created_total" in got["exposition"]
    assert got["channels"] == ["webhook", "email"]
    assert got["evidence"] is True


def test_cli_parses_builtin_commands_without_the_subcommand_modules() -> None:
    code = """
import json, sys
from monitor import cli
args = cli.build_parser(cli._builtin_command(sys.argv[1:])).parse_args(sys.argv[1:])
modules = sorted(sys.modules)  # before the full parser below imports the subcommand modules
full = cli.build_parser().parse_args(sys.argv[1:])
plain = lambda ns: {k: v for k, v in vars(ns).items() if k != "func"}
print(json.dumps({"same": plain(args) == plain(full) and args.func is full.func, "modules": modules}))
"""
    for argv in (["replay", "a.pcap", "b.pcap", "-c", "x.yaml", "--workers", "2", "--literal", "秘密"],
                 ["run", "-i", "eth0", "-c", "x.yaml", "--metrics-addr", ""],
                 ["check-config", "-c", "x.yaml"]):
        got = _python(code, *argv)
        assert got["same"] is True, argv
        assert not _loaded(got["modules"], "alerts.cli_incidents"), argv
        assert not _loaded(got["modules"], "monitor.coverage"), argv


def test_builtin_commands_are_the_parsers_own() -> None:
    from monitor import cli

    def commands(ap) -> set[str]:  # type: ignore[no-untyped-def]
        return set(next(a for a in ap._actions if a.dest == "command").choices)

    assert commands(cli.build_parser("replay")) == cli.BUILTIN_COMMANDS
    assert commands(cli.build_parser()) > cli.BUILTIN_COMMANDS
    assert cli._builtin_command(["replay", "x"]) == "replay"
    assert cli._builtin_command(["-h", "replay"]) is None
    assert cli._builtin_command(["incidents", "list"]) is None
    assert cli._builtin_command([]) is None
