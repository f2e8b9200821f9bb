"""``leakmon flow``: from an alert's flow id to that flow's transactions, files and findings.

Runs on committed leak captures (pcaps/leaks/, made by pcaps/make_leaks.py): a replay writes the
EVE log the config names; the flow id of an alert in it is handed to ``leakmon flow`` exactly
as an analyst would.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from monitor.cli import main
from monitor.investigate import FlowSelector, display_filter, parse_selector, show_flow
from tests.e2e.leaks_helpers import LEAKS, ROOT, derived_config, replay_cli, tcp_connections

DOCX_CAPTURE = LEAKS / "http-multipart-docx-marker.pcap"
FTP_CAPTURE = LEAKS / "ftp-stor-active-marker.pcap"
DOCX_WHERE = "http.request.body > multipart[name=file,file=見積仕様.docx] > zip:word/document.xml"
DOCX_SHA256 = hashlib.sha256((ROOT / "tests" / "data" / "docs" / "sample.docx").read_bytes()).hexdigest()


def _replayed(tmp_path: Path, capture: Path) -> tuple[Path, list[dict[str, Any]]]:
    """Config whose outputs.eve.path holds the replay's EVE (what a sensor leaves behind)."""
    cfg = derived_config("leaks.yaml", tmp_path, detection__engine="ahocorasick")
    run = replay_cli(capture, cfg, tmp_path / "eve.json")
    return cfg, run.alerts()


def _flow(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(["flow", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture(scope="module")
def docx_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    cfg, alerts = _replayed(tmp_path_factory.mktemp("inv-docx"), DOCX_CAPTURE)
    (alert,) = [a for a in alerts if a["alert"]["signature_id"] == 9100001 and a["leakmon"]["where"] == DOCX_WHERE]
    return cfg, alert


def test_flow_id_from_an_alert_prints_file_and_sid(docx_run, capsys) -> None:
    cfg, alert = docx_run
    rc, out, err = _flow(capsys, str(DOCX_CAPTURE), str(alert["flow_id"]), "-c", str(cfg))
    assert rc == 0, err
    assert "'見積仕様.docx'" in out
    assert f"sha256 {DOCX_SHA256}" in out
    assert "alert sid 9100001 [protected-data-leak]" in out
    assert "alert sid 9000001 [plaintext-transmission]" in out
    assert f"where {DOCX_WHERE}" in out
    assert f"{alert['src_ip']}:{alert['src_port']} -> {alert['dest_ip']}:{alert['dest_port']}" in out
    assert f"community_id {alert['community_id']}" in out
    assert "POST 10.77.0.2/upload -> 201" in out
    assert f"flow {alert['flow_id']} in the EVE log is flow" in out  # ids are salted per run


def test_json_output(docx_run, capsys) -> None:
    cfg, alert = docx_run
    rc, out, err = _flow(capsys, str(DOCX_CAPTURE), str(alert["flow_id"]), "-c", str(cfg), "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["community_id"] == alert["community_id"]
    assert doc["requested_flow_id"] == alert["flow_id"]
    assert doc["matched_by"] == "community_id (from the EVE log)"
    assert (doc["src_ip"], doc["src_port"], doc["dest_port"]) == (alert["src_ip"], alert["src_port"], 8080)
    assert doc["flow"]["alerted"] is True and doc["flow"]["protected_side"] == "client"
    files = {f["filename"]: f for f in doc["files"]}
    assert files["見積仕様.docx"]["sha256"] == DOCX_SHA256
    assert files["見積仕様.docx"]["state"] == "CLOSED"
    assert files["見積仕様.docx"]["where"] == "http.request.body > multipart[name=file,file=見積仕様.docx]"
    leaks = [a for a in doc["alerts"] if a["sid"] == 9100001 and a["where"] == DOCX_WHERE]
    assert len(leaks) == 1
    assert leaks[0]["variant"] == "utf-8" and leaks[0]["file"]["filename"] == "見積仕様.docx"
    assert "保護すべき情報" not in leaks[0]["context"]
    assert [t["http"]["http_method"] for t in doc["transactions"] if t["event_type"] == "http"] == ["POST"]


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_dissect_shows_tsharks_view_of_the_same_packets(docx_run, capsys) -> None:
    cfg, alert = docx_run
    rc, out, err = _flow(capsys, str(DOCX_CAPTURE), str(alert["flow_id"]), "-c", str(cfg), "--json", "--dissect")
    assert rc == 0, err
    d = json.loads(out)["dissection"]
    assert "error" not in d, d.get("error")
    (conn,) = tcp_connections(DOCX_CAPTURE.name)
    ends = {(conn.src, conn.dst), (conn.dst, conn.src)}
    assert d["packets"] and all((p["src"], p["dst"]) in ends for p in d["packets"])
    assert d["tcp_stream"] == 0
    assert any("POST /upload" in p["info"] for p in d["packets"])
    assert any("見積仕様.docx" in line for line in d["detail"])  # tshark's own multipart dissection
    rc, text, err = _flow(capsys, str(DOCX_CAPTURE), str(alert["flow_id"]), "-c", str(cfg), "--dissect")
    assert rc == 0, err
    assert text.index("alerts and findings") < text.index("tshark dissection")


def test_ftp_data_flow_from_its_alert(tmp_path, capsys) -> None:
    cfg, alerts = _replayed(tmp_path, FTP_CAPTURE)
    (alert,) = [a for a in alerts if a["alert"]["signature_id"] == 9100001]
    rc, out, err = _flow(capsys, str(FTP_CAPTURE), str(alert["flow_id"]), "-c", str(cfg), "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["app_proto"] == "ftp-data"
    assert [f["filename"] for f in doc["files"]] == ["minutes.txt"]
    assert [(a["sid"], a["where"]) for a in doc["alerts"]] == [(9100001, "ftp.data[STOR]"), (9000001, "ftp.data[STOR]")]
    assert [t["ftp_data"]["command"] for t in doc["transactions"]] == ["STOR"]


def _args(capture: Path, flow: str, cfg: Path) -> argparse.Namespace:
    return argparse.Namespace(capture=str(capture), flow_id=flow, config=str(cfg), dissect=False, json=True)


def test_community_id_and_endpoints_select_the_flow(docx_run, capsys) -> None:
    cfg, alert = docx_run
    endpoints = f"{alert['src_ip']}:{alert['src_port']}-{alert['dest_ip']}:{alert['dest_port']}"
    for flow, how in ((alert["community_id"], "community_id"), (endpoints, "endpoints")):
        assert show_flow(_args(DOCX_CAPTURE, flow, cfg)) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["matched_by"] == how
        assert doc["community_id"] == alert["community_id"]
        assert "見積仕様.docx" in {f["filename"] for f in doc["files"]}


def test_unknown_flow_lists_the_flows_of_the_capture(tmp_path, capsys) -> None:
    cfg = derived_config("leaks.yaml", tmp_path, detection__engine="ahocorasick")  # no EVE log to consult
    rc, out, err = _flow(capsys, str(DOCX_CAPTURE), "12345", "-c", str(cfg))
    assert rc == 1 and out == ""
    assert "no flow matching flow_id 12345" in err
    (conn,) = tcp_connections(DOCX_CAPTURE.name)
    assert f"{conn.src}:{conn.sport} -> {conn.dst}:{conn.dport}" in err
    assert show_flow(_args(DOCX_CAPTURE, "not-a-flow", cfg)) == 2


def test_parse_selector() -> None:
    assert parse_selector(42) == FlowSelector(flow_id=42)
    assert parse_selector("42") == FlowSelector(flow_id=42)
    assert parse_selector("1:abc=") == FlowSelector(community_id="1:abc=")
    sel = parse_selector("[fd77::1]:40000-[fd77::2]:21")
    assert sel.endpoints == frozenset({("fd77::1", 40000), ("fd77::2", 21)})
    assert parse_selector("10.77.0.1:5 10.77.0.2:80").endpoints == frozenset({("10.77.0.1", 5), ("10.77.0.2", 80)})
    with pytest.raises(ValueError):
        parse_selector("10.77.0.1-10.77.0.2")


def test_display_filter_is_exact_per_direction() -> None:
    f = display_filter({"proto": "TCP", "src_ip": "fd77::1", "src_port": 40000, "dest_ip": "fd77::2", "dest_port": 21})
    assert f == ("(ipv6.src==fd77::1 && tcp.srcport==40000 && ipv6.dst==fd77::2 && tcp.dstport==21) || "
                 "(ipv6.src==fd77::2 && tcp.srcport==21 && ipv6.dst==fd77::1 && tcp.dstport==40000)")
