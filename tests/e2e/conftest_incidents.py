"""Shared helpers of the incident end-to-end tests (issue 5): run the real CLI, build configs.

Not a ``conftest.py`` (tests/e2e/ is shared); the test modules import what they need from here.
Every run writes only under the test's temporary directory: the config is a copy of
``pcaps/sample.yaml`` with absolute paths into it and freshly generated keys.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from alerts.audit import canonical

ROOT = Path(__file__).resolve().parents[2]
PCAPS = ROOT / "pcaps"
SAMPLE_PCAP = PCAPS / "sample-leak-http.pcap"
SAMPLE_CONFIG = PCAPS / "sample.yaml"
LEAKS_DIR = PCAPS / "leaks"
LEAK_SIGNATURES = PCAPS / "leaks-signatures.yaml"
SHIPPED_MARKERS = ROOT / "signatures" / "markers.yaml"
SHIPPED_TLS_POLICY = ROOT / "signatures" / "cryptrec_tls.yaml"

# The lab client of the sample captures (the protected host) and the lab server.
LAB_CLIENT = "10.77.0.1"
LAB_SERVER = "10.77.0.2"


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("TZ", "UTC")
    env["PYTHONUNBUFFERED"] = "1"
    # Keys come from the config's key files only, never from the caller's environment.
    env.pop("LEAKMON_EVIDENCE_KEY", None)
    env.pop("LEAKMON_AUDIT_KEY", None)
    return env


def cli_argv(*args: str | os.PathLike[str]) -> list[str]:
    """``leakmon ARGS`` as the console script runs it (``python -m monitor`` = monitor.cli.main)."""
    return [sys.executable, "-m", "monitor", *map(str, args)]


def leakmon(*args: str | os.PathLike[str], cwd: Path, timeout: float = 120,
            expect: int | None = 0) -> subprocess.CompletedProcess[str]:
    """Run the real CLI; fail with its output when the exit code is not ``expect``."""
    p = subprocess.run(cli_argv(*args), cwd=cwd, env=cli_env(), capture_output=True, text=True,
                       timeout=timeout, check=False)
    if expect is not None and p.returncode != expect:
        raise AssertionError(f"leakmon {' '.join(map(str, args))} -> rc {p.returncode} (expected {expect})\n"
                             f"stdout:\n{p.stdout[-4000:]}\nstderr:\n{p.stderr[-4000:]}")
    return p


def write_key(path: Path) -> bytes:
    key = os.urandom(32)
    path.write_text(key.hex() + "\n")
    path.chmod(0o600)
    return key


def make_config(tmp: Path, *, signatures: list[str] | None = None, webhook: str = "",
                language: str = "ja") -> Path:
    """``pcaps/sample.yaml`` copied into ``tmp`` with absolute paths and generated keys.

    Layout: tmp/leakmon.yaml, tmp/evidence.key, tmp/audit.key, tmp/out/{eve.json, leakmon.db,
    audit.jsonl, evidence/, reports/}.
    """
    doc: dict[str, Any] = yaml.safe_load(SAMPLE_CONFIG.read_text(encoding="utf-8"))
    out = tmp / "out"
    out.mkdir(parents=True, exist_ok=True)
    write_key(tmp / "evidence.key")
    write_key(tmp / "audit.key")
    base = SAMPLE_CONFIG.parent
    doc["signatures"] = signatures if signatures is not None else [
        str((base / s).resolve()) for s in doc.get("signatures", [])]
    doc["outputs"] = {"eve": {"path": str(out / "eve.json")}}
    doc["evidence"] = {"dir": str(out / "evidence"), "key_file": str(tmp / "evidence.key")}
    doc["incidents"] = {**doc.get("incidents", {}), "db": str(out / "leakmon.db"), "language": language}
    doc["audit"] = {"path": str(out / "audit.jsonl"), "key_file": str(tmp / "audit.key")}
    doc["coverage"] = {"path": str(out / "coverage.jsonl")}
    doc["metrics"] = {"addr": ""}
    if webhook:
        doc["notify"] = {"webhook": {"url": webhook, "timeout": "2s", "retries": 1}}
    path = tmp / "leakmon.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def shipped_markers() -> list[dict[str, Any]]:
    """The protected-data marker rules of the shipped signature file (not the canary)."""
    doc = yaml.safe_load(SHIPPED_MARKERS.read_text(encoding="utf-8"))
    return [m for m in doc["markers"] if not m.get("informational")]


def marker_literals() -> list[str]:
    return [m["literal"] for m in shipped_markers() if "literal" in m]


def neutral_signatures(tmp: Path) -> list[str]:
    """The shipped markers under neutral rule names (``marking rule <sid>``), the TLS policy, and
    the leak scenarios' fingerprints when present: the rule set of the tests that scan outputs.

    A rule's name is reported by design (EVE ``alert.signature``, reports, notifications); the
    shipped names spell out their markers, which would be reported with them.
    """
    doc = yaml.safe_load(SHIPPED_MARKERS.read_text(encoding="utf-8"))
    for m in doc["markers"]:
        m["msg"] = f"marking rule {m['sid']}"
    path = tmp / "markers-neutral.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    sigs = [str(path), str(SHIPPED_TLS_POLICY)]
    if LEAK_SIGNATURES.exists():
        sigs.append(str(LEAK_SIGNATURES))
    return sigs


# ---------------------------------------------------------------- EVE


def eve_records(path: Path) -> list[dict[str, Any]]:
    """Every complete line of an EVE file (a torn last line, without its newline, is not a record)."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    if lines and lines[-1]:
        lines = lines[:-1]  # cut short by a crash: never reached the file as a whole line
    return [json.loads(x) for x in lines if x]


def alert_identity(rec: dict[str, Any]) -> str:
    """What identifies one alert record across EVE, the database and the audit log."""
    a = rec.get("alert") or {}
    fi = rec.get("fileinfo") or {}
    lm = rec.get("leakmon") or {}
    return hashlib.sha256(canonical([rec.get("timestamp"), rec.get("flow_id"), rec.get("pcap_cnt"),
                                     a.get("signature_id"), rec.get("tx_id"), fi.get("file_id"),
                                     lm.get("where"), lm.get("variant")])).hexdigest()


# ---------------------------------------------------------------- tshark


def tshark_fields(pcap: Path, *fields: str, display_filter: str = "") -> list[list[str]]:
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed")
    argv = ["tshark", "-n", "-r", str(pcap), "-T", "fields", "-E", "separator=\t"]
    if display_filter:
        argv += ["-Y", display_filter]
    for f in fields:
        argv += ["-e", f]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode == 0, f"tshark cannot read {pcap}: {p.stderr}"
    return [line.split("\t") for line in p.stdout.splitlines()]


@functools.lru_cache(maxsize=64)
def _tshark_tcp_frames(pcap: str, mtime_ns: int) -> tuple[tuple[str, int, str, int, int, int, str, str, str], ...]:
    rows = tshark_fields(Path(pcap), "ip.src", "ipv6.src", "tcp.srcport", "ip.dst", "ipv6.dst", "tcp.dstport",
                         "frame.len", "tcp.len", "tcp.flags", "eth.src", "eth.dst", display_filter="tcp")
    return tuple((r[0] or r[1], int(r[2]), r[3] or r[4], int(r[5]), int(r[6]), int(r[7]), r[8], r[9], r[10])
                 for r in rows)


def tshark_tcp_frames(pcap: Path) -> tuple[tuple[str, int, str, int, int, int, str, str, str], ...]:
    """Every TCP frame as tshark reads it: (src, sport, dst, dport, frame.len, tcp.len, tcp.flags,
    eth.src, eth.dst); one tshark run per file (cached)."""
    return _tshark_tcp_frames(str(pcap), pcap.stat().st_mtime_ns)


def tshark_tcp_flow(pcap: Path, client: tuple[str, int], server: tuple[str, int]) -> list[tuple[int, int, str]]:
    """(frame length, tcp.len, tcp flags) of every frame of one TCP 5-tuple, as tshark reads it."""
    ends = {client, server}
    return [(f[4], f[5], f[6]) for f in tshark_tcp_frames(pcap) if {(f[0], f[1]), (f[2], f[3])} == ends]


# ---------------------------------------------------------------- captures


def read_pcap(path: Path) -> tuple[bytes, list[tuple[float, bytes]]]:
    """(file header, [(ts, frame)]) of a little-endian microsecond pcap."""
    data = path.read_bytes()
    assert struct.unpack_from("<I", data)[0] == 0xA1B2C3D4, f"{path}: not a little-endian µs pcap"
    out = []
    off = 24
    while off + 16 <= len(data):
        sec, usec, incl, _orig = struct.unpack_from("<IIII", data, off)
        out.append((sec + usec / 1e6, data[off + 16:off + 16 + incl]))
        off += 16 + incl
    return data[:24], out


def frame_tuple(f: bytes) -> tuple[tuple[str, int], tuple[str, int]] | None:
    """The sorted TCP/UDP endpoint pair of an Ethernet frame (IPv4 or IPv6), else None."""
    import ipaddress

    et = f[12:14]
    if et == b"\x08\x00" and len(f) >= 34:
        proto, src, dst, l4 = f[23], f[26:30], f[30:34], 14 + (f[14] & 0x0F) * 4
    elif et == b"\x86\xdd" and len(f) >= 54:
        proto, src, dst, l4 = f[20], f[22:38], f[38:54], 54
    else:
        return None
    if proto not in (6, 17) or len(f) < l4 + 4:
        return None
    sport, dport = struct.unpack_from("!HH", f, l4)
    a = (str(ipaddress.ip_address(src)), sport)
    b = (str(ipaddress.ip_address(dst)), dport)
    return (min(a, b), max(a, b))


def flow_tuples(path: Path) -> set[tuple[tuple[str, int], tuple[str, int]]]:
    """The endpoint pairs of every TCP/UDP flow of a capture."""
    return {t for _ts, f in read_pcap(path)[1] if (t := frame_tuple(f)) is not None}


def flow_frames(path: Path, ends: tuple[tuple[str, int], tuple[str, int]]) -> list[tuple[int, bytes]]:
    """(timestamp in µs, frame bytes) of every frame of one flow in a capture."""
    key = (min(ends), max(ends))
    return [(round(ts * 1e6), f) for ts, f in read_pcap(path)[1] if frame_tuple(f) == key]


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def _rewrite(frame: bytes, client_ip: bytes, cport_map: dict[int, int], server_ip: bytes, new_server: bytes) -> bytes:
    """Move one Ethernet/IPv4/TCP frame of the sample to another client port and server address."""
    if len(frame) < 54 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
        return frame
    ihl = (frame[14] & 0x0F) * 4
    ip = bytearray(frame[14:14 + ihl])
    tcp = bytearray(frame[14 + ihl:])
    src, dst = bytes(ip[12:16]), bytes(ip[16:20])
    sport, dport = struct.unpack_from("!HH", tcp)
    if src == client_ip and dst == server_ip and sport in cport_map:
        struct.pack_into("!H", tcp, 0, cport_map[sport])
        ip[16:20] = new_server
    elif src == server_ip and dst == client_ip and dport in cport_map:
        struct.pack_into("!H", tcp, 2, cport_map[dport])
        ip[12:16] = new_server
    else:
        return frame
    ip[10:12] = b"\0\0"
    struct.pack_into("!H", ip, 10, _csum(bytes(ip)))
    tcp[16:18] = b"\0\0"
    pseudo = bytes(ip[12:20]) + struct.pack("!BBH", 0, 6, len(tcp))
    struct.pack_into("!H", tcp, 16, _csum(pseudo + bytes(tcp)))
    return frame[:14] + bytes(ip) + bytes(tcp)


def duplicate_sample(out: Path, copies: int, *, flows_per_destination: int = 4,
                     start_ts: float | None = None) -> list[str]:
    """A larger capture made of ``copies`` copies of the sample's HTTP flows, one after another.

    Copy i moves every client port to a fresh one and, every ``flows_per_destination`` copies,
    to a new server address in 198.18.0.0/15 (benchmark range), so incidents keep opening
    throughout the replay. ``start_ts`` moves the copies in time (after other captures of one
    replay). Returns the server addresses used, in order.
    """
    header, frames = read_pcap(SAMPLE_PCAP)
    client_ip = bytes(map(int, LAB_CLIENT.split(".")))
    server_ip = bytes(map(int, LAB_SERVER.split(".")))
    ports = sorted({struct.unpack_from("!H", f, 14 + (f[14] & 0x0F) * 4)[0] for _, f in frames
                    if len(f) >= 54 and f[26:30] == client_ip and f[23] == 6})
    t0 = frames[0][0]
    span = frames[-1][0] - t0 + 0.01
    shift = 0.0 if start_ts is None else start_ts - t0
    servers: list[str] = []
    chunks = [header]
    for i in range(copies):
        d = i // flows_per_destination
        new_server = bytes((198, 18, d // 250, d % 250 + 1))
        if not servers or servers[-1] != ".".join(map(str, new_server)):
            servers.append(".".join(map(str, new_server)))
        cport_map = {p: 20000 + (i * len(ports) + j) % 40000 for j, p in enumerate(ports)}
        for ts, f in frames:
            g = _rewrite(f, client_ip, cport_map, server_ip, new_server)
            sec, usec = divmod(int(round((ts + shift + (i + 1) * span) * 1e6)), 1_000_000)
            chunks.append(struct.pack("<IIII", sec, usec, len(g), len(g)) + g)
    out.write_bytes(b"".join(chunks))
    return servers
