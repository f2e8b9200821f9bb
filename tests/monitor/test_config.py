"""Config: typed, validated once; bad files exit 2 naming file, key and reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from monitor.config import ConfigError, describe, load_config, parse_duration, parse_size

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("text", "value"), [("64 MiB", 64 << 20), ("512KB", 512_000), ("1gib", 1 << 30), (4096, 4096)])
def test_sizes_take_units(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize(("text", "value"), [("30s", 30.0), ("5m", 300.0), ("92d", 92 * 86400.0), (1.5, 1.5), ("100ms", 0.1)])
def test_durations_take_units(text, value):
    assert parse_duration(text) == pytest.approx(value)


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "leakmon.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_full_config_loads_and_resolves_paths(tmp_path):
    p = _write(tmp_path, """
networks: {protected: [10.0.0.0/8, "fd00::/8"]}
signatures: [sigs]
stream: {memcap: 64 MiB, overlap_policy: linux, gap_wait: 500ms}
reporting:
  chain: [{role: 責任者, name: 山田}]
""")
    cfg = load_config(p)
    assert cfg.stream.memcap == 64 << 20
    assert cfg.stream.overlap_policy == "linux"
    assert cfg.stream.gap_wait == pytest.approx(0.5)
    assert cfg.reporting.chain[0].name == "山田"
    assert cfg.resolve(cfg.signatures[0]) == str(tmp_path / "sigs")


@pytest.mark.parametrize(("text", "key", "reason"), [
    ("stream: {memkap: 1}", "stream.memkap", "unknown key"),
    ("stream: {memcap: lots}", "stream.memcap", "expected a size"),
    ("stream: {overlap_policy: random}", "stream.overlap_policy", "must be one of"),
    ("networks: {protected: [10.0.0.300/8]}", "networks.protected[0]", "not a CIDR"),
    ("audit: {retention: 30d}", "audit.retention", "at least 90d"),
    ("flow: {max_flows: yes}", "flow.max_flows", "expected an integer"),
    ("reporting: {chain: [{role: x, fax: 1}]}", "reporting.chain[0].fax", "unknown key"),
    ("metrics: {addr: nonsense}", "metrics.addr", "HOST:PORT"),
])
def test_bad_values_name_key_and_reason(tmp_path, text, key, reason):
    p = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert err.value.key == key
    assert reason in err.value.reason
    assert str(p) in str(err.value)


def test_yaml_syntax_error_names_line(tmp_path):
    p = _write(tmp_path, "stream:\n  memcap: [1,\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert "line" in str(err.value)


def test_check_config_exit_codes(tmp_path):
    bad = _write(tmp_path, "flow: {timeouts: {established: forever}}")
    r = subprocess.run([sys.executable, "-m", "monitor", "check-config", "-c", str(bad)], capture_output=True, text=True,
                       cwd=ROOT)
    assert r.returncode == 2
    assert "flow.timeouts.established" in r.stderr
    good = ROOT / "pcaps" / "sample.yaml"
    r = subprocess.run([sys.executable, "-m", "monitor", "check-config", "-c", str(good)], capture_output=True, text=True,
                       cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "OK" in r.stdout


def test_every_option_is_documented():
    rows = describe()
    keys = {k for k, _, _ in rows}
    assert {"stream.memcap", "flow.timeouts.udp", "evidence.key_file", "audit.retention"} <= keys
    assert all(h for _, _, h in rows), [k for k, _, h in rows if not h]
