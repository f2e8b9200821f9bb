"""A capture and its pcapng conversion (editcap) replay to the same alerts and files.

The pcapng replay goes through the pcapng record walk (Capture.replay); the classic one
through the classic walk. Every EVE alert and fileinfo record must be the same, except
``in_iface``: a pcapng interface has a name (``if0`` when the file gives none), a classic pcap
has none.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PCAPS
from tests.e2e.leaks_helpers import derived_config, replay_cli

pytestmark = pytest.mark.skipif(shutil.which("editcap") is None, reason="editcap (wireshark-common) not installed")

CAPTURES = sorted((PCAPS / "leaks").glob("*.pcap")) + [PCAPS / "sample-leak-http.pcap", PCAPS / "http-uploads.pcap",
                                                        PCAPS / "mail-smtplib.pcap", PCAPS / "ftp-ftplib.pcap"]


def _records(records: list[dict[str, Any]], ifaces: set[str]) -> list[dict[str, Any]]:
    """The alert and fileinfo records without ``in_iface`` (collected in ``ifaces``), with the ids
    that differ between two runs of one process made relative: flow ids (randomly salted) by
    order of first appearance, file ids (a process-wide counter) from the run's first one."""
    out = [dict(r) for r in records if r["event_type"] in ("alert", "fileinfo")]
    flows: dict[int, int] = {}
    base = min((i for r in out for i in _file_ids(r)), default=0)
    for r in out:
        ifaces.add(r.pop("in_iface", ""))
        r["flow_id"] = flows.setdefault(r["flow_id"], len(flows))
    return [_rebase(r, base) for r in out]


def _file_ids(obj: Any) -> list[int]:
    if isinstance(obj, dict):
        return [v for k, v in obj.items() if k in ("file_id", "parent_file_id") and isinstance(v, int)] + \
            [i for v in obj.values() for i in _file_ids(v)]
    if isinstance(obj, list):
        return [i for v in obj for i in _file_ids(v)]
    return []


def _rebase(obj: Any, base: int) -> Any:
    if isinstance(obj, dict):
        return {k: v - base if k in ("file_id", "parent_file_id") and isinstance(v, int) else _rebase(v, base)
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rebase(v, base) for v in obj]
    return obj


def test_pcapng_conversion_replays_to_the_same_alerts_and_files(tmp_path: Path) -> None:
    converted = []
    for i, src in enumerate(CAPTURES):
        dest = tmp_path / "ng" / f"{i:02d}-{src.stem}.pcapng"
        dest.parent.mkdir(exist_ok=True)
        subprocess.run(["editcap", "-F", "pcapng", str(src), str(dest)], check=True, capture_output=True, timeout=60)
        assert dest.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"
        converted.append(dest)
    classic = replay_cli(CAPTURES, derived_config("leaks.yaml", tmp_path / "pcap", detection__engine="ahocorasick"),
                         tmp_path / "pcap" / "eve.json")
    ng = replay_cli(converted, derived_config("leaks.yaml", tmp_path / "ng", detection__engine="ahocorasick"),
                    tmp_path / "ng" / "eve.json")
    classic_ifaces: set[str] = set()
    ng_ifaces: set[str] = set()
    want = _records(classic.records, classic_ifaces)
    got = _records(ng.records, ng_ifaces)
    assert got == want
    assert classic_ifaces == {""} and ng_ifaces == {"if0"}
    alerts = [r for r in want if r["event_type"] == "alert"]
    assert len(alerts) >= 25 and len({r["alert"]["signature_id"] for r in alerts}) >= 4
    assert sum(r["event_type"] == "fileinfo" for r in want) >= 20
    assert max(r["pcap_cnt"] for r in alerts) > 500  # numbering carried across the files of one replay
