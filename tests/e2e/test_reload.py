"""Hot reload end to end: ``leakmon run`` live on a veth while real curl uploads flow.

1. An upload carrying a shipped marker alerts (sid 9100001) under the first signature version.
2. A slow upload is in flight (its marker is in its last bytes) while a new signature file
   with a new marker is written and ``leakmon reload --pidfile`` sends SIGHUP; an upload
   carrying the new marker then alerts with the new sid and the new version, and the
   in-flight upload still alerts: the swap missed nothing (the flow keeps the set it started
   with, and says so).
3. A broken signature file plus SIGHUP: the running set stays (an old marker and the new one
   still alert, under the second version), the error names the file and the line on stderr.
4. The final stats: one reload, one failed reload, and the version loaded.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from alerts.schema import validate_lines
from pcaps.lab import Lab
from tests.conftest import needs_root_netns
from tests.livelab import ROOT, LiveSensor, curl_upload, serve_uploads, write_config

pytestmark = [needs_root_netns(), pytest.mark.netns]

PORT = 8094
SID_OLD = 9100001  # shipped: 保護すべき情報
SID_NEW = 9100777
NEW_MARKER = "試験用新規マーカー甲乙"
OLD_TEXT = "この文書は保護すべき情報を含みます。\n"
BROKEN_LINE = 5  # the line of the bad regex in the broken file below
BROKEN = (
    "markers:\n"
    "  - sid: 9100888\n"
    "    msg: \"broken rule\"\n"
    "    priority: 2\n"
    "    regex: \"ABC-[0-9\"\n"
)
PORT_OLD, PORT_SLOW, PORT_NEW, PORT_OLD_AFTER, PORT_NEW_AFTER = 40410, 40411, 40412, 40413, 40414


def _config(tmp: Path, sigs: Path) -> Path:
    return write_config(tmp, {
        "sensor": {"name": "e2e-reload"},
        "signatures": [str(sigs)],
        "capture": {"ring_block_size": "1 MiB", "ring_blocks": 4, "ring_block_timeout": "20ms"},
    })


def _upload(lab: Lab, tmp: Path, name: str, text: str, port: int, *extra: str) -> list[str]:
    (tmp / name).write_text(text, encoding="utf-8")
    return curl_upload(lab, tmp / name, PORT, port, *extra)


def _audited(tmp: Path, event: str) -> Callable[[], bool]:
    return lambda: event in (tmp / "audit.jsonl").read_text(encoding="utf-8")


def _reload(pidfile: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "monitor", "reload", "--pidfile", str(pidfile)], cwd=ROOT,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("sent SIGHUP to ")


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_sighup_reload_while_capturing(tmp_path: Path) -> None:
    sigs = tmp_path / "sigs"
    sigs.mkdir()
    for name in ("markers.yaml", "cryptrec_tls.yaml"):
        shutil.copy(ROOT / "signatures" / name, sigs / name)
    config = _config(tmp_path, sigs)
    eve, log, pidfile = tmp_path / "eve.json", tmp_path / "leakmon.log", tmp_path / "leakmon.pid"
    with Lab("lreload") as lab:
        serve_uploads(lab, PORT)
        sensor = LiveSensor(lab.sns, lab.sif, config, eve, log=log, args=["--pidfile", str(pidfile)]).start()
        try:
            sensor.wait_for(pidfile.exists, "pid file")  # written before the capture socket is bound

            # 1. the first set is live
            assert lab.client(_upload(lab, tmp_path, "old.txt", OLD_TEXT, PORT_OLD)).stdout == b"201"

            # 2. a slow upload in flight across the reload; its marker is in its last bytes
            slow_body = "本日の議事録を共有します。\n" * 4000 + OLD_TEXT
            slow = lab.background("client", _upload(lab, tmp_path, "slow.txt", slow_body, PORT_SLOW,
                                                    "--limit-rate", "40k"), stdout=subprocess.DEVNULL)
            time.sleep(1.0)
            assert slow.poll() is None, "the slow upload finished before the reload"
            (sigs / "new.yaml").write_text(
                f"markers:\n  - sid: {SID_NEW}\n    msg: \"new marker\"\n    priority: 1\n"
                f"    literal: \"{NEW_MARKER}\"\n", encoding="utf-8")
            _reload(pidfile)
            sensor.wait_for(_audited(tmp_path, "signatures_reloaded"), "reload")
            assert slow.poll() is None, "the slow upload finished before the reload was done"
            assert lab.client(_upload(lab, tmp_path, "new.txt", f"新しい文書: {NEW_MARKER} です。\n",
                                      PORT_NEW)).stdout == b"201"
            assert slow.wait(timeout=60) == 0

            # 3. a broken file: the running set stays
            (sigs / "broken.yaml").write_text(BROKEN, encoding="utf-8")
            _reload(pidfile)
            sensor.wait_for(_audited(tmp_path, "signatures_reload_failed"), "failed reload")
            assert lab.client(_upload(lab, tmp_path, "old2.txt", OLD_TEXT, PORT_OLD_AFTER)).stdout == b"201"
            assert lab.client(_upload(lab, tmp_path, "new2.txt", f"{NEW_MARKER}\n", PORT_NEW_AFTER)).stdout == b"201"
            time.sleep(1.0)  # the last segments reach the ring and its blocks retire
        finally:
            rc = sensor.stop()

    text = log.read_text(encoding="utf-8", errors="replace")
    assert rc == 0, text[-2000:]
    # The error names the file and the line, and says the old set keeps running.
    failures = [line for line in text.splitlines() if "signatures not reloaded" in line]
    assert len(failures) == 1, text[-3000:]
    assert f"{sigs / 'broken.yaml'}:{BROKEN_LINE}:" in failures[0], failures[0]
    assert "still running" in failures[0]

    records = validate_lines(eve.read_text(encoding="utf-8").splitlines())
    alerts = [r for r in records if r["event_type"] == "alert"
              and r["alert"]["signature_id"] in (SID_OLD, SID_NEW) and r["alert"]["category"] != "plaintext-transmission"]
    by_port = {(a["src_port"], a["alert"]["signature_id"]): a for a in alerts}
    assert sorted(by_port) == sorted([(PORT_OLD, SID_OLD), (PORT_SLOW, SID_OLD), (PORT_NEW, SID_NEW),
                                      (PORT_OLD_AFTER, SID_OLD), (PORT_NEW_AFTER, SID_NEW)]), sorted(by_port)
    v1 = by_port[(PORT_OLD, SID_OLD)]["leakmon"]["signatures_version"]
    v2 = by_port[(PORT_NEW, SID_NEW)]["leakmon"]["signatures_version"]
    assert v1 != v2
    assert by_port[(PORT_SLOW, SID_OLD)]["leakmon"]["signatures_version"] == v1  # started before the swap
    assert by_port[(PORT_OLD_AFTER, SID_OLD)]["leakmon"]["signatures_version"] == v2  # the failed reload kept v2
    assert by_port[(PORT_NEW_AFTER, SID_NEW)]["leakmon"]["signatures_version"] == v2
    assert by_port[(PORT_NEW, SID_NEW)]["alert"]["signature"] == "new marker"

    final = records[-1]
    assert final["event_type"] == "stats"
    sig_stats = final["stats"]["signatures"]
    assert sig_stats["reloaded"] == 1
    assert sig_stats["reload_failed"] == 1
    assert sig_stats[f"version_info[version={v2}]"] == 1
    assert not any(k.startswith("version_info") and k != f"version_info[version={v2}]" for k in sig_stats)
    assert final["stats"]["capture"][f"kernel_drops[iface={lab.sif}]"] == 0
