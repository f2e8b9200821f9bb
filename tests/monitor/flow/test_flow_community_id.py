"""Community ID v1 against the spec's published baseline and against tshark."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from pathlib import Path

import pytest
from stream_harness import HAVE_TSHARK, run

from monitor.flow.community_id import community_id, flow_community_id

HERE = Path(__file__).parent


def _packed(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def test_spec_baseline_vectors():
    # corelight/community-id-spec baseline/baseline_deflt.json (seed 0, base64).
    vectors = json.loads((HERE / "data" / "community_id_baseline.json").read_text())
    assert len(vectors) == 23
    for v in vectors:
        got = community_id(v["proto"], _packed(v["saddr"]), _packed(v["daddr"]), v["sport"] or 0, v["dport"] or 0)
        assert got == v["communityid"], v


def test_seed_changes_the_hash():
    a, b = _packed("128.232.110.120"), _packed("66.35.250.204")
    assert community_id(6, a, b, 34855, 80) == "1:LQU9qZlK+B5F3KDmev6m5PMibrg="
    assert community_id(6, a, b, 34855, 80, seed=1) != "1:LQU9qZlK+B5F3KDmev6m5PMibrg="


@pytest.mark.tshark
@pytest.mark.skipif(not HAVE_TSHARK, reason="tshark not installed")
def test_flow_table_community_ids_equal_tshark(corpus_path):
    pcap = corpus_path("arkime/tcp-reassembly-synthetic.pcap")
    out = subprocess.run(["tshark", "-n", "-r", str(pcap), "--enable-protocol", "communityid",
                          "-T", "fields", "-e", "tcp.stream", "-e", "communityid"],
                         capture_output=True, text=True, check=True).stdout
    theirs = {}
    for line in out.splitlines():
        stream, _, cid = line.partition("\t")
        theirs.setdefault(int(stream), cid)
    ours = [flow_community_id(r.flow) for r in run(pcap).tcp()]
    # One flow per tshark stream, in the same order (port reuse included).
    assert ours == [theirs[i] for i in sorted(theirs)]
    assert len(set(ours)) == 10  # stream 7 and 8 reuse the same 5-tuple
