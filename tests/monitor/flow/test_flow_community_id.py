"""Community ID v1 against the spec's published baseline and against tshark."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stream_harness import HAVE_TSHARK, run

from monitor.flow.community_id import community_id, flow_community_id
from monitor.model import Flow

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


def test_flow_community_id_short_path_on_the_spec_vectors():
    """flow_community_id (its own path for TCP/UDP/SCTP) gives the baseline values too."""
    vectors = json.loads((HERE / "data" / "community_id_baseline.json").read_text())
    checked = 0
    for v in vectors:
        flow = Flow(flow_id=1, proto=v["proto"], client=_packed(v["saddr"]), server=_packed(v["daddr"]),
                    cport=v["sport"] or 0, sport=v["dport"] or 0)
        assert flow_community_id(flow) == v["communityid"], v
        checked += v["proto"] in (6, 17, 132)
    assert checked == 8  # the short path itself was exercised, not only the fallback


_addr = st.one_of(st.binary(min_size=4, max_size=4), st.binary(min_size=16, max_size=16),
                  st.sampled_from([bytes(4), b"\xff" * 4, bytes(16)]))
_port = st.one_of(st.integers(0, 65535), st.sampled_from([0, 80, 65535]))


@settings(max_examples=2000, deadline=None)
@given(proto=st.sampled_from([6, 17, 132, 1, 58, 47, 0, 255]), a=_addr, b=_addr, pa=_port, pb=_port,
       same=st.booleans())
def test_flow_community_id_equals_the_general_function(proto, a, b, pa, pb, same):
    """Either orientation, equal addresses (a host talking to itself), any port protocol or not."""
    if same:
        b = a
    flow = Flow(flow_id=1, proto=proto, client=a, server=b, cport=pa, sport=pb)
    expected = community_id(proto, a, b, pa, pb)
    assert flow_community_id(flow) == expected
    if proto in (6, 17, 132):
        reverse = Flow(flow_id=2, proto=proto, client=b, server=a, cport=pb, sport=pa)
        assert flow_community_id(reverse) == expected


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
